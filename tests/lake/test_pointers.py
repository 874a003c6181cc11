"""An S3-only client finds, downloads and verifies the latest version of a dataset from the object tier
alone (the latest pointers and the objects' metadata), run the way such a user runs it: boto3 (and
awscli where it is installed) in a process of its own, with only the endpoint and the credentials."""

import json
import logging
import os
import subprocess
import sys

import pandas as pd
import pytest

from letl.lake import pointers
from letl.lake.fsck import fsck
from letl.lake.lake import Lake
from letl.lake.moves import Mover
from letl.storage.s3 import S3Backend

# What the README shows: no LETL import, nothing but boto3, the endpoint and the keys.
CLIENT = r"""
import hashlib, json, os, sys
import boto3
from botocore.config import Config

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], config=Config(s3={"addressing_style": "path"}))
bucket, prefix, dataset, branch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]  # dataset as a repo: labs.x
segment = branch.replace("=", "=3D").replace("/", "=2F")
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}.gros/latest/{dataset}/{segment}/",
                                                      Delimiter="/")
found = []
for entry in (entry for page in pages for entry in page.get("Contents", [])):
    pointer = json.load(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"])
    if pointer["branch"] != branch:
        continue
    result = {"partition": pointer["partition"], "version_id": pointer["version_id"], "here": pointer["on_this_store"]}
    if pointer["on_this_store"]:
        obj = s3.get_object(Bucket=pointer["bucket"], Key=pointer["key"])
        data = obj["Body"].read()
        result["sha256_ok"] = hashlib.sha256(data).hexdigest() == obj["Metadata"]["letl-sha256"] == pointer["sha256"]
        result["metadata"] = obj["Metadata"]
        result["bytes"] = len(data)
    found.append(result)
assert not any(name.split(".")[0] == "letl" for name in sys.modules), "the client must not need LETL"
print(json.dumps(found))
"""


def s3_only_client(info, backend: S3Backend, dataset: str, branch: str = "main") -> list[dict]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "S3_ENDPOINT": info.endpoint,
           "AWS_ACCESS_KEY_ID": info.access_key, "AWS_SECRET_ACCESS_KEY": info.secret_key,
           "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", CLIENT, backend.bucket, backend.prefix.rstrip("/"), dataset, branch],
                          env=env, capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr
    return sorted(json.loads(done.stdout), key=lambda r: r["partition"])


@pytest.fixture
def object_lake(letl_env, objectstore, object_tier):
    object_tier(objectstore)
    return Lake.from_env()


def pointer(lake, asset_key: str, branch: str = "main", partition: str = "") -> dict | None:
    store = pointers.manifest_store(lake, "cortx")
    key = pointers.pointer_key(asset_key, branch, partition)
    if not store.exists(key):
        return None
    with store.open(key) as f:
        return json.loads(f.read())


def test_an_s3_only_client_finds_and_verifies_the_latest_version_and_follows_publishes_and_moves(
        object_lake, objectstore):
    lake = object_lake
    backend = lake.tiers["cortx"].backend
    first = lake.write_version("labs/ptr", pd.DataFrame({"x": range(100)}), partition="2024-01-01", tier_hint="cortx")
    other = lake.write_version("labs/ptr", pd.DataFrame({"x": range(5)}), partition="2024-02-01", tier_hint="cortx")

    seen = s3_only_client(objectstore, backend, "labs.ptr")
    assert [(r["partition"], r["version_id"], r["sha256_ok"]) for r in seen] == [
        ("2024-01-01", first.version_id, True), ("2024-02-01", other.version_id, True)]
    assert seen[0]["metadata"] == {"letl-dataset": "labs/ptr", "letl-branch": "main", "letl-partition": "2024-01-01",
                                   "letl-version": first.version_id, "letl-sha256": first.sha256}
    assert seen[0]["bytes"] == first.bytes

    second = lake.write_version("labs/ptr", pd.DataFrame({"x": range(200)}), partition="2024-01-01", tier_hint="cortx")
    seen = s3_only_client(objectstore, backend, "labs.ptr")
    assert [(r["partition"], r["version_id"], r["sha256_ok"]) for r in seen] == [
        ("2024-01-01", second.version_id, True), ("2024-02-01", other.version_id, True)]
    assert backend.exists(first.storage_key), "the superseded object is still there: only the pointer tells them apart"

    assert Mover(lake).move(second.version_id, "hdd", "off-the-object-tier").state == "done"
    seen = s3_only_client(objectstore, backend, "labs.ptr")
    assert seen[0] == {"partition": "2024-01-01", "version_id": second.version_id, "here": False}  # no key to read
    ptr = pointer(lake, "labs/ptr", partition="2024-01-01")
    assert (ptr["on_this_store"], ptr["bucket"], ptr["key"], ptr["sha256"]) == (
        False, None, None, second.sha256)

    assert Mover(lake).move(second.version_id, "cortx", "back-onto-it").state == "done"
    seen = s3_only_client(objectstore, backend, "labs.ptr")
    assert (seen[0]["version_id"], seen[0]["sha256_ok"], seen[0]["metadata"]["letl-sha256"]) == (
        second.version_id, True, second.sha256)


