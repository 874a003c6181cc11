"""Twenty concurrent identical requests against a real uvicorn: exactly one move, exactly one version.

Every caller sends the same request_id at once (a barrier releases them together). Each answer is
the first caller's result (200, the same version), or 409 with Retry-After while it runs; never a
second piece of work, and never a restart of the live one.
"""

import hashlib
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
import uvicorn

from letl.api.app import create_app
from letl.lake.catalog import request_attempts
from letl.lake.lake import Lake

TOKEN = "t0ken-for-reliability"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLERS = 20


def outcomes(lake, request_id: str) -> list[str]:
    """How each attempt at a request ended (running while it runs), first attempt first."""
    a = request_attempts.c
    with lake.catalog.engine.begin() as conn:
        return list(conn.execute(sa.select(a.outcome).where(a.request_id == request_id).order_by(a.attempt)).scalars())



@pytest.fixture
def api_env(letl_env, tmp_path, monkeypatch):
    monkeypatch.setenv("LETL_API_TOKEN", TOKEN)
    for name in ("LETL_S3_ENDPOINT", "LETL_TIERS_FILE", "LETL_FAILPOINT", "LETL_TIER_CORTX_QUOTA",
                 "LETL_TIER_CORTX_PATH"):
        monkeypatch.delenv(name, raising=False)
    return letl_env


@pytest.fixture
def object_tier(api_env, objectstore, monkeypatch):
    monkeypatch.setenv("LETL_S3_ENDPOINT", objectstore.endpoint)
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", objectstore.access_key)
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", objectstore.secret_key)
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", f"s3://{objectstore.bucket}/rel-{uuid.uuid4().hex[:12]}")
    return objectstore


@pytest.fixture
def server(api_env):
    """A real uvicorn on a free 127.0.0.1 port, in a thread of this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(600):  # waiting for the server to listen, not asserting on time
        if uv.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=30)


def all_at_once(url: str, endpoint: str, body: dict) -> list[httpx.Response]:
    barrier = threading.Barrier(CALLERS)

    def call(_):
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
            barrier.wait()
            return client.post(endpoint, json=body)

    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(call, range(CALLERS)))


def check_answers(answers: list[httpx.Response]) -> list[dict]:
    """Every answer is the one result (200) or 'in progress' (409 + Retry-After); returns the 200 bodies."""
    ok = [r.json() for r in answers if r.status_code == 200]
    busy = [r for r in answers if r.status_code == 409]
    assert len(ok) + len(busy) == CALLERS, [(r.status_code, r.text) for r in answers]
    assert all(r.headers.get("Retry-After") for r in busy), [r.text for r in busy]
    assert ok, "no caller got the result"
    assert len({body["version_id"] for body in ok}) == 1, ok
    assert [body["repeated"] for body in ok].count(False) <= 1, ok
    assert all(body["state"] == "done" for body in ok), ok
    return ok


def test_twenty_identical_moves_make_one_move(server, object_tier):
    lake = Lake.from_env()
    frame = pd.DataFrame({"x": range(20_000)})
    version = lake.write_version("labs/race", frame, partition="2024-01-01", tier_hint="ssd")
    body = {"source_uri": version.version_id, "destination_uri": "cortx", "request_id": "move-once"}

    ok = check_answers(all_at_once(server, "/tiering/D-C", body))

    assert ok[0]["version_id"] == version.version_id
    lake = Lake.from_env()
    moved = lake.catalog.get(version.version_id)
    assert moved.tier == "cortx" and lake.intact(moved)
    assert not lake.tiers["ssd"].backend.exists(version.storage_key)
    assert lake.read_table(moved).to_pandas().equals(frame)
    assert outcomes(lake, "move-once") == ["done"]
    with httpx.Client(base_url=server, headers=AUTH) as client:
        again = client.post("/tiering/D-C", json=body)
    assert again.status_code == 200 and again.json()["repeated"] is True


def test_twenty_identical_writes_make_one_version(server, api_env):
    source = api_env["landing"] / "imaging" / "scan.png"
    source.parent.mkdir(parents=True)
    data = b"\x89PNG " + bytes(range(256)) * 4000
    source.write_bytes(data)
    body = {"source_uri": str(source), "destination_uri": "imaging.scans?partition=2024-03-01",
            "request_id": "write-once"}

    ok = check_answers(all_at_once(server, "/daos/ssd/write", body))

    lake = Lake.from_env()
    versions = lake.catalog.list_versions("imaging/scans")
    assert [v.version_id for v in versions] == [ok[0]["version_id"]]
    [version] = versions
    assert version.tier == "ssd" and version.sha256 == hashlib.sha256(data).hexdigest() and lake.intact(version)
    assert outcomes(lake, "write-once") == ["done"]
    assert list(lake.config.staging.glob("*")) == []
