"""Names the lake gives things: repos of asset keys, version ids, and the asset keys the pipelines produce.

An asset key (``labs/lab_results``) is a repo (``labs.lab_results``) in gros:// URIs and manifests;
these two functions are the only conversion between them. A version id starts with its UTC
creation time, so ids sort by age and a storage key tells its age on every backend.

The produced keys are plain strings, with no Dagster import: faces that must never write them (the
HTTP API) read them here; letl_assets/assets/ builds its AssetKeys from the same strings, and
tests/api/test_reliability_api.py checks that the two agree. External datasets that notebooks write
(team/my_dataset, team/monthly_counts) are not listed: outside writers own them.
"""

import uuid
from datetime import datetime, timezone

from letl.lake.errors import Conflict

VERSION_TIME = "%Y%m%dT%H%M%S%fZ"

LAB_DROPS = "labs/lab_drops"  # an external asset, but its materializations come from the landing sensor
LAB_RESULTS = "labs/lab_results"
LAB_REJECTS = "labs/lab_results_rejects"
LAB_SUMMARY = "labs/lab_results_summary"
MY_DATASET_SUMMARY = "team/my_dataset_summary"
MY_DATASET_SNAPSHOT = "team/my_dataset_snapshot"
MONTHLY_COUNTS_SUMMARY = "team/monthly_counts_summary"

PRODUCED = frozenset({LAB_DROPS, LAB_RESULTS, LAB_REJECTS, LAB_SUMMARY, MY_DATASET_SUMMARY, MY_DATASET_SNAPSHOT,
                      MONTHLY_COUNTS_SUMMARY})


def repo_of(asset_key: str) -> str:
    return asset_key.replace("/", ".")


def asset_key_of(repo: str) -> str:
    return repo.replace(".", "/")


def new_version_id(created_at: datetime | None = None) -> str:
    """Sortable by creation time, unique across processes."""
    return f"{created_at or datetime.now(timezone.utc):{VERSION_TIME}}-{uuid.uuid4().hex[:8]}"


def version_created_at(key: str) -> datetime | None:
    """When the version a storage key (or version id) names was created; None for any other name."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, VERSION_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def refuse_produced(lake, asset_key: str) -> None:
    """An outside writer (the API, `letl tier write`, a gros:// write) must never replace what a pipeline
    publishes and its checks vouched for: a listed key, or one a pipeline run has written."""
    produced = asset_key in PRODUCED or any(v.run_id and v.metadata.get("writer") != "external"
                                            for v in lake.catalog.list_versions(asset_key=asset_key))
    if produced:
        raise Conflict(f"{asset_key} is produced by the pipelines, so an outside writer cannot write it: "
                       "write to a dataset of your own (e.g. team.my_upload)")
