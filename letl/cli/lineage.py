"""`letl lineage gros://...`: the version graph around one version, upstream, downstream or both."""

from letl.cli.common import open_lake


def walk(lake, version, direction: str, depth: int) -> list[dict]:
    """Edges reachable from version, breadth first, each once: {from, to, asset, partition, depth}."""
    step = lake.catalog.upstreams if direction == "upstream" else lake.catalog.downstreams
    edges, seen, frontier = [], {version.version_id}, [version]
    for level in range(1, depth + 1):
        next_frontier = []
        for current in frontier:
            for other in step(current.version_id):
                edges.append({"direction": direction, "depth": level, "from": current.version_id,
                              "to": other.version_id, "asset": other.asset_key, "partition": other.partition,
                              "branch": other.branch, "uri": lake.uri(other)})
                if other.version_id not in seen:
                    seen.add(other.version_id)
                    next_frontier.append(other)
        frontier = next_frontier
    return edges


def cmd_lineage(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.errors import InvalidInput
    from letl.lake.uri import parse, resolve

    lake = open_lake()
    versions = resolve(lake, parse(args.uri))
    if len(versions) != 1:
        raise InvalidInput(f"{args.uri} selects {len(versions)} versions; name one partition")
    [version] = versions
    directions = [d for d, wanted in (("upstream", args.upstream), ("downstream", args.downstream)) if wanted]
    edges = [e for d in directions or ["upstream", "downstream"] for e in walk(lake, version, d, args.depth)]
    if args.json:
        print(dumps({"version": version.version_id, "uri": lake.uri(version), "edges": edges}))
        return 0
    print(f"{version.asset_key} {version.partition or ''} {version.version_id} ({lake.uri(version)})")
    for e in edges:
        arrow = "<-" if e["direction"] == "upstream" else "->"
        print(f"{'  ' * e['depth']}{arrow} {e['asset']} {e['partition'] or ''} {e['to']} ({e['uri']})")
    return 0


def add_commands(sub) -> None:
    lin = sub.add_parser("lineage", help="the version graph around one gros:// version",
                         description="What one version was built from and what was built from it, hop by hop.")
    lin.add_argument("uri", help="e.g. gros://labs.lab_results:latest?partition=2024-03-01")
    lin.add_argument("--upstream", action="store_true", help="only what it was built from")
    lin.add_argument("--downstream", action="store_true", help="only what was built from it")
    lin.add_argument("--depth", type=int, default=10, help="how many hops (default 10)")
    lin.add_argument("--json", action="store_true", help="machine-readable output")
    lin.set_defaults(func=cmd_lineage)
