"""The object tier's view for clients that have only S3 credentials: labels on every object, and
one small "latest" pointer per dataset, branch and partition.

An awscli or boto3 user sees every version of a dataset in the bucket and cannot ask the catalog
which is latest. So each S3 tier's manifest store (the sibling prefix ``<prefix>.gros/``, beside
the lineage manifests: see manifests.py) holds

    latest/<repo>/<branch>/<partition or _>.json
        {"format": "letl-latest/1", "dataset", "repo", "branch", "partition", "version_id", "access",
         "on_this_store", "bucket", "key", "sha256", "bytes", "rows", "file_format",
         "created_at", "updated_at"}

Branch and partition are one key segment each (``segment``): a branch ``main/x`` with partition ``p``
and branch ``main`` with partition ``x/p`` must not share a pointer. Object keys allow only
``[A-Za-z0-9_.=-]``, so ``=`` is the escape character: ``=`` is written ``=3D`` and ``/`` ``=2F``.

written by one PUT whenever the latest version of that partition changes, or moves onto or off
this tier. When the latest version is on another tier, ``on_this_store`` is false and ``bucket``
and ``key`` are null, so that a client never downloads a superseded object believing it is the
latest. (Which other tier holds it is not said: it changes with every move between the hot tiers,
and an S3-only client could not read it there anyway.)
Pointers live outside the tier's own keys on purpose: fsck deletes keys no version points at.

Every object the lake stores carries ``object_labels`` (S3 user metadata ``x-amz-meta-letl-*``)
plus its sha256 (storage/s3.py), so a client can verify a download without the catalog. No patient
value is ever a label: they are dataset names, branch names, partition keys and version ids.

A pointer that cannot be written never fails the publish or move that changed it: the failure is
logged and recorded under ``$LETL_HOME/pointers-pending/``, retried by the next refresh, and
``heal`` (run by ``letl tier fsck``) rewrites every pointer from the catalog. A publish records its
pointers there before its commit (``announce``), so that one killed between its commit and its
refresh leaves them to the next publish or fsck instead of naming the superseded version. Such a
marker names the version it announces, and is taken up only once that version is committed (or
the marker is older than ``_ANNOUNCED_FOR``): a concurrent refresh must not consume it before.
"""

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from letl.lake.access import version_access
from letl.lake.catalog import Version, utcnow
from letl.lake.errors import NotFound, one_line
from letl.lake.manifests import manifest_store
from letl.lake.names import repo_of
from letl.storage.contract import MAX_KEY_PART, validate_key
from letl.storage.s3_transfer import SHA256_LABEL

log = logging.getLogger("letl")

ROOT = "latest"
FORMAT = "letl-latest/1"
PENDING_DIR = "pointers-pending"
_ROUNDS = 3  # a concurrent publisher may move the latest version while a pointer is written: look again
_ANNOUNCED_FOR = 600.0  # seconds: a publish commits within this of announcing, or it died before its commit


def object_labels(asset_key: str, branch: str, partition: str, version_id: str, sha256: str | None = None) -> dict:
    """A version object's S3 metadata; an unpartitioned dataset has no letl-partition."""
    labels = {"letl-dataset": asset_key, "letl-branch": branch, "letl-version": version_id}
    if partition:
        labels["letl-partition"] = partition
    if sha256:
        labels[SHA256_LABEL] = sha256
    return labels


def segment(name: str) -> str:
    """One key segment for a branch or partition name that may hold '/'. Escaping can make it longer
    than a key part may be: then it is cut and ends in '=H' and a digest, a form escaping never makes."""
    encoded = name.replace("=", "=3D").replace("/", "=2F")
    if len(encoded) + len(".json") <= MAX_KEY_PART:
        return encoded
    return f"{encoded[:120]}=H{hashlib.sha256(name.encode()).hexdigest()[:40]}"


def pointer_key(asset_key: str, branch: str, partition: str) -> str:
    return validate_key(f"{ROOT}/{repo_of(asset_key)}/{segment(branch)}/{segment(partition) or '_'}.json")


def object_tiers(lake) -> list[str]:
    """The tiers an S3-only client can read: every s3:// tier."""
    return [name for name, tier in lake.tiers.items() if tier.spec.scheme == "s3"]


def document(lake, tier_name: str, version: Version) -> dict[str, Any]:
    here = version.tier == tier_name
    backend = lake.tiers[tier_name].backend
    return {
        "format": FORMAT, "dataset": version.asset_key, "repo": repo_of(version.asset_key),
        "branch": version.branch, "partition": version.partition, "version_id": version.version_id,
        "access": version_access(version), "on_this_store": here,
        "bucket": backend.bucket if here else None, "key": backend.prefix + version.storage_key if here else None,
        "sha256": version.sha256, "bytes": version.bytes, "rows": version.rows, "file_format": version.format,
        "created_at": version.created_at.isoformat(), "updated_at": utcnow().isoformat(),
    }


def _same(a: dict | None, b: dict | None) -> bool:
    def content(d):
        return None if d is None else {k: v for k, v in d.items() if k != "updated_at"}

    return content(a) == content(b)


def _read(store, key: str) -> dict | None:
    try:
        with store.open(key) as stream:
            return json.loads(stream.read())
    except NotFound:
        return None
    except ValueError:  # a damaged pointer is rewritten, not trusted
        return {}


def _write(lake, tier_name: str, asset_key: str, branch: str, partition: str) -> bool:
    """Make one tier's pointer say what the catalog says now; True if it was (re)written."""
    store = manifest_store(lake, tier_name)
    key = pointer_key(asset_key, branch, partition)
    changed = False
    for _ in range(_ROUNDS):
        latest = lake.latest(asset_key, partition, branch)
        wanted = None if latest is None else document(lake, tier_name, latest)
        if _same(_read(store, key), wanted):
            return changed
        if wanted is None:
            store.delete(key)
        else:
            store.replace(key, json.dumps(wanted, sort_keys=True).encode() + b"\n",
                          object_labels(asset_key, branch, partition, latest.version_id))
        changed = True
    return changed


