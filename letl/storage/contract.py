"""The storage contract: bytes under a key, nothing about Dagster or versions.

Every backend (posix, s3, daos) offers the same small contract (``Backend``); the lake above it
decides what the keys mean. A reader must see an object whole or not at all.
"""

import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple, Protocol

from letl.lake.errors import InvalidInput

CHUNK = 8 * 1024 * 1024
TMP_DIR = ".tmp"
# Filesystems allow 255 bytes a name; leave room for the version id and suffix a key ends with.
MAX_KEY_PART = 200
_KEY_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*$")


class Written(NamedTuple):
    size: int
    sha256: str


class InvalidKeyError(InvalidInput):
    """A storage key that could escape its tier or name a hidden object."""


def validate_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(not _KEY_PART.match(p) or p in (".", "..") or len(p) > MAX_KEY_PART for p in parts):
        shown = key if len(key) <= 80 else key[:80] + "..."
        raise InvalidKeyError(f"invalid storage key {shown!r}: use '/'-separated parts of [A-Za-z0-9_.=-], "
                              f"each at most {MAX_KEY_PART} characters")
    return key


class Backend(Protocol):
    def put(self, key: str, stream: BinaryIO) -> Written: ...

    def put_file(self, key: str, path: Path) -> Written:
        """Store a local file under key; the file is consumed (moved or deleted)."""

    def open(self, key: str) -> BinaryIO: ...

    def local_path(self, key: str) -> Path | None:
        """A path that zero-copy readers such as DuckDB may open, or None."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def usage(self) -> int: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...


class Digest(Protocol):
    """A running hash: hashlib's objects, transfer.BlockHash."""

    def update(self, data, /) -> None: ...


def chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """The rest of a stream, at most size bytes at a time."""
    while chunk := stream.read(size):
        yield chunk


def feed(digest: Digest, stream: BinaryIO) -> int:
    """Every streaming hash in storage is this loop: the rest of stream through digest. Returns its size."""
    size = 0
    for chunk in chunks(stream):
        digest.update(chunk)
        size += len(chunk)
    return size


def hash_stream(stream: BinaryIO) -> Written:
    digest = hashlib.sha256()
    return Written(feed(digest, stream), digest.hexdigest())


def hash_file(path: Path) -> Written:
    with open(path, "rb") as f:
        return hash_stream(f)
