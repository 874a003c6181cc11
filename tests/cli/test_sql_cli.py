"""`letl sql`, run as a user runs it (a process of its own): one query or a shell over every dataset the
user may read, with the explorer's guard, limits and audit."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa

from letl.lake.catalog import access_log, query_log
from letl.lake.lake import current_user

DEID = {"dataset": {"access": "deidentified"}}
P1, P2 = "2024-03-01", "2024-04-01"


@pytest.fixture
def sql_lake(lake, monkeypatch):
    """labs/x (de-identified, two partitions) and labs/secret (declares nothing, so restricted)."""
    monkeypatch.delenv("LETL_STEWARDS", raising=False)
    x = [lake.write_version("labs/x", pd.DataFrame({"a": values}), partition=p, metadata=DEID)
         for p, values in ((P1, [1, 2]), (P2, [3]))]
    secret = lake.write_version("labs/secret", pd.DataFrame({"pid": ["p-1"]}))
    return {"lake": lake, "x": x, "secret": secret}


def letl_sql(*args: str, stdin: str = "", cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "letl.cli.main", "sql", *args], input=stdin, text=True,
                          capture_output=True, env=env or dict(os.environ), cwd=cwd, timeout=120)


def rows(lake, table) -> list[dict]:
    with lake.catalog.engine.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def one_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_one_query_prints_a_table_and_is_audited_like_the_explorer(sql_lake):
    out = letl_sql("SELECT a, partition_key FROM x ORDER BY a")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("a | partition_key\n"
                          "--+--------------\n"
                          "1 | 2024-03-01\n"
                          "2 | 2024-03-01\n"
                          "3 | 2024-04-01\n"
                          "(3 rows)\n")
    audited = rows(sql_lake["lake"], access_log)
    assert sorted(r["version_id"] for r in audited) == sorted(v.version_id for v in sql_lake["x"])
    assert {(r["kind"], r["rows"], r["user"]) for r in audited} == {("query", 3, current_user())}
    assert len({r["sql_hash"] for r in audited}) == 1 and len(audited[0]["sql_hash"]) == 64


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_hold_the_whole_result(sql_lake, fmt):
    out = letl_sql("-c", "SELECT a, partition_key FROM x WHERE a > 1 ORDER BY a", "--format", fmt)
    assert out.returncode == 0, out.stderr
    if fmt == "csv":
        assert out.stdout.splitlines() == ['"a","partition_key"', "2,2024-03-01", "3,2024-04-01"]
    else:
        assert json.loads(out.stdout) == [{"a": 2, "partition_key": P1}, {"a": 3, "partition_key": P2}]


def test_a_result_past_the_row_cap_is_cut_and_says_so(sql_lake, monkeypatch):
    monkeypatch.setenv("LETL_EXPLORER_ROW_CAP", "2")
    out = letl_sql("--format", "csv", "SELECT a FROM x ORDER BY a")
    assert out.returncode == 0 and out.stdout.splitlines() == ['"a"', "1", "2"]
    assert out.stderr == "(cut at the row cap of 2 rows; set LETL_EXPLORER_ROW_CAP for more)\n"


def test_a_refused_statement_exits_2_reads_nothing_and_is_logged_by_category(sql_lake):
    out = letl_sql("DROP TABLE x")
    assert out.returncode == 2 and out.stdout == ""
    assert one_error(out) == "error: only SELECT/WITH queries are allowed, not DROP"
    assert rows(sql_lake["lake"], access_log) == []
    [event] = rows(sql_lake["lake"], query_log)
    assert (event["kind"], event["detail"], event["user"]) == ("query-refused", "statement", current_user())


def test_a_failing_query_is_one_line_and_exit_1(sql_lake):
    out = letl_sql("SELECT nope FROM x")
    assert out.returncode == 1
    assert one_error(out).startswith('error: query failed: Binder Error: Referenced column "nope" not found')
    assert [e["kind"] for e in rows(sql_lake["lake"], query_log)] == ["query-failed"]


def test_a_restricted_dataset_is_invisible_to_a_non_steward(sql_lake, monkeypatch):
    hidden = letl_sql("SELECT * FROM secret")
    assert hidden.returncode == 2
    assert one_error(hidden) == "error: unknown dataset(s) secret; query one of: x"
    tables = letl_sql(stdin=".tables\n")
    assert tables.returncode == 0 and "secret" not in tables.stdout and "labs/x" in tables.stdout
    refused = letl_sql("--role", "steward", "SELECT 1")
    assert refused.returncode == 8 and "is not a steward" in one_error(refused)
    assert [(e["kind"], e["detail"]) for e in rows(sql_lake["lake"], query_log)][-1] == ("query-refused", "role")

    monkeypatch.setenv("LETL_STEWARDS", current_user())
    steward = letl_sql("--format", "json", "SELECT pid FROM secret")
    assert steward.returncode == 0, steward.stderr
    assert json.loads(steward.stdout) == [{"pid": "p-1"}]
    narrowed = letl_sql("--role", "analyst", "SELECT * FROM secret")
    assert narrowed.returncode == 2 and "unknown dataset(s) secret" in narrowed.stderr


def test_the_shell_reads_statements_from_stdin_and_goes_on_after_an_error(sql_lake):
    script = ".schema x\nSELECT count(*) AS n\n  FROM x;\nDELETE FROM x;\nSELECT max(a) AS top FROM x"
    out = letl_sql("--format", "csv", stdin=script)
    assert out.returncode == 2  # a statement failed: a script learns it, though the shell went on
    assert out.stdout.splitlines() == ["column        | type", "--------------+-------", "a             | BIGINT",
                                       "partition_key | DATE", "(2 rows)", '"n"', "3", '"top"', "3"]
    assert one_error(out) == "error: only SELECT/WITH queries are allowed, not DELETE"
    clean = letl_sql(stdin="SELECT 1 AS one;\n")
    assert clean.returncode == 0 and clean.stdout == "one\n---\n1\n(1 row)\n"
    quit_early = letl_sql(stdin=".quit\nSELECT 1 AS never;\n")
    assert quit_early.returncode == 0 and quit_early.stdout == ""


def test_without_a_lake_it_says_how_to_point_at_one_and_creates_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LETL_HOME", "LETL_CATALOG_URL")}
    out = letl_sql("SELECT 1", cwd=tmp_path, env=env)
    assert out.returncode == 4
    assert "set LETL_HOME to the lake's directory" in one_error(out)
    assert list(tmp_path.iterdir()) == []


def test_on_a_terminal_the_shell_prompts_and_ctrl_c_drops_only_the_statement(sql_lake, monkeypatch, capsys):
    import io

    from letl.cli import sql

    typed = iter(["SELECT a", KeyboardInterrupt, "SELECT max(a) AS top", "FROM x;", ".tables", ".quit", "never"])
    prompts = []

    def fake_input(prompt):
        prompts.append(prompt)
        step = next(typed)
        if step is KeyboardInterrupt:
            raise KeyboardInterrupt
        return step

    monkeypatch.setattr("builtins.input", fake_input)
    ex, out = sql.open_explorer(None), io.StringIO()
    try:
        assert sql.shell(ex, "table", io.StringIO(), out, interactive=True) == 0
    finally:
        ex.close()
    assert prompts == [sql.PROMPT, sql.MORE, sql.PROMPT, sql.MORE, sql.PROMPT, sql.PROMPT]
    text = out.getvalue()
    assert text.startswith("letl sql: 1 dataset as views (analyst); .help for help\n")
    assert "top\n---\n3\n(1 row)\n" in text and "labs/x" in text and "secret" not in text
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_result_with_repeated_column_names_is_refused_in_one_line_exit_2(sql_lake, fmt):
    """Printed, the second 'a' would overwrite the first (`2 | 2`, [{"a": 2}]): refused instead."""
    out = letl_sql("-c", "SELECT 1 AS a, 2 AS a", "--format", fmt)
    assert out.returncode == 2 and out.stdout == ""
    assert one_error(out) == "error: the result has 2 columns named 'a': give them distinct names (... AS a_2)"
    assert [(e["kind"], e["detail"]) for e in rows(sql_lake["lake"], query_log)] == [
        ("query-failed", "duplicate-columns")]


def test_a_semicolon_inside_a_string_or_a_comment_does_not_end_the_statement(sql_lake):
    """sqlite3 and the duckdb shell read on to the ';' that ends the statement, as DuckDB parses it."""
    script = ("SELECT 'a;\nb' AS x;\n"  # the string holds ';', a new line and b
              "SELECT 1 AS one -- note;\n;\n"  # the comment's ';' is not the end; the next line's is
              "SELECT \"odd;name\" FROM (SELECT 2 AS \"odd;name\");\n"
              ";\n"  # nothing to run, and no error
              "SELECT 3 AS three; -- done\n")
    out = letl_sql("--format", "json", stdin=script)
    assert out.returncode == 0 and out.stderr == ""
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        [{"x": "a;\nb"}], [{"one": 1}], [{"odd;name": 2}], [{"three": 3}]]


@pytest.mark.parametrize("text, ended, empty", [
    ("SELECT 1;", True, False), ("SELECT 'a;", False, False), ("SELECT 'it''s;'", False, False),
    ("SELECT 'it''s;' ;", True, False), ("SELECT 1 /* ; */", False, False), ("SELECT $$;$$;", True, False),
    ("SELECT 1 -- note;", False, False), ("SELECT 1; -- done", True, False), ("-- only;\n;", True, True),
    ("SELECT $tag$a;$$;$tag$", False, False), ("SELECT $tag$a;$tag$;", True, False), ("SELECT $1;", True, False),
    ("SELECT E'it\\'s;'", False, False), ("SELECT E'it\\'s;';", True, False), ("SELECT e'\\\\';", True, False),
    ("SELECT 'a\\';", True, False), ("SELECT 1 /* a /* b */ ; */", False, False), ("SELECT 1 /* a /* b */ */;", True, False),
])
def test_statement_end_reads_strings_names_and_comments(text, ended, empty):
    from letl.cli.statements import statement_end

    assert statement_end(text) == (ended, empty)
