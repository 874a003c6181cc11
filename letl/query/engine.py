"""Locked, in-memory DuckDB connections for the explorer, and a guarded
query runner (single SELECT, row cap, time limit, memory bound)."""
from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa

from letl.lake.config import parse_size
from letl.query.export import format_of, writer
from letl.query.sql_guard import check_sql
from letl.query.watchdog import Watchdog

__all__ = [
    "QueryError",
    "QueryTimeout",
    "QueryMemoryLimit",
    "QueryMoved",
    "DuplicateColumns",
    "distinct_columns",
    "locked_connection",
    "run_query",
    "export_result",
    "is_truncated",
    "TRUNCATED_KEY",
]

_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_TYPE = re.compile(r"(DATE|VARCHAR)\Z")
_MEMORY = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\Z", re.IGNORECASE)
TRUNCATED_KEY = b"letl.truncated"
MOVED = "a file behind this dataset moved since the page was opened: reload the page"


class QueryError(RuntimeError):
    """A query failed while running (after passing the SQL guard).

    ``reason`` is the category the audit log keeps: never the message, which may quote a value."""

    reason = "error"


class QueryTimeout(QueryError, TimeoutError):
    """A query ran past its time limit and was interrupted."""

    reason = "time-limit"


class QueryMemoryLimit(QueryError, MemoryError):
    """A query grew past the memory limit (DuckDB's, or the process RSS bound) and was stopped."""

    reason = "memory-limit"


class QueryMoved(QueryError):
    """A file behind a view moved since the views were built."""

    reason = "moved"


class DuplicateColumns(QueryError):
    """The result names two columns alike: every face (a page, a download, `letl sql`) needs each by name."""

    reason = "duplicate-columns"


def distinct_columns(names: Sequence[str]) -> None:
    """Refuse a result whose column names repeat: DuckDB allows it, but a row as a JSON object, a
    DataFrame's column or a header-to-unit map by name would keep one and drop or mislabel the other."""
    counts = Counter(names)
    for name in names:
        if counts[name] > 1:
            alias = f"{name}_2" if _NAME.match(name) else '"' + f"{name}_2".replace('"', '""') + '"'
            raise DuplicateColumns(f"the result has {counts[name]} columns named {name!r}: "
                                   f"give them distinct names (... AS {alias})")


