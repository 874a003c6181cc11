"""`letl catalog rebuild`: the catalog rebuilt from the lineage manifests the lake keeps beside its data;
`letl catalog upgrade`: its migrations run explicitly (opening the catalog runs them too)."""

from letl.cli.common import open_lake

REPORTED = ("moved", "missing_objects", "ambiguous", "dangling_upstreams", "edges_without_marker",
            "markers_without_edge", "invalid", "unavailable_tiers")


def cmd_rebuild(args) -> int:
    """A catalog that already holds versions is refused (a Conflict) unless --force merges into it."""
    from letl.cli.report import dumps
    from letl.lake.manifests import rebuild

    report = rebuild(open_lake(create=True), target_url=args.target, force=args.force)
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


def cmd_upgrade(args) -> int:
    """Migrate the configured catalog to head without opening the lake, so that the revision it had is seen."""
    from letl.cli.common import require_a_lake
    from letl.lake.catalog_schema import make_engine
    from letl.lake.config import LakeConfig
    from letl.lake.migrate import upgrade

    if not args.url:  # upgrading no catalog would make an empty one
        require_a_lake()
    engine = make_engine(args.url or LakeConfig.resolve().catalog_url)
    try:
        result = upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if result.before == result.after:
        print(f"{where}\ncatalog already at head: {result.after}")
        return 0
    before = "none (made before migrations)" if result.legacy else (result.before or "empty")
    for note in result.caught_up:
        print(f"  before the baseline: {note}")
    print(f"{where}\ncatalog upgraded: {before} -> {result.after}")
    return 0


def add_commands(sub) -> None:
    cat = sub.add_parser("catalog", help="the catalog: upgrade its schema, or rebuild it from the lineage manifests",
                         description="Upgrade the catalog's schema to the newest migration, or rebuild the catalog "
                         "(versions, lineage, latest pointers) from the manifests written beside every version "
                         "on its tier.")
    cat = cat.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    rb = cat.add_parser("rebuild", help="rebuild versions, lineage and latest pointers from the manifests")
    rb.add_argument("--target", help="catalog URL to rebuild into (default: the configured catalog)")
    rb.add_argument("--force", action="store_true", help="merge into a catalog that already holds versions")
    rb.add_argument("--json", action="store_true", help="machine-readable output")
    rb.set_defaults(func=cmd_rebuild)
    up = cat.add_parser("upgrade", help="run the catalog's migrations to head; prints the revision before and after")
    up.add_argument("--url", help="catalog URL (default: the configured catalog)")
    up.set_defaults(func=cmd_upgrade)
