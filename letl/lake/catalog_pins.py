"""The catalog's pins: a version, or an asset's latest versions, held on one tier.

A part of the Catalog (which inherits it). A pin on a version holds that version; a pin on an asset
(optionally one partition of it) holds whichever versions are its latest on the branch, so a new
version written later is held too. The placement policy reads ``pinned_tiers`` and never moves a
held version anywhere but to its pinned tier.
"""

from typing import Iterable

import sqlalchemy as sa

from letl.lake.catalog_schema import Version, as_utc, pins, upsert_dialect, utcnow


def pin_target(asset_key: str, branch: str, partition: str | None = None, version_id: str | None = None) -> str:
    """The one key of what a pin holds: pinning the same thing again replaces its pin."""
    if version_id is not None:
        return f"version:{version_id}"
    return f"latest:{asset_key}@{branch}" + ("" if partition is None else f"?partition={partition}")


class PinLog:
    engine: sa.Engine

    def pin(self, asset_key: str, branch: str, tier: str, partition: str | None = None,
            version_id: str | None = None, pinned_by: str | None = None, reason: str | None = None) -> dict:
        row = {"target": pin_target(asset_key, branch, partition, version_id), "asset_key": asset_key,
               "branch": branch, "partition": partition, "version_id": version_id, "tier": tier,
               "pinned_by": pinned_by, "pinned_at": utcnow(), "reason": reason}
        with self.engine.begin() as conn:
            insert = upsert_dialect(conn).insert(pins).values(**row)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["target"], set_={k: insert.excluded[k] for k in ("tier", "pinned_by", "pinned_at", "reason")}))
        return row

    def unpin(self, target: str) -> dict | None:
        """Remove a pin; the removed pin, or None if there was none."""
        with self.engine.begin() as conn:
            row = conn.execute(pins.select().where(pins.c.target == target)).first()
            if row is not None:
                conn.execute(pins.delete().where(pins.c.target == target))
        return self._as_dict(row) if row else None

    def list_pins(self, branch: str | None = None) -> list[dict]:
        query = pins.select().order_by(pins.c.asset_key, pins.c.branch, pins.c.partition, pins.c.version_id)
        if branch is not None:
            query = query.where(pins.c.branch == branch)
        with self.engine.begin() as conn:
            return [self._as_dict(r) for r in conn.execute(query)]

    def pinned_tiers(self, versions: Iterable[Version], latest: set[str]) -> dict[str, tuple[str, str]]:
        """version id -> (pinned tier, pin target) for each of these versions a pin holds.

        The most specific pin wins: a version's own, then its asset's partition, then its whole asset."""
        by_target = {p["target"]: p for p in self.list_pins()}
        if not by_target:
            return {}
        out = {}
        for v in versions:
            candidates = [pin_target(v.asset_key, v.branch, version_id=v.version_id)]
            if v.version_id in latest:
                candidates += [pin_target(v.asset_key, v.branch, v.partition), pin_target(v.asset_key, v.branch)]
            found = next((by_target[t] for t in candidates if t in by_target), None)
            if found is not None:
                out[v.version_id] = (found["tier"], found["target"])
        return out

    @staticmethod
    def _as_dict(row: sa.Row) -> dict:
        data = dict(row._mapping)
        data["pinned_at"] = as_utc(data["pinned_at"])
        return data
