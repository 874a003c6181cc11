"""Readable and JSON views of the lake for the CLI."""

import json
from collections import defaultdict

from letl.labs.drops import scan_landing
from letl.labs.reconcile import month_problem
from letl.lake.catalog import Version
from letl.lake.config import format_size as human_bytes
from letl.lake.lake import Lake
from letl.lake.names import LAB_REJECTS, LAB_RESULTS
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
            if v.asset_key == LAB_RESULTS:
                rows_in += v.metadata.get("output", {}).get("rows_in", 0)
    out = {k: {**d, "tiers": dict(d["tiers"])} for k, d in sorted(datasets.items())}
    labs = {
        "rows_in": rows_in,
        "rows_out": out.get(LAB_RESULTS, {}).get("rows", 0),
        "rows_rejected": out.get(LAB_REJECTS, {}).get("rows", 0),
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
