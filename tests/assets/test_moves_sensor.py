"""tier_moves_sensor: a move made outside Dagster (`letl tier move`) is observed once, with its new tier."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from letl.lake.catalog_schema import as_utc
from letl_assets.definitions import defs
from letl_assets.resources.tiers import LakeResource
from letl_assets.sensors.moves import LAG, tier_moves_sensor

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
    assert list(json.loads(first.cursor)["ids"]) == ["m-1"]

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


def _stamp(lake, request_id: str, at: datetime) -> None:
    """What a late commit leaves: a finished move whose stamp is older than one already reported."""
    from letl.lake.catalog_schema import moves

    with lake.catalog.engine.begin() as conn:
        assert conn.execute(moves.update().where(moves.c.request_id == request_id).values(updated_at=at)).rowcount == 1


def test_a_move_committed_with_a_stamp_older_than_the_cursor_is_reported_once(lake):
    from letl.lake.moves import Mover

    a, b, c = (lake.write_version("team/notes", pd.DataFrame({"x": [i]}), partition=f"p{i}", tier_hint="pmem",
                                  strict_tier=True) for i in range(3))
    Mover(lake).move(a.version_id, "hdd", "r-a")
    first = tick()
    at = datetime.fromisoformat(json.loads(first.cursor)["at"])
    Mover(lake).move(b.version_id, "hdd", "r-b")
    _stamp(lake, "r-b", at - timedelta(minutes=1))  # stamped before r-a, committed after the tick
    late = tick(first.cursor)
    assert [e.metadata["letl/request_id"].value for e in late.asset_events] == ["r-b"]
    assert json.loads(late.cursor)["at"] == at.isoformat()  # the newest stamp reported is still r-a's
    assert tick(late.cursor).asset_events == []

    # The cursor keeps only the window's ids: a move far newer lets r-a and r-b go, and they stay reported.
    Mover(lake).move(c.version_id, "hdd", "r-c")
    _stamp(lake, "r-c", at + LAG + timedelta(minutes=1))
    newer = tick(late.cursor)
    assert [e.metadata["letl/request_id"].value for e in newer.asset_events] == ["r-c"]
    assert list(json.loads(newer.cursor)["ids"]) == ["r-c"]
    assert tick(newer.cursor).asset_events == []


def test_a_cursor_from_before_the_window_goes_on_without_reporting_twice(lake):
    from letl.lake.moves import Mover

    version = lake.write_version("team/notes", pd.DataFrame({"x": [1]}), tier_hint="pmem", strict_tier=True)
    Mover(lake).move(version.version_id, "hdd", "r-1")
    at = as_utc(lake.catalog.request("r-1")["updated_at"])
    old = tick(json.dumps({"at": at.isoformat(), "ids": ["r-1"]}))  # the ids at its newest stamp only
    assert old.asset_events == [] and json.loads(old.cursor)["ids"] == ["r-1"]


def test_a_cursor_from_before_the_window_does_not_report_its_older_moves_again(lake):
    from letl.lake.moves import Mover

    a, b = (lake.write_version("team/notes", pd.DataFrame({"x": [i]}), partition=f"p{i}", tier_hint="pmem",
                               strict_tier=True) for i in range(2))
    Mover(lake).move(a.version_id, "hdd", "r-0")
    Mover(lake).move(b.version_id, "hdd", "r-1")
    at = as_utc(lake.catalog.request("r-1")["updated_at"])
    _stamp(lake, "r-0", at - timedelta(minutes=1))  # reported before the upgrade, as its stamp is older
    upgraded = tick(json.dumps({"at": at.isoformat(), "ids": ["r-1"]}))
    assert upgraded.asset_events == []
