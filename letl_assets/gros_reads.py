"""One gros:// read, resolved once: the cache behind a GrosFileSystem's info/ls/glob/open calls.

pandas, pyarrow and DuckDB turn one read of a dataset into dozens of calls (pandas reading 24
partitions asks info twice, isdir and find of the directory, then isfile and open of every
pseudo-file, the first one twice; DuckDB globs twice and stats every file). Each used to resolve
its path against the catalog. A ``Read`` is one resolution (lake/uri.resolve_read: one catalog
query, which also feeds the access check) shared by the calls of one read, and audited once, in
one transaction. Where one read ends and the next begins:

- pyarrow (and pandas, which reads through it) wraps the filesystem in a new ``FSSpecHandler``
  for every ``read_parquet``/``read_table``/``dataset`` call: a read is the calls made through one
  handler, so one open dataset keeps the versions it listed (its planned sizes and schema stay
  true), and the next call sees whatever was published since. A handler kept for many reads (a
  ``PyFileSystem`` built once) starts a new read at each ``info`` of the ref once the last read
  opened everything it served.
- Every other caller (DuckDB, fsspec.open, direct calls): a read lasts while a file it opened is
  open, or while calls keep coming within ``QUIET`` seconds of each other until it has opened
  every version it serves. A version this process publishes or moves (through any Catalog) ends
  such reads at once; one another process publishes is seen by the next read, unless that read
  starts within ``QUIET`` of a previous one that never opened all it listed (a listing alone,
  or a DuckDB ``LIMIT``), which it then joins.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
import weakref
from typing import Any, Callable

import sqlalchemy as sa

from letl_assets.lake.errors import NotFound
from letl_assets.lake.uri import GrosRef, Resolution

# Longer than the gaps between the calls of one read (microseconds to a few milliseconds, even on
# a loaded machine), shorter than anything that writes a version in between.
QUIET = 0.05

_generation = itertools.count(1)
_current_generation = 0
_FLAG = "letl_versions_written"


def _note_versions_write(conn, cursor, statement, parameters, context, executemany) -> None:
    if statement.lstrip()[:32].upper().startswith(("INSERT INTO VERSIONS", "UPDATE VERSIONS")):
        conn.info[_FLAG] = True


def _bump_on_commit(conn) -> None:
    # After the commit, not at the INSERT: a read resolved in between would cache the old state.
    global _current_generation
    if conn.info.pop(_FLAG, False):
        _current_generation = next(_generation)


def _drop_flag(conn) -> None:
    conn.info.pop(_FLAG, None)


# Every engine in the process: the reader's Lake is rarely the object that wrote the version.
sa.event.listen(sa.engine.Engine, "after_cursor_execute", _note_versions_write)
sa.event.listen(sa.engine.Engine, "commit", _bump_on_commit)
sa.event.listen(sa.engine.Engine, "rollback", _drop_flag)


class Read:
    """One resolution of a top-level ref (a version or a directory of them) and what was done with it."""

    def __init__(self, resolution: Resolution, is_dir: bool, pinned: bool = False):
        self.ref = resolution.ref
        self.served = resolution.served
        self.is_dir = is_dir
        self.by_partition = {v.partition: v for v in self.served}
        self.pinned = pinned  # one pyarrow handler's read: lasts as long as its dataset
        self.generation = _current_generation
        self.last = time.monotonic()
        self.live = 0
        self.opened: set[str] = set()
        self.listed = False  # the caller was handed the directory's pseudo-files
        self.audited: set[str] = set()

    def current(self, now: float, child: bool, starts: bool) -> bool:
        """Whether a call belongs to this read. ``starts``: the call is how pyarrow begins a read (info
        of the ref itself), so a pyarrow filesystem kept for many reads still starts a new one each time."""
        # Once every version it serves was opened (and none is open now), a call on the ref itself is
        # the next read's: DuckDB globs again before reading the rest, pyarrow opens the first file twice.
        done = not child and self.live == 0 and len(self.opened) >= len(self.served)
        if self.pinned:
            return not (starts and done)
        if self.generation != _current_generation:
            return False
        return self.live > 0 or (now - self.last < QUIET and not done)

    def to_audit(self, version) -> list:
        """The versions the open of ``version`` must write to the access log: a listed directory is
        read as a whole, so its first open audits every version it serves, in one transaction."""
        wanted = self.served if self.listed else (version,)
        return [v for v in wanted if v.version_id not in self.audited]


class Reads:
    """The current Read of each top-level ref, for one filesystem instance (DuckDB calls from threads)."""

    def __init__(self, resolve: Callable[[GrosRef], tuple[Resolution, bool]]):
        self._resolve = resolve
        self._reads: dict[GrosRef, Read] = {}
        # By id: FSSpecHandler defines __eq__ and so is unhashable; the weak reference drops the
        # entry when pyarrow lets the handler go, before its id can be reused.
        self._by_handler: dict[int, tuple[weakref.ref, dict[GrosRef, Read]]] = {}
        self._lock = threading.Lock()

    def get(self, top: GrosRef, child: bool = False, starts: bool = False) -> Read:
        handler = _pyarrow_handler()
        now = time.monotonic()
        with self._lock:
            reads = self._reads if handler is None else self._handler_reads(handler)
            read = reads.get(top)
            if read is not None and read.current(now, child, starts):
                read.last = now
                return read
        # Resolved outside the lock: a refusal or a slow catalog must not stall other threads' reads.
        read = Read(*self._resolve(top), pinned=handler is not None)
        with self._lock:
            reads[top] = read
        return read

    def opened(self, read: Read, version) -> None:
        with self._lock:
            read.live += 1
            read.opened.add(version.version_id)
            read.last = time.monotonic()

    def _handler_reads(self, handler: Any) -> dict[GrosRef, Read]:
        key = id(handler)
        entry = self._by_handler.get(key)
        if entry is None or entry[0]() is not handler:
            entry = self._by_handler[key] = (weakref.ref(handler, lambda _: self._by_handler.pop(key, None)), {})
        return entry[1]

    def claim_audit(self, read: Read, version) -> list:
        """The versions this open must log (marked as logged, so that two threads do not both write)."""
        with self._lock:
            pending = read.to_audit(version)
            read.audited.update(v.version_id for v in pending)
            return pending

    def unclaim_audit(self, read: Read, pending: list) -> None:
        with self._lock:
            read.audited.difference_update(v.version_id for v in pending)

    def closed(self, read: Read) -> None:
        with self._lock:
            read.live -= 1
            read.last = time.monotonic()


def _pyarrow_handler() -> Any:
    """The pyarrow FSSpecHandler this call comes through, if any: it calls us directly, and
    fsspec's open() adds one frame before _open."""
    frame = sys._getframe(3)
    for _ in range(4):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if owner is not None and type(owner).__name__ == "FSSpecHandler" and type(owner).__module__ == "pyarrow.fs":
            return owner
        frame = frame.f_back
    return None


