"""Every explorer page through streamlit.testing, starting from the real entrypoint."""

import json
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from letl.lake.catalog import query_log
from letl.query.query_builder import Aggregate, Filter, Query
from letl.query.service import sql_hash
from letl.query.share import to_url_params

APP = str(Path(__file__).resolve().parents[2] / "explorer" / "app.py")


@pytest.fixture(autouse=True)
def fresh_caches():
    """st.cache_resource is process-wide: each test's lake lives under its own LETL_HOME."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def app(**query_params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in query_params.items():
        at.query_params[key] = value
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown(at: AppTest, heading: str) -> str:
    return next(m.value for m in at.markdown if m.value.startswith(heading))


def refusals(lake) -> list[tuple[str, str]]:
    with lake.catalog.engine.connect() as conn:
        return [(r.kind, r.sql_hash) for r in conn.execute(query_log.select())]


def latest_files(lake, key):
    ids = lake.catalog.latest_ids()
    return [str(lake.local_path(v)) for v in lake.catalog.list_versions(asset_key=key) if v.version_id in ids]


def test_datasets_page_shows_catalog_lineage_and_versions(module_lab_lake):
    at = ok(app())
    assert at.title[0].value == "Datasets"
    overview = at.dataframe[0].value
    assert list(overview["dataset"]) == ["labs/lab_results", "labs/lab_results_summary"]  # rejects are restricted
    assert list(overview["access"]) == ["deidentified", "deidentified"]
    rows = sum(v.rows for v in module_lab_lake.catalog.list_versions(asset_key="labs/lab_results"))
    assert at.metric[0].value == f"{rows:,}" and at.metric[2].value == "3"
    assert "labs/lab_results_summary" in markdown(at, "**Feeds**")
    versions = at.dataframe[1].value
    assert len(versions) == 3 and versions["gros uri"].str.startswith("gros://labs.lab_results/main:0?partition=").all()
    at.selectbox(key="ds_pick").select("labs/lab_results_summary").run()
    assert "labs/lab_results" in markdown(ok(at), "**Built from**")
    assert at.query_params["dataset"] == "labs/lab_results_summary"


def test_password_gate_and_steward_role(lab_lake, monkeypatch):
    monkeypatch.setenv("LETL_EXPLORER_PASSWORD", "analyst-pw")
    monkeypatch.setenv("LETL_EXPLORER_STEWARD_PASSWORD", "steward-pw")
    at = ok(app())
    assert not at.dataframe and at.text_input[0].label == "Password"
    at.text_input[0].input("guess")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."] and not at.dataframe
    at.text_input[0].input("steward-pw")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Give your name: every query is logged with it."]
    at.text_input[0].input("steward-pw")
    at.text_input[1].input("Dana Steward")
    at.button[0].click().run()
    ok(at)
    assert "labs/lab_results_rejects" in list(at.dataframe[0].value["dataset"])
    assert any(c.value == "Signed in as **Dana Steward** (steward)" for c in at.sidebar.caption)


def test_query_builder_filters_runs_and_downloads(module_lab_lake):
    at = ok(app())
    at.switch_page("app_pages/builder.py").run()
    ok(at)
    at.selectbox(key="qb_dataset").select("lab_results").run()
    at.multiselect(key="qb_filter_cols").select("partition_key").select("hospital_id").run()
    at.date_input(key="qb_f_partition_key_dates").set_value((date(2024, 2, 1), date(2024, 2, 1))).run()
    at.multiselect(key="qb_f_hospital_id_in").select("H002").run()
    at.multiselect(key="qb_group").select("test_code").run()
    at.multiselect(key="qb_aggs").select("count(*)").select("avg(result_value)").run()
    ok(at)
    sql = at.code[0].value
    assert '"hospital_id" IN (?)' in sql and '"partition_key" BETWEEN ? AND ?' in sql and "H002" not in sql
    assert any("1 of 3 partition(s)" in c.value for c in at.caption)
    at.button(key="qb_run").click().run()
    ok(at)
    shown = at.dataframe[0].value
    files = latest_files(module_lab_lake, "labs/lab_results")
    expected = duckdb.sql(
        f"SELECT test_code, count(*) AS count_all, avg(result_value) AS avg_result_value FROM read_parquet({files!r}) "
        "WHERE hospital_id = 'H002' AND collected_at >= DATE '2024-02-01' AND collected_at < DATE '2024-03-01' "
        "GROUP BY ALL ORDER BY ALL"
    ).df()
    # Shown with each code's name from the data beside it (the downloads keep the bare codes).
    names = dict(duckdb.sql(f"SELECT test_code, any_value(test_name) FROM read_parquet({files!r}) GROUP BY 1").fetchall())
    expected["test_code"] = [f"{c} {names[c]}" for c in expected["test_code"]]
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected, check_dtype=False)
    csv = at.get("download_button")[0].proto
    assert csv.label.startswith("Download CSV")
    shared = json.loads(at.query_params["q"])
    assert shared["dataset"] == "lab_results" and ["hospital_id", "in", ["H002"]] in shared["filters"]
    assert at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart")  # a bar chart of the group-by


def test_shared_link_restores_and_runs_the_query(module_lab_lake):
    q = Query("lab_results_summary", filters=[Filter("hospital_id", "in", ["H001", "H003"])],
              group_by=["hospital_id"], aggregates=[], columns=["hospital_id"])
    at = app(**to_url_params(q))
    at.switch_page("app_pages/builder.py").run()
    ok(at)
    assert at.selectbox(key="qb_dataset").value == "lab_results_summary"
    assert at.multiselect(key="qb_f_hospital_id_in").value == ["H001", "H003"]
    assert list(at.dataframe[0].value["hospital_id"]) == ["H001", "H003"]


def test_predefined_query_runs_with_parameters(module_lab_lake):
    at = ok(app())
    at.switch_page("app_pages/predefined.py").run()
    ok(at)
    at.selectbox(key="pq_name").select("Test volume by month").run()
    at.button(key="pq_run").click().run()
    ok(at)
    table = at.dataframe[0].value
    ids = module_lab_lake.catalog.latest_ids()
    per_month = [v.rows for v in sorted(module_lab_lake.catalog.list_versions(asset_key="labs/lab_results"),
                                        key=lambda v: v.partition) if v.version_id in ids]
    assert [int(n) for n in table["results"]] == per_month
    assert len(table) == 3


def test_sql_page_refuses_unsafe_sql_and_runs_selects(lab_lake):
    at = ok(app())
    at.switch_page("app_pages/sql.py").run()
    ok(at)
    refused = "SELECT * FROM read_csv('/etc/passwd')"
    at.session_state["sql_editor"] = {"id": "1", "type": "blur", "text": refused}  # the editor, losing focus
    at.run()
    assert at.error and at.error[0].value.startswith("Refused: table function read_csv()")
    assert refusals(lab_lake) == []  # checking while typing is feedback, not a query attempt
    at.button(key="sql_run").click().run()
    ok(at)
    assert refusals(lab_lake) == [("query-refused", sql_hash(refused, None))]  # pressing Run is audited
    at.session_state["sql_editor"] = {"id": "2", "type": "blur",
                                      "text": "SELECT hospital_id, count(*) AS n FROM lab_results GROUP BY 1 ORDER BY 1"}
    at.run()
    at.button(key="sql_run").click().run()
    ok(at)
    table = at.dataframe[0].value
    assert list(table["hospital_id"]) == ["H001", "H002", "H003"]
    assert int(table["n"].sum()) == sum(v.rows for v in lab_lake.catalog.list_versions(asset_key="labs/lab_results"))
    data = at.get("download_button")[0]
    assert data.proto.label == "Download CSV (3 rows)"


@pytest.mark.parametrize("page", ["app_pages/builder.py", "app_pages/predefined.py", "app_pages/sql.py"])
def test_pages_say_so_when_nothing_is_visible(letl_env, page):
    at = ok(app())
    assert "No datasets visible" in at.info[0].value
    at.switch_page(page).run()
    ok(at)
    assert at.info and ("No datasets visible" in at.info[0].value or "not visible" in at.info[0].value)


def test_shared_link_with_number_and_date_filters(module_lab_lake):
    q = Query("lab_results", filters=[Filter("result_value", ">=", 100.0),
                                      Filter("partition_key", "between", (date(2024, 2, 1), date(2024, 3, 1)))],
              group_by=["hospital_id"], aggregates=[Aggregate("count")], columns=["hospital_id"])
    at = app(**to_url_params(q))
    at.switch_page("app_pages/builder.py").run()
    ok(at)
    assert at.number_input(key="qb_f_result_value_lo").value == 100.0
    assert at.number_input(key="qb_f_result_value_hi").value is None
    assert at.date_input(key="qb_f_partition_key_dates").value == (date(2024, 2, 1), date(2024, 3, 1))
    files = latest_files(module_lab_lake, "labs/lab_results")
    expected = duckdb.sql(
        f"SELECT hospital_id, count(*) FROM read_parquet({files!r}) WHERE result_value >= 100 "
        "AND collected_at >= DATE '2024-02-01' AND collected_at < DATE '2024-04-01' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    shown = at.dataframe[0].value
    assert list(zip(shown["hospital_id"], shown["count_all"], strict=False)) == expected


def test_time_travel_from_datasets_into_the_builder(lab_lake):
    summary = "labs/lab_results_summary"
    old = lab_lake.latest(summary, "2024-01-01")
    lab_lake.write_version(summary, lab_lake.read_table(old).slice(0, 1), partition="2024-01-01", metadata=old.metadata)
    at = ok(app())
    at.selectbox(key="ds_pick").select(summary).run()
    at.selectbox(key="ds_tag_pick").select("other…").run()
    at.text_input(key="ds_tag").input("0").run()
    ok(at)
    picked = at.dataframe[2].value
    assert old.version_id in list(picked["version id"]) and len(picked) == 3
    at.button(key="ds_open").click().run()
    ok(at)
    assert at.text_input(key="qb_tag").value == "0"
    at.multiselect(key="qb_group").select("partition_key").run()
    at.multiselect(key="qb_aggs").select("count(*)").run()
    at.button(key="qb_run").click().run()
    ok(at)
    counts = dict(zip(at.dataframe[0].value["partition_key"].astype(str), at.dataframe[0].value["count_all"], strict=False))
    assert counts["2024-01-01"] == old.rows  # the first version, not the one-row latest
    at.text_input(key="qb_tag").input("").run()
    at.button(key="qb_run").click().run()
    counts = dict(zip(at.dataframe[0].value["partition_key"].astype(str), at.dataframe[0].value["count_all"], strict=False))
    assert counts["2024-01-01"] == 1


def chart_specs(at: AppTest) -> list[dict]:
    charts = list(at.get("arrow_vega_lite_chart")) + list(at.get("vega_lite_chart"))
    return [json.loads(c.proto.spec) for c in charts]


def y_encoding(spec: dict) -> dict:
    layers = [spec, *spec.get("layer", [])]
    return next(layer["encoding"]["y"] for layer in layers if "y" in layer.get("encoding", {}))


@pytest.mark.filterwarnings("error:I don't know how to infer vegalite type")
def test_sum_chart_has_a_numeric_y_axis(module_lab_lake):
    """sum() of an integer column is a DECIMAL in DuckDB: charted as a quantity, not as category labels."""
    at = ok(app())
    at.switch_page("app_pages/predefined.py").run()
    at.selectbox(key="pq_name").select("Test volume by month").run()
    at.button(key="pq_run").click().run()
    ok(at)
    specs = chart_specs(at)
    assert len(specs) == 1
    y = y_encoding(specs[0])
    assert y["type"] == "quantitative", y
    assert specs[0]["mark"] == "bar" or specs[0]["mark"].get("type") == "bar"


@pytest.mark.filterwarnings("error:I don't know how to infer vegalite type")
def test_value_line_chart_y_axis_follows_the_data(module_lab_lake):
    """A trend of lab values (around 98 mg/dL) is not drawn from 0, where it would be a flat line."""
    at = ok(app())
    at.switch_page("app_pages/builder.py").run()
    at.selectbox(key="qb_dataset").select("lab_results").run()
    at.multiselect(key="qb_group").select("partition_key").run()
    at.multiselect(key="qb_aggs").select("sum(result_value)").run()
    at.button(key="qb_run").click().run()
    ok(at)
    specs = chart_specs(at)
    assert len(specs) == 1
    y = y_encoding(specs[0])
    assert y["type"] == "quantitative", y
    assert y.get("scale", {}).get("zero") is False, y
    at.checkbox(key="chart_zero").check().run()  # the zero-based option
    assert y_encoding(chart_specs(ok(at))[0])["scale"]["zero"] is True


def test_codes_have_their_names_and_one_test_has_its_unit_in_the_header(module_lab_lake):
    files = latest_files(module_lab_lake, "labs/lab_results")
    glucose, unit = duckdb.sql(f"SELECT any_value(test_name), any_value(unit) FROM read_parquet({files!r}) "
                               "WHERE test_code = '2345-7'").fetchall()[0]
    at = ok(app())
    at.switch_page("app_pages/builder.py").run()
    at.selectbox(key="qb_dataset").select("lab_results").run()
    at.multiselect(key="qb_filter_cols").select("test_code").run()
    picker = ok(at).multiselect(key="qb_f_test_code_in")
    assert f"2345-7 {glucose}" in picker.options  # the filter's choices name each code
    picker.select("2345-7").run()
    at.multiselect(key="qb_group").select("hospital_id").run()
    at.multiselect(key="qb_aggs").select("avg(result_value)").run()
    at.button(key="qb_run").click().run()
    shown = ok(at).dataframe[0].value
    assert list(shown.columns) == ["hospital_id", f"avg_result_value ({unit})"]
    assert unit == "mg/dL"
    csv = at.get("download_button")[0].proto
    assert csv.label.startswith("Download CSV")


def test_sort_and_pages_run_in_duckdb_and_live_in_the_url(module_lab_lake):
    files = latest_files(module_lab_lake, "labs/lab_results")
    plain = duckdb.sql(f"SELECT hospital_id, result_value, test_code FROM read_parquet({files!r}) "
                       "ORDER BY result_value DESC, hospital_id, test_code").fetchall()
    at = ok(app())
    at.switch_page("app_pages/builder.py").run()
    at.selectbox(key="qb_dataset").select("lab_results").run()
    at.multiselect(key="qb_columns").select("hospital_id").select("result_value").select("test_code").run()
    at.selectbox(key="qb_sort").select("result_value").run()
    at.selectbox(key="qb_dir").select("desc").run()
    at.selectbox(key="qb_size").select(50).run()
    at.button(key="qb_run").click().run()

    def page_rows(at) -> list[tuple]:
        shown = ok(at).dataframe[0].value
        return [(h, v, c.split(" ")[0]) for h, v, c in shown.itertuples(index=False)]

    assert page_rows(at) == plain[:50]  # the largest values of the whole dataset, not of a first page
    at.button(key="qb_next").click().run()
    assert page_rows(at) == plain[50:100]
    assert any(c.value.startswith(f"{len(plain):,} row(s) in") and "rows 51-100, page 2 of" in c.value
               for c in at.caption)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [f"Download {f} ({len(plain):,} rows)" for f in ("CSV", "JSON", "Parquet")] + ["Download SQL"]
    link = {k: at.query_params[k] for k in ("q", "sort", "dir", "page", "size")}
    assert {k: link[k] for k in ("sort", "dir", "page", "size")} == {
        "sort": "result_value", "dir": "desc", "page": "2", "size": "50"}

    st.cache_resource.clear()
    fresh = app(**link)
    fresh.switch_page("app_pages/builder.py").run()
    assert page_rows(fresh) == plain[50:100]  # the link reproduces the page


def test_facets_count_the_filtered_rows_and_a_click_filters(module_lab_lake):
    files = latest_files(module_lab_lake, "labs/lab_results")
    at = ok(app())
    at.switch_page("app_pages/builder.py").run()
    at.selectbox(key="qb_dataset").select("lab_results").run()
    at.button(key="qb_run").click().run()
    assert ok(at).multiselect(key="qb_facets").value == ["hospital_id", "test_code", "abnormal_flag"]
    by_hospital = duckdb.sql(f"SELECT hospital_id, count(*) FROM read_parquet({files!r}) "
                             "GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    facet = [b for b in at.button if b.key and b.key.startswith("qb_facet_hospital_id_")]
    assert [b.label for b in facet] == [f"{h} · {n:,}" for h, n in by_hospital]
    names = dict(duckdb.sql(f"SELECT test_code, any_value(test_name) FROM read_parquet({files!r}) GROUP BY 1").fetchall())
    codes = [b.label for b in at.button if b.key and b.key.startswith("qb_facet_test_code_")]
    assert codes and all(label.split(" · ")[0].replace("\\", "") == f"{c} {names[c]}"
                         for label, c in zip(codes, [label.split(" ")[0] for label in codes], strict=True))

    facet[-1].click().run()  # the smallest hospital
    hospital, rows = by_hospital[-1]
    assert ok(at).multiselect(key="qb_f_hospital_id_in").value == [hospital]
    assert any(c.value.startswith(f"{rows:,} row(s) in") for c in at.caption)
    flags = duckdb.sql(f"SELECT abnormal_flag, count(*) FROM read_parquet({files!r}) WHERE hospital_id = '{hospital}' "
                       "GROUP BY 1 ORDER BY 2 DESC, 1 NULLS LAST").fetchall()
    shown = [b.label for b in at.button if b.key and b.key.startswith("qb_facet_abnormal_flag_")]
    assert shown == [f"{'(empty)' if f is None else f} · {n:,}" for f, n in flags]  # counted under the new filter
    assert json.loads(at.query_params["q"])["filters"] == [["hospital_id", "in", [hospital]]]


def test_a_datasets_link_reopens_the_dataset_and_its_tag(module_lab_lake):
    summary = "labs/lab_results_summary"
    first = {v.version_id for v in module_lab_lake.catalog.list_versions(asset_key=summary)}
    at = ok(app(dataset=summary, version="0"))
    assert at.selectbox(key="ds_pick").value == summary
    assert at.selectbox(key="ds_tag_pick").value == "other…" and at.text_input(key="ds_tag").value == "0"
    assert set(at.dataframe[2].value["version id"]) == first
    at.selectbox(key="ds_tag_pick").select("latest").run()
    assert "version" not in ok(at).query_params and at.query_params["dataset"] == summary
    at.selectbox(key="ds_tag_pick").select("other…").run()
    at.text_input(key="ds_tag").input("-1").run()
    assert ok(at).query_params["version"] == "-1" and at.query_params["dataset"] == summary


def test_the_chosen_facets_are_in_the_link(module_lab_lake):
    at = ok(app(**to_url_params(Query("lab_results")), facets="sex,no_such_column"))
    at.switch_page("app_pages/builder.py").run()
    assert ok(at).multiselect(key="qb_facets").value == ["sex"]  # a column the dataset lacks is dropped
    assert at.query_params["facets"] == "sex"
    files = latest_files(module_lab_lake, "labs/lab_results")
    sexes = duckdb.sql(f"SELECT sex, count(*) FROM read_parquet({files!r}) GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    assert [b.label for b in at.button if b.key and b.key.startswith("qb_facet_sex_")] == [
        f"{s} · {n:,}" for s, n in sexes]
