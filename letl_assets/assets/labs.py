"""Hospital lab results: monthly drops -> validated, de-identified results, rejects and a summary."""

import re
from datetime import timedelta

import dagster as dg

from ..labs.drops import month_of_partition
from ..lake import names
from ..resources.deid import PseudonymKey
from ..resources.io_manager import ACCESS, TIER_HINT, VersionFile
from ..resources.landing import LandingZone
from ..resources.tiers import LakeResource

LAB_TEAM = "team:lab-data"
_PLAIN_COLUMN = re.compile(r"[a-z][a-z0-9_]{0,63}")
MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2020-01-01")

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
    group_name="labs",
)
def lab_results(context: dg.AssetExecutionContext, lake: LakeResource, landing: LandingZone, pseudonym: PseudonymKey):
    """Lab results and rejects of one month, parsed from every hospital's drop."""
    from ..labs.ingest import ingest_drops  # DuckDB loads with the step, not with the code location

    month = month_of_partition(context.partition_key)
    scan = landing.scan(month, settled=False)
    drops = scan.drops
    if not drops:
        raise dg.Failure(f"no drops for {month} under {landing.root() / 'labs'} (expected <hospital_id>/{month}.csv[.gz])")
    the_lake = lake.get_lake()
    key = pseudonym.get(the_lake.config.home, context.log.info)
    context.log.info(f"{month}: parsing {len(drops)} drop(s), {sum(d.size for d in drops) / 1e6:.1f} MB")
    report = ingest_drops(
        drops,
        good_path=the_lake.staging_path(),
        rejects_path=the_lake.staging_path(),
        key=key,
        temp_dir=the_lake.config.staging,
        log=context.log.info,
    )
    if problem := _changed_while_read(drops, landing.scan(month, settled=False).drops):
        for path in (report.good_path, report.rejects_path):
            path.unlink(missing_ok=True)
        raise dg.Failure(description=problem)
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
    yield dg.Output(
        report.good_path,
        output_name="lab_results",
        metadata={
            **common,
            # A header cell can be data (a row pasted into the header line): only plain snake_case names
            # are named here, where the catalog and the event log keep them; the rest are counted.
            "ignored_columns": named,
            "ignored_columns_withheld": len(extra) - len(named),
            "encodings": {f.relpath: f.encoding for f in report.files},
            "ignored_files": [{"relpath": i.relpath, "reason": i.reason} for i in scan.ignored],
        },
    )
    yield dg.Output(report.rejects_path, output_name="lab_results_rejects", metadata={**common, **report.reasons_metadata()})


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
    automation_condition=ON_UPSTREAM_CHANGE,
    freshness_policy=MONTHLY_FRESHNESS,
    metadata={TIER_HINT: "pmem", ACCESS: "deidentified"},
    owners=[LAB_TEAM],
    group_name="labs",
    kinds={"parquet", "duckdb"},
)
def lab_results_summary(results: VersionFile):
    """Per hospital and test in one month: count, mean, min, max and abnormal rate."""
    from ..labs.summary import summarize

    return summarize(results.path)
