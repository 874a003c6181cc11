"""Readable and JSON views of the lake for the CLI."""

import json
from collections import defaultdict

from .lake.catalog import Version
from .lake.config import format_size as human_bytes
from .lake.lake import Lake


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
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def summary(lake: Lake) -> dict:
    """Per dataset: versions, latest partitions, rows, bytes per tier; and lab row reconciliation."""
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
            if v.asset_key == "labs/lab_results":
                rows_in += v.metadata.get("output", {}).get("rows_in", 0)
    out = {k: {**d, "tiers": dict(d["tiers"])} for k, d in sorted(datasets.items())}
    labs = {
        "rows_in": rows_in,
        "rows_out": out.get("labs/lab_results", {}).get("rows", 0),
        "rows_rejected": out.get("labs/lab_results_rejects", {}).get("rows", 0),
    }
    return {"branch": lake.branch, "home": str(lake.config.home), "datasets": out, "labs": labs}


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
    labs = s["labs"]
    balanced = labs["rows_in"] == labs["rows_out"] + labs["rows_rejected"]
    return "\n".join(
        [
            f"LETL lake at {s['home']} (branch {s['branch']}), latest versions:",
            table(rows, ["dataset", "versions", "partitions", "rows", "tier: bytes"]),
            "",
            f"lab rows: in {labs['rows_in']:,} = out {labs['rows_out']:,} + rejected {labs['rows_rejected']:,}"
            f"  ({'reconciled' if balanced else 'DOES NOT RECONCILE'})",
        ]
    )


def dumps(data) -> str:
    return json.dumps(data, indent=2, default=str)