def announce(lake, versions: Iterable[Version]) -> list[Path]:
    """Before a publish commits: its pointers recorded as pending (see the module's docstring)."""
    if not object_tiers(lake):
        return []
    return [path for v in versions if (path := _mark(lake, (v.asset_key, v.branch, v.partition), v.version_id))]


def withdraw(markers: Iterable[Path]) -> None:
    """A publish that did not commit: its announcements are void."""
    for path in markers:
        path.unlink(missing_ok=True)


def refresh(lake, changed: Iterable[tuple[str, str, str]]) -> None:
    """After a publish or a move: rewrite the pointers of these (asset key, branch, partition) that
    no longer match the catalog, and retry earlier failures. Never raises: the change is committed."""
    tiers = object_tiers(lake)
    if not tiers:
        return
    ready = _ready(lake)
    wanted = dict.fromkeys(changed) | dict.fromkeys(triple for triple, _ in ready)
    down = [problem for name in tiers if (problem := lake.tiers[name].unavailable())]
    if down and not lake.__dict__.get("_pointers_warned"):  # one warning per lake, not one per partition of a run
        lake.__dict__["_pointers_warned"] = True
        log.warning("latest pointers not written (%s): retried on the next publish and by letl tier fsck",
                    "; ".join(down))
    for triple in wanted:
        kept = None
        if down:
            kept = _mark(lake, triple)
        else:
            try:
                for tier_name in tiers:
                    _write(lake, tier_name, *triple)
            except Exception as exc:  # recorded and retried: a pointer must never undo a commit
                log.warning("latest pointer of %s (branch %s, partition %s) not written (%s): retried on the next "
                            "publish and by letl tier fsck", triple[0], triple[1], triple[2] or "-", exc)
                kept = _mark(lake, triple)
        withdraw(path for pending, path in ready if pending == triple and path != kept)  # one marker per pointer


def refresh_versions(lake, versions: Iterable[Version]) -> None:
    refresh(lake, [(v.asset_key, v.branch, v.partition) for v in versions])


def heal(lake, dry_run: bool = False) -> dict[str, list[str]]:
    """Every pointer on every reachable S3 tier rewritten from the catalog, and pointers of partitions
    without a latest version removed; returns what was (or, dry run, would be) written and removed."""
    report: dict[str, list[str]] = {"written": [], "removed": [], "failed": []}
    ready = _ready(lake)  # before the catalog is read: what was committed by then, the rewrite covers
    current = {(v.asset_key, v.branch, v.partition): v for branch in lake.catalog.latest_counts()
               for v in lake.catalog.latest_versions(branch)}
    by_key = {pointer_key(*triple): triple for triple in current}
    for tier_name in object_tiers(lake):
        try:
            if problem := lake.tiers[tier_name].unavailable():
                raise ConnectionError(problem)
            _heal_tier(lake, tier_name, current, by_key, dry_run, report)
        except Exception as exc:  # this tier is reported; the others are still healed
            report["failed"].append(f"{tier_name}: {one_line(exc)}")
    if not dry_run and not report["failed"]:
        withdraw(path for _, path in ready)
    return report


def _heal_tier(lake, tier_name: str, current: dict, by_key: dict, dry_run: bool, report: dict) -> None:
    store = manifest_store(lake, tier_name)
    for key in sorted(set(store.keys(f"{ROOT}/")) - set(by_key)):
        report["removed"].append(f"{tier_name}:{key}")
        if not dry_run:
            store.delete(key)
    for key, triple in sorted(by_key.items()):
        if dry_run:
            if not _same(_read(store, key), document(lake, tier_name, current[triple])):
                report["written"].append(f"{tier_name}:{key}")
        elif _write(lake, tier_name, *triple):
            report["written"].append(f"{tier_name}:{key}")


def _mark(lake, triple: tuple[str, str, str], version_id: str | None = None) -> Path | None:
    """Record a pointer to rewrite; with version_id, an announcement of that version's publish."""
    try:
        tag = hashlib.sha256("\0".join(triple).encode()).hexdigest()[:32]
        if version_id:
            tag += "-" + hashlib.sha256(version_id.encode()).hexdigest()[:16]
        path = lake.config.home / PENDING_DIR / f"{tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}-{uuid.uuid4().hex[:8]}.tmp")  # two markers of one pointer never mix
        tmp.write_text(json.dumps({"pointer": list(triple), "version_id": version_id}))
        tmp.replace(path)
        return path
    except OSError as exc:  # the warning already logged stands; fsck's heal still finds it
        log.warning("could not record a pending latest pointer (%s)", exc)
        return None


def _ready(lake) -> list[tuple[tuple[str, str, str], Path]]:
    """The pending pointers to rewrite now, each with its marker: announcements of publishes that
    have not committed yet (and may still) are left for later."""
    folder = lake.config.home / PENDING_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            marker = json.loads(path.read_text())
            if isinstance(marker, list):  # an older release's: a pointer whose write failed
                marker = {"pointer": marker, "version_id": None}
            announced, age = marker["version_id"], time.time() - path.stat().st_mtime
            if announced and age < _ANNOUNCED_FOR and lake.catalog.get(announced) is None:
                continue
            found.append((tuple(marker["pointer"]), path))
        except FileNotFoundError:  # taken up by a concurrent refresh meanwhile
            continue
        except (OSError, ValueError, KeyError, TypeError):  # half-written by a crash, or an older release's
            path.unlink(missing_ok=True)  # heal rewrites every pointer anyway
    return found
