"""Predefined queries: the named library in letl/query/queries.yaml (and LETL_EXPLORER_QUERIES)."""

from datetime import date

import streamlit as st

from explorer import state, ui
from letl.query import library
from letl.query.engine import QueryError
from letl.query.sql_guard import UnsafeSQL

viewer = st.session_state["viewer"]
st.title("Predefined queries")
try:
    named = {q.name: q for q in library.load()}
except (OSError, ValueError) as e:
    st.error(f"The query library could not be loaded: {e}")
    st.stop()
ex = state.explorer(viewer.role)
choice = st.selectbox("Query", list(named), key="pq_name")
query = named[choice]
st.write(query.description)
given = {}
for p in query.params:
    key = f"pq_{choice}_{p.name}"
    if p.type == "date":
        given[p.name] = st.date_input(p.name, value=date.fromisoformat(str(p.default)), key=key)
    elif p.type == "number":
        given[p.name] = st.number_input(p.name, value=float(p.default or 0), key=key)
    elif p.type == "choice":
        given[p.name] = st.selectbox(p.name, p.choices, key=key)
    else:
        given[p.name] = st.text_input(p.name, value=str(p.default or ""), key=key)
st.code(query.sql, language="sql")
try:
    est = ex.estimate_sql(query.sql)
except UnsafeSQL:
    est = None
if est is None or not est.versions:
    st.info("The datasets this query reads are not visible to you, or hold no data yet.")
    st.stop()
confirmed = ui.scan_ok(ex, est, "pq", hand_written=True)
values = query.values(given)
if st.button("Run", type="primary", key="pq_run") and confirmed:
    try:
        st.session_state["pq_last"] = (choice, values, ex.run(query.sql, values, user=viewer.user))
    except (QueryError, UnsafeSQL) as e:
        st.error(str(e))
        st.stop()
last = st.session_state.get("pq_last")
if last and last[:2] == (choice, values):
    ui.show(last[2], query.chart)
    ui.downloads(ex, last[2], query.sql, values, trusted=False, read=est, user=viewer.user, key="pq")
