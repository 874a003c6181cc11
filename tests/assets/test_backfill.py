"""`letl run` over many months: any month from 1900 to the current one, consecutive months in one
Dagster run with one version, lineage and verdict per month, and a broken month that costs only itself."""

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from letl.cli.main import main
from letl.cli.progress import progress
from letl.cli.report import summary
from letl.labs.drops import scan_landing
from letl.labs.reconcile import month_problem, reconcile_problem
from letl.labs.sample import write_drop
from letl.lake.config import format_size
from letl.lake.lake import Lake
from letl.lake.names import LAB_REJECTS as REJECTS
from letl.lake.names import LAB_RESULTS as RESULTS
from letl.lake.names import LAB_SUMMARY as SUMMARY
from letl_assets.local_run import run_months
from letl_assets.range_runs import month_runs

CHECKS = {"rows_reconcile", "no_raw_identifiers", "physiological_bounds"}
# `letl run`'s line for a month it built: rows in, out, rejected, the ingest's seconds and rate, the run.
MONTH_LINE = re.compile(r"\[\d+/\d+\] (\d{4}-\d{2}): ok, ([\d,]+) rows in, ([\d,]+) out, ([\d,]+) rejected, "
                        r"(\d+\.\d) s, ([\d,]+) rows/s \(run \S+(?:, one run for \d+ months \S+)? in \d+\.\d s\)")


def quiet(**kwargs) -> list[dict]:
    return run_months(kwargs.pop("months", None), force=kwargs.pop("force", False), log=lambda _line: None)


def drop(landing: Path, hospital: str, month: str, rows: int = 30, seed: int = 4) -> Path:
    path = landing / "labs" / hospital / f"{month}.csv"
    write_drop(path, hospital_id=hospital, month=month, rows=rows, seed=seed, defect_rate=0.05)
    return path


def collected_today(path: Path) -> None:
    """A drop of the month in progress holds results collected up to now, not later in the month."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    for row in (r for r in rows[1:] if len(r) == len(header)):  # planted malformed rows stay as they are
        for column in ("collected_at", "reported_at"):
            i = header.index(column)
            row[i] = f"{today} {row[i][11:]}"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def signatures(landing: Path, partition: str) -> list[str]:
    return [d.signature for d in scan_landing(landing).drops if d.partition_key == partition]


def check_verdicts(run_ids: set[str]) -> dict[tuple[str, str], bool]:
    """(check name, partition) -> passed, for every check evaluation of these runs."""
    instance = dg.DagsterInstance.get()
    verdicts = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.asset_check_evaluation_data
            verdicts[(evaluation.check_name, evaluation.partition)] = evaluation.passed
    return verdicts


def assert_published(lake: Lake, landing: Path, partition: str) -> None:
    """The month's three versions exist, were built from its drops alone and reconcile; the summary
    was built from that month's results and nothing else."""
    results, rejects, summary_version = (lake.latest(k, partition) for k in (RESULTS, REJECTS, SUMMARY))
    assert month_problem(lake, partition, signatures(landing, partition)) is None
    assert reconcile_problem(results, rejects) is None
    assert results.partition == rejects.partition == summary_version.partition == partition
    assert {s.rsplit(":", 2)[0].split("/")[-1] for s in results.metadata["output"]["source_signatures"]} == {
        f"{partition[:7]}.csv"}
    assert [u.version_id for u in lake.catalog.upstreams(summary_version.version_id)] == [results.version_id]


def test_consecutive_months_are_runs_and_a_gap_splits_them():
    assert month_runs(["2024-03-01", "2005-01-01", "2024-01-01", "2024-02-01", "2023-12-01"]) == [
        ["2005-01-01"], ["2023-12-01", "2024-01-01", "2024-02-01", "2024-03-01"]]
    assert month_runs(["2024-01-01", "2024-03-01"]) == [["2024-01-01"], ["2024-03-01"]]
    assert month_runs([]) == []
    # A run ends before it would take on more drop bytes than it may; a month bigger than that runs alone.
    sizes = {"2024-01-01": 600, "2024-02-01": 500, "2024-03-01": 400, "2024-04-01": 2000, "2024-05-01": 1}
    assert month_runs(list(sizes), sizes, max_bytes=1000) == [
        ["2024-01-01"], ["2024-02-01", "2024-03-01"], ["2024-04-01"], ["2024-05-01"]]


