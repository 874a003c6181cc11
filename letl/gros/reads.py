"""One gros:// read, resolved once and audited: the state behind a GrosFileSystem's info/ls/glob/open calls.

pandas, pyarrow and DuckDB turn one read of a dataset into dozens of calls (pandas reading 24
partitions asks info twice, isdir and find of the directory, then isfile and open of every
pseudo-file, the first one twice; DuckDB globs, opens the first file for its footer, then opens
every file twice to scan it). A ``Read`` is one resolution (lake/uri.resolve_read: one catalog
query, which also feeds the access check) shared by the calls of one read. Its first open writes
its audit rows, in one transaction: every version it listed, or the one version it opens.

The rule (the project's: an audit record for every read). Only structure decides where a read
begins; a clock never decides whether an open is audited.

- pyarrow (and pandas, which reads through it) wraps the filesystem in a new ``FSSpecHandler``
  for every ``read_parquet``/``read_table``/``dataset`` call: a read is the calls made through one
  handler, so one open dataset keeps the versions it listed (its planned sizes and schema stay
  true) and is audited once, and the next call sees whatever was published since. A handler kept
  for many reads (a ``PyFileSystem`` built once) starts a new read at each ``info`` of the ref once
  the last read opened a file and holds none open. A call counts as pyarrow's only when the nearest frame
  outside gros:// and fsspec.spec is a method of a ``pyarrow.fs.FSSpecHandler`` whose ``fs`` is this
  filesystem; anything else (a wrapper in between, a pyarrow that calls differently) is read by
  the rules below, which audit more, never less.
- Every other caller (DuckDB, fsspec.open, direct calls):
  - ``ls``/``glob``/``find`` of a path starts a new read, resolved afresh: a version any process
    published before the listing is in it. DuckDB globs at the start of every statement it runs,
    prepared ones too (and, through ``con.sql``, once more when the relation runs), so each DuckDB
    query is a read of its own. ``info``/``isdir``/``exists`` of a directory (the dataset or
    ``?partition=*``) resolve afresh too, without starting a listing.
  - An ``open`` belongs to the latest listing of its ref if that listing named the file, has not
    opened it yet and is fresh (below); the first such open writes the rows of everything the
    listing named, in one transaction.
  - An open of the same file by the same thread while its earlier handle is still open belongs
    with that handle (DuckDB opens each file twice to scan it).
  - Any other open starts a new read that writes the row of the version it opens: a file no fresh
    listing named, or one its listing already opened (DuckDB's scan after its footer read, a
    second ``fsspec.open``, a pseudo-file opened again). A pseudo-file stands for the version its
    listing served while that listing is fresh; otherwise, and for a ref opened without a
    listing, the last resolution is reused only while fresh, else the catalog is asked again.
  Over-auditing is the price, and deliberate: a DuckDB ``con.sql`` query writes two rows per
  version (bind and run each glob) and one more for the first file (its footer is read at bind,
  then the file opened again to scan), in three transactions; ``con.execute`` one row per
  version and one more, in two.
- Freshness, the only use of a clock: a resolution is fresh while calls on it keep coming within
  ``QUIET`` seconds of each other and no version was published or moved by this process since
  (through any Catalog). Freshness decides which resolution a call is answered from, never
  whether an open writes an audit row: every path above that opens a file either writes rows or
  joins a read whose rows already cover that version.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from letl.lake.errors import NotFound
from letl.lake.uri import GrosRef, Resolution

# Longer than the gaps between the calls of one read (microseconds to a few milliseconds, even on
# a loaded machine), shorter than anything that writes a version in between. Freshness only.
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

    def __init__(self, resolution: Resolution, is_dir: bool, pinned: bool = False, served=None):
        self.resolution = resolution
        self.ref = resolution.ref
        self.served = tuple(resolution.served if served is None else served)
        self.is_dir = is_dir
        self.by_partition = {v.partition: v for v in self.served}
        self.pinned = pinned  # one pyarrow handler's read: lasts as long as its dataset
        self.generation = _current_generation
        self.last = time.monotonic()
        self.live = 0
        self.handles: dict[tuple[str | None, int], int] = {}  # (pseudo-file, thread) -> open handles
        self.opened: set[str] = set()
        self.listed: set[str] = set()  # versions the caller was handed as entries of a listing
        self.audited: set[str] = set()

    def fresh(self, now: float) -> bool:
        """Whether the resolution may answer a call that does not start a read (freshness only)."""
        return self.generation == _current_generation and now - self.last < QUIET

    def one(self, version) -> Read:
        """A read of one version of this resolution: an open the listing that named the file cannot take."""
        return Read(self.resolution, False, served=(version,))

    def version_of(self, partition: str | None):
        """The version a path inside (partition) or naming (None) this read's ref stands for, or None."""
        if partition is None:
            return None if self.is_dir else self.served[0]
        return self.by_partition.get(partition) if self.is_dir else None

    def pinned_current(self, child: bool, starts: bool) -> bool:
        """Whether a call through this read's pyarrow handler still belongs to it. ``starts``: info of
        the ref itself, how pyarrow begins a read, so a handler kept for many reads starts a new one."""
        # Once it opened a file (pandas and pyarrow ask info of the ref only before they open any)
        # and holds none open: a later read through the same handler must not join a partial one.
        done = not child and self.live == 0 and bool(self.opened)
        return not (starts and done)

    def to_audit(self, version) -> list:
        """The versions the open of ``version`` must write to the access log: what this read listed
        (a listed directory is read as a whole, in one transaction) and the version itself."""
        wanted = [v for v in self.served if v.version_id in self.listed]
        if version.version_id not in self.listed:
            wanted.append(version)
        return [v for v in wanted if v.version_id not in self.audited]


