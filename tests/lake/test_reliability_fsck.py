"""fsck beside live work, after dead work, and with a tier unreachable.

Races are made deterministic with failpoints: ``LETL_FAILPOINT=pause_<step>`` makes the mover
SIGSTOP itself at that step, so the test acts while the move is provably half done; a
stopped process still holds its lock, as a slow but living one would.
"""

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from letl.cli import main as cli
from letl.lake.catalog import moves, request_attempts, utcnow
from letl.lake.errors import InProgress
from letl.lake.fsck import fsck
from letl.lake.lake import Lake
from letl.lake.moves import Mover


def outcomes(lake, request_id: str) -> list[str]:
    """How each attempt at a request ended (running while it runs), first attempt first."""
    a = request_attempts.c
    with lake.catalog.engine.begin() as conn:
        return list(conn.execute(sa.select(a.outcome).where(a.request_id == request_id).order_by(a.attempt)).scalars())



def letl(*args: str, failpoint: str | None = None, wait: bool = True):
    env = {**os.environ, **({"LETL_FAILPOINT": failpoint} if failpoint else {})}
    cmd = [sys.executable, "-m", "letl.cli.main", *args]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def letl_here(capsys, *args: str) -> tuple[int, str, str]:
    """`letl` in this process, where what is asserted is the command's answer, not the process's: (code, out, err)."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wait_until_stopped(proc: subprocess.Popen) -> None:
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the mover ended instead of pausing (status {status})"


def stored(lake, tier, key) -> bytes | None:
    backend = lake.tiers[tier].backend
    if not backend.exists(key):
        return None
    with backend.open(key) as f:
        return f.read()


@pytest.fixture
def version(lake):
    return lake.write_version("labs/live", pd.DataFrame({"a": range(5000)}), partition="2024-01-01",
                              tier_hint="pmem")


def paused_move(version, request_id):
    proc = letl("tier", "move", "--version", version.version_id, "--to", "hdd", "--request-id", request_id,
                failpoint="pause_before_readback", wait=False)
    try:
        wait_until_stopped(proc)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc


def test_fsck_leaves_a_live_move_alone_and_the_move_completes(version):
    proc = paused_move(version, "live-1")
    try:
        lake = Lake.from_env()
        assert fsck(lake, dry_run=True)["live"] == ["live-1"]
        report = fsck(lake, grace_seconds=0)
        assert report["moves"] == {} and report["live"] == ["live-1"], report
        assert report["orphans"] == []
        assert lake.catalog.get(version.version_id).tier == "pmem"
        copy = stored(lake, "hdd", version.storage_key)
        assert copy is not None and hashlib.sha256(copy).hexdigest() == version.sha256
        # A repeat of the live request is told to come back; it does not restart the move.
        os.environ["LETL_REQUEST_WAIT"] = "0"
        try:
            with pytest.raises(InProgress, match="live-1"):
                Mover(lake).move(version.version_id, "hdd", "live-1")
        finally:
            del os.environ["LETL_REQUEST_WAIT"]
        assert stored(lake, "hdd", version.storage_key) == copy
        assert outcomes(lake, "live-1") == ["running"]
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lake = Lake.from_env()
    moved = lake.catalog.get(version.version_id)
    assert moved.tier == "hdd" and lake.intact(moved)
    assert lake.read_table(moved).num_rows == 5000
    assert stored(lake, "pmem", version.storage_key) is None
    after = fsck(lake, grace_seconds=0)
    assert (after["missing"], after["orphans"], after["live"]) == ([], [], [])


def test_fsck_settles_a_move_whose_owner_was_killed(version):
    proc = paused_move(version, "dead-1")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    lake = Lake.from_env()
    assert fsck(lake, dry_run=True)["moves"] == {"dead-1": "would settle (owner gone)"}
    assert stored(lake, "hdd", version.storage_key) is not None  # a dry run changes nothing
    report = fsck(lake, grace_seconds=0)
    assert report["moves"] == {"dead-1": "rolled back"} and report["live"] == []
    assert lake.catalog.get(version.version_id).tier == "pmem" and lake.intact(version)
    assert stored(lake, "hdd", version.storage_key) is None

    retried = Mover(lake).move(version.version_id, "hdd", "dead-1")
    assert retried.state == "done" and lake.intact(lake.catalog.get(version.version_id))
    assert outcomes(lake, "dead-1") == ["interrupted", "done"]


def test_an_owner_on_another_host_is_live_while_its_heartbeat_is_fresh(version):
    proc = paused_move(version, "remote-1")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    lake = Lake.from_env()

    def owned_elsewhere(beat):
        with lake.catalog.engine.begin() as conn:
            conn.execute(moves.update().where(moves.c.request_id == "remote-1")
                         .values(owner_host="another-host", heartbeat_at=beat))

    owned_elsewhere(utcnow())
    report = fsck(lake, grace_seconds=0)
    assert report["live"] == ["remote-1"] and report["moves"] == {}
    assert stored(lake, "hdd", version.storage_key) is not None  # its copy is left alone too
    owned_elsewhere(utcnow() - timedelta(hours=1))
    assert fsck(lake, grace_seconds=0)["moves"] == {"remote-1": "rolled back"}
    assert stored(lake, "hdd", version.storage_key) is None and lake.intact(version)


def test_a_retry_takes_over_a_killed_move_without_fsck(version):
    proc = paused_move(version, "dead-2")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    lake = Lake.from_env()
    assert Mover(lake).move(version.version_id, "hdd", "dead-2").state == "done"
    moved = lake.catalog.get(version.version_id)
    assert moved.tier == "hdd" and lake.intact(moved) and stored(lake, "pmem", version.storage_key) is None
    assert len(outcomes(lake, "dead-2")) == 2


def kill_a_write(letl_env, request_id):
    source = letl_env["landing"] / "team" / "notes.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("field notes, a few of them")
    args = ("tier", "write", str(source), "team.notes", "--to", "hdd", "--request-id", request_id)
    died = letl(*args, failpoint="write_after_copy")
    assert died.returncode == 137, died.stderr
    staging = Lake.from_env().config.staging
    assert list(staging.glob("request-*")), "the killed writer left no staging copy: the failpoint is misplaced"
    return args


def test_killed_write_is_settled_by_fsck_then_retried_once(letl_env, capsys):
    args = kill_a_write(letl_env, "w-kill")
    lake = Lake.from_env()
    staging = lake.config.staging
    other = staging / "a-live-run.parquet"  # a staging file fsck cannot tie to a dead owner
    other.write_bytes(b"being written")

    report = fsck(lake, grace_seconds=3600)
    assert report["moves"] == {"w-kill": "rolled back"} and report["staging_removed"] == 0
    assert list(staging.glob("*")) == [other]  # the dead writer's copy is gone; the young one is kept

    code, _, err = letl_here(capsys, *args, "--json")
    assert code == 0, err
    code, out, _ = letl_here(capsys, *args)
    assert code == 0 and "repeated request" in out
    versions = lake.catalog.list_versions("team/notes")
    assert len(versions) == 1 and lake.intact(versions[0])
    assert fsck(lake, grace_seconds=0)["staging_removed"] == 1
    assert list(staging.glob("*")) == []
    assert outcomes(lake, "w-kill") == ["interrupted", "done"]


def test_killed_write_retried_gives_one_version_and_no_staging_leftover(letl_env, capsys):
    args = kill_a_write(letl_env, "w-kill-2")
    code, _, err = letl_here(capsys, *args, "--json")
    assert code == 0, err
    lake = Lake.from_env()
    assert len(lake.catalog.list_versions("team/notes")) == 1
    assert list(lake.config.staging.glob("*")) == []
    assert len(outcomes(lake, "w-kill-2")) == 2


def test_fsck_leaves_a_live_write_alone_and_the_write_commits(letl_env, version):
    source = letl_env["landing"] / "team" / "scan.bin"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"scan bytes " * 1000)
    proc = letl("tier", "write", str(source), "team.scans", "--to", "hdd", "--request-id", "w-live", "--json",
                failpoint="pause_write_after_put", wait=False)
    wait_until_stopped(proc)
    try:
        lake = Lake.from_env()
        report = fsck(lake, grace_seconds=0)
        assert report["live"] == ["w-live"] and report["orphans"] == [] and report["moves"] == {}
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    [version] = lake.catalog.list_versions("team/scans")
    assert lake.intact(version) and fsck(lake, grace_seconds=0)["missing"] == []


@pytest.fixture
def cortx_down(letl_env, monkeypatch, s3_retries_without_backoff):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", "s3://letl/lake")
    monkeypatch.setenv("LETL_S3_ENDPOINT", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", "secret")


ORPHAN = "main/labs/live/2024-01-01/20200101T000000000000Z-0badc0de.parquet"


def test_fsck_with_the_object_store_down_settles_the_rest_and_reports_it(version, cortx_down, capsys):
    lake = Lake.from_env()
    lake.tiers["hdd"].backend.put(ORPHAN, io.BytesIO(b"orphan"))
    report = fsck(lake, grace_seconds=0)
    assert report["orphans"] == [f"hdd:{ORPHAN}"] and not lake.tiers["hdd"].backend.exists(ORPHAN)
    assert list(report["unreachable"]) == ["cortx"] and "unreachable" in report["unreachable"]["cortx"]
    assert report["missing"] == [] and lake.intact(version)

    code, out, err = letl_here(capsys, "tier", "fsck")
    assert code == 7, err
    assert "cortx" in out and "Traceback" not in err + out


def test_cli_errors_with_the_object_store_down_are_one_line(version, cortx_down, letl_env, capsys):
    moved = letl("tier", "move", "--version", version.version_id, "--to", "cortx", "--request-id", "down-1")
    assert moved.returncode == 7, moved.stderr
    assert len(moved.stderr.strip().splitlines()) == 1 and "Traceback" not in moved.stderr, moved.stderr
    assert "cortx" in moved.stderr
    lake = Lake.from_env()
    assert lake.catalog.get(version.version_id).tier == "pmem" and lake.intact(version)

    source = letl_env["landing"] / "blob.bin"
    source.write_bytes(b"bytes")
    code, _, err = letl_here(capsys, "tier", "write", str(source), "team.blobs", "--to", "cortx")
    assert code == 7 and len(err.strip().splitlines()) == 1, err
    assert lake.catalog.list_versions("team/blobs") == []


def test_every_s3_call_to_a_closed_port_is_tier_unavailable(s3_retries_without_backoff):
    from letl.lake.errors import TierUnavailable
    from letl.storage.s3 import S3Backend, make_s3_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    backend = S3Backend(make_s3_client(f"http://127.0.0.1:{closed}", "k", "s", max_attempts=1), "letl", "lake")
    calls = {
        "put": lambda: backend.put("a/b", io.BytesIO(b"x")),
        "open": lambda: backend.open("a/b"),
        "read_range": lambda: backend.read_range("a/b", 0, 1),
        "exists": lambda: backend.exists("a/b"),
        "delete": lambda: backend.delete("a/b"),
        "keys": lambda: list(backend.keys()),
        "usage": backend.usage,
        "clean_temp": backend.clean_temp,
        "probe": backend.probe,
    }
    for call in calls.values():
        with pytest.raises(TierUnavailable, match="unreachable"):
            call()
