"""The SQL and predefined-query pages through AppTest: their links run, and the editor's events drive them.

AppTest cannot draw a custom component: the SQL editor's events are given through its session
state, as the browser sends them (`tests/explorer/test_sql_browser.py` drives the real editor).
"""

import duckdb
import pytest
import sqlalchemy as sa
from test_explorer_app import app, fresh_caches, latest_files, ok, refusals  # noqa: F401  (fresh_caches: autouse)

from letl.lake.catalog import access_log
from letl.query.service import sql_hash

GROUPED = "SELECT hospital_id, count(*) AS n FROM lab_results GROUP BY 1 ORDER BY 1"
REFUSED = "SELECT * FROM read_csv('/etc/passwd')"


def opened(page: str, **query_params):
    """The page as a link opens it: only the link's parameters (the Datasets page, drawn first, adds its own)."""
    at = ok(app())
    at.query_params.clear()
    at.query_params.update(query_params)
    at.switch_page(page).run()
    return ok(at)


def sql_page(**query_params):
    return opened("app_pages/sql.py", **query_params)


def predefined_page(**query_params):
    return opened("app_pages/predefined.py", **query_params)


def edit(at, text: str, event: str, n: int):
    """What the editor sends: 'blur' when it loses focus, 'submit' on Ctrl+Enter (each event a new id)."""
    at.session_state["sql_editor"] = {"id": f"e{n}", "type": event, "lang": "sql", "text": text,
                                      "selected": "", "cursor": ""}
    return at


def expected_counts(lake) -> list[tuple[str, int]]:
    return duckdb.sql(f"SELECT hospital_id, count(*) FROM read_parquet({latest_files(lake, 'labs/lab_results')!r}) "
                      "GROUP BY 1 ORDER BY 1").fetchall()


def shown_counts(at) -> list[tuple[str, int]]:
    table = at.dataframe[0].value
    return [(h, int(n)) for h, n in zip(table["hospital_id"], table["n"], strict=True)]


def accesses(lake, sql: str) -> int:
    """Access-log rows of a query run: one per version it read."""
    with lake.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(access_log.c.kind == "query",
                                                             access_log.c.sql_hash == sql_hash(sql, None))).scalar_one()


def test_sql_link_runs_when_opened(lab_lake):
    at = sql_page(sql=GROUPED)
    assert shown_counts(at) == expected_counts(lab_lake)
    assert at.query_params["sql"] == GROUPED
    reads = accesses(lab_lake, GROUPED)
    assert reads == 3  # one access-log row per version read: three months
    at.run()  # a rerun of the same page is not a second opening of the link
    assert accesses(lab_lake, GROUPED) == reads and shown_counts(ok(at)) == expected_counts(lab_lake)


def test_refused_sql_link_shows_the_refusal_and_is_audited_once(lab_lake):
    at = sql_page(sql=REFUSED)
    assert len(at.error) == 1 and at.error[0].value.startswith("Refused: table function read_csv()")
    assert not at.dataframe
    assert refusals(lab_lake) == [("query-refused", sql_hash(REFUSED, None))]
    ok(at.run())
    assert refusals(lab_lake) == [("query-refused", sql_hash(REFUSED, None))]


def test_editor_checks_on_blur_and_runs_on_submit_or_run(lab_lake):
    at = sql_page()
    edit(at, REFUSED, "blur", 1).run()
    assert ok(at).error[0].value.startswith("Refused: table function read_csv()")
    assert refusals(lab_lake) == []  # what the editor sends on losing focus is checked, not run
    edit(at, REFUSED, "submit", 2).run()
    ok(at)
    assert refusals(lab_lake) == [("query-refused", sql_hash(REFUSED, None))]
    assert at.query_params["sql"] == REFUSED  # the link reproduces what the page showed

    edit(at, GROUPED, "blur", 3).run()
    assert not ok(at).error and not at.dataframe
    at.button(key="sql_run").click().run()
    assert shown_counts(ok(at)) == expected_counts(lab_lake)
    assert at.query_params["sql"] == GROUPED

    by_test = "SELECT test_code, count(*) AS n FROM lab_results GROUP BY 1 ORDER BY 1"
    edit(at, by_test, "submit", 4).run()  # Ctrl+Enter runs without the button
    assert list(ok(at).dataframe[0].value.columns) == ["test_code", "n"]
    assert at.query_params["sql"] == by_test


