"""SQL: a read-only editor over the dataset views (one SELECT/WITH, time limit, row cap)."""

import streamlit as st

from explorer import state, ui
from letl.query.engine import QueryError
from letl.query.sql_guard import UnsafeSQL, check_sql

viewer = st.session_state["viewer"]
st.title("SQL")
ex = state.explorer(viewer.role)
if not ex.snapshot.views:
    st.info("No datasets visible to you yet.")
    st.stop()
with st.expander("Views you can query", expanded=False):
    for name in sorted(ex.snapshot.views):
        try:
            st.markdown(f"- `{name}`: " + ", ".join(f"`{c}` {t.lower()}" for c, t in ex.schema(name).items()))
        except QueryError as e:
            st.markdown(f"- `{name}`: {e}")
    for name, why in ex.snapshot.unavailable.items():
        st.markdown(f"- `{name}` cannot be queried now: {why}")
st.caption(f"One SELECT or WITH query; it stops after {ex.settings.timeout_s:g} s, and the page shows at most "
           f"{ex.settings.row_cap:,} rows (the CSV download up to {ex.settings.download_cap:,}).")
first = sorted(ex.snapshot.views)[0]
sql = st.text_area("Query", value=st.query_params.get("sql", f"SELECT * FROM {first} LIMIT 100"), height=180,
                   key="sql_text")
try:
    text = check_sql(sql)
    est = ex.estimate_sql(text)
except UnsafeSQL as e:
    st.error(f"Refused: {e}")
    # Checking as one types is feedback, not a query; pressing Run is an attempt, and is audited.
    if st.button("Run", type="primary", key="sql_run"):
        try:
            ex.run(sql, user=viewer.user)
        except UnsafeSQL:
            pass
    st.stop()
confirmed = ui.scan_ok(ex, est, "sql", hand_written=True)
if st.button("Run", type="primary", key="sql_run") and confirmed:
    st.query_params["sql"] = text
    try:
        st.session_state["sql_last"] = (text, ex.run(text, user=viewer.user))
    except (QueryError, UnsafeSQL) as e:
        st.error(str(e))
        st.stop()
last = st.session_state.get("sql_last")
if last and last[0] == text:
    ui.show(last[1])
    ui.downloads(ex, last[1], text, None, trusted=False, read=est, user=viewer.user, key="sql")
