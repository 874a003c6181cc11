"""`letl tier ...`: list tiers, their usage, move versions between them, and repair (pins: pins.py;
the policy's plan: tier_plan.py)."""

import uuid

from letl.cli import pins, tier_plan
from letl.cli.common import no_versions, open_lake

# Refusals are raised, not printed here: `letl` (cli.main) turns every LetlError into one line on
# stderr and the exit code from the error table in lake/errors.py, as the API turns it into a status.


def cmd_ls(args) -> int:
    from letl.cli.report import dumps, human_bytes, table

    lake = open_lake()
    used = lake.tier_usage()
    counts: dict[str, int] = {}
    for v in lake.catalog.list_versions():
        counts[v.tier] = counts.get(v.tier, 0) + 1
    rows = [
        {
            "tier": name,
            "rank": tier.spec.rank,
            "location": tier.spec.location,
            "quota": tier.spec.quota_bytes or None,
            "used": used.get(name, 0),
            "versions": counts.get(name, 0),
        }
        for name, tier in lake.tiers.items()
    ]
    if args.json:
        print(dumps(rows))
        return 0
    for row in rows:
        row["quota"] = human_bytes(row["quota"]) if row["quota"] else "none"
        row["used"] = human_bytes(row["used"])
    print(table(rows, ["tier", "rank", "location", "quota", "used", "versions"]))
    return 0


def cmd_move(args) -> int:
    from letl.cli.progress import file_progress
    from letl.cli.report import dumps
    from letl.lake.moves import Mover

    lake = open_lake()
    latest = lake.catalog.latest_ids()
    if args.version:
        targets = [args.version]
        version = lake.catalog.get(args.version)  # None: the move below refuses the unknown id
        versions = [] if version is None else [version]
    else:
        versions = [v for v in lake.catalog.list_versions(args.asset, args.partition, lake.branch)
                    if v.version_id in latest]
        targets = [v.version_id for v in versions]
        if not targets:
            raise no_versions(lake, args.asset, args.partition, lake.branch, latest=True)
    warn_if_pinned(lake, versions, latest, args.to)
    request_id = args.request_id or uuid.uuid4().hex
    mover, results = Mover(lake), []
    for version_id in targets:
        rid = request_id if len(targets) == 1 else f"{request_id}/{version_id}"
        with file_progress(f"{version_id} -> {args.to}") as on_progress:
            r = mover.move(version_id, args.to, rid, on_progress=on_progress).as_dict()
        results.append(r)
        if not args.json:  # each move's line as it finishes, not all at the end
            note = " (repeated request: nothing done)" if r["repeated"] else ""
            print(f"{r['request_id']}: {r['version_id']} {r['src_tier']} -> {r['dst_tier']}: {r['state']}{note}",
                  flush=True)
    if args.json:
        print(dumps(results))
    return 0


def warn_if_pinned(lake, versions: list, latest: set[str], to_tier: str) -> None:
    """A manual move away from a pinned tier is the operator's call, so it is made, but the policy's pin
    rule will move the version back: say so, once per version, on stderr. ``versions`` are the ones to
    move, ``latest`` the catalog's latest ids, both as the move read them."""
    import sys

    for vid, (tier, target) in lake.catalog.pinned_tiers(versions, latest).items():
        if tier != to_tier:
            print(f"warning: {vid} is pinned to {tier} ({target}): the tier policy will move it back there; "
                  f"letl tier unpin first to keep it on {to_tier}", file=sys.stderr, flush=True)


def cmd_usage(args) -> int:
    """Catalogued bytes against quota and watermarks, and what the backend itself holds (orphans included)."""
    from letl.cli.report import dumps, human_bytes, table

    lake = open_lake()
    used = lake.tier_usage()
    rows = []
    for name, tier in lake.tiers.items():
        problem = tier.unavailable()
        quota = tier.spec.quota_bytes
        rows.append({
            "tier": name,
            "catalogued": used.get(name, 0),
            "stored": None if problem else tier.backend.usage(),
            "quota": quota or None,
            "percent_of_quota": round(100 * used.get(name, 0) / quota, 1) if quota else None,
            "high_watermark": tier.spec.high_watermark,
            "available": not problem,
            "problem": problem,
        })
    if args.json:
        print(dumps(rows))
        return 0
    shown = [{**r, "catalogued": human_bytes(r["catalogued"]),
              "stored": "?" if r["stored"] is None else human_bytes(r["stored"]),
              "quota": human_bytes(r["quota"]) if r["quota"] else "none",
              "percent_of_quota": "-" if r["percent_of_quota"] is None else f"{r['percent_of_quota']}%"} for r in rows]
    print(table(shown, ["tier", "catalogued", "stored", "quota", "percent_of_quota", "available"]))
    for r in rows:
        if r["problem"]:
            print(r["problem"])
    return 0


