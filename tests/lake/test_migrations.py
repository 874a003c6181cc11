"""Catalog migrations: SQLite and a real Postgres reach the same head, old catalogs upgrade with their
data, two processes opening one catalog at once both succeed, and the models match the head revision."""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from letl.lake import migrate as migrations
from letl.lake.catalog import Catalog
from letl.lake.catalog_schema import make_engine, metadata
from tests.lake.test_catalog import make_version

FIXTURE = Path(__file__).parents[1] / "fixtures" / "letl_home_a9e200b" / "home" / "catalog.sqlite"
TABLES = {"versions", "latest", "lineage", "access_log", "query_log", "moves", "request_attempts", "pins",
          "alembic_version"}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("postgres_url")


def shape(url: str) -> dict[str, dict]:
    """Per table: its columns with their nullability, its primary key and its index names."""
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    out = {t: {"columns": {c["name"]: c["nullable"] for c in inspector.get_columns(t)},
               "primary_key": inspector.get_pk_constraint(t)["constrained_columns"],
               "indexes": sorted(i["name"] for i in inspector.get_indexes(t))}
           for t in inspector.get_table_names()}
    engine.dispose()
    return out


def revision(url: str) -> str | None:
    engine = make_engine(url)
    with engine.connect() as conn:
        found = migrations.current(conn)
    engine.dispose()
    return found


def test_the_head_constant_names_the_newest_script():
    assert migrations.HEAD == migrations.script_head()


def test_fresh_sqlite_and_postgres_reach_head_with_the_same_tables_and_columns(tmp_path, postgres_url):
    lite = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    for url in (lite, postgres_url):
        Catalog(url).engine.dispose()
        assert revision(url) == migrations.HEAD
    assert set(shape(lite)) == TABLES
    assert shape(lite) == shape(postgres_url)


def test_the_models_match_the_head_revision(url):
    """What `alembic check` asks: autogenerate finds nothing to add, drop or change."""
    catalog = Catalog(url)
    with catalog.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    catalog.engine.dispose()


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    with engine.connect() as conn:
        found = {t: conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar() for t in sorted(names)}
    engine.dispose()
    return found


def test_the_a9e200b_catalog_is_stamped_at_the_baseline_and_upgraded_with_its_data(tmp_path):
    path = tmp_path / "catalog.sqlite"
    shutil.copy(FIXTURE, path)
    url = f"sqlite:///{path}"
    before = counts(url)
    rows = sqlite3.connect(path).execute("SELECT * FROM versions ORDER BY version_id").fetchall()
    assert revision(url) is None and before["versions"] == 14

    result = migrations.upgrade(make_engine(url))
    assert (result.before, result.after, result.legacy, result.caught_up) == (None, migrations.HEAD, True, [])
    assert counts(url) == {**before, "pins": 0}
    assert sqlite3.connect(path).execute("SELECT * FROM versions ORDER BY version_id").fetchall() == rows
    assert revision(url) == migrations.HEAD
    assert migrations.upgrade(make_engine(url)) == migrations.Upgrade(migrations.HEAD, migrations.HEAD)


