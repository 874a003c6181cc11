"""Who owns live work, and whether that owner is still there.

An owner holds two things for the whole of its work: an exclusive ``flock`` on a file under
``LETL_HOME/locks`` named after the request, and a heartbeat in the request's catalog row.
On the owner's host the lock is the truth: the kernel drops it when the process dies, and keeps
it while the process is merely slow or stopped (SIGSTOP stops heartbeats, not locks). A checker
on another host cannot see the lock, so it trusts the heartbeat, with a lease of
``LETL_LEASE_SECONDS`` (default 60).
"""

import fcntl
import hashlib
import os
import socket
import threading
import uuid
from datetime import timedelta, timezone
from pathlib import Path

from letl.lake.catalog import utcnow
from letl.lake.config import setting

HOST = socket.gethostname()


def lease_seconds() -> float:
    return setting("LETL_LEASE_SECONDS")


def request_tag(request_id: str) -> str:
    """A file-name-safe name for a request id (ids may hold ':' and '/')."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:32]


def lock_path(home: Path, request_id: str) -> Path:
    return home / "locks" / f"{request_tag(request_id)}.lock"


class Lock:
    """An exclusive flock, or None from ``try_take`` while someone else holds it.

    flock (not lockf): its locks belong to an open file, so two threads of one server
    exclude each other as two processes do.
    """

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def try_take(cls, path: Path) -> "Lock | None":
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the lock
            self.fd = -1


def new_owner() -> dict:
    return {"owner_host": HOST, "owner_pid": os.getpid(), "owner_token": uuid.uuid4().hex}


def owner_alive_elsewhere(row: dict) -> bool:
    """For a caller that holds the request's lock: is the row's owner alive on another host?
    An owner on this host is dead, since it would hold the lock."""
    if row.get("owner_host") in (None, HOST):
        return False
    beat = row.get("heartbeat_at")
    if beat is None:
        return False
    if beat.tzinfo is None:  # SQLite hands datetimes back naive
        beat = beat.replace(tzinfo=timezone.utc)
    return utcnow() - beat < timedelta(seconds=lease_seconds())


class Heartbeat:
    """Refreshes the row's heartbeat while the owner works, for checkers on other hosts."""

    def __init__(self, catalog, request_id: str, token: str):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(catalog, request_id, token), daemon=True,
                                       name=f"heartbeat {request_id}")
        self.thread.start()

    def _run(self, catalog, request_id: str, token: str) -> None:
        while not self.stop.wait(lease_seconds() / 4):
            try:
                if not catalog.heartbeat(request_id, token):
                    return  # no longer the owner: the work will find out at its next step
            except Exception:  # a busy catalog skips a beat; the lease allows three more
                continue

    def end(self) -> None:
        self.stop.set()
        self.thread.join()
