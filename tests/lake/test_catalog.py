"""Catalog: immutable versions, latest pointers, lineage and the access log."""

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from letl.lake.catalog import Catalog, Version, utcnow
from letl.lake.names import VERSION_TIME, asset_key_of, new_version_id, repo_of, version_created_at


def make_version(asset="a", partition="", version_id=None, **extra) -> Version:
    fields = dict(
        version_id=version_id or new_version_id(),
        asset_key=asset,
        branch="main",
        partition=partition,
        created_at=utcnow(),
        run_id="run-1",
        tier="ssd",
        storage_key=f"main/{asset}/{partition or '_'}/x.parquet",
        format="parquet",
        bytes=100,
        rows=10,
        sha256="0" * 64,
        schema_fingerprint="f" * 16,
        metadata={"k": 1},
    )
    fields.update(extra)
    return Version(**fields)


def commit(catalog: Catalog, version: Version, upstream_ids=()) -> None:
    catalog.commit_versions([(version, upstream_ids)])


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")


def test_commit_sets_latest_and_round_trips_fields(catalog):
    v = make_version(partition="2024-01", metadata={"placement": "hint", "n": [1, 2]})
    assert catalog.latest_version("a", "2024-01", "main") is None
    commit(catalog, v)
    assert catalog.latest_version("a", "2024-01", "main") == v
    assert catalog.get(v.version_id) == v
    assert catalog.get("no-such-version") is None
    assert catalog.latest_version("a", "", "main") is None
    assert catalog.latest_version("a", "2024-01", "dev") is None
    assert catalog.latest_ids() == {v.version_id}


def test_second_version_moves_latest_and_keeps_the_first(catalog):
    first, second = make_version(sha256="1" * 64), make_version(sha256="2" * 64)
    commit(catalog, first)
    commit(catalog, second)
    assert catalog.latest_version("a", "", "main").version_id == second.version_id
    assert [v.version_id for v in catalog.list_versions("a")] == [first.version_id, second.version_id]
    assert catalog.get(first.version_id) == first
    assert catalog.latest_ids() == {second.version_id}


def test_duplicate_version_id_is_refused_and_latest_unchanged(catalog):
    v = make_version()
    commit(catalog, v)
    with pytest.raises(sa.exc.IntegrityError):
        commit(catalog, make_version(version_id=v.version_id, sha256="9" * 64))
    assert catalog.get(v.version_id).sha256 == "0" * 64
    assert len(catalog.list_versions()) == 1


def test_list_versions_filters(catalog):
    a1, a2 = make_version("a", "p1"), make_version("a", "p2")
    b1, dev = make_version("b", "p1"), make_version("a", "p1", branch="dev")
    for v in (a1, a2, b1, dev):
        commit(catalog, v)
    assert {v.version_id for v in catalog.list_versions("a")} == {a1.version_id, a2.version_id, dev.version_id}
    assert [v.version_id for v in catalog.list_versions("a", "p1", "main")] == [a1.version_id]
    assert [v.version_id for v in catalog.list_versions(partition="p1", branch="dev")] == [dev.version_id]
    assert catalog.latest_version("a", "p1", "dev").version_id == dev.version_id
    assert catalog.latest_version("a", "p1", "main").version_id == a1.version_id


def test_lineage_upstreams_and_downstreams(catalog):
    left, right = make_version("left"), make_version("right")
    commit(catalog, left)
    commit(catalog, right)
    joined = make_version("joined")
    commit(catalog, joined, [left.version_id, right.version_id, left.version_id])
    report = make_version("report")
    commit(catalog, report, [joined.version_id])
    assert {v.version_id for v in catalog.upstreams(joined.version_id)} == {left.version_id, right.version_id}
    assert [v.version_id for v in catalog.downstreams(left.version_id)] == [joined.version_id]
    assert [v.version_id for v in catalog.downstreams(joined.version_id)] == [report.version_id]
    assert [v.version_id for v in catalog.upstreams(report.version_id)] == [joined.version_id]
    assert catalog.upstreams(left.version_id) == []
    assert catalog.downstreams(report.version_id) == []


