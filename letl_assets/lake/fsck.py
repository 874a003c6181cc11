"""`letl tier fsck`: settle interrupted moves, then find and remove orphans and temp leftovers.

An orphan is an object no catalog version points at: a write killed between its put
and its commit, or the source of a move killed after its switch. Objects younger than
the grace period are left alone, because a live writer may be about to commit them;
version ids start with their UTC creation time, so a key tells its age on every backend.
"""

from datetime import datetime, timedelta, timezone

from .catalog import utcnow
from .moves import Mover


def key_created_at(key: str) -> datetime | None:
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


class CatalogLooksLost(RuntimeError):
    """Every stored object would look orphaned: rebuild the catalog before repairing anything."""


def fsck(lake, dry_run: bool = False, grace_seconds: float = 3600, force: bool = False) -> dict:
    if not force and not dry_run and not lake.catalog.list_versions():
        stored = [name for name, tier in lake.tiers.items() if not tier.unavailable() and next(tier.backend.keys(), None)]
        if stored:
            raise CatalogLooksLost(
                f"the catalog is empty but tiers {', '.join(stored)} hold objects: run 'letl catalog rebuild' "
                "first (fsck would delete them all as orphans), or pass --force if they really are garbage"
            )
    mover = Mover(lake)
    report: dict = {"moves": {}, "orphans": [], "kept_young": [], "temp_removed": 0, "missing": []}
    if not dry_run:
        report["moves"] = mover.recover_all()
    located = {(v.tier, v.storage_key) for v in lake.catalog.list_versions()}
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    for name, tier in lake.tiers.items():
        for key in tier.backend.keys():
            if (name, key) in located:
                continue
            created = key_created_at(key)
            if created is not None and created > cutoff:
                report["kept_young"].append(f"{name}:{key}")
                continue
            report["orphans"].append(f"{name}:{key}")
            if not dry_run:
                tier.backend.delete(key)
        if not dry_run:
            report["temp_removed"] += tier.backend.clean_temp(older_than=grace_seconds)
    report["missing"] = [
        f"{v.tier}:{v.storage_key}" for v in lake.catalog.list_versions()
        if v.tier in lake.tiers and not lake.tiers[v.tier].backend.exists(v.storage_key)
    ]
    return report