def _sql_string(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL character in path")
    return "'" + value.replace("'", "''") + "'"


def locked_connection(
    views: Mapping[str, Sequence[str]],
    allowed_dirs: Sequence[str],
    memory_limit: str = "1GiB",
    threads: int = 2,
    *,
    hive: Mapping[str, str] | None = None,
    union: Collection[str] = (),
    filesystems: Sequence[Any] = (),
    temp_dir: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with one VIEW per dataset over its Parquet
    files, locked to ``allowed_dirs`` with external access, extension
    auto-install/auto-load and further configuration changes disabled.

    Views named in ``hive`` read their ``key=value`` directories as a column of
    the given type (``partition_key`` DATE, say), so filters on it skip whole files. Views named in
    ``union`` match their files' columns by name (``union_by_name``): files written before a column
    was added read it as NULL. ``filesystems`` are fsspec
    filesystems to register before the lock (for ``letlobj://`` paths)."""
    if not _MEMORY.match(str(memory_limit).strip()):
        raise ValueError(f"invalid memory_limit {memory_limit!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"invalid threads {threads!r}")
    for name, files in views.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"invalid dataset name {name!r}: must match [a-z_][a-z0-9_]*")
        if isinstance(files, str) or not files:
            raise ValueError(f"dataset {name!r} needs a non-empty list of Parquet paths")

    con = duckdb.connect(":memory:")
    try:
        # Extension behaviour first, so creating the views cannot pull anything in.
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        # Warm queries then skip re-reading every file footer.
        con.execute("SET parquet_metadata_cache = true")
        # A bare name must never resolve to a Python variable of the process (a DataFrame in scope).
        con.execute("SET python_enable_replacements = false")
        if temp_dir is not None:
            # DuckDB otherwise spills to .tmp under the working directory: a checkout, or anywhere.
            # Set before external access is locked, which freezes it.
            con.execute(f"SET temp_directory = {_sql_string(str(temp_dir))}")
        for fs in filesystems:
            con.register_filesystem(fs)
        for name, files in views.items():
            file_list = "[" + ", ".join(_sql_string(str(f)) for f in files) + "]"
            options = ""
            if name in (hive or {}):
                if not _TYPE.match(hive[name]):
                    raise ValueError(f"invalid partition type {hive[name]!r}")
                # Declared, not sniffed: "2024" must not become a number in one lake and text in another.
                options = (", hive_partitioning = true, hive_types = "
                           f"{{'partition_key': '{hive[name]}'}}")
            if name in union:
                options += ", union_by_name = true"
            con.execute(
                f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({file_list}{options})'
            )
        con.execute(
            "SET allowed_directories = "
            + "[" + ", ".join(_sql_string(str(d)) for d in allowed_dirs) + "]"
        )
        con.execute("SET enable_external_access = false")
        con.execute(f"SET memory_limit = {_sql_string(str(memory_limit).strip())}")
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con


def is_truncated(table: pa.Table) -> bool:
    """True when ``run_query`` cut the result at its row cap."""
    md = table.schema.metadata or {}
    return md.get(TRUNCATED_KEY) == b"true"


def describe(con: duckdb.DuckDBPyConnection, view: str, timeout_s: float) -> dict[str, str]:
    """Column name -> DuckDB type of a view, under the same time limit and error mapping as a query."""
    if not _NAME.match(view):
        raise ValueError(f"invalid view name {view!r}")
    with _limits(con, timeout_s):
        return {name: typ for name, typ, *_ in con.execute(f'DESCRIBE "{view}"').fetchall()}


def _checked(sql: str, check: bool) -> str:
    return check_sql(sql) if check else sql.strip().rstrip(";")


def _stream(con: duckdb.DuckDBPyConnection, sql: str, params, limit: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The result's schema and its record batches, stopping after ``limit`` rows.

    No ``LIMIT`` is spliced around the caller's SQL: it runs exactly as checked, and DuckDB
    keeps the scan parallel (a limit over a sub-query makes it preserve insertion order)."""
    rel = con.sql(sql, params=params) if params is not None else con.sql(sql)
    reader = rel.to_arrow_reader(65_536)
    distinct_columns(reader.schema.names)  # before a row is fetched, for every face and format

    def batches() -> Iterator[pa.RecordBatch]:
        left = limit
        for batch in reader:
            if batch.num_rows >= left:
                yield batch.slice(0, left)
                return
            left -= batch.num_rows
            yield batch

    return reader.schema, batches()


@contextmanager
def _limits(con: duckdb.DuckDBPyConnection, timeout_s: float):
    """Run under the time limit and the memory bound; DuckDB errors become QueryError subclasses."""
    # Read back from the connection, so the bound is the limit the query really runs under.
    limit = parse_size(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    dog = Watchdog(con, timeout_s, limit)
    try:
        with dog:
            yield
    except duckdb.Error as e:
        if dog.tripped == "memory" or isinstance(e, duckdb.OutOfMemoryException):
            raise QueryMemoryLimit(
                f"query exceeded the memory limit of {limit / 2**20:,.0f} MiB and was stopped"
            ) from None
        if dog.tripped == "time" or isinstance(e, duckdb.InterruptException):
            raise QueryTimeout(
                f"query exceeded the time limit of {timeout_s:g} s and was stopped"
            ) from None
        if isinstance(e, duckdb.IOException) and "No files found" in str(e):
            # A version moved tier or was removed after the views were built.
            raise QueryMoved(MOVED) from e
        raise QueryError(f"query failed: {e}") from e


def export_result(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    path: str | Path,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    row_cap: int = 1_000_000,
    timeout_s: float = 60,
    *,
    check: bool = True,
) -> int:
    """Write at most ``row_cap`` rows of one guarded SELECT to ``path``; return the rows.

    CSV, or JSON or Parquet when ``path`` ends in .json or .parquet (:mod:`letl.query.export`).
    Record batches stream from DuckDB to the file, so neither the result nor the file is ever
    whole in memory. The file appears complete or not at all (temp file, then rename).
    """
    inner = _checked(sql, check)
    path = Path(path)
    fmt = format_of(path)
    temp = path.with_name(f".{path.name}.tmp")
    rows = 0
    try:
        with _limits(con, timeout_s):
            schema, batches = _stream(con, inner, params, row_cap)
            with writer(temp, schema, fmt) as write:
                for batch in batches:
                    write(batch)
                    rows += batch.num_rows
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    return rows


def run_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    row_cap: int = 1_000_000,
    timeout_s: float = 10,
    *,
    check: bool = True,
) -> pa.Table:
    """Run one guarded SELECT and return at most ``row_cap`` rows.

    The result's schema metadata carries ``letl.truncated`` = ``true``/``false``
    (see :func:`is_truncated`). Raises ``UnsafeSQL`` (from the guard) for refused
    SQL, :class:`QueryTimeout` past ``timeout_s`` and :class:`QueryError` for other
    failures. ``check=False`` is only for SQL the query builder generated or the
    caller has already put through the guard.
    """
    if not isinstance(row_cap, int) or row_cap < 0:
        raise ValueError(f"invalid row_cap {row_cap!r}")
    if timeout_s <= 0:
        raise ValueError(f"invalid timeout_s {timeout_s!r}")
    inner = _checked(sql, check)
    with _limits(con, timeout_s):
        # One row past the cap tells a cut result from one that fits exactly.
        schema, batches = _stream(con, inner, params, row_cap + 1)
        table = pa.Table.from_batches(list(batches), schema=schema)

    truncated = table.num_rows > row_cap
    if truncated:
        table = table.slice(0, row_cap)
    md = dict(table.schema.metadata or {})
    md[TRUNCATED_KEY] = b"true" if truncated else b"false"
    return table.replace_schema_metadata(md)
