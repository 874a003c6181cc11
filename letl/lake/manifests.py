"""The lineage audit trail in GROS layout, and the catalog rebuilt from it.

Every committed version writes two kinds of small JSON objects (keys relative to a
manifest store, see below):

    dependency/{repo}/{branch}/{version_id}/metadata.json
        {"format": "letl-manifest/1", "repo", "version": <the full version row>,
         "upstream_version_ids": [...], "upstreams": [{"repo", "branch", "version_id"}]}
    dependency/{up_repo}/{up_branch}/downstreams/{up_version_id}/{down_repo}={down_version_id}
        {"downstream": {...}, "upstream": {...}}   (a marker: one per lineage edge)

``repo`` is the asset key with ``.`` between its parts. GROS writes ``repo@version``
in a marker's name; ``@`` is not a valid storage-key character, so ``=`` separates them.

Where: the manifest store of the *coldest available* tier (highest rank), not the
version's own tier. The hot tiers are tmpfs or node-local caches (pmem is lost on
reboot) and versions move between tiers, while the audit trail must outlive both the
catalog file and any one hot node. If the coldest tier cannot be reached, the next
warmer one is used; rebuild reads the stores of every tier, so nothing depends on which
tier was coldest at write time.

A tier's manifest store is the tier's own kind of backend on the same storage, in a
sibling namespace: ``{dir}.gros`` next to a directory tier, ``s3://bucket/{prefix}.gros``
next to an S3 prefix, dictionary ``{dict}.gros`` next to a DAOS dictionary. It is kept
out of the tier's own key space on purpose: ``letl tier fsck`` deletes every key of a
tier that no catalog version points at, and quota/usage accounting compares a tier's
stored bytes with the catalogued ones. (An S3 tier at a bucket root has no sibling
prefix; its store is the prefix ``gros-manifests/`` inside the tier, which fsck would
treat as orphans: such a layout needs fsck to skip that prefix.)

The ``tier`` in a manifest is where the version was *written*. Moves change a version's
tier but never rewrite its manifest (manifests are immutable, like versions), so rebuild
locates each version by asking which tier's backend holds its ``storage_key``: the
written tier first, then the others hottest first.

Manifests hold what the catalog's versions, lineage and latest tables hold. They do not
hold the access log or move history; a rebuilt catalog starts those empty.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from letl.lake import uri
from letl.lake.catalog import Catalog, Version
from letl.lake.errors import Conflict, InvalidInput, NotFound
from letl.lake.names import repo_of
from letl.storage.contract import Backend, validate_key
from letl.storage.factory import make_backend

log = logging.getLogger("letl")

ROOT = "dependency"
FORMAT = "letl-manifest/1"
STORE_SUFFIX = ".gros"
MARKER_SEP = "="  # GROS writes repo@version; '@' is not allowed in storage keys


class CatalogNotEmpty(Conflict, RuntimeError):
    """rebuild() into a catalog that already holds versions, without force."""


class ManifestError(RuntimeError):
    pass


# -- names -------------------------------------------------------------------------------

def manifest_key(version: Version) -> str:
    return validate_key(f"{ROOT}/{repo_of(version.asset_key)}/{version.branch}/{version.version_id}/metadata.json")


def marker_key(upstream: Version, downstream: Version) -> str:
    return validate_key(
        f"{ROOT}/{repo_of(upstream.asset_key)}/{upstream.branch}/downstreams/{upstream.version_id}/"
        f"{repo_of(downstream.asset_key)}{MARKER_SEP}{downstream.version_id}"
    )


# -- where manifests live ----------------------------------------------------------------

def store_location(location: str) -> str:
    """The sibling namespace of a tier location that holds its manifests."""
    if "://" not in location or location.startswith("file://"):
        return location.rstrip("/") + STORE_SUFFIX
    scheme, rest = location.split("://", 1)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        return f"s3://{bucket}/{prefix + STORE_SUFFIX if prefix else 'gros-manifests'}"
    if scheme == "daos":
        pool, cont, *name = rest.split("/")
        return f"daos://{pool}/{cont}/{(name[0] if name else 'letl') + STORE_SUFFIX}"
    raise ValueError(f"no manifest store for tier location {location!r}")


def manifest_store(lake, tier_name: str) -> Backend:
    stores = lake.__dict__.setdefault("_manifest_stores", {})
    if tier_name not in stores:
        spec = lake.tiers[tier_name].spec
        stores[tier_name] = make_backend(dataclasses.replace(spec, location=store_location(spec.location)), lake.config.home)
    return stores[tier_name]


def manifest_tiers(lake) -> list[str]:
    """Tiers to write manifests to, in order of preference: coldest (most durable) first, reachable only."""
    return [name for name in reversed(list(lake.tiers)) if not lake.tiers[name].unavailable()]


# -- writing -----------------------------------------------------------------------------

def version_record(version: Version) -> dict[str, Any]:
    row = version.as_row()
    record = {k: v for k, v in row.items() if k != "metadata_json"}
    record["created_at"] = version.created_at.isoformat()
    record["metadata"] = json.loads(row["metadata_json"])  # exactly what the catalog stores
    return record


def version_from_record(record: dict[str, Any]) -> Version:
    fields = dict(record)
    fields["created_at"] = datetime.fromisoformat(fields["created_at"])
    return Version(**{name: fields[name] for name in Version.__dataclass_fields__})


def manifest_document(version: Version, upstreams: list[Version]) -> dict[str, Any]:
    ups = sorted(upstreams, key=lambda u: u.version_id)
    return {
        "format": FORMAT,
        "repo": repo_of(version.asset_key),
        "version": version_record(version),
        "upstream_version_ids": [u.version_id for u in ups],
        "upstreams": [{"repo": repo_of(u.asset_key), "branch": u.branch, "version_id": u.version_id} for u in ups],
        "tier_note": "tier is where the version was written; moves do not rewrite this file",
    }


def _marker_document(upstream: Version, downstream: Version) -> dict[str, Any]:
    def ref(v: Version) -> dict[str, str]:
        return {"asset_key": v.asset_key, "repo": repo_of(v.asset_key), "branch": v.branch, "version_id": v.version_id}

    return {"format": FORMAT, "upstream": ref(upstream), "downstream": ref(downstream)}


def _dump(doc: dict) -> bytes:
    # Deterministic bytes: a repeated write of the same manifest is a no-op on every backend.
    return (json.dumps(doc, sort_keys=True, indent=1, default=str) + "\n").encode()


def write_manifest(lake, version: Version, upstreams: list[Version] | None = None) -> dict[str, Any]:
    """Write the version's manifest and one downstream marker per upstream; returns where.

    Upstreams default to the catalog's lineage of the version (exact and already committed).
    Tries the coldest reachable tier first, then warmer ones; raises ManifestError if none takes it.
    """
    if upstreams is None:
        upstreams = lake.catalog.upstreams(version.version_id)
    objects = [(manifest_key(version), _dump(manifest_document(version, upstreams)))]
    objects += [(marker_key(u, version), _dump(_marker_document(u, version))) for u in upstreams]
    problems = []
    for tier_name in manifest_tiers(lake):
        store = manifest_store(lake, tier_name)
        try:
            for key, data in objects:
                store.put(key, io.BytesIO(data))
            return {"tier": tier_name, "keys": [key for key, _ in objects]}
        except Exception as exc:  # try the next tier: any reachable durable store will do
            problems.append(f"{tier_name}: {exc}")
    raise ManifestError(f"manifest of {version.version_id} not written: {'; '.join(problems) or 'no reachable tier'}")


def record_version(lake, version: Version) -> dict[str, Any] | None:
    """Lake.write_version's hook, called after the commit: never fails a committed write.

    The version is already committed and readable; failing here would make the caller retry,
    and a retry over identical bytes reuses this version without writing anything. So a failure
    is logged, and ``backfill(lake)`` writes the missing manifests later from the catalog.
    """
    try:
        return write_manifest(lake, version)
    except Exception as exc:
        log.warning("lineage manifest of version %s not written (%s): the version is committed, but a "
                    "catalog rebuild would not see it until its manifest is written", version.version_id, exc)
        return None


def backfill(lake) -> dict[str, Any]:
    """Write manifests for catalog versions that have none on any tier (older versions, failed writes)."""
    have = set(read_manifests(lake)["manifests"])
    written = []
    for version in lake.catalog.list_versions():
        if version.version_id not in have:
            write_manifest(lake, version)
            written.append(version.version_id)
    return {"written": written, "already": len(have)}


# -- reading -----------------------------------------------------------------------------

def read_manifests(lake) -> dict[str, Any]:
    """Every manifest and marker on every reachable tier's store (deduplicated by version id)."""
    manifests: dict[str, dict] = {}
    markers: set[tuple[str, str]] = set()  # (upstream version id, downstream version id)
    scanned, unavailable, invalid = [], [], []
    for tier_name, tier in lake.tiers.items():
        if tier.unavailable():
            unavailable.append(tier_name)
            continue
        store = manifest_store(lake, tier_name)
        scanned.append(tier_name)
        for key in store.keys(f"{ROOT}/"):
            parts = key.split("/")
            if len(parts) == 5 and parts[4] == "metadata.json":
                try:
                    with store.open(key) as stream:
                        doc = json.loads(stream.read())
                    if doc.get("format") != FORMAT or doc["version"]["version_id"] != parts[3]:
                        raise ValueError("not a manifest of this version")
                    doc["_tier"] = tier_name
                    manifests.setdefault(parts[3], doc)
                except (ValueError, KeyError, TypeError) as exc:
                    invalid.append(f"{tier_name}:{key}: {exc}")
            elif len(parts) == 6 and parts[3] == "downstreams" and MARKER_SEP in parts[5]:
                markers.add((parts[4], parts[5].rsplit(MARKER_SEP, 1)[1]))
            else:
                invalid.append(f"{tier_name}:{key}: unknown key layout")
    return {"manifests": manifests, "markers": markers, "scanned": scanned, "unavailable": unavailable,
            "invalid": sorted(invalid)}


