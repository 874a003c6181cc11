"""Catalog migrations through Alembic: every catalog, SQLite or Postgres, reaches the same head the same way.

Opening a Catalog calls ``upgrade``; ``letl catalog upgrade`` calls it explicitly and reports the
revisions. The revisions live in migrations/versions/ (0001 is the schema of the last release before
migrations); migrations/env.py runs them on the connection handed over here, so no alembic.ini is
needed. migrations/ is package data, not a package: its env.py only runs inside Alembic.

Two processes opening one fresh or old catalog must not both migrate it. The whole upgrade runs in
one transaction under a lock: SQLite's write lock (the engine begins every transaction with BEGIN
IMMEDIATE), or a Postgres transaction-level advisory lock. The one that waited then finds head.

A catalog made before migrations has tables but no alembic_version: ``catalog_baseline.catch_up`` brings what
it lacks up to the baseline, judged by its tables and columns, then it is stamped 0001 and upgraded.
"""

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

BASELINE_REVISION = "0001"
# The newest revision in migrations/versions/, so that opening a catalog at head does not import Alembic (about
# 0.3 s, on every reader's first open); tests/lake/test_migrations.py checks it against the scripts.
HEAD = "0002"
# Any fixed 64-bit key, the same in every process: "LETLCATA".
POSTGRES_LOCK = 0x4C45544C43415441


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # None: no alembic_version (an empty catalog, or one made before migrations)
    after: str
    caught_up: list[str] = field(default_factory=list)  # what a pre-migrations catalog was given
    legacy: bool = False  # it had tables but no alembic_version


def config(conn: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def script_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def refuse_unknown(conn: sa.Connection, before: str | None) -> None:
    """A revision this LETL has no script for was made by a newer LETL: Alembic would fail with a
    traceback, and migrating down is not ours to do."""
    from alembic.script import ScriptDirectory

    from letl.lake.errors import Conflict

    known = {s.revision for s in ScriptDirectory.from_config(config()).walk_revisions()}
    if before is not None and before not in known:
        where = conn.engine.url.render_as_string(hide_password=True)
        raise Conflict(f"catalog {where} is at revision {before}, newer than this LETL's {HEAD}: upgrade LETL")


def current(conn: sa.Connection) -> str | None:
    """The catalog's revision, read without Alembic; None if it has none (empty, or pre-migrations)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine) -> Upgrade:
    """Bring the catalog to head (a no-op at head), in one transaction under the migration lock."""
    target = HEAD
    with engine.begin() as conn:
        before = current(conn)
        if before == target:
            return Upgrade(before, target)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK})
            before = current(conn)  # another process may have migrated it while this one waited
            if before == target:
                return Upgrade(before, target)
        from alembic import command
        from alembic.operations import Operations
        from alembic.runtime.migration import MigrationContext

        from letl.lake.catalog_baseline import BASELINE, catch_up

        refuse_unknown(conn, before)
        cfg = config(conn)
        caught_up: list[str] = []
        legacy = before is None and bool(set(sa.inspect(conn).get_table_names()) & set(BASELINE.tables))
        if legacy:
            caught_up = catch_up(Operations(MigrationContext.configure(conn)), conn)
            command.stamp(cfg, BASELINE_REVISION)
        command.upgrade(cfg, "head")
    return Upgrade(before, target, caught_up, legacy)