def test_commit_with_unknown_upstream_commits_nothing(catalog):
    v = make_version()
    with pytest.raises(sa.exc.IntegrityError):
        commit(catalog, v, ["not-a-version"])
    assert catalog.get(v.version_id) is None
    assert catalog.latest_version("a", "", "main") is None


def test_access_stats_count_reads_in_the_window_and_the_last_access(catalog):
    up1, up2, other = make_version("up1"), make_version("up2"), make_version("other")
    for v in (up1, up2, other):
        commit(catalog, v)
    catalog.record_access(up2.version_id, "load", run_id="r1", step_key="down", user="u", host="h")
    catalog.record_access(up1.version_id, "load", run_id="r1", step_key="down")
    catalog.record_accesses([up1.version_id, other.version_id, other.version_id], "read")
    now = utcnow()
    last, reads = catalog.access_stats(now, window=3600)
    assert reads == {up1.version_id: 2, up2.version_id: 1, other.version_id: 1}
    assert set(last) == set(reads) and all(when.tzinfo is not None and when <= now for when in last.values())
    assert catalog.access_stats(now + timedelta(hours=2), window=3600)[1] == {}
    assert catalog.access_stats(now - timedelta(hours=1), window=3600) == ({}, {})


def test_latest_never_moves_back_to_an_older_version(catalog):
    """A writer that took its id first but commits last (a slow put) must not hide the newer version."""
    older_id, newer_id = new_version_id(), new_version_id()
    newer = make_version(version_id=newer_id, sha256="2" * 64)
    older = make_version(version_id=older_id, sha256="1" * 64, created_at=newer.created_at - timedelta(seconds=1))
    commit(catalog, newer)
    commit(catalog, older)
    latest = catalog.latest_version("a", "", "main")
    assert latest.version_id == newer_id
    assert catalog.version_index(latest) == 1
    assert [v.version_id for v in catalog.list_versions("a")] == [older_id, newer_id]


def test_version_index_orders_by_age_within_a_partition(catalog):
    base = utcnow()
    ids = [f"{base + timedelta(seconds=i):{VERSION_TIME}}-0000000{i}" for i in range(3)]
    committed = [make_version("a", "p", vid) for vid in reversed(ids)]  # commit newest first
    for v in committed:
        commit(catalog, v)
    commit(catalog, make_version("a", "q", f"{base - timedelta(days=1):{VERSION_TIME}}-00000000"))
    commit(catalog, make_version("b", "p", f"{base - timedelta(days=1):{VERSION_TIME}}-00000001"))
    assert [catalog.version_index(catalog.get(vid)) for vid in ids] == [0, 1, 2]


