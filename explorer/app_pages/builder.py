"""Query builder: pick a dataset, columns, typed filters, group-by and aggregates; see the SQL; run."""

from dataclasses import replace
from datetime import date

import streamlit as st

from explorer import facets, state, ui
from letl.lake.uri import PARTITION_COLUMN
from letl.query import paging
from letl.query.engine import QueryError
from letl.query.labels import CODE
from letl.query.paging import Paging
from letl.query.query_builder import Aggregate, Filter, Query
from letl.query.share import from_url_params, paging_from_url, paging_to_url, to_url_params

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "UBIGINT", "UINTEGER")
TEMPORAL = ("DATE", "TIMESTAMP")
NUMERIC_AGGS = (("sum", None), ("avg", None), ("min", None), ("max", None), ("median", None), ("quantile", 0.9))


def kind(duck_type: str) -> str:
    base = duck_type.split("(")[0].upper()
    return "number" if base in NUMERIC else "time" if base.startswith(TEMPORAL) else "text"


def agg_label(a: Aggregate) -> str:
    if a.func == "quantile":
        return f"p{round(a.param * 100)}({a.column})"
    return f"{a.func}({a.column or '*'})"


def agg_options(schema: dict) -> dict[str, Aggregate]:
    options = [Aggregate("count")]
    for col, typ in schema.items():
        options.append(Aggregate("count_distinct", col))
        if kind(typ) == "number":
            options += [Aggregate(f, col, param=p) for f, p in NUMERIC_AGGS]
        elif kind(typ) == "time":
            options += [Aggregate("min", col), Aggregate("max", col)]
    return {agg_label(a): a for a in options}


def seed_from_url(views: list[str]) -> None:
    """A shared link fills the widgets once; afterwards the widgets own the state."""
    link = (st.query_params.get("q"), st.query_params.get("tag", ""))
    if link[0] is None or st.session_state.get("qb_link") == link:
        return
    st.session_state["qb_link"] = link
    try:
        q = from_url_params(st.query_params)
    except ValueError as e:
        st.warning(f"The shared query in this link could not be read: {e}")
        return
    if q.dataset not in views:
        st.warning(f"The shared query names a dataset you cannot see: {q.dataset}")
        return
    st.session_state.update(qb_dataset=q.dataset, qb_columns=q.columns, qb_group=q.group_by,
                            qb_aggs=[agg_label(a) for a in q.aggregates], qb_limit=q.limit,
                            qb_filter_cols=[f.column for f in q.filters], qb_autorun=True,
                            qb_tag=st.query_params.get("tag", ""))
    try:
        order = paging_from_url(st.query_params)
    except ValueError as e:
        st.warning(f"The page named in this link could not be read: {e}")
        order = Paging()
    st.session_state.update(qb_sort=order.sort or "", qb_dir="desc" if order.desc else "asc", qb_size=order.size,
                            qb_page=order.page, qb_keep_page=True)
    if "facets" in st.query_params:
        st.session_state["qb_facets"] = [c for c in st.query_params["facets"].split(",") if c]
    for f in q.filters:
        key = f"qb_f_{f.column}"
        if f.op == "between" and all(isinstance(v, (int, float)) for v in f.value):
            st.session_state[f"{key}_lo"], st.session_state[f"{key}_hi"] = f.value
        elif f.op == "between":
            st.session_state[f"{key}_dates"] = tuple(date.fromisoformat(str(v)[:10]) for v in f.value)
        elif f.op in (">=", "<="):
            st.session_state[f"{key}_{'lo' if f.op == '>=' else 'hi'}"] = f.value
        elif f.op == "in":
            st.session_state[f"{key}_in"] = list(f.value)
        elif f.op == "contains":
            st.session_state[f"{key}_text"] = f.value


def _initial(key: str, value) -> dict:
    """A widget default only when the session (a shared link) has not set the widget already."""
    return {} if key in st.session_state else {"value": value}


