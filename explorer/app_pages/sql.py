"""SQL: a read-only editor over the dataset views (one SELECT/WITH, time limit, row cap).

The editor is streamlit-code-editor (Ace, served from its wheel: nothing comes from the network).
It sends its text when it loses focus (checked and estimated, not run) and on Ctrl+Enter (a run,
like the Run button). A `?sql=` link runs its query when opened, under the same guards as Run.
"""

import streamlit as st
from code_editor import code_editor

from explorer import state, ui
from letl.query.engine import QueryError
from letl.query.sql_guard import UnsafeSQL, check_sql

EDITOR = "sql_editor"


def completions(schemas: dict[str, dict[str, str]]) -> list[dict]:
    """Ace completions: every view, then every column once, with its type and the views that have it."""
    found = [{"caption": name, "value": name, "meta": "view", "score": 1000} for name in schemas]
    where: dict[str, list[str]] = {}
    for name, schema in schemas.items():
        for column, kind in schema.items():
            where.setdefault(column, []).append(f"{name} {kind.lower()}")
    found += [{"caption": c, "value": c, "meta": ", ".join(v), "score": 900} for c, v in where.items()]
    return found


def requested(default: str) -> tuple[str, bool]:
    """The text to check, and whether it was asked to run: a new `?sql=` link, Ctrl+Enter, or Run."""
    link = st.query_params.get("sql")
    run = link is not None and link != st.session_state.get("sql_link")
    if run:
        st.session_state["sql_link"] = st.session_state["sql_text"] = link
    event = st.session_state.get(EDITOR) or {}
    # The editor's value stays the same across reruns: only a new event id is something new.
    if event.get("id") and event["id"] != st.session_state.get("sql_event"):
        st.session_state["sql_event"] = event["id"]
        st.session_state["sql_text"] = event["text"]
        run = run or event.get("type") == "submit"
    return st.session_state.get("sql_text", default), run


viewer = st.session_state["viewer"]
st.title("SQL")
ex = state.explorer(viewer.role)
if not ex.snapshot.views:
    st.info("No datasets visible to you yet.")
    st.stop()
schemas, broken = {}, dict(ex.snapshot.unavailable)
for name in sorted(ex.snapshot.views):
    try:
        schemas[name] = ex.schema(name)
    except QueryError as e:
        broken[name] = str(e)
first = sorted(ex.snapshot.views)[0]
sql, run = requested(f"SELECT * FROM {first} LIMIT 100")
editor, side = st.columns([3, 1])
with side:
    st.markdown("**Views you can query**")
    for name, schema in schemas.items():
        with st.expander(name):
            st.markdown("\n".join(f"- `{c}` {t.lower()}" for c, t in schema.items()))
    for name, why in broken.items():
        st.caption(f"`{name}` cannot be queried now: {why}")
with editor:
    code_editor(sql, lang="sql", key=EDITOR, height=[8, 24], response_mode="blur",
                completions=completions(schemas), options={"wrap": True},
                props={"enableBasicAutocompletion": True, "enableLiveAutocompletion": True})
    st.caption(f"One SELECT or WITH query; it stops after {ex.settings.timeout_s:g} s, and the page shows at most "
               f"{ex.settings.row_cap:,} rows (downloads up to {ex.settings.download_cap:,}). "
               "Ctrl+Enter runs it; view and column names complete as you type.")
    run = st.button("Run", type="primary", key="sql_run") or run
if run:
    st.session_state["sql_pending"] = sql
try:
    text = check_sql(sql)
    est = ex.estimate_sql(text)
except UnsafeSQL as e:
    st.error(f"Refused: {e}")
    # Checking what the editor sends is feedback, not a query; a run (button, Ctrl+Enter, link) is
    # an attempt, and is audited.
    if st.session_state.pop("sql_pending", None) == sql:
        st.session_state["sql_link"] = sql
        st.query_params.from_dict({"sql": sql})  # the page's whole state: nothing another page left behind
        try:
            ex.run(sql, user=viewer.user)
        except UnsafeSQL:
            pass
    st.stop()
# A big scan asks first, for a link as for Run: the query waits for the tick, then runs.
confirmed = ui.scan_ok(ex, est, "sql", hand_written=True)
if confirmed and st.session_state.get("sql_pending") == sql:
    del st.session_state["sql_pending"]
    st.session_state["sql_link"] = text
    st.query_params.from_dict({"sql": text})
    try:
        st.session_state["sql_last"] = (text, ex.run(text, user=viewer.user))
    except (QueryError, UnsafeSQL) as e:
        st.error(str(e))
        st.stop()
last = st.session_state.get("sql_last")
if last and last[0] == text:
    ui.show(last[1])
    ui.downloads(ex, last[1], text, None, trusted=False, read=est, user=viewer.user, key="sql")
