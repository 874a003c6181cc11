"""Moving bytes at the speed of the disk or the network while still proving them.

A verified copy needs three things done to every byte: read it, sha256 it (the content
identity the catalog records), write it. Done in one thread they add up; sha256 alone
takes longer than a durable ``cp``. ``pipe`` gives each its own thread, which works because
file and socket I/O, hashlib (on large buffers) and xxhash all release the GIL.

The copy's own stream hash (``BlockHash``) is xxh3-128 per BLOCK of the stream, folded into
one digest. Blocks are independent, so a read-back can hash them in any order and in
parallel (``parallel_digest``): several ranged GETs at once on S3, both cores locally.
"""

import ctypes
import hashlib
import mmap
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import BinaryIO, Callable, Iterator

import xxhash

from letl.storage.contract import Backend, chunks, feed

BLOCK = 8 * 1024 * 1024
_DONE = object()


class BlockHash:
    """xxh3-128 of each BLOCK of a stream, whatever sizes it arrives in."""

    def __init__(self):
        self.blocks: list[bytes] = []
        self.size, self._fill, self._current = 0, 0, xxhash.xxh3_128()

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            take = min(len(view), BLOCK - self._fill)
            self._current.update(view[:take])
            self._fill += take
            self.size += take
            view = view[take:]
            if self._fill == BLOCK:
                self.blocks.append(self._current.digest())
                self._current, self._fill = xxhash.xxh3_128(), 0

    def hexdigest(self) -> str:
        tail = [self._current.digest()] if self._fill else []
        return fold(self.size, self.blocks + tail)


def fold(size: int, blocks: list[bytes]) -> str:
    """One comparable digest: the size and the xxh3-128 of the block digests in order."""
    return f"{size}:{xxhash.xxh3_128(b''.join(blocks)).hexdigest()}"


def blocks(stream) -> Iterator:
    """The rest of a stream as buffers of up to BLOCK bytes. A regular file is memory-mapped and
    handed out as views, so no byte is copied into Python (if the file is truncated meanwhile the
    process dies of SIGBUS, which a move survives like any crash: fsck or a retry settles it)."""
    own = getattr(stream, "blocks", None)
    if own is not None:
        yield from own()
        return
    mapped, start = _mapped(stream)
    if mapped is None:
        yield from chunks(stream, BLOCK)
        return
    view = memoryview(mapped)
    for offset in range(start, len(mapped), BLOCK):
        yield view[offset:offset + BLOCK]


def _mapped(stream) -> tuple[mmap.mmap | None, int]:
    try:
        fd, start = stream.fileno(), stream.tell()
        size = os.fstat(fd).st_size
    except (AttributeError, OSError, ValueError):  # not a file
        return None, 0
    if size == 0 or start >= size:
        return None, 0  # an empty map is an error; plain reads return the nothing there is
    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    return mapped, start


