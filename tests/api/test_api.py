"""The tiering service's HTTP API: auth, validation, writes, moves, idempotency and error codes.

Tier 'cortx' is a POSIX directory here (LETL_TIER_CORTX_PATH=<dir>), so every endpoint runs without
an object store; one test points it at a closed S3 port to see the 502, one starts a real server.
"""

import errno
import io
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from letl.api.app import create_app
from letl.cli import main as cli
from letl.lake.lake import Lake
from letl.storage.posix import PosixBackend

TOKEN = "t0ken-for-tests-at-least-32-characters"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATA = b"\x89PNG not really an image, but bytes all the same"


@pytest.fixture
def api_env(letl_env, tmp_path, monkeypatch):
    cortx = tmp_path / "cortx"
    cortx.mkdir()
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", str(cortx))
    monkeypatch.setenv("LETL_API_TOKEN", TOKEN)
    for name in ("LETL_S3_ENDPOINT", "LETL_TIERS_FILE", "LETL_FAILPOINT", "LETL_TIER_CORTX_QUOTA"):
        monkeypatch.delenv(name, raising=False)
    return {**letl_env, "cortx": cortx}


@pytest.fixture
def client(api_env):
    with TestClient(create_app(), headers=AUTH) as c:
        yield c


@pytest.fixture
def source(api_env):
    path = api_env["landing"] / "scan.png"  # the landing zone: a registered source
    path.write_bytes(DATA)
    return path


def post(client, endpoint, source_uri, destination_uri, request_id):
    body = {"source_uri": str(source_uri), "destination_uri": destination_uri, "request_id": request_id}
    return client.post(endpoint, json=body)


def stored(tier, key):
    backend = Lake.from_env().tiers[tier].backend
    if not backend.exists(key):
        return None
    with backend.open(key) as f:
        return f.read()


def tier_of(version_id):
    return Lake.from_env().catalog.get(version_id).tier


def write_on_ssd(client, source, request_id="w-1"):
    r = post(client, "/daos/ssd/write", source, "imaging.scans?partition=2024-03-01", request_id)
    assert r.status_code == 200, r.text
    return r.json()


def test_token_is_required_and_compared(api_env, monkeypatch):
    with TestClient(create_app()) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            valid = {"source_uri": "v", "destination_uri": "cortx", "request_id": "r1"}
            for r in (c.get("/tiers", headers=headers), c.get("/moves/x", headers=headers),
                      c.post("/tiering/D-C", headers=headers, json=valid),
                      c.post("/cortx/write", headers=headers, json={})):  # auth comes before validation
                assert r.status_code == 401, (headers, r.text)
                assert r.json() == {"detail": "missing or wrong bearer token"}
                assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/tiers", headers=AUTH).status_code == 200
        assert c.get("/openapi.json").status_code == 401
        spec = c.get("/openapi.json", headers=AUTH).json()
        assert {"/cortx/write", "/daos/ssd/write", "/tiering/D-C", "/tiering/C-D", "/tiers"} <= set(spec["paths"])
        assert "Mover" in spec["info"]["description"]

        monkeypatch.delenv("LETL_API_TOKEN")  # read per request: no restart needed, and never open
        for r in (c.get("/tiers", headers=AUTH), c.get("/tiers")):
            assert r.status_code == 503 and "set LETL_API_TOKEN" in r.json()["detail"]
        monkeypatch.setenv("LETL_API_TOKEN", "")
        assert c.get("/tiers", headers={"Authorization": "Bearer "}).status_code == 503


