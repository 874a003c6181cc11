"""`make ui` after `make run`: every sensor of both code locations in workspace.yaml, evaluated on the
Dagster instance `letl run` used, requests nothing until a drop changes, and then only that drop's month."""

import os

import dagster as dg
import pytest

from letl_assets.definitions import defs as production
from letl_assets.resources.landing import LandingZone
from letl_examples.definitions import defs as examples


def evaluate(instance, cursors: dict) -> dict[str, list]:
    """One tick of every sensor of both locations on a cold or given cursor: name -> run requests.
    The automation sensors are evaluated through Dagster's own automation-condition evaluation."""
    requested = {}
    for defs, sensor in [(d, s) for d in (production, examples) for s in d.get_repository_def().sensor_defs]:
        resources = dict(defs.resources)
        if "landing" in resources:  # the drops were just generated: settled, as when `make ui` starts later
            resources["landing"] = LandingZone(settle_seconds=0)
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=sensor.asset_selection, cursor=cursors.get(sensor.name))
            cursors[sensor.name] = result.cursor
            requested[sensor.name] = [(r.key, r.true_subset.size) for r in result.results if r.true_subset.size]
            continue
        with dg.build_sensor_context(instance=instance, cursor=cursors.get(sensor.name), resources=resources,
                                     definitions=defs, sensor_name=sensor.name) as context:
            result = sensor(context)
        if isinstance(result, dg.SensorResult):
            cursors[sensor.name] = result.cursor
            requested[sensor.name] = list(result.run_requests or [])
        else:
            requested[sensor.name] = [result] if isinstance(result, dg.RunRequest) else [
                r for r in (result or []) if isinstance(r, dg.RunRequest)]
    return requested


@pytest.fixture
def instance(lab_lake, letl_env):
    """The instance `letl run` used: the lab lake is built by run_months, its Dagster home copied with it."""
    assert os.environ["DAGSTER_HOME"] == str(letl_env["dagster_home"])
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs_count() >= 1, "the copied instance holds letl run's runs"
        yield instance


def test_the_sensors_request_nothing_after_letl_run_and_one_month_when_its_drop_changes(instance, letl_env):
    cursors: dict = {}
    first = evaluate(instance, cursors)
    assert set(first) == {"lab_drops_sensor", "letl_automation", "tier_policy_sensor", "tier_moves_sensor",
                          "freshness_sensor", "external_versions_sensor", "examples_freshness_sensor",
                          "letl_examples_automation"}
    assert {name: r for name, r in first.items() if r} == {}

    drop = sorted((letl_env["landing"] / "labs").rglob("2024-02.csv*"))[0]
    stat = drop.stat()
    os.utime(drop, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # re-sent: same bytes, new mtime
    second = evaluate(instance, cursors)
    assert {name: len(r) for name, r in second.items() if r} == {"lab_drops_sensor": 1}
    [request] = second["lab_drops_sensor"]
    assert request.partition_key == "2024-02-01"
    assert request.tags["letl/changed_files"] == str(drop.relative_to(letl_env["landing"]))
    assert {name: r for name, r in evaluate(instance, cursors).items() if r} == {}, "a state is requested once"
