"""`letl run`: the main job on the embedded default, every month of the landing zone, one run at a time."""

import fcntl
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from letl.labs.drops import FIRST_MONTH, current_month
from letl.labs.reconcile import month_problem
from letl.lake.errors import InProgress, InvalidInput, NotFound
from letl.lake.lake import Lake
from letl_assets.range_runs import blamed_months, execute, failure_reason, lake_failure, month_figures, month_runs, span

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
        if f"{y:04d}-{m:02d}" < FIRST_MONTH or f"{end[0]:04d}-{end[1]:02d}" > current_month():
            raise InvalidInput(f"--months {text!r}: the lake holds the months from {FIRST_MONTH} "
                               f"to {current_month()} (the current one)")
        while (y, m) <= end:
            keys.add(f"{y:04d}-{m:02d}-01")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return sorted(keys)


def run_months(months: list[str] | None, force: bool, log: Callable[[str], None] = print, bar=None) -> list[dict]:
    """Materialize labs_job for each month with drops that is not current; one record per month.

    A month is current when its results, rejects and summary exist and were built from exactly
    the drops the landing zone holds now, so a month left half-built by a crash or a failed
    check is rebuilt on the next run, with or without --force.

    Consecutive months are built in one run (a Dagster run costs ~1.5 s, more than a small month).
    A run that fails is split so that one broken month does not discard the others: the months it
    names as failed (a blocking check, a Failure naming its month) are reported with their reason and
    the rest run again without them; when it names none, each half runs again on its own, down to
    single months, whose failure is then the month's own. A failure of the lake's storage fails
    every month of the run at once.

    Each month built is logged with its rows in, out and rejected, its ingest's seconds and rows/s;
    ``bar`` (letl.cli.progress), if given, advances by each settled month's drop bytes.
    """
    import dagster as dg

    from letl_assets.resources.landing import LandingZone

    lake = Lake.from_env()
    with run_lock(lake.config.home, log):
        ensure_dagster_home(lake.config.home)
        instance = dg.DagsterInstance.get()  # creates the instance's tables: under the lock, never twice at once
        from letl_assets.definitions import defs

        by_month: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for drop in LandingZone().scan(settled=False).drops:
            by_month.setdefault(drop.partition_key, []).append(drop.signature)
            sizes[drop.partition_key] = sizes.get(drop.partition_key, 0) + drop.size
        wanted = sorted(by_month) if not months else parse_months(months)
        job = defs.resolve_job_def("labs_job")
        outcomes: dict[str, dict] = {}
        index = {partition: i for i, partition in enumerate(wanted, 1)}

        def settle(partition: str, status: str, seconds: float, batch: list[str], run_id: str, reason=None,
                   figures=None) -> None:
            outcomes[partition] = {"partition": partition, "status": status, "run_id": run_id}
            # With figures the time goes at the end of the line, else right after the status.
            head, took = (f"{status}, {figures}", f" in {seconds:.1f} s") if figures else (f"{status} in {seconds:.1f}s", "")
            line = f"[{index[partition]}/{len(wanted)}] {partition[:7]}: {head}"
            if reason:
                outcomes[partition]["reason"] = reason
                line += f": {reason}"
            shared = f", one run for {len(batch)} months {span(batch)}" if len(batch) > 1 else ""
            log(f"{line} (run {run_id}{shared}{took})")
            if bar is not None:
                bar.advance(sizes.get(partition, 0))

        todo = []
        for partition in wanted:
            if partition not in by_month:
                raise NotFound(f"no drops for {partition[:7]} in {LandingZone().root() / 'labs'}; months with "
                               f"drops: {', '.join(p[:7] for p in sorted(by_month)) or 'none'}")
            if not force and month_problem(lake, partition, by_month[partition]) is None:
                log(f"[{index[partition]}/{len(wanted)}] {partition[:7]}: up to date, skipped (use --force to rebuild)")
                outcomes[partition] = {"partition": partition, "status": "up to date"}
            else:
                todo.append(partition)
        queue = month_runs(todo, sizes)
        if bar is not None:
            bar.update(0, sum(sizes.get(p, 0) for p in todo))
        while queue:
            batch = queue.pop(0)
            started = time.perf_counter()
            result = execute(job, instance, batch)
            seconds = time.perf_counter() - started
            if result.success:
                figures = month_figures(result)
                for partition in batch:
                    settle(partition, "ok", seconds, batch, result.run_id, figures=figures.get(partition))
                continue
            if len(batch) == 1 or lake_failure(result):
                for partition in batch:
                    settle(partition, "FAILED", seconds, batch, result.run_id, failure_reason(result))
                continue
            blamed = {p: reason for p, reason in blamed_months(result).items() if p in batch}
            for partition, reason in blamed.items():
                settle(partition, "FAILED", seconds, batch, result.run_id, reason)
            rest = [p for p in batch if p not in blamed]
            halves = [rest] if blamed else [rest[: len(rest) // 2], rest[len(rest) // 2:]]
            if rest:
                log(f"{span(batch)}: the run failed ({failure_reason(result)}); " + (
                    f"building its other {len(rest)} month(s) again without the failed one(s)" if blamed
                    else "building each half again on its own to find the month that fails"))
            queue[:0] = [run for half in halves for run in month_runs(half, sizes)]
        return [outcomes[p] for p in wanted]
