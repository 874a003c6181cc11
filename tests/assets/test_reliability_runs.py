"""One `letl run` at a time per LETL_HOME, and a summary that says "reconciled" only when it is true."""

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from letl.cli.main import main
from letl.labs.sample import write_drop

LETL = Path(sys.executable).parent / "letl"


@pytest.fixture
def month(letl_env) -> list[Path]:
    paths = [letl_env["landing"] / "labs" / h / "2024-01.csv" for h in ("H001", "H002")]
    for path in paths:
        write_drop(path, hospital_id=path.parent.name, month="2024-01", rows=60, seed=3)
    return paths


def start_run(cwd, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the waiting line must arrive while it waits
    return subprocess.Popen([str(LETL), "run", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def month_lines(out: str) -> list[str]:
    """The outcome of each month a run printed: ok, FAILED or up to date."""
    return re.findall(r"^\[\d+/\d+\] \d{4}-\d{2}: (ok|FAILED|up to date)", out, flags=re.M)


def test_two_first_runs_at_once_share_a_fresh_home(letl_env, month, tmp_path, capsys):
    # A fresh Dagster home: two first runs creating its tables together once left two alembic heads.
    dagster_home = letl_env["dagster_home"]
    (dagster_home / "dagster.yaml").unlink()
    runs = [start_run(tmp_path) for _ in range(2)]
    done = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    for code, out, err in done:
        assert code == 0, out[-3000:] + err[-3000:]
        assert "(reconciled)" in out and "alembic" not in err
    # The lock makes the second run find the month built by the first.
    assert sorted(line for _, out, _ in done for line in month_lines(out)) == ["ok", "up to date"]
    # The home they made together serves a later run (here in this process: only the race needed two).
    code = main(["run", "--force"])
    out, err = capsys.readouterr()
    assert code == 0 and month_lines(out) == ["ok"], out[-2000:] + err[-2000:]


@pytest.fixture
def held_lock(letl_env):
    """Another `letl run` holding LETL_HOME (a lock on its own open file, as another process's would be)."""
    with open(letl_env["home"] / "run.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("4242")
        handle.flush()
        yield handle


def test_a_second_run_waits_for_the_first_and_says_so(letl_env, month, held_lock, tmp_path):
    waiting = start_run(tmp_path)
    first = waiting.stdout.readline()
    assert first.strip() == f"another letl run (pid 4242) is working on {letl_env['home']}: waiting for it to finish"
    fcntl.flock(held_lock, fcntl.LOCK_UN)
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, out[-3000:] + err[-3000:]
    assert month_lines(out) == ["ok"] and "(reconciled)" in out


def test_no_wait_refuses_while_another_run_holds_the_home(letl_env, month, held_lock, capsys):
    assert main(["run", "--no-wait"]) == 9
    err = capsys.readouterr().err
    assert err.strip() == (f"error: another letl run (pid 4242) is working on {letl_env['home']}; "
                           "run again when it has finished, or leave out --no-wait to wait")


def test_summary_lists_failed_and_stale_months_and_exits_non_zero(letl_env, month, monkeypatch, capsys):
    from letl.labs import ingest

    real = ingest.ingest_drops

    def broken(drops, **kwargs):
        raise ingest.ReconciliationError("labs/H002/2024-01.csv: line 7: unterminated quote")

    monkeypatch.setattr(ingest, "ingest_drops", broken)
    (letl_env["landing"] / "labs" / "H001" / "2024-01.xlsx").write_text("not a drop")
    assert main(["run"]) == 1
    out = capsys.readouterr().out
    assert "\nignored files in the landing zone:\n  labs/H001/2024-01.xlsx: " in out
    assert "[1/1] 2024-01: FAILED in " in out
    assert ("(NOT reconciled: 1 month(s) failed or stale)\n"
            "  2024-01: FAILED: ReconciliationError: labs/H002/2024-01.csv: line 7: unterminated quote\n") in out
    assert "(reconciled)" not in out

    monkeypatch.setattr(ingest, "ingest_drops", real)
    assert main(["run"]) == 0
    assert "(reconciled)" in capsys.readouterr().out

    month[1].write_bytes(month[1].read_bytes() + month[1].read_bytes().splitlines(keepends=True)[-1])
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert ("(NOT reconciled: 1 month(s) failed or stale)\n"
            "  2024-01: stale: built from other drops than the landing zone holds (labs/H002/2024-01.csv)") in out
    assert main(["run"]) == 0
    assert "(reconciled)" in capsys.readouterr().out



def test_a_failed_blocking_check_is_the_month_s_reason(letl_env, month, monkeypatch):
    from letl_assets.assets import lab_checks
    from letl_assets.local_run import run_months

    monkeypatch.setattr(lab_checks, "reconcile_problem", lambda *_: "results and rejects were built from different drops")
    [outcome] = run_months(None, force=False, log=lambda _line: None)
    assert outcome["status"] == "FAILED"
    assert outcome["reason"] == "check rows_reconcile failed: results and rejects were built from different drops"