def test_a_2005_drop_and_a_current_month_drop_both_ingest(letl_env):
    landing = letl_env["landing"]
    now = datetime.now(UTC).strftime("%Y-%m")
    drop(landing, "H001", "2005-01")
    collected_today(drop(landing, "H002", now))
    outcomes = quiet()
    assert [(o["partition"], o["status"]) for o in outcomes] == [("2005-01-01", "ok"), (f"{now}-01", "ok")]
    lake = Lake.from_env()
    for partition in ("2005-01-01", f"{now}-01"):
        assert_published(lake, landing, partition)
        assert lake.latest(RESULTS, partition).rows > 0
    assert summary(lake)["reconciled"]
    # Two months a gap apart are two runs: a range run would cover every month in between.
    assert len({o["run_id"] for o in outcomes}) == 2


def test_drops_before_1900_or_in_a_future_month_are_refused_and_the_others_run(letl_env, capsys):
    landing = letl_env["landing"]
    now = datetime.now(UTC)
    future = f"{now.year + (now.month == 12):04d}-{now.month % 12 + 1:02d}"
    drop(landing, "H001", "2024-01")
    for month in ("1899-12", future, "0042-01"):
        path = landing / "labs" / "H002" / f"{month}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("hospital_id,patient_id\nH002,MRN0000001\n")
    refused = {i.relpath: i.reason for i in scan_landing(landing).ignored}
    assert refused["labs/H002/1899-12.csv"].startswith("dated 1899-12, before 1900-01, the first month the lake holds: refused")
    assert refused["labs/H002/0042-01.csv"].startswith("dated 0042-01, before 1900-01")
    assert refused[f"labs/H002/{future}.csv"].startswith(f"dated {future}, a month that has not begun")
    assert [d.month for d in scan_landing(landing).drops] == ["2024-01"]

    assert main(["run"]) == 0  # the refused files do not make the other months fail
    out = capsys.readouterr().out
    assert "(reconciled)" in out
    results, rejects = Lake.from_env().latest(RESULTS, "2024-01-01"), Lake.from_env().latest(REJECTS, "2024-01-01")
    [figures] = MONTH_LINE.findall(out)
    assert figures[:4] == ("2024-01", f"{results.rows + rejects.rows:,}", f"{results.rows:,}", f"{rejects.rows:,}")
    assert f"  labs/H002/1899-12.csv: {refused['labs/H002/1899-12.csv']}\n" in out.split("ignored files in the landing zone:")[1]
    lake = Lake.from_env()
    report = summary(lake)
    assert report["reconciled"]
    assert {i["relpath"] for i in report["ignored"]} == set(refused)
    # The refusal is recorded with the month that did run, as every ignored file is.
    recorded = {i["relpath"] for i in lake.latest(RESULTS, "2024-01-01").metadata["output"]["ignored_files"]}
    assert recorded == set(refused)


def test_a_range_run_writes_one_version_per_month_with_its_own_lineage_and_checks(letl_env):
    landing = letl_env["landing"]
    months = ["2023-11", "2023-12", "2024-01", "2024-02"]
    for i, month in enumerate(months):
        for hospital in ("H001", "H002"):
            drop(landing, hospital, month, rows=20 + 5 * i)
    lines: list[str] = []
    stream = io.StringIO()
    with progress("letl run", stream=stream) as bar:
        outcomes = run_months(None, force=False, log=lines.append, bar=bar)
    assert [o["status"] for o in outcomes] == ["ok"] * 4
    [run_id] = {o["run_id"] for o in outcomes}  # one Dagster run for the four months
    # One line per month with its own rows and ingest rate, naming the run it shared.
    per_month = [MONTH_LINE.fullmatch(line) for line in lines]
    assert [(m[1], m[2]) for m in per_month] == [(month, f"{2 * (20 + 5 * i):,}") for i, month in enumerate(months)]
    assert all("one run for 4 months 2023-11..2024-02 in " in line for line in lines)
    dropped = sum(d.size for d in scan_landing(landing).drops)
    # Off a terminal the bar ends with one line: every month's drop bytes, counted as each month settled.
    assert stream.getvalue().splitlines()[-1].startswith(f"letl run: {format_size(dropped)} in ")
    lake = Lake.from_env()
    for i, month in enumerate(months):
        partition = f"{month}-01"
        assert_published(lake, landing, partition)
        results, rejects = lake.latest(RESULTS, partition), lake.latest(REJECTS, partition)
        assert results.metadata["output"]["rows_in"] == results.rows + rejects.rows == 2 * (20 + 5 * i)
        assert results.run_id == run_id
    assert len(lake.catalog.list_versions(RESULTS)) == 4
    verdicts = check_verdicts({run_id})
    assert verdicts == {(name, f"{m}-01"): True for name in CHECKS for m in months}
    # Each month's materialization has its own row count, though one run stamped the IO manager's alike.
    counted = {}
    for entry in dg.DagsterInstance.get().all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.dagster_event.event_specific_data.materialization
        counted[(mat.asset_key.to_user_string(), mat.partition)] = mat.metadata["dagster/partition_row_count"].value
    assert counted == {(key, f"{m}-01"): lake.latest(key, f"{m}-01").rows for key in (RESULTS, REJECTS, SUMMARY)
                       for m in months}

    # Unchanged drops: every month is current; --force rebuilds them in one run and reuses each version.
    assert [o["status"] for o in quiet()] == ["up to date"] * 4
    before = {v.version_id for v in lake.catalog.list_versions()}
    forced = quiet(force=True)
    assert [o["status"] for o in forced] == ["ok"] * 4 and len({o["run_id"] for o in forced}) == 1
    assert {v.version_id for v in Lake.from_env().catalog.list_versions()} == before