Selected = tuple[Read, list, bool]  # (read, versions, is_directory)


class Reads:
    """The reads of one filesystem instance (DuckDB calls it from several threads)."""

    def __init__(self, resolve: Callable[[GrosRef], tuple[Resolution, bool]], fs: Any = None):
        self._resolve = resolve
        self._fs = weakref.ref(fs) if fs is not None else (lambda: None)
        self._listed: dict[GrosRef, Read] = {}  # the latest listing of each top-level ref
        self._latest: dict[GrosRef, Read] = {}  # the latest resolution of each top-level ref
        self._open: dict[GrosRef, set[Read]] = {}  # reads holding a handle, by top-level ref
        # By id: FSSpecHandler defines __eq__ and so is unhashable; the weak reference drops the
        # entry when pyarrow lets the handler go, before its id can be reused.
        self._by_handler: dict[int, tuple[weakref.ref, dict[GrosRef, Read]]] = {}
        self._lock = threading.Lock()

    # --- the three kinds of call ------------------------------------------------------------

    def listing(self, top: GrosRef, partition: str | None) -> Selected:
        """ls/glob/find: a new read, resolved afresh (one handler's read, for pyarrow)."""
        handler = _pyarrow_handler(self._fs())
        if handler is not None:
            read, versions, is_dir = self._pinned(handler, top, partition, starts=False)
        else:
            read = self._new(top)
            with self._lock:
                self._listed[top] = read
            read, versions, is_dir = self._pick(read, top, partition)
        with self._lock:
            read.listed.update(v.version_id for v in versions)
        return read, versions, is_dir

    def about(self, top: GrosRef, partition: str | None, starts: bool = False) -> Selected:
        """info/isdir/isfile/exists/modified/created: answered from the read the caller is in."""
        handler = _pyarrow_handler(self._fs())
        if handler is not None:
            return self._pinned(handler, top, partition, starts)
        now, me = time.monotonic(), threading.get_ident()
        with self._lock:
            read = self._holding(top, partition, me)
            if read is None and partition is not None:
                # A pseudo-file stands for the version the listing that named it served.
                listed = self._listed.get(top)
                if listed is not None and listed.fresh(now) and listed.version_of(partition) is not None:
                    read = listed
            if read is None:
                latest = self._latest.get(top)
                # The dataset or ?partition=* itself: always afresh, as a listing would be.
                if latest is not None and latest.fresh(now) and (partition is not None or not latest.is_dir):
                    read = latest
            if read is not None:
                read.last = now
        if read is None:
            read = self._new(top)
        return self._pick(read, top, partition)

    def for_open(self, top: GrosRef, partition: str | None) -> Selected:
        """The read an open belongs to (module docstring), the version marked opened in it."""
        handler = _pyarrow_handler(self._fs())
        if handler is not None:
            read, versions, is_dir = self._pinned(handler, top, partition, starts=False)
            return self._mark_opened(read, versions, is_dir)
        now, me = time.monotonic(), threading.get_ident()
        with self._lock:
            listed = self._listed.get(top)
            version = listed.version_of(partition) if listed is not None and listed.fresh(now) else None
            if version is not None and version.version_id not in listed.opened:
                listed.opened.add(version.version_id)
                listed.last = now
                return listed, [version], False
            holding = self._holding(top, partition, me)
            if holding is not None:
                holding.last = now
                return holding, [holding.version_of(partition) or holding.served[0]], False
            base = listed if version is not None else None
            if base is None:
                latest = self._latest.get(top)
                base = latest if latest is not None and latest.fresh(now) else None
        if base is None:
            base = self._new(top)
        base, versions, is_dir = self._pick(base, top, partition)
        if is_dir:
            return base, versions, True
        read = base.one(versions[0])
        if partition is not None:
            read.is_dir, read.by_partition = True, {versions[0].partition: versions[0]}
        return self._mark_opened(read, versions, False)

    # --- helpers --------------------------------------------------------------------------

    def _new(self, top: GrosRef) -> Read:
        # Resolved outside the lock: a refusal or a slow catalog must not stall other threads' reads.
        read = Read(*self._resolve(top))
        with self._lock:
            self._latest[top] = read
        return read

    def _pick(self, read: Read, top: GrosRef, partition: str | None) -> Selected:
        if partition is None:
            return read, list(read.served), read.is_dir
        version = read.version_of(partition)
        if version is None:
            # Not among the directory's pseudo-files: resolve it alone, for the exact reason.
            alone = Read(*self._resolve(top.with_partition(partition)), pinned=read.pinned)
            return alone, list(alone.served), False
        return read, [version], False

    def _holding(self, top: GrosRef, partition: str | None, thread: int) -> Read | None:
        for read in self._open.get(top, ()):
            if read.handles.get((partition, thread)):
                return read
        return None

    def _mark_opened(self, read: Read, versions: list, is_dir: bool) -> Selected:
        if not is_dir:
            with self._lock:
                read.opened.add(versions[0].version_id)
        return read, versions, is_dir

    def _pinned(self, handler: Any, top: GrosRef, partition: str | None, starts: bool) -> Selected:
        with self._lock:
            reads = self._handler_reads(handler)
            read = reads.get(top)
        if read is None or not read.pinned_current(partition is not None, starts):
            read = Read(*self._resolve(top), pinned=True)
            with self._lock:
                reads[top] = read
        return self._pick(read, top, partition)

    def _handler_reads(self, handler: Any) -> dict[GrosRef, Read]:
        key = id(handler)
        entry = self._by_handler.get(key)
        if entry is None or entry[0]() is not handler:
            entry = self._by_handler[key] = (weakref.ref(handler, lambda _: self._by_handler.pop(key, None)), {})
        return entry[1]

    # --- handles and audits ---------------------------------------------------------------

    def opened(self, read: Read, top: GrosRef, partition: str | None) -> Callable[[], None]:
        """Count a handle of the pseudo-file (or ref) in the read; returns what its close calls."""
        key = (partition, threading.get_ident())
        with self._lock:
            read.live += 1
            read.handles[key] = read.handles.get(key, 0) + 1
            read.last = time.monotonic()
            if not read.pinned:  # a pyarrow handler's files are never another caller's to join
                self._open.setdefault(top, set()).add(read)

        def closed() -> None:
            with self._lock:
                read.live -= 1
                read.handles[key] -= 1
                if not read.handles[key]:
                    del read.handles[key]
                if not read.live:
                    self._open.get(top, set()).discard(read)
                read.last = time.monotonic()
        return closed

    def claim_audit(self, read: Read, version) -> list:
        """The versions this open must log (marked as logged, so that two threads do not both write)."""
        with self._lock:
            pending = read.to_audit(version)
            read.audited.update(v.version_id for v in pending)
            return pending

    def unclaim_audit(self, read: Read, pending: list) -> None:
        with self._lock:
            read.audited.difference_update(v.version_id for v in pending)


