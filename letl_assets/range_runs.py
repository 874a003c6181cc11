"""Runs over ranges of months: which months go in one Dagster run, how a range run is launched, and
which months a failed run names as its cause."""

from letl.lake.errors import TierUnavailable

# Progress lines and warnings on the console; step-level DEBUG events stay in the Dagster UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

# Drop bytes one run may take on: a run's outputs wait in staging until its end, and a failure
# discards its work. At ~1 minute of ingest per GB, the ~1.5 s a run costs is still negligible.
RUN_BYTES = 1_000_000_000


def month_runs(partitions: list[str], sizes: dict[str, int] | None = None,
               max_bytes: int = RUN_BYTES) -> list[list[str]]:
    """The partitions as runs of consecutive months: a range run covers every month between its ends,
    so it may only span months that are to be built (2005-01 and 2024-03 are two runs). With the
    months' drop sizes, a run also ends before it would take on more than max_bytes."""
    sizes = sizes or {}
    runs: list[list[str]] = []
    taken = 0
    for partition in sorted(partitions):
        size = sizes.get(partition, 0)
        if runs and _next_month(runs[-1][-1]) == partition and taken + size <= max_bytes:
            runs[-1].append(partition)
            taken += size
        else:
            runs.append([partition])
            taken = size
    return runs


def _next_month(partition: str) -> str:
    y, m = int(partition[:4]), int(partition[5:7])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}-01"


def blamed_months(result) -> dict[str, str]:
    """The months a failed run names as its cause, with their reasons: a blocking check that failed
    for a month, or a Failure an asset raised naming its month (``labs.FAILED_PARTITION``)."""
    from letl_assets.assets.labs import FAILED_PARTITION

    blamed: dict[str, str] = {}
    for check in result.get_asset_check_evaluations():
        if not check.passed and check.blocking and check.partition:
            blamed.setdefault(check.partition, _one_line(
                f"check {check.check_name} failed: {check.description or 'see its metadata'}"))
    for event in result.get_step_failure_events():
        failure = event.step_failure_data.user_failure_data
        if failure is not None and FAILED_PARTITION in failure.metadata:
            partition = str(failure.metadata[FAILED_PARTITION].value)
            blamed.setdefault(partition, _one_line(failure.description or "the month failed"))
    return blamed


def lake_failure(result) -> bool:
    """Whether the run failed because a tier is unreachable: every month would fail alike, so
    splitting the run would only repeat the failure. A full lake is not such a failure: whether a
    month fits depends on its size, so a run that hit NoRoom is split like any other, and a small
    month still publishes beside one too big for the room left."""
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            if error.cls_name == TierUnavailable.__name__:
                return True
            error = error.cause
    return False


def month_figures(result) -> dict[str, str]:
    """Per month a run built: "100,000 rows in, 94,000 out, 6,000 rejected, 12.3 s, 8,130 rows/s", from
    its lab_results materialization (the seconds are the month's ingest, which dominate its cost)."""
    from letl_assets.assets.labs import INGEST_SECONDS, LAB_RESULTS, lab_results
    from letl_assets.resources.event_metadata import plain_values

    figures = {}
    for event in result.asset_materializations_for_node(lab_results.op.name):
        if event.asset_key != LAB_RESULTS or event.partition is None:
            continue
        meta = plain_values(event.metadata)
        rows_in, seconds = meta.get("rows_in"), meta.get(INGEST_SECONDS)
        if rows_in is None or seconds is None:
            continue
        rate = f", {rows_in / seconds:,.0f} rows/s" if seconds > 0 else ""
        figures[event.partition] = (f"{rows_in:,} rows in, {meta.get('rows_out', 0):,} out, "
                                    f"{meta.get('rows_rejected', 0):,} rejected, {seconds:.1f} s{rate}")
    return figures


def span(batch: list[str]) -> str:
    return f"{batch[0][:7]}..{batch[-1][:7]}"


def execute(job, instance, batch: list[str]):
    """One Dagster run over the batch: a single partition, or a range that the single-run backfill
    policy of the lab assets builds in one run (the tags are how Dagster's own `asset materialize
    --partition-range` asks for it)."""
    if len(batch) == 1:
        return job.execute_in_process(partition_key=batch[0], instance=instance, raise_on_error=False, run_config=QUIET)
    tags = {"dagster/asset_partition_range_start": batch[0], "dagster/asset_partition_range_end": batch[-1]}
    return job.execute_in_process(tags=tags, instance=instance, raise_on_error=False, run_config=QUIET)


def failure_reason(result) -> str:
    """The first real cause of a failed run, one line: a blocking check's verdict, the Failure an
    asset raised, or the innermost exception (ingest errors name file, line and problem only)."""
    for check in result.get_asset_check_evaluations():
        if not check.passed and check.blocking:
            return _one_line(f"check {check.check_name} failed: {check.description or 'see its metadata'}")
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return _one_line(data.user_failure_data.description)
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:  # "pkg.module.Error: text" -> "Error: text"
            text = error.message.split(": ", 1)[-1]
            return _one_line(f"{error.cls_name}: {text}" if error.cls_name else error.message)
    return "the run failed; its events are in the Dagster UI"


def _one_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]
