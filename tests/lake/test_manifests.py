"""Lineage manifests in GROS layout, the catalog rebuilt from them, branches and diff."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from letl.cli import main as cli
from letl.lake import manifests
from letl.lake.catalog import latest, lineage
from letl.lake.errors import NotFound
from letl.lake.fsck import fsck
from letl.lake.lake import Lake
from letl.lake.manifests import CatalogNotEmpty, manifest_store, rebuild
from letl.lake.moves import Mover


def frame(n: int, seed: int = 0, extra: bool = False) -> pd.DataFrame:
    data = {"id": list(range(seed, seed + n)), "value": [float(i * 1.5 + seed) for i in range(n)]}
    if extra:
        data["flag"] = [i % 2 == 0 for i in range(n)]
    return pd.DataFrame(data)


def read_json(store, key: str) -> dict:
    with store.open(key) as stream:
        return json.loads(stream.read())


def snapshot(lake: Lake) -> tuple:
    with lake.catalog.engine.begin() as conn:
        edges = set(conn.execute(sa.select(lineage.c.version_id, lineage.c.upstream_version_id)).all())
        pointers = {(r.asset_key, r.branch, r.partition): r.version_id for r in conn.execute(latest.select())}
    return lake.catalog.list_versions(), edges, pointers


def drop_catalog(lake: Lake) -> None:
    """Lose the SQLite catalog, as a dead disk would: the file and its WAL and shared memory."""
    lake.catalog.engine.dispose()
    db = Path(sa.engine.make_url(lake.config.catalog_url).database)
    assert db.is_file()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert not db.exists()


def test_write_version_writes_manifest_and_downstream_markers(lake):
    left = lake.write_version("labs/left", frame(3), partition="2024-01", run_id="r1")
    right = lake.write_version("labs/right", frame(4, 10), run_id="r1")
    down = lake.write_version("labs/joined", frame(5, 20), partition="2024-01", run_id="r2",
                              upstream_ids=iter([left.version_id, right.version_id, left.version_id]),
                              metadata={"note": "joined", "n": [1, 2]})
    store = manifest_store(lake, "hdd")  # the coldest configured tier here
    assert Path(lake.tiers["hdd"].spec.location + ".gros").is_dir()
    key = f"dependency/labs.joined/main/{down.version_id}/metadata.json"
    doc = read_json(store, key)
    assert manifests.version_from_record(doc["version"]) == down == lake.catalog.get(down.version_id)
    assert doc["version"]["tier"] == down.tier and doc["version"]["storage_key"] == down.storage_key
    assert doc["version"]["metadata"]["note"] == "joined" and doc["repo"] == "labs.joined"
    assert doc["upstream_version_ids"] == sorted([left.version_id, right.version_id])
    assert {(u["repo"], u["branch"]) for u in doc["upstreams"]} == {("labs.left", "main"), ("labs.right", "main")}

    left_marker = f"dependency/labs.left/main/downstreams/{left.version_id}/labs.joined={down.version_id}"
    right_marker = f"dependency/labs.right/main/downstreams/{right.version_id}/labs.joined={down.version_id}"
    assert sorted(k for k in store.keys("dependency/") if "/downstreams/" in k) == sorted([left_marker, right_marker])
    marker = read_json(store, left_marker)
    assert marker["upstream"]["version_id"] == left.version_id
    assert marker["downstream"] == {"asset_key": "labs/joined", "repo": "labs.joined", "branch": "main",
                                    "version_id": down.version_id}
    assert len([k for k in store.keys("dependency/") if k.endswith("/metadata.json")]) == 3
    for warmer in ("pmem", "ssd"):
        assert list(manifest_store(lake, warmer).keys()) == []
    # Outside the tiers' own key space: fsck does not take the audit trail for orphans.
    assert fsck(lake, dry_run=True, grace_seconds=0)["orphans"] == []
    assert lake.tiers["hdd"].backend.usage() == 0


def test_manifest_failure_never_fails_a_committed_write_and_backfill_repairs(lake, monkeypatch, caplog):
    monkeypatch.setattr(manifests, "manifest_tiers", lambda lake: [])
    with caplog.at_level(logging.WARNING, logger="letl"):
        version = lake.write_version("labs/a", frame(2))
    assert lake.catalog.get(version.version_id) == version
    assert "not written" in caplog.text
    monkeypatch.undo()
    assert list(manifest_store(lake, "hdd").keys()) == []
    assert manifests.backfill(lake)["written"] == [version.version_id]
    assert manifests.backfill(lake)["written"] == []
    assert manifest_store(lake, "hdd").exists(f"dependency/labs.a/main/{version.version_id}/metadata.json")


def build_history(lake: Lake) -> dict:
    raw1 = lake.write_version("labs/raw", frame(3), partition="2024-01", run_id="r1", tier_hint="pmem")
    raw1b = lake.write_version("labs/raw", frame(4), partition="2024-01", run_id="r2", tier_hint="pmem")
    raw2 = lake.write_version("labs/raw", frame(5, 7), partition="2024-02", run_id="r1")
    ref = lake.write_version("ref/codes", frame(2, 100), run_id="r1", tier_hint="ssd")
    clean = lake.write_version("labs/clean", frame(4, 1), partition="2024-01", run_id="r3",
                               upstream_ids=[raw1b.version_id, ref.version_id], metadata={"rows_dropped": 0})
    feat = lake.write_version("labs/clean", frame(6, 1, extra=True), partition="2024-01", run_id="r4",
                              upstream_ids=[raw1b.version_id], branch="feature")
    feat_down = lake.write_version("labs/report", frame(1), run_id="r5", upstream_ids=[feat.version_id, clean.version_id],
                                   branch="feature")
    moved = Mover(lake).move(raw1.version_id, "hdd", "move-1")
    assert moved.state == "done" and lake.catalog.get(raw1.version_id).tier == "hdd"
    return {"raw1": raw1, "raw1b": raw1b, "raw2": raw2, "ref": ref, "clean": clean, "feat": feat, "down": feat_down}


def test_rebuild_round_trip_after_losing_the_sqlite_file(lake, tmp_path):
    history = build_history(lake)
    before = snapshot(lake)
    assert len(before[0]) == 7 and len(before[1]) == 5 and len(before[2]) == 6
    drop_catalog(lake)

    fresh = Lake.from_env()
    assert fresh.catalog.list_versions() == []
    report = rebuild(fresh)
    after = snapshot(fresh)
    assert after[0] == before[0]  # every field, the moved version's tier included
    assert after[1] == before[1]
    assert after[2] == before[2]
    assert fresh.catalog.get(history["raw1"].version_id).tier == "hdd"
    assert report["manifests"] == report["versions"] == report["inserted"] == 7
    assert (report["lineage_edges"], report["latest_pointers"], report["markers"]) == (5, 6, 5)
    assert report["moved"] == [{"version_id": history["raw1"].version_id, "written_on": "pmem", "found_on": "hdd"}]
    for problem in ("missing_objects", "ambiguous", "dangling_upstreams", "edges_without_marker",
                    "markers_without_edge", "invalid"):
        assert report[problem] == [], problem
    assert fresh.read_table(fresh.latest("labs/raw", "2024-01")).num_rows == 4

    # Idempotent: a forced second pass changes nothing and adds nothing.
    again = rebuild(fresh, force=True)
    assert again["inserted"] == 0 and snapshot(fresh) == after

    # Into another catalog URL, leaving the configured one alone.
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    assert rebuild(fresh, target_url=other)["inserted"] == 7
    from letl.lake.catalog import Catalog

    assert Catalog(other).list_versions() == before[0]


def test_rebuild_refuses_a_non_empty_catalog_without_force(lake):
    first = lake.write_version("labs/a", frame(2))
    before = snapshot(lake)
    with pytest.raises(CatalogNotEmpty, match="already holds 1 versions"):
        rebuild(lake)
    assert snapshot(lake) == before
    # With force, a catalog that lost a version gets it back and keeps the rest.
    second = lake.write_version("labs/a", frame(3))
    with lake.catalog.engine.begin() as conn:
        conn.execute(latest.delete())
        conn.execute(sa.text("DELETE FROM versions WHERE version_id = :v"), {"v": second.version_id})
    report = rebuild(lake, force=True)
    assert report["inserted"] == 1
    assert [v.version_id for v in lake.catalog.list_versions()] == [first.version_id, second.version_id]
    assert lake.latest("labs/a") == second


def test_branch_isolation_branches_and_diff(lake):
    main1 = lake.write_version("labs/x", frame(3), partition="p1")
    main2 = lake.write_version("labs/x", frame(3, 50), partition="p2")
    main_before = (lake.catalog.list_versions(branch="main"), lake.latest("labs/x", "p1"), lake.latest("labs/x", "p2"))

    feat1 = lake.write_version("labs/x", frame(4, extra=True), partition="p1", branch="feature")
    feat2 = lake.write_version("labs/x", frame(3, 50), partition="p2", branch="feature")
    feat3 = lake.write_version("labs/x", frame(1), partition="p3", branch="feature")
    assert feat2.version_id != main2.version_id and feat2.storage_key.startswith("feature/")
    assert main_before == (lake.catalog.list_versions(branch="main"), lake.latest("labs/x", "p1"), lake.latest("labs/x", "p2"))
    assert lake.latest("labs/x", "p3") is None
    assert lake.latest("labs/x", "p1", "feature") == feat1

    assert manifests.branches(lake) == {
        "feature": {"versions": 3, "assets": 1, "latest": 3},
        "main": {"versions": 2, "assets": 1, "latest": 2},
    }
    result = manifests.diff(lake, "gros://labs.x/feature", "gros://labs.x/main")
    assert result["a"]["branch"] == "feature" and result["b"]["branch"] == "main"
    assert result["a"]["asset_key"] == "labs/x"
    assert result["summary"] == {"same": 1, "changed": 1, "only_a": 1, "only_b": 0}
    by = {p["partition"]: p for p in result["partitions"]}
    p1 = by["p1"]
    assert p1["status"] == "changed"
    assert (p1["a"]["version_id"], p1["b"]["version_id"]) == (feat1.version_id, main1.version_id)
    assert (p1["a"]["rows"], p1["b"]["rows"], p1["rows_delta"]) == (4, 3, -1)
    assert p1["schema_changed"] is True
    assert p1["a"]["schema_fingerprint"] != p1["b"]["schema_fingerprint"]
    assert p1["columns"] == {"only_in_a": [{"name": "flag", "type": "bool"}], "only_in_b": [], "type_changed": []}
    assert by["p2"]["status"] == "same" and by["p2"]["schema_changed"] is False
    assert by["p2"]["columns"] == {"only_in_a": [], "only_in_b": [], "type_changed": []}
    assert by["p3"]["status"] == "only_a" and by["p3"]["b"] is None and by["p3"]["a"]["version_id"] == feat3.version_id
    with pytest.raises(LookupError, match="unknown repo"):
        manifests.diff(lake, "gros://labs.nope/feature", "gros://labs.x/main")
    with pytest.raises(NotFound, match="unknown branch 'feture'; branches: feature, main"):
        manifests.diff(lake, "gros://labs.x/feture", "gros://labs.x/main")


def test_parse_ref():
    assert manifests.parse_ref("gros://labs.lab_results/feature") == ("labs.lab_results", "feature")
    assert manifests.parse_ref("gros://labs.lab_results") == ("labs.lab_results", "main")
    assert manifests.parse_ref("gros://labs.x/dev:latest?partition=p1") == ("labs.x", "dev")
    for bad in ("gros://", "gros://../etc/main", "gros://a/b/c", "gros://a b/main"):
        with pytest.raises(ValueError):
            manifests.parse_ref(bad)


def letl_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "letl.cli.main", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def letl(capsys):
    """`letl` in this process, answering as the process would (code, stdout, stderr)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


