"""Reading a drop's header: encoding, BOM, gzip, column names in any order."""

import codecs
import csv
import gzip
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .schema import REQUIRED_COLUMNS

_SAFE_NAME = re.compile(r"^[\w .()/-]{1,128}$")


class DropSchemaError(ValueError):
    """A drop that cannot be read as a lab file at all; the whole partition fails."""


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


def read_header(path: Path) -> Header:
    path = Path(path)
    is_gzip = path.name.endswith(".gz")
    with (gzip.open if is_gzip else open)(path, "rb") as f:
        head = f.read(1 << 16)
    bom = head.startswith(codecs.BOM_UTF8)
    first = head[len(codecs.BOM_UTF8) if bom else 0:].split(b"\n", 1)[0].rstrip(b"\r")
    if not first.strip():
        raise DropSchemaError(f"{path}: empty file or empty header line")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head[3 if bom else 0:], final=False)
        encoding, text = "utf-8", first.decode("utf-8")
    except UnicodeDecodeError:
        encoding, text = "latin-1", first.decode("latin-1")
    columns = [c.strip() for c in next(csv.reader([text]))]
    bad = [c for c in columns if not _SAFE_NAME.match(c)]
    if bad:
        raise DropSchemaError(f"{path}: unsupported column name(s) {bad} in header")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DropSchemaError(f"{path}: column(s) {repeated} appear more than once in the header")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DropSchemaError(
            f"{path}: missing required column(s) {', '.join(missing)}; the header has {', '.join(columns)}"
        )
    return Header(path, columns, encoding, is_gzip)
