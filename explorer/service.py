"""The explorer's query service: one locked DuckDB database over a lake snapshot, for one role.

Streamlit pages call this; so do the bench and the tests, without Streamlit. Each query runs
on its own cursor (Streamlit serves sessions from several threads, and the time limit
interrupts a single connection). Every query, cached or not, lands in the catalog's access log.
"""

import getpass
import hashlib
import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from letl_assets.lake.lake import Lake

from . import query_builder as qb
from .datasets import Dataset, load_datasets, visible
from .engine import export_csv, is_truncated, locked_connection, run_query
from .objectfs import LakeObjectFileSystem
from .sql_guard import analyze
from .views import Estimate, Snapshot, View, estimate, snapshot


@dataclass(frozen=True)
class Settings:
    row_cap: int = 10_000  # rows shown on a page
    download_cap: int = 1_000_000  # rows in a CSV download
    timeout_s: float = 30.0
    confirm_bytes: int = 512 * 1024**2  # scans above this without a partition filter ask first
    memory_limit: str = "1GB"
    threads: int = 2
    cache_entries: int = 64


@dataclass(frozen=True)
class Result:
    table: pa.Table
    truncated: bool
    sql_hash: str
    seconds: float
    cached: bool


def sql_hash(sql: str, params) -> str:
    payload = json.dumps([sql, params if params is not None else []], default=str, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class Explorer:
    def __init__(self, lake: Lake, role: str = "analyst", settings: Settings | None = None,
                 datasets: list[Dataset] | None = None, pinned: dict | None = None):
        self.lake, self.role = lake, role
        self.settings = settings or Settings()
        self.datasets = visible(datasets if datasets is not None else load_datasets(lake), role)
        self.snapshot: Snapshot = snapshot(lake, self.datasets, pinned)
        views = self.snapshot.views
        self.con = locked_connection(
            {name: view.files for name, view in views.items()},
            self.snapshot.allowed_dirs,
            memory_limit=self.settings.memory_limit,
            threads=self.settings.threads,
            hive=[name for name, view in views.items() if view.hive],
            filesystems=[LakeObjectFileSystem(lake=lake)],
        )
        self._schemas: dict[str, dict[str, str]] = {}
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.con.close()

    # --- catalog side --------------------------------------------------------------------
    def view(self, name: str) -> View:
        if name not in self.snapshot.views:
            raise KeyError(f"no dataset {name!r} for role {self.role!r}")
        return self.snapshot.views[name]

    def schema(self, name: str) -> dict[str, str]:
        """Column name -> DuckDB type of a dataset's view."""
        if name not in self._schemas:
            view = self.view(name)
            cur = self.con.cursor()
            try:
                rows = cur.execute(f"DESCRIBE {qb.quote_ident(view.name)}").fetchall()
            finally:
                cur.close()
            self._schemas[name] = {r[0]: r[1] for r in rows}
        return self._schemas[name]

    def distinct(self, name: str, column: str, limit: int = 200) -> list:
        """Values for a category filter widget (None when the column has more than ``limit``)."""
        query = qb.Query(dataset=name, columns=[column], group_by=[column], order_by=[qb.OrderBy(column)],
                         limit=limit + 1)
        sql, params = self.build(query)
        values = self.run(sql, params, trusted=True, log=False).table.column(0).to_pylist()
        return None if len(values) > limit else values

    # --- queries ---------------------------------------------------------------------------
    def build(self, query: qb.Query) -> tuple[str, list]:
        return qb.build(query, self.schema(query.dataset), allowed_datasets=self.snapshot.views)

    def estimate(self, query: qb.Query) -> Estimate:
        return estimate(self.view(query.dataset), query.filters)

    def estimate_sql(self, sql: str) -> Estimate:
        """For hand-written SQL: every file of every view it names (no pruning is assumed)."""
        return self._reads(analyze(sql)[1])

    def _reads(self, tables: set[str]) -> Estimate:
        versions = tuple(v for name in sorted(tables & set(self.snapshot.views))
                         for v in self.snapshot.views[name].versions)
        return Estimate(versions, len(versions), False)

    def needs_confirmation(self, est: Estimate) -> bool:
        return not est.partition_filter and est.bytes > self.settings.confirm_bytes

    def run(self, sql: str, params=None, *, trusted: bool = False, read: Estimate | None = None,
            user: str | None = None, log: bool = True, use_cache: bool = True) -> Result:
        """Run a query. ``trusted`` is only for SQL from :meth:`build`; anything else is checked."""
        if not trusted:
            sql, tables = analyze(sql)
            read = read or self._reads(tables)
        digest = sql_hash(sql, params)
        key = (digest, self.snapshot.key, self.settings.row_cap)
        started = time.perf_counter()
        with self._lock:
            hit = self._cache.get(key) if use_cache else None
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            cur = self.con.cursor()
            try:
                table = run_query(cur, sql, params, row_cap=self.settings.row_cap,
                                  timeout_s=self.settings.timeout_s, check=not trusted)
            finally:
                cur.close()
            if use_cache:
                with self._lock:
                    self._cache[key] = table
                    while len(self._cache) > self.settings.cache_entries:
                        self._cache.popitem(last=False)
        table = hit if hit is not None else table
        if log:
            self._log(read or self.estimate_sql(sql), digest, table.num_rows, user)
        return Result(table, is_truncated(table), digest, time.perf_counter() - started, hit is not None)

    def export(self, sql: str, params, path: Path, *, trusted: bool = False, read: Estimate | None = None,
               user: str | None = None) -> int:
        """The full result, up to the download cap, as a CSV file at ``path``."""
        cur = self.con.cursor()
        try:
            rows = export_csv(cur, sql, path, params, row_cap=self.settings.download_cap,
                              timeout_s=max(self.settings.timeout_s, 120), check=not trusted)
        finally:
            cur.close()
        self._log(read or self.estimate_sql(sql), sql_hash(sql, params), rows, user)
        return rows

    def _log(self, read: Estimate, digest: str, rows: int, user: str | None) -> None:
        self.lake.catalog.record_query(
            [v.version_id for v in read.versions], digest, rows,
            user=user or _os_user(), host=socket.gethostname(),
        )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
