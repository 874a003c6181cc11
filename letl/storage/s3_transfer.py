"""The concurrent halves of S3 transfers: parts sent and ranges fetched several at a time.

boto3's own transfer manager does this for files; the lake needs it for streams whose sha256
and xxh3 are computed on the way (transfer.pipe), with If-None-Match on complete and If-Match
on every range, which upload_file and download_file do not offer. Memory stays bounded: a
producer waits while max_concurrency parts are in flight, and a reader holds at most
max_concurrency blocks ahead.

Every part, and a small object's single put, carries an S3 additional checksum of its bytes
(x-amz-checksum-crc32), which the server checks on receipt: SeaweedFS 4.48, like AWS, answers
BadDigest and stores nothing. The object's own checksum, the CRC32 of the parts' CRC32s and "-N"
(S3's COMPOSITE type), is therefore known before the upload completes; a HEAD that reports it, with
the size, proves that the server received exactly the bytes sent and assembled them in order,
without reading them back (``Proofs``, S3Backend.fast_digest). What it cannot see is damage inside
the server after its check, which a read-back straight after the write (likely served from the
server's cache) hardly saw either. CRC32 because it catches the accidents a read-back was for, a
flipped bit or a lost or reordered part, for less CPU than sha256 (about 0.3 against 0.45 CPU-s for
445 MiB here), which 2 shared cores feel; the content identity stays the sha256 of the stream. A
server that ignores the header reports no checksum, and its objects are read back as before.
"""

import base64
import threading
import zlib
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from letl.lake.errors import VerificationFailed
from letl.storage.contract import Written
from letl.storage.transfer import BLOCK, BlockHash

if TYPE_CHECKING:
    from letl.storage.s3 import S3Backend

ALGORITHM = "CRC32"
FIELD = f"Checksum{ALGORITHM}"  # its name in boto3's requests and answers
SHA256_LABEL = "letl-sha256"  # the object's sha256, in its user metadata


def checksum_field(backend: "S3Backend", value: str) -> dict:
    """The checksum argument of a request, or none for a server that refuses additional checksums."""
    return {FIELD: value} if backend.checksums else {}


def checksum(body: bytes) -> bytes:
    return zlib.crc32(body).to_bytes(4, "big")


