"""Readable and JSON views of the lake for the CLI."""

import json
from collections import defaultdict

from letl.labs.drops import scan_landing
from letl.lake.catalog import Version
from letl.lake.config import format_size as human_bytes
from letl.lake.lake import Lake
from letl.lake.names import LAB_REJECTS, LAB_RESULTS, LAB_SUMMARY
from letl.lake.sources import landing_root


def version_record(lake: Lake, v: Version, latest: set[str]) -> dict:
    return {
        "asset": v.asset_key,
        "branch": v.branch,
        "partition": v.partition,
        "version": v.version_id,
        "tier": v.tier,
        "rows": v.rows,
        "bytes": v.bytes,
        "sha256": v.sha256,
        "created_at": v.created_at.isoformat(),
        "latest": v.version_id in latest,
    }


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) for row in cells]
    return "\n".join(lines)


RESULTS, REJECTS, SUMMARY = LAB_RESULTS, LAB_REJECTS, LAB_SUMMARY


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
    found = {key: lake.latest(key, partition) for key in (RESULTS, REJECTS, SUMMARY)}
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


def summary(lake: Lake, failures: dict[str, str] | None = None) -> dict:
    """Per dataset: versions, latest partitions, rows, bytes per tier; lab row reconciliation; and
    every month with drops that is not current, with its reason (``failures``: from this run)."""
    latest = lake.catalog.latest_ids()
    datasets: dict[str, dict] = defaultdict(lambda: {"versions": 0, "partitions": 0, "rows": 0, "tiers": defaultdict(int)})
    rows_in = 0
    for v in lake.catalog.list_versions(branch=lake.branch):
        d = datasets[v.asset_key]
        d["versions"] += 1
        if v.version_id in latest:
            d["partitions"] += 1
            d["rows"] += v.rows or 0
            d["tiers"][v.tier] += v.bytes
            if v.asset_key == RESULTS:
                rows_in += v.metadata.get("output", {}).get("rows_in", 0)
    out = {k: {**d, "tiers": dict(d["tiers"])} for k, d in sorted(datasets.items())}
    labs = {
        "rows_in": rows_in,
        "rows_out": out.get(RESULTS, {}).get("rows", 0),
        "rows_rejected": out.get(REJECTS, {}).get("rows", 0),
    }
    scan = scan_landing(landing_root())
    by_month: dict[str, list[str]] = defaultdict(list)
    for drop in scan.drops:
        by_month[drop.partition_key].append(drop.signature)
    failures = failures or {}
    months = []
    for partition in sorted(by_month.keys() | failures.keys()):
        if partition in failures:
            months.append({"partition": partition, "status": "FAILED", "reason": failures[partition]})
        elif problem := month_problem(lake, partition, by_month[partition]):
            months.append({"partition": partition, "status": "stale", "reason": problem})
    balanced = labs["rows_in"] == labs["rows_out"] + labs["rows_rejected"]
    return {
        "branch": lake.branch, "home": str(lake.config.home), "datasets": out, "labs": labs,
        "reconciled": balanced and not months, "not_current": months,
        "ignored": [{"relpath": i.relpath, "reason": i.reason} for i in scan.ignored],
    }


def format_summary(s: dict) -> str:
    rows = [
        {
            "dataset": name,
            "versions": d["versions"],
            "partitions": d["partitions"],
            "rows": f"{d['rows']:,}",
            "tier: bytes": ", ".join(f"{t}: {human_bytes(b)}" for t, b in sorted(d["tiers"].items())),
        }
        for name, d in s["datasets"].items()
    ]
    labs, months = s["labs"], s["not_current"]
    balanced = labs["rows_in"] == labs["rows_out"] + labs["rows_rejected"]
    if s["reconciled"]:
        verdict = "reconciled"
    elif months:
        verdict = f"NOT reconciled: {len(months)} month(s) failed or stale"
    else:
        verdict = "DOES NOT RECONCILE"
    lines = [
        f"LETL lake at {s['home']} (branch {s['branch']}), latest versions:",
        table(rows, ["dataset", "versions", "partitions", "rows", "tier: bytes"]),
        "",
        f"lab rows: in {labs['rows_in']:,} {'=' if balanced else '≠'} out {labs['rows_out']:,} + rejected "
        f"{labs['rows_rejected']:,}  ({verdict})",
    ]
    lines += [f"  {m['partition'][:7]}: {m['status']}: {m['reason']}" for m in months]
    if s["ignored"]:
        lines += ["", "ignored files in the landing zone:"]
        lines += [f"  {i['relpath']}: {i['reason']}" for i in s["ignored"]]
    return "\n".join(lines)


def dumps(data) -> str:
    return json.dumps(data, indent=2, default=str)
