"""The SQL editor and the shareable SQL and predefined-query links, in a real browser (Chromium).

The network is cut beyond 127.0.0.1 for every page here: the editor (Ace, from the
streamlit-code-editor wheel) must render and highlight with nothing fetched from elsewhere.
"""

import re
from urllib.parse import urlencode, urlparse

import pytest
from playwright.sync_api import expect
from sql_editor import editor, leave_editor, run_sql, write_sql
from test_explorer_browser import (  # noqa: F401  (fixtures)
    VIEWPORT,
    WAIT_MS,
    browser,
    caption_rows,
    explorer_url,
    grid_cells,
    main_block,
    open_page,
    settled,
)

from tests.query.test_explorer_service import RESULTS, raw

REFUSED = "SELECT * FROM read_csv('/etc/passwd')"
TYPING_MS = 120
GROUPED = "SELECT hospital_id, count(*) AS n\nFROM lab_results\nGROUP BY ALL\nORDER BY hospital_id"


@pytest.fixture
def offline(browser):
    """A page whose every request beyond 127.0.0.1 is refused; (host, resource type) of each is kept."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    refused = []

    def only_local(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append((urlparse(route.request.url).hostname, route.request.resource_type))
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.refused = refused
    yield page
    context.close()


def shown_as(value) -> re.Pattern:
    """A cell showing the value: a whole number with or without thousands separators; a text, or a
    test code followed by the test's name (the explorer shows names beside codes)."""
    if isinstance(value, int):
        return re.compile("^" + ",?".join(re.escape(d) for d in str(value)) + r"(\.0+)?$")
    return re.compile(rf"^{re.escape(str(value))}( .+)?$")


def expect_cells(page, rows: list[tuple]) -> None:
    """The result grid holds exactly these rows' values (the grid is a canvas, mirrored in a hidden table)."""
    cells = grid_cells(page)
    expect(cells).to_have_count(len(rows) * len(rows[0]))
    for row in rows:
        for value in row:
            expect(cells.filter(has_text=shown_as(value)).first).to_be_attached()


def test_editor_highlights_completes_and_runs_offline(explorer_url, offline, module_lab_lake):
    page = offline
    open_page(page, explorer_url, "SQL")
    ace = editor(page)
    # Highlighted by Ace's SQL mode: keywords are tokens of their own.
    expect(ace.locator(".ace_keyword", has_text=re.compile(r"^SELECT$", re.I)).first).to_be_visible()
    expect(ace.locator("#REACT_ACE_EDITOR .ace_content")).to_contain_text(re.compile(r"SELECT \* FROM \w+ LIMIT 100"))

    # The views and their columns complete as one types.
    write_sql(page, "SELECT * FROM ")
    # Keys at a typist's pace: keys faster than Ace redraws its list can leave it showing an earlier prefix's words.
    page.keyboard.type("lab_res", delay=TYPING_MS)
    popup = ace.locator(".ace_autocomplete")
    expect(popup).to_be_visible()
    expect(popup).to_contain_text("lab_results_summary")
    page.keyboard.press("Escape")

    write_sql(page, GROUPED)
    run_sql(page)
    rows = raw(module_lab_lake, RESULTS, GROUPED, view="lab_results")
    assert len(rows) == 3, rows
    expect(caption_rows(page)).to_have_text(re.compile(r"^3 row\(s\) in \d+ ms"))
    expect_cells(page, rows)
    expect(page).to_have_url(re.compile(r"/sql\?sql=SELECT"))
    # What was refused is decoration: the editor's Source Code Pro stylesheet (Ace falls back to the
    # system's monospace font) and Streamlit's material icon for the tab. No code, no data.
    assert {kind for _, kind in page.refused} <= {"stylesheet", "font", "image", "other"}, page.refused
    assert {host for host, _ in page.refused} <= {"fonts.googleapis.com", "fonts.gstatic.com"}, page.refused


def test_run_button_runs_what_the_editor_holds(explorer_url, offline, module_lab_lake):
    page = offline
    open_page(page, explorer_url, "SQL")
    sql = "SELECT test_code, count(*) AS n FROM lab_results GROUP BY ALL ORDER BY test_code"
    write_sql(page, sql)
    leave_editor(page)
    settled(page)
    page.get_by_role("button", name="Run", exact=True).click()
    rows = raw(module_lab_lake, RESULTS, sql, view="lab_results")
    expect(caption_rows(page)).to_have_text(re.compile(rf"^{len(rows)} row\(s\) in"))
    expect_cells(page, rows)


def test_sql_link_runs_when_opened(explorer_url, offline, module_lab_lake):
    page = offline
    page.goto(f"{explorer_url}/sql?{urlencode({'sql': GROUPED})}")
    expect(page.get_by_role("heading", name="SQL", exact=True)).to_be_visible()
    expect(caption_rows(page)).to_have_text(re.compile(r"^3 row\(s\) in \d+ ms"))
    expect_cells(page, raw(module_lab_lake, RESULTS, GROUPED, view="lab_results"))
    expect(editor(page).locator("#REACT_ACE_EDITOR .ace_content")).to_contain_text("GROUP BY ALL")
    expect(page.get_by_text("Page not found")).to_have_count(0)


def test_refused_sql_link_shows_the_refusal(explorer_url, offline):
    page = offline
    page.goto(f"{explorer_url}/sql?{urlencode({'sql': REFUSED})}")
    error = main_block(page).locator('[data-testid="stAlertContentError"]')
    expect(error).to_contain_text(re.compile(r"^Refused: table function read_csv\(\)"))
    settled(page)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(caption_rows(page)).to_have_count(0)


def test_predefined_link_runs_the_query_with_its_parameters(explorer_url, offline, module_lab_lake):
    page = offline
    page.goto(f"{explorer_url}/predefined?{urlencode({'query': 'Test volume by month', 'test_code': '1742-6'})}")
    expect(page.get_by_role("heading", name="Predefined queries", exact=True)).to_be_visible()
    expect(page.get_by_role("combobox", name="Query", exact=True)).to_have_value("Test volume by month")
    expect(page.get_by_label("test_code", exact=True)).to_have_value("1742-6")
    rows = raw(module_lab_lake, RESULTS, "SELECT strftime(date_trunc('month', collected_at), '%Y-%m') AS month, "
               "count(*) FROM lab_results WHERE test_code = '1742-6' GROUP BY 1 ORDER BY 1", view="lab_results")
    assert len(rows) == 3, rows
    expect(caption_rows(page)).to_have_text(re.compile(r"^3 row\(s\) in \d+ ms"))
    expect_cells(page, rows)
    expect(main_block(page).locator('[data-testid="stVegaLiteChart"] svg.marks')).to_be_visible()
