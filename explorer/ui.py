"""Pieces every query page shares: the scan estimate, the result, the chart and the downloads."""

import tempfile
from pathlib import Path

import altair as alt
import pandas as pd
import pyarrow as pa
import streamlit as st

from explorer import state
from letl.lake.config import format_size
from letl.query.export import FORMATS, LABELS, table_bytes
from letl.query.labels import CODE, NAME, Labels, headers
from letl.query.scan import Estimate
from letl.query.service import Explorer, Result


def scan_ok(ex: Explorer, est: Estimate, key: str, hand_written: bool = False) -> bool:
    """Show what the query will read; above the threshold without a partition filter, ask first."""
    parts = f"{len(est.versions)} of {est.total} partition(s)" if est.total else "no files"
    if hand_written:
        note = " · at most: a partition_key filter in the SQL reads fewer files"
    else:
        note = "" if est.pruned else " · no partition filter prunes it"
    st.caption(f"Estimated scan: {parts}, {format_size(est.bytes)} (from the catalog){note}")
    if not ex.needs_confirmation(est):
        return True
    st.warning(f"This query scans {format_size(est.bytes)}, more than {format_size(ex.settings.confirm_bytes)}. "
               "Narrow it with a filter on partition_key, or confirm.")
    return st.checkbox("Scan everything anyway", key=f"{key}_confirm")


def show(result: Result, chart: dict | None = None, *, labels: Labels | None = None, unit: str | None = None,
         rows_note: str | None = None) -> None:
    """The result as a table (and a chart): test codes shown with their names, value headers with their unit.

    Display only: downloads keep the raw values and column names. ``unit`` is the query's own unit
    (a filter on one test) when the rows carry neither a unit nor a single code; ``rows_note`` replaces
    the row count when the table is one page of a larger result.
    """
    table = result.table
    labels = labels if labels is not None else state.labels()
    timing = f"{result.seconds * 1000:.0f} ms" + (" (cached)" if result.cached else "")
    note = rows_note.format(timing=timing) if rows_note else f"{table.num_rows:,} row(s) in {timing}"
    if result.truncated and not rows_note:
        note += f" · showing the first {table.num_rows:,}; the downloads have the full result up to their cap"
    st.caption(note)
    frame = table.to_pandas()
    if CODE in frame and NAME not in frame and labels.names:
        frame[CODE] = frame[CODE].map(lambda c: None if c is None else labels.label(c))
    titles = headers(table, labels, unit)
    if chart and chart.get("x") in frame and chart.get("y") in frame and len(frame):
        # A line's y-axis fits the data; a rate or a count may still be better read from 0.
        zero = chart.get("type") != "line" or st.checkbox("Start the y-axis at 0", key="chart_zero")
        st.altair_chart(_chart(table, frame, chart, titles, zero), width="stretch")
    st.dataframe(frame.rename(columns=titles), width="stretch", hide_index=True)


def _vega_type(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "quantitative"
    if pa.types.is_temporal(dtype):
        return "temporal"
    return "nominal"


def _chart(table: pa.Table, frame: pd.DataFrame, chart: dict, titles: dict[str, str], zero: bool) -> alt.Chart:
    """A bar or line chart with every encoding typed from the Arrow schema, never left to Altair to guess.

    DuckDB's sum() of an integer is a DECIMAL (HUGEINT and UHUGEINT arrive as DECIMAL too), which pandas
    holds as objects of decimal.Decimal: Altair would chart it as nominal, one category label per value.
    Numeric columns are converted to float and encoded as quantitative. A line chart's y-axis follows
    the data (a glucose trend around 98 mg/dL is not drawn from 0) unless ``zero`` asks for 0; a bar
    chart's starts at 0, as bar lengths must.
    """
    line = chart.get("type") == "line"
    names = [c for c in (chart["x"], chart["y"], chart.get("color")) if c and c in frame]
    names = list(dict.fromkeys(names))
    types = {c: _vega_type(table.schema.field(c).type) for c in names}
    data = frame[names].copy()
    for c in names:
        if types[c] == "quantitative":
            data[c] = pd.to_numeric(data[c].map(lambda v: None if v is None else float(v)), errors="coerce")
    x, y, color = chart["x"], chart["y"], chart.get("color")
    numeric_y = types[y] == "quantitative"
    encoding = {
        "x": alt.X(x, type=types[x], title=titles.get(x, x)),
        "y": alt.Y(y, type=types[y], scale=alt.Scale(zero=zero or not line) if numeric_y else alt.Undefined,
                   title=titles.get(y, y)),
        "tooltip": [alt.Tooltip(c, type=types[c]) for c in names],
    }
    if color and color in data:
        encoding["color"] = alt.Color(color, type="nominal")
    mark = alt.Chart(data).mark_line(point=True) if line else alt.Chart(data).mark_bar()
    return mark.encode(**encoding)


def downloads(ex: Explorer, result: Result, sql: str, params, *, trusted: bool, read: Estimate | None,
              user: str, key: str, total: int | None = None) -> None:
    """CSV, JSON and Parquet of the full result (up to the download cap), and the SQL.

    ``total`` is the result's row count when ``result`` holds one page of it (the builder's pages).
    A result the page holds whole is written from memory; otherwise the query runs again when a
    button is clicked, streamed by DuckDB into a file (and audited as a query).
    """
    whole = not result.truncated and total in (None, result.table.num_rows)
    cap = ex.settings.download_cap
    rows = (f"{result.table.num_rows:,} rows" if whole else f"{total:,} rows" if total is not None and total <= cap
            else f"full result, up to {cap:,} rows")
    *boxes, last = st.columns(len(FORMATS) + 1)
    for fmt, box in zip(FORMATS, boxes, strict=True):
        data = (lambda fmt=fmt: table_bytes(result.table, fmt)) if whole else \
            (lambda fmt=fmt: _exported(ex, sql, params, fmt, trusted=trusted, read=read, user=user))
        box.download_button(f"Download {LABELS[fmt]} ({rows})", data, file_name=f"letl_result.{fmt}",
                            mime=FORMATS[fmt], key=f"{key}_{fmt}", on_click="ignore")
    last.download_button("Download SQL", _sql_file(sql, params), file_name="letl_query.sql",
                         mime="application/sql", key=f"{key}_sql", on_click="ignore")


def _exported(ex: Explorer, sql: str, params, fmt: str, **run) -> bytes:
    # Streamed by DuckDB into a file; Streamlit only sees the finished file when clicked.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"result.{fmt}"
        ex.export(sql, params, path, **run)
        return path.read_bytes()


def _sql_file(sql: str, params) -> str:
    if not params:
        return sql + "\n"
    shown = params.items() if isinstance(params, dict) else enumerate(params, 1)
    values = "\n".join(f"--   {k}: {v!r}" for k, v in shown)
    return f"-- parameters:\n{values}\n{sql}\n"
