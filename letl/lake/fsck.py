"""`letl tier fsck`: settle dead writes and moves, then find and remove orphans and leftovers.

Only work whose owner is gone is settled (see leases.py); live work is reported and its
objects are left alone, whatever their age. An orphan is an object no catalog version
points at: a write killed between its put and its commit, or the source of a move killed
after its switch. Objects younger than the grace period are left alone, because a live
writer may be about to commit them; version ids start with their UTC creation time, so a
key tells its age on every backend. A tier that cannot be reached is reported and skipped:
the others are still repaired.
"""

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from letl.lake import pointers
from letl.lake.catalog import FINAL_STATES, OPEN_STATES, utcnow
from letl.lake.errors import Conflict, TierUnavailable, one_line
from letl.lake.leases import request_tag
from letl.lake.moves import Mover
from letl.lake.names import version_created_at
from letl.lake.requests import Requests


class CatalogLooksLost(Conflict, RuntimeError):
    """Every stored object would look orphaned: rebuild the catalog before repairing anything."""


def fsck(lake, dry_run: bool = False, grace_seconds: float = 3600, force: bool = False) -> dict:
    unreachable = {name: problem for name, tier in lake.tiers.items() if (problem := tier.unavailable())}
    if not force and not dry_run and not lake.catalog.list_versions():
        stored = [name for name, tier in lake.tiers.items() if name not in unreachable and next(tier.backend.keys(), None)]
        if stored:
            raise CatalogLooksLost(
                f"the catalog is empty but tiers {', '.join(stored)} hold objects: run 'letl catalog rebuild' "
                "first (fsck would delete them all as orphans), or pass --force if they really are garbage"
            )
    report: dict = {"moves": {}, "live": [], "orphans": [], "kept_young": [], "temp_removed": 0,
                    "staging_removed": 0, "missing": [], "unreachable": unreachable}
    if dry_run:
        requests = Requests(lake)
        for row in lake.catalog.requests_in(OPEN_STATES):
            if requests.owner_alive(row):
                report["live"].append(row["request_id"])
            else:
                report["moves"][row["request_id"]] = "would settle (owner gone)"
    else:
        report["moves"], report["live"] = Mover(lake).settle_dead()
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    for name, tier in lake.tiers.items():
        if name in unreachable:
            continue
        try:
            _sweep_tier(lake, name, tier, cutoff, grace_seconds, dry_run, report)
        except TierUnavailable as exc:
            unreachable[name] = one_line(exc)
    report["missing"] = [
        f"{v.tier}:{v.storage_key}" for v in lake.catalog.list_versions()
        if v.tier in lake.tiers and v.tier not in unreachable and not lake.tiers[v.tier].backend.exists(v.storage_key)
    ]
    report["pointers"] = pointers.heal(lake, dry_run=dry_run)  # S3-only clients' latest, rewritten from the catalog
    if not dry_run:
        report["staging_removed"] = _clean_staging(lake, grace_seconds)
        _clean_locks(lake)
    return report


def _sweep_tier(lake, name: str, tier, cutoff: datetime, grace_seconds: float, dry_run: bool, report: dict) -> None:
    # Keys first, then the live work and the versions: an object listed before a move began
    # cannot be that move's copy, and a version committed after the listing is seen as located.
    keys = list(tier.backend.keys())
    protected, writing = _live_objects(lake)
    located = {(v.tier, v.storage_key) for v in lake.catalog.list_versions()} | protected
    for key in keys:
        if (name, key) in located or (name, key.split("/", 1)[-1].rsplit("/", 1)[0]) in writing:
            continue
        created = version_created_at(key)
        if created is not None and created > cutoff:
            report["kept_young"].append(f"{name}:{key}")
            continue
        report["orphans"].append(f"{name}:{key}")
        if not dry_run:
            tier.backend.delete(key)
    if not dry_run:
        report["temp_removed"] += tier.backend.clean_temp(older_than=grace_seconds)


def _live_objects(lake) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """What requests still open after settling (their owners live) may be using: both ends of each
    move, and (tier, 'asset/partition') of each write, whose object is named only when it commits."""
    objects, writing = set(), set()
    for row in lake.catalog.requests_in(OPEN_STATES):
        if row["src_tier"] == "external":
            ask = json.loads(row["ask"] or "{}")
            if "asset_key" in ask:
                writing.add((row["dst_tier"], f"{ask['asset_key']}/{ask.get('partition') or '_'}"))
        elif version := lake.catalog.get(row["version_id"]):
            objects |= {(row["src_tier"], version.storage_key), (row["dst_tier"], version.storage_key)}
    return objects, writing


def _clean_staging(lake, grace_seconds: float) -> int:
    """Remove staging copies untouched for the grace period, except those of live writes."""
    staging: Path = lake.config.staging
    if not staging.is_dir():
        return 0
    live = {f"request-{request_tag(r['request_id'])}-" for r in lake.catalog.requests_in(OPEN_STATES)}
    cutoff = time.time() - grace_seconds
    removed = 0
    for path in staging.iterdir():
        if path.is_file() and path.stat().st_mtime <= cutoff and not any(path.name.startswith(p) for p in live):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _clean_locks(lake) -> None:
    """Lock files of finished requests: a finished request is answered from its row, never locked again
    for work, so removing its file cannot let two owners in."""
    locks = lake.config.home / "locks"
    if not locks.is_dir():
        return
    done = {request_tag(r["request_id"]) for r in lake.catalog.requests_in(FINAL_STATES)}
    for path in locks.glob("*.lock"):
        if path.stem in done:
            path.unlink(missing_ok=True)
