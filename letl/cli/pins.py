"""`letl tier pin`, `unpin` and `pins`: hold a version, or an asset's latest versions, on one tier.

The placement policy never moves a pinned version anywhere but to its pinned tier (see
letl/lake/policy.py, rule 0). Pinning also moves what it holds there now, through the same verified
move as `letl tier move`, each under a request id. A pin the policy could not honour (no room under the
tier's quota), or whose request id was used for other work, is refused before it is written; if an
accepted move then fails, the pin stays ("unmet") and the policy's next `letl tier plan --apply` (or
the tier sensor) makes it. A pin on an asset holds whichever versions
are its latest, on this branch, so a version written later is held too; a pin on a version holds it
for good, latest or not.
"""

import uuid

from letl.cli.common import no_versions, open_lake


def _resolve(lake, target: str, partition: str | None):
    """(version, None) for a version id, else (None, asset key) for an asset that has versions."""
    from letl.lake.errors import InvalidInput
    from letl.lake.names import asset_key_of

    version = lake.catalog.get(target)
    if version is not None:
        if partition is not None:
            raise InvalidInput(f"--partition applies to an asset, not to version {target}: leave it out")
        return version, None
    asset = asset_key_of(target)
    if not lake.catalog.list_versions(asset, partition, lake.branch):
        raise no_versions(lake, asset, partition, lake.branch, what="version or dataset")
    return None, asset


def _check_tier(lake, tier: str) -> None:
    from letl.lake.errors import InvalidInput

    if tier not in lake.tiers:
        raise InvalidInput(f"unknown tier {tier!r}; configured tiers: {', '.join(lake.tiers)}")


def _check_room(lake, tier: str, to_move: list) -> None:
    """The policy's pin rule moves a version only if its tier has room under its quota: pinning refuses
    what that rule could never do, rather than pin and overfill the tier."""
    from letl.lake.config import format_size
    from letl.lake.errors import NoRoom

    quota = lake.tiers[tier].spec.quota_bytes
    after = lake.tier_usage().get(tier, 0) + sum(v.bytes for v in to_move)
    if quota and to_move and after > quota:
        raise NoRoom(f"no room on {tier}: pinning would bring it to {format_size(after)}, over its quota of "
                     f"{format_size(quota)}; free room there or pin to another tier")


def _check_requests(lake, requests: dict[str, object], tier: str) -> None:
    """A request id reused for other work is refused before the pin is written (a repeat of the same move
    is fine: it returns its first result)."""
    from letl.lake.errors import Conflict, TierUnavailable
    from letl.lake.moves import Mover

    mover = Mover(lake)
    for rid, v in requests.items():
        first = mover.get(rid)
        if first is not None and (first.version_id, first.dst_tier) != (v.version_id, tier):
            raise Conflict(f"request {rid!r} was {first.src_tier} -> {first.dst_tier} of {first.version_id}, "
                           f"not a move of {v.version_id} to {tier}: use another --request-id")
        if first is None:
            for name in {v.tier, tier}:
                problem = lake.tiers[name].unavailable() if name in lake.tiers else f"tier {name} is not configured"
                if problem:
                    raise TierUnavailable(f"cannot move {v.version_id} to {tier}: {problem}")


def cmd_pin(args) -> int:
    """Every refusal (unknown target or tier, no room, a request id used for other work, an unreachable
    tier) comes before the pin is written, so a refused pin changes nothing."""
    from letl.cli.report import dumps
    from letl.lake.lake import current_user
    from letl.lake.moves import Mover

    lake = open_lake()
    _check_tier(lake, args.tier)
    version, asset = _resolve(lake, args.target, args.partition)
    if version is not None:
        held = [version]
    else:
        held = [v for v in lake.catalog.latest_versions(lake.branch, asset)
                if args.partition is None or v.partition == args.partition]
    request_id = args.request_id or uuid.uuid4().hex
    to_move = [v for v in held if v.tier != args.tier]
    requests = {(request_id if len(to_move) == 1 else f"{request_id}/{v.version_id}"): v for v in to_move}
    _check_room(lake, args.tier, to_move)
    _check_requests(lake, requests, args.tier)
    if version is not None:
        pin = lake.catalog.pin(version.asset_key, version.branch, args.tier, version.partition, version.version_id,
                               pinned_by=current_user(), reason=args.reason)
    else:
        pin = lake.catalog.pin(asset, lake.branch, args.tier, args.partition, pinned_by=current_user(),
                               reason=args.reason)
    if not args.json:
        print(f"pinned {pin['target']} to {args.tier}: the tier policy leaves it there")
    results = []
    for rid, v in requests.items():
        results.append(Mover(lake).move(v.version_id, args.tier, rid).as_dict())
        if not args.json:
            r = results[-1]
            print(f"{r['request_id']}: {r['version_id']} {r['src_tier']} -> {r['dst_tier']}: {r['state']}")
    if args.json:
        print(dumps({"pin": pin, "moves": results}))
    elif not to_move:
        print(f"already on {args.tier}: nothing to move")
    return 0


