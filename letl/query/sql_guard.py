"""Parser-level guard for free SQL typed into the explorer's SQL tab.

The guard uses DuckDB's own parser (``extract_statements`` and
``json_serialize_sql``) rather than regular expressions. It accepts exactly
one read-only ``SELECT`` (a ``WITH`` query, ``VALUES`` and set operations
parse as ``SELECT`` too) whose every table reference is a plain, unqualified
name: users query the views the explorer creates, nothing else. Calls that could build a value
past the memory limit within one expression are bounded or refused (``letl.query.limits``).

It is one layer of two: the connection the query runs on is also locked
(see ``letl.query.engine.locked_connection``).
"""
from __future__ import annotations

import functools
import json
import re
import threading
import unicodedata
from typing import NamedTuple

import duckdb

from letl.lake.errors import InvalidInput
from letl.query.limits import SizeRefused, check_sizes

__all__ = ["UnsafeSQL", "analyze", "check_sql", "DENIED_FUNCTIONS"]

MAX_LENGTH = 20_000

# Table references a user query may contain. Anything else (TABLE_FUNCTION,
# SHOW_REF from DESCRIBE/SUMMARIZE, and any node type a future DuckDB adds)
# is rejected: the check fails closed.
_ALLOWED_TABLE_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT"}

# Scalar functions that reveal the environment or settings, or touch
# files or state. Table functions are rejected wholesale, but their names
# are listed too in case one is ever reachable in a scalar position.
DENIED_FUNCTIONS = frozenset(
    {
        "getenv",
        "current_setting",
        "read_text",
        "read_blob",
        "read_csv",
        "read_csv_auto",
        "read_parquet",
        "parquet_scan",
        "read_json",
        "read_json_auto",
        "read_ndjson",
        "read_json_objects",
        "glob",
        "sniff_csv",
        "query",
        "query_table",
        "setseed",
        "nextval",
        "currval",
        "sql_auto_complete",
        "json_serialize_sql",
        "json_deserialize_sql",
        "json_execute_serialized_sql",
        "enable_logging",
        "disable_logging",
        "checkpoint",
        "force_checkpoint",
    }
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class UnsafeSQL(InvalidInput):
    """The SQL is not a single, read-only SELECT over the explorer's views.

    ``reason`` is a fixed category for the audit log, which must never hold the SQL or the message
    (either may quote a value typed into the query)."""

    def __init__(self, message: str, reason: str = "refused"):
        super().__init__(message)
        self.reason = reason


def _check_characters(sql: str) -> None:
    for i, ch in enumerate(sql):
        if ch in "\t\n\r":
            continue
        cat = unicodedata.category(ch)
        # Cc: control characters (NUL...), Cf: format characters (zero-width
        # spaces, bidi overrides used for "Trojan source" tricks).
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise UnsafeSQL(
                f"SQL contains a disallowed invisible or control character "
                f"U+{ord(ch):04X} at position {i}", "characters"
            )


def _walk(node, path="$"):
    """Yield every dict in the parsed tree."""
    if isinstance(node, dict):
        yield node, path
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _is_table_ref(d: dict) -> bool:
    # Table references carry "alias" and "sample" but, unlike query nodes,
    # no "modifiers", and unlike expressions, no "class".
    return "sample" in d and "alias" in d and "modifiers" not in d and "class" not in d


def _check_tree(tree: dict) -> None:
    for d, _path in _walk(tree):
        if _is_table_ref(d):
            kind = d.get("type")
            if kind == "TABLE_FUNCTION":
                fn = (d.get("function") or {}).get("function_name", "?")
                raise UnsafeSQL(
                    f"table function {fn}() is not allowed; query the dataset views by name", "function"
                )
            if kind not in _ALLOWED_TABLE_REFS:
                raise UnsafeSQL(f"table reference of type {kind} is not allowed", "table")
            if kind == "BASE_TABLE":
                name = d.get("table_name", "")
                if d.get("schema_name") or d.get("catalog_name"):
                    raise UnsafeSQL(
                        f"qualified table names are not allowed: "
                        f"{d.get('catalog_name') or ''}.{d.get('schema_name') or ''}.{name}".lstrip("."), "table"
                    )
                if not _IDENT.match(name):
                    # e.g. FROM '/etc/passwd' (a replacement scan on a file)
                    raise UnsafeSQL(f"table name {name!r} is not a plain identifier", "table")
                if d.get("at_clause"):
                    raise UnsafeSQL("time-travel AT clauses are not allowed", "table")
        if d.get("class") == "FUNCTION" or ("function_name" in d and "class" in d):
            fn = str(d.get("function_name", "")).lower()
            if d.get("schema") or d.get("catalog"):
                raise UnsafeSQL(f"qualified function names are not allowed: {fn}", "function")
            if fn in DENIED_FUNCTIONS:
                raise UnsafeSQL(f"function {fn}() is not allowed", "function")


def _strip(sql: str) -> str:
    s = sql.strip()
    while s.endswith(";"):
        s = s[:-1].rstrip()
    return s


# One parse-only connection for the process: opening one costs ~20 ms, more than the query it
# guards, and Streamlit runs every rerun on a new thread. Parsing takes ~1 ms under the lock.
_parser = duckdb.connect(":memory:")
_parser_lock = threading.Lock()


class Parsed(NamedTuple):
    text: str
    tables: frozenset[str]  # every plain table name referenced, lower-cased, CTE references included
    ctes: frozenset[str]  # names the query's WITH clauses define, lower-cased


def analyze(sql: str, max_length: int = MAX_LENGTH) -> Parsed:
    """Like :func:`check_sql`, and also the names the query reads and the names its WITH defines."""
    if not isinstance(sql, str):
        raise UnsafeSQL("SQL must be a string", "parse")
    if len(sql) > max_length:
        raise UnsafeSQL(f"SQL is too long ({len(sql)} characters; the limit is {max_length})", "size")
    return _analyze(sql)


@functools.lru_cache(maxsize=256)
def _analyze(sql: str) -> Parsed:
    """The verdict depends on the text alone: a dashboard re-running its SQL is parsed once.

    Refusals are exceptions, which lru_cache does not keep: a refused text is parsed again."""
    _check_characters(sql)
    text = _strip(sql)
    if not text:
        raise UnsafeSQL("SQL is empty", "parse")

    with _parser_lock:
        try:
            statements = _parser.extract_statements(text)
        except duckdb.Error as e:
            raise UnsafeSQL(f"SQL does not parse: {e}", "parse") from None
        raw = _parser.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0]
    if len(statements) != 1:
        raise UnsafeSQL(f"exactly one statement is allowed, found {len(statements)}", "statement")
    stype = statements[0].type
    if stype != duckdb.StatementType.SELECT:
        raise UnsafeSQL(f"only SELECT/WITH queries are allowed, not {stype.name}", "statement")

    tree = json.loads(raw)
    if tree.get("error"):
        raise UnsafeSQL(f"SQL was refused by the parser: {tree.get('error_message')}", "parse")
    if len(tree.get("statements", [])) != 1:
        raise UnsafeSQL("exactly one statement is allowed", "statement")
    _check_tree(tree)
    try:
        check_sizes(d for d, _path in _walk(tree))
    except SizeRefused as e:
        raise UnsafeSQL(str(e), "size") from None
    tables, ctes = set(), set()
    for d, _path in _walk(tree):
        if _is_table_ref(d) and d.get("type") == "BASE_TABLE" and d.get("table_name"):
            tables.add(d["table_name"].lower())
        for entry in (d.get("cte_map") or {}).get("map") or []:
            ctes.add(str(entry.get("key")).lower())
    return Parsed(text, frozenset(tables), frozenset(ctes))


def check_sql(sql: str, max_length: int = MAX_LENGTH) -> str:
    """Return the single SELECT statement in ``sql`` (stripped, without a
    trailing ``;``) or raise :class:`UnsafeSQL` saying why it was refused."""
    return analyze(sql, max_length).text
