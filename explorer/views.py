"""The files behind each dataset's DuckDB view, and what a query over them would scan.

Partitioned datasets are laid out Hive-style (``.../partition_key=2024-03-01/<version>.parquet``)
so that DuckDB prunes whole files on a partition filter instead of opening every month. Local
tiers get a directory of symbolic links (tier paths stay as they are); object-tier versions get
``letlobj://`` paths, read by byte ranges through :mod:`explorer.objectfs`.
"""

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from letl_assets.lake.catalog import Version
from letl_assets.lake.lake import Lake

from .datasets import Dataset
from .objectfs import PROTOCOL, object_path

PARTITION_COLUMN = "partition_key"
_SAFE_PARTITION = re.compile(r"[A-Za-z0-9_.:-]+\Z")


@dataclass(frozen=True)
class View:
    name: str
    dataset: Dataset
    versions: tuple[Version, ...]
    files: tuple[str, ...]

    @property
    def hive(self) -> bool:
        return all(v.partition and _SAFE_PARTITION.match(v.partition) for v in self.versions)


@dataclass(frozen=True)
class Snapshot:
    views: dict[str, View]
    allowed_dirs: tuple[str, ...]

    @property
    def key(self) -> str:
        """Changes whenever a version is added or moves tier: the result cache's version part."""
        parts = sorted(f"{v.version_id}@{v.tier}" for view in self.views.values() for v in view.versions)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def version_ids(self, names: list[str] | None = None) -> list[str]:
        chosen = self.views.values() if names is None else [self.views[n] for n in names if n in self.views]
        return sorted(v.version_id for view in chosen for v in view.versions)


def snapshot(lake: Lake, datasets: list[Dataset], pinned: dict[str, tuple[Version, ...]] | None = None) -> Snapshot:
    """Views over each dataset's latest versions, or the versions pinned for it (time travel)."""
    links = lake.config.home / "explorer" / "links"
    allowed = {str(links) + "/"}
    views = {}
    for dataset in datasets:
        versions = (pinned or {}).get(dataset.key) or dataset.latest
        if any(v.format != "parquet" for v in versions):
            continue  # CSV written through gros:// is listed on the Datasets page, not queried
        files = []
        for version in versions:
            path = _local_file(lake, version)
            if path is None:
                files.append(object_path(version))
                allowed.add(f"{PROTOCOL}://")
                continue
            allowed.add(str(path.resolve().parent) + "/")
            files.append(str(_link(links, version, path)) if version.partition else str(path))
        views[dataset.view] = View(dataset.view, dataset, tuple(versions), tuple(files))
    return Snapshot(views, tuple(sorted(allowed)))


def _local_file(lake: Lake, version: Version) -> Path | None:
    return lake.tiers[version.tier].backend.local_path(version.storage_key)


def _link(links: Path, version: Version, target: Path) -> Path:
    """A stable Hive-style name for a tier file; re-pointed when the version moved tier."""
    if not _SAFE_PARTITION.match(version.partition):
        return target
    link = links / version.asset_key / f"{PARTITION_COLUMN}={version.partition}" / f"{version.version_id}.parquet"
    if link.is_symlink() and os.readlink(link) == str(target):
        return link
    link.parent.mkdir(parents=True, exist_ok=True)
    temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    temp.symlink_to(target)
    temp.replace(link)  # atomic: a concurrent reader sees the old or the new link, never none
    return link


@dataclass(frozen=True)
class Estimate:
    versions: tuple[Version, ...]
    total: int  # partitions in the view
    partition_filter: bool

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.versions)


_KEEP = {
    "=": lambda k, v: k == v,
    "!=": lambda k, v: k != v,
    "<": lambda k, v: k < v,
    "<=": lambda k, v: k <= v,
    ">": lambda k, v: k > v,
    ">=": lambda k, v: k >= v,
    "between": lambda k, v: v[0] <= k <= v[1],
    "in": lambda k, v: k in v,
}


def estimate(view: View, filters) -> Estimate:
    """Partitions and bytes a query reads: the catalog's sizes of the files a partition filter keeps.

    ``filters`` are query-builder filters; those on the partition column prune, the rest do not.
    """
    kept = list(view.versions)
    used = False
    for flt in filters:
        if flt.column != PARTITION_COLUMN or flt.op not in _KEEP or not view.hive:
            continue
        used = True
        value = flt.value
        if flt.op == "between":
            value = (_as_key(value[0]), _as_key(value[1]))
        elif flt.op == "in":
            value = {_as_key(v) for v in value}
        else:
            value = _as_key(value)
        kept = [v for v in kept if _KEEP[flt.op](v.partition, value)]
    return Estimate(tuple(kept), len(view.versions), used)


def _as_key(value) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)