def encoded(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class BoundedPool:
    """Calls run on `workers` threads, and a submit blocks while `workers` are unfinished, so
    memory stays bounded by what one call holds times `workers`. The first failure is raised at
    the next submit (the producer stops early) and by ``results``."""

    def __init__(self, workers: int):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="letl-io")
        self._slots = threading.BoundedSemaphore(workers)
        self._futures: list = []
        self.failure: BaseException | None = None

    def submit(self, call: Callable, *args) -> None:
        if self.failure is not None:
            raise self.failure
        self._slots.acquire()
        future = self._pool.submit(call, *args)
        future.add_done_callback(self._done)
        self._futures.append(future)

    def _done(self, future) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is not None and self.failure is None:
            self.failure = future.exception()

    def results(self) -> list:
        """Every call's result, in the order they were submitted."""
        return [future.result() for future in self._futures]

    def close(self) -> None:
        """Wait for the calls in flight; drop those not started."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class RangedReader:
    """A read-only stream over `size` bytes fetched as BLOCK ranges by fetch(start, end),
    `workers` at once, delivered in order; at most `workers` blocks are held ahead."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, first: bytes, workers: int):
        self._fetch, self._size, self._workers = fetch, size, workers
        self._buffer, self._pos, self._next = first, 0, len(first)
        self._ahead: deque = deque()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="letl-get") if self._next < size else None
        self._fill()

    def _fill(self) -> None:
        while self._pool is not None and len(self._ahead) < self._workers and self._next < self._size:
            end = min(self._next + BLOCK, self._size)
            self._ahead.append((end - self._next, self._pool.submit(self._fetch, self._next, end)))
            self._next = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False  # forward only, like the HTTP body it replaces

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(BLOCK), b""))
        if self._pos == len(self._buffer):
            if not self._ahead:
                return b""
            expected, future = self._ahead.popleft()
            self._buffer, self._pos = future.result(), 0
            if len(self._buffer) != expected:  # a torn response must not pass for the object's end
                raise OSError(f"ranged read returned {len(self._buffer)} bytes, expected {expected}")
            self._fill()
        if self._pos == 0 and n >= len(self._buffer):  # the common case: a whole block, no copy
            self._pos = len(self._buffer)
            return self._buffer
        chunk = self._buffer[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._ahead.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Upload:
    """The sink of one put: bytes are held until they pass the multipart threshold (then one
    put_object suffices), else sent as parts of part_size, max_concurrency at a time."""

    def __init__(self, backend: "S3Backend", name: str, labels: dict[str, str] | None = None):
        self.backend, self.name, self.labels = backend, name, labels or {}
        self.held: deque[memoryview] = deque()
        self.held_bytes = 0
        self.upload_id: str | None = None
        self.pool: BoundedPool | None = None
        self.sent = 0
        # Of the bytes as they go out, taken from the body each request sends: a chunk may be a view of a
        # memory-mapped file, which an outside writer could change between its arrival and its sending.
        self.hash = BlockHash()

    def write(self, chunk: memoryview | bytes) -> None:
        self.held.append(memoryview(chunk))
        self.held_bytes += len(chunk)
        backend = self.backend
        if self.upload_id is None:
            if self.held_bytes <= backend.multipart_threshold:
                return
            algorithm = {"ChecksumAlgorithm": ALGORITHM} if backend.checksums else {}
            self.upload_id = backend.client.create_multipart_upload(Bucket=backend.bucket, Key=self.name,
                                                                    Metadata=self.labels, **algorithm)["UploadId"]
            self.pool = BoundedPool(backend.max_concurrency)
        while self.held_bytes >= backend.part_size:
            self._send(self._take(backend.part_size))

    def _take(self, n: int) -> bytes:
        if not n:
            return b""
        pieces, need = [], n
        while need:
            head = self.held[0]
            if len(head) <= need:
                pieces.append(self.held.popleft())
                need -= len(head)
            else:
                pieces.append(head[:need])
                self.held[0], need = head[need:], 0
        self.held_bytes -= n
        only = pieces[0] if len(pieces) == 1 else None
        if only is not None and isinstance(only.obj, bytes) and len(only) == len(only.obj):
            body = only.obj  # a whole block read from a stream goes out uncopied
        else:
            body = b"".join(pieces)  # held views (of a memory map) must not outlive the transfer
        self.hash.update(body)
        return body

    def _send(self, body: bytes) -> None:
        self.sent += 1
        self.pool.submit(self._part, self.sent, body)

    def _part(self, number: int, body: bytes) -> tuple[dict, bytes]:
        backend, raw = self.backend, checksum(body)
        field = checksum_field(backend, encoded(raw))
        etag = backend.client.upload_part(Bucket=backend.bucket, Key=self.name, UploadId=self.upload_id,
                                          PartNumber=number, Body=body, **field)["ETag"]
        return {"PartNumber": number, "ETag": etag, **field}, raw

    def finish(self, written: Written) -> Written:
        backend = self.backend
        declared = self.labels.get(SHA256_LABEL, written.sha256)
        if declared != written.sha256:  # the caller's put aborts the upload: nothing becomes visible
            raise VerificationFailed(f"s3://{backend.bucket}/{self.name}: the bytes sent do not match the sha256 "
                                     "declared for them; nothing stored")
        if self.upload_id is None:
            body = self._take(self.held_bytes)
            predicted = encoded(checksum(body))
            reported = backend._put_small(self.name, body, predicted, written,
                                          {**self.labels, SHA256_LABEL: written.sha256})
        else:
            if self.held_bytes or not self.sent:
                self._send(self._take(self.held_bytes))
            results = self.pool.results()  # in part-number order, as complete requires
            self.pool.close()
            predicted = f"{encoded(checksum(b''.join(raw for _, raw in results)))}-{len(results)}"
            reported = backend._complete(self.name, self.upload_id, [part for part, _ in results], written)
        backend.proofs.keep(self.name, reported, predicted, written.size, self.hash.hexdigest())
        return written

    def abort(self) -> None:
        if self.pool is not None:
            self.pool.close()  # no part may land after the abort
        if self.upload_id is not None:
            self.backend._abort(self.name, self.upload_id)


class Proofs:
    """The objects one backend uploaded whose server-side checksum proves them stored exactly as
    sent, with the BlockHash digest of what was sent. A move checks its copy twice within seconds
    of the put, so only the latest `limit` are kept."""

    def __init__(self, limit: int = 1024):
        self._limit, self._kept = limit, OrderedDict()
        self._lock = threading.Lock()

    def keep(self, name: str, reported: str | None, predicted: str, size: int, digest: str) -> None:
        """Only a checksum reported as predicted proves anything; none (a server without additional
        checksums, or a key that already held these bytes) leaves the object to be read back."""
        with self._lock:
            self._kept.pop(name, None)
            if reported == predicted:
                self._kept[name] = (predicted, size, digest)
                while len(self._kept) > self._limit:
                    self._kept.popitem(last=False)

    def digest(self, name: str, head: dict) -> str | None:
        """The digest of what was sent, if HEAD still reports the proven checksum and size."""
        with self._lock:
            proof = self._kept.get(name)
        return proof[2] if proof is not None and proof[:2] == (head.get(FIELD), head["ContentLength"]) else None

    def forget(self, name: str) -> None:
        with self._lock:
            self._kept.pop(name, None)
