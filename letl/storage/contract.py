"""The storage contract: bytes under a key, nothing about Dagster or versions.

Every backend (posix, s3, daos) offers the same contract (``Backend``), the whole of what callers
may ask of a store: nobody probes a backend for a method. The lake above it decides what the keys
mean. A reader must see an object whole or not at all.
"""

import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, NamedTuple, Protocol

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
    """What the lake, moves, fsck, gros:// and the explorer may ask of a tier's store; nothing else.

    Keys are checked with ``validate_key`` (``InvalidKeyError``, an ``InvalidInput``, for one it
    refuses). A store that cannot be reached raises ``TierUnavailable`` from any method. A key
    names an object only once it is whole: a reader never sees part of a write.
    """

    def put(self, key: str, stream: BinaryIO, labels: Mapping[str, str] | None = None) -> Written:
        """Store the rest of stream under key and return its size and sha256.

        Versions are immutable: the same bytes again are accepted, different bytes raise
        ``FileExistsError`` and leave the first ones. A failure part-way leaves nothing visible.
        ``labels`` (ASCII names and values, no patient data) are kept with the object where the
        store has object metadata (S3: ``x-amz-meta-<name>``), for clients that read the store
        without the catalog; a store without metadata ignores them."""

    def put_file(self, key: str, path: Path, labels: Mapping[str, str] | None = None) -> Written:
        """``put`` from a local file, which is consumed (moved or deleted) once stored."""

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; ``NotFound`` if key holds none. Close it when done."""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, fewer when it ends sooner: b"" for an empty range or one
        that starts at or past the end. ``NotFound`` if key holds no object (an empty range may
        return b"" without looking)."""

    def local_path(self, key: str) -> Path | None:
        """A path that zero-copy readers such as DuckDB may open, or None when the store has none."""

    def exists(self, key: str) -> bool:
        """Whether key holds a whole object."""

    def delete(self, key: str) -> None:
        """Remove the object; gone on return. Deleting a missing key is not an error."""

    def discard(self, key: str) -> None:
        """``delete``, but the space may be freed after return (in the background): the key is gone
        on return all the same. Deleting a missing key is not an error."""

    def usage(self) -> int:
        """Bytes held by the objects, without the leftovers of interrupted writes."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every object's key that starts with prefix (a string prefix, not a folder), never a temp one."""

    def clean_temp(self, older_than: float = 0) -> int:
        """Remove the leftovers of interrupted writes begun older_than seconds ago or more (a younger one
        may be a live writer's); returns how many were removed. Objects are never touched."""

    def probe(self) -> None:
        """A cheap call that returns when the store can be used and raises ``TierUnavailable`` saying why
        it cannot (unreachable, refused, missing, not a directory)."""

    def fast_digest(self, key: str) -> str | None:
        """The ``transfer.BlockHash`` digest of the stored object computed faster than one stream read
        (in parallel, or proven by the server at upload), or None where the store has no such path:
        ``transfer.stored_digest`` then reads it as one stream. ``NotFound`` if key holds no object."""


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
