"""Hospital lab results: monthly drops -> validated, de-identified results, rejects and a summary."""

import re
import time
import warnings
from datetime import timedelta

import dagster as dg

from letl.labs.drops import month_of_partition
from letl.lake import names
from letl.lake.config import format_size
from letl_assets.resources.deid import PseudonymKey
from letl_assets.resources.event_metadata import PARTITION_ROWS
from letl_assets.resources.io_manager import ACCESS, TIER_HINT, ByPartition, VersionFiles
from letl_assets.resources.landing import LandingZone
from letl_assets.resources.tiers import LakeResource

LAB_TEAM = "team:lab-data"
_PLAIN_COLUMN = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Every month from 1900 to the current one, as a constant (configuration is not read at import
# time): hospitals load their archives first, and a drop of any of those months must find its
# partition. Monthly time windows, not dynamic partitions, so freshness policies, partition ranges
# and the UI's time axis keep working; ~1,500 partitions is well within what the UI handles.
# end_offset=1 adds the month in progress, which the default leaves out until it has ended.
# labs/drops.py refuses drops dated outside this range, so they never reach a run.
MONTHLY = dg.MonthlyPartitionsDefinition(start_date="1900-01-01", end_offset=1)
# Many months in one run (`letl run`, a backfill from the UI): a whole Dagster run costs ~1.5 s,
# which a small month's ingest does not. Each month still becomes its own version (ByPartition).
SINGLE_RUN = dg.BackfillPolicy.single_run()
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
# Failure metadata naming the month that failed in a run over many, so that `letl run` can rerun
# the others without it.
FAILED_PARTITION = "letl/failed_partition"
# Materialization metadata of lab_results: seconds the month's ingest took (parse, de-identify, write).
INGEST_SECONDS = "letl/ingest_seconds"
LIVE_LOG_BYTES = 50_000_000  # a month of more drop bytes than this takes long enough to log as it goes

# The key strings live in lake/names.py, where faces that must not write them (the API) read them.
LAB_DROPS = dg.AssetKey.from_user_string(names.LAB_DROPS)
LAB_RESULTS = dg.AssetKey.from_user_string(names.LAB_RESULTS)
LAB_REJECTS = dg.AssetKey.from_user_string(names.LAB_REJECTS)
LAB_SUMMARY = dg.AssetKey.from_user_string(names.LAB_SUMMARY)

# Late historic months must propagate too: plain eager() only looks at the latest month.
ON_UPSTREAM_CHANGE = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())

# Monthly data: older than 35 days means a month was missed.
MONTHLY_WINDOW = timedelta(days=35)
MONTHLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=MONTHLY_WINDOW)

lab_drops = dg.AssetSpec(
    LAB_DROPS,
    description="Monthly lab-result CSV drops from the hospitals, under LETL_LANDING/labs.",
    partitions_def=MONTHLY,
    group_name="labs",
    kinds={"csv"},
)


@dg.multi_asset(
    outs={
        "lab_results": dg.AssetOut(
            key=LAB_RESULTS,
            description="Validated, de-identified lab results, one version per month.",
            metadata={TIER_HINT: "ssd", ACCESS: "deidentified"},
            owners=[LAB_TEAM],
            kinds={"parquet", "duckdb"},
        ),
        "lab_results_rejects": dg.AssetOut(
            key=LAB_REJECTS,
            description="Quarantined drop rows with source file, line and reason; holds raw identifiers.",
            metadata={TIER_HINT: "hdd", ACCESS: "restricted"},
            owners=[LAB_TEAM],
            kinds={"parquet"},
        ),
    },
    deps=[LAB_DROPS],
    partitions_def=MONTHLY,
    backfill_policy=SINGLE_RUN,
    group_name="labs",
)
def lab_results(context: dg.AssetExecutionContext, lake: LakeResource, landing: LandingZone, pseudonym: PseudonymKey):
    """Lab results and rejects of each month of the run, parsed from every hospital's drop."""
    the_lake = lake.get_lake()
    key = pseudonym.get(the_lake.config.home, context.log.info)
    built: dict[str, tuple] = {}  # partition -> (report, metadata of results, metadata of rejects, drops read)
    seconds: dict[str, float] = {}
    try:
        for partition in context.partition_keys:
            started = time.perf_counter()
            built[partition] = _month(context, the_lake, landing, key, partition)
            seconds[partition] = round(time.perf_counter() - started, 3)
        # One scan after every month was read: a file that changed or arrived since its month's read
        # is seen, as the outputs would describe bytes nobody can see again.
        now = landing.scan(settled=False).drops
        for partition, (*_, drops) in built.items():
            month = month_of_partition(partition)
            if problem := _changed_while_read(drops, [d for d in now if d.month == month]):
                raise _failed(partition, dg.Failure(description=problem))
    except BaseException:
        for report, *_ in built.values():
            report.good_path.unlink(missing_ok=True)
            report.rejects_path.unlink(missing_ok=True)
        raise
    for partition, (report, good, rejected, _) in built.items():
        # The month's ingest time is the event's only: kept with the version, it would make every rerun
        # of unchanged drops look like new output. The row counts are set here too because in a range
        # run the IO manager's metadata is stamped alike on every month.
        context.add_asset_metadata({**good, INGEST_SECONDS: seconds[partition], PARTITION_ROWS: report.rows_out},
                                   asset_key=LAB_RESULTS, partition_key=partition)
        context.add_asset_metadata({**rejected, PARTITION_ROWS: report.rows_rejected}, asset_key=LAB_REJECTS,
                                   partition_key=partition)
    try:
        yield dg.Output(ByPartition({p: b[0].good_path for p, b in built.items()}, {p: b[1] for p, b in built.items()}),
                        output_name="lab_results")
        yield dg.Output(ByPartition({p: b[0].rejects_path for p, b in built.items()}, {p: b[2] for p, b in built.items()}),
                        output_name="lab_results_rejects")
    finally:
        # Whatever the IO manager did not take (the first output failed to stage, so the rejects were
        # never handed over) is removed now: staged files were moved away, and rejects hold raw values.
        for report, *_ in built.values():
            report.good_path.unlink(missing_ok=True)
            report.rejects_path.unlink(missing_ok=True)


