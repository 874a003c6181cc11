"""Whether a month's published lab versions account for its drops: the one rule that `letl run`,
the landing sensor, the reconciliation check and `letl report` decide by."""

from letl.lake.catalog import Version
from letl.lake.lake import Lake
from letl.lake.names import LAB_REJECTS, LAB_RESULTS, LAB_SUMMARY


def recorded_sources(version: Version) -> list[str]:
    """The drop signatures a lab version was built from, as its ingest recorded them."""
    return sorted(version.metadata.get("output", {}).get("source_signatures") or [])


def reconcile_problem(results: Version, rejects: Version) -> str | None:
    """Why a month's results and rejects do not account for the same input, or None.

    Content, not run ids: an unchanged output keeps its earlier version (and that run's id),
    so the sources recorded with each version are what must agree.
    """
    if recorded_sources(results) != recorded_sources(rejects):
        return "results and rejects were built from different drops"
    rows_in = results.metadata.get("output", {}).get("rows_in")
    if rows_in != (results.rows or 0) + (rejects.rows or 0):
        return f"rows do not reconcile: in {rows_in} != out {results.rows} + rejected {rejects.rows}"
    return None


def month_problem(lake: Lake, partition: str, signatures: list[str]) -> str | None:
    """Why a month with these drops lacks current results, rejects and summary built from them, or None."""
    found = {key: lake.latest(key, partition) for key in (LAB_RESULTS, LAB_REJECTS, LAB_SUMMARY)}
    missing = [key.split("/")[-1] for key, v in found.items() if v is None]
    if missing:
        return f"no {' or '.join(missing)} version"
    results, rejects, summary_version = found.values()
    changed = set(recorded_sources(results)) ^ set(signatures)
    if changed:
        files = sorted({s.rsplit(":", 2)[0] for s in changed})
        return f"built from other drops than the landing zone holds ({', '.join(files)})"
    if problem := reconcile_problem(results, rejects):
        return problem
    if results.version_id not in {u.version_id for u in lake.catalog.upstreams(summary_version.version_id)}:
        return "summary built from an older results version"
    return None
