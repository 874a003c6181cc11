"""The asset keys the code location produces, as plain strings, with no Dagster import.

Faces that must never write these (the HTTP API) read them here; letl_assets/assets/ builds its
AssetKeys from the same strings, and tests/test_reliability_api.py checks that the two agree.
External datasets that notebooks write (team/my_dataset, team/monthly_counts) are not listed:
outside writers own them.
"""

LAB_DROPS = "labs/lab_drops"  # an external asset, but its materializations come from the landing sensor
LAB_RESULTS = "labs/lab_results"
LAB_REJECTS = "labs/lab_results_rejects"
LAB_SUMMARY = "labs/lab_results_summary"
MY_DATASET_SUMMARY = "team/my_dataset_summary"
MY_DATASET_SNAPSHOT = "team/my_dataset_snapshot"
MONTHLY_COUNTS_SUMMARY = "team/monthly_counts_summary"

PRODUCED = frozenset({LAB_DROPS, LAB_RESULTS, LAB_REJECTS, LAB_SUMMARY, MY_DATASET_SUMMARY, MY_DATASET_SNAPSHOT,
                      MONTHLY_COUNTS_SUMMARY})


def refuse_produced(lake, asset_key: str) -> None:
    """An outside writer (the API, `letl tier write`, a gros:// write) must never replace what a pipeline
    publishes and its checks vouched for: a listed key, or one a pipeline run has written."""
    from letl.lake.errors import Conflict

    produced = asset_key in PRODUCED or any(v.run_id and v.metadata.get("writer") != "external"
                                            for v in lake.catalog.list_versions(asset_key=asset_key))
    if produced:
        raise Conflict(f"{asset_key} is produced by the pipelines, so an outside writer cannot write it: "
                       "write to a dataset of your own (e.g. team.my_upload)")
