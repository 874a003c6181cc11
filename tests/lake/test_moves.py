"""Moves between tiers: verified, idempotent, and safe against a kill at every step."""

import hashlib
import io
import os
import subprocess
import sys

import pandas as pd
import pytest

from letl.lake.errors import VerificationFailed
from letl.lake.fsck import fsck
from letl.lake.lake import Lake
from letl.lake.moves import MoveConflict, Mover


@pytest.fixture
def version(lake):
    up = lake.write_version("labs/up", pd.DataFrame({"a": range(1000)}), partition="2024-01-01", tier_hint="pmem")
    down = lake.write_version("labs/down", pd.DataFrame({"b": [1]}), partition="2024-01-01", upstream_ids=[up.version_id])
    return up, down


def stored(lake, tier, key) -> bytes | None:
    backend = lake.tiers[tier].backend
    if not backend.exists(key):
        return None
    with backend.open(key) as f:
        return f.read()


def test_move_copies_verifies_switches_and_deletes(lake, version):
    up, down = version
    before = stored(lake, "pmem", up.storage_key)
    result = Mover(lake).move(up.version_id, "hdd", "req-1")
    assert (result.state, result.src_tier, result.dst_tier, result.bytes) == ("done", "pmem", "hdd", up.bytes)
    moved = lake.catalog.get(up.version_id)
    assert moved.tier == "hdd" and moved.sha256 == up.sha256
    assert stored(lake, "hdd", up.storage_key) == before
    assert stored(lake, "pmem", up.storage_key) is None
    # Lineage and the latest pointer follow the version id, not the tier.
    assert lake.latest("labs/up", "2024-01-01").version_id == up.version_id
    assert [u.version_id for u in lake.catalog.upstreams(down.version_id)] == [up.version_id]
    assert lake.read_table(moved).num_rows == 1000


def test_repeated_request_returns_first_result_and_does_nothing(lake, version):
    up, _ = version
    mover = Mover(lake)
    first = mover.move(up.version_id, "hdd", "req-1")
    again = mover.move(up.version_id, "hdd", "req-1")
    assert again.repeated and (again.state, again.bytes, again.seconds) == (first.state, first.bytes, first.seconds)
    with pytest.raises(MoveConflict, match="req-1"):
        mover.move(up.version_id, "ssd", "req-1")
    assert lake.catalog.get(up.version_id).tier == "hdd"


def test_destination_holding_other_bytes_is_refused(lake, version):
    up, _ = version
    lake.tiers["hdd"].backend.put(up.storage_key, io.BytesIO(b"someone else's data"))
    with pytest.raises(MoveConflict, match="different data"):
        Mover(lake).move(up.version_id, "hdd", "req-2")
    assert lake.catalog.get(up.version_id).tier == "pmem"
    assert hashlib.sha256(stored(lake, "pmem", up.storage_key)).hexdigest() == up.sha256
    assert stored(lake, "hdd", up.storage_key) == b"someone else's data"
    assert Mover(lake).get("req-2").state == "rolled_back"


def test_corrupted_source_is_not_moved(lake, version):
    up, _ = version
    path = lake.local_path(up)
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    with pytest.raises(VerificationFailed, match="sha256"):
        Mover(lake).move(up.version_id, "ssd", "req-3")
    assert lake.catalog.get(up.version_id).tier == "pmem"
    assert stored(lake, "ssd", up.storage_key) is None


def test_unknown_tier_and_version_fail_clearly(lake, version):
    up, _ = version
    with pytest.raises(ValueError, match="unknown tier 'tape'"):
        Mover(lake).move(up.version_id, "tape", "r")
    with pytest.raises(FileNotFoundError, match="no version"):
        Mover(lake).move("nope", "hdd", "r")