def cmd_write(args) -> int:
    from letl.cli.progress import file_progress
    from letl.cli.report import dumps
    from letl.lake.moves import Mover
    from letl.lake.names import asset_key_of

    request_id = args.request_id or uuid.uuid4().hex
    with file_progress(f"{args.source} -> {args.dataset}") as on_progress:
        result = Mover(open_lake(create=True)).write(args.source, asset_key_of(args.dataset), args.to, request_id, args.partition,
                                          on_progress=on_progress)
    if args.json:
        print(dumps(result.as_dict()))
    else:
        note = " (repeated request: nothing done)" if result.repeated else ""
        print(f"{result.request_id}: {args.source} -> {args.dataset} version {result.version_id} on {result.dst_tier}{note}")
    return 0


def cmd_fsck(args) -> int:
    """Exit 1 if the catalog points at missing objects, else the error table's code for an
    unreachable tier if one could not be checked, else 0."""
    from letl.cli.report import dumps
    from letl.lake.errors import TierUnavailable, exit_code
    from letl.lake.fsck import fsck

    report = fsck(open_lake(), dry_run=args.dry_run, grace_seconds=args.grace, force=args.force)
    if args.json:
        print(dumps(report))
    else:
        verb = "would remove" if args.dry_run else "removed"
        for request_id, outcome in report["moves"].items():
            print(f"interrupted request {request_id}: {outcome}")
        for request_id in report["live"]:
            print(f"live request {request_id}: its owner is still running; left alone")
        print(f"orphans {verb}: {len(report['orphans'])}")
        for orphan in report["orphans"]:
            print(f"  {orphan}")
        print(f"young objects kept (may belong to a live writer): {len(report['kept_young'])}")
        print(f"temp leftovers removed: {report['temp_removed']}; staging leftovers removed: "
              f"{report['staging_removed']}")
        for missing in report["missing"]:
            print(f"MISSING: catalog points at {missing}, which is not there")
        for name, problem in report["unreachable"].items():
            print(f"UNREACHABLE: tier {name} was not checked: {problem}")
    if report["missing"]:
        return 1
    return exit_code(TierUnavailable()) if report["unreachable"] else 0


def non_negative_seconds(text: str) -> float:
    """A non-negative, finite number of seconds (argparse turns the ValueError into a usage error)."""
    import math

    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def add_commands(sub) -> None:
    tier = sub.add_parser("tier", help="storage tiers: list, move versions, repair",
                          description="The storage tiers, hottest first: their usage, verified moves and writes "
                          "between them, the tier policy's plan, and repair (fsck).")
    tier = tier.add_subparsers(dest="tier_command", required=True, metavar="COMMAND")
    ls = tier.add_parser("ls", help="tiers with rank, location, quota, bytes used and versions")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_ls)

    mv = tier.add_parser("move", help="move a version (or an asset's latest versions) to another tier, verified")
    what = mv.add_mutually_exclusive_group(required=True)
    what.add_argument("--version", help="a version id (see letl lake ls)")
    what.add_argument("--asset", help="an asset key: its latest version(s) on this branch")
    mv.add_argument("--partition", help="with --asset: only this partition")
    mv.add_argument("--to", required=True, help="destination tier")
    mv.add_argument("--request-id", help="idempotency key: repeating it returns the first result (default: new)")
    mv.add_argument("--json", action="store_true", help="machine-readable output")
    mv.set_defaults(func=cmd_move)

    us = tier.add_parser("usage", help="bytes per tier: catalogued, stored, quota and watermark")
    us.add_argument("--json", action="store_true", help="machine-readable output")
    us.set_defaults(func=cmd_usage)

    wr = tier.add_parser("write", help="bring an outside file into the lake as a new version on one tier")
    wr.add_argument("source", help="a local file path or file:// URL")
    wr.add_argument("dataset", help="the dataset, e.g. team.my_dataset or team/my_dataset")
    wr.add_argument("--to", required=True, help="the tier to write to")
    wr.add_argument("--partition", help="partition key, if the dataset is partitioned")
    wr.add_argument("--request-id", help="idempotency key: repeating it returns the first result (default: new)")
    wr.add_argument("--json", action="store_true", help="machine-readable output")
    wr.set_defaults(func=cmd_write)

    fs = tier.add_parser("fsck", help="settle writes and moves whose owner is gone (live ones are left alone); "
                         "remove orphans and temp and staging leftovers; exit 1 if objects are missing, "
                         "7 if a tier could not be reached")
    fs.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    fs.add_argument("--grace", type=non_negative_seconds, default=3600,
                    help="leave objects younger than this many seconds (default 3600)")
    fs.add_argument("--force", action="store_true", help="repair even when the catalog is empty")
    fs.add_argument("--json", action="store_true", help="machine-readable output")
    fs.set_defaults(func=cmd_fsck)

    pl = tier.add_parser("plan", help="the tier policy's planned moves with reasons; --apply makes them")
    pl.add_argument("--apply", action="store_true", help="apply the planned moves (default: only show them)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=tier_plan.cmd_plan)

    pins.add_commands(tier)
