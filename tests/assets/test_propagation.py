"""External gros:// versions -> sensor -> automation conditions of their downstreams.

No daemon: the sensor runs through build_sensor_context, its events are stored with
report_runless_asset_event, and the conditions are evaluated with evaluate_automation_conditions.
"""

import json

import dagster as dg
import pandas as pd
import pytest

from letl_assets.assets import external as machinery
from letl_assets.assets.labs import MONTHLY, ON_UPSTREAM_CHANGE
from letl_assets.resources.io_manager import TieredIOManager
from letl_assets.resources.tiers import LakeResource
from letl_examples import assets as external
from letl_examples.assets import (
    MONTHLY_COUNTS,
    MONTHLY_COUNTS_SUMMARY,
    MY_DATASET,
    MY_DATASET_SNAPSHOT,
    MY_DATASET_SUMMARY,
)
from letl_examples.sensors import external_versions_sensor

HISTORIC = "2021-03-01"
LATE = "2020-06-01"


@pytest.fixture
def instance(letl_env):
    with dg.instance_for_test(temp_dir=str(letl_env["dagster_home"])) as inst:
        yield inst


@pytest.fixture
def resources():
    lake = LakeResource()
    return {"lake": lake, "io_manager": TieredIOManager(lake=lake)}


def make_defs(resources, assets=None) -> dg.Definitions:
    return dg.Definitions(assets=assets or external.assets, sensors=[external_versions_sensor], resources=resources)


class Harness:
    """One sensor cursor and one automation cursor, advanced tick by tick."""

    def __init__(self, instance, defs):
        self.instance, self.defs = instance, defs
        self.sensor_cursor = None
        self.auto_cursor = None

    def sensor_tick(self) -> list[dg.AssetMaterialization]:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.sensor_cursor, resources={"lake": LakeResource()}
        )
        result = external_versions_sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.sensor_cursor = result.cursor
        events = list(result.asset_events or [])
        for event in events:
            self.instance.report_runless_asset_event(event)
        return events

    def evaluate(self, defs=None):
        result = dg.evaluate_automation_conditions(defs=defs or self.defs, instance=self.instance, cursor=self.auto_cursor)
        if defs is None:
            self.auto_cursor = result.cursor
        return result

    def materialize(self, key, partition=None):
        result = dg.materialize(
            [*external.assets], instance=self.instance, resources=self.defs.resources,
            selection=[key], partition_key=partition,
        )
        assert result.success


def write_external(df: pd.DataFrame, uri: str) -> None:
    """What a notebook does: pandas writes straight into the lake through the gros:// fsspec protocol."""
    df.to_parquet(uri)


