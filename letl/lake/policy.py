"""The tier placement policy (in the spirit of Alluxio's tiered store): plan, then apply.

``plan`` reads the catalog and the access log and returns the moves the policy wants,
each with a human reason, without moving anything. ``apply`` runs them through the
``Mover`` (copy, verify, switch, delete) with request ids derived from the plan, so
applying the same plan twice moves nothing the second time.

The rules, in order; a version moves at most once per plan, and usage is projected as
moves are planned, so a later rule sees the effect of the earlier ones:

0. pin: a version held by a pin (``letl tier pin``: the version itself, or its asset's latest
   versions) that is not on its pinned tier goes there, if the tier has room. No other rule
   moves a pinned version: those moves are returned apart, as held back by the pin;
1. watermark: a tier above ``high_watermark x quota`` demotes its least recently used
   versions (last access in the access log, else creation) to the next colder tier with
   room, until its projected usage is below ``low_watermark x quota``;
2. idle: a version idle longer than its tier's ``max_idle`` sinks to the next colder tier;
3. promote: a version read at least ``promote_reads`` times within ``promote_window``
   rises to the next hotter tier, if that tier stays under its high watermark;
4. superseded: a version that is no longer the latest of its (asset, branch, partition),
   and was superseded longer than ``superseded_retention`` ago, goes to the coldest tier.

A destination must be available (``Tier.unavailable()`` is None) and have room under its
quota (a quota of 0 means unlimited). Versions on an unavailable or unconfigured tier are
left alone: they cannot be read to be moved. Moves keep version ids, so lineage, latest
pointers and asset keys never change.
"""

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

from letl.lake.catalog import Version, as_utc, utcnow
from letl.lake.config import family, format_size, setting
from letl.lake.errors import LetlError
from letl.lake.moves import Mover, MoveResult

log = logging.getLogger("letl.policy")

DAY = 86400.0
ENV_PREFIX = "LETL_POLICY_"
RULES = ("pin", "watermark", "idle", "promote", "superseded")


def _default_max_idle() -> dict[str, float | None]:
    return {"pmem": 1 * DAY, "ssd": 30 * DAY, "hdd": None, "cortx": None}


@dataclass(frozen=True)
class PolicySettings:
    """Seconds throughout. ``max_idle[tier]`` None (or a tier not listed): never idle out."""

    max_idle: dict[str, float | None] = field(default_factory=_default_max_idle)
    promote_reads: int = 3
    promote_window: float = 1 * DAY
    superseded_retention: float = 7 * DAY

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "PolicySettings":
        """Defaults, overridden by ``LETL_POLICY_*``, read now (not at import).

        ``LETL_POLICY_MAX_IDLE_<TIER>`` (e.g. ``LETL_POLICY_MAX_IDLE_SSD=14d``; ``none``: no limit),
        ``LETL_POLICY_PROMOTE_READS``, ``LETL_POLICY_PROMOTE_WINDOW``,
        ``LETL_POLICY_SUPERSEDED_RETENTION``. Durations: seconds, or a number with s/m/h/d/w.
        """
        return cls(
            max_idle={**_default_max_idle(), **family(ENV_PREFIX + "MAX_IDLE_", environ)},
            promote_reads=setting(ENV_PREFIX + "PROMOTE_READS", environ),
            promote_window=setting(ENV_PREFIX + "PROMOTE_WINDOW", environ),
            superseded_retention=setting(ENV_PREFIX + "SUPERSEDED_RETENTION", environ),
        )


@dataclass(frozen=True)
class PlannedMove:
    version_id: str
    asset_key: str
    partition: str
    src_tier: str
    dst_tier: str
    reason: str
    bytes: int
    rule: str = ""  # one of RULES
    branch: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class ApplyError(RuntimeError):
    """Some planned moves failed; the others were applied. ``results`` holds the applied ones."""

    def __init__(self, results: list[MoveResult], failures: list[tuple[PlannedMove, Exception]]):
        self.results, self.failures = results, failures
        detail = "; ".join(f"{m.version_id} -> {m.dst_tier}: {exc}" for m, exc in failures)
        super().__init__(f"{len(failures)} of {len(results) + len(failures)} planned move(s) failed: {detail}")


