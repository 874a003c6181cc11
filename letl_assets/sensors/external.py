"""Notice new versions of external (notebook-written) datasets and tell Dagster about them.

A code location that declares external datasets (``letl_examples`` does, for its ``team/*``
examples) makes its sensor with ``external_versions_sensor_for(datasets)``. Each tick reads, per
registered external dataset and per partition, the catalog's latest
version on the lake's branch. A latest version the cursor has not seen yet is reported as
an ``AssetMaterialization`` of the external asset, so the automation conditions of its
real-time downstreams fire. The cursor maps ``asset_key|partition`` to the last reported
version id, so nothing is reported twice.
"""

import json
from typing import Optional

import dagster as dg

from letl_assets.assets.external import ExternalDataset
from letl_assets.resources.event_metadata import PARTITION_ROWS
from letl_assets.resources.tiers import LakeResource

SEP = "|"


def _load_cursor(cursor: Optional[str]) -> dict[str, str]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _valid_partition(dataset: ExternalDataset, partition: str, cache: dict) -> bool:
    """A version's partition must fit the spec, or Dagster would refuse the event."""
    if dataset.partitions_def is None:
        return partition == ""
    if partition == "":
        return False
    if dataset.key not in cache:
        cache[dataset.key] = set(dataset.partitions_def.get_partition_keys())
    return partition in cache[dataset.key]


def new_version_events(
    lake, cursor: dict[str, str], datasets: tuple[ExternalDataset, ...], log=None
) -> tuple[list[dg.AssetMaterialization], dict[str, str]]:
    """The materializations to report and the next cursor (pure: no Dagster context needed)."""
    events: list[dg.AssetMaterialization] = []
    seen = dict(cursor)
    keys_cache: dict = {}
    for dataset in datasets:
        versions = lake.catalog.list_versions(asset_key=dataset.key, branch=lake.branch)
        for partition in sorted({v.partition for v in versions}):
            latest = lake.catalog.latest_version(dataset.key, partition, lake.branch)
            slot = f"{dataset.key}{SEP}{partition}"
            if latest is None or seen.get(slot) == latest.version_id:
                continue
            seen[slot] = latest.version_id
            if not _valid_partition(dataset, partition, keys_cache):
                if log is not None:
                    log(f"{dataset.key}: version {latest.version_id} has partition {partition!r}, "
                        "which the asset's partitioning does not know; not reported")
                continue
            events.append(
                dg.AssetMaterialization(
                    asset_key=dataset.asset_key,
                    partition=partition or None,
                    description=f"new external version {latest.version_id}",
                    metadata={
                        "dagster/uri": lake.uri(latest),
                        (PARTITION_ROWS if partition else "dagster/row_count"): latest.rows,
                        "letl/version_id": latest.version_id,
                        "letl/writer": str(latest.metadata.get("writer", "unknown")),
                        "letl/branch": latest.branch,
                        "letl/created_at": latest.created_at.isoformat(),
                        "letl/sha256": latest.sha256,
                        "letl/tier": latest.tier,
                    },
                )
            )
    return events, seen


def external_versions_sensor_for(datasets: tuple[ExternalDataset, ...], name: str = "external_versions_sensor"):
    """The sensor reporting new versions of these datasets as materializations (running by default)."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports new versions of notebook-written (gros://) datasets as materializations.",
    )
    def external_versions_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        events, seen = new_version_events(lake.get_lake(), _load_cursor(context.cursor), datasets, log=context.log.warning)
        next_cursor = json.dumps(seen, sort_keys=True)
        if not events:
            return dg.SensorResult(skip_reason="no new external versions", cursor=next_cursor)
        context.log.info(f"reporting {len(events)} new external version(s)")
        return dg.SensorResult(asset_events=events, cursor=next_cursor)

    return external_versions_sensor