def test_new_external_version_triggers_realtime_downstream_only(letl_env, lake, instance, resources):
    defs = make_defs(resources)
    h = Harness(instance, defs)

    # Nothing in the lake yet: nothing to report, nothing can run (the upstream is missing).
    assert h.sensor_tick() == []
    assert h.evaluate().total_requested == 0

    write_external(pd.DataFrame({"x": [1, 2, 3]}), "gros://team.my_dataset")
    v1 = lake.latest("team/my_dataset")
    assert v1 is not None and v1.metadata["writer"] == "external"

    events = h.sensor_tick()
    assert [e.asset_key for e in events] == [MY_DATASET]
    meta = {k: getattr(v, "value", v) for k, v in events[0].metadata.items()}
    assert meta["letl/version_id"] == v1.version_id
    assert meta["dagster/row_count"] == 3
    assert meta["letl/writer"] == "external"
    assert meta["dagster/uri"] == "gros://team.my_dataset/main:0"
    assert json.loads(h.sensor_cursor) == {"team/my_dataset|": v1.version_id}
    stored = instance.get_latest_materialization_event(MY_DATASET)
    assert stored is not None and stored.asset_materialization.metadata["letl/version_id"].value == v1.version_id

    first = h.evaluate()
    assert first.get_requested_partitions(MY_DATASET_SUMMARY) == {None}
    assert first.get_num_requested(MY_DATASET_SNAPSHOT) == 0

    # Run what was requested (and the pinned snapshot by hand), reading through the TieredIOManager.
    h.materialize(MY_DATASET_SUMMARY)
    h.materialize(MY_DATASET_SNAPSHOT)
    summary = lake.read_table(lake.latest("team/my_dataset_summary")).to_pandas()
    assert summary.set_index("column").loc["x", "mean"] == 2.0
    assert h.evaluate().total_requested == 0  # handled: both are up to date

    # A second tick with no new version reports nothing and requests nothing.
    assert h.sensor_tick() == []
    assert h.evaluate().total_requested == 0

    # A new external version: the real-time summary is requested, the pinned snapshot is not.
    write_external(pd.DataFrame({"x": [10, 20, 30, 40]}), "gros://team.my_dataset")
    v2 = lake.latest("team/my_dataset")
    assert v2.version_id != v1.version_id
    events = h.sensor_tick()
    assert [(e.asset_key, e.metadata["letl/version_id"].value) for e in events] == [(MY_DATASET, v2.version_id)]
    assert events[0].metadata["dagster/row_count"].value == 4
    assert events[0].metadata["dagster/uri"].value == "gros://team.my_dataset/main:1"
    second = h.evaluate()
    assert second.get_requested_partitions(MY_DATASET_SUMMARY) == {None}
    assert second.get_num_requested(MY_DATASET_SNAPSHOT) == 0
    assert second.total_requested == 1

    # Nothing new again: no event, no request, and the summary is not requested twice.
    assert h.sensor_tick() == []
    assert h.evaluate().total_requested == 0


def test_pinned_assertion_can_fail(letl_env, lake, instance, resources):
    """Control: the same snapshot with a real-time eager() condition *would* be requested,
    so 'the pinned snapshot is not requested' is a real check, not a tautology."""
    realtime_snapshot = dg.AssetSpec(MY_DATASET_SNAPSHOT, deps=[MY_DATASET], automation_condition=ON_UPSTREAM_CHANGE)
    defs = make_defs(resources, assets=[*external.specs, realtime_snapshot])
    h = Harness(instance, defs)
    assert h.evaluate().total_requested == 0  # the initial evaluation, as in the real test
    write_external(pd.DataFrame({"x": [1]}), "gros://team.my_dataset")
    h.sensor_tick()
    assert h.evaluate().get_requested_partitions(MY_DATASET_SNAPSHOT) == {None}


def test_pinned_read_uses_the_pin_and_has_no_condition(letl_env, lake, instance, resources):
    assert external.my_dataset_snapshot.specs_by_key[MY_DATASET_SNAPSHOT].automation_condition is None
    assert machinery.automation_for({MY_DATASET: "gros://team.my_dataset:latest"}) is None
    assert machinery.automation_for({MY_DATASET: "gros://team.my_dataset"}) is ON_UPSTREAM_CHANGE
    mixed = machinery.automation_for({MY_DATASET: "gros://team.my_dataset:-1", MONTHLY_COUNTS: None})
    assert mixed is not None and mixed is not ON_UPSTREAM_CHANGE

    write_external(pd.DataFrame({"x": [5, 6]}), "gros://team.my_dataset")
    h = Harness(instance, make_defs(resources))
    h.sensor_tick()
    h.materialize(MY_DATASET_SNAPSHOT)
    snap = lake.latest("team/my_dataset_snapshot")
    source = lake.latest("team/my_dataset")
    assert [v.version_id for v in lake.catalog.upstreams(snap.version_id)] == [source.version_id]


def test_summary_has_a_35_day_freshness_policy():
    policy = external.my_dataset_summary.specs_by_key[MY_DATASET_SUMMARY].freshness_policy
    assert policy == dg.FreshnessPolicy.time_window(fail_window=__import__("datetime").timedelta(days=35))


