"""The named-query library, the password roles and the catalog's in-place upgrade for query logging."""

import sqlite3
from datetime import date

import pytest

from explorer.auth import role_for_password
from letl.lake.catalog import Catalog
from letl.query import library


def write(tmp_path, text):
    path = tmp_path / "queries.yaml"
    path.write_text(text)
    return path


def test_builtin_queries_load_and_pass_the_guard():
    named = library.load([library.BUILTIN])
    assert {q.name for q in named} >= {"Abnormal-rate trend by hospital", "Test volume by month"}
    trend = next(q for q in named if q.name == "Abnormal-rate trend by hospital")
    assert trend.values() == {"from_month": date(2024, 1, 1), "to_month": date(2024, 12, 1)}
    assert trend.values({"to_month": "2024-06-01"})["to_month"] == date(2024, 6, 1)
    assert trend.chart["type"] == "line"


def test_user_file_extends_and_replaces_by_name(tmp_path, monkeypatch):
    path = write(tmp_path, """
- name: Test volume by month
  sql: SELECT 1 AS one
- name: Mine
  sql: SELECT * FROM lab_results WHERE hospital_id = $hospital
  params: [{name: hospital, type: choice, choices: [H001, H002], default: H001}]
""")
    monkeypatch.setenv("LETL_EXPLORER_QUERIES", str(path))
    named = {q.name: q for q in library.load()}
    assert named["Test volume by month"].sql == "SELECT 1 AS one"
    assert named["Mine"].values() == {"hospital": "H001"}
    with pytest.raises(ValueError, match="must be one of H001, H002"):
        named["Mine"].values({"hospital": "H009"})


@pytest.mark.parametrize("text, message", [
    ("- name: x\n  sql: DELETE FROM lab_results", "only SELECT"),
    ("- name: x\n  sql: SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("- name: x\n  sql: SELECT $a", "uses \\$a but declares no parameters"),
    ("- name: x\n  sql: SELECT 1\n  params: [{name: a, type: text}]", "declares a"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: blob}]", "unknown type 'blob'"),
    ("- sql: SELECT 1", "needs a name and sql"),
    ("name: x", "expected a list"),
    ("- just a string", "must be a mapping"),
    ("- name: x\n  sql: SELECT $a\n  params: [a]", "each parameter needs a name"),
    ("- name: x\n  sql: SELECT $a\n  params: [{type: text}]", "each parameter needs a name"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: date}]", "'a' needs an ISO date default"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: date, default: May}]", "ISO date default"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: number, default: ten}]", "not a number"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: number, default: true}]", "not a number"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: choice}]", "non-empty list of choices"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: choice, choices: []}]", "non-empty list"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: choice, choices: ab}]", "non-empty list"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a, type: choice, choices: [p, q], default: r}]",
     "default 'r', not one of its choices"),
    ("- name: x\n  sql: SELECT $a\n  params: [{name: a}, {name: a, type: number}]", "'a' is declared twice"),
])
def test_bad_library_entries_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        library.load([write(tmp_path, text)])


def test_parameter_defaults_that_the_page_can_draw(tmp_path):
    path = write(tmp_path, """
- name: x
  sql: SELECT $d, $n, $c
  params:
    - {name: d, type: date, default: 2024-03-01}
    - {name: n, type: number}
    - {name: c, type: choice, choices: [p, q]}
""")
    (named,) = library.load([path])
    assert named.values({"n": 2}) == {"d": date(2024, 3, 1), "n": 2.0, "c": "p"}


def link_query(tmp_path):
    (named,) = library.load([write(tmp_path, """
- name: x
  sql: SELECT $d, $n, $c, $t
  params:
    - {name: d, type: date, default: 2024-03-01}
    - {name: n, type: number, default: 2}
    - {name: c, type: choice, choices: [p, q]}
    - {name: t, type: text}
""")])
    return named


def test_link_parameters_round_trip(tmp_path):
    named = link_query(tmp_path)
    values = named.from_url({"d": "2024-05-01", "n": "12.5", "c": "q"})
    assert values == {"d": date(2024, 5, 1), "n": 12.5, "c": "q", "t": ""}
    assert named.to_url(values) == {"d": "2024-05-01", "n": "12.5", "c": "q", "t": ""}
    assert named.to_url(named.values()) == {"d": "2024-03-01", "n": "2", "c": "p", "t": ""}
    assert named.from_url(named.to_url(values)) == values


@pytest.mark.parametrize("given, message", [
    ({"d": "May"}, "^d must be a date as YYYY-MM-DD$"),
    ({"n": "ten"}, "^n must be a number$"),
    ({"n": "nan"}, "^n must be a number$"),
    ({"n": "inf"}, "^n must be a number$"),
    ({"c": "r"}, "^c must be one of p, q$"),
    ({"e": "1", "f": "2"}, "^'x' has no parameter e, f; it takes d, n, c, t$"),
])
def test_a_bad_link_parameter_is_named_without_its_value(tmp_path, given, message):
    with pytest.raises(ValueError, match=message):
        link_query(tmp_path).from_url(given)


def test_passwords_open_roles():
    assert role_for_password("s3cret", "s3cret", "boss") == "analyst"
    assert role_for_password("boss", "s3cret", "boss") == "steward"
    assert role_for_password("nope", "s3cret", "boss") is None
    assert role_for_password("", None, "boss") is None
    assert role_for_password("s3cret", None, None) is None


def old_catalog(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE access_log (id INTEGER PRIMARY KEY, version_id VARCHAR(64) NOT NULL, "
                "accessed_at DATETIME NOT NULL, kind VARCHAR(32) NOT NULL, run_id VARCHAR(64), "
                "step_key VARCHAR(255), user VARCHAR(128), host VARCHAR(255))")
    con.execute("INSERT INTO access_log (version_id, accessed_at, kind) VALUES ('v1', '2024-01-01', 'load')")
    con.commit()
    con.close()
    return path


def test_old_catalog_gains_query_columns_in_place(tmp_path):
    path = old_catalog(tmp_path)
    catalog = Catalog(f"sqlite:///{path}")
    catalog.record_query(["v1", "v1", "v2"], "abc", 7, user="ana", host="h")
    rows = sqlite3.connect(path).execute("SELECT version_id, kind, sql_hash, rows FROM access_log ORDER BY id").fetchall()
    assert rows == [("v1", "load", None, None), ("v1", "query", "abc", 7), ("v2", "query", "abc", 7)]
    Catalog(f"sqlite:///{path}")  # a second open finds nothing to add
