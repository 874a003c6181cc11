"""The posix backend: a directory on a POSIX disk, a tmpfs or a DAOS dfuse mount."""

import mmap
import os
import re
import shutil
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

import xxhash

from letl.lake.errors import NotFound, TierUnavailable
from letl.storage.contract import TMP_DIR, Written, hash_file, validate_key
from letl.storage.transfer import FileSink, fold, parallel_digest, pipe


class PosixBackend:
    """A directory: a POSIX disk, a tmpfs, or a DAOS dfuse mount.

    Objects are written under ``.tmp/`` in the same directory tree (so the final
    rename never crosses filesystems), fsynced, then hard-linked into place. The
    link fails if the key exists, which keeps versions immutable.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _tmp(self) -> Path:
        tmp = self.root / TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        # Named by its writer, so that clean_temp can tell a live write from a leftover.
        return tmp / f"{_WRITER}-{os.getpid()}-{uuid.uuid4().hex}.part"

    def put(self, key: str, stream: BinaryIO, labels: Mapping[str, str] | None = None) -> Written:
        final, tmp = self._path(key), self._tmp()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                written = Written(*pipe(stream, FileSink(fd)))  # read, sha256 and write overlap
                os.fsync(fd)
            finally:
                os.close(fd)
            self._publish(tmp, final, written)
        finally:
            tmp.unlink(missing_ok=True)
        return written

    def put_file(self, key: str, path: Path, labels: Mapping[str, str] | None = None) -> Written:
        path = Path(path)
        final = self._path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        if os.stat(path).st_dev != os.stat(self.root).st_dev:
            with open(path, "rb") as src:
                written = self.put(key, src)
            path.unlink()
            return written
        written = hash_file(path)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        self._publish(path, final, written)
        path.unlink(missing_ok=True)
        return written

    def _publish(self, tmp: Path, final: Path, written: Written) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            if hash_file(final) != written:
                raise FileExistsError(f"{final} already holds different data") from None
        _fsync_dir(final.parent)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no object {key} in {self.root}") from None

    def fast_digest(self, key: str) -> str:
        """The transfer.BlockHash digest of the stored object, its blocks hashed on every core
        straight from a memory map (no copy into Python buffers)."""
        with self.open(key) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return fold(0, [])
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return parallel_digest(size, lambda start, end: _xxh3(mapped, start, end), os.cpu_count() or 1)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, fewer if it ends sooner."""
        with self.open(key) as f:
            f.seek(start)
            return f.read(max(0, end - start))

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._prune(path)

    def discard(self, key: str) -> None:
        """Delete, but free the space in a background thread: unlinking a large cached file takes a
        while (about 0.14 s for 445 MB) and a move's caller need not wait for it. The key is gone on
        return (renamed into .tmp/ under this writer's name); a crash before the unlink leaves a temp
        leftover for clean_temp."""
        path = self._path(key)
        doomed = self._tmp()
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        self._prune(path)
        threading.Thread(target=doomed.unlink, kwargs={"missing_ok": True}, name="letl-unlink").start()

    def _prune(self, path: Path) -> None:
        """Remove the object's parent directories that are now empty."""
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def probe(self) -> None:
        """One stat of the root, or of its nearest existing parent before the first write: a dfuse or
        NFS mount that went away fails it (ENOTCONN, ESTALE, EIO), a file in the root's place too."""
        path = self.root.absolute()
        while True:
            try:
                mode = os.stat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                path = path.parent  # the root of the filesystem always exists: this ends
                continue
            except OSError as exc:
                raise TierUnavailable(f"tier root {self.root}: unreachable ({exc.strerror or exc})") from exc
            if not stat.S_ISDIR(mode):
                raise TierUnavailable(f"tier root {self.root}: {path} is not a directory")
            return

    def usage(self) -> int:
        return sum(self._path(k).stat().st_size for k in self.keys())

    def keys(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and TMP_DIR in dirnames:
                dirnames.remove(TMP_DIR)
            for name in filenames:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def clean_temp(self, older_than: float = 0) -> int:
        """Remove leftovers of interrupted writes untouched for older_than seconds; returns how many."""
        tmp = self.root / TMP_DIR
        if not tmp.is_dir():
            return 0
        cutoff = time.time() - older_than
        leftovers = [item for item in tmp.iterdir()
                     if item.lstat().st_mtime <= cutoff and not _writer_alive(item.name)]
        for item in leftovers:
            shutil.rmtree(item) if item.is_dir() else item.unlink(missing_ok=True)
        return len(leftovers)


_WRITER = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64]


def _writer_alive(name: str) -> bool:
    """A temp file of a process still running on this host (a slow copy, a stopped mover) is live work,
    whatever its age; another host's writers are judged by age alone."""
    host, _, rest = name.partition("-")
    pid = rest.partition("-")[0]
    if host != _WRITER or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def _xxh3(mapped: mmap.mmap, start: int, end: int) -> bytes:
    with memoryview(mapped)[start:end] as view:  # released at once, so the map can close
        return xxhash.xxh3_128(view).digest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