def test_late_historic_partition_propagates(letl_env, lake, instance, resources):
    defs = make_defs(resources)
    h = Harness(instance, defs)
    assert h.evaluate().total_requested == 0  # initial evaluation: nothing in the lake yet

    write_external(pd.DataFrame({"n": [1, 2]}), f"gros://team.monthly_counts?partition={HISTORIC}")
    events = h.sensor_tick()
    assert [(e.asset_key, e.partition) for e in events] == [(MONTHLY_COUNTS, HISTORIC)]
    assert h.evaluate().get_requested_partitions(MONTHLY_COUNTS_SUMMARY) == {HISTORIC}
    h.materialize(MONTHLY_COUNTS_SUMMARY, HISTORIC)
    assert h.evaluate().total_requested == 0
    assert h.sensor_tick() == []
    assert h.evaluate().total_requested == 0

    # A corrected drop for the same, long-past month: its summary partition is requested.
    write_external(pd.DataFrame({"n": [1, 2, 3]}), f"gros://team.monthly_counts?partition={HISTORIC}")
    events = h.sensor_tick()
    assert [(e.asset_key, e.partition) for e in events] == [(MONTHLY_COUNTS, HISTORIC)]
    assert events[0].metadata["dagster/partition_row_count"].value == 3

    # Control: plain eager() ignores a historic partition, so this assertion can fail.
    plain = dg.AssetSpec(
        MONTHLY_COUNTS_SUMMARY, deps=[MONTHLY_COUNTS], partitions_def=MONTHLY,
        automation_condition=dg.AutomationCondition.eager(),
    )
    assert h.evaluate(defs=make_defs(resources, assets=[*external.specs, plain])).get_num_requested(MONTHLY_COUNTS_SUMMARY) == 0

    assert h.evaluate().get_requested_partitions(MONTHLY_COUNTS_SUMMARY) == {HISTORIC}

    # A month that arrives late (older than the one already there) propagates too.
    write_external(pd.DataFrame({"n": [7]}), f"gros://team.monthly_counts?partition={LATE}")
    events = h.sensor_tick()
    assert [(e.asset_key, e.partition) for e in events] == [(MONTHLY_COUNTS, LATE)]
    assert LATE in h.evaluate().get_requested_partitions(MONTHLY_COUNTS_SUMMARY)


def test_sensor_skips_partitions_the_spec_does_not_know(letl_env, lake, instance, resources):
    # A partitioned write to an unpartitioned dataset cannot become a Dagster event.
    write_external(pd.DataFrame({"x": [1]}), "gros://team.my_dataset?partition=2024-01-01")
    h = Harness(instance, make_defs(resources))
    assert h.sensor_tick() == []
    assert "team/my_dataset|2024-01-01" in json.loads(h.sensor_cursor)
    assert h.sensor_tick() == []


def test_sensor_is_running_by_default():
    assert external_versions_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_examples_are_a_code_location_of_their_own_beside_production():
    from pathlib import Path

    import yaml

    from letl_assets.definitions import defs as production
    from letl_examples.definitions import defs as examples

    production_keys = {k.to_user_string() for k in production.resolve_all_asset_keys()}
    assert "labs/lab_results" in production_keys and not any(k.startswith("team/") for k in production_keys)
    assert "external_versions_sensor" not in {s.name for s in production.get_repository_def().sensor_defs}
    assert {MY_DATASET, MY_DATASET_SUMMARY, MY_DATASET_SNAPSHOT, MONTHLY_COUNTS, MONTHLY_COUNTS_SUMMARY} == set(
        examples.resolve_all_asset_keys())
    assert {s.name for s in examples.get_repository_def().sensor_defs} == {
        "external_versions_sensor", "examples_freshness_sensor", "letl_examples_automation"}
    workspace = yaml.safe_load((Path(__file__).parents[2] / "workspace.yaml").read_text())
    assert [(e["python_module"]["module_name"], e["python_module"]["location_name"]) for e in workspace["load_from"]] == [
        ("letl_assets.definitions", "letl"), ("letl_examples.definitions", "letl_examples")]
