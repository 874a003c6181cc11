"""The named query library: ``letl/query/queries.yaml`` plus the file in ``LETL_EXPLORER_QUERIES``."""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from letl.lake.config import setting
from letl.query.sql_guard import UnsafeSQL, check_sql

BUILTIN = Path(__file__).with_name("queries.yaml")
TYPES = ("date", "text", "number", "choice")
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object = None
    choices: tuple = ()

    def coerce(self, value):
        """The typed value; a bad one is refused naming the parameter (never quoting the value)."""
        if self.type == "date":
            if isinstance(value, date):
                return value
            try:
                return date.fromisoformat(str(value))
            except ValueError:
                raise ValueError(f"{self.name} must be a date as YYYY-MM-DD") from None
        if self.type == "number":
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, bool) or not math.isfinite(number):
                raise ValueError(f"{self.name} must be a number") from None
            return number
        if self.type == "choice" and str(value) not in map(str, self.choices):
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}")
        if self.type == "choice":
            return next(c for c in self.choices if str(c) == str(value))
        return str(value)

    def to_url(self, value) -> str:
        if self.type == "number":  # 10 rather than 10.0; repr keeps every digit of the rest
            return str(int(value)) if float(value).is_integer() else repr(float(value))
        return value.isoformat() if isinstance(value, date) else str(value)


@dataclass(frozen=True)
class Named:
    name: str
    sql: str
    description: str = ""
    params: tuple[Param, ...] = ()
    chart: dict = field(default_factory=dict)

    def values(self, given: dict | None = None) -> dict:
        """Typed parameter values, defaults filled in; a clear error names the bad one."""
        given = given or {}
        return {p.name: p.coerce(given.get(p.name, p.default)) for p in self.params}

    def from_url(self, given: Mapping[str, str]) -> dict:
        """Typed values from a link's parameters (the rest from defaults); an unknown name is refused."""
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            takes = ", ".join(p.name for p in self.params) or "no parameters"
            raise ValueError(f"{self.name!r} has no parameter {', '.join(unknown)}; it takes {takes}")
        return self.values(dict(given))

    def to_url(self, values: dict) -> dict[str, str]:
        return {p.name: p.to_url(values[p.name]) for p in self.params}


def load(paths: list[Path] | None = None) -> list[Named]:
    if paths is None:
        extra = setting("LETL_EXPLORER_QUERIES")
        paths = [BUILTIN] + ([extra] if extra else [])
    found: dict[str, Named] = {}
    for path in paths:
        entries = yaml.safe_load(path.read_text()) or []
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of queries")
        for entry in entries:
            named = _parse(entry, path)
            found[named.name] = named  # a user's file may replace a built-in query by name
    return list(found.values())


def _parse(entry, path: Path) -> Named:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: each query must be a mapping with a name and sql, got {entry!r}")
    where = f"{path}: query {entry.get('name', '?')!r}"
    if not entry.get("name") or not entry.get("sql"):
        raise ValueError(f"{where}: needs a name and sql")
    try:
        sql = check_sql(entry["sql"])
    except UnsafeSQL as e:
        raise ValueError(f"{where}: {e}") from None
    params = [_param(p, where) for p in entry.get("params") or []]
    names = [p.name for p in params]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: parameter {', '.join(map(repr, repeated))} is declared twice")
    used, declared = set(_PARAM.findall(sql)), set(names)
    if used != declared:
        raise ValueError(f"{where}: SQL uses ${', $'.join(sorted(used)) or '-'} but declares "
                         f"{', '.join(sorted(declared)) or 'no parameters'}")
    return Named(entry["name"], sql, entry.get("description", ""), tuple(params), entry.get("chart") or {})


def _param(p, where: str) -> Param:
    """Check a parameter here, so a bad file fails at load and not when the page draws its widget."""
    if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
        raise ValueError(f"{where}: each parameter needs a name, got {p!r}")
    name, kind, default = p["name"], p.get("type", "text"), p.get("default")
    bad = f"{where}: parameter {name!r}"
    if kind not in TYPES:
        raise ValueError(f"{bad} has unknown type {kind!r}")
    choices = p.get("choices")
    if kind == "date":
        try:
            date.fromisoformat(str(default))
        except ValueError:
            raise ValueError(f"{bad} needs an ISO date default (YYYY-MM-DD), got {default!r}") from None
    elif kind == "number" and default is not None and type(default) not in (int, float):  # bool is no number
        raise ValueError(f"{bad} has a default that is not a number: {default!r}")
    elif kind == "choice":
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{bad} needs a non-empty list of choices")
        if default is None:
            default = choices[0]  # what the page's selectbox shows first
        elif default not in choices:
            raise ValueError(f"{bad} has default {default!r}, not one of its choices")
    elif default is None:  # what the page's widget starts at; a link without the parameter gets it too
        default = 0 if kind == "number" else ""
    return Param(name, kind, default, tuple(choices or ()))