class HashingReader:
    """A stream whose blocks are block-hashed as its consumer takes them (in the consumer's reader thread)."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.hash = stream, BlockHash()

    def blocks(self) -> Iterator:
        for chunk in blocks(self.stream):
            self.hash.update(chunk)
            yield chunk

    def read(self, n: int = -1) -> bytes:
        """For a destination that reads its input rather than taking blocks: a key that already
        exists, whose bytes are compared instead of written."""
        data = self.stream.read(n)
        self.hash.update(data)
        return data


def parallel_digest(size: int, hash_block: Callable[[int, int], bytes], workers: int) -> str:
    """The BlockHash digest of an object of this size, each block [start, end) hashed by
    hash_block on one of `workers` threads."""
    spans = [(start, min(start + BLOCK, size)) for start in range(0, size, BLOCK)]
    if workers <= 1 or len(spans) <= 1:
        return fold(size, [hash_block(*span) for span in spans])
    with ThreadPoolExecutor(min(workers, len(spans)), thread_name_prefix="letl-digest") as pool:
        return fold(size, list(pool.map(lambda span: hash_block(*span), spans)))


class _Reporter:
    """Bytes copied so far in a ``reporting`` context, over every copy it makes."""

    def __init__(self, on_progress: Callable[[int, int | None], None], total: int | None):
        self.on_progress, self.total, self.done = on_progress, total, 0

    def add(self, n: int) -> None:
        self.done += n
        self.on_progress(self.done, self.total)


_REPORTER: ContextVar[_Reporter | None] = ContextVar("letl_transfer_reporter", default=None)


@contextmanager
def reporting(on_progress: Callable[[int, int | None], None] | None, total: int | None = None) -> Iterator[None]:
    """Every copy (``pipe``) made in this context calls ``on_progress(bytes_done, total)`` as its blocks
    reach their destination, so that a move or a write can show progress whatever backend copies it.

    A context variable rather than an argument of every backend's put: the contract stays what a
    store must do, and the report is made where every backend's bytes pass, in the caller's thread.
    """
    if on_progress is None:
        yield
        return
    token = _REPORTER.set(_Reporter(on_progress, total))
    try:
        yield
    finally:
        _REPORTER.reset(token)


class _Stopped(Exception):
    """The consumer gave up: the producer stops quietly."""


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise _Stopped


def pipe(stream: BinaryIO, sink: Callable[[memoryview | bytes], None], depth: int = 4) -> tuple[int, str]:
    """Copy stream into sink; returns (size, sha256 hex).

    A reader thread reads BLOCKs, a hasher thread computes the sha256, and sink writes in the
    caller's thread, so the three overlap. At most `depth` blocks wait on each side. An error
    on any side stops the others and is raised here; the sink never sees bytes past it.
    """
    to_hash: queue.Queue = queue.Queue(depth)
    to_sink: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    failure: list[BaseException] = []
    digest = hashlib.sha256()

    def read() -> None:
        try:
            for chunk in blocks(stream):
                _put(to_hash, chunk, stop)
                _put(to_sink, chunk, stop)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the caller, who raises it
            failure.append(exc)
        for q in (to_hash, to_sink):
            try:
                _put(q, _DONE, stop)
            except _Stopped:
                return

    def hash_all() -> None:
        while (chunk := to_hash.get()) is not _DONE:
            digest.update(chunk)

    reader = threading.Thread(target=read, name="letl-read", daemon=True)
    hasher = threading.Thread(target=hash_all, name="letl-sha256", daemon=True)
    reader.start()
    hasher.start()
    size, finished = 0, False
    reporter = _REPORTER.get()
    try:
        while (chunk := to_sink.get()) is not _DONE:
            sink(chunk)
            size += len(chunk)
            if reporter is not None:
                reporter.add(len(chunk))
        finished = True
    finally:
        if not finished:  # the sink failed: stop the reader, release the hasher
            stop.set()
        reader.join()
        if not finished:
            _drain_into(to_hash)
        hasher.join()
    if failure:
        raise failure[0]
    return size, digest.hexdigest()


def _drain_into(q: queue.Queue) -> None:
    """Let the hasher finish after an abandoned copy: empty its queue and end it."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            break
    q.put(_DONE)


class FileSink:
    """Writes to an open file, asking the kernel to start writing each block to disk at once
    (sync_file_range), so the final fsync waits for the last blocks only, not the whole file."""

    def __init__(self, fd: int):
        self.fd, self.offset = fd, 0

    def __call__(self, chunk: memoryview | bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]
        _start_writeback(self.fd, self.offset, len(chunk))
        self.offset += len(chunk)


def _load_sync_file_range():
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):  # not Linux: the final fsync does all the work
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return call


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback, do not wait for it


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # only a hint: errors surface at fsync


def stored_digest(backend: Backend, key: str) -> str:
    """The BlockHash digest of an object as its tier holds it now: the backend's ``fast_digest``
    where it has one, else the object read as one stream."""
    fast = backend.fast_digest(key)
    if fast is not None:
        return fast
    digest = BlockHash()
    with backend.open(key) as stream:
        feed(digest, stream)
    return digest.hexdigest()
