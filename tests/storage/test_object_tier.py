"""The 'cortx' object tier inside the lake, against real SeaweedFS servers on 127.0.0.1."""

import hashlib

import pandas as pd
import pytest

from letl.devstore import server as store
from letl.lake.errors import NoRoom, TierUnavailable
from letl.lake.fsck import fsck
from letl.lake.lake import Lake
from letl.lake.moves import Mover
from letl.storage import transfer


def object_bytes(lake, version) -> bytes:
    with lake.tiers["cortx"].backend.open(version.storage_key) as f:
        return f.read()


def test_versions_written_to_and_moved_through_the_object_tier(letl_env, objectstore, object_tier, monkeypatch):
    object_tier(objectstore)
    lake = Lake.from_env()
    assert list(lake.tiers) == ["pmem", "ssd", "hdd", "cortx"]
    frame = pd.DataFrame({"x": range(5000)})
    version = lake.write_version("labs/obj", frame, partition="2024-01-01", tier_hint="cortx")
    assert version.tier == "cortx"
    assert hashlib.sha256(object_bytes(lake, version)).hexdigest() == version.sha256
    assert lake.local_path(version).is_relative_to(letl_env["home"] / "cache")  # DuckDB reads a local copy
    assert lake.read_table(version).to_pandas().equals(frame)

    mover = Mover(lake)
    assert mover.move(version.version_id, "hdd", "obj-1").state == "done"
    assert not lake.tiers["cortx"].backend.exists(version.storage_key)
    assert mover.move(version.version_id, "cortx", "obj-2").state == "done"
    assert lake.catalog.get(version.version_id).tier == "cortx"
    assert hashlib.sha256(object_bytes(lake, version)).hexdigest() == version.sha256
    assert not lake.tiers["hdd"].backend.exists(version.storage_key)
    assert fsck(lake, grace_seconds=0)["missing"] == []


def test_unreachable_object_tier_is_skipped_by_placement(letl_env, monkeypatch, s3_retries_without_backoff):
    monkeypatch.setenv("LETL_S3_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", "s3://letl/lake")
    for name in ("PMEM", "SSD", "HDD"):
        monkeypatch.setenv(f"LETL_TIER_{name}_QUOTA", "1KB")
    lake = Lake.from_env()
    assert "unavailable" in lake.tiers["cortx"].unavailable()
    with pytest.raises(NoRoom, match="no tier among .* unreachable: tier cortx"):
        lake.choose_tier(10_000)
    monkeypatch.delenv("LETL_TIER_HDD_QUOTA")
    assert Lake.from_env().choose_tier(10_000)[0] == "hdd"


def test_server_down_mid_move_leaves_the_catalog_unchanged_and_a_retry_succeeds(letl_env, object_tier, monkeypatch, tmp_path,
                                                                                 s3_retries_without_backoff):
    home = tmp_path / "own-server"
    info = store.up(home)
    try:
        object_tier(info, prefix="down-test")
        lake = Lake.from_env()
        version = lake.write_version("labs/down", pd.DataFrame({"x": range(100_000)}), tier_hint="ssd")
        real_blocks = transfer.HashingReader.blocks

        def stop_server_once_reading_began(self):
            for n, chunk in enumerate(real_blocks(self)):
                if n == 0:
                    store.down(home)
                yield chunk

        monkeypatch.setattr(transfer.HashingReader, "blocks", stop_server_once_reading_began)
        monkeypatch.setattr(lake.tiers["cortx"].backend, "multipart_threshold", 64 * 1024, raising=False)
        monkeypatch.setattr(lake.tiers["cortx"].backend, "part_size", 5 * 1024 * 1024, raising=False)
        with pytest.raises(TierUnavailable):
            Mover(lake).move(version.version_id, "cortx", "down-1")
        assert store.status(home)["running"] is False
        assert lake.catalog.get(version.version_id).tier == "ssd"
        assert lake.read_table(lake.catalog.get(version.version_id)).num_rows == 100_000

        monkeypatch.setattr(transfer.HashingReader, "blocks", real_blocks)
        store.up(home)
        retry = Mover(Lake.from_env()).move(version.version_id, "cortx", "down-1")
        assert retry.state == "done"
        lake = Lake.from_env()
        moved = lake.catalog.get(version.version_id)
        assert moved.tier == "cortx"
        assert hashlib.sha256(object_bytes(lake, moved)).hexdigest() == version.sha256
        assert not lake.tiers["ssd"].backend.exists(version.storage_key)
    finally:
        store.down(home)
