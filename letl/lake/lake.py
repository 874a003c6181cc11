"""The Lake: the catalog plus the tiers. Everything above storage talks to this."""

import hashlib
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from letl.lake import manifests, pointers
from letl.lake.catalog import Catalog, Version, utcnow
from letl.lake.config import LakeConfig, TierSpec, format_size
from letl.lake.errors import InvalidInput, LetlError, NoRoom, NotFound, TierUnavailable, VerificationFailed
from letl.lake.names import new_version_id, repo_of
from letl.lake.uri import format_uri
from letl.storage.contract import Backend, hash_stream, validate_key
from letl.storage.factory import make_backend
from letl.storage.posix import PosixBackend

PARQUET_OPTIONS = {"compression": "zstd"}


class Tier:
    """A tier's spec and its backend, built on first use: an unused object store costs no import."""

    def __init__(self, spec: TierSpec, home: Path):
        self.spec, self.home = spec, home
        self._backend: Backend | None = None
        self._problem: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_backend(self.spec, self.home)
        return self._backend

    def unavailable(self) -> str | None:
        """Why the tier cannot take data now (probed once), or None."""
        if self._problem is None:
            try:
                self.backend.probe()
                self._problem = ""
            except Exception as exc:  # any failure to reach a tier makes placement skip it
                self._problem = f"tier {self.name} ({self.spec.location}) unavailable: {exc}"
        return self._problem or None


@dataclass
class Staged:
    """A version whose object is stored on its tier but not yet visible: ``Lake.publish`` commits it.

    ``reuse`` is the existing version the publish keeps instead, when the new object holds the
    same bytes with the same sources and upstreams and the old object is still whole.
    """

    version: Version
    upstream_ids: frozenset[str]
    reuse: Version | None = None



def refuse_unless_parquet(path: Path, shown: str | None = None) -> None:
    """InvalidInput unless path is a complete Parquet file (shown: how the caller named it)."""
    try:
        pq.read_metadata(path)
    except pa.ArrowInvalid:
        raise InvalidInput(f"{shown or path}: not a complete Parquet file (no Parquet footer); write it again with a "
                           "Parquet writer, or give it another extension to store it as it is") from None

