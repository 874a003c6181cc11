"""The explorer in a real browser: a Streamlit server on the sample lake, driven by headless Chromium.

Uses Debian's chromium at /usr/bin/chromium (never `playwright install`). Streamlit reruns the
script asynchronously after every interaction, so each step waits for what it should produce
(Playwright's auto-retrying `expect`), never for a fixed time.

Set LETL_SCREENSHOTS_DIR to keep the page screenshots (docs/screenshots holds the committed ones).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import pandas as pd
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from sql_editor import editor, leave_editor, run_sql, write_sql

from letl.lake.lake import Lake
from letl.query.query_builder import Filter, Query
from letl.query.share import to_url_params

ROOT = Path(__file__).resolve().parents[2]
STREAMLIT = Path(sys.executable).parent / "streamlit"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
STARTUP_S = 60
WAIT_MS = 60_000  # the machine is shared and slow; a rerun that takes this long is a failure anyway
VIEWPORT = {"width": 1400, "height": 1000}
PICK_TRIES, OPEN_MS = 4, 10_000  # a list that opens shows its options at once
RERUN_MS = 20_000  # a pick's rerun starts within this, on the shared machine

expect.set_options(timeout=WAIT_MS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, err: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{err.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"streamlit not healthy after {STARTUP_S} s:\n{err.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _launch(log_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    """`streamlit run explorer/app.py` with os.environ as it is when called: (process, url, stderr), not yet healthy."""
    port = _free_port()
    out, err = log_dir / f"streamlit-{port}.out", log_dir / f"streamlit-{port}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [str(STREAMLIT), "run", "explorer/app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false",
             # Not watching sources: an edit to explorer/ while tests run would reload the
             # modules under a cached Explorer and fail builder queries mid-test.
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=dict(os.environ), stdout=o, stderr=e, stdin=subprocess.DEVNULL,
        )
    return proc, f"http://127.0.0.1:{port}", err


@pytest.fixture(scope="module")
def explorer_url(module_lab_lake, tmp_path_factory):
    """One server on the lab lake for the tests that need no setting or fresh server of their own.

    The lake is only read, and each test's state is its own: a browser context is a session of its own.
    """
    log_dir = tmp_path_factory.mktemp("explorer")
    proc, url, err = _launch(log_dir)
    try:
        _wait_healthy(proc, url, err)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def start_explorer(module_lab_lake, tmp_path):
    """Start a server of the test's own on the lab lake (with os.environ as it is when called)."""
    started = []

    def start() -> str:
        proc, url, err = _launch(tmp_path)
        started.append(proc)
        _wait_healthy(proc, url, err)
        return url

    yield start
    for proc in started:
        _stop(proc)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each test gets its own context (cookies, storage, downloads)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `bash scripts/chromium.sh` installs Debian's chromium (root or sudo)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


# --------------------------------------------------------------------------- helpers

def settled(page: Page) -> None:
    """The app is connected, no script run is in flight and nothing on the page is stale."""
    app = page.locator('[data-testid="stApp"]')
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=WAIT_MS)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=WAIT_MS)
    expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=WAIT_MS)


def open_page(page: Page, url: str, title: str) -> None:
    """Open the app and go to a page through the sidebar, as a user does.

    (Deep links are covered by test_shared_link_opens_the_query_builder_and_runs.)
    """
    page.goto(url)
    expect(page.get_by_role("heading", name="Datasets", exact=True)).to_be_visible(timeout=WAIT_MS)
    go_to(page, title)