def cmd_unpin(args) -> int:
    from letl.cli.report import dumps
    from letl.lake.catalog_pins import pin_target
    from letl.lake.errors import NotFound

    lake = open_lake()
    version, asset = _resolve(lake, args.target, args.partition)
    target = (pin_target(version.asset_key, version.branch, version_id=version.version_id) if version is not None
              else pin_target(asset, lake.branch, args.partition))
    removed = lake.catalog.unpin(target)
    if removed is None:
        raise NotFound(f"no pin on {target}; see letl tier pins")
    print(dumps(removed) if args.json else f"unpinned {target} (was on {removed['tier']}): the tier policy may move it")
    return 0


def unmet(versions: list, holds: dict[str, tuple[str, str]]) -> list:
    """(version, pinned tier, pin target) for each of these versions a pin holds (``holds``: pinned_tiers of
    them) that is not on its pinned tier (no room there yet, or its move failed): the policy's pin rule
    moves it when it can."""
    return [(v, *holds[v.version_id]) for v in versions
            if v.version_id in holds and holds[v.version_id][0] != v.tier]


def pin_rows(branch_pins: list[dict], versions: list, holds: dict[str, tuple[str, str]]) -> list[dict]:
    """The branch's pins, each with how many of the branch's ``versions`` it holds now (``holds``: pinned_tiers
    of them, or of more) and how many of them are not on its tier."""
    counts: dict[str, int] = {}
    missing: dict[str, int] = {}
    for v in versions:
        if v.version_id in holds:
            tier, target = holds[v.version_id]
            counts[target] = counts.get(target, 0) + 1
            if tier != v.tier:
                missing[target] = missing.get(target, 0) + 1
    return [{**p, "holds": counts.get(p["target"], 0), "unmet": missing.get(p["target"], 0)} for p in branch_pins]


def print_pins(rows: list[dict]) -> None:
    from letl.cli.report import table

    shown = [{**r, "pinned_at": f"{r['pinned_at']:%Y-%m-%d %H:%M}Z", "reason": r["reason"] or ""} for r in rows]
    print(table(shown, ["target", "tier", "holds", "unmet", "pinned_by", "pinned_at", "reason"]))
    waiting = sum(r["unmet"] for r in rows)
    if waiting:
        print(f"{waiting} pinned version(s) not on their pinned tier yet (unmet): letl tier plan shows why")


def cmd_pins(args) -> int:
    from letl.cli.report import dumps

    lake = open_lake()
    branch_pins = lake.catalog.list_pins(lake.branch)
    rows = []
    if branch_pins:  # with no pins there is nothing to count: no version is read
        versions = lake.catalog.list_versions(branch=lake.branch)
        rows = pin_rows(branch_pins, versions, lake.catalog.pinned_tiers(versions, lake.catalog.latest_ids()))
    if args.json:
        print(dumps(rows))
    elif not rows:
        print("no pins")
    else:
        print_pins(rows)
    return 0


def add_commands(tier) -> None:
    pin = tier.add_parser("pin", help="hold a version, or an asset's latest versions, on a tier; moves them there now",
                          description="Pin a version (by id) or an asset's latest versions (by dataset, optionally "
                          "one partition) to a tier. The tier policy never moves a pinned version elsewhere; what "
                          "the pin holds is moved to the tier now, verified.")
    pin.add_argument("target", help="a version id (see letl lake ls) or a dataset, e.g. labs.lab_results")
    pin.add_argument("--tier", required=True, help="the tier to hold it on")
    pin.add_argument("--partition", help="with a dataset: only this partition")
    pin.add_argument("--reason", help="why, shown by letl tier pins and plan")
    pin.add_argument("--request-id", help="idempotency key of the move(s) the pin makes (default: new)")
    pin.add_argument("--json", action="store_true", help="machine-readable output")
    pin.set_defaults(func=cmd_pin)

    unpin = tier.add_parser("unpin", help="remove a pin: the tier policy may move the version(s) again")
    unpin.add_argument("target", help="the version id or dataset that was pinned")
    unpin.add_argument("--partition", help="with a dataset: the partition that was pinned")
    unpin.add_argument("--json", action="store_true", help="machine-readable output")
    unpin.set_defaults(func=cmd_unpin)

    ls = tier.add_parser("pins", help="the pins on this branch, with how many versions each holds")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_pins)
