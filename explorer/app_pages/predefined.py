"""Predefined queries: the named library in letl/query/queries.yaml (and LETL_EXPLORER_QUERIES).

The page's state is its URL, `?query=<name>&<param>=<value>...`: it follows the widgets, and a link
opened fills them and runs the query (a big scan still asks first).
"""

from datetime import date

import streamlit as st

from explorer import state, ui
from letl.query import library
from letl.query.engine import QueryError
from letl.query.sql_guard import UnsafeSQL


def link() -> dict[str, str]:
    return st.query_params.to_dict()


def seed_from_url(named: dict[str, library.Named]) -> None:
    """A link fills the widgets once and asks for a run; afterwards the widgets own the state."""
    given = link()
    if "query" not in given or st.session_state.get("pq_link") == given:
        return
    st.session_state["pq_link"] = dict(given)
    name = given.pop("query")
    if name not in named:
        st.error(f"No predefined query is named {name!r}; pick one below.")
        return
    query = named[name]
    st.session_state["pq_name"] = name
    try:
        values = query.from_url(given)
    except ValueError as e:
        st.error(f"This link's parameters could not be used: {e}.")
        return
    for p in query.params:
        st.session_state[f"pq_{name}_{p.name}"] = values[p.name]
    st.session_state["pq_pending"] = (name, values)


def param_widget(p: library.Param, key: str):
    if p.type == "choice":
        return st.selectbox(p.name, p.choices, key=key)
    # A link's value is already in the session state: a default as well would draw Streamlit's warning.
    start = {}
    if key not in st.session_state:
        start["value"] = (date.fromisoformat(str(p.default)) if p.type == "date"
                          else float(p.default) if p.type == "number" else str(p.default))
    if p.type == "date":
        return st.date_input(p.name, key=key, **start)
    if p.type == "number":
        return st.number_input(p.name, key=key, **start)
    return st.text_input(p.name, key=key, **start)


viewer = st.session_state["viewer"]
st.title("Predefined queries")
try:
    named = {q.name: q for q in library.load()}
except (OSError, ValueError) as e:
    st.error(f"The query library could not be loaded: {e}")
    st.stop()
ex = state.explorer(viewer.role)
seed_from_url(named)
choice = st.selectbox("Query", list(named), key="pq_name")
query = named[choice]
st.write(query.description)
given = {p.name: param_widget(p, f"pq_{choice}_{p.name}") for p in query.params}
values = query.values(given)
shown = {"query": choice, **query.to_url(values)}
if link() != shown:
    st.query_params.from_dict(shown)
    st.session_state["pq_link"] = shown
st.code(query.sql, language="sql")
try:
    est = ex.estimate_sql(query.sql)
except UnsafeSQL:
    est = None
if est is None or not est.versions:
    st.info("The datasets this query reads are not visible to you, or hold no data yet.")
    st.stop()
confirmed = ui.scan_ok(ex, est, "pq", hand_written=True)
if st.button("Run", type="primary", key="pq_run"):
    st.session_state["pq_pending"] = (choice, values)
# A link's run, like a press of Run above the threshold, waits for the confirmation tick.
if confirmed and st.session_state.get("pq_pending") == (choice, values):
    del st.session_state["pq_pending"]
    try:
        st.session_state["pq_last"] = (choice, values, ex.run(query.sql, values, user=viewer.user))
    except (QueryError, UnsafeSQL) as e:
        st.error(str(e))
        st.stop()
last = st.session_state.get("pq_last")
if last and last[:2] == (choice, values):
    ui.show(last[2], query.chart)
    ui.downloads(ex, last[2], query.sql, values, trusted=False, read=est, user=viewer.user, key="pq")