# A catalog from before leases and explorer queries: access_log without sql_hash and rows, moves with
# version_id NOT NULL and no lease columns, no query_log or request_attempts, no alembic_version.
PRE_LEASES = [
    "CREATE TABLE versions (version_id VARCHAR(64) NOT NULL PRIMARY KEY, asset_key VARCHAR(255) NOT NULL, "
    "branch VARCHAR(128) NOT NULL, partition VARCHAR(128) NOT NULL, created_at TIMESTAMP NOT NULL, "
    "run_id VARCHAR(64), tier VARCHAR(64) NOT NULL, storage_key VARCHAR(1024) NOT NULL, format VARCHAR(32) NOT NULL, "
    "bytes BIGINT NOT NULL, rows BIGINT, sha256 VARCHAR(64) NOT NULL, schema_fingerprint VARCHAR(64), "
    "metadata_json TEXT NOT NULL)",
    "CREATE INDEX ix_versions_asset ON versions (asset_key, branch, partition, created_at)",
    "CREATE TABLE latest (asset_key VARCHAR(255) NOT NULL, branch VARCHAR(128) NOT NULL, "
    "partition VARCHAR(128) NOT NULL, "
    "version_id VARCHAR(64) NOT NULL REFERENCES versions (version_id), updated_at TIMESTAMP NOT NULL, "
    "PRIMARY KEY (asset_key, branch, partition))",
    "CREATE TABLE lineage (version_id VARCHAR(64) NOT NULL REFERENCES versions (version_id), "
    "upstream_version_id VARCHAR(64) NOT NULL REFERENCES versions (version_id), PRIMARY KEY (version_id, upstream_version_id))",
    "CREATE INDEX ix_lineage_upstream ON lineage (upstream_version_id)",
    "CREATE TABLE access_log (id {serial} NOT NULL PRIMARY KEY, "
    "version_id VARCHAR(64) NOT NULL REFERENCES versions (version_id), "
    "accessed_at TIMESTAMP NOT NULL, kind VARCHAR(32) NOT NULL, run_id VARCHAR(64), step_key VARCHAR(255), "
    '"user" VARCHAR(128), host VARCHAR(255))',
    "CREATE INDEX ix_access_run_step ON access_log (run_id, step_key)",
    "CREATE INDEX ix_access_version ON access_log (version_id, accessed_at)",
    "CREATE TABLE moves (request_id VARCHAR(128) NOT NULL PRIMARY KEY, version_id VARCHAR(64) NOT NULL "
    "REFERENCES versions (version_id), src_tier VARCHAR(64) NOT NULL, dst_tier VARCHAR(64) NOT NULL, "
    "state VARCHAR(16) NOT NULL, bytes BIGINT, seconds FLOAT, detail TEXT, created_at TIMESTAMP NOT NULL, "
    "updated_at TIMESTAMP NOT NULL)",
    "INSERT INTO versions VALUES ('v1', 'labs/old', 'main', '', '2024-01-01 00:00:00', NULL, 'ssd', 'k', "
    "'parquet', 5, 1, 'ab', NULL, '{}')",
    "INSERT INTO latest VALUES ('labs/old', 'main', '', 'v1', '2024-01-01 00:00:00')",
    "INSERT INTO access_log (version_id, accessed_at, kind) VALUES ('v1', '2024-01-02 00:00:00', 'load')",
    "INSERT INTO moves VALUES ('before', 'v1', 'hdd', 'ssd', 'done', 5, 0.1, NULL, '2024-01-01 00:00:00', "
    "'2024-01-01 00:00:00')",
]
CAUGHT_UP = ["added access_log.sql_hash", "added access_log.rows", "added moves.kind", "added moves.ask",
             "added moves.attempt", "added moves.owner_host", "added moves.owner_pid", "added moves.owner_token",
             "added moves.heartbeat_at", "made moves.version_id nullable", "created request_attempts",
             "created query_log"]


def pre_leases(url: str) -> None:
    engine = sa.create_engine(url)
    serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    with engine.begin() as conn:
        for statement in PRE_LEASES:
            conn.exec_driver_sql(statement.replace("{serial}", serial))
    engine.dispose()


def test_a_catalog_from_before_leases_catches_up_then_reaches_head_with_its_rows(url, tmp_path):
    pre_leases(url)
    result = migrations.upgrade(make_engine(url))
    assert result.legacy and sorted(result.caught_up) == sorted(CAUGHT_UP)
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    Catalog(fresh).engine.dispose()
    assert shape(url) == shape(fresh)
    catalog = Catalog(url)
    assert [v.version_id for v in catalog.latest_versions("main")] == ["v1"]
    assert catalog.request("before")["state"] == "done" and catalog.request("before")["kind"] is None
    catalog.record_query(["v1"], "abc", 7, user="ana", host="h")
    assert catalog.access_stats(catalog.get("v1").created_at.replace(year=2030), 1e9)[1] == {"v1": 2}
    catalog.engine.dispose()


