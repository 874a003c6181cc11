"""Facets, as Datasette has them: the top values of a column, with counts, for the current filters.

Each facet is one ``GROUP BY column ... LIMIT n`` query built by the query builder and run by the
explorer like any builder query (locked connection, time limit, audit). Which columns are offered
by default is decided once per explorer from the data: string columns with few distinct values
(one ``approx_count_distinct`` query per view), preferring identifiers, codes and flags.
"""

import weakref
from dataclasses import dataclass

from letl.query.query_builder import Aggregate, Filter, OrderBy, Query, quote_ident
from letl.query.scan import whole

TOP = 10  # values shown per facet
DEFAULTS = 3  # facets shown before the viewer picks any
MAX_DISTINCT = 30  # a column with more values is no default facet
COUNT = "facet_count"
_PREFERRED = ("_id", "_code", "_flag", "kind", "status")

_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Facet:
    values: list[tuple[object, int]]  # (value, rows), most rows first
    more: bool  # the column has values beyond those shown


def text_columns(schema: dict[str, str]) -> list[str]:
    return [c for c, t in schema.items() if t.upper() == "VARCHAR"]


def default_columns(ex, view: str, user: str | None = None) -> list[str]:
    """Low-cardinality string columns of ``view``, identifiers, codes and flags first; [] when
    finding them would scan more than the confirm threshold (the viewer then picks facets)."""
    memo = _MEMO.setdefault(ex, {})
    if view not in memo:
        memo[view] = _defaults(ex, view, user)
    return memo[view]


def _defaults(ex, view: str, user: str | None) -> list[str]:
    columns = text_columns(ex.schema(view))
    read = whole([ex.view(view)])
    if not columns or ex.needs_confirmation(read):
        return []
    counts = ", ".join(f"approx_count_distinct({quote_ident(c)})" for c in columns)
    row = ex.run(f"SELECT {counts} FROM {quote_ident(view)}", trusted=True, read=read, user=user).table
    few = [c for i, c in enumerate(columns) if 2 <= row.column(i)[0].as_py() <= MAX_DISTINCT]
    preferred = [c for c in few if c.endswith(_PREFERRED)]
    return (preferred + [c for c in few if c not in preferred])[:DEFAULTS]


def facet_query(view: str, column: str, filters: list[Filter], top: int = TOP) -> Query:
    """The top ``top`` values of ``column`` under ``filters`` (one more, to tell whether there are others)."""
    return Query(view, filters=list(filters), group_by=[column], aggregates=[Aggregate("count", alias=COUNT)],
                 order_by=[OrderBy(COUNT, True), OrderBy(column)], limit=top + 1)


def facet(column: str, table, top: int = TOP) -> Facet:
    """A facet from the result of :func:`facet_query`."""
    values = list(zip(table.column(column).to_pylist(), table.column(COUNT).to_pylist(), strict=True))
    return Facet(values[:top], len(values) > top)