@pytest.mark.parametrize("endpoint, body", [
    ("/daos/ssd/write", {"source_uri": "/tmp/x", "destination_uri": "a.b"}),  # missing request_id
    ("/daos/ssd/write", {"source_uri": "/tmp/x", "destination_uri": "a.b", "request_id": "r", "tier": "ssd"}),
    ("/daos/ssd/write", {"source_uri": "/tmp/x", "destination_uri": "a.b", "request_id": "has space"}),
    ("/daos/ssd/write", {"source_uri": "/tmp/x", "destination_uri": "a.b", "request_id": ""}),
    ("/daos/ssd/write", {"source_uri": "/tmp/x", "destination_uri": "a.b", "request_id": "r" * 129}),
    ("/daos/ssd/write", {"source_uri": "/tmp/x", "destination_uri": "a.b", "request_id": "a/b"}),
    ("/cortx/write", {"source_uri": "/tmp/x", "destination_uri": "", "request_id": "r"}),
    ("/tiering/D-C", {"source_uri": "v", "destination_uri": 5, "request_id": "r"}),
    ("/tiering/D-C", {"source_uri": "v", "destination_uri": "ssd", "request_id": "r"}),  # wrong direction
    ("/tiering/D-C", {"source_uri": "v", "destination_uri": "s3://cortx", "request_id": "r"}),
    ("/tiering/C-D", {"source_uri": "v", "destination_uri": "cortx://", "request_id": "r"}),
    ("/tiering/C-D", {"source_uri": "v", "destination_uri": "hdd", "request_id": "r"}),
    ("/daos/ssd/write", {"source_uri": "relative/scan.png", "destination_uri": "a.b", "request_id": "r"}),
    ("/daos/ssd/write", {"source_uri": "s3://bucket/scan.png", "destination_uri": "a.b", "request_id": "r"}),
    ("/daos/ssd/write", {"source_uri": "SOURCE", "destination_uri": "bad name!", "request_id": "r"}),
    ("/daos/ssd/write", {"source_uri": "SOURCE", "destination_uri": "a.b?partition=../x", "request_id": "r"}),
    ("/daos/ssd/write", {"source_uri": "SOURCE", "destination_uri": "a.b?tier=hdd", "request_id": "r"}),
])
def test_malformed_requests_get_422_and_change_nothing(client, source, endpoint, body):
    body = {k: (str(source) if v == "SOURCE" else v) for k, v in body.items()}
    r = client.post(endpoint, json=body)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()
    assert Lake.from_env().catalog.list_versions() == []


