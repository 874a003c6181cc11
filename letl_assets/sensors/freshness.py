"""Freshness sensor: rebuild a stale downstream only when an upstream it read has a newer version.

A summary past its freshness window whose inputs did not change is stale by the clock
but not by the data: rebuilding it would write the same bytes, so nothing is requested.
"""

import hashlib
from datetime import datetime, timedelta

import dagster as dg

from letl.lake.catalog import utcnow
from letl_assets.assets.labs import LAB_SUMMARY, MONTHLY_WINDOW
from letl_assets.resources.io_manager import asset_key_str
from letl_assets.resources.tiers import LakeResource

# The assets of this code location that carry a FreshnessPolicy, with the same window.
WATCHED = {LAB_SUMMARY: MONTHLY_WINDOW}


def stale_with_newer_inputs(lake, windows: dict[dg.AssetKey, timedelta], now: datetime) -> list[tuple]:
    """(asset key, partition or None, newer upstream version ids) for each stale, rebuildable version."""
    found = []
    latest_ids = lake.catalog.latest_ids()
    for key, window in windows.items():
        for version in lake.catalog.list_versions(asset_key_str(key), None, lake.branch):
            if version.version_id not in latest_ids or now - version.created_at < window:
                continue
            newer = []
            for read in lake.catalog.upstreams(version.version_id):
                current = lake.latest(read.asset_key, read.partition, read.branch)
                if current is not None and current.version_id != read.version_id:
                    newer.append(current.version_id)
            if newer:
                found.append((key, version.partition or None, sorted(newer)))
    return found


def freshness_sensor_for(watched: dict[dg.AssetKey, timedelta], name: str = "freshness_sensor"):
    """The sensor requesting those watched assets that are stale and have newer upstreams (running by default)."""

    @dg.sensor(
        name=name,
        target=dg.AssetSelection.assets(*watched),
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def freshness_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        """Requests stale downstreams whose upstreams are newer; nothing for those whose inputs did not change."""
        stale = stale_with_newer_inputs(lake.get_lake(), watched, utcnow())
        if not stale:
            return dg.SkipReason("no stale asset has a newer upstream")
        return [
            dg.RunRequest(
                asset_selection=[key],
                partition_key=partition,
                run_key=f"fresh-{key.to_python_identifier()}-{partition}-"
                + hashlib.sha256(",".join(newer).encode()).hexdigest()[:12],
            )
            for key, partition, newer in stale
        ]

    return freshness_sensor


freshness_sensor = freshness_sensor_for(WATCHED)
sensors = [freshness_sensor]