def plan(lake, settings: PolicySettings | None = None, now: datetime | None = None) -> list[PlannedMove]:
    """The moves the policy wants now, with reasons; nothing is moved."""
    return plan_with_pins(lake, settings, now)[0]


def plan_with_pins(lake, settings: PolicySettings | None = None,
                   now: datetime | None = None) -> tuple[list[PlannedMove], list[PlannedMove]]:
    """The moves the policy wants now, and the moves it would otherwise make that pins hold back."""
    settings = settings or PolicySettings.from_env()
    now = as_utc(now or utcnow())
    names = list(lake.tiers)  # hot -> cold
    available = {name: lake.tiers[name].unavailable() is None for name in names}
    quota = {name: lake.tiers[name].spec.quota_bytes for name in names}
    used = {name: 0 for name in names} | lake.tier_usage()
    everything = lake.catalog.list_versions()
    versions = [v for v in everything if v.tier in lake.tiers and available[v.tier]]
    last_access, reads = lake.catalog.access_stats(now, settings.promote_window)
    last_used = {v.version_id: max(last_access.get(v.version_id, v.created_at), v.created_at) for v in versions}
    latest = lake.catalog.latest_ids()
    pinned = lake.catalog.pinned_tiers(versions, latest)

    planned: list[PlannedMove] = []
    held: list[PlannedMove] = []
    moved: set[str] = set()

    def has_room(name: str, size: int) -> bool:
        return available[name] and (quota[name] == 0 or used[name] + size <= quota[name])

    def colder_with_room(version: Version) -> str | None:
        start = names.index(version.tier) + 1
        return next((n for n in names[start:] if has_room(n, version.bytes)), None)

    def add(version: Version, dst: str, rule: str, reason: str) -> None:
        move = PlannedMove(version.version_id, version.asset_key, version.partition, version.tier, dst,
                           reason, version.bytes, rule, version.branch)
        moved.add(version.version_id)
        pin = pinned.get(version.version_id)
        if pin is not None and dst != pin[0]:
            held.append(move)  # the pin wins; the tier's usage stays as it is, so other versions go instead
            return
        planned.append(move)
        used[version.tier] -= version.bytes
        used[dst] += version.bytes

    # 0. Pinned versions go to their pinned tier first, so that the other rules plan around them.
    for version in versions:
        tier, target = pinned.get(version.version_id, (version.tier, ""))
        if tier != version.tier and tier in lake.tiers and has_room(tier, version.bytes):
            add(version, tier, "pin", f"pinned to {tier} ({target})")

    # 1. Watermarks, hottest tier first, so that a demotion that fills the next tier is
    #    followed there by that tier's own demotions (of other versions).
    for name in names:
        spec = lake.tiers[name].spec
        if not available[name] or quota[name] <= 0 or used[name] <= spec.high_watermark * quota[name]:
            continue
        low = spec.low_watermark * quota[name]
        reason = (f"{name} above high watermark ({used[name] / quota[name]:.0%} of "
                  f"{format_size(quota[name])}): least recently used")
        lru = sorted((v for v in versions if v.tier == name and v.version_id not in moved),
                     key=lambda v: (last_used[v.version_id], v.version_id))
        for version in lru:
            if used[name] < low:
                break
            dst = colder_with_room(version)
            if dst is not None:
                idle = _human_duration((now - last_used[version.version_id]).total_seconds())
                add(version, dst, "watermark", f"{reason} (last used {idle} ago)")

    # 2. Idle versions sink one tier colder.
    for version in versions:
        limit = settings.max_idle.get(version.tier)
        if version.version_id in moved or limit is None:
            continue
        idle = (now - last_used[version.version_id]).total_seconds()
        if idle > limit:
            dst = colder_with_room(version)
            if dst is not None:
                add(version, dst, "idle",
                    f"idle {_human_duration(idle)} on {version.tier} (max {_human_duration(limit)})")

    # 3. Versions read often rise one tier, most read first, while the tier stays under its high watermark.
    hot = sorted((v for v in versions if reads.get(v.version_id, 0) >= settings.promote_reads),
                 key=lambda v: (-reads[v.version_id], -last_used[v.version_id].timestamp(), v.version_id))
    for version in hot:
        if version.version_id in moved:
            continue
        hotter = [n for n in names[:names.index(version.tier)] if available[n]]
        if not hotter:
            continue
        dst = hotter[-1]
        ceiling = lake.tiers[dst].spec.high_watermark * quota[dst]
        if quota[dst] == 0 or used[dst] + version.bytes <= ceiling:
            add(version, dst, "promote",
                f"read {reads[version.version_id]} times in {_human_duration(settings.promote_window)}")

    # 4. Superseded versions go to the coldest tier after the retention period.
    superseded_at = _superseded_at(everything, latest)
    for version in versions:
        when = superseded_at.get(version.version_id)
        if version.version_id in moved or when is None:
            continue
        age = (now - when).total_seconds()
        if age <= settings.superseded_retention:
            continue
        colder = [n for n in names[names.index(version.tier) + 1:] if has_room(n, version.bytes)]
        if colder:
            add(version, colder[-1], "superseded", f"superseded {_human_duration(age)} ago")
    return planned, held


