"""Catalog: immutable versions, latest pointers, lineage and the access log."""

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from letl.lake.catalog import Catalog, Version, utcnow
from letl.lake.lake import new_version_id


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


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")


def test_commit_sets_latest_and_round_trips_fields(catalog):
    v = make_version(partition="2024-01", metadata={"placement": "hint", "n": [1, 2]})
    assert catalog.latest_version("a", "2024-01", "main") is None
    catalog.commit_version(v)
    assert catalog.latest_version("a", "2024-01", "main") == v
    assert catalog.get(v.version_id) == v
    assert catalog.get("no-such-version") is None
    assert catalog.latest_version("a", "", "main") is None
    assert catalog.latest_version("a", "2024-01", "dev") is None
    assert catalog.latest_ids() == {v.version_id}


def test_second_version_moves_latest_and_keeps_the_first(catalog):
    first, second = make_version(sha256="1" * 64), make_version(sha256="2" * 64)
    catalog.commit_version(first)
    catalog.commit_version(second)
    assert catalog.latest_version("a", "", "main").version_id == second.version_id
    assert [v.version_id for v in catalog.list_versions("a")] == [first.version_id, second.version_id]
    assert catalog.get(first.version_id) == first
    assert catalog.latest_ids() == {second.version_id}


def test_duplicate_version_id_is_refused_and_latest_unchanged(catalog):
    v = make_version()
    catalog.commit_version(v)
    with pytest.raises(sa.exc.IntegrityError):
        catalog.commit_version(make_version(version_id=v.version_id, sha256="9" * 64))
    assert catalog.get(v.version_id).sha256 == "0" * 64
    assert len(catalog.list_versions()) == 1


def test_list_versions_filters(catalog):
    a1, a2 = make_version("a", "p1"), make_version("a", "p2")
    b1, dev = make_version("b", "p1"), make_version("a", "p1", branch="dev")
    for v in (a1, a2, b1, dev):
        catalog.commit_version(v)
    assert {v.version_id for v in catalog.list_versions("a")} == {a1.version_id, a2.version_id, dev.version_id}
    assert [v.version_id for v in catalog.list_versions("a", "p1", "main")] == [a1.version_id]
    assert [v.version_id for v in catalog.list_versions(partition="p1", branch="dev")] == [dev.version_id]
    assert catalog.latest_version("a", "p1", "dev").version_id == dev.version_id
    assert catalog.latest_version("a", "p1", "main").version_id == a1.version_id


def test_lineage_upstreams_and_downstreams(catalog):
    left, right = make_version("left"), make_version("right")
    catalog.commit_version(left)
    catalog.commit_version(right)
    joined = make_version("joined")
    catalog.commit_version(joined, [left.version_id, right.version_id, left.version_id])
    report = make_version("report")
    catalog.commit_version(report, [joined.version_id])
    assert {v.version_id for v in catalog.upstreams(joined.version_id)} == {left.version_id, right.version_id}
    assert [v.version_id for v in catalog.downstreams(left.version_id)] == [joined.version_id]
    assert [v.version_id for v in catalog.downstreams(joined.version_id)] == [report.version_id]
    assert [v.version_id for v in catalog.upstreams(report.version_id)] == [joined.version_id]
    assert catalog.upstreams(left.version_id) == []
    assert catalog.downstreams(report.version_id) == []


def test_commit_with_unknown_upstream_commits_nothing(catalog):
    v = make_version()
    with pytest.raises(sa.exc.IntegrityError):
        catalog.commit_version(v, ["not-a-version"])
    assert catalog.get(v.version_id) is None
    assert catalog.latest_version("a", "", "main") is None


def test_access_log_count_and_loaded_in_step(catalog):
    up1, up2, other = make_version("up1"), make_version("up2"), make_version("other")
    for v in (up1, up2, other):
        catalog.commit_version(v)
    catalog.record_access(up2.version_id, "load", run_id="r1", step_key="down", user="u", host="h")
    catalog.record_access(up1.version_id, "load", run_id="r1", step_key="down")
    catalog.record_access(up1.version_id, "load", run_id="r1", step_key="down")
    catalog.record_access(other.version_id, "read", run_id="r1", step_key="down")
    catalog.record_access(other.version_id, "load", run_id="r2", step_key="down")
    catalog.record_access(other.version_id, "load", run_id="r1", step_key="elsewhere")
    assert catalog.loaded_in_step("r1", "down") == sorted([up1.version_id, up2.version_id])
    assert catalog.loaded_in_step("r2", "down") == [other.version_id]
    assert catalog.loaded_in_step("r3", "down") == []
    assert catalog.access_count(up1.version_id) == 2
    assert catalog.access_count(up2.version_id) == 1
    assert catalog.access_count(other.version_id) == 3


def test_latest_never_moves_back_to_an_older_version(catalog):
    """A writer that took its id first but commits last (a slow put) must not hide the newer version."""
    older_id, newer_id = new_version_id(), new_version_id()
    newer = make_version(version_id=newer_id, sha256="2" * 64)
    older = make_version(version_id=older_id, sha256="1" * 64, created_at=newer.created_at - timedelta(seconds=1))
    catalog.commit_version(newer)
    catalog.commit_version(older)
    latest = catalog.latest_version("a", "", "main")
    assert latest.version_id == newer_id
    assert catalog.version_index(latest) == 1
    assert [v.version_id for v in catalog.list_versions("a")] == [older_id, newer_id]


def test_version_index_orders_by_age_within_a_partition(catalog):
    base = utcnow()
    ids = [f"{base + timedelta(seconds=i):%Y%m%dT%H%M%S%fZ}-0000000{i}" for i in range(3)]
    committed = [make_version("a", "p", vid) for vid in reversed(ids)]  # commit newest first
    for v in committed:
        catalog.commit_version(v)
    catalog.commit_version(make_version("a", "q", f"{base - timedelta(days=1):%Y%m%dT%H%M%S%fZ}-00000000"))
    catalog.commit_version(make_version("b", "p", f"{base - timedelta(days=1):%Y%m%dT%H%M%S%fZ}-00000001"))
    assert [catalog.version_index(catalog.get(vid)) for vid in ids] == [0, 1, 2]


def test_new_version_ids_sort_by_creation():
    ids = [new_version_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert sorted(ids, key=lambda i: i[:22]) == ids


WRITER = """
import json, sys, time
from pathlib import Path
from letl.lake.catalog import Catalog, Version, utcnow
from letl.lake.lake import new_version_id

url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
catalog = Catalog(url)  # both processes create the schema on a fresh file at about the same time
print("READY", flush=True)
while not go.exists():
    time.sleep(0.001)
ids = []
for i in range(50):
    partition = "shared" if i % 2 == 0 else name
    vid = new_version_id()
    catalog.commit_version(Version(
        version_id=vid, asset_key="a", branch="main", partition=partition, created_at=utcnow(),
        run_id=name, tier="ssd", storage_key=f"main/a/{partition}/{vid}.parquet", format="parquet",
        bytes=1, rows=1, sha256="0" * 64, schema_fingerprint=None, metadata={"i": i}))
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
