"""Builder queries as URL query parameters, so a query can be shared as a link.

Only the structure is checked here; :func:`letl.query.query_builder.build` still validates every
identifier against the dataset's schema before anything runs.
"""

from __future__ import annotations

import datetime as _dt
import json
from decimal import Decimal
from typing import Any, Mapping

from letl.query.paging import Paging
from letl.query.query_builder import Aggregate, Filter, OrderBy, Query, _coerce_order, _is_number

URL_PARAM = "q"
URL_VERSION = 1


def _encode_value(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, _dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode_value(v) for v in value]}
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"cannot share a filter value of type {type(value).__name__}")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"invalid encoded value: {value!r}")
        (tag, raw), = value.items()
        if tag == "$datetime" and isinstance(raw, str):
            return _dt.datetime.fromisoformat(raw)
        if tag == "$date" and isinstance(raw, str):
            return _dt.date.fromisoformat(raw)
        if tag == "$decimal" and isinstance(raw, str):
            return Decimal(raw)
        if tag == "$tuple" and isinstance(raw, list):
            return tuple(_decode_value(v) for v in raw)
        raise ValueError(f"invalid encoded value: {value!r}")
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def to_url_params(query: Query) -> dict[str, str]:
    """Encode a query as URL query parameters (one JSON param) for a shareable link."""
    payload = {
        "v": URL_VERSION,
        "dataset": query.dataset,
        "columns": list(query.columns),
        "filters": [[f.column, f.op, _encode_value(f.value)] for f in query.filters],
        "group_by": list(query.group_by),
        "aggregates": [[a.func, a.column, a.alias, a.param] for a in query.aggregates],
        "order_by": [[o.column, bool(o.desc)] for o in map(_coerce_order, query.order_by)],
        "limit": query.limit,
    }
    return {URL_PARAM: json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)}


def _str_list(payload: dict, key: str) -> list[str]:
    value = payload.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"shared query: {key} must be a list of strings")
    return value


def from_url_params(params: Mapping[str, Any]) -> Query:
    """Decode :func:`to_url_params` output. Only the structure is checked here; :func:`build`
    still validates every identifier against the schema before anything runs."""
    raw = params.get(URL_PARAM)
    if isinstance(raw, list):  # e.g. st.query_params.to_dict() / parse_qs give lists
        raw = raw[0] if len(raw) == 1 else None
    if not isinstance(raw, str):
        raise ValueError(f"missing or invalid {URL_PARAM!r} parameter")
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"shared query is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("v") != URL_VERSION:
        raise ValueError("shared query has an unknown format version")
    dataset = payload.get("dataset")
    if not isinstance(dataset, str):
        raise ValueError("shared query: dataset must be a string")
    filters = []
    for item in payload.get("filters", []):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], str)):
            raise ValueError(f"shared query: invalid filter {item!r}")
        filters.append(Filter(item[0], item[1], _decode_value(item[2])))
    aggregates = []
    for item in payload.get("aggregates", []):
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
                and (item[1] is None or isinstance(item[1], str))
                and (item[2] is None or isinstance(item[2], str))
                and (item[3] is None or _is_number(item[3]))):
            raise ValueError(f"shared query: invalid aggregate {item!r}")
        aggregates.append(Aggregate(item[0], item[1], item[2], item[3]))
    order_by = []
    for item in payload.get("order_by", []):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], bool)):
            raise ValueError(f"shared query: invalid order_by {item!r}")
        order_by.append(OrderBy(item[0], item[1]))
    limit = payload.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise ValueError("shared query: limit must be an int")
    return Query(dataset=dataset, columns=_str_list(payload, "columns"), filters=filters,
                 group_by=_str_list(payload, "group_by"), aggregates=aggregates,
                 order_by=order_by, limit=limit)


def paging_to_url(paging: Paging) -> dict[str, str]:
    """The page of the result a link opens: ``sort`` and ``dir`` (when sorted), ``page`` and ``size``."""
    params = {"page": str(paging.page), "size": str(paging.size)}
    if paging.sort is not None:
        params.update(sort=paging.sort, dir="desc" if paging.desc else "asc")
    return params


def paging_from_url(params: Mapping[str, Any]) -> Paging:
    """Decode :func:`paging_to_url`; absent keys take their defaults. The sort column is checked
    against the result's columns, and the size against the row cap, where the query is built."""
    def one(key: str) -> str | None:
        value = params.get(key)
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    direction = one("dir") or "asc"
    if direction not in ("asc", "desc"):
        raise ValueError(f"dir must be asc or desc, got {direction!r}")
    numbers = {}
    for key in ("page", "size"):
        raw = one(key)
        if raw is None:
            continue
        if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()):
            raise ValueError(f"{key} must be a positive whole number, got {raw!r}")
        numbers[key] = int(raw)
    return Paging(sort=one("sort") or None, desc=direction == "desc", **numbers)