class Lake:
    def __init__(self, config: LakeConfig):
        self.config = config
        config.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(config.catalog_url)
        ranked = sorted(config.tiers, key=lambda t: t.rank)
        self.tiers = {spec.name: Tier(spec, config.home) for spec in ranked}

    @classmethod
    def from_env(cls, **overrides: Any) -> "Lake":
        return cls(LakeConfig.resolve(**overrides))

    @property
    def branch(self) -> str:
        return self.config.branch

    def staging_path(self, suffix: str = ".parquet") -> Path:
        self.config.staging.mkdir(parents=True, exist_ok=True)
        return self.config.staging / f"{uuid.uuid4().hex}{suffix}"

    def tier_usage(self) -> dict[str, int]:
        """Bytes held per tier, by the catalog's account (every version is kept)."""
        used = {name: 0 for name in self.tiers}
        for version in self.catalog.list_versions():
            used[version.tier] = used.get(version.tier, 0) + version.bytes
        return used

    def choose_tier(self, size: int, hint: str | None = None, strict: bool = False) -> tuple[str, str]:
        """Hinted tier if it has room, else the next colder one with room (never, if strict);
        hottest first without a hint. Unreachable tiers are skipped; when none is left the error
        says whether the candidates were full (NoRoom) or unreachable (TierUnavailable)."""
        names = list(self.tiers)
        if hint is not None and hint not in self.tiers:
            raise InvalidInput(f"unknown tier {hint!r}; configured tiers: {', '.join(names)}")
        candidates = names[names.index(hint):] if hint else names
        if strict and hint:
            candidates = [hint]
        used = self.tier_usage()
        full, unreachable = [], []
        for name in candidates:
            quota = self.tiers[name].spec.quota_bytes
            if quota and used[name] + size > quota:
                full.append(f"{name} ({format_size(used[name])} of {format_size(quota)} used)")
                continue
            if problem := self.tiers[name].unavailable():
                unreachable.append(problem)
                continue
            reason = "hint" if name == hint else ("hint full, next colder" if hint else "hottest with room")
            return name, reason
        if unreachable and not full:
            raise TierUnavailable("; ".join(unreachable))
        detail = f"; unreachable: {'; '.join(unreachable)}" if unreachable else ""
        raise NoRoom(f"no tier among {', '.join(candidates)} has room for {format_size(size)}: full: "
                     f"{', '.join(full)}{detail}; free space or raise the quota (LETL_TIER_<NAME>_QUOTA)")

    def write_version(self, asset_key: str, data: Any, **options: Any) -> Version:
        """Store data as a new immutable version and publish it at once (see ``stage_version``)."""
        return self.publish([self.stage_version(asset_key, data, **options)])[0]

    def stage_version(
        self,
        asset_key: str,
        data: Any,
        *,
        partition: str | None = None,
        tier_hint: str | None = None,
        run_id: str | None = None,
        upstream_ids: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
        branch: str | None = None,
        strict_tier: bool = False,
        fmt: str = "parquet",
        reuse_identical: bool = True,
    ) -> Staged:
        """Store data as an immutable object on its tier; nothing is visible until ``publish``.

        ``data`` is a pandas DataFrame, a pyarrow Table or RecordBatchReader, or the
        path of a Parquet file the caller wrote into ``staging_path()``; that file is
        consumed. With another ``fmt``, a path is stored as opaque bytes (an image, a
        FASTA file). A crash before the publish leaves at most an orphan object, which
        ``letl tier fsck`` removes after its grace period.
        """
        started = time.perf_counter()
        staged = self._stage(data) if fmt == "parquet" else Path(data)
        branch = branch or self.branch
        part = partition or ""
        created_at = utcnow()
        version_id = new_version_id(created_at)
        key = validate_key(f"{branch}/{asset_key}/{part or '_'}/{version_id}.{fmt}")
        try:
            info = pq.read_metadata(staged) if fmt == "parquet" else None
            tier_name, placement = self.choose_tier(staged.stat().st_size, tier_hint, strict_tier)
            written = self.tiers[tier_name].backend.put_file(
                key, staged, labels=pointers.object_labels(asset_key, branch, part, version_id))
        except BaseException:
            if not isinstance(data, (str, Path)):
                staged.unlink(missing_ok=True)  # our own staging file; a caller's path is theirs
            raise
        seconds = time.perf_counter() - started
        version = Version(
            version_id=version_id,
            asset_key=asset_key,
            branch=branch,
            partition=part,
            created_at=created_at,
            run_id=run_id,
            tier=tier_name,
            storage_key=key,
            format=fmt,
            bytes=written.size,
            rows=info.num_rows if info else None,
            sha256=written.sha256,
            schema_fingerprint=schema_fingerprint(info.schema.to_arrow_schema()) if info else None,
            metadata={**(metadata or {}), "placement": placement, "write_seconds": round(seconds, 4)},
        )
        result = Staged(version, frozenset(upstream_ids))
        if reuse_identical:
            result.reuse = self._reusable(result)
        return result

    def _reusable(self, staged: Staged) -> Version | None:
        """The latest version to keep instead of the staged one: a rerun over unchanged input.

        Same bytes are not enough: the sources recorded with the output (``metadata["output"]``)
        and the exact upstreams must match too, or a reused output would describe other input
        than its siblings. And the old object must still be whole on its tier, or reusing it
        would publish a pointer to nothing: then the new copy heals the dataset.
        """
        new = staged.version
        current = self.latest(new.asset_key, new.partition, new.branch)
        if current is None or current.sha256 != new.sha256:
            return None
        if current.metadata.get("output") != new.metadata.get("output"):
            return None
        if {u.version_id for u in self.catalog.upstreams(current.version_id)} != staged.upstream_ids:
            return None
        return current if self.intact(current) else None

    def intact(self, version: Version) -> bool:
        """The version's object exists on its tier and hashes to the recorded sha256."""
        tier = self.tiers.get(version.tier)
        if tier is None or tier.unavailable():
            return False
        try:
            with tier.backend.open(version.storage_key) as stream:
                stored = hash_stream(stream)
        except (OSError, LetlError):
            return False
        except Exception as exc:  # a remote backend's own "no such key"
            if type(exc).__module__.split(".")[0] in ("botocore", "boto3", "pydaos"):
                return False
            raise
        return stored == (version.bytes, version.sha256)

    def publish(self, staged: list[Staged], request: tuple[str, str, dict] | None = None) -> list[Version]:
        """Make staged versions visible together, in one catalog transaction, or none of them.

        Reused versions stay as they are; their new copies are deleted. On failure every new
        object is deleted and nothing is visible. ``request`` completes the request that wrote
        them in the same transaction (see ``Catalog.commit_versions``).
        """
        fresh = [s for s in staged if s.reuse is None]
        # Before the commit: a publish killed after it leaves its pointers pending, not naming the superseded version.
        announced = pointers.announce(self, [s.version for s in fresh])
        try:
            self.catalog.commit_versions([(s.version, s.upstream_ids) for s in fresh], request=request)
        except BaseException:
            for s in fresh:
                self.tiers[s.version.tier].backend.delete(s.version.storage_key)
            pointers.withdraw(announced)
            raise
        for s in staged:
            if s.reuse is not None:
                self.tiers[s.version.tier].backend.delete(s.version.storage_key)
        for s in fresh:
            manifests.record_version(self, s.version)  # the lineage audit trail: logs, never raises
        pointers.refresh_versions(self, [s.version for s in fresh])  # S3-only clients' latest: logs, never raises
        return [s.reuse or s.version for s in staged]

    def discard(self, staged: list[Staged]) -> None:
        """Delete the objects of staged versions that will never be published."""
        for s in staged:
            self.tiers[s.version.tier].backend.delete(s.version.storage_key)

    def _stage(self, data: Any) -> Path:
        if isinstance(data, (str, Path)):
            path = Path(data)
            if not path.is_file():
                raise NotFound(f"output path {path} does not exist")
            refuse_unless_parquet(path)
            return path
        target = self.staging_path()
        if isinstance(data, pa.RecordBatchReader):
            with pq.ParquetWriter(target, data.schema, **PARQUET_OPTIONS) as writer:
                for batch in data:
                    writer.write_batch(batch)
            return target
        if not isinstance(data, pa.Table):
            import pandas as pd

            if not isinstance(data, pd.DataFrame):
                raise TypeError(f"cannot store {type(data).__name__}: use a DataFrame, Table, RecordBatchReader or Parquet path")
            data = pa.Table.from_pandas(data, preserve_index=False)
        pq.write_table(data, target, **PARQUET_OPTIONS)
        return target

    def latest(self, asset_key: str, partition: str | None = None, branch: str | None = None) -> Version | None:
        return self.catalog.latest_version(asset_key, partition or "", branch or self.branch)

    def local_path(self, version: Version) -> Path:
        """A local file holding the version: the tier's own file, or a cached copy for remote tiers.

        The cache key is the sha256, so a cached copy is never stale.
        """
        backend = self.tiers[version.tier].backend
        path = backend.local_path(version.storage_key)
        if path is None:
            path = self.config.home / "cache" / f"{version.sha256}.{version.format}"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                cache = PosixBackend(path.parent)
                with backend.open(version.storage_key) as stream:
                    written = cache.put(path.name, stream)
                if written.sha256 != version.sha256:
                    cache.delete(path.name)
                    raise VerificationFailed(f"version {version.version_id} on {version.tier} does not match its sha256")
        if not path.is_file():
            raise NotFound(f"version {version.version_id} missing from tier {version.tier} at {version.storage_key}")
        return path

    def read_table(self, version: Version, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.local_path(version), columns=columns)

    def record_access(self, version: Version, kind: str, run_id: str | None = None, step_key: str | None = None) -> int:
        return self.catalog.record_access(
            version.version_id, kind, run_id=run_id, step_key=step_key, user=current_user(), host=socket.gethostname()
        )

    def uri(self, version: Version) -> str:
        """The version's gros:// address, pinned by its index among its partition's versions."""
        return format_uri(repo_of(version.asset_key), version.branch, "index", self.catalog.version_index(version),
                          version.partition or None)


def schema_fingerprint(schema: pa.Schema) -> str:
    text = ";".join(f"{f.name}:{f.type}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_user() -> str:
    """Who this process runs as, for the access log and the steward check: the effective uid's account
    name (the uid when it has none). Not getpass.getuser(), which believes $USER and $LOGNAME."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
