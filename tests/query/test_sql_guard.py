"""SQL guard and locked DuckDB connection of the explorer."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from letl.query.engine import (
    QueryError,
    QueryTimeout,
    is_truncated,
    locked_connection,
    run_query,
)
from letl.query.sql_guard import UnsafeSQL, check_sql

# --------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT 1; DROP TABLE x", "exactly one statement"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT 1 /* harmless */; /* x */ DROP TABLE x", "exactly one statement"),
        ("SELECT 1 -- c\n; DROP TABLE x", "exactly one statement"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "not COPY"),
        ("COPY t FROM '/etc/passwd'", "not COPY"),
        ("ATTACH '/tmp/evil.db' AS e", "not ATTACH"),
        ("DETACH e", "not DETACH"),
        ("INSTALL httpfs", "not LOAD"),
        ("LOAD httpfs", "not LOAD"),
        ("PRAGMA version", "not PRAGMA"),
        ("SET enable_external_access = true", "not SET"),
        ("RESET threads", "not SET"),
        ("CALL pragma_version()", "not CALL"),
        ("EXPORT DATABASE '/tmp/dump'", "not EXPORT"),
        ("CREATE TABLE t (a INT)", "not CREATE"),
        ("CREATE VIEW v2 AS SELECT 1", "not CREATE"),
        ("DROP TABLE x", "not DROP"),
        ("INSERT INTO t VALUES (1)", "not INSERT"),
        ("UPDATE t SET a = 1", "not UPDATE"),
        ("DELETE FROM t", "not DELETE"),
        ("EXPLAIN SELECT 1", "not EXPLAIN"),
        ("PIVOT t ON a", "not MULTI"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto()"),
        ("SELECT * FROM v WHERE a IN (SELECT * FROM read_csv('/etc/passwd'))", "read_csv()"),
        ("SELECT * FROM (SELECT * FROM read_csv('/etc/passwd')) s", "read_csv()"),
        ("WITH p AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM p", "read_csv()"),
        ("SELECT (SELECT count(*) FROM read_text('/etc/shadow'))", "read_text()"),
        ("SELECT * FROM read_blob('/etc/passwd')", "read_blob()"),
        ("SELECT * FROM read_parquet('/data/*.parquet')", "read_parquet()"),
        ("SELECT * FROM parquet_scan('/data/x.parquet')", "parquet_scan()"),
        ("SELECT * FROM read_json('/etc/x.json')", "read_json()"),
        ("SELECT * FROM glob('/*')", "glob()"),
        ("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv()"),
        ("SELECT * FROM query('COPY (SELECT 1) TO ''/tmp/x''')", "query()"),
        ("SELECT * FROM query_table('v')", "query_table()"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings()"),
        ("SELECT * FROM range(10)", "range()"),
        ("FROM glob('/etc/*')", "glob()"),
        ("SELECT * FROM v, LATERAL unnest([1, 2])", "unnest()"),
        ("SELECT * FROM '/etc/passwd'", "not a plain identifier"),
        ("SELECT * FROM 'https://example.com/x.parquet'", "not a plain identifier"),
        ("SELECT * FROM main.v", "qualified table names"),
        ("SELECT * FROM system.main.duckdb_settings", "qualified table names"),
        ("SELECT getenv('HOME')", "getenv()"),
        ("SELECT current_setting('allowed_directories')", "current_setting()"),
        ("SELECT main.getenv('HOME')", "qualified function names"),
        ("SELECT 1 UNION ALL SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
        ("DESCRIBE v", "SHOW_REF"),
        ("SUMMARIZE v", "SHOW_REF"),
        ("", "empty"),
        ("   ;  ", "empty"),
        ("SELEC 1", "does not parse"),
        # Unicode tricks
        ("SELECT 1\uff1b DROP TABLE x", "does not parse"),  # full-width semicolon
        ("\u0405ELECT 1", "does not parse"),  # Cyrillic DZE homoglyph
        ("SELECT 1;\u200b DROP TABLE x", "U+200B"),  # zero-width space
        ("SELECT 1 /* \u202e */", "U+202E"),  # bidi override (Trojan source)
        ("SELECT 1\x00; DROP TABLE x", "U+0000"),
        # Calls that build a value in one go, where DuckDB's memory limit and interrupts do not reach
        ("SELECT count(*) FROM (SELECT unnest(generate_series(1, 100000000)))", "at most 4,096"),
        ("SELECT len(range(0, 300000000))", "range()"),
        ("SELECT unnest(generate_series(1, 3000)), unnest(generate_series(1, 3000))", "in all"),
        ("SELECT generate_series(1, a) FROM v", "integer literal"),
        ("SELECT generate_series(DATE '2024-01-01', DATE '2024-12-31', INTERVAL 1 DAY)", "integer literal"),
        ("SELECT repeat('x', 2000000000)", "repeat()"),
        ("SELECT repeat(s, 2) FROM v", "string literal"),
        ("SELECT repeat([1], 300000000)", "string literal"),
        ("SELECT repeat('x', -5000), repeat('y', 5000)", "in all"),  # a negative count buys no budget
        ("SELECT lpad('x', 2000000000, 'y')", "lpad()"),
        ("SELECT rpad(s, n, 'y') FROM v", "integer literal"),
        ("SELECT list_resize([1], 300000000)", "list_resize()"),
        ("SELECT array_resize([1], 300000000)", "array_resize()"),
        ("SELECT bitstring('1', 2000000000)", "bitstring()"),
        ("SELECT printf('%1000000000d', 1)", "printf()"),
        ("SELECT printf('%*d', 1000000000, 1)", "widths must be written"),
        ("SELECT printf('%1$*2$d', 1, 1000000000)", "widths must be written"),
        ("SELECT format('{:>1000000000}', 'x')", "format()"),
        ("SELECT format('{:>{}}', 'x', 1000000000)", "widths must be written"),
        ("SELECT format(f, 1) FROM v", "string literal"),
        ("SELECT list_transform([1, 2], lambda x: [x, x])", "lambda"),
        ("SELECT [x for x in [1, 2]]", "list comprehensions"),
        ("SELECT list_reduce([1, 2], lambda a, b: a || a, 'x')", "lambda"),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
         "recursive WITH"),
    ],
)
def test_rejected(sql, message):
    with pytest.raises(UnsafeSQL) as exc:
        check_sql(sql)
    assert message in str(exc.value)
    assert exc.value.reason in {"characters", "parse", "statement", "function", "table", "size"}


def test_unsafe_sql_is_a_value_error():
    assert issubclass(UnsafeSQL, ValueError)


def test_too_long():
    sql = "SELECT 1" + " " * 20_000
    with pytest.raises(UnsafeSQL, match="too long"):
        check_sql(sql)
    with pytest.raises(UnsafeSQL, match="too long"):
        check_sql("SELECT " + "+".join(["1"] * 50), max_length=40)
    # just under the limit passes
    assert check_sql("SELECT 1" + " " * 100, max_length=108) == "SELECT 1"


# ---------------------------------------------------------------- allowed


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select a, b from v where a > 3 order by a",
        "WITH x AS (SELECT a FROM v) SELECT * FROM x",
        "SELECT v.a, w.c FROM v JOIN w ON v.a = w.a",
        "SELECT * FROM v LEFT JOIN w USING (a)",
        "SELECT b, count(*), sum(a), avg(a) FROM v GROUP BY b HAVING count(*) > 1",
        "SELECT a, row_number() OVER (PARTITION BY b ORDER BY a) FROM v",
        "SELECT a FROM v UNION SELECT a FROM w",
        "SELECT * FROM v WHERE a IN (SELECT a FROM w)",
        "SELECT * FROM (VALUES (1, 'x'), (2, 'y')) t(a, b)",
        "FROM v SELECT a",
        "SELECT 'read_csv(''/etc/passwd'')' AS not_a_call",
        "SELECT 1 /* ; DROP TABLE x */",
        "SELECT a FROM v WHERE b = ?",
        "SELECT 'h\u00e9llo \u4e16\u754c' AS unicode_literal",
        # Bounded builders stay usable
        "SELECT unnest(generate_series(1, 12)) AS month",
        "SELECT unnest(range(10)) AS i, unnest(generate_series(10, 1, -1)) AS j",
        "SELECT lpad(code, 5, '0'), rpad(code, 8, ' ') FROM v",
        "SELECT repeat('-', 20), printf('%.2f %5d %%', a, b), format('{:>8} {}', a, b) FROM v",
        "SELECT list_resize(l, 3) FROM v",
        "SELECT format('{:*>8}', code), printf('** %s **', code) FROM v",  # a fill or text '*' is no width
    ],
)
def test_allowed(sql):
    assert check_sql(sql) == sql


def test_strips_whitespace_and_trailing_semicolons():
    assert check_sql("  SELECT 1 ;\n") == "SELECT 1"
    assert check_sql("SELECT 1;;") == "SELECT 1"


# ------------------------------------------------------- locked connection


@pytest.fixture
def lake(tmp_path):
    lake = tmp_path / "lake"
    (lake / "labs").mkdir(parents=True)
    (lake / "sites").mkdir()
    for month in (1, 2, 3):
        pq.write_table(
            pa.table(
                {
                    "site": [f"s{i % 4}" for i in range(100)],
                    "value": [float(i + 100 * month) for i in range(100)],
                    "month": [month] * 100,
                }
            ),
            lake / "labs" / f"month={month}.parquet",
        )
    # a path with a quote in it must be passed safely
    odd = lake / "sites" / "it's.parquet"
    pq.write_table(pa.table({"site": ["s0", "s1", "s2", "s3"], "name": ["a", "b", "c", "d"]}), odd)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("k,v\nsecret,42\n")
    views = {
        "labs": sorted(str(p) for p in (lake / "labs").glob("*.parquet")),
        "sites": [str(odd)],
    }
    return {"views": views, "dir": str(lake), "outside": outside, "tmp": tmp_path}


@pytest.fixture
def con(lake):
    c = locked_connection(lake["views"], [lake["dir"]])
    yield c
    c.close()


def _setting(con, name):
    return con.execute("SELECT value FROM duckdb_settings() WHERE name = ?", [name]).fetchone()[0]


def test_views_answer(con):
    t = run_query(con, "SELECT count(*) AS n, sum(month) AS m FROM labs")
    assert t.to_pylist() == [{"n": 300, "m": 600}]
    t = run_query(
        con,
        "SELECT s.name, count(*) AS n FROM labs l JOIN sites s USING (site) "
        "GROUP BY s.name ORDER BY s.name",
    )
    assert t.to_pylist() == [{"name": n, "n": 75} for n in "abcd"]
    assert not is_truncated(t)


def test_settings_are_locked(con, lake):
    assert _setting(con, "enable_external_access") == "false"
    assert _setting(con, "autoinstall_known_extensions") == "false"
    assert _setting(con, "autoload_known_extensions") == "false"
    assert _setting(con, "lock_configuration") == "true"
    assert _setting(con, "threads") == "2"
    assert lake["dir"] in _setting(con, "allowed_directories")


def test_copy_out_fails(con, lake):
    target = lake["outside"] / "x.csv"
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.execute(f"COPY (SELECT * FROM labs) TO '{target}'")
    assert not target.exists()


def test_read_csv_outside_fails(con, lake):
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.execute(f"SELECT * FROM read_csv('{lake['outside'] / 'secret.csv'}')").fetchall()


def test_config_cannot_be_unlocked(con):
    for stmt in (
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
        "SET autoload_known_extensions = true",
    ):
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(stmt)
    assert _setting(con, "enable_external_access") == "false"


def test_extensions_cannot_be_installed_or_loaded(con):
    with pytest.raises(duckdb.Error, match="disabled"):
        con.execute("INSTALL httpfs")
    with pytest.raises(duckdb.Error, match="disabled"):
        con.execute("LOAD httpfs")


def test_attach_fails(con, lake):
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.execute(f"ATTACH '{lake['outside'] / 'evil.db'}' AS e")


def test_views_still_answer_after_refusals(con):
    for stmt in ("SET enable_external_access = true", "INSTALL httpfs"):
        with pytest.raises(duckdb.Error):
            con.execute(stmt)
    assert run_query(con, "SELECT count(*) AS n FROM labs").to_pylist() == [{"n": 300}]


@pytest.mark.parametrize("name", ["Labs", "1labs", "labs; DROP", "la-bs", 'x"y', ""])
def test_bad_view_names(lake, name):
    with pytest.raises(ValueError, match="invalid dataset name"):
        locked_connection({name: lake["views"]["labs"]}, [lake["dir"]])


def test_empty_file_list(lake):
    with pytest.raises(ValueError, match="non-empty"):
        locked_connection({"labs": []}, [lake["dir"]])


def test_bad_memory_limit(lake):
    with pytest.raises(ValueError, match="memory_limit"):
        locked_connection(lake["views"], [lake["dir"]], memory_limit="1GB'; SET x=1; --")


def test_view_outside_allowed_dirs_fails(lake):
    pq.write_table(pa.table({"a": [1]}), lake["outside"] / "o.parquet")
    c = locked_connection({"o": [str(lake["outside"] / "o.parquet")]}, [lake["dir"]])
    try:
        with pytest.raises(QueryError, match="disabled by configuration"):
            run_query(c, "SELECT * FROM o")
    finally:
        c.close()


# -------------------------------------------------------------- run_query


def test_run_query_applies_guard(con, lake):
    target = lake["outside"] / "y.csv"
    with pytest.raises(UnsafeSQL):
        run_query(con, f"COPY (SELECT 1) TO '{target}'")
    with pytest.raises(UnsafeSQL):
        run_query(con, "SELECT 1; DROP VIEW labs")
    with pytest.raises(UnsafeSQL):
        run_query(con, "SELECT * FROM read_csv('/etc/passwd')")
    assert not target.exists()
    assert run_query(con, "SELECT count(*) AS n FROM labs").to_pylist() == [{"n": 300}]


def test_trailing_comment_cannot_break_the_wrapper(con):
    t = run_query(con, "SELECT count(*) AS n FROM labs -- total")
    assert t.to_pylist() == [{"n": 300}]


def test_params(con):
    t = run_query(con, "SELECT count(*) AS n FROM labs WHERE month = ? AND site = ?", [2, "s1"])
    assert t.to_pylist() == [{"n": 25}]


def test_row_cap_truncates(con):
    t = run_query(con, "SELECT * FROM labs ORDER BY value", row_cap=7)
    assert t.num_rows == 7
    assert is_truncated(t)
    assert t.column("value").to_pylist() == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0]


def test_row_cap_exact_is_not_truncated(con):
    t = run_query(con, "SELECT * FROM labs", row_cap=300)
    assert t.num_rows == 300
    assert not is_truncated(t)
    t = run_query(con, "SELECT * FROM labs", row_cap=299)
    assert t.num_rows == 299
    assert is_truncated(t)


def test_timeout_raises_clear_error(con):
    slow = "SELECT sum(a.value * b.value * c.value) AS s FROM labs a, labs b, labs c, labs d"
    with pytest.raises(QueryTimeout, match="time limit of 0.3 s"):
        run_query(con, slow, timeout_s=0.3)
    # the connection is still usable afterwards
    assert run_query(con, "SELECT count(*) AS n FROM labs").to_pylist() == [{"n": 300}]


def test_query_error_is_clear(con):
    with pytest.raises(QueryError, match="no_such_column"):
        run_query(con, "SELECT no_such_column FROM labs")
    with pytest.raises(QueryError, match="nope"):
        run_query(con, "SELECT * FROM nope")
