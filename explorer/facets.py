"""The builder's facets: top values with counts for the current filters; a click filters on the value."""

import re
from typing import Callable

import streamlit as st

from letl.lake.config import format_size
from letl.query import facets as fc
from letl.query.engine import QueryError
from letl.query.labels import CODE, Labels
from letl.query.query_builder import Filter

_MARKDOWN = re.compile(r"([\\`*_\[\]<>$~|])")


def _plain(text: str) -> str:
    """A button label is Markdown: a value's brackets or stars must show as typed."""
    return _MARKDOWN.sub(r"\\\1", text)


def _narrow(column: str, value) -> None:
    """A click on a facet value: filter on it (as the filter widgets would), then run again."""
    cols = list(st.session_state.get("qb_filter_cols", []))
    if column not in cols:
        st.session_state["qb_filter_cols"] = [*cols, column]
    # The column's filter widget is a list of values, or a text box when it has too many to list.
    st.session_state[f"qb_f_{column}_in"] = [value]
    st.session_state[f"qb_f_{column}_text"] = value
    st.session_state["qb_autorun"] = True


def show(ex, view: str, schema: dict[str, str], filters: list[Filter], est, labels: Labels,
         run: Callable, user: str) -> None:
    """``run(sql, params)`` runs one facet's query (the builder's audited, per-session runner)."""
    offered = fc.text_columns(schema)
    if not offered:
        return
    if ex.needs_confirmation(est):
        st.caption(f"Facets are counted only for queries scanning at most {format_size(ex.settings.confirm_bytes)}: "
                   "narrow the query with a partition_key filter to see them.")
        return
    if "qb_facets" in st.session_state:  # chosen, or set by a link: only columns this dataset has
        st.session_state["qb_facets"] = [c for c in st.session_state["qb_facets"] if c in offered]
    picked = st.multiselect("Facets", offered, key="qb_facets", help="Top values with their row counts for the "
                            "current filters; click one to filter on it.",
                            **({} if "qb_facets" in st.session_state
                               else {"default": fc.default_columns(ex, view, user)}))
    st.query_params["facets"] = ",".join(picked)
    if not picked:
        return
    for column, box in zip(picked, st.columns(len(picked)), strict=True):
        box.markdown(f"**{column}**")
        sql, params = ex.build(fc.facet_query(view, column, filters))
        try:
            found = fc.facet(column, run(sql, params).table)
        except QueryError as e:
            box.caption(str(e))
            continue
        for i, (value, rows) in enumerate(found.values):
            shown = "(empty)" if value is None else labels.label(value) if column == CODE else str(value)
            box.button(f"{_plain(shown)} · {rows:,}", key=f"qb_facet_{column}_{i}", on_click=_narrow,
                       args=(column, value), disabled=value is None, width="stretch")
        if found.more:
            box.caption(f"the top {len(found.values)} values")
