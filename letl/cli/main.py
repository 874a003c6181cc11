"""The `letl` command line. Heavy imports wait until a command needs them."""

import argparse
import sys
from pathlib import Path

from letl.cli import lineage as lineage_cli
from letl.cli import tier as tier_cli


def _lake():
    from letl.lake.lake import Lake

    return Lake.from_env()


def cmd_sample_data(args) -> int:
    from letl.labs.sample import generate_drops
    from letl_assets.resources.landing import LandingZone

    landing = Path(args.landing) if args.landing else LandingZone().root()
    drops = generate_drops(
        landing, months=args.months, hospitals=args.hospitals, rows_per_file=args.rows_per_file,
        seed=args.seed, start_month=args.start,
    )
    rows = sum(d.rows for d in drops)
    defects = sum(sum(d.defects.values()) for d in drops)
    print(f"wrote {len(drops)} drop files, {rows:,} rows ({defects:,} with planted defects) under {landing / 'labs'}")
    return 0


def cmd_run(args) -> int:
    """Exit 0 only when every month with drops is current and reconciled; 1 when a month failed or is
    stale (each listed with its reason); 9 with --no-wait when another run holds LETL_HOME."""
    from letl.cli.report import format_summary, summary
    from letl.labs.sample import generate_drops
    from letl.lake.config import LakeConfig
    from letl_assets.local_run import run_lock, run_months
    from letl_assets.resources.landing import LandingZone

    with run_lock(LakeConfig.resolve().home, print, wait=not args.no_wait):
        landing = LandingZone()
        if not landing.drops(settled=False):
            drops = generate_drops(landing.root(), months=12, hospitals=5, rows_per_file=args.sample_rows, seed=42)
            print(f"landing zone {landing.root()} was empty: generated {len(drops)} sample drops "
                  f"({sum(d.rows for d in drops):,} rows)")
        _start_object_store()
        for note in _lake().config.notes:
            print(f"warning: {note}")
        outcomes = run_months(args.months, args.force)
        failures = {o["partition"]: o["reason"] for o in outcomes if o["status"] == "FAILED"}
        data = summary(_lake(), failures)
    print()
    print(format_summary(data))
    print()
    print("Open the Dagster UI on this data:  make ui   (or: DAGSTER_HOME=.letl/dagster dagster dev)")
    return 0 if data["reconciled"] else 1


def _start_object_store() -> None:
    """The embedded default gets a working 'cortx' tier; without one, placement skips that tier."""
    import os

    from letl.devstore import server as objectstore
    from letl.lake.config import LakeConfig

    if os.environ.get("LETL_OBJECTSTORE", "on") == "off":
        return
    try:
        info = objectstore.up(LakeConfig.resolve().home)
        print(f"object store (tier 'cortx'): {info.endpoint}, bucket {info.bucket}; stop it with: letl objectstore down")
    except Exception as exc:  # the lake works without its object tier
        print(f"warning: object store could not start, tier 'cortx' is unavailable: {exc}")


def cmd_lake_ls(args) -> int:
    from letl.cli.report import dumps, table, version_record

    lake = _lake()
    latest = lake.catalog.latest_ids()
    records = [version_record(lake, v, latest) for v in lake.catalog.list_versions(args.asset, None, args.branch)]
    if args.json:
        print(dumps(records))
    else:
        print(table(records, ["asset", "partition", "version", "tier", "rows", "bytes", "sha256", "created_at"]))
    return 0


def cmd_lake_show(args) -> int:
    from letl.cli.report import dumps, table, version_record

    lake = _lake()
    versions = lake.catalog.list_versions(args.asset, args.partition, args.branch)
    if not versions:
        from letl.lake.errors import NotFound

        known = sorted({v.asset_key for v in lake.catalog.list_versions()})
        raise NotFound(f"no versions of {args.asset!r}{' partition ' + args.partition if args.partition else ''}; "
                       f"known datasets: {', '.join(known) or 'none'}")
    latest = lake.catalog.latest_ids()
    records = []
    for v in versions:
        record = version_record(lake, v, latest)
        record["uri"] = lake.uri(v)
        record["upstreams"] = [f"{u.asset_key}@{u.partition or '-'}:{u.version_id}" for u in lake.catalog.upstreams(v.version_id)]
        record["downstreams"] = [f"{d.asset_key}@{d.partition or '-'}:{d.version_id}"
                                 for d in lake.catalog.downstreams(v.version_id)]
        records.append(record)
    if args.json:
        print(dumps(records))
        return 0
    print(table(records, ["partition", "version", "latest", "tier", "rows", "bytes", "created_at"]))
    for r in records:
        if r["upstreams"] or r["downstreams"]:
            print(f"\n{r['version']} ({r['uri']})")
            for u in r["upstreams"]:
                print(f"  <- {u}")
            for d in r["downstreams"]:
                print(f"  -> {d}")
    return 0


def cmd_summary(args) -> int:
    from letl.cli.report import dumps, format_summary, summary

    data = summary(_lake())
    print(dumps(data) if args.json else format_summary(data))
    return 0


