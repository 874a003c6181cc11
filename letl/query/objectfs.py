"""Lake versions as a read-only fsspec filesystem, so DuckDB can query object-tier Parquet.

DuckDB here has no httpfs (it is not installed offline), so it cannot read s3:// itself.
Registered in a DuckDB connection (``con.register_filesystem``), ``letlobj://`` paths reach the versions on
any tier with ranged reads: a query that needs one column of one row group fetches
that column chunk and the footer, not the whole object.

A path names one version: ``letlobj://{asset_key}/partition_key={P}/{version_id}.parquet``, P the
partition percent-encoded as in gros:// Hive directories
(no ``partition_key=`` part for an unpartitioned version). Only the version id is looked
up; the rest must match the catalog, so a hive-partitioned read cannot be given a wrong
partition by a mislabelled path.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.spec import AbstractBufferedFile

from letl.lake.catalog import Version
from letl.lake.uri import hive_segment

PROTOCOL = "letlobj"


def object_path(version: Version) -> str:
    partition = f"{hive_segment(version.partition)}/" if version.partition else ""
    return f"{PROTOCOL}://{version.asset_key}/{partition}{version.version_id}.{version.format}"


class LakeObjectFileSystem(AbstractFileSystem):
    protocol = PROTOCOL
    # fsspec would otherwise keep every instance (and its lake) alive in a class-level cache.
    cachable = False

    def __init__(self, lake: Any, allowed: frozenset[str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.lake = lake
        # The explorer passes the versions its views serve: nothing else in the catalog (say a
        # restricted dataset's) is reachable through this filesystem, whatever SQL gets through.
        self.allowed = allowed
        self._versions: dict[str, Version] = {}

    def version(self, path: str) -> Version:
        path = self._strip_protocol(path)
        version_id = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if self.allowed is not None and version_id not in self.allowed:
            raise FileNotFoundError(f"{PROTOCOL}://{path}: not a version this connection serves")
        version = self._versions.get(version_id) or self.lake.catalog.get(version_id)
        if version is None or object_path(version) != f"{PROTOCOL}://{path}":
            raise FileNotFoundError(f"{PROTOCOL}://{path}: no such version in the catalog")
        self._versions[version_id] = version
        return version

    def refresh(self, version: Version) -> Version:
        """The catalog's current record: a move between tiers changes where the bytes are."""
        self._versions.pop(version.version_id, None)
        return self.version(object_path(version))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        version = self.version(path)
        return {"name": self._strip_protocol(path), "size": version.bytes, "type": "file",
                "created": version.created_at, "sha256": version.sha256}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        # Only version paths exist: the catalog, not a directory tree, says what there is.
        entry = self.info(path)
        return [entry] if detail else [entry["name"]]

    def modified(self, path: str) -> datetime:
        # DuckDB asks for it when it opens a file; a version never changes after its creation.
        return self.version(path).created_at

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> LakeObjectFile:
        if mode != "rb":
            raise PermissionError(f"{PROTOCOL}:// is read-only ({mode!r} asked for {path}); "
                                  "versions are written with Lake.write_version")
        return LakeObjectFile(self, path, self.version(path), block_size=block_size,
                              cache_options=cache_options)


class LakeObjectFile(AbstractBufferedFile):
    def __init__(self, fs: LakeObjectFileSystem, path: str, version: Version, **kwargs: Any):
        self.version = version
        # DuckDB asks for whole column chunks and footers; fsspec's default readahead would
        # fetch up to 5 MiB past each of them, most of it for columns the query never reads.
        super().__init__(fs, path, mode="rb", size=version.bytes, cache_type="none", **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        try:
            return self._read(start, end)
        except FileNotFoundError:
            current = self.fs.refresh(self.version)
            if (current.tier, current.storage_key) == (self.version.tier, self.version.storage_key):
                raise
            self.version = current
            return self._read(start, end)

    def _read(self, start: int, end: int) -> bytes:
        return self.fs.lake.tiers[self.version.tier].backend.read_range(self.version.storage_key, start, end)
