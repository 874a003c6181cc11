"""`letl tier ...` and `letl objectstore status` as a user runs them: idempotency, conflicts, exit codes."""

import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from letl.cli import main as cli


def letl_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "letl.cli.main", *args], env=dict(os.environ),
                          capture_output=True, text=True)


@pytest.fixture
def letl(capsys):
    """`letl` in this process, answering as the process would (code, stdout, stderr): one real process
    per command would only add its start-up to what these tests assert."""
    def run(*args: str) -> subprocess.CompletedProcess:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


@pytest.fixture
def version(lake):
    return lake.write_version("labs/cli", pd.DataFrame({"a": range(10)}), partition="2024-02-01", tier_hint="ssd")


def test_move_is_idempotent_by_request_id_and_refuses_reuse(lake, version, letl):
    first = letl("tier", "move", "--version", version.version_id, "--to", "hdd", "--request-id", "cli-1", "--json")
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)
    assert (result["state"], result["src_tier"], result["dst_tier"], result["repeated"]) == ("done", "ssd", "hdd", False)

    again = letl("tier", "move", "--version", version.version_id, "--to", "hdd", "--request-id", "cli-1")
    assert again.returncode == 0 and "repeated request: nothing done" in again.stdout

    reused = letl("tier", "move", "--version", version.version_id, "--to", "pmem", "--request-id", "cli-1")
    assert reused.returncode == 3 and "request 'cli-1' was a move" in reused.stderr
    assert lake.catalog.get(version.version_id).tier == "hdd"


def test_move_by_asset_and_partition(lake, version, letl):
    done = letl("tier", "move", "--asset", "labs/cli", "--partition", "2024-02-01", "--to", "pmem", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["version_id"] for r in json.loads(done.stdout)] == [version.version_id]
    assert lake.catalog.get(version.version_id).tier == "pmem"
    missing = letl("tier", "move", "--asset", "labs/none", "--to", "pmem")
    assert missing.returncode == 4 and "unknown dataset 'labs/none'; known datasets: labs/cli" in missing.stderr
    other = letl("tier", "move", "--asset", "labs/cli", "--partition", "2024-03-01", "--to", "pmem")
    assert other.returncode == 4 and "no latest version of 'labs/cli' partition 2024-03-01" in other.stderr


def test_destination_with_other_bytes_is_refused(lake, version, letl):
    lake.tiers["hdd"].backend.put(version.storage_key, io.BytesIO(b"other"))
    refused = letl("tier", "move", "--version", version.version_id, "--to", "hdd", "--request-id", "cli-2")
    assert refused.returncode == 3 and "different data" in refused.stderr
    assert lake.catalog.get(version.version_id).tier == "ssd"


def test_ls_and_fsck_report_in_json(lake, version, letl):
    listed = json.loads(letl("tier", "ls", "--json").stdout)
    assert {row["tier"]: row["versions"] for row in listed} == {"pmem": 0, "ssd": 1, "hdd": 0}
    assert {row["tier"]: row["used"] for row in listed}["ssd"] == version.bytes
    lake.tiers["hdd"].backend.put("main/labs/cli/x/20200101T000000000000Z-0badc0de.parquet", io.BytesIO(b"orphan"))
    dry = letl("tier", "fsck", "--dry-run", "--json")
    assert json.loads(dry.stdout)["orphans"] == ["hdd:main/labs/cli/x/20200101T000000000000Z-0badc0de.parquet"]
    fixed = letl("tier", "fsck", "--json")
    assert fixed.returncode == 0 and json.loads(fixed.stdout)["orphans"] == json.loads(dry.stdout)["orphans"]
    assert json.loads(letl("tier", "fsck", "--json").stdout)["orphans"] == []


def test_objectstore_status_when_not_running(letl_env):
    status = letl_process("objectstore", "status", "--json")  # the real process's exit status
    assert status.returncode == 1
    assert json.loads(status.stdout)["running"] is False


def test_write_and_usage(lake, tmp_path, letl):
    source = tmp_path / "notes.txt"
    source.write_text("field notes")
    first = letl("tier", "write", str(source), "team.notes", "--to", "hdd", "--request-id", "w1", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    version = lake.catalog.get(result["version_id"])
    assert (version.asset_key, version.tier, version.bytes) == ("team/notes", "hdd", len("field notes"))
    again = letl("tier", "write", str(source), "team.notes", "--to", "hdd", "--request-id", "w1")
    assert again.returncode == 0 and "repeated request" in again.stdout
    assert letl("tier", "write", str(tmp_path / "nope"), "team.notes", "--to", "hdd").returncode == 4
    usage = {row["tier"]: row for row in json.loads(letl("tier", "usage", "--json").stdout)}
    assert usage["hdd"]["catalogued"] == usage["hdd"]["stored"] == len("field notes")
    assert usage["pmem"]["percent_of_quota"] == 0.0 and usage["hdd"]["quota"] is None