# Frames between pyarrow's FSSpecHandler and Reads: gros:// itself and fsspec's AbstractFileSystem.
_OURS = ("letl.gros.", "fsspec.spec")


def _pyarrow_handler(fs: Any) -> Any:
    """The pyarrow FSSpecHandler wrapping ``fs`` that this call comes through, if any.

    pyarrow has no public way to tell a filesystem which read a call belongs to; the handler calls
    our fsspec methods directly. So: the nearest caller outside gros:// and fsspec.spec must be a
    method of a ``pyarrow.fs.FSSpecHandler`` (the public class) whose ``fs`` is this very filesystem.
    Anything else, a wrapper in between or a pyarrow that calls through other frames, answers None,
    and the call is read by the rules of other callers: more audit rows, never fewer."""
    pafs = sys.modules.get("pyarrow.fs")
    if fs is None or pafs is None:
        return None
    frame = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            return None
        if not frame.f_globals.get("__name__", "").startswith(_OURS):
            owner = frame.f_locals.get("self")
            if isinstance(owner, pafs.FSSpecHandler) and getattr(owner, "fs", None) is fs:
                return owner
            return None
        frame = frame.f_back
    return None


def open_version(lake, reads: Reads, read: Read, version, top: GrosRef, partition: str | None, kind: str,
                 who: dict) -> ReadHandle:
    """The version's file for this read, audited (once per read) before it is returned."""
    handle = _handle(lake, reads, read, version, top, partition)
    pending = reads.claim_audit(read, version)
    try:
        if pending:
            lake.catalog.record_accesses([v.version_id for v in pending], kind, **who)
    except BaseException:
        reads.unclaim_audit(read, pending)
        handle.close()
        raise
    return handle


def _handle(lake, reads: Reads, read: Read, version, top: GrosRef, partition: str | None) -> ReadHandle:
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
    closed = reads.opened(read, top, partition)
    try:
        return ReadHandle(path, closed)
    except BaseException:
        closed()
        raise


class ReadHandle(io.BufferedReader):
    """A version's file, opened for one Read: closing it tells the Read (an open file keeps its read)."""

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
