"""Hostile requests to the HTTP API: server files as sources, produced datasets as destinations,
oversized bodies, echoed input and short tokens.

Each was reproduced on the code before the fix: the API copied /etc/passwd, /proc/self/environ
(LETL_API_TOKEN included) and the pseudonym key into the lake, overwrote a pipeline partition,
read a 200 MB body in full without a token, and FastAPI's 422 body repeated the input.
"""

import os
import select
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from test_api import AUTH, TOKEN, api_env, client, post  # noqa: F401  (fixtures)

from letl.cli import main as cli
from letl.lake.catalog import access_log, query_log
from letl.lake.lake import Lake, current_user
from letl.lake.names import PRODUCED

WRITES = ("/daos/ssd/write", "/cortx/write")
MB = 1 << 20


def nothing_recorded() -> None:
    lake = Lake.from_env()
    assert lake.catalog.list_versions() == []
    with lake.catalog.engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(access_log)).scalar_one() == 0


@pytest.fixture
def landed(api_env):
    path = api_env["landing"] / "scan.png"
    path.write_bytes(b"PNG")
    return path


# --- sources: only what is registered ---------------------------------------------------------


def hostile_sources(env, outside_dir):
    """outside_dir: not under LETL_HOME, the landing zone or a system directory such as /dev."""
    home = env["home"]
    Lake.from_env()  # creates catalog.sqlite
    (home / "pseudonym.key").write_text("0123456789abcdef\n")
    (home / "objectstore").mkdir()
    (home / "objectstore" / "credentials.json").write_text('{"secret_key": "s3cr3t"}')
    outside = outside_dir / "outside.csv"
    outside.write_text("a\n1\n")
    links = env["landing"] / "links"
    links.mkdir()
    (links / "passwd.csv").symlink_to("/etc/passwd")
    (links / "key.csv").symlink_to(home / "pseudonym.key")
    (links / "etc").symlink_to("/etc")
    return {
        "/etc/passwd": "/etc/passwd",
        "file:///etc/passwd": "file:///etc/passwd",
        "//etc/passwd": "//etc/passwd",
        "file:////proc/self/environ": "file:////proc/self/environ",
        "/proc/self/environ": "/proc/self/environ",
        "catalog": str(home / "catalog.sqlite"),
        "pseudonym key": f"file://{home / 'pseudonym.key'}",
        "objectstore credentials": str(home / "objectstore" / "credentials.json"),
        "outside file": str(outside),
        "missing outside file": str(outside_dir / "nope.csv"),
        "symlink to /etc/passwd": str(links / "passwd.csv"),
        "symlink to the key": str(links / "key.csv"),
        "symlinked directory": str(links / "etc" / "hostname"),
        "dot-dot out of the landing zone": f"{env['landing']}/../home/pseudonym.key",
    }


def test_server_files_are_refused_with_403_and_nothing_is_written(client, api_env, disk_dir):
    for name, source in hostile_sources(api_env, disk_dir).items():
        for endpoint in WRITES:
            r = post(client, endpoint, source, "team.loot", f"w-{len(name)}-{endpoint[1]}")
            assert r.status_code == 403, (name, r.text)
            assert source not in r.text and "0123456789abcdef" not in r.text and "s3cr3t" not in r.text
            assert "not a registered source" in r.json()["detail"]
    nothing_recorded()


def test_broad_source_roots_never_open_server_secrets(client, api_env, disk_dir, monkeypatch):
    sources = hostile_sources(api_env, disk_dir)
    monkeypatch.setenv("LETL_SOURCE_ROOTS", f"/:{api_env['home']}")
    for name in ("/etc/passwd", "//etc/passwd", "/proc/self/environ", "catalog", "pseudonym key",
                 "objectstore credentials", "symlink to the key"):
        assert post(client, "/daos/ssd/write", sources[name], "team.loot", "w-1").status_code == 403, name
    nothing_recorded()
    assert post(client, "/daos/ssd/write", sources["outside file"], "team.outside", "w-2").status_code == 200


def test_landing_zone_and_source_roots_are_registered(client, api_env, landed, tmp_path, monkeypatch):
    r = post(client, "/daos/ssd/write", f"file://{landed}", "team.scans", "w-1")
    assert r.status_code == 200, r.text
    (api_env["landing"] / "alias.png").symlink_to(landed)  # a link that stays inside is fine
    assert post(client, "/daos/ssd/write", api_env["landing"] / "alias.png", "team.scans", "w-2").status_code == 200
    other = tmp_path / "instrument"
    other.mkdir()
    (other / "run.csv").write_text("a\n1\n")
    assert post(client, "/daos/ssd/write", other / "run.csv", "team.runs", "w-3").status_code == 403
    monkeypatch.setenv("LETL_SOURCE_ROOTS", f"{tmp_path / 'elsewhere'}:{other}")
    r = post(client, "/daos/ssd/write", other / "run.csv", "team.runs", "w-3")
    assert r.status_code == 200, r.text
    missing = post(client, "/daos/ssd/write", api_env["landing"] / "gone.png", "team.scans", "w-4")
    assert missing.status_code == 404 and "no such file" in missing.json()["detail"]
    # A repeat is answered from its record even once the file is gone, but never for a server file.
    landed.unlink()
    again = post(client, "/daos/ssd/write", f"file://{landed}", "team.scans", "w-1")
    assert again.status_code == 200 and again.json()["repeated"] is True, again.text
    assert post(client, "/daos/ssd/write", "/etc/passwd", "team.scans", "w-1").status_code == 403


