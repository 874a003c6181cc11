"""The catalog: versions, latest pointers, lineage edges, the access log, and requests.

``Catalog`` is the only code that queries the catalog's tables (catalog_schema.py defines every
one; opening a Catalog brings it to the head migration first, see letl/lake/migrate.py). Its
request and pin methods live in catalog_requests.py and catalog_pins.py, which it inherits.
"""

from datetime import datetime, timedelta
from typing import Iterable

import sqlalchemy as sa

from letl.lake.catalog_pins import PinLog
from letl.lake.catalog_requests import RequestLog
from letl.lake.catalog_schema import (
    FINAL_STATES,
    OPEN_STATES,
    Version,
    access_log,
    as_utc,
    latest,
    lineage,
    make_engine,
    moves,
    pins,
    query_log,
    request_attempts,
    upsert_dialect,
    utcnow,
    versions,
)
from letl.lake.errors import InProgress
from letl.lake.migrate import upgrade

# What the lake's modules and tests import from here, so that they name the catalog, not its parts.
__all__ = ["FINAL_STATES", "OPEN_STATES", "Catalog", "Version", "access_log", "as_utc", "latest", "lineage", "moves",
           "pins", "query_log", "request_attempts", "utcnow", "versions"]


class Catalog(RequestLog, PinLog):
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        upgrade(self.engine)

    def commit_versions(self, entries: list[tuple[Version, Iterable[str]]],
                        request: tuple[str, str, dict] | None = None) -> None:
        """Insert versions with their lineage edges and move their latest pointers, all in one
        transaction: the outputs of one materialization become visible together or not at all.

        ``request`` (request_id, owner token, values) completes the request that made them in the
        same transaction, so a version never exists without its request knowing it (no second
        version on a retry), and an owner that lost its lease commits nothing."""
        if not entries:
            return
        with self.engine.begin() as conn:
            for version, upstream_ids in entries:
                conn.execute(versions.insert().values(**version.as_row()))
                edges = [{"version_id": version.version_id, "upstream_version_id": u} for u in set(upstream_ids)]
                if edges:
                    conn.execute(lineage.insert(), edges)
            self._point_latest(conn, [(v.asset_key, v.branch, v.partition, v.version_id) for v, _ in entries])
            if request is not None and not self.update_request(request[0], request[1], conn=conn, **request[2]):
                raise InProgress(f"request {request[0]!r} was taken over by another owner; nothing committed")

    @staticmethod
    def _point_latest(conn: sa.Connection, versions_: Iterable[tuple[str, str, str, str]]) -> int:
        """Move the latest pointer of each (asset key, branch, partition) to its version id, never back:
        version ids sort by creation time, so a slow writer that commits last keeps the newer pointer."""
        newest: dict[tuple[str, str, str], str] = {}
        for a, b, p, v in versions_:  # one row per pointer: Postgres refuses to upsert a row twice in one statement
            newest[a, b, p] = max(v, newest.get((a, b, p), v))
        now = utcnow()
        pointers = [{"asset_key": a, "branch": b, "partition": p, "version_id": v, "updated_at": now}
                    for (a, b, p), v in newest.items()]
        if pointers:
            insert = upsert_dialect(conn).insert(latest)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["asset_key", "branch", "partition"],
                set_={"version_id": insert.excluded.version_id, "updated_at": insert.excluded.updated_at},
                where=latest.c.version_id < insert.excluded.version_id,
            ), pointers)
        return len(pointers)

    def version_count(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar_one()

    def merge_versions(self, entries: list[Version], edges: set[tuple[str, str]]) -> dict:
        """Upsert versions (every field but the id overwritten) and their lineage edges (version id,
        upstream id), then point every latest pointer at its newest version, in one transaction.
        Edges to versions the catalog does not hold are left out and reported as dangling."""
        with self.engine.begin() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar_one()
            known = set(conn.execute(sa.select(versions.c.version_id)).scalars()) | {v.version_id for v in entries}
            dangling = {(vid, up) for vid, up in edges if up not in known}
            kept = edges - dangling
            if entries:
                insert = upsert_dialect(conn).insert(versions)
                conn.execute(insert.on_conflict_do_update(
                    index_elements=["version_id"],
                    set_={c: insert.excluded[c] for c in versions.columns.keys() if c != "version_id"},
                ), [v.as_row() for v in entries])
            if kept:
                conn.execute(upsert_dialect(conn).insert(lineage).on_conflict_do_nothing(),
                             [{"version_id": v, "upstream_version_id": u} for v, u in sorted(kept)])
            inserted = conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar_one() - before
            v = versions.c
            newest = conn.execute(sa.select(v.asset_key, v.branch, v.partition, sa.func.max(v.version_id))
                                  .group_by(v.asset_key, v.branch, v.partition)).all()
            pointers = self._point_latest(conn, newest)
        return {"inserted": inserted, "edges": kept, "dangling": dangling, "latest_pointers": pointers}

    def get(self, version_id: str) -> Version | None:
        with self.engine.begin() as conn:
            row = conn.execute(versions.select().where(versions.c.version_id == version_id)).first()
        return Version.from_row(row) if row else None

    def latest_version(self, asset_key: str, partition: str, branch: str) -> Version | None:
        query = (
            versions.select()
            .join(latest, latest.c.version_id == versions.c.version_id)
            .where(latest.c.asset_key == asset_key, latest.c.branch == branch, latest.c.partition == partition)
        )
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
        return Version.from_row(row) if row else None

    def latest_versions(self, branch: str, asset_key: str | None = None) -> list[Version]:
        """The version each latest pointer names on a branch (of one asset, or all), by asset and partition."""
        query = (
            versions.select()
            .join(latest, latest.c.version_id == versions.c.version_id)
            .where(latest.c.branch == branch)
            .order_by(versions.c.asset_key, versions.c.partition)
        )
        if asset_key is not None:
            query = query.where(latest.c.asset_key == asset_key)
        with self.engine.begin() as conn:
            return [Version.from_row(r) for r in conn.execute(query)]

    def list_versions(
        self, asset_key: str | None = None, partition: str | None = None, branch: str | None = None
    ) -> list[Version]:
        query = versions.select().order_by(
            versions.c.asset_key, versions.c.partition, versions.c.created_at, versions.c.version_id
        )
        for column, value in (("asset_key", asset_key), ("partition", partition), ("branch", branch)):
            if value is not None:
                query = query.where(versions.c[column] == value)
        with self.engine.begin() as conn:
            return [Version.from_row(r) for r in conn.execute(query)]

    def version_index(self, version: Version) -> int:
        """Position among the versions of the same asset, branch and partition, oldest first.

        Version ids start with their UTC creation time, so they sort by age.
        """
        v = versions.c
        query = (
            sa.select(sa.func.count())
            .select_from(versions)
            .where(v.asset_key == version.asset_key, v.branch == version.branch, v.partition == version.partition)
            .where(v.version_id < version.version_id)
        )
        with self.engine.begin() as conn:
            return conn.execute(query).scalar_one()

    def latest_counts(self) -> dict[str, int]:
        """How many latest pointers (asset and partition) each branch has."""
        query = sa.select(latest.c.branch, sa.func.count()).group_by(latest.c.branch)
        with self.engine.begin() as conn:
            return dict(conn.execute(query).all())

    def latest_ids(self) -> set[str]:
        with self.engine.begin() as conn:
            return set(conn.execute(sa.select(latest.c.version_id)).scalars())

    def record_access(self, version_id: str, kind: str, **who: str | None) -> int:
        with self.engine.begin() as conn:
            row = conn.execute(access_log.insert().values(version_id=version_id, kind=kind, accessed_at=utcnow(), **who))
            return row.inserted_primary_key[0]

    def record_accesses(self, version_ids: Iterable[str], kind: str, **who: str | None) -> None:
        """One access row per version, all in one transaction: a read of many partitions is one
        catalog write, not one per partition (gros:// directory reads)."""
        at = utcnow()
        entries = [{"version_id": v, "kind": kind, "accessed_at": at, **who} for v in sorted(set(version_ids))]
        if entries:
            with self.engine.begin() as conn:
                conn.execute(access_log.insert(), entries)

    def record_query(self, version_ids: Iterable[str], sql_hash: str, rows: int | None,
                     kind: str = "query", **who: str | None) -> None:
        """One access row per version an explorer query read, all stamped with the query's hash."""
        at = utcnow()
        entries = [
            {"version_id": v, "kind": kind, "accessed_at": at, "sql_hash": sql_hash, "rows": rows, **who}
            for v in sorted(set(version_ids))
        ]
        if entries:
            with self.engine.begin() as conn:
                conn.execute(access_log.insert(), entries)

    def record_query_event(self, kind: str, sql_hash: str | None, rows: int | None = None,
                           detail: str | None = None, **who: str | None) -> None:
        """Audit a query that read no catalogued version (refused, failed early, or table-free)."""
        with self.engine.begin() as conn:
            conn.execute(query_log.insert().values(at=utcnow(), kind=kind, sql_hash=sql_hash, rows=rows,
                                                   detail=detail, **who))

    def stamp_run(self, access_ids: Iterable[int], run_id: str) -> None:
        """Name the run behind accesses recorded before the run id was known."""
        ids = list(access_ids)
        if ids:
            with self.engine.begin() as conn:
                conn.execute(access_log.update().where(access_log.c.id.in_(ids)).values(run_id=run_id))

    def access_stats(self, now: datetime, window: float) -> tuple[dict[str, datetime], dict[str, int]]:
        """Last access per version (up to now), and accesses per version within (now - window, now]."""
        a = access_log.c
        last_q = sa.select(a.version_id, sa.func.max(a.accessed_at)).where(a.accessed_at <= now).group_by(a.version_id)
        reads_q = (sa.select(a.version_id, sa.func.count())
                   .where(a.accessed_at > now - timedelta(seconds=window), a.accessed_at <= now)
                   .group_by(a.version_id))
        with self.engine.begin() as conn:
            last = {vid: as_utc(when) for vid, when in conn.execute(last_q) if when is not None}
            reads = dict(conn.execute(reads_q).all())
        return last, reads

    def upstreams(self, version_id: str) -> list[Version]:
        return self._edges(lineage.c.upstream_version_id, lineage.c.version_id, version_id)

    def downstreams(self, version_id: str) -> list[Version]:
        return self._edges(lineage.c.version_id, lineage.c.upstream_version_id, version_id)

    def _edges(self, other: sa.Column, this: sa.Column, version_id: str) -> list[Version]:
        query = versions.select().join(lineage, other == versions.c.version_id).where(this == version_id)
        with self.engine.begin() as conn:
            return [Version.from_row(r) for r in conn.execute(query)]

