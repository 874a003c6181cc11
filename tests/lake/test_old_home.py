"""A LETL_HOME written before the library moved into letl/ still opens, and every version reads.

The fixture was made once by the old code (commit a9e200b, package letl_assets): see
tests/fixtures/letl_home_a9e200b/README.txt. Each test reads a copy, since reads write the access log.
"""

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import fsspec
import pandas as pd
import pytest
import sqlalchemy as sa

from letl.lake.catalog import Catalog, access_log
from letl.lake.lake import Lake, current_user
from letl.lake.manifests import rebuild
from letl.query.datasets import at_tag, load_datasets
from letl.query.service import Explorer

FIXTURE = Path(__file__).parents[1] / "fixtures" / "letl_home_a9e200b"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
RESTRICTED = {e["uri"] for e in EXPECTED if e["access"] == "restricted"}


@pytest.fixture
def old_lake(letl_env, monkeypatch) -> Lake:
    home = letl_env["home"]
    shutil.copytree(FIXTURE / "home", home, dirs_exist_ok=True)
    # Where the old run kept its hot tier; ssd and hdd were at their defaults under LETL_HOME.
    monkeypatch.setenv("LETL_TIER_PMEM_PATH", str(home / "tiers" / "pmem"))
    monkeypatch.delenv("LETL_STEWARDS", raising=False)
    return Lake.from_env()


def described(versions) -> dict[str, tuple]:
    return {v.version_id: (v.asset_key, v.branch, v.partition, v.tier, v.rows, v.bytes, v.sha256) for v in versions}


def expected_rows() -> dict[str, tuple]:
    return {e["version_id"]: (e["asset_key"], e["branch"], e["partition"], e["tier"], e["rows"], e["bytes"], e["sha256"])
            for e in EXPECTED}


def test_the_fixture_covers_what_it_claims():
    assert len(EXPECTED) == 14 and len({e["version_id"] for e in EXPECTED}) == 14
    assert {e["access"] for e in EXPECTED} == {"deidentified", "restricted"}
    assert {e["branch"] for e in EXPECTED} == {"main", "feature"}
    assert sum(not e["latest"] for e in EXPECTED) == 4 and any(e["upstreams"] for e in EXPECTED)
    assert {e["tier"] for e in EXPECTED if e["asset_key"] == "labs/lab_results"} == {"ssd", "hdd"}  # one was moved


def test_the_catalog_opens_with_every_version_lineage_and_latest_pointer(old_lake):
    catalog = old_lake.catalog
    assert described(catalog.list_versions()) == expected_rows()
    assert catalog.latest_ids() == {e["version_id"] for e in EXPECTED if e["latest"]}
    for entry in EXPECTED:
        assert sorted(v.version_id for v in catalog.upstreams(entry["version_id"])) == entry["upstreams"]
        assert old_lake.intact(catalog.get(entry["version_id"]))


def test_every_version_reads_through_gros_as_stored(old_lake, monkeypatch):
    monkeypatch.setenv("LETL_STEWARDS", current_user())
    for entry in EXPECTED:
        with fsspec.open(entry["uri"], "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"], entry["uri"]
        assert len(pd.read_parquet(entry["uri"])) == entry["rows"], entry["uri"]
    with old_lake.catalog.engine.begin() as conn:
        audited = set(conn.execute(sa.select(access_log.c.version_id).where(access_log.c.kind == "gros")).scalars())
    assert audited == {e["version_id"] for e in EXPECTED}


def test_restricted_versions_stay_restricted(old_lake):
    assert RESTRICTED == {e["uri"] for e in EXPECTED if e["asset_key"] in ("labs/lab_results_rejects", "team/notes")}
    for uri in sorted(RESTRICTED):
        with pytest.raises(PermissionError):
            pd.read_parquet(uri)
    public = next(e for e in EXPECTED if e["access"] == "deidentified")
    assert len(pd.read_parquet(public["uri"])) == public["rows"]


def pins() -> dict[tuple[str, str], dict[str, list[dict]]]:
    """(branch, index tag) -> dataset -> the versions that tag selects, one per partition that has it."""
    by_tag: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for entry in EXPECTED:
        tag = entry["uri"].split(":")[-1].split("?")[0]
        by_tag[(entry["branch"], tag)][entry["asset_key"]].append(entry)
    return by_tag


def count(explorer: Explorer, key: str) -> int:
    view = next(d.view for d in explorer.datasets if d.key == key)
    return explorer.run(f"SELECT count(*) AS n FROM {view}", trusted=True).table.to_pylist()[0]["n"]


@pytest.mark.parametrize("role", ["analyst", "steward"])
def test_every_version_reads_through_the_explorer(old_lake, role):
    """Each index tag pinned in turn, as the explorer's time travel does: every version is one of them."""
    seen = set()
    for (branch, tag), by_key in sorted(pins().items()):
        datasets = load_datasets(old_lake, branch)
        for dataset in datasets:
            if dataset.key not in by_key:
                continue
            chosen = by_key[dataset.key]
            if role == "analyst" and chosen[0]["access"] == "restricted":
                assert dataset.access == "restricted"
                continue
            pinned = at_tag(old_lake, dataset, tag)
            assert sorted(v.version_id for v in pinned) == sorted(e["version_id"] for e in chosen)
            explorer = Explorer(old_lake, role, datasets=datasets, pinned={dataset.key: pinned})
            try:
                assert count(explorer, dataset.key) == sum(e["rows"] for e in chosen)
            finally:
                explorer.close()
            seen.update(e["version_id"] for e in chosen)
    readable = {e["version_id"] for e in EXPECTED if role == "steward" or e["access"] != "restricted"}
    assert seen == readable


def test_the_latest_versions_answer_in_the_explorer(old_lake):
    explorer = Explorer(old_lake, "steward")
    try:
        latest = defaultdict(int)
        for entry in EXPECTED:
            if entry["latest"] and entry["branch"] == "main":
                latest[entry["asset_key"]] += entry["rows"]
        assert {d.key: count(explorer, d.key) for d in explorer.datasets} == latest
    finally:
        explorer.close()


def test_the_old_manifests_rebuild_the_same_catalog(old_lake, tmp_path):
    """The audit trail the old code wrote is still read: a catalog rebuilt from it alone matches."""
    target = f"sqlite:///{tmp_path / 'rebuilt.sqlite'}"
    rebuild(old_lake, target)
    rebuilt = Catalog(target)
    assert described(rebuilt.list_versions()) == expected_rows()
    assert rebuilt.latest_ids() == {e["version_id"] for e in EXPECTED if e["latest"]}
