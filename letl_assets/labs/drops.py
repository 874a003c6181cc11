"""Finding hospital drops in the landing zone: LETL_LANDING/labs/{hospital_id}/{YYYY-MM}.csv[.gz]."""

import re
import time
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^(?P<month>\d{4}-(0[1-9]|1[0-2]))\.csv(\.gz)?$")
_HOSPITAL = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Drop:
    path: Path
    relpath: str
    hospital_id: str
    month: str  # YYYY-MM
    mtime_ns: int
    size: int

    @property
    def partition_key(self) -> str:
        return f"{self.month}-01"

    @property
    def signature(self) -> str:
        """Changes whenever the file's content may have changed."""
        return f"{self.relpath}:{self.mtime_ns}:{self.size}"


@dataclass(frozen=True)
class Ignored:
    """A file under labs/ that is not a valid drop, and why (shown in run output, sensor log, metadata)."""

    relpath: str
    reason: str


@dataclass(frozen=True)
class LandingScan:
    drops: list[Drop]
    ignored: list[Ignored]


def scan_landing(landing: Path, month: str | None = None, settle_seconds: float = 0) -> LandingScan:
    """Drops sorted by path, and every other file under labs/ with the reason it is not one.
    Files modified in the last settle_seconds may still be uploading."""
    root = Path(landing) / "labs"
    if not root.is_dir():
        return LandingScan([], [])
    newest_allowed = time.time() - settle_seconds
    drops, ignored = [], []
    for path in sorted(root.glob("*/*.csv*")):
        match = _NAME.match(path.name)
        if not match or not _HOSPITAL.match(path.parent.name) or not path.is_file():
            ignored.append(Ignored(path.relative_to(landing).as_posix(), "not named <hospital_id>/YYYY-MM.csv[.gz]"))
            continue
        if month and match["month"] != month:
            continue
        stat = path.stat()
        if settle_seconds and stat.st_mtime > newest_allowed:
            continue
        relpath = path.relative_to(landing).as_posix()
        drops.append(Drop(path, relpath, path.parent.name, match["month"], stat.st_mtime_ns, stat.st_size))
    return LandingScan(drops, ignored)


def find_drops(landing: Path, month: str | None = None, settle_seconds: float = 0) -> list[Drop]:
    return scan_landing(landing, month, settle_seconds).drops


def month_of_partition(partition_key: str) -> str:
    """'2024-03-01' -> '2024-03'."""
    if not re.fullmatch(r"\d{4}-\d{2}-01", partition_key):
        raise ValueError(f"not a monthly partition key: {partition_key!r}")
    return partition_key[:7]
