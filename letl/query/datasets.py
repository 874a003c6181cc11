"""What the explorer shows about the lake: datasets, versions, tiers, freshness and lineage.

Everything comes from the catalog. The dataset's description, owners and access level travel
with each version (the IO manager stores them), so the explorer never imports the Dagster code.
"""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from letl.lake.access import ACCESS_LEVELS, strictest
from letl.lake.catalog import Version
from letl.lake.lake import Lake
from letl.lake.names import repo_of
from letl.lake.uri import GrosRef, dataset_uri, format_uri, parse, resolve

ROLES = {"analyst": frozenset({"deidentified"}), "steward": frozenset(ACCESS_LEVELS)}
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class Dataset:
    key: str
    view: str
    description: str
    group: str | None
    owners: tuple[str, ...]
    access: str
    fresh_within: timedelta | None
    latest: tuple[Version, ...]  # the latest version of each partition, oldest partition first

    @property
    def partitioned(self) -> bool:
        return any(v.partition for v in self.latest)

    @property
    def partitions(self) -> list[str]:
        return [v.partition for v in self.latest if v.partition]

    @property
    def rows(self) -> int:
        return sum(v.rows or 0 for v in self.latest)

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.latest)

    @property
    def tiers(self) -> dict[str, int]:
        return dict(Counter(v.tier for v in self.latest))

    @property
    def updated_at(self) -> datetime:
        return max(v.created_at for v in self.latest)

    @property
    def uri(self) -> str:
        return dataset_uri(self.key)

    def freshness(self, now: datetime | None = None) -> str:
        age = (now or datetime.now(timezone.utc)) - self.updated_at
        if self.fresh_within is None:
            return f"updated {_age(age)} ago (no freshness policy)"
        state = "fresh" if age <= self.fresh_within else "STALE"
        return f"{state}: updated {_age(age)} ago, policy {_age(self.fresh_within)}"


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def view_names(keys: list[str]) -> dict[str, str]:
    """SQL names for datasets: the last part of the key, or the whole key where two would clash."""
    short = {k: _NOT_NAME.sub("_", k.split("/")[-1].lower()) for k in keys}
    clashes = {n for n, c in Counter(short.values()).items() if c > 1}
    names = {k: _NOT_NAME.sub("_", k.lower()) if n in clashes else n for k, n in short.items()}
    return {k: n if re.match(r"[a-z_]", n) else f"_{n}" for k, n in names.items()}


def load_datasets(lake: Lake, branch: str | None = None) -> list[Dataset]:
    """Every dataset with a latest version on the branch, sorted by key."""
    by_key: dict[str, list[Version]] = {}
    for version in lake.catalog.latest_versions(branch or lake.branch):
        by_key.setdefault(version.asset_key, []).append(version)
    names = view_names(sorted(by_key))
    return [_dataset(key, names[key], sorted(by_key[key], key=lambda v: v.partition)) for key in sorted(by_key)]


def _dataset(key: str, view: str, latest: list[Version]) -> Dataset:
    about = max(latest, key=lambda v: v.created_at).metadata.get("dataset") or {}
    fresh = about.get("fresh_within_s")
    return Dataset(
        key=key,
        view=view,
        description=about.get("description") or "",
        group=about.get("group"),
        owners=tuple(about.get("owners") or ()),
        # The strictest level among the versions served: one writer declaring a single partition
        # "deidentified" cannot open the other partitions of a restricted dataset.
        access=strictest(latest),
        fresh_within=timedelta(seconds=fresh) if fresh else None,
        latest=tuple(latest),
    )


def visible(datasets: list[Dataset], role: str) -> list[Dataset]:
    allowed = ROLES.get(role, ROLES["analyst"])
    return [d for d in datasets if d.access in allowed]


def history(lake: Lake, dataset: Dataset) -> list[tuple[Version, str]]:
    """Every version of the dataset with the gros:// URI that pins it, newest first."""
    branch = dataset.latest[0].branch
    versions = lake.catalog.list_versions(asset_key=dataset.key, branch=branch)
    repo, rows, index = repo_of(dataset.key), [], Counter()
    for version in sorted(versions, key=lambda v: (v.partition, v.created_at, v.version_id)):
        # format_uri percent-encodes a partition name holding '/' or '=', so that every URI parses back.
        uri = format_uri(repo, branch, "index", index[version.partition], version.partition or None)
        rows.append((version, uri))
        index[version.partition] += 1
    return sorted(rows, key=lambda r: (r[0].created_at, r[0].version_id), reverse=True)


def at_tag(lake: Lake, dataset: Dataset, tag: str) -> tuple[Version, ...]:
    """Time travel: the versions a gros:// tag (latest, a date, or an index) selects, one per partition."""
    ref: GrosRef = parse(f"{dataset.uri}/{dataset.latest[0].branch}:{tag}" if tag else dataset.uri)
    return tuple(resolve(lake, ref))


def lineage(lake: Lake, dataset: Dataset) -> tuple[list[str], list[str]]:
    """Datasets the latest versions were built from, and datasets built from them."""
    ups, downs = set(), set()
    for version in dataset.latest:
        ups.update(v.asset_key for v in lake.catalog.upstreams(version.version_id))
        downs.update(v.asset_key for v in lake.catalog.downstreams(version.version_id))
    return sorted(ups), sorted(downs)