def test_lake_versions_are_sources_under_gros_access_rules(client, api_env, monkeypatch):
    lake = Lake.from_env()
    monkeypatch.delenv("LETL_STEWARDS", raising=False)
    open_v = lake.write_version("team/open", pd.DataFrame({"a": [1]}), partition="2024-01-01",
                                metadata={"dataset": {"access": "deidentified"}})
    lake.write_version("team/raw", pd.DataFrame({"mrn": ["MRN-1"]}))
    r = post(client, "/daos/ssd/write", "gros://team.open:latest?partition=2024-01-01", "team.copy", "w-1")
    assert r.status_code == 200, r.text
    copy = lake.catalog.get(r.json()["version_id"])
    assert lake.local_path(copy).read_bytes() == lake.local_path(open_v).read_bytes()

    refused = post(client, "/daos/ssd/write", "gros://team.raw", "team.copy", "w-2")
    assert refused.status_code == 403 and "LETL_STEWARDS" in refused.json()["detail"]
    with lake.catalog.engine.begin() as conn:
        kinds = [r.kind for r in conn.execute(sa.select(query_log))]
        reads = [r.kind for r in conn.execute(sa.select(access_log))]
    assert kinds == ["api-refused"] and reads == ["api"]
    monkeypatch.setenv("LETL_STEWARDS", current_user())
    assert post(client, "/daos/ssd/write", "gros://team.raw", "team.copy", "w-2").status_code == 200

    assert post(client, "/daos/ssd/write", "gros://team.open", "team.copy", "w-3").status_code == 422  # every partition
    assert post(client, "/daos/ssd/write", "gros://team.nope", "team.copy", "w-4").status_code == 404
    assert post(client, "/daos/ssd/write", "gros://team.open::file:///etc/passwd", "team.copy", "w-5").status_code == 422


def test_registered_source_id_shape_is_404_until_ids_are_registered(client):
    r = post(client, "/daos/ssd/write", "project-19-276121/letlCovidSet/A1", "team.seqs", "w-1")
    assert r.status_code == 404 and "registered source id" in r.json()["detail"]
    for text in ("relative/scan.png", "a/b", "a/b/c/d", "project/../etc/passwd"):
        assert post(client, "/daos/ssd/write", text, "team.seqs", "w-2").status_code == 422, text


# --- destinations: never what the pipelines produce -------------------------------------------


@pytest.mark.parametrize("destination", ["labs/lab_results?partition=2024-01-01", "labs.lab_results_rejects",
                                         "labs.lab_results_summary?partition=2024-01-01", "labs/lab_drops",
                                         "/labs/lab_results/", "team.my_dataset_summary"])
def test_produced_datasets_cannot_be_written(client, landed, destination):
    for endpoint in WRITES:
        r = post(client, endpoint, landed, destination, "w-1")
        assert r.status_code == 409, r.text
        assert "produced by the pipelines" in r.json()["detail"]
    nothing_recorded()


def test_a_dataset_a_pipeline_wrote_cannot_be_written(client, landed):
    lake = Lake.from_env()
    lake.write_version("team/derived", pd.DataFrame({"a": [1]}), partition="2024-01-01", run_id="run-1")
    before = lake.catalog.list_versions()
    r = post(client, "/daos/ssd/write", landed, "team.derived?partition=2024-01-01", "w-1")
    assert r.status_code == 409, r.text
    assert lake.catalog.list_versions() == before
    # Outside writers' own datasets stay writable, over and over.
    for n in (1, 2):
        assert post(client, "/daos/ssd/write", landed, "team.my_dataset", f"w-ext-{n}").status_code == 200


def test_produced_keys_agree_with_the_code_locations():
    """What outside writers may not replace is what the workspace's code locations produce: the
    production location and the examples beside it (workspace.yaml)."""
    from letl_assets.definitions import defs as production
    from letl_examples.definitions import defs as examples

    produced = {"/".join(k.path) for d in (production, examples) for k in d.resolve_asset_graph().materializable_asset_keys}
    assert produced | {"labs/lab_drops"} == set(PRODUCED)


# --- error bodies -----------------------------------------------------------------------------