def test_new_version_ids_sort_by_creation():
    ids = [new_version_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert sorted(ids, key=lambda i: i[:22]) == ids


def test_new_version_ids_tell_their_creation_time():
    when = utcnow()
    assert version_created_at(f"main/a/_/{new_version_id(when)}.parquet") == when
    assert version_created_at("main/a/_/not-a-version.parquet") is None


def test_asset_keys_and_repos_convert_both_ways():
    assert repo_of("labs/lab_results") == "labs.lab_results"
    assert asset_key_of("labs.lab_results") == "labs/lab_results"
    assert asset_key_of(repo_of("team/sub/x")) == "team/sub/x"


def test_latest_versions_and_counts_per_branch(catalog):
    a1, a2, b1, dev = make_version("a", "p1"), make_version("a", "p2"), make_version("b", "p1"), \
        make_version("a", "p1", branch="dev")
    for v in (a1, a2, b1, dev):
        commit(catalog, v)
    assert [v.version_id for v in catalog.latest_versions("main", "a")] == [a1.version_id, a2.version_id]
    assert [v.version_id for v in catalog.latest_versions("main")] == [a1.version_id, a2.version_id, b1.version_id]
    assert catalog.latest_versions("dev", "b") == []
    assert catalog.latest_counts() == {"main": 3, "dev": 1}
    assert catalog.version_count() == 4


def test_merge_versions_upserts_versions_and_edges_and_points_latest_at_the_newest(catalog):
    old, up = make_version("a", "p", sha256="1" * 64), make_version("up")
    commit(catalog, old)
    newer = make_version("a", "p", sha256="2" * 64)
    moved = make_version("a", "p", version_id=old.version_id, sha256="1" * 64, tier="hdd")
    merged = catalog.merge_versions([moved, newer, up], {(newer.version_id, up.version_id),
                                                         (newer.version_id, "gone")})
    assert merged == {"inserted": 2, "edges": {(newer.version_id, up.version_id)},
                      "dangling": {(newer.version_id, "gone")}, "latest_pointers": 2}
    assert catalog.get(old.version_id).tier == "hdd"
    assert catalog.latest_version("a", "p", "main").version_id == newer.version_id
    assert [v.version_id for v in catalog.upstreams(newer.version_id)] == [up.version_id]
    again = catalog.merge_versions([moved, newer, up], {(newer.version_id, up.version_id)})
    assert again["inserted"] == 0 and catalog.version_count() == 3


def test_a_fresh_catalog_has_every_table_whatever_was_imported_first(tmp_path):
    """Only the catalog module imported, nothing that queries requests or moves: every table exists."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    code = ("import sys; from letl.lake.catalog import Catalog; Catalog(sys.argv[1]); "
            "assert 'letl.lake.moves' not in sys.modules and 'letl.lake.requests' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, url], check=True, capture_output=True, text=True)
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert tables == {"versions", "latest", "lineage", "access_log", "query_log", "moves", "request_attempts", "pins",
                      "alembic_version"}


WRITER = """
import json, sys, time
from pathlib import Path
from letl.lake.catalog import Catalog, Version, utcnow
from letl.lake.names import new_version_id

url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
catalog = Catalog(url)  # both processes create the schema on a fresh file at about the same time
print("READY", flush=True)
while not go.exists():
    time.sleep(0.001)
ids = []
for i in range(50):
    partition = "shared" if i % 2 == 0 else name
    vid = new_version_id()
    catalog.commit_versions([(Version(
        version_id=vid, asset_key="a", branch="main", partition=partition, created_at=utcnow(),
        run_id=name, tier="ssd", storage_key=f"main/a/{partition}/{vid}.parquet", format="parquet",
        bytes=1, rows=1, sha256="0" * 64, schema_fingerprint=None, metadata={"i": i}), ())])
    ids.append(vid)
    time.sleep(0.001)  # let the other writer in between commits
print(json.dumps(ids))
"""


def test_concurrent_writers_from_two_processes(tmp_path):
    db = tmp_path / "shared.sqlite"
    url, go = f"sqlite:///{db}", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, name, str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("w1", "w2")
    ]
    ready = [proc.stdout.readline().strip() for proc in procs]
    if ready != ["READY", "READY"]:  # a writer died before committing: stop the other, show why
        for proc in procs:
            proc.kill()
        raise AssertionError([proc.communicate(timeout=60)[1] for proc in procs])
    go.touch()  # both start committing at once
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=False):
        assert proc.returncode == 0, err
    written = {name: json.loads(out) for name, (out, _) in zip(("w1", "w2"), outputs, strict=False)}

    catalog = Catalog(url)
    stored = catalog.list_versions("a")
    assert len(stored) == 100
    assert {v.version_id for v in stored} == set(written["w1"]) | set(written["w2"])
    by_partition: dict[str, list[str]] = {}
    for v in stored:
        by_partition.setdefault(v.partition, []).append(v.version_id)
    assert {p: len(ids) for p, ids in by_partition.items()} == {"shared": 50, "w1": 25, "w2": 25}
    for partition, ids in by_partition.items():
        latest = catalog.latest_version("a", partition, "main")
        assert latest.version_id == max(ids), f"latest of {partition!r} is not its newest version"
        assert catalog.version_index(latest) == len(ids) - 1
    assert catalog.latest_version("a", "w1", "main").version_id == written["w1"][-1]
    assert catalog.latest_version("a", "w2", "main").version_id == written["w2"][-1]
    with catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
