"""Names beside codes and units in headers: "2345-7 Glucose [Mass/volume] in Serum or Plasma", "result_value (mg/dL)".

The names come from the data itself, never from a list kept here: one small query per explorer
(one snapshot), over the smallest view that has both the code and the name column (the lab
summary, a few hundred rows, rather than the results), run and audited like any other query.
"""

import re
import weakref
from dataclasses import dataclass, field

import pyarrow as pa

from letl.query.engine import QueryError
from letl.query.query_builder import quote_ident
from letl.query.scan import whole

CODE, NAME, UNIT = "test_code", "test_name", "unit"
# Columns holding a measured value (in the test's unit), and the aggregates of them that keep the unit.
VALUE_COLUMNS = ("result_value", "value", "reference_low", "reference_high", "mean", "min", "max")
_KEEP_UNIT = re.compile(r"(sum|avg|min|max|median|p\d+(_\d+)?)_(?P<column>.+)\Z")  # the builder's aliases


@dataclass(frozen=True)
class Labels:
    names: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # only codes reported in a single unit

    def label(self, code) -> str:
        name = self.names.get(code)
        return f"{code} {name}" if name else str(code)


_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def for_explorer(ex, user: str | None = None) -> Labels:
    """The labels of the explorer's snapshot, read once (a new version gives a new explorer)."""
    if ex not in _MEMO:
        _MEMO[ex] = _read(ex, user)
    return _MEMO[ex]


def _read(ex, user: str | None) -> Labels:
    candidates = []
    for name, view in ex.snapshot.views.items():
        try:
            schema = ex.schema(name)
        except QueryError:
            continue
        if CODE in schema and NAME in schema:
            candidates.append((sum(v.bytes for v in view.versions), name, UNIT in schema))
    if not candidates:
        return Labels()
    size, name, has_unit = min(candidates)
    if size > ex.settings.confirm_bytes:  # labels are a nicety: never a scan the viewer would be asked about
        return Labels()
    unit = f"CASE WHEN count(DISTINCT {quote_ident(UNIT)}) = 1 THEN any_value({quote_ident(UNIT)}) END" \
        if has_unit else "NULL"
    sql = (f"SELECT {quote_ident(CODE)}, any_value({quote_ident(NAME)}), {unit} FROM {quote_ident(name)} "
           f"WHERE {quote_ident(CODE)} IS NOT NULL GROUP BY 1")
    try:
        table = ex.run(sql, trusted=True, read=whole([ex.view(name)]), user=user).table
    except QueryError:
        return Labels()
    rows = list(zip(*(table.column(i).to_pylist() for i in range(3)), strict=True))
    return Labels({str(c): n for c, n, _ in rows if n}, {str(c): u for c, _, u in rows if u})


def value_column(name: str) -> bool:
    """A column in the test's unit: a value column, or an aggregate of one that keeps its unit."""
    kept = _KEEP_UNIT.match(name)
    return name in VALUE_COLUMNS or bool(kept and kept["column"] in VALUE_COLUMNS)


def result_unit(table: pa.Table, labels: Labels, hint: str | None = None) -> str | None:
    """The one unit of the rows shown: their unit column, else their one test code, else the query's."""
    names = table.schema.names
    if UNIT in names:
        units = {u for u in table.column(UNIT).to_pylist() if u is not None}
        return units.pop() if len(units) == 1 else None
    if CODE in names:
        codes = set(table.column(CODE).to_pylist())
        return labels.units.get(str(codes.pop())) if len(codes) == 1 else None
    return hint


def headers(table: pa.Table, labels: Labels, hint: str | None = None) -> dict[str, str]:
    """Column -> header with its unit, for the value columns, when the shown rows have one unit."""
    unit = result_unit(table, labels, hint)
    if not unit:
        return {}
    return {c: f"{c} ({unit})" for c in table.schema.names if value_column(c)}
