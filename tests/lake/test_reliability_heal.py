"""A version whose object was lost is healed by a forced rerun, never reused."""

from letl.lake.fsck import fsck
from letl.lake.lake import Lake
from letl_assets.local_run import run_months

ASSET = "labs/lab_results"


def test_missing_version_file_is_healed_by_a_forced_run(lab_lake):
    month = lab_lake.catalog.latest_versions(lab_lake.branch)
    lost = next(v for v in month if v.asset_key == ASSET)
    before = lab_lake.read_table(lost)
    lab_lake.tiers[lost.tier].backend.delete(lost.storage_key)
    assert fsck(lab_lake, dry_run=True)["missing"] == [f"{lost.tier}:{lost.storage_key}"]

    outcomes = run_months(None, force=True, log=lambda _line: None)
    assert all(o["status"] == "ok" for o in outcomes), outcomes

    lake = Lake.from_env()
    healed = lake.latest(ASSET, lost.partition)
    assert healed.version_id != lost.version_id and healed.sha256 == lost.sha256 and lake.intact(healed)
    assert lake.read_table(healed).equals(before)
    assert fsck(lake, dry_run=True)["missing"] == [f"{lost.tier}:{lost.storage_key}"]  # the old id stays lost