def test_body_that_is_not_json_gets_422(client):
    r = client.post("/tiering/D-C", content=b"source_uri=x", headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_write_then_move_down_and_back(client, source, api_env):
    written = write_on_ssd(client, source)
    assert (written["state"], written["src_tier"], written["dst_tier"], written["repeated"]) == \
        ("done", "external", "ssd", False)
    assert written["bytes"] == len(DATA)
    version = Lake.from_env().catalog.get(written["version_id"])
    assert (version.asset_key, version.partition, version.tier, version.format) == \
        ("imaging/scans", "2024-03-01", "ssd", "png")
    assert stored("ssd", version.storage_key) == DATA and source.read_bytes() == DATA
    assert client.get("/moves/w-1").json() == written

    down = post(client, "/tiering/D-C", version.version_id, "cortx", "m-1")
    assert down.status_code == 200, down.text
    assert {k: down.json()[k] for k in ("version_id", "src_tier", "dst_tier", "state", "bytes", "repeated")} == \
        {"version_id": version.version_id, "src_tier": "ssd", "dst_tier": "cortx", "state": "done",
         "bytes": len(DATA), "repeated": False}
    assert tier_of(version.version_id) == "cortx"
    assert (api_env["cortx"] / version.storage_key).read_bytes() == DATA
    assert stored("ssd", version.storage_key) is None
    assert client.get("/moves/m-1").json() == down.json()

    # A dataset names its latest version; the destination may be written as a URI.
    up = post(client, "/tiering/C-D", "imaging.scans?partition=2024-03-01", "ssd://", "m-2")
    assert up.status_code == 200, up.text
    assert (up.json()["version_id"], up.json()["src_tier"], up.json()["dst_tier"]) == \
        (version.version_id, "cortx", "ssd")
    assert tier_of(version.version_id) == "ssd"
    assert stored("ssd", version.storage_key) == DATA
    assert not (api_env["cortx"] / version.storage_key).exists()
    assert client.get("/moves/m-2").json() == up.json()

    tiers = {t["name"]: t for t in client.get("/tiers").json()["tiers"]}
    assert list(tiers) == ["pmem", "ssd", "hdd", "cortx"]
    assert (tiers["ssd"]["versions"], tiers["ssd"]["used_bytes"], tiers["cortx"]["versions"]) == (1, len(DATA), 0)
    assert tiers["cortx"]["location"] == str(api_env["cortx"]) and tiers["cortx"]["available"] is True
    assert tiers["hdd"]["quota_bytes"] is None and tiers["pmem"]["quota_bytes"] == 2**30


def test_cortx_write_lands_on_cortx_and_moves_up(client, source, api_env):
    r = post(client, "/cortx/write", f"file://{source}", "team/my_dataset", "w-c")
    assert r.status_code == 200, r.text
    version = Lake.from_env().catalog.get(r.json()["version_id"])
    assert (r.json()["dst_tier"], version.tier, version.asset_key, version.partition) == \
        ("cortx", "cortx", "team/my_dataset", "")
    assert (api_env["cortx"] / version.storage_key).read_bytes() == DATA
    # Not on the DAOS/SSD tier, so D-C refuses; C-D takes it.
    refused = post(client, "/tiering/D-C", "team.my_dataset", "cortx", "m-x")
    assert refused.status_code == 409 and "not ssd" in refused.json()["detail"]
    assert client.get("/moves/m-x").status_code == 404
    assert post(client, "/tiering/C-D", "team.my_dataset", "ssd", "m-y").status_code == 200
    assert tier_of(version.version_id) == "ssd"


def test_repeated_request_id_returns_first_result_and_does_nothing(client, source, api_env):
    first = write_on_ssd(client, source)
    again = write_on_ssd(client, source)
    assert again == {**first, "repeated": True}
    assert len(Lake.from_env().catalog.list_versions()) == 1

    down = post(client, "/tiering/D-C", first["version_id"], "cortx", "m-1").json()
    repeat = post(client, "/tiering/D-C", first["version_id"], "cortx", "m-1")
    assert repeat.status_code == 200 and repeat.json() == {**down, "repeated": True}
    assert tier_of(first["version_id"]) == "cortx"
    assert client.get("/moves/m-1").json() == down  # the record itself is untouched

    # The same id for another move, or for another write: 409, and nothing moves.
    reused = post(client, "/tiering/C-D", first["version_id"], "ssd", "m-1")
    assert reused.status_code == 409 and "m-1" in reused.json()["detail"]
    other = source.with_name("other.png")
    other.write_bytes(b"other bytes")
    reused_write = post(client, "/daos/ssd/write", other, "imaging.other", "w-1")
    assert reused_write.status_code == 409
    assert tier_of(first["version_id"]) == "cortx"
    assert len(Lake.from_env().catalog.list_versions()) == 1
    assert (api_env["cortx"] / Lake.from_env().catalog.get(first["version_id"]).storage_key).read_bytes() == DATA


def test_destination_holding_other_bytes_is_refused(client, source, api_env):
    written = write_on_ssd(client, source)
    key = Lake.from_env().catalog.get(written["version_id"]).storage_key
    Lake.from_env().tiers["cortx"].backend.put(key, io.BytesIO(b"someone else's data"))
    r = post(client, "/tiering/D-C", written["version_id"], "cortx://", "m-1")
    assert r.status_code == 409 and "different data" in r.json()["detail"]
    assert tier_of(written["version_id"]) == "ssd"
    assert stored("ssd", key) == DATA
    assert (api_env["cortx"] / key).read_bytes() == b"someone else's data"
    assert client.get("/moves/m-1").json()["state"] == "rolled_back"


def test_unknown_sources_are_404(client, source):
    write_on_ssd(client, source)
    cases = [
        post(client, "/tiering/D-C", "20990101T000000000000Z-deadbeef", "cortx", "m-1"),
        post(client, "/tiering/D-C", "labs.lab_results?partition=2024-03-01", "cortx", "m-2"),
        post(client, "/tiering/C-D", "imaging.scans?partition=1999-01-01", "ssd", "m-3"),
        post(client, "/daos/ssd/write", source.with_name("missing.png"), "imaging.scans", "w-2"),
        post(client, "/cortx/write", f"file://{source.with_name('missing.png')}", "imaging.scans", "w-3"),
        client.get("/moves/never-seen"),
    ]
    for r in cases:
        assert r.status_code == 404, r.text
        assert r.json()["detail"]
    assert "no such file in the registered sources" in cases[3].json()["detail"]
    assert len(Lake.from_env().catalog.list_versions()) == 1


def test_cortx_not_configured_is_503_saying_how_to_enable_it(client, source, monkeypatch):
    monkeypatch.delenv("LETL_TIER_CORTX_PATH")
    for r in (post(client, "/cortx/write", source, "imaging.scans", "w-1"),
              post(client, "/tiering/D-C", "imaging.scans", "cortx", "m-1"),
              post(client, "/tiering/C-D", "imaging.scans", "ssd", "m-2")):
        assert r.status_code == 503 and "letl objectstore up" in r.json()["detail"]
    assert Lake.from_env().catalog.list_versions() == []
    assert write_on_ssd(client, source)["dst_tier"] == "ssd"  # the rest of the service still works
    listing = client.get("/tiers").json()
    assert [t["name"] for t in listing["tiers"]] == ["pmem", "ssd", "hdd"]
    assert any("letl objectstore up" in note for note in listing["notes"])


def test_object_store_down_is_502_and_leaves_the_catalog_unchanged(client, source, monkeypatch, s3_retries_without_backoff):
    written = write_on_ssd(client, source)
    key = Lake.from_env().catalog.get(written["version_id"]).storage_key
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", "s3://letl/lake")
    monkeypatch.setenv("LETL_S3_ENDPOINT", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", "secret")
    down = post(client, "/tiering/D-C", written["version_id"], "cortx", "m-1")
    assert down.status_code == 502 and "unreachable" in down.json()["detail"], down.text
    assert tier_of(written["version_id"]) == "ssd" and stored("ssd", key) == DATA
    assert client.get("/moves/m-1").status_code == 404  # nothing recorded: the id stays free for a retry
    other = source.with_name("other.png")
    other.write_bytes(b"other bytes")
    assert post(client, "/cortx/write", other, "imaging.other", "w-2").status_code == 502
    assert [v.version_id for v in Lake.from_env().catalog.list_versions()] == [written["version_id"]]
    cortx = {t["name"]: t for t in client.get("/tiers").json()["tiers"]}["cortx"]
    assert cortx["available"] is False and "unreachable" in cortx["unavailable_reason"]


def test_a_tier_that_cannot_be_reached_is_502_before_any_work_and_a_retry_settles_it(client, source, api_env):
    written = write_on_ssd(client, source)
    cortx = api_env["cortx"]
    cortx.rmdir()
    cortx.write_text("a file where the tier's directory should be")
    r = post(client, "/tiering/D-C", written["version_id"], "cortx", "m-1")
    assert r.status_code == 502, r.text
    assert "tier cortx" in r.json()["detail"] and "unavailable" in r.json()["detail"]
    assert "catalog is unchanged" in r.json()["detail"]
    assert tier_of(written["version_id"]) == "ssd"
    cortx.unlink()
    cortx.mkdir()
    retry = post(client, "/tiering/D-C", written["version_id"], "cortx", "m-1")
    assert retry.status_code == 200 and retry.json()["state"] == "done", retry.text
    assert tier_of(written["version_id"]) == "cortx"


def test_backend_failing_mid_move_is_502_and_a_retry_settles_it(client, source, api_env, monkeypatch):
    written = write_on_ssd(client, source)
    cortx = api_env["cortx"].absolute()
    real_put = PosixBackend.put

    def disk_error_on_cortx(self, key, stream, labels=None):
        if self.root.absolute() == cortx:
            stream.read(1 << 16)  # the copy has begun when the disk fails
            raise OSError(errno.EIO, "Input/output error")
        return real_put(self, key, stream, labels)

    monkeypatch.setattr(PosixBackend, "put", disk_error_on_cortx)
    r = post(client, "/tiering/D-C", written["version_id"], "cortx", "m-1")
    assert r.status_code == 502, r.text
    assert f"places {written['version_id']} on ssd" in r.json()["detail"]
    assert tier_of(written["version_id"]) == "ssd"
    monkeypatch.setattr(PosixBackend, "put", real_put)
    retry = post(client, "/tiering/D-C", written["version_id"], "cortx", "m-1")
    assert retry.status_code == 200 and retry.json()["state"] == "done", retry.text
    assert tier_of(written["version_id"]) == "cortx"


def test_a_parquet_source_that_is_not_parquet_is_422_naming_it(client, api_env):
    bad = api_env["landing"] / "bad.parquet"
    bad.write_bytes(b"hospital_id,result\nH001,5\n")
    r = post(client, "/cortx/write", bad, "imaging.scans?partition=2024-03-01", "w-bad")
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{bad}: not a complete Parquet file")
    assert "H001" not in r.text
    assert not Lake.from_env().catalog.list_versions()


def test_a_version_whose_object_is_gone_is_404_not_a_backend_failure(client, source):
    written = write_on_ssd(client, source)
    lake = Lake.from_env()
    lake.tiers["ssd"].backend.delete(lake.catalog.get(written["version_id"]).storage_key)
    r = post(client, "/tiering/D-C", written["version_id"], "cortx", "m-gone")
    assert r.status_code == 404, r.text
    assert "repeat the request" not in r.json()["detail"]
    assert tier_of(written["version_id"]) == "ssd"


def test_serve_refuses_to_start_without_a_token(api_env, monkeypatch, capsys):
    monkeypatch.delenv("LETL_API_TOKEN")
    assert cli.main(["serve", "--port", "1"]) == 2
    assert "set LETL_API_TOKEN" in capsys.readouterr().err


def test_letl_serve_runs_a_real_server(api_env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "letl.cli.main", "serve", "--port", str(port)],
                                env={**os.environ, "LETL_API_TOKEN": TOKEN}, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # up to about a minute, polling
            if proc.poll() is not None:
                break
            try:
                httpx.get(f"{url}/tiers", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert proc.poll() is None, log.read_text()
        r = httpx.get(f"{url}/tiers", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        assert [t["name"] for t in r.json()["tiers"]] == ["pmem", "ssd", "hdd", "cortx"]
        assert httpx.get(f"{url}/tiers", timeout=30).status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert f"127.0.0.1:{port}" in log.read_text()
