"""The optional tiers file (LETL_TIERS_FILE, else $LETL_HOME/tiers.yaml), checked against its schema:
a typo or a missing field is refused with the file and the field named, never ignored."""

from pathlib import Path
from typing import Literal

from letl.lake.config import DEFAULT_TIERS
from letl.lake.errors import InvalidInput

TIER_NAMES = tuple(name for name, _rank, _quota in DEFAULT_TIERS)
FIELDS = "name, rank, location, quota, high_watermark, low_watermark"


def read_tiers_file(path: Path) -> dict[str, dict]:
    """Tier name -> the fields the file gives it (absent ones are left to the settings and defaults)."""
    import yaml
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    class Tier(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: Literal[TIER_NAMES]
        rank: int | None = None
        location: str | None = None
        quota: str | int | None = None
        high_watermark: float | None = Field(None, ge=0, le=1)
        low_watermark: float | None = Field(None, ge=0, le=1)

    class TiersFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tiers: list[Tier] = []

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or 'unreadable'}); "
                           f"write it as tiers: [{{{FIELDS}}}]") from None
    try:
        parsed = TiersFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the file"
        problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].lower()
        raise InvalidInput(f"{path}: {field}: {problem}; each tier takes {FIELDS} "
                           f"(name one of {', '.join(TIER_NAMES)})") from None
    names = [tier.name for tier in parsed.tiers]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInput(f"{path}: tiers: {', '.join(twice)} listed more than once; list each tier once")
    return {tier.name: tier.model_dump(exclude_none=True) for tier in parsed.tiers}
