"""tier_moves_sensor: a move made outside Dagster (`letl tier move`) is observed once, with its new tier."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from letl_assets.definitions import defs
from letl_assets.resources.tiers import LakeResource
from letl_assets.sensors.moves import tier_moves_sensor

LETL = Path(sys.executable).parent / "letl"


def tick(cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(cursor=cursor, resources={"lake": LakeResource()}, definitions=defs) as context:
        return tier_moves_sensor(context)


def observed(result: dg.SensorResult) -> list[tuple]:
    return [(e.asset_key, e.partition, e.metadata["letl/tier"].value, e.metadata["letl/version_id"].value,
             e.metadata["dagster/uri"].value) for e in result.asset_events]


def test_a_cli_move_is_observed_once_with_its_new_tier(lake):
    version = lake.write_version("labs/lab_results", pd.DataFrame({"x": [1, 2]}), partition="2024-03-01",
                                 tier_hint="pmem", strict_tier=True)
    before = tick()
    assert before.asset_events == [] and json.loads(before.cursor) == {}

    moved = subprocess.run([str(LETL), "tier", "move", "--version", version.version_id, "--to", "hdd",
                            "--request-id", "m-1"], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert moved.returncode == 0, moved.stderr
    first = tick(before.cursor)
    uri = lake.uri(version)
    assert observed(first) == [(dg.AssetKey(["labs", "lab_results"]), "2024-03-01", "hdd", version.version_id, uri)]
    assert first.asset_events[0].metadata["letl/from_tier"].value == "pmem"
    assert json.loads(first.cursor)["ids"] == ["m-1"]

    assert tick(first.cursor).asset_events == []
    other = lake.write_version("team/notes", pd.DataFrame({"x": [1]}), tier_hint="pmem", strict_tier=True)
    from letl.lake.moves import Mover

    Mover(lake).move(other.version_id, "ssd", "m-2")  # the API's path: the same sensor sees it
    second = tick(first.cursor)
    assert observed(second) == [(dg.AssetKey(["team", "notes"]), None, "ssd", other.version_id, lake.uri(other))]
    assert tick(second.cursor).asset_events == []


def test_a_cold_cursor_reports_the_moves_so_far_and_the_sensor_runs_by_default(lake):
    from letl.lake.moves import Mover

    versions = [lake.write_version("team/notes", pd.DataFrame({"x": [i]}), partition=f"p{i}", tier_hint="pmem",
                                   strict_tier=True) for i in range(3)]
    for i, version in enumerate(versions):
        Mover(lake).move(version.version_id, "hdd", f"r-{i}")
    first = tick()
    assert [(e.partition, e.metadata["letl/request_id"].value) for e in first.asset_events] == [
        ("p0", "r-0"), ("p1", "r-1"), ("p2", "r-2")]  # team/notes is no asset of the code location: kept as is
    assert tick(first.cursor).asset_events == []
    assert tier_moves_sensor.default_status == dg.DefaultSensorStatus.RUNNING