def locate(lake, version: Version) -> tuple[str, list[str]]:
    """(the tier holding the version's object, every tier holding it): written tier first, then hottest first."""
    order = [version.tier] if version.tier in lake.tiers else []
    order += [name for name in lake.tiers if name != version.tier]
    holders = [name for name in order if not lake.tiers[name].unavailable()
               and lake.tiers[name].backend.exists(version.storage_key)]
    return (holders[0] if holders else version.tier), holders


# -- rebuild -----------------------------------------------------------------------------

def rebuild(lake, target_url: str | None = None, force: bool = False) -> dict[str, Any]:
    """Reconstruct versions, lineage and latest pointers from the manifests alone.

    Into the lake's configured catalog (for example after its SQLite file was lost) or into
    ``target_url``. A catalog that already holds versions is refused unless ``force``; with
    force, manifest rows are upserted (a version's fields are overwritten with its manifest's,
    tier located anew), missing edges added, and nothing else removed. Running it twice
    gives the same catalog.
    """
    catalog = Catalog(target_url) if target_url else lake.catalog
    present = catalog.version_count()
    if present and not force:
        raise CatalogNotEmpty(f"catalog {_safe_url(catalog.url)} already holds {present} versions; "
                              "use force to merge the manifests into it")
    found = read_manifests(lake)
    docs = found["manifests"]
    found_versions, moved, missing, ambiguous = [], [], [], []
    for vid in sorted(docs):
        written = version_from_record(docs[vid]["version"])
        tier, holders = locate(lake, written)
        if not holders:
            missing.append(f"{written.tier}:{written.storage_key}")
        elif len(holders) > 1:
            ambiguous.append({"version_id": vid, "tiers": holders, "chosen": tier})
        if tier != written.tier:
            moved.append({"version_id": vid, "written_on": written.tier, "found_on": tier})
        found_versions.append(dataclasses.replace(written, tier=tier))

    merged = catalog.merge_versions(found_versions, {(vid, up) for vid, doc in docs.items()
                                                     for up in doc["upstream_version_ids"]})
    edges = merged["edges"]
    marker_edges = found["markers"]
    return {
        "target": _safe_url(catalog.url),
        "scanned_tiers": found["scanned"],
        "unavailable_tiers": found["unavailable"],
        "manifests": len(docs),
        "versions": len(found_versions),
        "inserted": merged["inserted"],
        "lineage_edges": len(edges),
        "latest_pointers": merged["latest_pointers"],
        "markers": len(marker_edges),
        "moved": moved,
        "missing_objects": missing,
        "ambiguous": ambiguous,
        "dangling_upstreams": sorted(f"{vid}<-{up}" for vid, up in merged["dangling"]),
        "edges_without_marker": sorted(f"{v}<-{u}" for v, u in edges - {(d, u) for u, d in marker_edges}),
        "markers_without_edge": sorted(f"{d}<-{u}" for u, d in marker_edges
                                       if (d, u) not in edges and d in docs),
        "invalid": found["invalid"],
        "not_rebuilt": ["access_log", "moves"],
    }


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# -- branches and diff -------------------------------------------------------------------