@pytest.fixture
def five_months(letl_env) -> list[str]:
    months = ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05"]
    for month in months:
        drop(letl_env["landing"], "H001", month)
    return [f"{m}-01" for m in months]


def test_a_broken_middle_month_fails_alone_and_the_others_are_published(letl_env, five_months, monkeypatch):
    """2024-03's drop is still being uploaded while it is read (it grows), which fails that month."""
    from letl.labs import ingest

    real = ingest.ingest_drops

    def reading(drops, **kwargs):
        report = real(drops, **kwargs)
        if drops[0].month == "2024-03":
            with open(drops[0].path, "ab") as handle:
                handle.write(drops[0].path.read_bytes().splitlines(keepends=True)[-1])
        return report

    monkeypatch.setattr(ingest, "ingest_drops", reading)
    outcomes = {o["partition"]: o for o in quiet()}
    assert outcomes["2024-03-01"]["status"] == "FAILED"
    assert outcomes["2024-03-01"]["reason"] == ("labs/H001/2024-03.csv changed while it was read; "
                                                "the month will be rebuilt on the next run")
    good = [p for p in five_months if p != "2024-03-01"]
    assert [outcomes[p]["status"] for p in good] == ["ok"] * 4
    lake = Lake.from_env()
    for partition in good:
        assert_published(lake, letl_env["landing"], partition)
    assert all(lake.latest(k, "2024-03-01") is None for k in (RESULTS, REJECTS, SUMMARY))
    verdicts = check_verdicts({o["run_id"] for o in outcomes.values()})
    assert all(verdicts[(name, p)] for name in CHECKS for p in good)
    assert list(lake.config.staging.glob("*.parquet")) == []
    report = summary(lake, {"2024-03-01": outcomes["2024-03-01"]["reason"]})
    assert not report["reconciled"]
    assert report["not_current"] == [{"partition": "2024-03-01", "status": "FAILED",
                                      "reason": outcomes["2024-03-01"]["reason"]}]

    monkeypatch.setattr(ingest, "ingest_drops", real)  # the upload has finished
    again = quiet()
    assert [o["status"] for o in again] == ["up to date", "up to date", "ok", "up to date", "up to date"]
    assert summary(Lake.from_env())["reconciled"]


