"""Server-side sort and pages of a builder query: DuckDB sorts the whole result and returns one page.

A sort on a column with ties gets the remaining output columns as tie-breakers (for an aggregate,
the group-by columns, unique per row), so consecutive pages neither repeat nor skip a row. Without
a chosen sort, an aggregate is ordered by its group-by columns and a plain query keeps DuckDB's
scan order, which is deterministic (``preserve_insertion_order``).
"""

from dataclasses import dataclass, replace
from math import ceil
from typing import Mapping

from letl.query.query_builder import OrderBy, Query, default_alias, quote_ident

SIZES = (50, 100, 500, 1_000, 5_000, 10_000)
DEFAULT_SIZE = 100


@dataclass(frozen=True)
class Paging:
    sort: str | None = None  # an output column; None = the default order
    desc: bool = False
    page: int = 1  # 1-based
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        for name in ("page", "size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.sort is not None and (not isinstance(self.sort, str) or not self.sort):
            raise ValueError(f"sort must be a column name, got {self.sort!r}")

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


def sizes(row_cap: int) -> list[int]:
    """Page sizes a page may show: none above the row cap (the cap itself when it is below them all)."""
    return [s for s in SIZES if s <= row_cap] or [row_cap]


def outputs(query: Query, schema: Mapping[str, str]) -> list[str]:
    """The result's column names, in order (what a sort may name)."""
    if query.group_by or query.aggregates:
        return [*query.group_by, *(a.alias or default_alias(a) for a in query.aggregates)]
    return list(query.columns) or list(schema)


def ordered(query: Query, schema: Mapping[str, str], paging: Paging) -> Query:
    """The whole result in the page's order (what the downloads hold, and what the pages cut)."""
    if paging.sort is None:
        return replace(query, order_by=[OrderBy(c) for c in query.group_by], offset=None)
    names = outputs(query, schema)
    if paging.sort not in names:
        raise ValueError(f"cannot sort by {paging.sort!r}: not a column of this result")
    ties = query.group_by if query.group_by else names
    order = [OrderBy(paging.sort, paging.desc)] + [OrderBy(c) for c in ties if c != paging.sort]
    return replace(query, order_by=order, offset=None)


def page(query: Query, paging: Paging) -> Query:
    """One page of an :func:`ordered` query: at most ``size`` rows, never past the query's own limit."""
    size = paging.size if query.limit is None else max(min(paging.size, query.limit - paging.offset), 0)
    return replace(query, limit=size, offset=paging.offset)


def count_sql(sql: str) -> str:
    """The number of rows of a built query (built without an order: counting needs none)."""
    return f"SELECT count(*) AS {quote_ident('rows')} FROM (\n{sql}\n) AS {quote_ident('_letl_result')}"


def pages(total: int, size: int) -> int:
    return max(ceil(total / size), 1)
