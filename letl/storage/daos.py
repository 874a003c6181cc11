"""DaosBackend: LETL objects in a DAOS key-value store through pydaos.

Two ways to put a tier on DAOS:

* **dfuse mode** (no code here). A POSIX container mounted with ``dfuse`` is just
  a directory, so ``PosixBackend(<mount point>)`` serves it, and DuckDB and pyarrow
  can open its files directly (``local_path()`` works). Prefer this when dfuse is
  available.
* **pydaos mode** (this module). Objects go into one DAOS dictionary (``DDict``)
  in a container of type PYTHON (``daos cont create <pool> <cont> --type PYTHON``).
  There is no local path, so readers go through ``open()``, which returns a seekable
  file object that pyarrow can read.

The pydaos API used here is DAOS 2.4/2.6 ``pydaos``, which is not on PyPI. These
sources were read for it:

* daos-stack/daos ``src/client/pydaos/pydaos_core.py`` (2022+ layout):
  - ``DCont(pool, cont)``. ``DCont.get(name)`` returns the object under that name
    and raises ``DObjNotFound`` when there is none. ``DCont.dict(name, v=None, cid="0")``
    creates a dictionary and raises ``PyDError(... DER_EXIST)`` if the name exists.
    The ``cid`` argument is from daos-stack/daos PR #11952, in release 2.4.
  - ``DDict.get(key)`` raises ``KeyError`` when the key is missing. ``put(key, val)``,
    ``bput(dict)``, ``bget(dict, value_size=None)`` (fills the dict in place, None
    for a missing key), ``pop(key)`` (the same as a put of None), ``dump()``,
    ``__len__`` and ``__iter__`` (walk every key), and ``__contains__``.
* daos-stack/daos ``src/client/pydaos/pydaos_shim.c`` (``kv_put``, ``kv_get``,
  ``kv_iter``):
  - A value of None or a zero-length value is a ``daos_kv_remove``: storing an
    empty value deletes the key. This module therefore never writes one.
  - Values come back as ``bytes``. ``bget`` needs a real ``dict``. Values larger than
    ``value_size`` (1 MiB by default) cost a second round trip, so chunks are read
    with ``value_size=chunk_size``.
  - Up to 16 puts or gets are in flight at once inside one ``bput`` or ``bget``.
* daos-stack/daos ``src/client/pydaos/__init__.py``: ``PyDError(message, rc)``. It is
  re-exported at package level next to ``DCont``, ``DDict`` and ``DObjNotFound``.
* daos-stack/daos ``docs/user/python.md``: usage (``dcont.dict``, ``dcont.get``,
  ``bput``/``bget``, ``pop``, ``dump``).

Layout inside the dictionary (``dict_name``, ``"letl"`` by default):

* ``{key}`` is the **manifest**, a JSON document
  ``{"format", "size", "sha256", "chunks", "chunk_size", "upload"}``.
* ``{key}#chunk/{upload}/{i:06d}`` holds the chunks of one upload. Each chunk is
  ``chunk_size`` bytes, except the last one, which is never empty. ``upload`` is
  ``{start time in ns}-{random}``, so two uploads to the same key never mix their
  chunks, and ``clean_temp`` can tell an upload's age.

``validate_key`` only allows ``[A-Za-z0-9_.=-]`` and ``/``, so a valid key never holds
``#`` and can never clash with a chunk key. The manifest is written last and deleted
first. An object exists exactly when its manifest exists, and a manifest is only
ever written after all of its chunks. A zero-byte object is a manifest with
``chunks: 0``.

Limits:
- pydaos has no conditional insert (the shim calls ``daos_kv_put`` with flags 0).
  Two writers racing on the same new key could therefore both "win". The manifest
  is re-checked just before it is written, which narrows the window but does not
  close it. Lake keys carry a unique version id, so such races do not happen there.
- ``clean_temp`` treats every chunk set without a matching manifest as an orphan.
  Give ``older_than`` a grace period when writers may be live.
- pydaos has no ranged get, ping or stat call. ``read_range`` is one ``bget`` of only the
  chunks that cover the range (their sizes are checked; the sha256 covers the whole object, so
  only ``open`` can check it). ``probe`` is one ``bget`` of a key no object can have.
- Failing to open the pool, container or dictionary is ``DaosUnavailable`` (a ``TierUnavailable``);
  a PyDError later, on a value, stays a ``DaosStorageError``: pydaos's message does not say
  whether the engines went away or the pool is full.

The chunk writer and reader are in daos_chunks.py.
"""

