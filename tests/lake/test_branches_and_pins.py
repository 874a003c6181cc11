"""Branches namespace every write and fall back to main for reads; a gros:// pin reproduces an old input."""

import dagster as dg
import pandas as pd

from letl.lake.lake import Lake
from letl_assets.resources.io_manager import TieredIOManager
from letl_assets.resources.tiers import LakeResource


def graph(values):
    @dg.asset
    def up() -> pd.DataFrame:
        return pd.DataFrame({"x": values})

    @dg.asset
    def down(up: pd.DataFrame) -> pd.DataFrame:
        return up.assign(y=up.x * 10)

    @dg.asset(ins={"up": dg.AssetIn(metadata={"letl/pin": "gros://up:0"})})
    def pinned(up: pd.DataFrame) -> pd.DataFrame:
        return up

    return [up, down, pinned]


def run(assets, selection=None):
    lake = LakeResource()
    result = dg.materialize(assets, selection=selection, resources={"io_manager": TieredIOManager(lake=lake), "lake": lake})
    assert result.success
    return result


def test_feature_branch_reads_main_until_it_writes_and_never_touches_main(letl_env, monkeypatch):
    run(graph([1, 2]), selection=["up"])
    main = Lake.from_env()
    main_up = main.latest("up")

    monkeypatch.setenv("LETL_BRANCH", "feature")
    result = run(graph([1, 2]), selection=["down"])
    feature = Lake.from_env()
    down = feature.latest("down")
    assert down.branch == "feature"
    assert [u.version_id for u in feature.catalog.upstreams(down.version_id)] == [main_up.version_id]
    [loaded] = [e for e in result.all_events if e.event_type_value == "LOADED_INPUT"]
    assert "read from main" in str(loaded.event_specific_data.metadata["branch_fallback"])

    run(graph([5, 6, 7]), selection=["up"])
    assert feature.latest("up").rows == 3 and feature.latest("up").branch == "feature"
    assert main.latest("up").version_id == main_up.version_id
    assert main.latest("down") is None


def test_pinned_input_reads_the_version_its_uri_names(letl_env):
    run(graph([1, 2]), selection=["up"])
    run(graph([3, 4, 5]), selection=["up"])
    lake = Lake.from_env()
    first, second = lake.catalog.list_versions("up")
    run(graph([3, 4, 5]), selection=["down", "pinned"])
    pinned, down = lake.latest("pinned"), lake.latest("down")
    assert [u.version_id for u in lake.catalog.upstreams(pinned.version_id)] == [first.version_id]
    assert lake.read_table(pinned).column("x").to_pylist() == [1, 2]
    assert [u.version_id for u in lake.catalog.upstreams(down.version_id)] == [second.version_id]
