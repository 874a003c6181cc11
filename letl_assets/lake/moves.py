"""Moving versions between tiers: copy, verify, switch the pointer, then delete. Never lost.

Every move carries a request id kept in the ``moves`` table, so a repeated request
returns the first result, and a move killed at any step is finished or rolled back by
``fsck``. sha256 stays the content identity: it is computed while copying and must
equal the one recorded when the version was written (this catches a bad source). The
read-back check of the destination uses xxh3-128 instead of a second sha256: it runs
near memory speed, so a verified move costs little more than a copy.
"""

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
import xxhash

from .backends import CHUNK
from .errors import Conflict, VerificationFailed
from .catalog import Version, metadata, utcnow, versions

moves = sa.Table(
    "moves",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), nullable=False),
    sa.Column("src_tier", sa.String(64), nullable=False),
    sa.Column("dst_tier", sa.String(64), nullable=False),
    # started -> copied -> switched -> done; refused: rolled_back; killed and undone by recovery: interrupted
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("seconds", sa.Float),
    sa.Column("detail", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


class MoveConflict(Conflict):
    """The request cannot be honoured as asked: reused request id, or a destination holding other bytes."""


VerificationError = VerificationFailed  # the name earlier releases exported


@dataclass(frozen=True)
class MoveResult:
    request_id: str
    version_id: str
    src_tier: str
    dst_tier: str
    state: str
    bytes: int | None
    seconds: float | None
    detail: str | None
    repeated: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def failpoint(name: str) -> None:
    """Die here, as kill -9 would, when LETL_FAILPOINT names this step: the crash tests use it."""
    if os.environ.get("LETL_FAILPOINT") == name:
        os._exit(137)


class _Hashing:
    """A read-through stream that hashes what the destination consumes."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.fast, self.size = stream, xxhash.xxh3_128(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.fast.update(data)
        self.size += len(data)
        return data


def _fast_digest(stream: BinaryIO) -> tuple[int, str]:
    digest, size = xxhash.xxh3_128(), 0
    with stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class Mover:
    def __init__(self, lake):
        self.lake = lake
        self.engine = lake.catalog.engine
        moves.create(self.engine, checkfirst=True)

    def get(self, request_id: str) -> MoveResult | None:
        with self.engine.begin() as conn:
            row = conn.execute(moves.select().where(moves.c.request_id == request_id)).first()
        return _result(row) if row else None

    def move(self, version_id: str, to_tier: str, request_id: str) -> MoveResult:
        if to_tier not in self.lake.tiers:
            raise ValueError(f"unknown tier {to_tier!r}; configured tiers: {', '.join(self.lake.tiers)}")
        version = self.lake.catalog.get(version_id)
        if version is None:
            raise FileNotFoundError(f"no version {version_id!r} in the catalog")
        first = self.get(request_id)
        if first is not None:
            if (first.version_id, first.dst_tier) != (version_id, to_tier):
                raise MoveConflict(
                    f"request {request_id!r} was a move of {first.version_id} to {first.dst_tier}, not of "
                    f"{version_id} to {to_tier}"
                )
            if first.state in ("done", "rolled_back"):
                return MoveResult(**{**first.as_dict(), "repeated": True})
            if first.state != "interrupted":
                self._recover(first)  # an earlier attempt died mid-move: settle it first
            self._forget(request_id)  # nobody was answered, so the retry is the first real attempt
            version = self.lake.catalog.get(version_id)
        if version.tier == to_tier:
            return self._record(request_id, version, version.tier, "done", 0, 0.0, "already on that tier")
        return self._copy_verify_switch(version, to_tier, request_id)

    def _copy_verify_switch(self, version: Version, to_tier: str, request_id: str) -> MoveResult:
        src, dst = self.lake.tiers[version.tier].backend, self.lake.tiers[to_tier].backend
        key = version.storage_key
        started = time.perf_counter()
        self._record(request_id, version, to_tier, "started")
        failpoint("after_start")
        with src.open(key) as source:
            reader = _Hashing(source)
            try:
                written = dst.put(key, reader)
            except FileExistsError as exc:
                self._set_state(request_id, "rolled_back", detail=str(exc))
                raise MoveConflict(f"tier {to_tier} already holds different data under {key}") from exc
        if written.sha256 != version.sha256:
            dst.delete(key)
            self._set_state(request_id, "rolled_back", detail="source bytes do not match the recorded sha256")
            raise VerificationError(f"{version.version_id} on {version.tier} does not match its recorded sha256")
        failpoint("after_copy")
        if _fast_digest(dst.open(key)) != (reader.size, reader.fast.hexdigest()):
            dst.delete(key)
            self._set_state(request_id, "rolled_back", detail="read-back check failed")
            raise VerificationError(f"read-back of {key} on {to_tier} does not match what was sent")
        self._set_state(request_id, "copied")
        failpoint("after_verify")
        with self.engine.begin() as conn:
            switched = conn.execute(
                versions.update()
                .where(versions.c.version_id == version.version_id, versions.c.tier == version.tier)
                .values(tier=to_tier)
            ).rowcount
            if switched != 1:
                raise MoveConflict(f"{version.version_id} left {version.tier} while being moved")
            self._set_state(request_id, "switched", conn=conn)
        failpoint("after_switch")
        src.delete(key)
        seconds = time.perf_counter() - started
        return self._set_state(request_id, "done", size=written.size, seconds=seconds)

    def write(self, source: str, asset_key: str, tier: str, request_id: str, partition: str | None = None) -> MoveResult:
        """Bring an outside file into the lake as a new version of asset_key on exactly this tier."""
        first = self.get(request_id)
        if first is not None:
            version = self.lake.catalog.get(first.version_id)
            if (first.src_tier, first.dst_tier, version.asset_key) != ("external", tier, asset_key):
                raise MoveConflict(f"request {request_id!r} was for {version.asset_key} on {first.dst_tier}")
            return MoveResult(**{**first.as_dict(), "repeated": True})
        if tier not in self.lake.tiers:
            raise ValueError(f"unknown tier {tier!r}; configured tiers: {', '.join(self.lake.tiers)}")
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"no such source file: {source}")
        started = time.perf_counter()
        staged = self.lake.staging_path(path.suffix)
        shutil.copyfile(path, staged)  # the lake consumes what it stores; the caller keeps the original
        fmt = path.suffix.lstrip(".").lower() or "bin"
        try:
            # Always a new version on the named tier: the request id, not the bytes, makes it idempotent.
            version = self.lake.write_version(
                asset_key, staged, partition=partition, tier_hint=tier, strict_tier=True, fmt=fmt,
                reuse_identical=False, metadata={"source": source, "writer": "external", "request_id": request_id},
            )
        finally:
            staged.unlink(missing_ok=True)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(moves.insert().values(
                request_id=request_id, version_id=version.version_id, src_tier="external", dst_tier=version.tier,
                state="done", bytes=version.bytes, seconds=time.perf_counter() - started, detail=source,
                created_at=now, updated_at=now,
            ))
        return self.get(request_id)

    def _recover(self, move: MoveResult) -> str:
        """Finish a move that switched, roll back one that did not."""
        version = self.lake.catalog.get(move.version_id)
        key = version.storage_key
        if version.tier == move.dst_tier:
            if move.src_tier in self.lake.tiers:
                self.lake.tiers[move.src_tier].backend.delete(key)
            self._set_state(move.request_id, "done", detail="finished by recovery")
            return "finished"
        if version.tier != move.dst_tier and move.dst_tier in self.lake.tiers:
            self.lake.tiers[move.dst_tier].backend.delete(key)
        self._set_state(move.request_id, "interrupted", detail="killed before its switch; rolled back by recovery")
        return "rolled back"

    def recover_all(self) -> dict[str, str]:
        with self.engine.begin() as conn:
            open_moves = [_result(r) for r in conn.execute(
                moves.select().where(moves.c.state.in_(("started", "copied", "switched")))
            )]
        return {m.request_id: self._recover(m) for m in open_moves}

    def _record(self, request_id, version: Version, to_tier: str, state: str, size=None, seconds=None, detail=None):
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(moves.insert().values(
                request_id=request_id, version_id=version.version_id, src_tier=version.tier, dst_tier=to_tier,
                state=state, bytes=size, seconds=seconds, detail=detail, created_at=now, updated_at=now,
            ))
        return self.get(request_id)

    def _set_state(self, request_id: str, state: str, size=None, seconds=None, detail=None, conn=None):
        values = {"state": state, "updated_at": utcnow()}
        values |= {k: v for k, v in (("bytes", size), ("seconds", seconds), ("detail", detail)) if v is not None}
        statement = moves.update().where(moves.c.request_id == request_id).values(**values)
        if conn is not None:
            conn.execute(statement)
            return None
        with self.engine.begin() as own:
            own.execute(statement)
        return self.get(request_id)

    def _forget(self, request_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(moves.delete().where(moves.c.request_id == request_id))


def _result(row) -> MoveResult:
    data = dict(row._mapping)
    return MoveResult(**{k: data[k] for k in MoveResult.__dataclass_fields__ if k != "repeated"})