def test_a_version_published_on_another_tier_gives_the_pointer_no_key(object_lake, objectstore):
    lake = object_lake
    lake.write_version("labs/hot", pd.DataFrame({"x": [1]}), tier_hint="cortx")
    hot = lake.write_version("labs/hot", pd.DataFrame({"x": [2]}), tier_hint="ssd")
    assert s3_only_client(objectstore, lake.tiers["cortx"].backend, "labs.hot") == [
        {"partition": "", "version_id": hot.version_id, "here": False}]


def test_a_pointer_that_cannot_be_written_loses_no_publish_and_heals_on_the_next(object_lake, monkeypatch, caplog):
    lake = object_lake
    store = pointers.manifest_store(lake, "cortx")
    real = S3Backend.replace

    def refused(self, key, data, labels=None):
        raise ConnectionError("pointer store refused the write")

    monkeypatch.setattr(S3Backend, "replace", refused)
    with caplog.at_level(logging.WARNING, logger="letl"):
        lost = lake.write_version("labs/heal", pd.DataFrame({"x": [1]}), partition="2024-01-01", tier_hint="cortx")
    assert lake.latest("labs/heal", "2024-01-01").version_id == lost.version_id  # the publish stands
    assert "latest pointer of labs/heal (branch main, partition 2024-01-01) not written" in caplog.text
    assert not store.exists(pointers.pointer_key("labs/heal", "main", "2024-01-01"))
    assert len(list((lake.config.home / pointers.PENDING_DIR).glob("*.json"))) == 1

    monkeypatch.setattr(S3Backend, "replace", real)
    lake.write_version("labs/heal", pd.DataFrame({"x": [2]}), partition="2024-02-01", tier_hint="cortx")
    # healed by the next publish of another partition
    assert pointer(lake, "labs/heal", partition="2024-01-01")["version_id"] == lost.version_id
    assert list((lake.config.home / pointers.PENDING_DIR).glob("*.json")) == []


def test_fsck_rewrites_damaged_pointers_and_removes_stale_ones(object_lake):
    lake = object_lake
    version = lake.write_version("labs/fix", pd.DataFrame({"x": [1]}), tier_hint="cortx")
    store = pointers.manifest_store(lake, "cortx")
    key = pointers.pointer_key("labs/fix", "main", "")
    store.replace(key, b"{not json")
    stale = pointers.pointer_key("labs/gone", "main", "2023-01-01")
    store.replace(stale, b"{}")

    dry = fsck(lake, dry_run=True)["pointers"]
    assert dry == {"written": [f"cortx:{key}"], "removed": [f"cortx:{stale}"], "failed": []}
    assert store.exists(stale)
    assert fsck(lake, grace_seconds=0)["pointers"] == dry
    assert pointer(lake, "labs/fix")["version_id"] == version.version_id
    assert not store.exists(stale)
    assert fsck(lake, grace_seconds=0)["pointers"] == {"written": [], "removed": [], "failed": []}


def test_a_lake_without_an_object_tier_writes_no_pointer(lake):
    lake.write_version("labs/local", pd.DataFrame({"x": [1]}))
    assert pointers.object_tiers(lake) == []
    assert fsck(lake, grace_seconds=0)["pointers"] == {"written": [], "removed": [], "failed": []}
    assert not (lake.config.home / pointers.PENDING_DIR).exists()


def test_a_damaged_source_moved_onto_the_object_tier_stores_nothing_there(object_lake):
    from letl.lake.errors import VerificationFailed

    lake = object_lake
    version = lake.write_version("labs/bad", pd.DataFrame({"x": range(1000)}), tier_hint="ssd")
    path = lake.tiers["ssd"].backend.local_path(version.storage_key)
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(damaged))
    with pytest.raises(VerificationFailed, match="do not match the sha256 declared"):
        Mover(lake).move(version.version_id, "cortx", "damaged-1")
    assert not lake.tiers["cortx"].backend.exists(version.storage_key)
    assert lake.catalog.get(version.version_id).tier == "ssd"
    assert Mover(lake).get("damaged-1").state == "rolled_back"


def test_with_the_object_store_down_publishes_stand_warn_once_and_heal_when_it_is_back(
        letl_env, objectstore, object_tier, monkeypatch, caplog, s3_retries_without_backoff):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    object_tier(objectstore, prefix="down-then-up")
    monkeypatch.setenv("LETL_S3_ENDPOINT", f"http://127.0.0.1:{closed}")
    down = Lake.from_env()
    with caplog.at_level(logging.WARNING, logger="letl"):
        early = [down.write_version("labs/down", pd.DataFrame({"x": [n]}), partition=p, tier_hint="ssd")
                 for n, p in ((1, "2024-01-01"), (2, "2024-02-01"))]
    assert [r.getMessage().startswith("latest pointers not written") for r in caplog.records
            if "pointer" in r.getMessage()] == [True]
    assert len(list((down.config.home / pointers.PENDING_DIR).glob("*.json"))) == 2

    monkeypatch.setenv("LETL_S3_ENDPOINT", objectstore.endpoint)
    up = Lake.from_env()
    late = up.write_version("labs/down", pd.DataFrame({"x": [3]}), partition="2024-03-01", tier_hint="ssd")
    for version in [*early, late]:
        assert pointer(up, "labs/down", partition=version.partition)["version_id"] == version.version_id
    assert list((up.config.home / pointers.PENDING_DIR).glob("*.json")) == []
