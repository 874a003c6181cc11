"""Freshness sensor: stale and with newer inputs -> rebuild; stale with unchanged inputs -> nothing."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from letl_assets.assets.labs import LAB_SUMMARY
from letl_assets.resources.tiers import LakeResource
from letl_assets.sensors import freshness

P = "2024-03-01"


def summary_reading_results(lake):
    results = lake.write_version("labs/lab_results", pd.DataFrame({"v": [1]}), partition=P)
    summary = lake.write_version("labs/lab_results_summary", pd.DataFrame({"n": [1]}), partition=P,
                                 upstream_ids=[results.version_id])
    return results, summary


def test_only_stale_versions_with_newer_upstreams_are_rebuilt(lake):
    _, summary = summary_reading_results(lake)
    old = summary.created_at + timedelta(days=40)
    assert freshness.stale_with_newer_inputs(lake, freshness.WATCHED, old) == []
    newer = lake.write_version("labs/lab_results", pd.DataFrame({"v": [2]}), partition=P)
    assert freshness.stale_with_newer_inputs(lake, freshness.WATCHED, old) == [(LAB_SUMMARY, P, [newer.version_id])]
    assert freshness.stale_with_newer_inputs(lake, freshness.WATCHED, summary.created_at + timedelta(days=1)) == []


def test_sensor_requests_the_stale_partition_and_skips_otherwise(lake, monkeypatch):
    _, summary = summary_reading_results(lake)
    monkeypatch.setattr(freshness, "utcnow", lambda: summary.created_at + timedelta(days=40))
    context = dg.build_sensor_context(resources={"lake": LakeResource()})
    assert isinstance(freshness.freshness_sensor(context), dg.SkipReason)
    lake.write_version("labs/lab_results", pd.DataFrame({"v": [2]}), partition=P)
    [request] = freshness.freshness_sensor(dg.build_sensor_context(resources={"lake": LakeResource()}))
    assert (request.asset_selection, request.partition_key) == ([LAB_SUMMARY], P)
    again = freshness.freshness_sensor(dg.build_sensor_context(resources={"lake": LakeResource()}))
    assert [r.run_key for r in again] == [request.run_key]  # same state, same key: Dagster runs it once