def test_a_big_scan_from_a_link_asks_before_running(lab_lake, monkeypatch):
    monkeypatch.setenv("LETL_EXPLORER_CONFIRM_BYTES", "1024")
    at = sql_page(sql=GROUPED)
    assert any("more than 1.0 KiB" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.dataframe and accesses(lab_lake, GROUPED) == 0
    at.checkbox(key="sql_confirm").check().run()
    assert shown_counts(ok(at)) == expected_counts(lab_lake)


@pytest.mark.parametrize("sql, name", [("SELECT unit, unit FROM lab_results", "unit"), ("SELECT 1 AS a, 2 AS a", "a")])
def test_a_link_whose_result_repeats_a_column_name_shows_one_line(lab_lake, sql, name):
    at = sql_page(sql=sql)  # ok(): no traceback from the labels or the table
    assert [e.value for e in at.error] == [
        f"the result has 2 columns named '{name}': give them distinct names (... AS {name}_2)"]
    assert not at.dataframe and not at.get("download_button")


VOLUME = "Test volume by month"


def volume(lake, test_code: str) -> list[int]:
    return [n for (n,) in duckdb.sql(
        f"SELECT count(*) FROM read_parquet({latest_files(lake, 'labs/lab_results')!r}) WHERE test_code = "
        f"'{test_code}' GROUP BY date_trunc('month', collected_at) ORDER BY date_trunc('month', collected_at)"
    ).fetchall()]


def test_predefined_link_fills_the_parameters_and_runs(module_lab_lake):
    at = predefined_page(query=VOLUME, test_code="1742-6")
    assert at.selectbox(key="pq_name").value == VOLUME
    assert at.text_input(key=f"pq_{VOLUME}_test_code").value == "1742-6"
    shown = [int(n) for n in at.dataframe[0].value["results"]]
    assert shown == volume(module_lab_lake, "1742-6") and len(shown) == 3
    assert (at.query_params["query"], at.query_params["test_code"]) == (VOLUME, "1742-6")


def test_predefined_url_follows_the_widgets(module_lab_lake):
    at = predefined_page()
    assert at.query_params["query"] == "Abnormal-rate trend by hospital"
    assert (at.query_params["from_month"], at.query_params["to_month"]) == ("2024-01-01", "2024-12-01")
    at.selectbox(key="pq_name").select(VOLUME).run()
    at.text_input(key=f"pq_{VOLUME}_test_code").input("2345-7").run()
    ok(at)
    assert (at.query_params["query"], at.query_params["test_code"]) == (VOLUME, "2345-7")
    assert "from_month" not in at.query_params
    assert not at.dataframe  # changing a parameter is not a run


@pytest.mark.parametrize("params, message", [
    ({"query": "Abnormal-rate trend by hospital", "from_month": "May"}, "from_month must be a date as YYYY-MM-DD"),
    ({"query": VOLUME, "hospital": "H001"}, "has no parameter hospital; it takes test_code"),
    ({"query": "No such query"}, "No predefined query is named 'No such query'"),
])
def test_a_bad_predefined_link_is_refused_in_one_line(module_lab_lake, params, message):
    at = predefined_page(**params)
    assert len(at.error) == 1 and message in at.error[0].value and "\n" not in at.error[0].value
    assert not at.dataframe


def test_number_parameter_from_a_link(tmp_path, module_lab_lake, monkeypatch):
    path = tmp_path / "queries.yaml"
    path.write_text("""
- name: Above
  sql: SELECT count(*) AS n FROM lab_results WHERE result_value > $floor
  params: [{name: floor, type: number, default: 0}]
""")
    monkeypatch.setenv("LETL_EXPLORER_QUERIES", str(path))
    at = predefined_page(query="Above", floor="100")
    assert at.number_input(key="pq_Above_floor").value == 100.0
    files = latest_files(module_lab_lake, "labs/lab_results")
    [(expected,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r}) WHERE result_value > 100").fetchall()
    assert expected > 0
    assert int(at.dataframe[0].value["n"][0]) == expected
    assert at.query_params["floor"] == "100"
    bad = predefined_page(query="Above", floor="ten")
    assert [e.value for e in bad.error] == ["This link's parameters could not be used: floor must be a number."]


def test_a_big_scan_from_a_predefined_link_asks_before_running(module_lab_lake, monkeypatch):
    monkeypatch.setenv("LETL_EXPLORER_CONFIRM_BYTES", "1024")
    at = predefined_page(query=VOLUME, test_code="1742-6")
    assert any("more than 1.0 KiB" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.dataframe
    at.checkbox(key="pq_confirm").check().run()
    assert [int(n) for n in ok(at).dataframe[0].value["results"]] == volume(module_lab_lake, "1742-6")
