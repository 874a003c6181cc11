"""The catalog's schema: every table it owns, and the engine it runs on.

SQLAlchemy Core, so that the embedded SQLite file and a shared Postgres run the
same statements. SQLite runs in WAL mode with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE so that two processes queue instead of
failing on a lock upgrade. Only the Catalog (catalog.py and its parts catalog_requests.py,
catalog_pins.py) queries these tables. These are the models as the head migration leaves
them (letl/lake/migrations/): a change here needs a new revision there, and
tests/lake/test_migrations.py fails until the two agree.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

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

# A version, or an asset's latest versions (version_id null), held on a tier: the placement policy
# moves them only to it. ``target`` names what is pinned (see catalog_pins.pin_target), one pin each.
pins = sa.Table(
    "pins",
    metadata,
    sa.Column("target", sa.String(640), primary_key=True),
    sa.Column("asset_key", sa.String(255), nullable=False),
    sa.Column("branch", sa.String(128), nullable=False),
    sa.Column("partition", sa.String(128)),  # null: every partition of the asset
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id")),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("pinned_by", sa.String(128)),
    sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Index("ix_pins_asset", "asset_key", "branch"),
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


def as_utc(when: datetime | str) -> datetime:
    """SQLite hands aggregates back as text and datetimes back naive: both are UTC."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


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


def upsert_dialect(conn: sa.Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql
    from sqlalchemy.dialects import sqlite

    return sqlite