def branches(lake) -> dict[str, dict[str, int]]:
    """branch -> number of versions, assets and latest partitions, from the catalog."""
    counts: dict[str, Counter] = defaultdict(Counter)
    assets: dict[str, set] = defaultdict(set)
    for v in lake.catalog.list_versions():
        counts[v.branch]["versions"] += 1
        assets[v.branch].add(v.asset_key)
    for branch, n in lake.catalog.latest_counts().items():
        counts[branch]["latest"] = n
    return {b: {"versions": counts[b]["versions"], "assets": len(assets[b]), "latest": counts[b]["latest"]}
            for b in sorted(counts)}


def parse_ref(ref: str) -> tuple[str, str]:
    """'gros://repo[/branch]' -> (repo, branch); tag and query are ignored."""
    try:
        parsed = uri.parse(ref)
    except uri.GrosURIError as exc:
        raise InvalidInput(f"bad reference {ref!r}: {exc}") from exc
    return parsed.repo, parsed.branch


def _asset_of(lake, repo: str) -> str:
    known = sorted({v.asset_key for v in lake.catalog.list_versions()})
    matches = [a for a in known if repo_of(a) == repo]
    if not matches:
        raise NotFound(f"unknown repo {repo!r}; known: {', '.join(repo_of(a) for a in known) or 'none'}")
    return matches[0]