def test_validation_errors_name_the_field_but_never_echo_the_input(client):
    secret = "MRN-8675309 Jane Roe"
    bodies = [
        {"source_uri": "/x", "destination_uri": "a.b", "request_id": secret},
        {"source_uri": ["/x", secret], "destination_uri": "a.b", "request_id": "r"},
        {"source_uri": "/x", "destination_uri": "a.b", "request_id": "r", secret: secret},
        {"source_uri": "/x", "destination_uri": "a.b", "request_id": "r" + "x" * 200 + secret},
    ]
    for body in bodies:
        r = client.post("/daos/ssd/write", json=body)
        assert r.status_code == 422, r.text
        assert "MRN" not in r.text and "Jane" not in r.text, r.text
        assert set(r.json()) == {"detail"} and r.json()["detail"].startswith("invalid request: body")
    assert "body.request_id" in client.post("/daos/ssd/write", json=bodies[0]).json()["detail"]
    assert "a field it does not take" in client.post("/daos/ssd/write", json=bodies[2]).json()["detail"]
    broken = client.post("/daos/ssd/write", content=f'{{"source_uri": "{secret}'.encode(),
                         headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and "MRN" not in broken.text
    assert "MRN" not in client.get("/moves/" + "m" * 300 + secret).text


def test_refusals_do_not_repeat_what_was_sent(client, landed):
    secret = "MRN-8675309"
    answers = [
        post(client, "/daos/ssd/write", landed, f"team.{secret}!", "w-1"),
        post(client, "/daos/ssd/write", landed, f"team.x?partition={secret}/..", "w-2"),
        post(client, "/daos/ssd/write", landed, f"team.x?{secret}=1", "w-3"),
        post(client, "/daos/ssd/write", f"gros://team.{secret}%41", "team.x", "w-4"),
        post(client, "/daos/ssd/write", f"/etc/{secret}", "team.x", "w-5"),
        post(client, "/tiering/D-C", "v", f"cortx-{secret}", "m-1"),
        post(client, "/tiering/D-C", f"{secret}.x y", "cortx", "m-2"),
        client.get(f"/moves/{secret}"),
    ]
    assert [r.status_code for r in answers] == [422, 422, 422, 422, 403, 422, 422, 404]
    for r in answers:
        assert secret not in r.text, r.text


# --- letl serve -------------------------------------------------------------------------------


def test_serve_refuses_a_short_token(api_env, monkeypatch, capsys):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setenv("LETL_API_TOKEN", "x" * 31)
    assert cli.main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "shorter than 32 characters" in err and len(err.strip().splitlines()) == 1
    assert started == []
    monkeypatch.setenv("LETL_API_TOKEN", "x" * 32)
    assert cli.main(["serve", "--port", "1"]) == 0 and len(started) == 1


# --- request bodies, against a real uvicorn -----------------------------------------------------


@pytest.fixture
def server(api_env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "letl.cli.main", "serve", "--port", str(port)],
                                env={**os.environ, "LETL_API_TOKEN": TOKEN}, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if proc.poll() is not None:
                break
            try:
                httpx.get(f"http://127.0.0.1:{port}/tiers", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert proc.poll() is None, log.read_text()
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def stream_body(port: int, headers: list[str], total: int) -> tuple[int, bytes]:
    """POST a chunked body of total bytes piece by piece, stopping as soon as an answer arrives;
    with total 0, send the headers only and wait. Returns (body bytes sent, the answer's head)."""
    piece = b"x" * (64 * 1024)
    framed = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    head = ["POST /daos/ssd/write HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    sock = socket.create_connection(("127.0.0.1", port))
    sent, pending = 0, b""
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        while True:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 60)
            assert readable or writable, "the server neither read the body nor answered"
            if readable or sent >= total:
                break
            pending = pending or framed
            try:
                pending = pending[sock.send(pending):]
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 0 if pending else len(piece)
        sock.setblocking(True)
        sock.settimeout(60)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
        except ConnectionResetError:
            pass
        return sent, answer
    finally:
        sock.close()


def test_oversized_bodies_are_refused_before_they_are_read(server, landed):
    proc, port = server
    total, chunked = 200 * MB, "Transfer-Encoding: chunked"
    before = rss_mb(proc.pid)
    for headers in ([chunked], [f"Authorization: Bearer {TOKEN}", chunked]):
        sent, answer = stream_body(port, headers, total)
        assert answer.startswith(b"HTTP/1.1 413"), (headers, answer[:200])
        assert sent < total // 8, (headers, sent)  # what the socket buffers hold, not the body
    for headers in ([f"Content-Length: {total}"], [f"Authorization: Bearer {TOKEN}", f"Content-Length: {total}"]):
        # A declared length over the cap is answered before a single body byte is sent.
        sent, answer = stream_body(port, headers, 0)
        assert answer.startswith(b"HTTP/1.1 413"), (headers, answer[:200])
    assert rss_mb(proc.pid) - before < 100  # 200 MB never sat in the server
    # A body under the cap still goes through, on the same server.
    r = httpx.post(f"http://127.0.0.1:{port}/daos/ssd/write", headers=AUTH, timeout=60,
                   json={"source_uri": str(landed), "destination_uri": "team.scans", "request_id": "w-1"})
    assert r.status_code == 200, r.text
