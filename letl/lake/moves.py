"""Moving versions between tiers: copy, verify, switch, check, then delete. Never lost.

Every move and write carries a request id, reserved in the catalog before any work
(requests.py): a repeat gets the first result, a repeat of live work waits or hears
"in progress", and only work whose owner is gone (leases.py) is settled, by the next
attempt or by ``fsck``. sha256 stays the content identity: it is computed while copying
and must equal the one recorded when the version was written (this catches a bad
source). The read-back of the destination uses xxh3-128 instead of a second sha256: it
runs near memory speed, so a verified move costs little more than a copy (an upload to
the object tier is proven instead by the checksums the server checked and reports; see
storage/s3.py). The same check runs once more after the switch, before the source is
deleted: if anything removed or damaged the destination meanwhile, the move switches
back instead of losing both copies.
"""

import dataclasses
import os
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Callable

from letl.lake import pointers
from letl.lake.catalog import OPEN_STATES, Version
from letl.lake.config import setting
from letl.lake.errors import InvalidInput, LetlError, NotFound, TierUnavailable, VerificationFailed, one_line
from letl.lake.lake import refuse_unless_parquet
from letl.lake.leases import request_tag
from letl.lake.names import refuse_produced
from letl.lake.requests import Claim, MoveConflict, MoveResult, Requests
from letl.storage.contract import validate_key
from letl.storage.transfer import HashingReader, reporting, stored_digest

__all__ = ["MoveConflict", "MoveResult", "Mover", "OnProgress", "failpoint"]

OnProgress = Callable[[int, int | None], None]  # (bytes copied so far, bytes in all), as the copy goes

def failpoint(name: str) -> None:
    """The crash and race tests' hooks: LETL_FAILPOINT=<name> dies here as kill -9 would;
    LETL_FAILPOINT=pause_<name> stops here (SIGSTOP), as a stalled process would, until SIGCONT."""
    wanted = setting("LETL_FAILPOINT")
    if wanted == name:
        os._exit(137)
    if wanted == f"pause_{name}":
        os.kill(os.getpid(), signal.SIGSTOP)