def _latest_by_partition(lake, asset_key: str, branch: str) -> dict[str, Version]:
    return {v.partition: v for v in lake.catalog.latest_versions(branch, asset_key)}


def _columns(lake, version: Version) -> dict[str, str] | None:
    if version.format != "parquet":
        return None
    import pyarrow.parquet as pq

    schema = pq.read_schema(lake.local_path(version))  # footer only
    return {f.name: str(f.type) for f in schema}


def diff(lake, ref_a: str, ref_b: str) -> dict[str, Any]:
    """Compare the latest versions of two branches (of a repo), partition by partition."""
    (repo_a, branch_a), (repo_b, branch_b) = parse_ref(ref_a), parse_ref(ref_b)
    known = lake.catalog.latest_counts()  # a misspelled branch must not pass for one holding nothing
    for branch in (branch_a, branch_b):
        if branch not in known:
            raise NotFound(f"unknown branch {branch!r}; branches: {', '.join(sorted(known)) or 'none'}")
    asset_a, asset_b = _asset_of(lake, repo_a), _asset_of(lake, repo_b)
    side_a, side_b = _latest_by_partition(lake, asset_a, branch_a), _latest_by_partition(lake, asset_b, branch_b)
    if not side_a and not side_b:
        raise NotFound(f"no versions of {repo_a} on {branch_a} nor of {repo_b} on {branch_b}")

    def brief(v: Version | None) -> dict | None:
        if v is None:
            return None
        return {"version_id": v.version_id, "rows": v.rows, "bytes": v.bytes, "sha256": v.sha256,
                "schema_fingerprint": v.schema_fingerprint, "tier": v.tier, "created_at": v.created_at.isoformat()}

    partitions, summary = [], Counter()
    for part in sorted(set(side_a) | set(side_b)):
        a, b = side_a.get(part), side_b.get(part)
        entry: dict[str, Any] = {"partition": part, "a": brief(a), "b": brief(b)}
        if a is None or b is None:
            entry["status"] = "only_a" if b is None else "only_b"
        else:
            entry["status"] = "same" if a.sha256 == b.sha256 else "changed"
            entry["rows_delta"] = None if a.rows is None or b.rows is None else b.rows - a.rows
            entry["schema_changed"] = a.schema_fingerprint != b.schema_fingerprint
            cols_a, cols_b = _columns(lake, a), _columns(lake, b)
            if cols_a is not None and cols_b is not None:
                entry["columns"] = {
                    "only_in_a": [{"name": n, "type": t} for n, t in cols_a.items() if n not in cols_b],
                    "only_in_b": [{"name": n, "type": t} for n, t in cols_b.items() if n not in cols_a],
                    "type_changed": [{"name": n, "a": cols_a[n], "b": cols_b[n]}
                                     for n in cols_a if n in cols_b and cols_a[n] != cols_b[n]],
                }
        summary[entry["status"]] += 1
        partitions.append(entry)
    return {
        "a": {"ref": ref_a, "repo": repo_a, "branch": branch_a, "asset_key": asset_a},
        "b": {"ref": ref_b, "repo": repo_b, "branch": branch_b, "asset_key": asset_b},
        "summary": {k: summary[k] for k in ("same", "changed", "only_a", "only_b")},
        "partitions": partitions,
    }