def cmd_catalog_rebuild(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.manifests import CatalogNotEmpty, rebuild

    try:
        report = rebuild(_lake(), target_url=args.target, force=args.force)
    except CatalogNotEmpty as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(dumps(report))
        return 0
    print(f"rebuilt {report['target']} from {report['manifests']} manifests on {', '.join(report['scanned_tiers'])}: "
          f"{report['versions']} versions ({report['inserted']} new), {report['lineage_edges']} lineage edges, "
          f"{report['latest_pointers']} latest pointers")
    for name in ("moved", "missing_objects", "ambiguous", "dangling_upstreams", "edges_without_marker",
                 "markers_without_edge", "invalid", "unavailable_tiers"):
        if report[name]:
            print(f"  {name}: {len(report[name])}")
    return 0


def cmd_lake_branches(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.manifests import branches

    data = branches(_lake())
    if args.json:
        print(dumps(data))
    else:
        for branch, counts in data.items():
            print(f"{branch}: {counts['versions']} versions, {counts['assets']} assets, {counts['latest']} latest partitions")
    return 0


def cmd_lake_diff(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.manifests import diff

    try:
        data = diff(_lake(), args.a, args.b)
    except (LookupError, ValueError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 2
    if args.json:
        print(dumps(data))
        return 0
    print(f"a: {args.a}   b: {args.b}   " + ", ".join(f"{k} {v}" for k, v in data["summary"].items()))
    for entry in data["partitions"]:
        line = f"  {entry['partition'] or '-'}: {entry['status']}"
        if "rows_delta" in entry:
            line += f", rows {entry['a']['rows']} -> {entry['b']['rows']}"
        cols = entry.get("columns") or {}
        for label, key in (("only in a", "only_in_a"), ("only in b", "only_in_b")):
            if cols.get(key):
                line += f", {label}: " + ", ".join(f"{c['name']} {c['type']}" for c in cols[key])
        if cols.get("type_changed"):
            line += ", type changed: " + ", ".join(f"{c['name']} {c['a']}->{c['b']}" for c in cols["type_changed"])
        print(line)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="letl",
        description="LETL: a versioned, lineage-tracked, tiered data lake for research data.",
        epilog="Settings come from LETL_HOME (default ./.letl), LETL_LANDING, LETL_BRANCH, LETL_PSEUDONYM_KEY "
        "and LETL_TIER_{PMEM,SSD,HDD}_{PATH,QUOTA}. See README.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sample-data", help="generate deterministic sample hospital lab drops")
    s.add_argument("--months", type=int, default=12, help="months of drops (default 12)")
    s.add_argument("--hospitals", type=int, default=5, help="hospitals (default 5)")
    s.add_argument("--rows-per-file", type=int, default=20_000, help="rows per drop file (default 20000)")
    s.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    s.add_argument("--start", default="2024-01", help="first month, YYYY-MM (default 2024-01)")
    s.add_argument("--landing", help="landing zone (default LETL_LANDING or LETL_HOME/landing)")
    s.set_defaults(func=cmd_sample_data)

    r = sub.add_parser("run", help="materialize every lab asset for every month in the landing zone")
    r.add_argument("--months", nargs="*", metavar="YYYY-MM",
                   help="only these months: 2024-03, 2024-3, or a range 2024-01..2024-06")
    r.add_argument("--force", action="store_true", help="rebuild months whose drops did not change")
    r.add_argument("--sample-rows", type=int, default=20_000, help="rows per sample file if the landing zone is empty")
    r.add_argument("--no-wait", action="store_true", help="refuse (exit 9) instead of waiting while another run holds LETL_HOME")
    r.set_defaults(func=cmd_run)

    lake = sub.add_parser("lake", help="inspect versions and lineage").add_subparsers(dest="lake_command", required=True)
    ls = lake.add_parser("ls", help="list versions")
    ls.add_argument("--asset", help="only this asset key, e.g. labs/lab_results")
    ls.add_argument("--branch", help="only this branch")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_lake_ls)
    show = lake.add_parser("show", help="one asset's versions and lineage")
    show.add_argument("asset", help="asset key, e.g. labs/lab_results")
    show.add_argument("--partition", help="e.g. 2024-03-01")
    show.add_argument("--branch", help="only this branch")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_lake_show)
    br = lake.add_parser("branches", help="versions, assets and latest partitions per branch")
    br.add_argument("--json", action="store_true", help="machine-readable output")
    br.set_defaults(func=cmd_lake_branches)
    df = lake.add_parser("diff", help="compare the latest versions of two branches, partition by partition")
    df.add_argument("a", metavar="URI_A", help="e.g. gros://labs.lab_results/feature")
    df.add_argument("b", metavar="URI_B", help="e.g. gros://labs.lab_results/main")
    df.add_argument("--json", action="store_true", help="machine-readable output")
    df.set_defaults(func=cmd_lake_diff)

    cat = sub.add_parser("catalog", help="the catalog: rebuild it from the lineage manifests in the lake")
    cat = cat.add_subparsers(dest="catalog_command", required=True)
    rb = cat.add_parser("rebuild", help="rebuild versions, lineage and latest pointers from the manifests")
    rb.add_argument("--target", help="catalog URL to rebuild into (default: the configured catalog)")
    rb.add_argument("--force", action="store_true", help="merge into a catalog that already holds versions")
    rb.add_argument("--json", action="store_true", help="machine-readable output")
    rb.set_defaults(func=cmd_catalog_rebuild)

    tier_cli.add_commands(sub)
    lineage_cli.add_commands(sub)

    sm = sub.add_parser("summary", help="datasets, versions, rows and tiers of the latest versions")
    sm.add_argument("--json", action="store_true", help="machine-readable output")
    sm.set_defaults(func=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    """Every failure is one line on stderr and an exit code from the one error table, never a traceback
    (LETL_DEBUG=1 shows it)."""
    import os

    from letl.lake.errors import EXIT_INTERNAL, LetlError, exit_code, one_line

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("LETL_DEBUG"):
            raise
        if isinstance(exc, LetlError):
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return exit_code(exc)
        print(f"error: {one_line(exc)} (unexpected; set LETL_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