from __future__ import annotations

import errno
import io
import json
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from letl.lake.errors import NotFound, TierUnavailable
from letl.storage.contract import Written, hash_stream, validate_key
from letl.storage.daos_chunks import CHUNK_MARK, ChunkReader, ChunkWriter, DaosStorageError, checked_chunk, chunk_key
from letl.storage.transfer import pipe

MiB = 1024 * 1024
DEFAULT_CHUNK = 8 * MiB
LAYOUT = "letl-daos/1"
_PROBE_KEY = "#probe"
_BULK = 256  # keys per bget/bput when walking many manifests or removing chunks


def _now_ns() -> int:
    return time.time_ns()


class DaosUnavailable(DaosStorageError, TierUnavailable):
    """The pool, container or dictionary cannot be opened: no daos_agent, no such pool or container,
    no access, or a name that is not a dictionary."""


class DaosBackend:
    """Objects in one pydaos DDict: chunk values, with a manifest written last as the commit point."""

    def __init__(
        self,
        pool: str,
        cont: str,
        dict_name: str = "letl",
        chunk_size: int = DEFAULT_CHUNK,
        pydaos_module: Any = None,
        *,
        batch_chunks: int = 4,
        verify_reads: bool = True,
    ):
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if batch_chunks <= 0:
            raise ValueError("batch_chunks must be positive")
        self.pool, self.cont, self.dict_name = pool, cont, dict_name
        self.chunk_size = chunk_size
        self.batch_chunks = batch_chunks  # chunks per bput: memory held is batch_chunks * chunk_size
        self.verify_reads = verify_reads
        self._module = pydaos_module
        self._dcont: Any = None
        self._ddict: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DaosBackend(daos://{self.pool}/{self.cont}/{self.dict_name})"

    # --- connection (lazy: constructing a backend needs neither pydaos nor a daos_agent) ---

    @property
    def pydaos(self) -> Any:
        if self._module is None:
            import pydaos  # noqa: PLC0415 - only present on DAOS client nodes

            self._module = pydaos
        return self._module

    @property
    def ddict(self) -> Any:
        if self._ddict is None:
            with self._lock:
                if self._ddict is None:
                    with self._errors(DaosUnavailable):
                        self._dcont = self.pydaos.DCont(self.pool, self.cont)
                        self._ddict = self._get_or_create(self._dcont)
        return self._ddict

    def _get_or_create(self, dcont: Any) -> Any:
        mod = self.pydaos
        try:
            found = dcont.get(self.dict_name)
        except mod.DObjNotFound:
            try:
                found = dcont.dict(self.dict_name)
            except mod.PyDError:
                found = dcont.get(self.dict_name)  # another process created it first (DER_EXIST)
        if not hasattr(found, "bput"):
            raise DaosUnavailable(errno.EINVAL, f"{self.dict_name!r} in {self.pool}/{self.cont} is not a DAOS dict")
        return found

    @contextmanager
    def _errors(self, kind: type[DaosStorageError] = DaosStorageError) -> Iterator[None]:
        mod = self.pydaos
        try:
            yield
        except mod.PyDError as exc:
            raise kind(errno.EIO, f"DAOS {self.pool}/{self.cont}: {exc}") from exc

    # --- low-level KV helpers ---

    def _chunk_keys(self, key: str, manifest: dict) -> list[str]:
        return [chunk_key(key, manifest["upload"], i) for i in range(manifest["chunks"])]

    def _bput(self, values: dict) -> None:
        with self._errors():
            self.ddict.bput(values)

    def _bget(self, request: dict, value_size: int) -> None:
        with self._errors():
            self.ddict.bget(request, value_size)

    def _manifests(self, keys: list[str]) -> dict[str, dict | None]:
        """Manifests for many keys, fetched with bget (in parallel on the DAOS side)."""
        found: dict[str, dict | None] = {}
        for start in range(0, len(keys), _BULK):
            batch = dict.fromkeys(keys[start:start + _BULK])
            with self._errors():
                self.ddict.bget(batch)
            for key, raw in batch.items():
                found[key] = None if raw is None else _parse_manifest(key, raw)
        return found

    def _manifest(self, key: str) -> dict | None:
        return self._manifests([key])[key]

    def _remove(self, keys: list[str]) -> None:
        """Delete keys: a put of None is a daos_kv_remove (pydaos_shim.c kv_put)."""
        for start in range(0, len(keys), _BULK):
            self._bput(dict.fromkeys(keys[start:start + _BULK]))

    # --- the Backend contract ---

    def put(self, key: str, stream: BinaryIO, labels: Mapping[str, str] | None = None) -> Written:
        validate_key(key)
        existing = self._manifest(key)
        if existing is not None:
            return _same_or_refuse(key, existing, hash_stream(stream))
        chunks = ChunkWriter(self._bput, key, f"{_now_ns()}-{uuid.uuid4().hex[:12]}", self.chunk_size, self.batch_chunks)
        try:
            written = Written(*pipe(stream, chunks))  # reading and sha256 overlap the bputs
            count = chunks.finish()
            manifest = {
                "format": LAYOUT,
                "size": written.size,
                "sha256": written.sha256,
                "chunks": count,
                "chunk_size": self.chunk_size,
                "upload": chunks.upload,
            }
            raced = self._manifest(key)  # no conditional insert in pydaos: re-check just before committing
            if raced is not None:
                self._discard(chunks.stored)
                chunks.stored = []
                return _same_or_refuse(key, raced, written)
            with self._errors():
                self.ddict.put(key, json.dumps(manifest, sort_keys=True).encode())
        except BaseException:
            self._discard(chunks.stored)
            raise
        return written

    def _discard(self, chunk_keys: list[str]) -> None:
        """Best-effort removal of an unfinished upload; what is left is found by clean_temp."""
        try:
            self._remove(chunk_keys)
        except Exception:  # noqa: BLE001 - the original failure matters more
            pass

    def put_file(self, key: str, path: Path, labels: Mapping[str, str] | None = None) -> Written:
        """Store a local file under key. The file is consumed: deleted once stored."""
        path = Path(path)
        with open(path, "rb") as src:
            written = self.put(key, src)
        path.unlink(missing_ok=True)
        return written

    def _existing(self, key: str) -> dict:
        validate_key(key)
        manifest = self._manifest(key)
        if manifest is None:
            raise NotFound(f"no object daos://{self.pool}/{self.cont}/{self.dict_name}/{key}")
        return manifest

    def open(self, key: str) -> BinaryIO:
        manifest = self._existing(key)
        raw = ChunkReader(self._bget, key, manifest, verify=self.verify_reads)
        return io.BufferedReader(raw, buffer_size=min(manifest["chunk_size"], MiB))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, fewer if it ends sooner: the manifest, then one bget of
        only the chunks that cover the range. The chunks' sizes are checked; their sha256 cannot be
        (it covers the whole object), so a damaged byte inside them is only caught by a whole read."""
        manifest = self._existing(key)
        size, chunk_size = manifest["size"], manifest["chunk_size"]
        start, end = max(0, start), min(end, size)
        if start >= end:
            return b""
        first, last = start // chunk_size, (end - 1) // chunk_size
        wanted = {chunk_key(key, manifest["upload"], i): None for i in range(first, last + 1)}
        self._bget(wanted, chunk_size)
        pieces = [checked_chunk(key, i, raw, manifest) for i, raw in enumerate(wanted.values(), start=first)]
        offset = first * chunk_size
        return b"".join(pieces)[start - offset:end - offset]

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None  # pydaos mode has no path; a dfuse mount uses PosixBackend instead

    def exists(self, key: str) -> bool:
        validate_key(key)
        return self._manifest(key) is not None

    def fast_digest(self, key: str) -> None:
        """None: there is no faster path than ``open``, which already checks the manifest's sha256."""
        return None

    def delete(self, key: str) -> None:
        """Manifest first, so the object vanishes at once; chunks left by a crash are orphans for clean_temp."""
        validate_key(key)
        manifest = self._manifest(key)
        if manifest is None:
            return
        with self._errors():
            self.ddict.pop(key)
        self._remove(self._chunk_keys(key, manifest))

    def discard(self, key: str) -> None:
        """The same as delete: the chunks' removal is a few bputs, nothing worth a thread."""
        self.delete(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        with self._errors():
            names = [k for k in self.ddict if "#" not in k and k.startswith(prefix)]
        yield from sorted(names)

    def probe(self) -> None:
        """Open the pool, container and dictionary (once), then one bget of a key no object can have
        ('#' is outside validate_key's alphabet), so a store that went away since is seen too.

        pydaos has no ping or stat call: a get is its cheapest round trip to the engines."""
        try:
            with self._errors(DaosUnavailable):
                self.ddict.bget({_PROBE_KEY: None})
        except ImportError as exc:
            raise DaosUnavailable(errno.ENOENT, f"DAOS {self.pool}/{self.cont}: pydaos is not installed here") from exc

    def usage(self) -> int:
        manifests = self._manifests(list(self.keys()))
        return sum(m["size"] for m in manifests.values() if m is not None)

    def clean_temp(self, older_than: float = 0) -> int:
        """Remove chunks that no manifest points at and whose upload began older_than seconds ago or more.

        Those are uploads that were interrupted, chunks left over by a delete that
        crashed, and the losing side of a racing put. Returns how many chunk keys
        were removed.
        """
        with self._errors():
            chunk_keys = [k for k in self.ddict if CHUNK_MARK in k]
        uploads: dict[tuple[str, str], list[str]] = {}
        for name in chunk_keys:
            key, _, rest = name.partition(CHUNK_MARK)
            upload = rest.rsplit("/", 1)[0]
            uploads.setdefault((key, upload), []).append(name)
        manifests = self._manifests(sorted({key for key, _ in uploads}))
        cutoff_ns = _now_ns() - int(older_than * 1e9)
        doomed: list[str] = []
        for (key, upload), members in uploads.items():
            manifest = manifests.get(key)
            if manifest is not None and manifest.get("upload") == upload:
                continue
            if _upload_started_ns(upload) > cutoff_ns:
                continue  # possibly a live writer: leave it for a later pass
            doomed.extend(members)
        self._remove(doomed)
        return len(doomed)


def _same_or_refuse(key: str, manifest: dict, written: Written) -> Written:
    if (manifest["size"], manifest["sha256"]) != tuple(written):
        raise FileExistsError(errno.EEXIST, "already holds different data", key)
    return written


def _parse_manifest(key: str, raw: bytes) -> dict:
    try:
        manifest = json.loads(raw)
        for field, kind in (("size", int), ("sha256", str), ("chunks", int), ("chunk_size", int), ("upload", str)):
            if not isinstance(manifest[field], kind):
                raise TypeError(field)
    except (ValueError, KeyError, TypeError) as exc:
        raise DaosStorageError(errno.EIO, f"{key}: damaged manifest ({exc})") from exc
    return manifest


def _upload_started_ns(upload: str) -> int:
    try:
        return int(upload.split("-", 1)[0])
    except ValueError:
        return 0  # not ours or damaged: old enough to clean
