"""Every move between tiers, whatever made it, reported to Dagster as an observation with the new tier.

The lake knows no Dagster: `letl tier move`, the API, the placement policy and the tiering jobs all
record their moves in the catalog's requests table. This sensor reads the moves that finished since
its cursor and reports each as an ``AssetObservation`` of the version's asset (and partition), so
the asset's page shows where its data is now. The cursor is the last reported move's finish time
and the request ids finished at that instant: bounded, however many moves there were.
"""

import json
from datetime import datetime

import dagster as dg

from letl_assets.resources.tiers import LakeResource

BATCH = 200  # moves reported per tick; the next tick goes on from there


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
    """The observations of the moves finished since the cursor, and the next cursor."""
    since = datetime.fromisoformat(cursor["at"]) if cursor.get("at") else None
    done = lake.catalog.finished_moves(since, cursor.get("ids", []), limit=BATCH)
    events = []
    for move in done:
        key = dg.AssetKey(move["asset_key"].split("/"))
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
    last = done[-1]["updated_at"]
    ids = [m["request_id"] for m in done if m["updated_at"] == last]
    if since is not None and last == since:
        ids = sorted({*cursor.get("ids", []), *ids})
    return events, {"at": last.isoformat(), "ids": sorted(ids)}


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
        return dg.SensorResult(skip_reason="no move finished since the last tick", cursor=json.dumps(cursor))
    context.log.info(f"reporting {len(events)} finished move(s)")
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))


sensors = [tier_moves_sensor]
