"""`letl run`: the main job on the embedded default, every month of the landing zone."""

import os
import time
from pathlib import Path
from typing import Callable

from .lake.lake import Lake

# Progress lines and warnings on the console; step-level DEBUG events stay in the Dagster UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def ensure_dagster_home(home: Path) -> Path:
    """Runs and the UI share one Dagster instance under LETL_HOME unless DAGSTER_HOME says otherwise."""
    path = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").absolute()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def up_to_date(lake: Lake, partition: str, signatures: list[str]) -> bool:
    """The month's latest published version was built from exactly these drop files."""
    from .assets.labs import LAB_RESULTS, LAB_SUMMARY
    from .resources.io_manager import asset_key_str

    results = lake.latest(asset_key_str(LAB_RESULTS), partition)
    summary = lake.latest(asset_key_str(LAB_SUMMARY), partition)
    recorded = results.metadata.get("output", {}).get("source_signatures") if results else None
    return summary is not None and sorted(recorded or []) == sorted(signatures)


def run_months(months: list[str] | None, force: bool, log: Callable[[str], None] = print) -> list[dict]:
    """Materialize labs_job for each month with drops; returns one record per month."""
    import dagster as dg

    from .definitions import defs
    from .resources.landing import LandingZone

    lake = Lake.from_env()
    ensure_dagster_home(lake.config.home)
    drops = LandingZone().drops(settled=False)
    by_month: dict[str, list[str]] = {}
    for drop in drops:
        by_month.setdefault(drop.partition_key, []).append(drop.signature)
    wanted = sorted(by_month) if not months else [m if len(m) == 10 else f"{m}-01" for m in months]
    job = defs.resolve_job_def("labs_job")
    instance = dg.DagsterInstance.get()
    outcomes = []
    for i, partition in enumerate(wanted, 1):
        if partition not in by_month:
            raise SystemExit(f"no drops for {partition[:7]} in {LandingZone().root() / 'labs'}")
        if not force and up_to_date(lake, partition, by_month[partition]):
            log(f"[{i}/{len(wanted)}] {partition[:7]}: up to date, skipped (use --force to rebuild)")
            outcomes.append({"partition": partition, "status": "up to date"})
            continue
        started = time.perf_counter()
        result = job.execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False, run_config=QUIET
        )
        seconds = time.perf_counter() - started
        status = "ok" if result.success else "FAILED"
        log(f"[{i}/{len(wanted)}] {partition[:7]}: {status} in {seconds:.1f}s (run {result.run_id})")
        if not result.success:
            for event in result.all_events:
                if event.is_failure and event.message:
                    log(f"    {event.message.splitlines()[0][:300]}")
        outcomes.append({"partition": partition, "status": status, "run_id": result.run_id})
    return outcomes
