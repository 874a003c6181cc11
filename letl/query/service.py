"""The explorer's query service: one locked DuckDB database over a lake snapshot, for one role.

Streamlit pages call this; so do the bench and the tests, without Streamlit. Each builder query
runs on its own cursor (Streamlit serves sessions from several threads, and the time limit
interrupts a single connection); hand-written SQL runs in a worker process that can be killed.
Every query, cached or not, lands in the catalog's access log (the versions it read) or its query
log (refused, failed, or reading no version), by SQL hash only.
"""

import hashlib
import json
import socket
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from letl.lake.config import parse_size, setting
from letl.lake.lake import Lake, current_user
from letl.lake.uri import PARTITION_COLUMN
from letl.query import query_builder as qb
from letl.query.datasets import ROLES, Dataset, load_datasets, visible
from letl.query.engine import QueryError, describe, export_result, is_truncated, locked_connection, run_query
from letl.query.objectfs import LakeObjectFileSystem
from letl.query.scan import Estimate, partitions_kept, whole
from letl.query.sql_guard import Parsed, UnsafeSQL, analyze
from letl.query.views import Snapshot, View, snapshot
from letl.query.worker import QueryWorker


@dataclass(frozen=True)
class Settings:
    row_cap: int = 10_000  # rows shown on a page
    download_cap: int = 1_000_000  # rows in a CSV download
    timeout_s: float = 30.0
    confirm_bytes: int = 512 * 1024**2  # scans above this without a partition filter ask first
    memory_limit: str = "1GiB"
    threads: int = 2
    cache_entries: int = 64
    # Results live in the server process, outside DuckDB's memory limit: 64 aggregates built close
    # to that limit would hold 64 times it. Bounded in bytes too, and a bigger result is not kept.
    cache_bytes: int = 256 * 1024**2

    @classmethod
    def from_env(cls) -> "Settings":
        """The LETL_EXPLORER_* settings, read now: the explorer and `letl sql` share them."""
        return cls(row_cap=setting("LETL_EXPLORER_ROW_CAP"), download_cap=setting("LETL_EXPLORER_DOWNLOAD_CAP"),
                   timeout_s=setting("LETL_EXPLORER_TIMEOUT_S"), confirm_bytes=setting("LETL_EXPLORER_CONFIRM_BYTES"),
                   memory_limit=setting("LETL_EXPLORER_MEMORY_LIMIT"), threads=setting("LETL_EXPLORER_THREADS"))


@dataclass(frozen=True)
class Result:
    table: pa.Table
    truncated: bool
    sql_hash: str
    seconds: float
    cached: bool


def _typed(value) -> str:
    # A date and the string of the same date are different parameters to DuckDB.
    return f"{type(value).__name__}:{value}"


