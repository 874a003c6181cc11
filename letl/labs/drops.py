"""Finding hospital drops in the landing zone: LETL_LANDING/labs/{hospital_id}/{YYYY-MM}.csv[.gz].

Nothing outside the landing zone is read: every path is resolved and must stay inside it, so a
symlink (file, hospital directory or labs/ itself) pointing elsewhere is refused. Every other
file under labs/, at any depth, is listed as ignored with its reason, so no rows go uncounted.
"""

import os
import re
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# Month with or without its leading zero, extension in any case: 2024-01.csv, 2024-1.CSV, 2024-01.csv.GZ.
_NAME = re.compile(r"^(?P<year>\d{4})-(?P<month>0?[1-9]|1[0-2])\.csv(?P<gz>\.gz)?$", re.IGNORECASE)
_CANONICAL = re.compile(r"^\d{4}-\d{2}\.csv(\.gz)?$")
_HOSPITAL = re.compile(r"^[A-Za-z0-9_-]+$")
NAMING = "not named <hospital_id>/YYYY-MM.csv or .csv.gz"
OUTSIDE = "symlink pointing outside the landing zone: refused, nothing is read from it"
# The first month the monthly partitions hold (assets/labs.py); the last is the current month in UTC.
FIRST_MONTH = "1900-01"


def current_month() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m")


def month_refusal(month: str) -> str | None:
    """Why a drop dated `month` (YYYY-MM) has no partition to go to, or None."""
    if month < FIRST_MONTH:
        return f"dated {month}, before {FIRST_MONTH}, the first month the lake holds: refused; check the file's name"
    if month > (now := current_month()):
        return (f"dated {month}, a month that has not begun (it is {now} in UTC): refused; "
                "check the file's name, or drop it again once the month has begun")
    return None


@dataclass(frozen=True)
class Drop:
    path: Path  # the resolved file, inside the landing zone
    relpath: str  # as it is named in the landing zone
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
    unsettled: list[Drop] = field(default_factory=list)  # drops modified within the settle time: still uploading


def _inside(real: str, zone: str) -> bool:
    return real == zone or real.startswith(zone + os.sep)


def _walk(directory: str, rel: str, zone: str, depth: int, found: list, ignored: list) -> None:
    """Regular files under labs/ that resolve inside the zone, as (relpath, real path, stat, depth, is a
    symlink); every other entry goes to ignored."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as error:
        ignored.append(Ignored(rel, f"directory cannot be listed ({error.strerror})"))
        return
    for entry in entries:
        relpath = f"{rel}/{entry.name}"
        real = os.path.realpath(entry.path)
        if not _inside(real, zone):
            ignored.append(Ignored(relpath, OUTSIDE))
            continue
        try:
            st = os.stat(real)
        except OSError:
            ignored.append(Ignored(relpath, "dangling symlink or unreadable entry"))
            continue
        if stat.S_ISDIR(st.st_mode):
            if entry.is_symlink():
                # Its files are listed where they really are; following it could count them twice.
                ignored.append(Ignored(relpath, "directory symlink: not followed"))
            else:
                _walk(entry.path, relpath, zone, depth + 1, found, ignored)
        elif not stat.S_ISREG(st.st_mode):
            ignored.append(Ignored(relpath, "not a regular file"))
        else:
            found.append((relpath, real, st, depth, entry.is_symlink()))


def _why_not(relpath: str, depth: int) -> str | None:
    parts = relpath.split("/")  # labs/<hospital>/<file>
    if depth == 0:
        return "not in a hospital directory: drops go in labs/<hospital_id>/"
    if depth > 1:
        return "in a nested folder: drops go directly in labs/<hospital_id>/"
    if not _HOSPITAL.match(parts[1]):
        return "hospital directory name is not a hospital id (letters, digits, '_' and '-')"
    if not _NAME.match(parts[2]):
        return NAMING
    return None


def scan_landing(landing: Path, month: str | None = None, settle_seconds: float = 0) -> LandingScan:
    """Drops sorted by path, and every other file under labs/ with the reason it is not one.

    Files modified in the last settle_seconds may still be uploading: they are neither drops
    nor ignored yet, but unsettled. Two names for one hospital's month (2024-01.csv and 2024-1.csv,
    or .csv and .csv.gz, or a link to a drop) would count its rows twice: the real file and the canonical
    name win, the other is refused.
    With a month, drops of other months are left out; files that are no drop are always listed.
    """
    landing = Path(landing).absolute()
    zone = os.path.realpath(landing)
    labs = landing / "labs"
    if not labs.exists() and not labs.is_symlink():
        return LandingScan([], [])
    if not _inside(os.path.realpath(labs), zone) or not os.path.isdir(os.path.realpath(labs)):
        return LandingScan([], [Ignored("labs", OUTSIDE if labs.is_symlink() else "labs is not a directory")])
    found, ignored = [], []
    _walk(str(labs), "labs", zone, 0, found, ignored)
    newest_allowed = time.time() - settle_seconds
    claimed: dict[tuple, str] = {}  # (hospital, month) or the file's identity -> relpath of the drop
    drops, unsettled = [], []
    # Real files before links to them, canonical names before other names of the same month: they win.
    def rank(f):
        return f[4], not _CANONICAL.match(f[0].rsplit("/", 1)[-1]), f[0]

    for relpath, real, st, depth, _ in sorted(found, key=rank):
        reason = _why_not(relpath, depth)
        if reason:
            ignored.append(Ignored(relpath, reason))
            continue
        _, hospital, name = relpath.split("/")
        match = _NAME.match(name)
        drop_month = f"{match['year']}-{int(match['month']):02d}"
        if refusal := month_refusal(drop_month):
            ignored.append(Ignored(relpath, refusal))
            continue
        same, first = claimed.get((st.st_dev, st.st_ino)), claimed.get((hospital, drop_month))
        if not (same or first):
            claimed[(hospital, drop_month)] = claimed[(st.st_dev, st.st_ino)] = relpath
        if month and drop_month != month:
            continue  # claimed all the same: a link to another month's file is that file
        if same or first:
            what = f"the same file as {same}" if same else \
                f"second file for {hospital} {drop_month} ({first} is the drop)"
            ignored.append(Ignored(relpath, f"{what}: refused so its rows are not counted twice; remove one"))
            continue
        drop = Drop(Path(real), relpath, hospital, drop_month, st.st_mtime_ns, st.st_size)
        (unsettled if settle_seconds and st.st_mtime > newest_allowed else drops).append(drop)
    return LandingScan(sorted(drops, key=lambda d: d.relpath), sorted(ignored, key=lambda i: i.relpath),
                       sorted(unsettled, key=lambda d: d.relpath))


def find_drops(landing: Path, month: str | None = None, settle_seconds: float = 0) -> list[Drop]:
    return scan_landing(landing, month, settle_seconds).drops


def month_of_partition(partition_key: str) -> str:
    """'2024-03-01' -> '2024-03'."""
    if not re.fullmatch(r"\d{4}-\d{2}-01", partition_key):
        raise ValueError(f"not a monthly partition key: {partition_key!r}")
    return partition_key[:7]
