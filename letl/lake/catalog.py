"""The catalog: versions, latest pointers, lineage edges, the access log, and requests.

SQLAlchemy Core, so that the embedded SQLite file and a shared Postgres run the
same statements. SQLite runs in WAL mode with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE so that two processes queue instead of
failing on a lock upgrade.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import sqlalchemy as sa

from letl.lake.errors import InProgress

metadata = sa.MetaData()

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("version_id", sa.String(64), primary_key=True),
    sa.Column("asset_key", sa.String(255), nullable=False),
    sa.Column("branch", sa.String(128), nullable=False),
    sa.Column("partition", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("storage_key", sa.String(1024), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("schema_fingerprint", sa.String(64)),
    sa.Column("metadata_json", sa.Text, nullable=False, default="{}"),
    sa.Index("ix_versions_asset", "asset_key", "branch", "partition", "created_at"),
)

latest = sa.Table(
    "latest",
    metadata,
    sa.Column("asset_key", sa.String(255), primary_key=True),
    sa.Column("branch", sa.String(128), primary_key=True),
    sa.Column("partition", sa.String(128), primary_key=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

lineage = sa.Table(
    "lineage",
    metadata,
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), primary_key=True),
    sa.Column("upstream_version_id", sa.String(64), sa.ForeignKey("versions.version_id"), primary_key=True),
    sa.Index("ix_lineage_upstream", "upstream_version_id"),
)

access_log = sa.Table(
    "access_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), nullable=False),
    sa.Column("accessed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("step_key", sa.String(255)),
    sa.Column("user", sa.String(128)),
    sa.Column("host", sa.String(255)),
    # Explorer queries: which query read the version and how many rows it returned.
    sa.Column("sql_hash", sa.String(64)),
    sa.Column("rows", sa.BigInteger),
    sa.Index("ix_access_run_step", "run_id", "step_key"),
    sa.Index("ix_access_version", "version_id", "accessed_at"),
)

# Writes and moves by request id, reserved before any work so that a repeat never does it twice.
# One row per request (its latest state and live owner); every attempt also gets a request_attempts row.
moves = sa.Table(
    "moves",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    # A write's version exists only once the write commits: null until then.
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id")),
    sa.Column("src_tier", sa.String(64), nullable=False),  # 'external' for a write
    sa.Column("dst_tier", sa.String(64), nullable=False),
    # started -> copied -> switched -> done; refused: rolled_back; owner failed or died, settled: interrupted
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("seconds", sa.Float),
    sa.Column("detail", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(8)),  # 'move' or 'write'
    sa.Column("ask", sa.Text),  # what was asked, as JSON: reusing the id for other work is a conflict
    sa.Column("attempt", sa.Integer),
    # The lease: only the holder of owner_token may change the row; heartbeat_at says it lives.
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_token", sa.String(32)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)

request_attempts = sa.Table(
    "request_attempts",
    metadata,
    # No foreign key to moves: rebuilding an old moves table must not drag this one along.
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("outcome", sa.String(16), nullable=False),  # running, then the state the attempt ended in
    sa.Column("detail", sa.Text),
)

OPEN_STATES = ("started", "copied", "switched")
FINAL_STATES = ("done", "rolled_back")

# Explorer and `letl sql` queries that read no version, or were refused or failed before reading:
# still audited. Only the SQL's hash is kept, never its text, which may hold a typed patient value.
query_log = sa.Table(
    "query_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("user", sa.String(128)),
    sa.Column("host", sa.String(255)),
    sa.Column("sql_hash", sa.String(64)),
    sa.Column("rows", sa.BigInteger),
    sa.Column("detail", sa.Text),
    sa.Index("ix_query_log_at", "at"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Version:
    version_id: str
    asset_key: str
    branch: str
    partition: str
    created_at: datetime
    run_id: str | None
    tier: str
    storage_key: str
    format: str
    bytes: int
    rows: int | None
    sha256: str
    schema_fingerprint: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sa.Row) -> "Version":
        data = dict(row._mapping)
        data["metadata"] = json.loads(data.pop("metadata_json") or "{}")
        if data["created_at"].tzinfo is None:
            data["created_at"] = data["created_at"].replace(tzinfo=timezone.utc)
        return cls(**data)

    def as_row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in versions.columns.keys() if k != "metadata_json"}
        row["metadata_json"] = json.dumps(self.metadata, sort_keys=True, default=str)
        return row


def make_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Catalog:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        # In one write transaction (BEGIN IMMEDIATE on SQLite): two processes opening a fresh
        # catalog at once must not both see "no table" and both create it.
        with self.engine.begin() as conn:
            metadata.create_all(conn)
        self._add_missing_columns()
        self._let_writes_reserve()

    def _add_missing_columns(self) -> None:
        """Catalogs created by an older release lack newer nullable columns; add them in place."""

        def missing() -> list[sa.Column]:
            inspector = sa.inspect(self.engine)
            out = []
            for table in (access_log, moves):
                present = {c["name"] for c in inspector.get_columns(table.name)}
                out += [c for c in table.columns if c.name not in present]
            return out

        for column in missing():
            try:
                with self.engine.begin() as conn:
                    quote = conn.dialect.identifier_preparer.quote
                    kind = column.type.compile(dialect=conn.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {quote(column.table.name)} ADD COLUMN {quote(column.name)} {kind}")
            except sa.exc.DBAPIError:
                # Another process opening the same old catalog may have added it since we looked.
                if any(c is column for c in missing()):
                    raise

    def _let_writes_reserve(self) -> None:
        """Older releases made moves.version_id NOT NULL, so a write could not be reserved before its
        version existed. SQLite cannot drop a constraint: rebuild the table, rows kept, in one transaction."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.begin() as conn:
            info = {c["name"]: c for c in sa.inspect(conn).get_columns(moves.name)}
            if info["version_id"]["nullable"]:
                return
            names = ", ".join(f'"{c.name}"' for c in moves.columns)
            conn.exec_driver_sql('ALTER TABLE moves RENAME TO moves_before_leases')
            moves.create(conn)
            conn.exec_driver_sql(f"INSERT INTO moves ({names}) SELECT {names} FROM moves_before_leases")
            conn.exec_driver_sql("DROP TABLE moves_before_leases")

    def commit_version(self, version: Version, upstream_ids: Iterable[str] = ()) -> None:
        """Insert a version, its lineage edges and move the latest pointer, atomically."""
        self.commit_versions([(version, upstream_ids)])

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
                self._set_latest(conn, version)
            if request is not None and not self.update_request(request[0], request[1], conn=conn, **request[2]):
                raise InProgress(f"request {request[0]!r} was taken over by another owner; nothing committed")

    def _set_latest(self, conn: sa.Connection, version: Version) -> None:
        values = {
            "asset_key": version.asset_key,
            "branch": version.branch,
            "partition": version.partition,
            "version_id": version.version_id,
            "updated_at": utcnow(),
        }
        insert = _upsert_dialect(conn).insert(latest).values(**values)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["asset_key", "branch", "partition"],
                set_={"version_id": insert.excluded.version_id, "updated_at": insert.excluded.updated_at},
                # Version ids sort by creation time: a slow writer that commits last never
                # moves the pointer back to its older version.
                where=latest.c.version_id < insert.excluded.version_id,
            )
        )

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

    def latest_versions(self, branch: str) -> list[Version]:
        """The version each latest pointer names on a branch, by asset and partition."""
        query = (
            versions.select()
            .join(latest, latest.c.version_id == versions.c.version_id)
            .where(latest.c.branch == branch)
            .order_by(versions.c.asset_key, versions.c.partition)
        )
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

    def loaded_in_step(self, run_id: str, step_key: str) -> list[str]:
        """Versions a step read as inputs: the exact upstreams of what it writes."""
        query = sa.select(access_log.c.version_id).where(
            access_log.c.run_id == run_id, access_log.c.step_key == step_key, access_log.c.kind == "load"
        )
        with self.engine.begin() as conn:
            return sorted(set(conn.execute(query).scalars()))

    def upstreams(self, version_id: str) -> list[Version]:
        return self._edges(lineage.c.upstream_version_id, lineage.c.version_id, version_id)

    def downstreams(self, version_id: str) -> list[Version]:
        return self._edges(lineage.c.version_id, lineage.c.upstream_version_id, version_id)

    def _edges(self, other: sa.Column, this: sa.Column, version_id: str) -> list[Version]:
        query = versions.select().join(lineage, other == versions.c.version_id).where(this == version_id)
        with self.engine.begin() as conn:
            return [Version.from_row(r) for r in conn.execute(query)]

    def access_count(self, version_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(access_log).where(access_log.c.version_id == version_id)
        with self.engine.begin() as conn:
            return conn.execute(query).scalar_one()

    # -- requests (writes and moves by request id) ----------------------------------------

    def request(self, request_id: str) -> dict | None:
        with self.engine.begin() as conn:
            row = conn.execute(moves.select().where(moves.c.request_id == request_id)).first()
        return dict(row._mapping) if row else None

    def reserve_request(self, row: dict) -> bool:
        """Insert a request and its first attempt unless the id is taken; True if this call got it."""
        now = utcnow()
        values = {**row, "attempt": 1, "created_at": now, "updated_at": now, "heartbeat_at": now}
        with self.engine.begin() as conn:
            insert = _upsert_dialect(conn).insert(moves).values(**values)
            if conn.execute(insert.on_conflict_do_nothing(index_elements=["request_id"])).rowcount != 1:
                return False
            conn.execute(request_attempts.insert().values(
                request_id=row["request_id"], attempt=1, owner_host=row.get("owner_host"),
                owner_pid=row.get("owner_pid"), started_at=now, outcome="running"))
        return True

    def take_over_request(self, request_id: str, dead_token: str | None, owner: dict) -> bool:
        """Become the owner of a request whose owner is gone. A compare-and-set on the old token:
        of two processes settling the same dead owner, exactly one wins."""
        token = moves.c.owner_token
        now = utcnow()
        with self.engine.begin() as conn:
            return conn.execute(moves.update().where(
                moves.c.request_id == request_id, token.is_(None) if dead_token is None else token == dead_token,
            ).values(**owner, heartbeat_at=now, updated_at=now)).rowcount == 1

    def begin_attempt(self, request_id: str, token: str) -> int:
        """Start the owner's own attempt at the work (after settling whatever the last one left)."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(moves.c.attempt, moves.c.owner_host, moves.c.owner_pid).where(
                moves.c.request_id == request_id, moves.c.owner_token == token)).first()
            if row is None:
                raise InProgress(f"request {request_id!r} was taken over by another owner")
            attempt = (row.attempt or 1) + 1  # rows from before attempts were counted had one
            conn.execute(moves.update().where(moves.c.request_id == request_id)
                         .values(attempt=attempt, state="started", detail=None, updated_at=now))
            conn.execute(request_attempts.insert().values(
                request_id=request_id, attempt=attempt, owner_host=row.owner_host, owner_pid=row.owner_pid,
                started_at=now, outcome="running"))
        return attempt

    def update_request(self, request_id: str, token: str, conn: sa.Connection | None = None, **values) -> bool:
        """Change a request as its owner (False if it is not); a state past the open ones also ends the
        current attempt with that outcome."""
        if conn is None:
            with self.engine.begin() as own:
                return self.update_request(request_id, token, conn=own, **values)
        now = utcnow()
        where = (moves.c.request_id == request_id, moves.c.owner_token == token)
        if conn.execute(moves.update().where(*where).values(**values, updated_at=now)).rowcount != 1:
            return False
        if values.get("state") not in (None, *OPEN_STATES):
            attempt = conn.execute(sa.select(moves.c.attempt).where(*where)).scalar_one()
            conn.execute(request_attempts.update().where(
                request_attempts.c.request_id == request_id, request_attempts.c.attempt == attempt,
                request_attempts.c.ended_at.is_(None),
            ).values(ended_at=now, outcome=values["state"], detail=values.get("detail")))
        return True

    def heartbeat(self, request_id: str, token: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(moves.update().where(moves.c.request_id == request_id, moves.c.owner_token == token)
                                .values(heartbeat_at=utcnow())).rowcount == 1

    def switch_tier(self, version_id: str, from_tier: str, to_tier: str, request: tuple[str, str, dict]) -> bool:
        """Point a version at another tier and advance the move that did it, in one transaction.
        False (nothing changed) if the version is no longer on from_tier."""
        with self.engine.begin() as conn:
            switched = conn.execute(versions.update().where(
                versions.c.version_id == version_id, versions.c.tier == from_tier).values(tier=to_tier)).rowcount
            if switched != 1:
                return False
            if not self.update_request(request[0], request[1], conn=conn, **request[2]):
                raise InProgress(f"request {request[0]!r} was taken over by another owner; nothing switched")
        return True

    def requests_in(self, states: Iterable[str]) -> list[dict]:
        query = moves.select().where(moves.c.state.in_(tuple(states))).order_by(moves.c.created_at)
        with self.engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def request_attempts(self, request_id: str) -> list[dict]:
        """Every attempt at a request, first first: who ran it, when, and how it ended."""
        a = request_attempts.c
        with self.engine.begin() as conn:
            rows = conn.execute(request_attempts.select().where(a.request_id == request_id).order_by(a.attempt))
            return [dict(r._mapping) for r in rows]

    def move_history(self, version_ids: Iterable[str]) -> dict[str, int]:
        """How many requests moved (or tried to move) each of these versions."""
        ids = sorted(set(version_ids))
        if not ids:
            return {}
        query = (sa.select(moves.c.version_id, sa.func.count()).where(moves.c.version_id.in_(ids))
                 .group_by(moves.c.version_id))
        with self.engine.begin() as conn:
            return dict(conn.execute(query).all())


def _upsert_dialect(conn: sa.Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql
    from sqlalchemy.dialects import sqlite

    return sqlite