def _month(context, the_lake, landing: LandingZone, key: bytes, partition: str) -> tuple:
    """One month's drops ingested into staging: (report, results metadata, rejects metadata, drops)."""
    from letl.labs.ingest import ingest_drops  # DuckDB loads with the step, not with the code location

    month = month_of_partition(partition)
    scan = landing.scan(month, settled=False)
    drops = scan.drops
    if not drops:
        raise _failed(partition, dg.Failure(
            f"no drops for {month} under {landing.root() / 'labs'} (expected <hospital_id>/{month}.csv[.gz])"))
    size = sum(d.size for d in drops)
    # A small month logs once when done: each line is a write to the Dagster event log, which over a
    # range of small months costs more than their ingest. A big one logs as it goes.
    lines: list[str] = []
    log = context.log.info if size > LIVE_LOG_BYTES else lines.append
    log(f"{month}: parsing {len(drops)} drop(s), {format_size(size)}")
    good_path, rejects_path = the_lake.staging_path(), the_lake.staging_path()
    try:
        report = ingest_drops(drops, good_path=good_path, rejects_path=rejects_path, key=key,
                              temp_dir=the_lake.config.staging, log=log)
    except Exception as error:
        good_path.unlink(missing_ok=True)
        rejects_path.unlink(missing_ok=True)
        raise _failed(partition, error) from error
    finally:
        if lines:
            context.log.info("\n".join(lines))
    common = {
        "rows_in": report.rows_in,
        "rows_out": report.rows_out,
        "rows_rejected": report.rows_rejected,
        "lines_in": report.lines_in,
        "header_lines": report.header_lines,
        "source_files": [f.relpath for f in report.files],
        "quarantined_files": {f.relpath: f.problem for f in report.files if f.problem},
        "source_signatures": [d.signature for d in drops],
    }
    extra = sorted({c for f in report.files for c in f.extra_columns})
    named = [c for c in extra if _PLAIN_COLUMN.fullmatch(c) and not re.search(r"[0-9]{3}", c)]
    good = {
        **common,
        # A header cell can be data (a row pasted into the header line): only plain snake_case names
        # are named here, where the catalog and the event log keep them; the rest are counted.
        "ignored_columns": named,
        "ignored_columns_withheld": len(extra) - len(named),
        "encodings": {f.relpath: f.encoding for f in report.files},
        "ignored_files": [{"relpath": i.relpath, "reason": i.reason} for i in scan.ignored],
    }
    return report, good, {**common, **report.reasons_metadata()}, drops


def _failed(partition: str, error: Exception) -> dg.Failure:
    """The month's failure, naming the month in its metadata; the reason is the error's own line (ingest
    errors name the file, line and problem, never a field)."""
    if isinstance(error, dg.Failure):
        description = error.description
    else:
        description = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
    return dg.Failure(description=description, metadata={FAILED_PARTITION: partition})


def _changed_while_read(before, after) -> str | None:
    """Why the drops read no longer match the landing zone, or None: the output would describe
    bytes nobody can see again (an upload still appending, a file replaced mid-read)."""
    now = {d.relpath: d.signature for d in after}
    for drop in before:
        if now.pop(drop.relpath, None) != drop.signature:
            return f"{drop.relpath} changed while it was read; the month will be rebuilt on the next run"
    if now:
        return f"{min(now)} arrived while the month was read; the month will be rebuilt on the next run"
    return None


@dg.asset(
    key=LAB_SUMMARY,
    ins={"results": dg.AssetIn(key=LAB_RESULTS)},
    partitions_def=MONTHLY,
    backfill_policy=SINGLE_RUN,
    automation_condition=ON_UPSTREAM_CHANGE,
    freshness_policy=MONTHLY_FRESHNESS,
    metadata={TIER_HINT: "pmem", ACCESS: "deidentified"},
    owners=[LAB_TEAM],
    group_name="labs",
    kinds={"parquet", "duckdb"},
)
def lab_results_summary(context: dg.AssetExecutionContext, results: VersionFiles) -> ByPartition:
    """Per hospital and test in each month: count, mean, min, max and abnormal rate, from that month's
    results version alone."""
    from letl.labs.summary import summarize

    summaries = {partition: summarize(file.path) for partition, file in results.items()}
    for partition, table in summaries.items():  # per month: the IO manager's metadata is alike over a range
        context.add_asset_metadata({PARTITION_ROWS: table.num_rows}, partition_key=partition)
    return ByPartition(summaries)