def open_version(lake, reads: Reads, read: Read, version, kind: str, who: dict) -> "ReadHandle":
    """The version's file for this read, audited (once per read) before it is returned."""
    handle = _handle(lake, reads, read, version)
    pending = reads.claim_audit(read, version)
    try:
        if pending:
            lake.catalog.record_accesses([v.version_id for v in pending], kind, **who)
    except BaseException:
        reads.unclaim_audit(read, pending)
        handle.close()
        raise
    return handle


def _handle(lake, reads: Reads, read: Read, version) -> "ReadHandle":
    """A move copies, switches the catalog, then deletes the source: a file gone from the tier this
    read resolved was moved, and the catalog's row (same bytes, same key) says where to."""
    try:
        path = lake.local_path(version)
    except FileNotFoundError:
        moved = lake.catalog.get(version.version_id)
        if moved is None or moved.tier == version.tier:
            raise
        try:
            path = lake.local_path(moved)
        except FileNotFoundError:
            raise NotFound(f"version {version.version_id} left tier {version.tier} during the read and is "
                           f"not on {moved.tier} either: read it again") from None
    reads.opened(read, version)
    try:
        return ReadHandle(path, lambda: reads.closed(read))
    except BaseException:
        reads.closed(read)
        raise


class ReadHandle(io.BufferedReader):
    """A version's file, opened for one Read: closing it tells the Read (a read lasts while its files are open)."""

    def __init__(self, path: Any, on_close: Callable[[], None]):
        super().__init__(io.FileIO(path, "rb"))
        self._on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        try:
            super().close()
        finally:
            callback, self._on_close = self._on_close, None
            if callback is not None:
                callback()
