"""Datasette-grade browsing in a real browser: facets, server-side sort and pages, exports, names and units.

One Streamlit server for the module (the lab lake is only read), one Chromium; each test is a
browser context of its own. Every expectation is checked against plain DuckDB over the files.
"""

import json
import re
from urllib.parse import urlencode

import pandas as pd
import pyarrow.parquet as pq
from playwright.sync_api import expect
from test_explorer_browser import (  # noqa: F401 (fixtures)
    VIEWPORT,
    WAIT_MS,
    browser,
    caption_rows,
    choose,
    downloaded,
    explorer_url,
    grid_cells,
    main_block,
    open_page,
    page,
    settled,
)

from letl.query.paging import Paging
from letl.query.query_builder import Query
from letl.query.share import paging_to_url, to_url_params
from tests.query.test_explorer_service import RESULTS, raw

COLUMNS = ["hospital_id", "result_value", "test_code"]


def run_builder(page) -> None:
    settled(page)
    page.get_by_role("button", name="Run query", exact=True).click()
    expect(caption_rows(page)).to_be_visible()
    settled(page)


def first_row(page) -> list[str]:
    cells = grid_cells(page)
    expect(cells.first).to_be_attached()
    return [cells.nth(i).inner_text().strip() for i in range(len(COLUMNS))]


def test_facets_show_counts_and_a_click_filters(explorer_url, page, module_lab_lake):
    open_page(page, explorer_url, "Query builder")
    choose(page, "Dataset", "lab_results")
    run_builder(page)
    counts = raw(module_lab_lake, RESULTS, "SELECT hospital_id, count(*) FROM t GROUP BY 1 ORDER BY 2 DESC, 1")
    for hospital, n in counts:
        expect(main_block(page).get_by_role("button", name=f"{hospital} · {n:,}", exact=True)).to_be_visible()
    hospital, n = counts[-1]
    page.get_by_role("button", name=f"{hospital} · {n:,}", exact=True).click()
    (direct,), = raw(module_lab_lake, RESULTS, f"SELECT count(*) FROM t WHERE hospital_id = '{hospital}'")
    expect(caption_rows(page)).to_have_text(re.compile(rf"^{direct:,} row\(s\) in \d+ ms"))
    expect(page.get_by_role("combobox", name="hospital_id is one of", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/query\?.*q=.*{hospital}"))


def test_sort_is_over_the_whole_dataset_and_page_two_opens_from_its_link(explorer_url, page, browser,
                                                                         module_lab_lake):
    expected = raw(module_lab_lake, RESULTS, "SELECT hospital_id, result_value, test_code FROM t "
                   "ORDER BY result_value DESC, hospital_id, test_code")
    open_page(page, explorer_url, "Query builder")
    choose(page, "Dataset", "lab_results")
    for column in COLUMNS:
        choose(page, "Columns (none = all)", column)
    choose(page, "Sort by", "result_value")
    choose(page, "Direction", "descending")
    run_builder(page)
    hospital, value, code = first_row(page)
    assert (hospital, float(value), code.split(" ")[0]) == expected[0]

    link = {**to_url_params(Query("lab_results", columns=COLUMNS)), **paging_to_url(Paging("result_value", True, 2, 50))}
    fresh = browser.new_context(viewport=VIEWPORT).new_page()
    try:
        fresh.set_default_timeout(WAIT_MS)
        fresh.goto(f"{explorer_url}/query?{urlencode(link)}")
        expect(caption_rows(fresh)).to_contain_text(f"rows 51-100, page 2 of {-(-len(expected) // 50)}")
        hospital, value, code = first_row(fresh)
        assert (hospital, float(value), code.split(" ")[0]) == expected[50]
    finally:
        fresh.context.close()


def test_json_and_parquet_downloads_equal_duckdb(explorer_url, page, module_lab_lake, tmp_path):
    open_page(page, explorer_url, "Query builder")
    choose(page, "Dataset", "lab_results")
    choose(page, "Filter on", "hospital_id")
    choose(page, "hospital_id is one of", "H002")
    run_builder(page)
    keys = ["patient_key", "test_code", "collected_at", "result_value"]
    expected = sorted(raw(module_lab_lake, RESULTS, f"SELECT {', '.join(keys)} FROM t WHERE hospital_id = 'H002'"), key=repr)
    n = len(expected)
    assert n > 100  # more than one page: the downloads are the full result, not the page
    for fmt in ("JSON", "Parquet"):
        saved = downloaded(page, f"Download {fmt} ({n:,} rows)", tmp_path)
        if fmt == "JSON":
            frame = pd.DataFrame(json.loads(saved.read_text()))
            frame["collected_at"] = pd.to_datetime(frame["collected_at"])
        else:
            frame = pq.read_table(saved).to_pandas()
        assert len(frame) == n and set(frame["hospital_id"]) == {"H002"}, fmt
        rows = [(p, c, t.to_pydatetime(), None if pd.isna(v) else v)
                for p, c, t, v in frame[keys].itertuples(index=False)]
        assert sorted(rows, key=repr) == expected, fmt


def test_test_names_beside_codes_and_the_unit_in_the_header(explorer_url, page, module_lab_lake):
    (name, unit), = raw(module_lab_lake, RESULTS,
                        "SELECT any_value(test_name), any_value(unit) FROM t WHERE test_code = '2345-7'")
    open_page(page, explorer_url, "Query builder")
    choose(page, "Dataset", "lab_results")
    choose(page, "Filter on", "test_code")
    choose(page, "test_code is one of", f"2345-7 {name}")
    choose(page, "Group by", "hospital_id")
    choose(page, "Aggregates", "avg(result_value)", typed=True)
    run_builder(page)
    # The grid is a canvas; its mirror table is hidden from the accessibility tree, so found by CSS.
    header = main_block(page).locator('[data-testid="stDataFrame"]').first.locator('[role="columnheader"]')
    expect(header.filter(has_text=f"avg_result_value ({unit})")).to_have_count(1)
    (rows,), = raw(module_lab_lake, RESULTS, "SELECT count(*) FROM t WHERE test_code = '2345-7'")
    expect(main_block(page).get_by_role("button", name=f"2345-7 {name} · {rows:,}", exact=True)).to_be_visible()
