"""The named query library: ``explorer/queries.yaml`` plus the file in ``LETL_EXPLORER_QUERIES``."""

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from .sql_guard import UnsafeSQL, check_sql

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
        if self.type == "date":
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        if self.type == "number":
            return float(value)
        if self.type == "choice" and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}")
        return str(value)


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


def load(paths: list[Path] | None = None) -> list[Named]:
    if paths is None:
        extra = os.environ.get("LETL_EXPLORER_QUERIES")
        paths = [BUILTIN] + ([Path(extra)] if extra else [])
    found: dict[str, Named] = {}
    for path in paths:
        entries = yaml.safe_load(path.read_text()) or []
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of queries")
        for entry in entries:
            named = _parse(entry, path)
            found[named.name] = named  # a user's file may replace a built-in query by name
    return list(found.values())


def _parse(entry: dict, path: Path) -> Named:
    where = f"{path}: query {entry.get('name', '?')!r}"
    if not isinstance(entry, dict) or not entry.get("name") or not entry.get("sql"):
        raise ValueError(f"{where}: needs a name and sql")
    try:
        sql = check_sql(entry["sql"])
    except UnsafeSQL as e:
        raise ValueError(f"{where}: {e}") from None
    params = []
    for p in entry.get("params") or []:
        if p.get("type", "text") not in TYPES:
            raise ValueError(f"{where}: parameter {p.get('name')!r} has unknown type {p.get('type')!r}")
        params.append(Param(p["name"], p.get("type", "text"), p.get("default"), tuple(p.get("choices") or ())))
    used, declared = set(_PARAM.findall(sql)), {p.name for p in params}
    if used != declared:
        raise ValueError(f"{where}: SQL uses ${', $'.join(sorted(used)) or '-'} but declares "
                         f"{', '.join(sorted(declared)) or 'no parameters'}")
    return Named(entry["name"], sql, entry.get("description", ""), tuple(params), entry.get("chart") or {})