@pytest.mark.parametrize("step", ["after_start", "after_copy", "after_verify", "after_switch"])
def test_kill_at_every_step_leaves_a_complete_copy_and_fsck_settles_it(lake, version, step, letl_env):
    up, _ = version
    code = "import sys; from letl.lake.lake import Lake; from letl.lake.moves import Mover; " \
           "Mover(Lake.from_env()).move(sys.argv[1], 'hdd', 'req-kill')"
    died = subprocess.run([sys.executable, "-c", code, up.version_id], env={**os.environ, "LETL_FAILPOINT": step})
    assert died.returncode == 137

    lake = Lake.from_env()
    pointed = lake.catalog.get(up.version_id)
    assert pointed.tier == ("hdd" if step == "after_switch" else "pmem")
    assert hashlib.sha256(stored(lake, pointed.tier, up.storage_key)).hexdigest() == up.sha256
    assert Mover(lake).get("req-kill").state in ("started", "copied", "switched")

    report = fsck(lake, grace_seconds=0)
    assert report["moves"] == {"req-kill": "finished" if step == "after_switch" else "rolled back"}
    assert report["missing"] == []
    other = "pmem" if pointed.tier == "hdd" else "hdd"
    assert stored(lake, other, up.storage_key) is None

    retried = Mover(lake).move(up.version_id, "hdd", "req-kill")
    assert retried.state == "done"
    assert lake.catalog.get(up.version_id).tier == "hdd"
    assert hashlib.sha256(stored(lake, "hdd", up.storage_key)).hexdigest() == up.sha256


def test_fsck_removes_old_orphans_and_keeps_young_ones(lake, version):
    old_key = "main/labs/up/2024-01-01/20200101T000000000000Z-deadbeef.parquet"
    young_key = f"main/labs/up/2024-01-01/{lake.catalog.get(version[0].version_id).version_id[:-8]}cafebabe.parquet"
    ssd = lake.tiers["ssd"].backend
    ssd.put(old_key, io.BytesIO(b"orphan"))
    ssd.put(young_key, io.BytesIO(b"in flight"))
    dry = fsck(lake, dry_run=True)
    assert dry["orphans"] == [f"ssd:{old_key}"] and ssd.exists(old_key)
    report = fsck(lake)
    assert report["orphans"] == [f"ssd:{old_key}"] and report["kept_young"] == [f"ssd:{young_key}"]
    assert not ssd.exists(old_key) and ssd.exists(young_key)
    assert all(lake.tiers[v.tier].backend.exists(v.storage_key) for v in lake.catalog.list_versions())


def test_write_brings_an_outside_file_in_exactly_once(lake, tmp_path):
    source = tmp_path / "scan.png"
    source.write_bytes(b"\x89PNG fake image bytes")
    mover = Mover(lake)
    first = mover.write(str(source), "imaging/scans", "hdd", "w-1")
    version = lake.catalog.get(first.version_id)
    assert (first.state, first.src_tier, first.dst_tier) == ("done", "external", "hdd")
    assert (version.asset_key, version.tier, version.format, version.rows) == ("imaging/scans", "hdd", "png", None)
    assert stored(lake, "hdd", version.storage_key) == source.read_bytes() and source.exists()
    again = mover.write(str(source), "imaging/scans", "hdd", "w-1")
    assert again.repeated and again.version_id == first.version_id
    assert len(lake.catalog.list_versions("imaging/scans")) == 1
    with pytest.raises(MoveConflict):
        mover.write(str(source), "imaging/other", "hdd", "w-1")
    with pytest.raises(FileNotFoundError, match="no such source"):
        mover.write(str(tmp_path / "missing.csv"), "imaging/scans", "hdd", "w-2")


def test_write_lands_on_the_named_tier_even_when_the_bytes_exist_elsewhere(lake, tmp_path):
    source = tmp_path / "same.bin"
    source.write_bytes(b"identical bytes")
    mover = Mover(lake)
    first = mover.write(str(source), "raw/blobs", "hdd", "w-a")
    second = mover.write(str(source), "raw/blobs", "ssd", "w-b")
    assert (first.dst_tier, second.dst_tier) == ("hdd", "ssd") and first.version_id != second.version_id
    assert mover.write(str(source), "raw/blobs", "ssd", "w-b").repeated
    assert list((lake.config.staging).glob("*")) == []
    with pytest.raises(ValueError):
        mover.write(str(source), "raw/blobs", "tape", "w-c")
    assert list((lake.config.staging).glob("*")) == []


def test_fsck_refuses_to_treat_everything_as_orphans_when_the_catalog_is_lost(letl_env, version):
    catalog_file = letl_env["home"] / "catalog.sqlite"
    for suffix in ("", "-wal", "-shm"):
        catalog_file.with_name(catalog_file.name + suffix).unlink(missing_ok=True)
    lake = Lake.from_env()
    with pytest.raises(RuntimeError, match="catalog rebuild"):
        fsck(lake, grace_seconds=0)
    assert len(list(lake.tiers["pmem"].backend.keys())) == 2  # nothing was deleted