def test_cli_rebuild_branches_and_diff(lake, letl):
    history = build_history(lake)
    before = snapshot(lake)
    drop_catalog(lake)

    done = letl_process("catalog", "rebuild", "--json")  # once through the real entry point
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["versions"], report["lineage_edges"], report["latest_pointers"]) == (7, 5, 6)
    assert report["moved"][0]["version_id"] == history["raw1"].version_id
    assert snapshot(Lake.from_env()) == before
    refused = letl("catalog", "rebuild", "--json")
    assert refused.returncode == 3 and "already holds 7 versions" in refused.stderr

    listed = letl("lake", "branches", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "feature": {"versions": 2, "assets": 2, "latest": 2},
        "main": {"versions": 5, "assets": 3, "latest": 4},
    }

    compared = letl("lake", "diff", "gros://labs.clean/feature", "gros://labs.clean/main", "--json")
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    (entry,) = result["partitions"]
    assert entry["partition"] == "2024-01" and entry["status"] == "changed"
    assert (entry["a"]["version_id"], entry["b"]["version_id"]) == (history["feat"].version_id, history["clean"].version_id)
    assert (entry["a"]["rows"], entry["b"]["rows"]) == (6, 4)
    assert entry["columns"]["only_in_a"] == [{"name": "flag", "type": "bool"}]
    text = letl("lake", "diff", "gros://labs.clean/feature", "gros://labs.clean/main")
    assert text.returncode == 0 and "only in a: flag bool" in text.stdout
    unknown = letl("lake", "diff", "gros://labs.none/feature", "gros://labs.clean/main", "--json")
    assert unknown.returncode == 4 and "unknown repo" in unknown.stderr
    misspelled = letl("lake", "diff", "gros://labs.clean/featur", "gros://labs.clean/main")
    assert misspelled.returncode == 4 and "unknown branch 'featur'; branches: feature, main" in misspelled.stderr
    assert misspelled.stdout == ""
