"""`letl tier plan [--apply]`: the tier policy's moves with reasons, what pins hold back, and pins not yet met.

``--json`` prints one object: ``planned`` (the moves, with their outcome under --apply), ``held`` (moves
the policy would otherwise make that a pin holds back), ``unmet`` (pinned versions not on their pinned
tier and not planned to go there, e.g. for lack of room) and ``pins``.
"""

from letl.cli import pins
from letl.cli.common import open_lake


def _apply(lake, planned, rows: list[dict]) -> None:
    from letl.lake.policy import ApplyError, apply, plan_key

    prefix = f"policy:{plan_key(lake, planned)}"
    try:
        results, failures = apply(lake, planned, prefix), []
    except ApplyError as exc:
        results, failures = exc.results, exc.failures
    done = {r.version_id: r for r in results}
    failed = {m.version_id: str(exc) for m, exc in failures}
    for row in rows:
        r = done.get(row["version_id"])
        row.update({"request_id": r.request_id, "state": r.state, "repeated": r.repeated} if r else
                   {"state": "failed", "error": failed.get(row["version_id"])})


def _unmet_rows(versions: list, holds: dict[str, tuple[str, str]], planned_ids: set[str]) -> list[dict]:
    return [{"asset_key": v.asset_key, "partition": v.partition, "version_id": v.version_id, "tier": v.tier,
             "pinned_tier": tier, "pin": target, "bytes": v.bytes}
            for v, tier, target in pins.unmet(versions, holds) if v.version_id not in planned_ids]


def cmd_plan(args) -> int:
    """Exit 0, or Conflict's code when --apply made a planned move that failed."""
    from letl.cli.report import dumps, human_bytes, table
    from letl.lake.errors import Conflict, exit_code
    from letl.lake.policy import plan_with_pins

    lake = open_lake()
    planned, held = plan_with_pins(lake)
    rows = [m.as_dict() for m in planned]
    if args.apply and planned:
        _apply(lake, planned, rows)
    # The catalog is read once more, after --apply's moves, and the held, unmet and pins sections all
    # come from that one read: every version, the latest ids, and what the pins hold.
    versions = lake.catalog.list_versions(branch=None)
    pinned = lake.catalog.pinned_tiers(versions, lake.catalog.latest_ids())
    on_branch = [v for v in versions if v.branch == lake.branch]
    kept = [{**m.as_dict(), "state": "pinned, left alone", "pinned_tier": pinned[m.version_id][0],
             "pin": pinned[m.version_id][1]} for m in held]
    waiting = _unmet_rows(on_branch, pinned, {m.version_id for m in planned if m.rule == "pin"})
    shown = pins.pin_rows(lake.catalog.list_pins(lake.branch), on_branch, pinned)
    code = exit_code(Conflict()) if any(row.get("state") == "failed" for row in rows) else 0
    if args.json:
        print(dumps({"planned": rows, "held": kept, "unmet": waiting, "pins": shown}))
        return code
    if not rows:
        print("tier policy: nothing to move")
    else:
        for row in rows:
            row["move"] = f"{row['src_tier']} -> {row['dst_tier']}"
            row["bytes"] = human_bytes(row["bytes"])
        print(table(rows, ["asset_key", "partition", "version_id", "move", "bytes", "reason"]
                    + (["state"] if args.apply else [])))
        print(f"{len(rows)} move(s) {'applied' if args.apply else 'planned; nothing moved (use --apply to move)'}")
    if kept:
        for row in kept:
            row["would_move"] = f"{row['src_tier']} -> {row['dst_tier']}"
        print(f"\npinned, left alone ({len(kept)}): the policy would otherwise move these")
        print(table(kept, ["asset_key", "partition", "version_id", "would_move", "reason", "pinned_tier"]))
    if waiting:
        print(f"\npinned, not on their tier ({len(waiting)}): no room there (or it is unreachable); "
              "moved when there is")
        print(table([{**w, "bytes": human_bytes(w["bytes"])} for w in waiting],
                    ["asset_key", "partition", "version_id", "tier", "pinned_tier", "bytes", "pin"]))
    if shown:
        print(f"\npins ({len(shown)}):")
        pins.print_pins(shown)
    return code