def test_a_failure_that_names_no_month_is_narrowed_down_to_it(letl_env, five_months, monkeypatch):
    """The summary step fails for 2024-04 with an error that does not say which month it was: the
    range is split until that month runs alone, and its reason is its own error."""
    import pyarrow.parquet as pq

    from letl.labs import summary as lab_summary

    real = lab_summary.summarize

    def summarize(path):
        if "2024-04" in str(pq.read_table(path, columns=["collected_at"]).column(0)[0]):
            raise RuntimeError("the summary query was cancelled")
        return real(path)

    monkeypatch.setattr(lab_summary, "summarize", summarize)
    lines: list[str] = []
    outcomes = {o["partition"]: o for o in run_months(None, force=False, log=lines.append)}
    assert outcomes["2024-04-01"]["status"] == "FAILED"
    assert outcomes["2024-04-01"]["reason"] == "RuntimeError: the summary query was cancelled"
    assert lines[0] == ("2024-01..2024-05: the run failed (RuntimeError: the summary query was cancelled); "
                        "building each half again on its own to find the month that fails")
    assert [re.match(r"\[\d/5\] \d{4}-\d{2}: (?:ok|FAILED)", line)[0] for line in lines if line.startswith("[")] == [
        "[1/5] 2024-01: ok", "[2/5] 2024-02: ok", "[3/5] 2024-03: ok", "[4/5] 2024-04: FAILED", "[5/5] 2024-05: ok"]
    good = [p for p in five_months if p != "2024-04-01"]
    assert [outcomes[p]["status"] for p in good] == ["ok"] * 4
    lake = Lake.from_env()
    for partition in good:
        assert_published(lake, letl_env["landing"], partition)
    assert lake.latest(SUMMARY, "2024-04-01") is None
    assert month_problem(lake, "2024-04-01", signatures(letl_env["landing"], "2024-04-01")) == (
        "no lab_results_summary version")


def test_a_month_failing_its_blocking_check_is_reported_and_the_others_rerun_without_it(
        letl_env, five_months, monkeypatch):
    from letl_assets.assets import lab_checks

    real = lab_checks.reconcile_problem

    def problem(results, rejects):
        return "rows do not reconcile: planted" if results.partition == "2024-02-01" else real(results, rejects)

    monkeypatch.setattr(lab_checks, "reconcile_problem", problem)
    outcomes = {o["partition"]: o for o in quiet()}
    assert outcomes["2024-02-01"] == {"partition": "2024-02-01", "status": "FAILED", "run_id": outcomes["2024-02-01"]["run_id"],
                                      "reason": "check rows_reconcile failed: rows do not reconcile: planted"}
    # The range run named its failed month, so the others ran again as two runs around it, not halves.
    assert len({o["run_id"] for o in outcomes.values()}) == 3
    assert outcomes["2024-01-01"]["run_id"] != outcomes["2024-03-01"]["run_id"] == outcomes["2024-05-01"]["run_id"]
    lake = Lake.from_env()
    for partition in five_months:
        if partition != "2024-02-01":
            assert_published(lake, letl_env["landing"], partition)
    assert lake.latest(SUMMARY, "2024-02-01") is None  # the blocking check kept its summary from being built


def test_a_month_too_big_for_the_room_left_fails_alone_and_the_small_ones_publish(letl_env, monkeypatch):
    """Whether a month fits depends on its size: a NoRoom in a range run is split like any failure."""
    for month, rows in (("2024-01", 50), ("2024-02", 8_000), ("2024-03", 50)):
        drop(letl_env["landing"], "H001", month, rows=rows)
    for tier in ("PMEM", "SSD", "HDD"):
        monkeypatch.setenv(f"LETL_TIER_{tier}_QUOTA", "60KB")
    outcomes = {o["partition"]: o for o in quiet()}
    assert outcomes["2024-02-01"]["status"] == "FAILED"
    assert outcomes["2024-02-01"]["reason"].startswith("NoRoom: no tier among"), outcomes
    lake = Lake.from_env()
    for partition in ("2024-01-01", "2024-03-01"):
        assert outcomes[partition]["status"] == "ok"
        assert_published(lake, letl_env["landing"], partition)
    assert all(lake.latest(k, "2024-02-01") is None for k in (RESULTS, REJECTS, SUMMARY))
    assert list(lake.config.staging.glob("*.parquet")) == []  # the failed tries left no rejects behind


def test_a_failure_while_staging_a_range_leaves_nothing_in_staging(letl_env, five_months, monkeypatch):
    """A disk error while the IO manager stages 2024-02's results: the months staged before it are
    discarded, and the files it never took (later months, every month's rejects) are removed."""
    real = Lake.stage_version

    def stage_version(self, asset_key, data, **kwargs):
        if asset_key == RESULTS and kwargs.get("partition") == "2024-02-01" and not failed:
            failed.append(True)
            raise OSError("simulated disk error while staging")
        return real(self, asset_key, data, **kwargs)

    failed: list[bool] = []
    monkeypatch.setattr(Lake, "stage_version", stage_version)
    outcomes = quiet()
    assert failed and [o["status"] for o in outcomes] == ["ok"] * 5  # the split reruns heal it
    lake = Lake.from_env()
    for partition in five_months:
        assert_published(lake, letl_env["landing"], partition)
    assert list(lake.config.staging.glob("*.parquet")) == []
