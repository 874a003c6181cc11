"""One materialization = one commit, and a month never wedges: a kill between staging and
publishing, a re-sent drop with more rows and a drop appended while it is read all end, after
one more run, in current results, rejects and summary that reconcile."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from letl.cli.main import main
from letl.cli.report import summary
from letl.labs.reconcile import month_problem
from letl.labs.sample import write_drop
from letl.lake.lake import Lake
from letl.lake.names import LAB_REJECTS as REJECTS
from letl.lake.names import LAB_RESULTS as RESULTS
from letl.lake.names import LAB_SUMMARY as SUMMARY
from letl_assets.local_run import run_months

LETL = Path(sys.executable).parent / "letl"
MONTH = "2024-01-01"


def letl_run(cwd, *args, **env):
    """`letl run` in its own process, with the fixture's LETL_* and DAGSTER_HOME (monkeypatched into os.environ)."""
    return subprocess.run([str(LETL), "run", *args], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)


def drop(landing: Path, hospital: str, rows: int) -> Path:
    path = landing / "labs" / hospital / "2024-01.csv"
    write_drop(path, hospital_id=hospital, month="2024-01", rows=rows, seed=7)
    return path


@pytest.fixture
def month(letl_env) -> list[Path]:
    return [drop(letl_env["landing"], h, 60) for h in ("H001", "H002")]


def current(lake: Lake) -> dict:
    return {key: lake.latest(key, MONTH) for key in (RESULTS, REJECTS, SUMMARY)}


def assert_month_current(lake: Lake, letl_env) -> None:
    signatures = [f"labs/{p.parent.name}/{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
                  for p in sorted((letl_env["landing"] / "labs").glob("*/*.csv"))]
    assert month_problem(lake, MONTH, signatures) is None
    assert summary(lake)["reconciled"]


def test_kill_between_staging_and_publish_shows_nothing_and_the_rerun_publishes(letl_env, month, tmp_path, capsys):
    # Only the killed run needs a process of its own; the reruns that heal it run here.
    killed = letl_run(tmp_path, LETL_FAILPOINT="before_publish")
    assert killed.returncode == 137, killed.stdout[-2000:] + killed.stderr[-2000:]
    lake = Lake.from_env()
    assert current(lake) == {RESULTS: None, REJECTS: None, SUMMARY: None}  # neither output, not one of two

    assert main(["run"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "2024-01: ok" in out and "(reconciled)" in out
    versions = current(Lake.from_env())
    assert all(versions.values())
    assert_month_current(Lake.from_env(), letl_env)

    # Identical output reuses every version and still passes its checks.
    assert main(["run", "--force"]) == 0, capsys.readouterr()
    assert {k: v.version_id for k, v in current(Lake.from_env()).items()} == {
        k: v.version_id for k, v in versions.items()}


def quiet_run(**kwargs) -> list[dict]:
    return run_months(None, log=lambda _line: None, **kwargs)


def test_resent_drop_with_more_rows_is_rebuilt_and_reconciles(letl_env, month):
    assert [o["status"] for o in quiet_run(force=False)] == ["ok"]
    before = current(Lake.from_env())
    drop(letl_env["landing"], "H001", 90)  # the hospital re-sends the month, longer

    assert [o["status"] for o in quiet_run(force=False)] == ["ok"]
    lake = Lake.from_env()
    after = current(lake)
    assert after[RESULTS].rows + after[REJECTS].rows == 90 + 60
    assert after[RESULTS].version_id != before[RESULTS].version_id
    assert_month_current(lake, letl_env)
    assert [o["status"] for o in quiet_run(force=True)] == ["ok"]  # --force on unchanged drops never wedges
    assert [o["status"] for o in quiet_run(force=False)] == ["up to date"]


@pytest.fixture
def append_while_reading(monkeypatch, month):
    """The ingest reads the drops, then the first one grows: an upload still appending."""
    from letl.labs import ingest

    real = ingest.ingest_drops

    def reading(drops, **kwargs):
        report = real(drops, **kwargs)
        last = drops[0].path.read_bytes().splitlines(keepends=True)[-1]
        with open(drops[0].path, "ab") as handle:
            handle.write(last)
        return report

    monkeypatch.setattr(ingest, "ingest_drops", reading)
    return lambda: monkeypatch.setattr(ingest, "ingest_drops", real)  # undo() would drop letl_env's variables too


def test_drop_appended_while_read_fails_the_month_and_the_rerun_publishes(letl_env, append_while_reading):
    [outcome] = quiet_run(force=False)
    assert outcome["status"] == "FAILED"
    assert outcome["reason"] == ("labs/H001/2024-01.csv changed while it was read; "
                                 "the month will be rebuilt on the next run")
    lake = Lake.from_env()
    assert current(lake) == {RESULTS: None, REJECTS: None, SUMMARY: None}
    assert list(lake.config.staging.glob("*.parquet")) == []

    append_while_reading()  # the upload has finished
    assert [o["status"] for o in quiet_run(force=False)] == ["ok"]
    assert_month_current(Lake.from_env(), letl_env)


def test_ignored_files_are_recorded_with_the_results(letl_env, month):
    (letl_env["landing"] / "labs" / "H001" / "notes.txt").write_text("not a drop")
    assert [o["status"] for o in quiet_run(force=False)] == ["ok"]
    results = Lake.from_env().latest(RESULTS, MONTH)
    ignored = results.metadata["output"]["ignored_files"]
    assert [i["relpath"] for i in ignored] == ["labs/H001/notes.txt"] and all(i["reason"] for i in ignored)
