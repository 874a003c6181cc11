"""Every move between tiers, whatever made it, reported to Dagster as an observation with the new tier.

The lake knows no Dagster: `letl tier move`, the API, the placement policy and the tiering jobs all
record their moves in the catalog's requests table. This sensor reads the moves that finished since
its cursor and reports each as an ``AssetObservation`` of the version's asset (and partition), so
the asset's page shows where its data is now.

A move's finish time is stamped before its transaction waits for the catalog's write lock (up to
the 60 s busy timeout) and commits, and on a shared catalog by its own host's clock: a move can
become visible with a stamp older than one already reported. So each tick looks back LAG before
the newest stamp reported, and the cursor keeps the request ids reported inside that window (with
their stamps, to let them go once they leave it): a late move is reported once, nothing twice, and
the cursor holds only the moves of the last LAG.
"""

import json
from datetime import datetime, timedelta

import dagster as dg

from letl_assets.resources.tiers import LakeResource

BATCH = 200  # moves reported per tick; the next tick goes on from there
# Far past the stamp-to-commit delay (the busy timeout) and a host clock's usual drift; a fixed
# constant, not a setting, so that every tick of every deployment reads the same window.
LAG = timedelta(minutes=10)


def _partition(context: dg.SensorEvaluationContext, key: dg.AssetKey, partition: str) -> str | None:
    """The partition to observe: none for an unpartitioned version, nor one the asset's partitioning
    (when the code location defines the asset) does not know, which Dagster would refuse."""
    if not partition:
        return None
    assets_def = context.repository_def.assets_defs_by_key.get(key) if context.repository_def else None
    if assets_def is None:
        return partition
    partitions_def = assets_def.partitions_def
    return partition if partitions_def is not None and partitions_def.has_partition_key(partition) else None


def move_observations(context: dg.SensorEvaluationContext, lake, cursor: dict) -> tuple[list, dict]:
    """The observations of the moves finished since the cursor (and in the LAG before it, not yet
    reported), and the next cursor."""
    newest, seen, lag = _read(cursor)
    done = lake.catalog.finished_moves(newest - lag if newest else None, seen, limit=BATCH)
    events = []
    for move in done:
        key = dg.AssetKey.from_user_string(move["asset_key"])
        version = lake.catalog.get(move["version_id"])
        events.append(dg.AssetObservation(key, partition=_partition(context, key, move["partition"]), metadata={
            "letl/tier": move["dst_tier"],
            "letl/from_tier": move["src_tier"],
            "letl/version_id": move["version_id"],
            "letl/request_id": move["request_id"],
            "letl/branch": move["branch"],
            "dagster/uri": lake.uri(version),
        }))
    if not done:
        return events, cursor
    seen.update({m["request_id"]: m["updated_at"] for m in done})
    newest = max(seen.values())
    kept = {rid: at.isoformat() for rid, at in sorted(seen.items()) if at >= newest - LAG}
    return events, {"at": newest.isoformat(), "ids": kept}


def _read(cursor: dict) -> tuple[datetime | None, dict[str, datetime], timedelta]:
    """The newest stamp reported, the request ids reported in the window with their stamps, and how far
    back to look. A cursor from before the window listed only the ids at its newest stamp, having
    reported everything older: looking back from it would report those moves again, so its first tick
    does not."""
    newest = datetime.fromisoformat(cursor["at"]) if cursor.get("at") else None
    ids = cursor.get("ids") or {}
    if isinstance(ids, list):
        return newest, dict.fromkeys(ids, newest), timedelta(0)
    return newest, {rid: datetime.fromisoformat(at) for rid, at in ids.items()}, LAG


@dg.sensor(
    name="tier_moves_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports every finished move between tiers (CLI, API, policy, jobs) as an observation with the new tier.",
)
def tier_moves_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    events, cursor = move_observations(context, lake.get_lake(), cursor)
    if not events:
        return dg.SensorResult(skip_reason="no move finished since the last tick", cursor=json.dumps(cursor, sort_keys=True))
    context.log.info(f"reporting {len(events)} finished move(s)")
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))


sensors = [tier_moves_sensor]
