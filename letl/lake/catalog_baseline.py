"""The catalog's tables as revision 0001 made them, frozen: later revisions change them, this never does.

Kept apart from catalog_schema.py (the models as they are now) so that the baseline revision and the
catch-up of catalogs made before migrations existed create the same tables whatever the models become.
"""

import sqlalchemy as sa

BASELINE = sa.MetaData()

sa.Table(
    "versions", BASELINE,
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
    sa.Column("metadata_json", sa.Text, nullable=False),
    sa.Index("ix_versions_asset", "asset_key", "branch", "partition", "created_at"),
)
sa.Table(
    "latest", BASELINE,
    sa.Column("asset_key", sa.String(255), primary_key=True),
    sa.Column("branch", sa.String(128), primary_key=True),
    sa.Column("partition", sa.String(128), primary_key=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "lineage", BASELINE,
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), primary_key=True),
    sa.Column("upstream_version_id", sa.String(64), sa.ForeignKey("versions.version_id"), primary_key=True),
    sa.Index("ix_lineage_upstream", "upstream_version_id"),
)
sa.Table(
    "access_log", BASELINE,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id"), nullable=False),
    sa.Column("accessed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("step_key", sa.String(255)),
    sa.Column("user", sa.String(128)),
    sa.Column("host", sa.String(255)),
    sa.Column("sql_hash", sa.String(64)),
    sa.Column("rows", sa.BigInteger),
    sa.Index("ix_access_run_step", "run_id", "step_key"),
    sa.Index("ix_access_version", "version_id", "accessed_at"),
)
sa.Table(
    "moves", BASELINE,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id")),
    sa.Column("src_tier", sa.String(64), nullable=False),
    sa.Column("dst_tier", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("seconds", sa.Float),
    sa.Column("detail", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(8)),
    sa.Column("ask", sa.Text),
    sa.Column("attempt", sa.Integer),
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_token", sa.String(32)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)
sa.Table(
    "request_attempts", BASELINE,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
)
sa.Table(
    "query_log", BASELINE,
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


def catch_up(op, conn: sa.Connection) -> list[str]:
    """Bring a catalog made before migrations existed to the baseline, judged by what it holds:
    missing tables created, the nullable columns later releases added to access_log and moves added,
    and moves.version_id made nullable (releases before leases made it NOT NULL, so that a write could
    not be reserved before its version existed). Returns what it did, for the upgrade's report.

    A catalog made by the last release before migrations has all of it and gets nothing here."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    done = []
    for table in BASELINE.sorted_tables:
        if table.name not in present:
            table.create(conn)
            done.append(f"created {table.name}")
            continue
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        added = [c for c in table.columns if c.name not in columns]
        loosen = table.name == "moves" and not columns["version_id"]["nullable"]
        if not added and not loosen:
            continue
        # Batch mode: SQLite cannot drop a NOT NULL in place, so Alembic copies the table, rows kept.
        with op.batch_alter_table(table.name, recreate="auto") as batch:
            for column in added:
                batch.add_column(column._copy())
                done.append(f"added {table.name}.{column.name}")
            if loosen:
                batch.alter_column("version_id", existing_type=sa.String(64), nullable=True)
                done.append("made moves.version_id nullable")
    return done
