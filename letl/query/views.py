"""The files behind each dataset's DuckDB view.

Partitioned datasets are laid out Hive-style (``.../partition_key=2024-03-01/<version>.parquet``)
so that DuckDB prunes whole files on a partition filter instead of opening every month. The
directory holds the partition name percent-encoded (lake/uri.encode_partition: "x/y" is
``partition_key=x%2Fy``), which DuckDB decodes, so every name, '/' and '=' included, is one path
segment made of ``[A-Za-z0-9_.%-]`` and the column holds the real name. Local
tiers get a directory of symbolic links (tier paths stay as they are); object-tier versions get
``letlobj://`` paths, read by byte ranges through :mod:`letl.query.objectfs`.
"""

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from letl.lake.access import version_access
from letl.lake.catalog import Version
from letl.lake.lake import Lake
from letl.lake.uri import hive_segment
from letl.query.datasets import Dataset
from letl.query.objectfs import PROTOCOL, object_path

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


def state_key(versions) -> str:
    """Changes whenever a version is added or moves tier: the caches' notion of "the same data"."""
    parts = sorted(f"{v.version_id}@{v.tier}" for v in versions)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class View:
    name: str
    dataset: Dataset
    versions: tuple[Version, ...]
    files: tuple[str, ...]

    @property
    def hive(self) -> bool:
        return all(v.partition for v in self.versions)

    @property
    def mixed_schema(self) -> bool:
        """Versions written with different columns (older months lack columns added since): DuckDB must
        then match columns by name, as it otherwise takes the first file's and refuses a file lacking one.
        Only then, since matching by name reads every file's footer when the view is made."""
        prints = {v.schema_fingerprint for v in self.versions}
        return len(self.versions) > 1 and (len(prints) > 1 or None in prints)

    @property
    def partition_type(self) -> str:
        """DATE for Dagster's time partitions (YYYY-MM-DD), text for any other key."""
        return "DATE" if all(_ISO_DATE.match(v.partition) for v in self.versions) else "VARCHAR"


@dataclass(frozen=True)
class Snapshot:
    views: dict[str, View]
    allowed_dirs: tuple[str, ...]
    unavailable: dict[str, str]  # dataset view name -> why it cannot be queried now

    @property
    def key(self) -> str:
        return state_key(v for view in self.views.values() for v in view.versions)

    @property
    def object_versions(self) -> frozenset[str]:
        return frozenset(v.version_id for view in self.views.values()
                         for v, f in zip(view.versions, view.files, strict=False) if f.startswith(f"{PROTOCOL}://"))


def snapshot(lake: Lake, datasets: list[Dataset], levels: frozenset[str],
             pinned: dict[str, tuple[Version, ...]] | None = None) -> Snapshot:
    """Views over each dataset's latest versions, or the versions pinned for it (time travel).

    Every version served must itself carry an access level in ``levels``: a pin to an old
    version cannot reach data written before a dataset was declassified.
    """
    links = lake.config.home / "explorer" / "links"
    allowed = {str(links) + "/"}
    views, unavailable = {}, {}
    for dataset in datasets:
        versions = (pinned or {}).get(dataset.key) or dataset.latest
        hidden = [v for v in versions if version_access(v) not in levels]
        if hidden:
            raise PermissionError(f"{dataset.key}: {len(hidden)} of the chosen versions are restricted")
        why = _unqueryable(lake, versions)
        if why:
            unavailable[dataset.view] = why
            continue
        files = []
        for version in versions:
            path = lake.tiers[version.tier].backend.local_path(version.storage_key)
            if path is None:
                files.append(object_path(version))
                allowed.add(f"{PROTOCOL}://{version.asset_key}/")
                continue
            allowed.add(str(path.resolve().parent) + "/")
            files.append(str(_link(links, version, path)) if version.partition else str(path))
        views[dataset.view] = View(dataset.view, dataset, tuple(versions), tuple(files))
    return Snapshot(views, tuple(sorted(allowed)), unavailable)


def _unqueryable(lake: Lake, versions) -> str | None:
    if any(v.format != "parquet" for v in versions):
        return "stored as CSV (written through gros://); read it with pandas, not SQL"
    for version in versions:
        if version.tier not in lake.tiers:
            return f"partition {version.partition or '-'} is on tier {version.tier!r}, which is not configured here"
    return None


def _link(links: Path, version: Version, target: Path) -> Path:
    """A stable Hive-style name for a tier file; re-pointed when the version moved tier."""
    link = links / version.asset_key / hive_segment(version.partition) / f"{version.version_id}.parquet"
    if link.is_symlink() and os.readlink(link) == str(target):
        return link
    link.parent.mkdir(parents=True, exist_ok=True)
    # Unique per builder: sessions in one process and other processes build snapshots at once.
    temp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.tmp")
    temp.symlink_to(target)
    temp.replace(link)  # atomic: a concurrent reader sees the old or the new link, never none
    return link

