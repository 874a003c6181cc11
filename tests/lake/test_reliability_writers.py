"""Found by red-teaming the fixes: every outside writer is refused a produced dataset, the steward check
does not believe $USER, fsck leaves a live writer's temp file alone, and an over-long name is bad input.

Each case failed on the code before its fix: a gros:// write and `letl tier write` replaced a published
lab_results partition, `USER=alice` made a process count as alice, `fsck --grace 0` deleted the temp file
of a running move, and a 300-character dataset name was a backend failure (exit 70, HTTP 502).
"""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from letl.lake.catalog import FINAL_STATES, OPEN_STATES
from letl.lake.errors import Conflict, InvalidInput
from letl.lake.lake import current_user
from letl.storage.contract import validate_key
from letl.storage.posix import PosixBackend

P = "2024-01-01"


def letl(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "letl.cli.main", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def published(lake):
    """A lab_results partition as a pipeline run publishes it."""
    return lake.write_version("labs/lab_results", pd.DataFrame({"v": range(5)}), partition=P, run_id="run-1",
                              metadata={"dataset": {"access": "deidentified"}})


def test_a_gros_write_cannot_replace_a_produced_partition(published, lake):
    with pytest.raises(Conflict, match="produced by the pipelines"):
        pd.DataFrame({"v": [0]}).to_parquet(f"gros://labs.lab_results?partition={P}",
                                             storage_options={"access": "deidentified"})
    assert lake.latest("labs/lab_results", P) == published


def test_letl_tier_write_cannot_replace_a_produced_partition(published, lake, tmp_path):
    forged = tmp_path / "x.csv"
    forged.write_text("a\n1\n")
    result = letl("tier", "write", str(forged), "labs.lab_results", "--partition", P, "--to", "hdd")
    assert result.returncode == 3 and "produced by the pipelines" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert lake.latest("labs/lab_results", P) == published


def test_outside_writers_keep_their_own_datasets(lake, tmp_path):
    own = tmp_path / "mine.csv"
    own.write_text("a\n1\n")
    assert letl("tier", "write", str(own), "team.mine", "--to", "hdd").returncode == 0
    pd.DataFrame({"v": [1]}).to_parquet("gros://team.other")
    assert {v.asset_key for v in lake.catalog.list_versions()} == {"team/mine", "team/other"}


def test_the_user_is_the_effective_uid_not_the_environment(monkeypatch):
    import pwd

    monkeypatch.setenv("USER", "alice-not-me")
    monkeypatch.setenv("LOGNAME", "alice-not-me")
    assert current_user() == pwd.getpwuid(os.geteuid()).pw_name != "alice-not-me"


def test_clean_temp_keeps_a_live_writers_file_and_removes_a_dead_ones(tmp_path):
    backend = PosixBackend(tmp_path)
    live = backend._tmp()  # named by this (running) process
    live.write_bytes(b"half a copy")
    dead_writer = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                 text=True, check=True)
    dead = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{dead_writer.stdout.strip()}-"))
    dead.write_bytes(b"left behind")
    old = time.time() - 7200
    for path in (live, dead):
        os.utime(path, (old, old))
    assert backend.clean_temp(older_than=0) == 1
    assert live.exists() and not dead.exists()


def test_an_over_long_name_is_bad_input_everywhere(lake, tmp_path):
    with pytest.raises(InvalidInput, match="at most"):
        validate_key(f"main/team/{'t' * 300}/_/v.csv")
    source = tmp_path / "x.csv"
    source.write_text("a\n1\n")
    result = letl("tier", "write", str(source), f"team.{'t' * 300}", "--to", "hdd")
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "t" * 100 not in result.stderr  # the message does not repeat the whole input
    assert lake.catalog.list_versions() == [] and lake.catalog.requests_in((*OPEN_STATES, *FINAL_STATES, "interrupted")) == []