def filter_widget(ex, view: str, col: str, typ: str) -> Filter | None:
    key = f"qb_f_{col}"
    if kind(typ) == "number":
        a, b = st.columns(2)
        low = a.number_input(f"{col} from", key=f"{key}_lo", **_initial(f"{key}_lo", None))
        high = b.number_input(f"{col} to", key=f"{key}_hi", **_initial(f"{key}_hi", None))
        if low is not None and high is not None:
            return Filter(col, "between", (low, high))
        if low is not None:
            return Filter(col, ">=", low)
        return Filter(col, "<=", high) if high is not None else None
    if kind(typ) == "time":
        picked = st.date_input(f"{col} between", key=f"{key}_dates", **_initial(f"{key}_dates", ()))
        if isinstance(picked, (list, tuple)) and len(picked) == 2:
            return Filter(col, "between", (picked[0], picked[1]))
        return None
    # Once per session and snapshot: the values are data too, and each read is audited.
    memo = st.session_state.setdefault("qb_distinct", {})
    memo_key = (ex.snapshot.key, view, col)
    if memo_key not in memo:
        memo[memo_key] = ex.distinct(view, col, user=viewer.user)
    values = memo[memo_key]
    if values is None:
        text = st.text_input(f"{col} contains", key=f"{key}_text")
        return Filter(col, "contains", text) if text else None
    if f"{key}_in" in st.session_state:
        st.session_state[f"{key}_in"] = [v for v in st.session_state[f"{key}_in"] if v in values]
    named = state.labels(ex).label if col == CODE else str
    picked = st.multiselect(f"{col} is one of", values, key=f"{key}_in", format_func=named)
    return Filter(col, "in", picked) if picked else None


def sort_widgets(query: Query, schema: dict, row_cap: int) -> Paging:
    """Sort column, direction and page size; a choice the result no longer offers falls back."""
    names = paging.outputs(query, schema)
    sizes = paging.sizes(row_cap)
    if st.session_state.get("qb_sort") not in ("", *names):
        st.session_state["qb_sort"] = ""
    if st.session_state.get("qb_size") not in sizes:
        st.session_state["qb_size"] = paging.DEFAULT_SIZE if paging.DEFAULT_SIZE in sizes else sizes[-1]
    left, mid, right = st.columns([2, 2, 1])
    sort = left.selectbox("Sort by", ["", *names], key="qb_sort", format_func=lambda c: c or "(default order)",
                          help="DuckDB sorts the whole result, then returns the page.")
    direction = mid.selectbox("Direction", ["asc", "desc"], key="qb_dir",
                              format_func={"asc": "ascending", "desc": "descending"}.get)
    size = right.selectbox("Rows per page", sizes, key="qb_size", format_func="{:,}".format)
    return Paging(sort or None, direction == "desc", 1, size)


def fetch(ex, sql: str, params: list, tag: str, est):
    """A builder query's result, run (and audited) once per session while the page shows it."""
    memo = st.session_state.setdefault("qb_results", {})
    key = (ex.snapshot.key, sql, tuple(params), tag)
    if key not in memo:
        memo[key] = ex.run(sql, params, trusted=True, read=est, user=viewer.user)
        while len(memo) > 16:  # a page, its count and its facets, for a few recent states
            memo.pop(next(iter(memo)))
    return memo[key]


def current_page(order: Paging, sql: str, total: int) -> Paging:
    """The page to show: the first after a new order or size, unless a shared link named one."""
    if st.session_state.get("qb_view") != (sql, order.size):
        st.session_state["qb_view"] = (sql, order.size)
        if not st.session_state.pop("qb_keep_page", False):
            st.session_state["qb_page"] = 1
    last = paging.pages(total, order.size)
    st.session_state["qb_page"] = min(max(int(st.session_state.get("qb_page") or 1), 1), last)
    return replace(order, page=st.session_state["qb_page"])


def _step(by: int) -> None:
    st.session_state["qb_page"] = int(st.session_state.get("qb_page") or 1) + by


def page_buttons(total: int, current: Paging) -> None:
    last = paging.pages(total, current.size)
    if last == 1:
        return
    prev, number, after = st.columns([1, 2, 1])
    prev.button("Previous page", key="qb_prev", on_click=_step, args=(-1,), disabled=current.page <= 1)
    number.number_input(f"Page (of {last:,})", min_value=1, max_value=last, step=1, key="qb_page")
    after.button("Next page", key="qb_next", on_click=_step, args=(1,), disabled=current.page >= last)


viewer = st.session_state["viewer"]
st.title("Query builder")
base = state.explorer(viewer.role)
views = list(base.snapshot.views)
for name, why in base.snapshot.unavailable.items():
    st.caption(f"`{name}` cannot be queried now: {why}")
if not views:
    st.info("No datasets visible to you yet.")
    st.stop()
