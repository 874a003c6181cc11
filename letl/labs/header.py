"""What a drop file is, and its header: gzip, encoding, BOM, column names in any order.

A file that cannot be read as a lab drop raises ``DropSchemaError`` with a stable file-level
reason; the ingest quarantines its lines under that reason, so the month still publishes the
other files. Messages name the file, the problem and what to do, never a value from the file:
a headerless file's first line is a patient record, so it is never quoted.
"""

import codecs
import csv
import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from letl.labs.schema import REQUIRED_COLUMNS
from letl.lake.errors import InvalidInput

_SAFE_NAME = re.compile(r"^[\w .()/-]{1,128}$")
GZIP_MAGIC = b"\x1f\x8b"
_HEAD = 1 << 16
# Leading bytes of what hospitals drop by mistake instead of a CSV export.
_KNOWN_BINARY = ((b"PK\x03\x04", "a zip archive (an Excel .xlsx?)"), (b"%PDF", "a PDF document"),
                 (b"\xd0\xcf\x11\xe0", "an OLE2 document (an Excel .xls?)"), (b"\x89PNG", "a PNG image"))


class FileProblem:
    """File-level reasons: every line of such a file is quarantined under one of these."""

    EMPTY = "empty_file"
    NOT_GZIP = "not_gzip"
    BAD_GZIP = "damaged_gzip"
    UTF16 = "utf16_file"
    BINARY = "binary_file"
    MISSING_HEADER = "missing_header"
    MISSING_COLUMNS = "missing_columns"
    BAD_HEADER = "bad_header"
    UNREADABLE = "unreadable_file"


class DropSchemaError(InvalidInput):
    """A drop that cannot be read as a lab file; ``reason`` is a ``FileProblem`` value."""

    def __init__(self, message: str, reason: str, encoding: str = "utf-8", gzip: bool = False):
        super().__init__(message)
        self.reason, self.encoding, self.gzip = reason, encoding, gzip


@dataclass(frozen=True)
class Header:
    path: Path
    columns: list[str]
    encoding: str  # "utf-8" or "latin-1", as DuckDB names them
    gzip: bool

    @property
    def extra_columns(self) -> list[str]:
        return [c for c in self.columns if c not in REQUIRED_COLUMNS]

    def as_latin1(self) -> "Header":
        return replace(self, encoding="latin-1")


def _head(path: Path, relpath: str, named_gz: bool) -> tuple[bytes, bool]:
    with open(path, "rb") as f:
        raw = f.read(_HEAD)
    is_gzip = raw.startswith(GZIP_MAGIC)
    if named_gz and not is_gzip:
        what = "plain text" if raw and _text_like(raw) else "not text"
        raise DropSchemaError(f"{relpath}: named .gz but is not gzip ({what}); compress it with gzip, "
                              "or name it .csv, and drop it again", FileProblem.NOT_GZIP)
    if not is_gzip:
        return raw, False
    stream = zlib.decompressobj(wbits=31)
    try:  # a stream cut further on still yields its head here; the line count finds the break
        head = stream.decompress(raw, _HEAD)
    except zlib.error:
        head = b""
    if not head and not stream.eof:
        raise DropSchemaError(f"{relpath}: the gzip stream is damaged at its start; compress the export "
                              "again and drop it again", FileProblem.BAD_GZIP, "latin-1")
    return head, True


def _text_like(raw: bytes) -> bool:
    controls = sum(raw.count(bytes([b])) for b in range(32) if b not in (9, 10, 13))
    return b"\x00" not in raw and controls * 50 < len(raw)


def _utf16(head: bytes) -> str | None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 8 and sample[1::2].count(0) * 2 > len(sample) // 2:
        return "utf-16-le"
    if len(sample) >= 8 and sample[0::2].count(0) * 2 > len(sample) // 2:
        return "utf-16-be"
    return None


def read_header(path: Path, relpath: str | None = None) -> Header:
    """The drop's header, or DropSchemaError naming what the file is instead."""
    path = Path(path)
    relpath = relpath or str(path)
    head, is_gzip = _head(path, relpath, relpath.lower().endswith(".gz"))
    try:
        return _header(path, relpath, head, is_gzip)
    except DropSchemaError as problem:
        problem.gzip = is_gzip  # its lines are quarantined from the decompressed stream
        raise


def _header(path: Path, relpath: str, head: bytes, is_gzip: bool) -> Header:
    if not head:
        raise DropSchemaError(f"{relpath}: empty file; nothing to read", FileProblem.EMPTY)
    kind = next((what for magic, what in _KNOWN_BINARY if head.startswith(magic)), None)
    utf16 = None if kind else _utf16(head)
    if utf16:
        raise DropSchemaError(f"{relpath}: UTF-16 text; export it as UTF-8 (or Latin-1) and drop it again",
                              FileProblem.UTF16, utf16)
    if kind or not _text_like(head):
        kind = kind or "binary data"
        raise DropSchemaError(f"{relpath}: {kind}, not a CSV text file; export the results as CSV and "
                              "drop it again", FileProblem.BINARY, "latin-1")
    bom = head.startswith(codecs.BOM_UTF8)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head[3 if bom else 0:], final=False)
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "latin-1"
    first = re.split(rb"\r\n|\r|\n", head[3 if bom else 0:], maxsplit=1)[0]
    columns = [c.strip() for c in next(csv.reader([first.decode(encoding, errors="replace")]), [])]
    known = [c for c in columns if c in REQUIRED_COLUMNS]
    if not known:
        raise DropSchemaError(f"{relpath}: no header line (line 1 names none of the drop's columns); add the "
                              "header line to the export and drop it again", FileProblem.MISSING_HEADER, encoding)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DropSchemaError(f"{relpath}: missing required column(s) {', '.join(missing)} in the header; add "
                              "them to the export and drop it again", FileProblem.MISSING_COLUMNS, encoding)
    repeated = sorted({c for c in known if columns.count(c) > 1})
    # Only names of our own schema are quoted: anything else on line 1 may be data.
    unsafe = [c for c in columns if c not in REQUIRED_COLUMNS and not _SAFE_NAME.match(c)]
    other_repeats = len({c for c in columns if c not in REQUIRED_COLUMNS and columns.count(c) > 1})
    if repeated or unsafe or other_repeats:
        problems = [f"column(s) {', '.join(repeated)} appear more than once"] if repeated else []
        problems += [f"{len(unsafe)} extra column name(s) with unsupported characters"] if unsafe else []
        problems += [f"{other_repeats} extra column name(s) repeated"] if other_repeats else []
        raise DropSchemaError(f"{relpath}: header has {'; '.join(problems)}; fix the header and drop it again",
                              FileProblem.BAD_HEADER, encoding)
    return Header(path, columns, encoding, is_gzip)