def apply(
    lake,
    planned: list[PlannedMove],
    request_prefix: str,
    on_move: Callable[[PlannedMove, MoveResult], None] | None = None,
) -> list[MoveResult]:
    """Run the planned moves, each under the request id ``{prefix}:{version_id}:{dst_tier}``.

    Re-applying the same plan with the same prefix repeats nothing (the Mover answers
    with the first result, marked ``repeated``). A move that fails does not stop the
    others; if any failed, ``ApplyError`` is raised at the end, carrying the results.
    """
    mover = Mover(lake)
    results: list[MoveResult] = []
    failures: list[tuple[PlannedMove, Exception]] = []
    for move in planned:
        request_id = request_id_for(request_prefix, move)
        try:
            result = mover.move(move.version_id, move.dst_tier, request_id)
        except (LetlError, ValueError, OSError) as exc:  # one refused move does not stop the others
            log.error("policy move %s of %s %s -> %s failed: %s (reason: %s)",
                      request_id, move.asset_key, move.src_tier, move.dst_tier, exc, move.reason)
            failures.append((move, exc))
            continue
        note = " (repeated request: nothing done)" if result.repeated else ""
        log.info("policy move %s: %s %s %s -> %s: %s%s; %s", request_id, move.asset_key, move.version_id,
                 result.src_tier, result.dst_tier, result.state, note, move.reason)
        results.append(result)
        if on_move is not None:
            on_move(move, result)
    if failures:
        raise ApplyError(results, failures)
    return results


def request_id_for(prefix: str, move: PlannedMove) -> str:
    return f"{prefix}:{move.version_id}:{move.dst_tier}"


def plan_key(lake, planned: list[PlannedMove]) -> str:
    """A digest of the plan and of its versions' move history.

    Identical while the plan stands unapplied (a pending run is not requested twice),
    new once any of its versions has been moved or a move was attempted, so the same
    moves wanted again later are new requests rather than repeats of old ones.
    """
    history = lake.catalog.move_history(m.version_id for m in planned)
    text = "\n".join(sorted(f"{m.version_id} {m.src_tier} {m.dst_tier} {history.get(m.version_id, 0)}"
                            for m in planned))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _superseded_at(versions: list[Version], latest: set[str]) -> dict[str, datetime]:
    """For each version that is not a latest one: when its next newer version was created."""
    groups: dict[tuple[str, str, str], list[Version]] = {}
    for v in versions:
        groups.setdefault((v.asset_key, v.branch, v.partition), []).append(v)
    out = {}
    for group in groups.values():
        group.sort(key=lambda v: v.version_id)  # ids start with the UTC creation time
        for older, newer in zip(group, group[1:], strict=False):
            if older.version_id not in latest:
                out[older.version_id] = newer.created_at
    return out


def _human_duration(seconds: float) -> str:
    for unit, size in (("day", DAY), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            n = seconds / size
            text = f"{n:.0f}" if n >= 10 else f"{n:.1f}".removesuffix(".0")
            return f"{text} {unit}{'' if text == '1' else 's'}"
    return f"{seconds:.0f} seconds"