seed_from_url(views)
view = st.selectbox("Dataset", views, key="qb_dataset")
tag = st.text_input("Version (gros:// tag; empty = latest)", key="qb_tag",
                    help="`latest`, a date YYYY-MM-DD (the last version on or before it) or an index (0, -1).")
dataset = base.view(view).dataset
try:
    ex = state.explorer(viewer.role, (dataset.key, tag), found=base.datasets) if tag else base
    schema = ex.schema(view)
except (LookupError, ValueError, PermissionError, QueryError) as e:
    st.error(f"{dataset.key}{f' at tag {tag!r}' if tag else ''}: {e}")
    st.stop()

columns = st.multiselect("Columns (none = all)", list(schema), key="qb_columns")
filter_cols = st.multiselect("Filter on", list(schema), key="qb_filter_cols",
                             help=f"A filter on {PARTITION_COLUMN} skips whole partitions.")
try:
    filters = [f for col in filter_cols if (f := filter_widget(ex, view, col, schema[col])) is not None]
except QueryError as e:
    st.error(str(e))
    st.stop()
left, mid, right = st.columns([2, 2, 1])
group_by = left.multiselect("Group by", list(schema), key="qb_group")
aggs = agg_options(schema)
picked_aggs = mid.multiselect("Aggregates", list(aggs), key="qb_aggs")
limit = right.number_input("Row limit", min_value=1, step=100, key="qb_limit", placeholder="all rows",
                           help="Empty: the whole result, a page at a time.", **_initial("qb_limit", None))

aggregates = [aggs[label] for label in picked_aggs]
base = Query(dataset=view, columns=[c for c in columns if not (group_by or aggregates) or c in group_by],
             filters=filters, group_by=group_by, aggregates=aggregates, limit=int(limit) if limit else None)
order = sort_widgets(base, schema, ex.settings.row_cap)
try:
    full = paging.ordered(base, schema, order)
    sql, params = ex.build(full)
    counted = paging.count_sql(ex.build(base)[0])
    est = ex.estimate(full)
except (ValueError, QueryError) as e:
    st.error(str(e))
    st.stop()
st.code(sql, language="sql")
if params:
    st.caption("Parameters: " + ", ".join(f"${i} = {v!r}" for i, v in enumerate(params, 1)))
confirmed = ui.scan_ok(ex, est, "qb")
identity = (counted, tuple(params), tag)  # the rows of the result, whatever their order and page
if st.button("Run query", type="primary", key="qb_run"):
    st.session_state.update(qb_active=identity, qb_results={}, qb_page=1)
elif st.session_state.pop("qb_autorun", False):
    st.session_state["qb_active"] = identity
if not confirmed or st.session_state.get("qb_active") != identity:
    st.stop()
try:
    total = fetch(ex, counted, params, tag, est).table.column(0)[0].as_py()
    current = current_page(order, sql, total)
    result = fetch(ex, ex.build(paging.page(full, current))[0], params, tag, est)
except QueryError as e:  # a timeout or a failure, with a readable reason
    st.error(str(e))
    st.stop()
shared = to_url_params(base)
st.query_params.from_dict({**shared, **({"tag": tag} if tag else {}), **paging_to_url(current)})
st.session_state["qb_link"] = (shared["q"], tag)
chart = None
if aggregates and 1 <= len(group_by) <= 2:
    time_col = next((c for c in group_by if kind(schema[c]) == "time"), None)
    other = next((c for c in group_by if c != time_col), None)
    y = aggregates[0].alias or result.table.schema.names[len(group_by)]
    chart = {"type": "line" if time_col else "bar", "x": time_col or group_by[0], "y": y,
             "color": other if time_col and len(group_by) == 2 else None}
one_test = next((f.value[0] for f in filters if f.column == CODE and f.op == "in" and len(f.value) == 1), None)
shown = result.table.num_rows
note = f"{total:,} row(s) in {{timing}}"
if shown < total:
    note += (f" · rows {current.offset + 1:,}-{current.offset + shown:,}, "
             f"page {current.page:,} of {paging.pages(total, current.size):,}")
labels = state.labels(ex)
facets.show(ex, view, schema, filters, est, labels, lambda q, p: fetch(ex, q, p, tag, est), viewer.user)
ui.show(result, chart, labels=labels, unit=labels.units.get(one_test), rows_note=note)
page_buttons(total, current)
ui.downloads(ex, result, sql, params, trusted=True, read=est, user=viewer.user, key="qb", total=total)
