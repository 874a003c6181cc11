"""`letl run`: the main job on the embedded default, every month of the landing zone, one run at a time."""

import fcntl
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .lake.errors import InProgress, InvalidInput, NotFound
from .lake.lake import Lake
from .report import month_problem

# Progress lines and warnings on the console; step-level DEBUG events stay in the Dagster UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

# Lock files this process holds, with their depth: `letl run` takes the lock around its whole
# work and run_months takes it again, so the inner take must not wait for the outer one.
_HELD: dict[Path, int] = {}


@contextmanager
def run_lock(home: Path, log: Callable[[str], None] = print, wait: bool = True) -> Iterator[None]:
    """One `letl run` per LETL_HOME: an OS lock (released by the kernel if the holder dies), so two
    runs never build the same month at once nor create the Dagster instance's tables together."""
    path = (Path(home) / "run.lock").absolute()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            if not wait:
                raise InProgress(f"another letl run (pid {holder}) is working on {home}; "
                                 "run again when it has finished, or leave out --no-wait to wait") from None
            log(f"another letl run (pid {holder}) is working on {home}: waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]  # closing the file releases the lock


def ensure_dagster_home(home: Path) -> Path:
    """Runs and the UI share one Dagster instance under LETL_HOME unless DAGSTER_HOME says otherwise."""
    path = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").absolute()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


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


def parse_months(months: list[str]) -> list[str]:
    """'2024-3', '2024-03', '2024-03-01' and ranges '2024-01..2024-06' -> sorted, distinct partition keys."""
    def month(part: str, text: str) -> tuple[int, int]:
        match = re.fullmatch(r"(\d{4})-(\d{1,2})(?:-01)?", part.strip())
        if not match or not 1 <= int(match[2]) <= 12:
            raise InvalidInput(f"--months {text!r}: give a month as YYYY-MM (or YYYY-M), or a range YYYY-MM..YYYY-MM")
        return int(match[1]), int(match[2])

    keys = set()
    for text in months:
        first, dots, last = text.partition("..")
        (y, m), end = month(first, text), month(last if dots else first, text)
        if end < (y, m):
            raise InvalidInput(f"--months {text!r}: the range ends before it starts")
        while (y, m) <= end:
            keys.add(f"{y:04d}-{m:02d}-01")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return sorted(keys)


def run_months(months: list[str] | None, force: bool, log: Callable[[str], None] = print) -> list[dict]:
    """Materialize labs_job for each month with drops that is not current; one record per month.

    A month is current when its results, rejects and summary exist and were built from exactly
    the drops the landing zone holds now, so a month left half-built by a crash or a failed
    check is rebuilt on the next run, with or without --force.
    """
    import dagster as dg

    from .resources.landing import LandingZone

    lake = Lake.from_env()
    with run_lock(lake.config.home, log):
        ensure_dagster_home(lake.config.home)
        instance = dg.DagsterInstance.get()  # creates the instance's tables: under the lock, never twice at once
        from .definitions import defs

        by_month: dict[str, list[str]] = {}
        for drop in LandingZone().scan(settled=False).drops:
            by_month.setdefault(drop.partition_key, []).append(drop.signature)
        wanted = sorted(by_month) if not months else parse_months(months)
        job = defs.resolve_job_def("labs_job")
        outcomes = []
        for i, partition in enumerate(wanted, 1):
            if partition not in by_month:
                raise NotFound(f"no drops for {partition[:7]} in {LandingZone().root() / 'labs'}; months with "
                               f"drops: {', '.join(p[:7] for p in sorted(by_month)) or 'none'}")
            if not force and month_problem(lake, partition, by_month[partition]) is None:
                log(f"[{i}/{len(wanted)}] {partition[:7]}: up to date, skipped (use --force to rebuild)")
                outcomes.append({"partition": partition, "status": "up to date"})
                continue
            started = time.perf_counter()
            result = job.execute_in_process(
                partition_key=partition, instance=instance, raise_on_error=False, run_config=QUIET
            )
            outcome = {"partition": partition, "status": "ok" if result.success else "FAILED", "run_id": result.run_id}
            line = f"[{i}/{len(wanted)}] {partition[:7]}: {outcome['status']} in {time.perf_counter() - started:.1f}s"
            if not result.success:
                outcome["reason"] = failure_reason(result)
                line += f": {outcome['reason']}"
            log(f"{line} (run {result.run_id})")
            outcomes.append(outcome)
        return outcomes
