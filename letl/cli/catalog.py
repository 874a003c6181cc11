"""`letl catalog rebuild`: the catalog rebuilt from the lineage manifests the lake keeps beside its data."""

from letl.cli.common import open_lake

REPORTED = ("moved", "missing_objects", "ambiguous", "dangling_upstreams", "edges_without_marker",
            "markers_without_edge", "invalid", "unavailable_tiers")


def cmd_rebuild(args) -> int:
    """A catalog that already holds versions is refused (a Conflict) unless --force merges into it."""
    from letl.cli.report import dumps
    from letl.lake.manifests import rebuild

    report = rebuild(open_lake(), target_url=args.target, force=args.force)
    if args.json:
        print(dumps(report))
        return 0
    print(f"rebuilt {report['target']} from {report['manifests']} manifests on {', '.join(report['scanned_tiers'])}: "
          f"{report['versions']} versions ({report['inserted']} new), {report['lineage_edges']} lineage edges, "
          f"{report['latest_pointers']} latest pointers")
    for name in REPORTED:
        if report[name]:
            print(f"  {name}: {len(report[name])}")
    return 0


def add_commands(sub) -> None:
    cat = sub.add_parser("catalog", help="the catalog: rebuild it from the lineage manifests in the lake",
                         description="Rebuild the catalog (versions, lineage, latest pointers) from the manifests "
                         "written beside every version on its tier.")
    cat = cat.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    rb = cat.add_parser("rebuild", help="rebuild versions, lineage and latest pointers from the manifests")
    rb.add_argument("--target", help="catalog URL to rebuild into (default: the configured catalog)")
    rb.add_argument("--force", action="store_true", help="merge into a catalog that already holds versions")
    rb.add_argument("--json", action="store_true", help="machine-readable output")
    rb.set_defaults(func=cmd_rebuild)