OPEN = """
import sys, time
from pathlib import Path
from letl.lake.catalog import Catalog
url, go = sys.argv[1], Path(sys.argv[2])
print("READY", flush=True)
while not go.exists():
    time.sleep(0.001)
Catalog(url).engine.dispose()
"""


def open_at_once(url: str, tmp_path: Path, processes: int = 2) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    assert [p.stdout.readline().strip() for p in procs] == ["READY"] * processes
    go.touch()
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, [err for _, err in outcomes]


def test_processes_opening_a_fresh_catalog_at_once_all_succeed(url, tmp_path):
    open_at_once(url, tmp_path)
    assert revision(url) == migrations.HEAD
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()
    assert set(shape(url)) == TABLES


def test_processes_opening_an_old_catalog_at_once_upgrade_it_once(url, tmp_path):
    pre_leases(url)
    open_at_once(url, tmp_path)
    assert revision(url) == migrations.HEAD
    assert counts(url) == {"access_log": 1, "latest": 1, "lineage": 0, "moves": 1, "pins": 0, "query_log": 0,
                           "request_attempts": 0, "versions": 1}


def test_letl_catalog_upgrade_reports_the_revisions(tmp_path, letl_env):
    shutil.copy(FIXTURE, letl_env["home"] / "catalog.sqlite")
    letl = [sys.executable, "-m", "letl.cli.main", "catalog", "upgrade"]
    first = subprocess.run(letl, capture_output=True, text=True, check=True).stdout
    assert first.splitlines()[-1] == f"catalog upgraded: none (made before migrations) -> {migrations.HEAD}"
    again = subprocess.run(letl, capture_output=True, text=True, check=True).stdout
    assert again.splitlines()[-1] == f"catalog already at head: {migrations.HEAD}"


def test_the_migrated_catalog_commits_and_pins_alike_on_both(url):
    catalog = Catalog(url)
    version = make_version("labs/x", partition="p")
    catalog.commit_versions([(version, ())])
    catalog.pin("labs/x", "main", "hdd", pinned_by="ana")
    catalog.pin("labs/x", "main", "pmem", reason="hot now")  # the same target again: replaced, not added
    assert [(p["target"], p["tier"], p["pinned_by"], p["reason"]) for p in catalog.list_pins()] == [
        ("latest:labs/x@main", "pmem", None, "hot now")]
    assert catalog.pinned_tiers([version], catalog.latest_ids()) == {version.version_id: ("pmem", "latest:labs/x@main")}
    assert catalog.unpin("latest:labs/x@main")["tier"] == "pmem" and catalog.list_pins() == []
    catalog.engine.dispose()


def test_a_catalog_from_a_newer_letl_is_refused_in_one_line_naming_it(tmp_path, letl_env):
    """Alembic knows no script for 0003: without the check, a CommandError and a traceback, exit 70."""
    from letl.lake.errors import Conflict, exit_code

    path = letl_env["home"] / "catalog.sqlite"
    shutil.copy(FIXTURE, path)
    migrations.upgrade(make_engine(f"sqlite:///{path}"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0003'")
    says = f"at revision 0003, newer than this LETL's {migrations.HEAD}: upgrade LETL"
    for command in (["catalog", "upgrade"], ["lake", "ls"]):
        done = subprocess.run([sys.executable, "-m", "letl.cli.main", *command], capture_output=True, text=True)
        assert done.returncode == exit_code(Conflict("")), done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert f"catalog sqlite:///{path} is {says}" in done.stderr
    assert revision(f"sqlite:///{path}") == "0003"


def test_opening_a_newer_catalog_is_refused_on_both_and_left_as_it_was(url):
    from letl.lake.errors import Conflict

    Catalog(url).engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))
    engine.dispose()
    with pytest.raises(Conflict, match=f"is at revision 0003, newer than this LETL's {migrations.HEAD}: upgrade LETL$"):
        Catalog(url)
    assert revision(url) == "0003"