class Mover:
    def __init__(self, lake):
        self.lake = lake
        self.requests = Requests(lake)

    def get(self, request_id: str) -> MoveResult | None:
        return self.requests.get(request_id)

    def move(self, version_id: str, to_tier: str, request_id: str, on_progress: OnProgress | None = None) -> MoveResult:
        """Move a version to another tier, verified; ``on_progress`` hears the copy's bytes as they go.
        When the version is a latest one, the object tier's pointer follows it (pointers.py)."""
        before = self.lake.catalog.get(version_id)
        with reporting(on_progress, before and before.bytes):
            return self._move(version_id, to_tier, request_id)

    def _repoint(self, version_id: str, *tiers: str) -> None:
        """A version switched between these tiers (the request's, not what the catalog said before: a
        retry settles a move already switched). Called before the old copy is deleted, so that a kill
        in between leaves a pointer naming a key that still holds the version, never a deleted one."""
        if not set(tiers) & set(pointers.object_tiers(self.lake)):
            return
        now = self.lake.catalog.get(version_id)
        latest = now and self.lake.latest(now.asset_key, now.partition, now.branch)
        if latest is not None and latest.version_id == now.version_id:
            pointers.refresh_versions(self.lake, [now])

    def _move(self, version_id: str, to_tier: str, request_id: str) -> MoveResult:
        if to_tier not in self.lake.tiers:
            raise InvalidInput(f"unknown tier {to_tier!r}; configured tiers: {', '.join(self.lake.tiers)}")
        version = self.lake.catalog.get(version_id)
        if version is None:
            raise NotFound(f"no version {version_id!r} in the catalog")
        if self.requests.get(request_id) is None:  # refuse before reserving: nothing to settle later
            self._check_reachable(version.tier, to_tier)
        claim = self.requests.claim(request_id, "move", {"version_id": version_id, "tier": to_tier},
                                    {"version_id": version_id, "src_tier": version.tier, "dst_tier": to_tier,
                                     "state": "started"})
        if isinstance(claim, MoveResult):
            return claim
        with claim:
            if self._settle_previous(claim) == "finished":
                return claim.result()
            version = self.lake.catalog.get(version_id)
            if version.tier == to_tier:
                claim.update(state="done", src_tier=version.tier, bytes=0, seconds=0.0, detail="already on that tier")
                return claim.result()
            claim.update(src_tier=version.tier)
            return self._run(claim, lambda: self._copy_verify_switch(version, to_tier, claim))

    def _copy_verify_switch(self, version: Version, to_tier: str, claim: Claim) -> MoveResult:
        src, dst = self.lake.tiers[version.tier].backend, self.lake.tiers[to_tier].backend
        key = version.storage_key
        started = time.perf_counter()
        failpoint("after_start")
        with src.open(key) as source:
            reader = HashingReader(source)  # the copy's own stream hash, of exactly what was sent
            labels = pointers.object_labels(version.asset_key, version.branch, version.partition, version.version_id,
                                            version.sha256)  # a store that checks the sha256 refuses other bytes
            try:
                written = dst.put(key, reader, labels)
            except FileExistsError as exc:
                claim.update(state="rolled_back", detail=str(exc))
                raise MoveConflict(f"tier {to_tier} already holds different data under {key}") from exc
            except VerificationFailed as exc:
                self._drop_copy(version, to_tier)
                claim.update(state="rolled_back", detail=one_line(exc))
                raise
        if written.sha256 != version.sha256:
            self._drop_copy(version, to_tier)
            claim.update(state="rolled_back", detail="source bytes do not match the recorded sha256")
            raise VerificationFailed(f"{version.version_id} on {version.tier} does not match its recorded sha256")
        failpoint("after_copy")
        failpoint("before_readback")
        sent = reader.hash.hexdigest()
        if stored_digest(dst, key) != sent:
            self._drop_copy(version, to_tier)
            claim.update(state="rolled_back", detail="read-back check failed")
            raise VerificationFailed(f"read-back of {key} on {to_tier} does not match what was sent")
        claim.update(state="copied")
        failpoint("after_verify")
        if not self.lake.catalog.switch_tier(version.version_id, version.tier, to_tier,
                                             claim.as_request(state="switched")):
            raise MoveConflict(f"{version.version_id} left {version.tier} while being moved")
        failpoint("after_switch")
        if not self._still_whole(dst, key, sent):
            self.lake.catalog.switch_tier(version.version_id, to_tier, version.tier, claim.as_request(
                state="rolled_back", detail="destination lost or damaged after the switch; switched back"))
            raise VerificationFailed(f"{key} on {to_tier} was lost or damaged after the switch: switched back to "
                                    f"{version.tier}, which still holds it")
        self._repoint(version.version_id, version.tier, to_tier)
        failpoint("after_repoint")
        src.discard(key)  # a local tier frees the space in the background
        claim.update(state="done", bytes=written.size, seconds=time.perf_counter() - started)
        return claim.result()

    @staticmethod
    def _still_whole(backend, key: str, sent: str) -> bool:
        try:
            return stored_digest(backend, key) == sent
        except FileNotFoundError:
            return False

    def write(self, source: str, asset_key: str, tier: str, request_id: str, partition: str | None = None,
              on_progress: OnProgress | None = None) -> MoveResult:
        """Bring an outside file into the lake as a new version of asset_key on exactly this tier;
        ``on_progress`` hears the bytes the tier takes as they go."""
        validate_key(f"{asset_key}/{partition or '_'}")  # refused before a request row exists
        refuse_produced(self.lake, asset_key)
        path = Path(source.removeprefix("file://"))
        ask = {"asset_key": asset_key, "partition": partition, "tier": tier, "source": str(path.absolute())}
        if self.requests.get(request_id) is None:  # a repeat is answered even if its file is gone since
            self._check_source(path, source, tier)
        claim = self.requests.claim(request_id, "write", ask,
                                    {"src_tier": "external", "dst_tier": tier, "state": "started", "detail": source})
        if isinstance(claim, MoveResult):
            return claim
        with claim:
            self._settle_previous(claim)
            return self._run(claim, lambda: self._write(path, source, asset_key, tier, partition, claim, on_progress))

    def _check_source(self, path: Path, source: str, tier: str) -> None:
        if tier not in self.lake.tiers:
            raise InvalidInput(f"unknown tier {tier!r}; configured tiers: {', '.join(self.lake.tiers)}")
        if not path.is_file():
            raise NotFound(f"no such source file: {source}")
        self._check_reachable(tier)

    def _check_reachable(self, *tiers: str) -> None:
        for name in tiers:
            if name in self.lake.tiers and (problem := self.lake.tiers[name].unavailable()):
                raise TierUnavailable(problem)

    def _write(self, path: Path, source: str, asset_key: str, tier: str, partition: str | None,
               claim: Claim, on_progress: OnProgress | None) -> MoveResult:
        self._check_source(path, source, tier)
        fmt = path.suffix.lstrip(".").lower() or "bin"
        if fmt == "parquet":
            refuse_unless_parquet(path, source)
        started = time.perf_counter()
        self.lake.config.staging.mkdir(parents=True, exist_ok=True)
        # Named after the request, so that whoever settles a dead attempt finds its copy.
        staged = self.lake.config.staging / f"request-{request_tag(claim.request_id)}-{uuid.uuid4().hex[:8]}{path.suffix}"
        shutil.copyfile(path, staged)  # the lake consumes what it stores; the caller keeps the original
        failpoint("write_after_copy")
        try:
            # Always a new version on the named tier: the request id, not the bytes, makes it idempotent.
            # Progress is of the tier's put, the upload or copy that takes the time (a link reports nothing).
            with reporting(on_progress, staged.stat().st_size):
                stored = self.lake.stage_version(
                    asset_key, staged, partition=partition, tier_hint=tier, strict_tier=True, fmt=fmt,
                    reuse_identical=False,
                    metadata={"source": source, "writer": "external", "request_id": claim.request_id},
                )
        finally:
            staged.unlink(missing_ok=True)
        failpoint("write_after_put")
        version = stored.version
        self.lake.publish([stored], request=claim.as_request(
            state="done", version_id=version.version_id, bytes=version.bytes,
            seconds=time.perf_counter() - started, detail=source))
        return claim.result()

    def _run(self, claim: Claim, work: Callable[[], MoveResult]) -> MoveResult:
        """The owner's attempt; if it fails unsettled, the owner settles it before answering."""
        try:
            return work()
        except BaseException as exc:
            row = self.lake.catalog.request(claim.request_id)
            if row is not None and row["state"] in OPEN_STATES and row["owner_token"] == claim.token:
                try:
                    self._settle(row, claim, why=f"attempt failed: {one_line(exc)}")
                except Exception:  # left open: once this owner is gone, the next retry or fsck settles it
                    pass
            raise

    def _settle_previous(self, claim: Claim) -> str | None:
        """Settle what an earlier owner left, then start this owner's attempt (unless that finished it)."""
        previous = claim.previous
        if previous is None:
            return None
        outcome = self._settle(previous, claim) if previous["state"] in OPEN_STATES else None
        if outcome != "finished":
            claim.begin_attempt()
        return outcome

    def _settle(self, row: dict, claim: Claim, why: str | None = None) -> str:
        """Finish a move whose destination holds the switched version; roll back anything else."""
        if row["src_tier"] == "external":
            for leftover in self.lake.config.staging.glob(f"request-{request_tag(row['request_id'])}-*"):
                leftover.unlink(missing_ok=True)
            claim.update(state="interrupted", detail=why or "writer gone before its commit; nothing was published")
            return "rolled back"
        version = self.lake.catalog.get(row["version_id"])
        src, dst = row["src_tier"], row["dst_tier"]
        if version.tier == dst and src != dst:
            if self._whole(version, dst) or not self._whole(version, src):
                self._repoint(version.version_id, src, dst)
                if src in self.lake.tiers:
                    self.lake.tiers[src].backend.delete(version.storage_key)
                claim.update(state="done", detail=why or "finished by recovery")
                return "finished"
            self.lake.catalog.switch_tier(version.version_id, dst, src, claim.as_request(
                state="interrupted", detail="destination not whole after the switch; switched back by recovery"))
            self._repoint(version.version_id, src, dst)  # the killed owner may have pointed at the destination
            return "rolled back"
        self._drop_copy(version, dst)
        claim.update(state="interrupted", detail=why or "owner gone before its switch; rolled back by recovery")
        return "rolled back"

    def _whole(self, version: Version, tier: str) -> bool:
        return tier in self.lake.tiers and self.lake.intact(dataclasses.replace(version, tier=tier))

    def _drop_copy(self, version: Version, tier: str) -> None:
        """Delete a move's copy, unless the catalog (now) places the version there."""
        if tier in self.lake.tiers and self.lake.catalog.get(version.version_id).tier != tier:
            self.lake.tiers[tier].backend.delete(version.storage_key)

    def settle_dead(self) -> tuple[dict[str, str], list[str]]:
        """Settle every open request whose owner is gone; returns (outcome by request id, live ids)."""
        settled, live = {}, []
        for row in self.lake.catalog.requests_in(OPEN_STATES):
            claim = self.requests.take_dead(row)
            if claim is None:
                live.append(row["request_id"])
                continue
            with claim:
                try:
                    settled[row["request_id"]] = self._settle(claim.previous, claim)
                except (LetlError, OSError) as exc:  # a tier out of reach: the next fsck tries again
                    settled[row["request_id"]] = f"left open: {one_line(exc)}"
        return settled, live