def sql_hash(sql: str, params) -> str:
    payload = json.dumps([sql, params if params is not None else []], default=_typed, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class Explorer:
    def __init__(self, lake: Lake, role: str = "analyst", settings: Settings | None = None,
                 datasets: list[Dataset] | None = None, pinned: dict | None = None):
        self.lake, self.role = lake, role
        self.settings = settings or Settings()
        self.datasets = visible(datasets if datasets is not None else load_datasets(lake), role)
        self.snapshot: Snapshot = snapshot(lake, self.datasets, ROLES.get(role, ROLES["analyst"]), pinned)
        views = self.snapshot.views
        spec = dict(views={name: view.files for name, view in views.items()}, allowed_dirs=self.snapshot.allowed_dirs,
                    memory_limit=self.settings.memory_limit, threads=self.settings.threads,
                    hive={name: view.partition_type for name, view in views.items() if view.hive},
                    union=sorted(name for name, view in views.items() if view.mixed_schema),
                    object_versions=self.snapshot.object_versions, lake_config=lake.config,
                    temp_dir=str(lake.config.home / "explorer" / "spill"))
        self.con = locked_connection(
            spec["views"], spec["allowed_dirs"], memory_limit=spec["memory_limit"], threads=spec["threads"],
            hive=spec["hive"], union=spec["union"], temp_dir=spec["temp_dir"],
            # Only when needed: a registered Python filesystem is consulted on every file DuckDB opens.
            filesystems=[LakeObjectFileSystem(lake=lake, allowed=self.snapshot.object_versions)]
            if self.snapshot.object_versions else [],
        )
        # Hand-written SQL runs there (see letl.query.worker); started at its first query.
        self._worker = QueryWorker(spec, parse_size(self.settings.memory_limit))
        # Streamlit drops cached explorers without closing them: their worker must not outlive them.
        weakref.finalize(self, self._worker.close)
        # Names DuckDB itself resolves (pg_settings, duckdb_views, pragma_* ...): they reveal paths
        # and settings, so neither a query nor a WITH name may use them.
        self._reserved = {r[0].lower() for r in self.con.execute(
            "SELECT view_name FROM duckdb_views() WHERE internal UNION SELECT table_name FROM duckdb_tables() "
            "WHERE internal UNION SELECT function_name FROM duckdb_functions() WHERE function_type = 'table'"
        ).fetchall()} - set(views)
        self._schemas: dict[str, dict[str, str]] = {}
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._worker.close()
        self.con.close()

    def view(self, name: str) -> View:
        if name not in self.snapshot.views:
            raise KeyError(f"no dataset {name!r} for role {self.role!r}")
        return self.snapshot.views[name]

    def schema(self, name: str) -> dict[str, str]:
        """Column name -> DuckDB type of a dataset's view."""
        if name not in self._schemas:
            cur = self.con.cursor()
            try:
                self._schemas[name] = describe(cur, self.view(name).name, self.settings.timeout_s)
            finally:
                cur.close()
        return self._schemas[name]

    def distinct(self, name: str, column: str, user: str | None = None, limit: int = 200) -> list | None:
        """Values for a category filter widget (None when the column has more than ``limit``)."""
        query = qb.Query(dataset=name, columns=[column], group_by=[column], order_by=[qb.OrderBy(column)],
                         limit=limit + 1)
        sql, params = self.build(query)
        values = self.run(sql, params, trusted=True, read=whole([self.view(name)]), user=user)
        values = values.table.column(0).to_pylist()
        return None if len(values) > limit else values

    def build(self, query: qb.Query) -> tuple[str, list]:
        return qb.build(query, self.schema(query.dataset), allowed_datasets=self.snapshot.views)

    def estimate(self, query: qb.Query) -> Estimate:
        view = self.view(query.dataset)
        partition_type = self.schema(view.name).get(PARTITION_COLUMN, "")
        cur = self.con.cursor()
        try:
            return partitions_kept(cur, view, partition_type, query.filters)
        finally:
            cur.close()

    def estimate_sql(self, sql: str) -> Estimate:
        """For hand-written SQL: every file of every view it names (an upper bound; pruning may read less)."""
        return self._reads(self._check(sql))

    def _check(self, sql: str) -> Parsed:
        parsed = analyze(sql)
        unknown = parsed.tables - set(self.snapshot.views) - parsed.ctes
        if unknown:
            raise UnsafeSQL(f"unknown dataset(s) {', '.join(sorted(unknown))}; "
                            f"query one of: {', '.join(sorted(self.snapshot.views)) or '(none)'}", "table")
        reserved = (parsed.ctes | parsed.tables) & self._reserved
        if reserved:
            raise UnsafeSQL(f"{', '.join(sorted(reserved))} is a DuckDB system name; use another name", "table")
        return parsed

    def _reads(self, parsed: Parsed) -> Estimate:
        return whole([self.snapshot.views[n] for n in sorted(parsed.tables & set(self.snapshot.views))])

    def needs_confirmation(self, est: Estimate) -> bool:
        return est.bytes > self.settings.confirm_bytes

    def run(self, sql: str, params=None, *, trusted: bool = False, read: Estimate | None = None,
            user: str | None = None, log: bool = True, use_cache: bool = True) -> Result:
        """Run a query. ``trusted`` is only for SQL from :meth:`build`; anything else is checked."""
        if not trusted:
            parsed = self._checked(sql, params, user, log)
            sql, read = parsed.text, read or self._reads(parsed)
        digest = sql_hash(sql, params)
        key = (digest, self.snapshot.key, self.settings.row_cap)
        started = time.perf_counter()
        with self._lock:
            hit = self._cache.get(key) if use_cache else None
            if hit is not None:
                self._cache.move_to_end(key)
        table = hit
        if hit is None:
            try:
                table = self._query(trusted, sql, params, self.settings.row_cap, self.settings.timeout_s)
            except QueryError as e:
                if log:
                    self._log(read, digest, None, user, failed=e.reason)
                raise
            if use_cache and table.nbytes <= self.settings.cache_bytes:
                with self._lock:
                    self._cache[key] = table
                    while (len(self._cache) > self.settings.cache_entries
                           or sum(t.nbytes for t in self._cache.values()) > self.settings.cache_bytes):
                        self._cache.popitem(last=False)
        if log:
            self._log(read, digest, table.num_rows, user)
        return Result(table, is_truncated(table), digest, time.perf_counter() - started, hit is not None)

    def export(self, sql: str, params, path: Path, *, trusted: bool = False, read: Estimate | None = None,
               user: str | None = None) -> int:
        """The full result, up to the download cap, at ``path``: CSV, JSON or Parquet by its suffix."""
        if not trusted:
            parsed = self._checked(sql, params, user)
            sql, read = parsed.text, read or self._reads(parsed)
        digest = sql_hash(sql, params)
        try:
            rows = self._query(trusted, sql, params, self.settings.download_cap,
                               max(self.settings.timeout_s, 120), path=path)
        except QueryError as e:
            self._log(read, digest, None, user, failed=e.reason)
            raise
        self._log(read, digest, rows, user)
        return rows

    def _query(self, trusted: bool, sql: str, params, cap: int, timeout_s: float, path: Path | None = None):
        """A table (or, with ``path``, the rows written there as CSV) from SQL checked by the caller."""
        if not trusted:
            return (self._worker.export(sql, params, path, cap, timeout_s) if path is not None
                    else self._worker.run(sql, params, cap, timeout_s))
        cur = self.con.cursor()
        try:
            # Checked above (or built by the builder): a second parse would only cost time.
            if path is not None:
                return export_result(cur, sql, path, params, row_cap=cap, timeout_s=timeout_s, check=False)
            return run_query(cur, sql, params, row_cap=cap, timeout_s=timeout_s, check=False)
        finally:
            cur.close()

    def _checked(self, sql: str, params, user: str | None, log: bool = True) -> Parsed:
        try:
            return self._check(sql)
        except UnsafeSQL as e:
            if log:
                self._event("query-refused", sql_hash(sql, params), None, user, e.reason)
            raise

    def _log(self, read: Estimate | None, digest: str, rows: int | None, user: str | None,
             failed: str | None = None) -> None:
        """``failed`` is the failure's category. Versions read go to the access log; the category, and
        a query that read no version (``SELECT 1``, a VALUES list), go to the query log."""
        kind = "query-failed" if failed else "query"
        versions = [v.version_id for v in read.versions] if read else []
        if versions:
            self.lake.catalog.record_query(versions, digest, rows, user=user or current_user(),
                                           host=socket.gethostname(), kind=kind)
        if failed or not versions:
            self._event(kind, digest, rows, user, failed)

    def _event(self, kind: str, digest: str, rows: int | None, user: str | None, reason: str | None) -> None:
        # The hash and a fixed category only: the SQL, or an error quoting it, may hold a typed patient value.
        self.lake.catalog.record_query_event(kind, digest, rows, detail=reason, user=user or current_user(),
                                             host=socket.gethostname())
