"""The latest pointers after kills, retries, concurrent publishes and names holding '/': an S3-only
client must never be sent to a deleted key, nor be left on a superseded version once anything runs again."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from letl.lake import pointers
from letl.lake.fsck import fsck
from letl.lake.moves import Mover
from tests.lake.test_pointers import object_lake, pointer, s3_only_client  # noqa: F401 (object_lake: a fixture)

KILLED_MOVE = ("import sys; from letl.lake.lake import Lake; from letl.lake.moves import Mover; "
               "Mover(Lake.from_env()).move(sys.argv[1], 'ssd', sys.argv[2])")
# A publish that dies right after its catalog commit, before it refreshes the pointers.
KILLED_PUBLISH = ("import os, sys, pandas as pd; from letl.lake import pointers; from letl.lake.lake import Lake; "
                  "pointers.refresh_versions = lambda *a: os._exit(137); "
                  "Lake.from_env().write_version('labs/pub', pd.DataFrame({'x': range(50)}), partition='2024-01-01', "
                  "tier_hint='cortx')")


@pytest.mark.parametrize("step", ["after_switch", "after_repoint"])
def test_a_move_off_the_object_tier_killed_and_retried_never_leaves_a_pointer_to_a_deleted_key(
        object_lake, objectstore, step):
    lake = object_lake
    version = lake.write_version("labs/mv", pd.DataFrame({"x": range(300)}), partition="2024-01-01", tier_hint="ssd")
    assert Mover(lake).move(version.version_id, "cortx", "onto").state == "done"
    bucket = lake.tiers["cortx"].backend
    assert pointer(lake, "labs/mv", partition="2024-01-01")["on_this_store"] is True

    died = subprocess.run([sys.executable, "-c", KILLED_MOVE, version.version_id, "off"],
                          env={**os.environ, "LETL_FAILPOINT": step})
    assert died.returncode == 137
    at_kill = pointer(lake, "labs/mv", partition="2024-01-01")
    if at_kill["on_this_store"]:  # killed before the refresh: the key it names still holds the version
        assert bucket.exists(version.storage_key)

    retried = Mover(lake).move(version.version_id, "ssd", "off")
    assert retried.state == "done"
    assert not bucket.exists(version.storage_key)
    after = pointer(lake, "labs/mv", partition="2024-01-01")
    assert (after["version_id"], after["on_this_store"], after["key"]) == (version.version_id, False, None)
    assert s3_only_client(objectstore, bucket, "labs.mv") == [
        {"partition": "2024-01-01", "version_id": version.version_id, "here": False}]


def test_fsck_settling_a_killed_move_points_away_from_the_key_it_deletes(object_lake):
    lake = object_lake
    version = lake.write_version("labs/mvf", pd.DataFrame({"x": range(30)}), tier_hint="cortx")
    died = subprocess.run([sys.executable, "-c", KILLED_MOVE, version.version_id, "off-f"],
                          env={**os.environ, "LETL_FAILPOINT": "after_switch"})
    assert died.returncode == 137
    report = fsck(lake, grace_seconds=0)
    assert report["moves"] == {"off-f": "finished"}
    assert report["pointers"] == {"written": [], "removed": [], "failed": []}  # the settle already pointed away
    assert pointer(lake, "labs/mvf")["on_this_store"] is False


def test_a_publish_killed_after_its_commit_is_pointed_to_by_the_next_publish(object_lake, objectstore):
    lake = object_lake
    old = lake.write_version("labs/pub", pd.DataFrame({"x": range(10)}), partition="2024-01-01", tier_hint="cortx")
    died = subprocess.run([sys.executable, "-c", KILLED_PUBLISH])
    assert died.returncode == 137
    new = lake.latest("labs/pub", "2024-01-01")
    assert new.version_id != old.version_id and new.rows == 50  # committed, but the pointer never followed
    assert pointer(lake, "labs/pub", partition="2024-01-01")["version_id"] == old.version_id

    lake.write_version("labs/other", pd.DataFrame({"x": [1]}), tier_hint="ssd")  # any later publish takes it up
    seen = s3_only_client(objectstore, lake.tiers["cortx"].backend, "labs.pub")
    assert [(r["version_id"], r["sha256_ok"]) for r in seen] == [(new.version_id, True)]
    assert list((lake.config.home / pointers.PENDING_DIR).glob("*.json")) == []


def test_a_concurrent_refresh_does_not_take_up_a_publish_that_has_not_committed_yet(object_lake, monkeypatch):
    lake = object_lake
    old = lake.write_version("labs/race", pd.DataFrame({"x": [1]}), tier_hint="cortx")
    real_commit = lake.catalog.commit_versions

    def another_publish_first(*args, **kwargs):
        monkeypatch.setattr(lake.catalog, "commit_versions", real_commit)
        lake.write_version("labs/racer", pd.DataFrame({"x": [2]}), tier_hint="cortx")  # refreshes meanwhile
        done = real_commit(*args, **kwargs)
        monkeypatch.setattr(pointers, "refresh_versions", lambda *a: None)  # then this publish dies
        return done

    monkeypatch.setattr(lake.catalog, "commit_versions", another_publish_first)
    new = lake.write_version("labs/race", pd.DataFrame({"x": [3]}), tier_hint="cortx")
    monkeypatch.undo()
    assert pointer(lake, "labs/race")["version_id"] == old.version_id
    assert len(list((lake.config.home / pointers.PENDING_DIR).glob("*.json"))) == 1  # still announced

    lake.write_version("labs/later", pd.DataFrame({"x": [4]}), tier_hint="ssd")
    assert pointer(lake, "labs/race")["version_id"] == new.version_id


def test_a_failed_commit_withdraws_its_announcement(object_lake, monkeypatch):
    lake = object_lake

    def refused(*args, **kwargs):
        raise RuntimeError("catalog refused the commit")

    monkeypatch.setattr(lake.catalog, "commit_versions", refused)
    with pytest.raises(RuntimeError, match="refused"):
        lake.write_version("labs/nocommit", pd.DataFrame({"x": [1]}), tier_hint="cortx")
    assert list((lake.config.home / pointers.PENDING_DIR).glob("*.json")) == []


def test_branches_and_partitions_holding_a_slash_get_pointers_of_their_own(object_lake, objectstore):
    lake = object_lake
    feature = lake.write_version("labs/slash", pd.DataFrame({"x": [1]}), partition="p", branch="main/x",
                                 tier_hint="cortx")
    nested = lake.write_version("labs/slash", pd.DataFrame({"x": [2, 3]}), partition="x/p", tier_hint="cortx")
    assert pointers.pointer_key("labs/slash", "main/x", "p") != pointers.pointer_key("labs/slash", "main", "x/p")
    assert pointer(lake, "labs/slash", "main/x", "p")["version_id"] == feature.version_id
    assert pointer(lake, "labs/slash", "main", "x/p")["version_id"] == nested.version_id

    backend = lake.tiers["cortx"].backend
    assert [r["version_id"] for r in s3_only_client(objectstore, backend, "labs.slash")] == [nested.version_id]
    assert [r["version_id"] for r in s3_only_client(objectstore, backend, "labs.slash", "main/x")] == [
        feature.version_id]


def test_a_long_nested_partition_still_gets_a_valid_pointer_key_of_its_own():
    long_a, long_b = "a" * 150 + "/" + "b" * 150, "a" * 150 + "/" + "b" * 149 + "c"
    keys = {pointers.pointer_key("labs/long", "main", p) for p in (long_a, long_b)}
    assert len(keys) == 2 and all(max(len(part) for part in key.split("/")) <= 200 for key in keys)


def test_fsck_removes_pointers_in_the_old_key_format_and_writes_the_new(object_lake):
    lake = object_lake
    version = lake.write_version("labs/oldfmt", pd.DataFrame({"x": [1]}), partition="a/b", tier_hint="cortx")
    store = pointers.manifest_store(lake, "cortx")
    new_key = pointers.pointer_key("labs/oldfmt", "main", "a/b")
    old_key = "latest/labs.oldfmt/main/a/b.json"  # what releases before the segment encoding wrote
    store.replace(old_key, store.open(new_key).read())
    store.delete(new_key)

    assert fsck(lake, grace_seconds=0)["pointers"] == {
        "written": [f"cortx:{new_key}"], "removed": [f"cortx:{old_key}"], "failed": []}
    assert not store.exists(old_key)
    assert pointer(lake, "labs/oldfmt", partition="a/b")["version_id"] == version.version_id


def test_a_pointer_says_the_access_level_the_version_declares(object_lake):
    lake = object_lake
    lake.write_version("labs/open", pd.DataFrame({"x": [1]}), tier_hint="cortx",
                       metadata={"dataset": {"access": "deidentified"}})
    lake.write_version("labs/closed", pd.DataFrame({"x": [1]}), tier_hint="cortx")
    assert pointer(lake, "labs/open")["access"] == "deidentified"
    assert pointer(lake, "labs/closed")["access"] == "restricted"  # declaring nothing is restricted
