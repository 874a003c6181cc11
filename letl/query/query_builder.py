"""Query builder for the explorer: structured query -> parameterized DuckDB SQL.

Security model:
- identifiers (dataset, columns, group-by, order-by, aggregate columns) are checked against the
  dataset's real schema (and, when given, the allowed dataset names) and only then double-quoted;
  anything containing a double quote, NUL or a control character is always rejected;
- aggregate functions and filter operators come from fixed whitelists and are rendered from
  constant SQL templates, never from user text;
- every user *value* goes into a ``?`` parameter (IN lists are expanded to ``?, ?, ?``);
- LIMIT and OFFSET are validated ``int``s rendered with ``int()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Mapping

OPS = ("=", "!=", "<", "<=", ">", ">=", "between", "in", "is_null", "not_null", "contains")
AGG_FUNCS = ("count", "count_distinct", "sum", "avg", "min", "max", "median", "quantile")

_COMPARISONS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_AGG_TEMPLATES = {
    "count": "count({col})",
    "count_distinct": "count(DISTINCT {col})",
    "sum": "sum({col})",
    "avg": "avg({col})",
    "min": "min({col})",
    "max": "max({col})",
    "median": "median({col})",
    "quantile": "quantile_cont({col}, ?)",
}
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BAD_CHARS_RE = re.compile(r'["\x00-\x1f\x7f]')


@dataclass
class Filter:
    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        # Normalise container values so that a URL round trip compares equal.
        if self.op == "between" and isinstance(self.value, (list, tuple)):
            self.value = tuple(self.value)
        elif self.op == "in" and isinstance(self.value, (list, tuple, set, frozenset)):
            self.value = list(self.value)


@dataclass
class Aggregate:
    func: str
    column: str | None = None  # None or "*" only for count
    alias: str | None = None
    param: float | None = None  # quantile fraction, e.g. 0.9


@dataclass
class OrderBy:
    column: str  # a schema column, or an aggregate alias when aggregating
    desc: bool = False


@dataclass
class Query:
    dataset: str
    columns: list[str] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)
    order_by: list[OrderBy] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None  # rows skipped before the limit: a page of the result

    def __post_init__(self) -> None:
        self.order_by = [_coerce_order(o) for o in self.order_by]


def _coerce_order(item: Any) -> OrderBy:
    if isinstance(item, OrderBy):
        return item
    if isinstance(item, str):
        return OrderBy(item)
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
        direction = item[1]
        if isinstance(direction, bool):
            return OrderBy(item[0], direction)
        if isinstance(direction, str) and direction.lower() in ("asc", "desc"):
            return OrderBy(item[0], direction.lower() == "desc")
    raise ValueError(f"invalid order_by entry: {item!r} (use a column name, (column, 'asc'|'desc') or OrderBy)")


def _check_name_chars(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid {kind} name: {name!r}")
    if _BAD_CHARS_RE.search(name):
        raise ValueError(f"invalid {kind} name {name!r}: quotes and control characters are not allowed")
    return name


def quote_ident(name: str) -> str:
    """Double-quote an identifier that has already been validated (no quotes inside)."""
    _check_name_chars("identifier", name)
    return f'"{name}"'


def _column(name: Any, schema: Mapping[str, str], what: str = "column") -> str:
    _check_name_chars(what, name)
    if name not in schema:
        raise ValueError(f"unknown {what} {name!r}: not in the dataset's schema")
    return quote_ident(name)


def default_alias(agg: Aggregate) -> str:
    col = agg.column if agg.column not in (None, "*") else "all"
    name = f"{agg.func}_{col}"
    if agg.func == "quantile" and agg.param is not None:
        name = f"p{round(float(agg.param) * 100, 6):g}_{col}".replace(".", "_")
    return name


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def build(query: Query, schema: Mapping[str, str],
          allowed_datasets: Iterable[str] | None = None) -> tuple[str, list]:
    """Return ``(sql, params)`` for ``query`` over a view whose columns are ``schema``.

    ``schema`` maps column name -> DuckDB type for ``query.dataset``; ``allowed_datasets``
    (when given) is the set of view names the viewer may query. Raises ``ValueError`` on any
    identifier, operator, function or limit that does not validate.
    """
    if not isinstance(query, Query):
        raise ValueError("build() expects a Query")
    for col in schema:
        _check_name_chars("schema column", col)
    _check_name_chars("dataset", query.dataset)
    if allowed_datasets is not None and query.dataset not in set(allowed_datasets):
        raise ValueError(f"unknown dataset {query.dataset!r}")
    params: list = []

    aggregating = bool(query.aggregates or query.group_by)
    select: list[str] = []
    output_names: set[str] = set()
    if aggregating:
        group_cols = [_column(c, schema, "group_by column") for c in query.group_by]
        for c in query.columns:
            _column(c, schema)
            if c not in query.group_by:
                raise ValueError(f"column {c!r} must be in group_by when aggregating")
        select.extend(group_cols)
        output_names.update(query.group_by)
        agg_params: list = []
        for agg in query.aggregates:
            expr, alias, extra = _aggregate(agg, schema)
            if alias in output_names:
                raise ValueError(f"duplicate output name {alias!r}")
            output_names.add(alias)
            select.append(f"{expr} AS {quote_ident(alias)}")
            agg_params.extend(extra)
        params.extend(agg_params)
    else:
        group_cols = []
        if query.columns:
            select = [_column(c, schema) for c in query.columns]
        else:
            select = ["*"]
        output_names.update(schema)

    sql = f"SELECT {', '.join(select)}\nFROM {quote_ident(query.dataset)}"

    where: list[str] = []
    for flt in query.filters:
        clause, values = _filter(flt, schema)
        where.append(clause)
        params.extend(values)
    if where:
        sql += "\nWHERE " + "\n  AND ".join(where)

    if group_cols:
        sql += "\nGROUP BY " + ", ".join(group_cols)

    order_parts = []
    for item in query.order_by:
        item = _coerce_order(item)
        _check_name_chars("order_by column", item.column)
        if aggregating:
            if item.column not in output_names:
                raise ValueError(f"order_by {item.column!r} must be a group_by column or an aggregate alias")
        elif item.column not in schema:
            raise ValueError(f"unknown order_by column {item.column!r}: not in the dataset's schema")
        if not isinstance(item.desc, bool):
            raise ValueError(f"order_by direction must be a bool, got {item.desc!r}")
        order_parts.append(f"{quote_ident(item.column)} {'DESC' if item.desc else 'ASC'}")
    if order_parts:
        sql += "\nORDER BY " + ", ".join(order_parts)

    if query.limit is not None:
        if not isinstance(query.limit, int) or isinstance(query.limit, bool) or query.limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {query.limit!r}")
        sql += f"\nLIMIT {int(query.limit)}"
    if query.offset:
        if not isinstance(query.offset, int) or isinstance(query.offset, bool) or query.offset < 0:
            raise ValueError(f"offset must be a non-negative int, got {query.offset!r}")
        sql += f"\nOFFSET {int(query.offset)}"
    return sql, params


def _aggregate(agg: Aggregate, schema: Mapping[str, str]) -> tuple[str, str, list]:
    if not isinstance(agg, Aggregate):
        raise ValueError(f"invalid aggregate: {agg!r}")
    if agg.func not in AGG_FUNCS:
        raise ValueError(f"unknown aggregate function {agg.func!r}; allowed: {', '.join(AGG_FUNCS)}")
    if agg.column in (None, "*"):
        if agg.func != "count":
            raise ValueError(f"aggregate {agg.func!r} needs a column")
        col = "*"
    else:
        col = _column(agg.column, schema, "aggregate column")
    extra: list = []
    if agg.func == "quantile":
        if not _is_number(agg.param) or not 0.0 <= float(agg.param) <= 1.0:
            raise ValueError(f"quantile needs a fraction between 0 and 1, got {agg.param!r}")
        extra.append(float(agg.param))
    elif agg.param is not None:
        raise ValueError(f"aggregate {agg.func!r} takes no parameter")
    alias = agg.alias if agg.alias is not None else default_alias(agg)
    _check_name_chars("alias", alias)
    if not _ALIAS_RE.match(alias):
        raise ValueError(f"invalid alias {alias!r}: use letters, digits and _ (not starting with a digit)")
    return _AGG_TEMPLATES[agg.func].format(col=col), alias, extra


def _filter(flt: Filter, schema: Mapping[str, str]) -> tuple[str, list]:
    if not isinstance(flt, Filter):
        raise ValueError(f"invalid filter: {flt!r}")
    if flt.op not in OPS:
        raise ValueError(f"unknown filter operator {flt.op!r}; allowed: {', '.join(OPS)}")
    col = _column(flt.column, schema, "filter column")
    op, value = flt.op, flt.value
    if op in _COMPARISONS:
        if value is None or isinstance(value, (list, tuple, dict, set)):
            raise ValueError(f"operator {op!r} needs a single non-null value (use is_null / in)")
        return f"{col} {_COMPARISONS[op]} ?", [value]
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2 or None in value:
            raise ValueError("between needs a (low, high) pair")
        return f"{col} BETWEEN ? AND ?", [value[0], value[1]]
    if op == "in":
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("in needs a non-empty list of values")
        return f"{col} IN ({', '.join('?' for _ in value)})", list(value)
    if op in ("is_null", "not_null"):
        if value is not None:
            raise ValueError(f"{op} takes no value")
        return f"{col} IS {'NOT ' if op == 'not_null' else ''}NULL", []
    # contains: the CAST lets a substring match numbers and dates by their text form
    if not isinstance(value, str) or not value:
        raise ValueError("contains needs a non-empty string")
    return f"contains(CAST({col} AS VARCHAR), ?)", [value]
