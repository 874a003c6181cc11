"""The chunks of one DAOS object: cutting a put into chunk values, reading them back one at a time.

How the chunks are laid out in the dictionary, and why, is in daos.py's module docstring. These
classes reach pydaos only through the ``bput`` and ``bget`` callables the backend hands them, which
turn a PyDError into a DaosStorageError.
"""

import errno
import hashlib
import io
from typing import Any, Callable

CHUNK_MARK = "#chunk/"


class DaosStorageError(OSError):
    """A pydaos call failed (PyDError), or a stored object is damaged."""


def chunk_key(key: str, upload: str, index: int) -> str:
    return f"{key}{CHUNK_MARK}{upload}/{index:06d}"


def checked_chunk(key: str, index: int, data: bytes | None, manifest: dict) -> bytes:
    if data is None:
        raise DaosStorageError(errno.EIO, f"{key}: chunk {index} is missing (deleted while open?)")
    chunk_size = manifest["chunk_size"]
    expected = min(chunk_size, manifest["size"] - index * chunk_size)
    if len(data) != expected:
        raise DaosStorageError(errno.EIO, f"{key}: chunk {index} holds {len(data)} bytes, expected {expected}")
    return data


class ChunkWriter:
    """The sink of one put: the stream cut into chunk_size values, stored batch_chunks per bput."""

    def __init__(self, bput: Callable[[dict], None], key: str, upload: str, chunk_size: int, batch_chunks: int):
        self.bput, self.key, self.upload = bput, key, upload
        self.chunk_size, self.batch_chunks = chunk_size, batch_chunks
        self.held = bytearray()
        self.pending: dict[str, bytes] = {}
        self.count = 0
        self.stored: list[str] = []  # every key a bput was asked to write, for the cleanup of a failure

    def __call__(self, data: memoryview | bytes) -> None:
        view, size = memoryview(data).cast("B"), self.chunk_size
        while view:
            if not self.held and len(view) >= size:  # a whole chunk: one copy, out of a memory map or buffer
                self._add(bytes(view[:size]))
                view = view[size:]
                continue
            take = min(len(view), size - len(self.held))
            self.held += view[:take]
            view = view[take:]
            if len(self.held) == size:
                self._add(bytes(self.held))
                self.held.clear()

    def _add(self, chunk: bytes) -> None:
        self.pending[chunk_key(self.key, self.upload, self.count)] = chunk  # never empty
        self.count += 1
        if len(self.pending) >= self.batch_chunks:
            self._store()

    def _store(self) -> None:
        self.stored.extend(self.pending)  # a failed bput may have stored part of its batch
        self.bput(self.pending)
        self.pending = {}

    def finish(self) -> int:
        """Store what is left (the short last chunk); returns how many chunks the object has."""
        if self.held:
            self._add(bytes(self.held))
            self.held.clear()
        if self.pending:
            self._store()
        return self.count


class ChunkReader(io.RawIOBase):
    """A seekable read-only view of one object that fetches one chunk at a time."""

    def __init__(self, bget: Callable[[dict, int], None], key: str, manifest: dict, verify: bool):
        super().__init__()
        self._bget, self._key, self._manifest = bget, key, manifest
        self._size, self._chunk_size = manifest["size"], manifest["chunk_size"]
        expected = -(-self._size // self._chunk_size)
        if manifest["chunks"] != expected:
            raise DaosStorageError(errno.EIO, f"{key}: manifest lists {manifest['chunks']} chunks, size needs {expected}")
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None
        self._digest = hashlib.sha256() if verify else None
        self._hashed = 0  # bytes [0, _hashed) went through the digest, in order
        self.name = key

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = target
        return target

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        name = chunk_key(self._key, self._manifest["upload"], index)
        request = {name: None}
        self._bget(request, self._chunk_size)
        data = checked_chunk(self._key, index, request[name], self._manifest)
        self._cached = (index, data)
        return data

    def _account(self, start: int, data: bytes | memoryview) -> None:
        """Feed bytes read at start into the digest if they extend the in-order prefix; check at the end."""
        if self._digest is None:
            return
        end = start + len(data)
        if start <= self._hashed < end:
            self._digest.update(data[self._hashed - start:])
            self._hashed = end
        if self._hashed == self._size and self._digest is not None:
            actual, self._digest = self._digest.hexdigest(), None
            if actual != self._manifest["sha256"]:
                raise DaosStorageError(errno.EIO, f"{self._key}: sha256 {actual} does not match the manifest")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._size or len(view) == 0:
            self._account(self._pos, b"")
            return 0
        index, offset = divmod(self._pos, self._chunk_size)
        chunk = self._chunk(index)
        n = min(len(view), len(chunk) - offset)
        piece = memoryview(chunk)[offset:offset + n]
        view[:n] = piece
        start, self._pos = self._pos, self._pos + n
        self._account(start, piece)
        return n

    def readall(self) -> bytes:
        parts = []
        while self._pos < self._size:
            index, offset = divmod(self._pos, self._chunk_size)
            piece = memoryview(self._chunk(index))[offset:]
            start, self._pos = self._pos, self._pos + len(piece)
            self._account(start, piece)
            parts.append(piece)
        self._account(self._pos, b"")
        return b"".join(parts)

    def close(self) -> None:
        self._cached = None
        super().close()
