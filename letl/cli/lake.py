"""`letl lake ls|show|branches|diff`: versions, their lineage, and branches compared."""

from letl.cli.common import no_versions, open_lake


def cmd_ls(args) -> int:
    from letl.cli.report import dumps, table, version_record

    lake = open_lake()
    latest = lake.catalog.latest_ids()
    records = [version_record(lake, v, latest) for v in lake.catalog.list_versions(args.asset, None, args.branch)]
    if args.json:
        print(dumps(records))
    else:
        print(table(records, ["asset", "partition", "version", "tier", "rows", "bytes", "sha256", "created_at"]))
    return 0


def _edge(v) -> str:
    return f"{v.asset_key}@{v.partition or '-'}:{v.version_id}"


def cmd_show(args) -> int:
    from letl.cli.report import dumps, table, version_record

    lake = open_lake()
    versions = lake.catalog.list_versions(args.asset, args.partition, args.branch)
    if not versions:
        raise no_versions(lake, args.asset, args.partition, args.branch)
    latest = lake.catalog.latest_ids()
    records = []
    for v in versions:
        record = version_record(lake, v, latest)
        record["uri"] = lake.uri(v)
        record["upstreams"] = [_edge(u) for u in lake.catalog.upstreams(v.version_id)]
        record["downstreams"] = [_edge(d) for d in lake.catalog.downstreams(v.version_id)]
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


def cmd_branches(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.manifests import branches

    data = branches(open_lake())
    if args.json:
        print(dumps(data))
    else:
        for branch, counts in data.items():
            print(f"{branch}: {counts['versions']} versions, {counts['assets']} assets, {counts['latest']} latest partitions")
    return 0


def cmd_diff(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.manifests import diff

    data = diff(open_lake(), args.a, args.b)
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


def add_commands(sub) -> None:
    lake = sub.add_parser("lake", help="inspect versions and lineage",
                          description="Inspect the lake's versions, their lineage and its branches.")
    lake = lake.add_subparsers(dest="lake_command", required=True, metavar="COMMAND")
    ls = lake.add_parser("ls", help="list versions")
    ls.add_argument("--asset", help="only this asset key, e.g. labs/lab_results")
    ls.add_argument("--branch", help="only this branch")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_ls)
    show = lake.add_parser("show", help="one asset's versions and lineage")
    show.add_argument("asset", help="asset key, e.g. labs/lab_results")
    show.add_argument("--partition", help="e.g. 2024-03-01")
    show.add_argument("--branch", help="only this branch")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)
    br = lake.add_parser("branches", help="versions, assets and latest partitions per branch")
    br.add_argument("--json", action="store_true", help="machine-readable output")
    br.set_defaults(func=cmd_branches)
    df = lake.add_parser("diff", help="compare the latest versions of two branches, partition by partition")
    df.add_argument("a", metavar="URI_A", help="e.g. gros://labs.lab_results/feature")
    df.add_argument("b", metavar="URI_B", help="e.g. gros://labs.lab_results/main")
    df.add_argument("--json", action="store_true", help="machine-readable output")
    df.set_defaults(func=cmd_diff)