def go_to(page: Page, title: str) -> None:
    """Go to a page of the open app through the sidebar, in the same session."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=WAIT_MS)
    settled(page)


# The number of script runs the page has seen finish, counted from when first asked: a run ends
# when the app's script state leaves "running" (each change is a mutation record, none is missed).
FINISHED_RUNS = """() => {
  if (window.__letlRuns === undefined) {
    window.__letlRuns = 0;
    new MutationObserver(records => {
      window.__letlRuns += records.filter(r => r.oldValue === "running").length;
    }).observe(document.querySelector('[data-testid="stApp"]'),
               {attributes: true, attributeFilter: ["data-test-script-state"], attributeOldValue: true});
  }
  return window.__letlRuns;
}"""


def choose(page: Page, label: str, option: str, typed: bool = False) -> None:
    """Pick an option in a selectbox or multiselect (a combobox labelled `label`), and wait for the
    rerun the pick causes to finish and for the option to show as chosen.

    `typed` types the option first, for long lists that are drawn only in part. A pick made while
    an earlier rerun is still arriving can be closed or undone by it, so it is made again (a few
    times at most) until the widget shows it once the page has settled.
    """
    box = page.get_by_role("combobox", name=label, exact=True)
    target = page.get_by_role("option", name=option, exact=True)
    listed: list[str] = []
    for _ in range(PICK_TRIES):
        settled(page)
        if chosen(page, box, option):
            return
        runs = page.evaluate(FINISHED_RUNS)
        box.click()
        if typed:
            page.keyboard.type(option)
        try:
            target.click(timeout=OPEN_MS)
        except PlaywrightTimeoutError:
            listed = page.get_by_role("option").all_inner_texts()
            page.keyboard.press("Escape")
            continue
        page.keyboard.press("Escape")  # a multiselect keeps its list open
        try:
            page.wait_for_function("n => window.__letlRuns > n", arg=runs, timeout=RERUN_MS)
        except PlaywrightTimeoutError:
            pass  # no rerun (the option was already chosen): the next turn checks what the widget shows
    pytest.fail(f"{label!r}: {option!r} not chosen after {PICK_TRIES} picks; the list last held {listed}")


def chosen(page: Page, box, option: str) -> bool:
    """The selectbox or multiselect whose combobox is `box` shows `option` as chosen: a selectbox in
    its input, a multiselect as one of its tags (its hidden template copy aside)."""
    widget = page.locator('[data-testid="stMultiSelect"], [data-testid="stSelectbox"]').filter(has=box)
    if widget.get_attribute("data-testid") == "stSelectbox":
        return box.input_value() == option
    tags = widget.locator(".react-aria-ComboBox [data-tag]")
    return tags.filter(has_text=re.compile(rf"^{re.escape(option)}$")).count() > 0


def downloaded(page: Page, button: str, folder: Path) -> Path:
    """Click the download button named `button` once the page is settled (a click on a button that
    a rerun is redrawing can be lost); the saved file, under its suggested name in `folder`."""
    settled(page)
    with page.expect_download(timeout=WAIT_MS) as info:
        page.get_by_role("button", name=button, exact=True).click()
    saved = folder / info.value.suggested_filename
    info.value.save_as(saved)
    return saved


def main_block(page: Page):
    return page.locator('[data-testid="stMain"]')


def caption_rows(page: Page):
    return main_block(page).get_by_text(re.compile(r"^[\d,]+ row\(s\) in \d+ ms"))


def grid_cells(page: Page, nth: int = 0):
    """The cells of a dataframe: the grid is drawn on a canvas, but mirrored in a (hidden) accessible table."""
    return main_block(page).locator('[data-testid="stDataFrame"]').nth(nth).locator('[role="gridcell"]')


def snap(page: Page, tmp_path: Path, name: str) -> Path:
    """A screenshot of the whole page (Streamlit scrolls inside its main block, so grow the viewport)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring in the picture
    settled(page)
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height) + 40)})
    settled(page)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, f"{name}: not a real PNG screenshot"
    keep = os.environ.get("LETL_SCREENSHOTS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / path.name)
    return path


def latest_files(lake: Lake, key: str) -> list[tuple[str, Path]]:
    """(partition, file) for the latest version of every partition of a dataset, from the catalog."""
    versions = [v for v in lake.catalog.list_versions(asset_key=key, branch=lake.branch)
                if v.version_id in lake.catalog.latest_ids()]
    partitions = sorted({v.partition for v in versions})
    return [(p, lake.local_path(lake.latest(key, p))) for p in partitions]


def normalised(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """Every column as text, after parsing it as the type it has in `like`; rows sorted."""
    out = {}
    for col in like.columns:
        s = frame[col]
        if pd.api.types.is_datetime64_any_dtype(like[col]):
            s = pd.to_datetime(s).dt.strftime("%Y-%m-%d %H:%M:%S.%f")
        elif pd.api.types.is_numeric_dtype(like[col]):
            s = pd.to_numeric(s).map(lambda v: "" if pd.isna(v) else repr(float(v)))
        out[col] = s.map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    df = pd.DataFrame(out)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


# --------------------------------------------------------------------------- tests

def test_query_builder_filter_run_and_download_match_duckdb(explorer_url, page, module_lab_lake, tmp_path):
    open_page(page, explorer_url, "Query builder")
    code = main_block(page).locator('[data-testid="stCode"]')

    # 1. the dataset
    choose(page, "Dataset", "lab_results")
    expect(page.get_by_role("combobox", name="Dataset", exact=True)).to_have_value("lab_results")
    expect(code).to_contain_text('FROM "lab_results"')

    # 2. a filter: hospital_id is one of H002
    choose(page, "Filter on", "hospital_id")
    expect(page.get_by_role("combobox", name="hospital_id is one of", exact=True)).to_be_visible()
    choose(page, "hospital_id is one of", "H002")
    expect(code).to_contain_text('"hospital_id" IN (?)')
    expect(main_block(page).get_by_text("Parameters: $1 = 'H002'")).to_be_visible()
    # H002 has more rows than the default LIMIT 1000, and the builder orders only by group-by
    # columns: raise the limit so the whole result is returned and compares exactly.
    limit = page.get_by_label("Row limit", exact=True)
    limit.fill("5000")
    limit.press("Enter")
    expect(code).to_contain_text("LIMIT 5000")
    settled(page)

    # 3. run
    page.get_by_role("button", name="Run query", exact=True).click()

    # 4. the table
    expected = plain_duckdb_h002(module_lab_lake)
    n = len(expected)
    assert 1000 < n < 5000, n
    expect(caption_rows(page)).to_have_text(re.compile(rf"^{n:,} row\(s\) in \d+ ms"))
    expect(main_block(page).locator('[data-testid="stDataFrame"]')).to_be_visible()
    cells = grid_cells(page)
    expect(cells.filter(has_text=re.compile(r"^H002$")).first).to_be_attached()
    expect(cells.filter(has_text=re.compile(r"^H00[13]$"))).to_have_count(0)
    expect(page).to_have_url(re.compile(r"/query\?.*q="))  # the run is shareable as a link

    # 5. the CSV download is the result, row for row
    saved = downloaded(page, f"Download CSV ({n:,} rows)", tmp_path)
    assert saved.name == "letl_result.csv"
    got = pd.read_csv(saved, dtype=str, keep_default_na=False)
    assert sorted(got.columns) == sorted(expected.columns)
    assert len(got) == n
    assert set(got["hospital_id"]) == {"H002"}
    pd.testing.assert_frame_equal(normalised(got, expected), normalised(expected, expected))


def plain_duckdb_h002(lake: Lake) -> pd.DataFrame:
    """The same query, straight on the latest Parquet files with plain DuckDB (no explorer code)."""
    files = latest_files(lake, "labs/lab_results")
    assert len(files) == 3, files
    con = duckdb.connect()
    try:
        union = " UNION ALL ".join(
            "SELECT *, ? AS partition_key FROM read_parquet(?) WHERE hospital_id = 'H002'" for _ in files)
        params = [x for partition, path in files for x in (partition, str(path))]
        return con.execute(union, params).df()
    finally:
        con.close()


def test_shared_link_opens_the_query_builder_and_runs(start_explorer, page, module_lab_lake):
    """A shared /query?q=... link, opened as the first visit to a fresh server, fills the builder and runs."""
    explorer_url = start_explorer()
    query = Query(dataset="lab_results", filters=[Filter("hospital_id", "in", ["H002"])], limit=5000)
    page.goto(f"{explorer_url}/query?{urlencode(to_url_params(query))}")
    expect(page.get_by_role("heading", name="Query builder", exact=True)).to_be_visible()
    n = len(plain_duckdb_h002(module_lab_lake))
    expect(caption_rows(page)).to_have_text(re.compile(rf"^{n:,} row\(s\) in \d+ ms"))
    expect(main_block(page).locator('[data-testid="stCode"]')).to_contain_text('"hospital_id" IN (?)')
    expect(page.get_by_role("combobox", name="hospital_id is one of", exact=True)).to_be_visible()
    settled(page)
    # Streamlit must have found the page by its url_path, not fallen back with a "Page not found" dialog
    # (which also makes the whole page inert).
    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.get_by_role("combobox", name="Dataset", exact=True)).not_to_have_attribute("inert", "")


def test_password_form_guards_the_explorer(start_explorer, page, monkeypatch):
    monkeypatch.setenv("LETL_EXPLORER_PASSWORD", "open-sesame")
    monkeypatch.delenv("LETL_EXPLORER_STEWARD_PASSWORD", raising=False)
    url = start_explorer()
    page.goto(url)
    password = page.get_by_label("Password", exact=True)
    expect(password).to_be_visible()
    expect(page.get_by_role("heading", name="Datasets", exact=True)).to_have_count(0)
    expect(page.get_by_role("combobox", name="Dataset", exact=True)).to_have_count(0)

    password.fill("not-it")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(main_block(page).get_by_text("Wrong password.", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Datasets", exact=True)).to_have_count(0)

    password.fill("open-sesame")
    page.get_by_label("Your name (for the access log)", exact=True).fill("Ana Lyst")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Datasets", exact=True)).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_have_count(0)
    expect(page.get_by_text("Signed in as Ana Lyst (analyst)")).to_be_visible()

    # Hand-written SQL runs in a worker process, which must start for a signed-in user too.
    go_to(page, "SQL")
    write_sql(page, "SELECT hospital_id, count(*) AS results FROM lab_results GROUP BY ALL ORDER BY hospital_id")
    run_sql(page)
    expect(caption_rows(page)).to_have_text(re.compile(r"^3 row\(s\) in"))


@pytest.mark.parametrize("sql,reason", [
    ("COPY lab_results TO '/tmp/letl_stolen.csv'", re.compile(r"Refused: .*(one|SELECT)", re.I)),
    ("SELECT * FROM read_csv('/etc/passwd')", re.compile(r"Refused: .*(not allowed|read_csv)", re.I)),
])
def test_sql_page_refuses_unsafe_sql(explorer_url, page, sql, reason):
    open_page(page, explorer_url, "SQL")
    expect(editor(page).locator("#REACT_ACE_EDITOR .ace_content")).to_have_text(re.compile(r"^SELECT \* FROM \w+ LIMIT 100$"))
    write_sql(page, sql)
    leave_editor(page)  # the editor sends its text when it loses focus: checked, not run
    error = main_block(page).locator('[data-testid="stAlertContentError"]')
    expect(error).to_contain_text(reason)
    page.get_by_role("button", name="Run", exact=True).click()  # pressing Run anyway runs nothing (it is audited)
    expect(error).to_contain_text(reason)
    expect(caption_rows(page)).to_have_count(0)
    assert not Path("/tmp/letl_stolen.csv").exists()


def test_screenshots_of_the_main_pages(explorer_url, page, tmp_path):
    # Datasets, with a dataset picked
    open_page(page, explorer_url, "Datasets")
    choose(page, "Dataset", "labs/lab_results_summary")
    expect(page.get_by_role("heading", name="labs/lab_results_summary", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(r"dataset=labs%2Flab_results_summary"))
    versions = grid_cells(page, 1)
    expect(versions.filter(has_text=re.compile(r"^gros://"))).to_have_count(3)
    for cell in versions.filter(has_text=re.compile(r"^gros://")).all():
        expect(cell).to_have_text(re.compile(r"^gros://labs\.lab_results_summary/main:0\?partition=2024-0[123]-01$"))
    snap(page, tmp_path, "datasets")

    # Query builder, rows with their facets (each value with its row count)
    go_to(page, "Query builder")
    choose(page, "Dataset", "lab_results")
    settled(page)
    page.get_by_role("button", name="Run query", exact=True).click()
    expect(main_block(page).get_by_role("button", name=re.compile(r"^H001 · [\d,]+$"))).to_be_visible()
    snap(page, tmp_path, "facets")

    # Query builder with a grouped result (and its chart)
    go_to(page, "Query builder")
    choose(page, "Dataset", "lab_results")
    choose(page, "Group by", "hospital_id")
    choose(page, "Aggregates", "count(*)")
    expect(main_block(page).locator('[data-testid="stCode"]')).to_contain_text('GROUP BY "hospital_id"')
    settled(page)
    page.get_by_role("button", name="Run query", exact=True).click()
    expect(caption_rows(page)).to_have_text(re.compile(r"^3 row\(s\) in"))
    expect(grid_cells(page).filter(has_text=re.compile(r"^H00[123]$"))).to_have_count(3)
    expect(main_block(page).locator('[data-testid="stVegaLiteChart"] svg.marks')).to_be_visible()
    snap(page, tmp_path, "query_builder")

    # Predefined queries, after Run
    go_to(page, "Predefined queries")
    expect(page.get_by_role("combobox", name="Query", exact=True)).to_have_value("Abnormal-rate trend by hospital")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(caption_rows(page)).to_have_text(re.compile(r"^9 row\(s\) in"))  # 3 months x 3 hospitals
    expect(grid_cells(page).filter(has_text=re.compile(r"^H00[123]$"))).to_have_count(9)
    expect(main_block(page).locator('[data-testid="stVegaLiteChart"] svg.marks')).to_be_visible()
    snap(page, tmp_path, "predefined")

    # SQL, after Run
    go_to(page, "SQL")
    write_sql(page, "SELECT hospital_id, count(*) AS results\nFROM lab_results\nGROUP BY ALL\nORDER BY hospital_id")
    run_sql(page)
    expect(caption_rows(page)).to_have_text(re.compile(r"^3 row\(s\) in"))
    expect(page).to_have_url(re.compile(r"/sql\?sql="))
    cells = grid_cells(page)
    expect(cells.filter(has_text=re.compile(r"^H00[123]$"))).to_have_count(3)
    expect(cells.filter(has_text=re.compile(r"^1,?128$"))).to_have_count(3)
    snap(page, tmp_path, "sql")


def test_full_result_download_beyond_the_page_cap(start_explorer, page, module_lab_lake, monkeypatch, tmp_path):
    """A result cut at the page's row cap downloads in full: generated by DuckDB when clicked."""
    monkeypatch.setenv("LETL_EXPLORER_ROW_CAP", "50")
    url = start_explorer()
    open_page(page, url, "SQL")
    write_sql(page, "SELECT hospital_id, test_code, result_value FROM lab_results WHERE hospital_id = 'H002'")
    run_sql(page)
    expect(caption_rows(page)).to_contain_text("showing the first 50")
    saved = downloaded(page, "Download CSV (full result, up to 1,000,000 rows)", tmp_path)
    got = pd.read_csv(saved, dtype=str, keep_default_na=False)
    expected = plain_duckdb_h002(module_lab_lake)[["hospital_id", "test_code", "result_value"]]
    assert len(got) == len(expected) > 50
    pd.testing.assert_frame_equal(normalised(got, expected), normalised(expected, expected))
