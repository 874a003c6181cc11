"""Parse one month of drops into validated, de-identified rows and quarantined rejects.

DuckDB does all the work, never pandas, in three streaming scans per file:
1. ``Scan.flag``: number the records, validate them, hash whole rows, and keep only
   the few records that are invalid or repeat an earlier one (plus the record count);
2. one COPY of every file's good records, typed and pseudonymized, into one Parquet file;
3. one COPY of every file's flagged records and unsplittable lines into the rejects.
Every record read ends up in exactly one output; ``rows_in == rows_out + rows_rejected``
is checked against the Parquet footers before anything is published.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow.parquet as pq

from .drops import Drop
from .header import read_header
from .sql import Scan, create_bounds, hmac_pads

PARQUET = "FORMAT parquet, COMPRESSION zstd"


class ReconciliationError(RuntimeError):
    pass


@dataclass
class FileReport:
    relpath: str
    encoding: str
    extra_columns: list[str]
    rows: int
    rejected: int


@dataclass
class IngestReport:
    good_path: Path
    rejects_path: Path
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    files: list[FileReport] = field(default_factory=list)

    def reasons_metadata(self) -> dict[str, int]:
        return {f"rejected_{reason}": n for reason, n in sorted(self.reasons.items())}


def ingest_drops(
    drops: list[Drop],
    good_path: Path,
    rejects_path: Path,
    key: bytes,
    temp_dir: Path,
    log: Callable[[str], None] = print,
    memory_limit: str = "700MB",
) -> IngestReport:
    report = IngestReport(Path(good_path), Path(rejects_path))
    config = {"memory_limit": memory_limit, "temp_directory": str(temp_dir)}
    with duckdb.connect(config=config) as con:
        create_bounds(con)
        scans = [_flag(con, i, drop, log) for i, drop in enumerate(drops)]
        for scan in scans:
            rejected = scan.flags.num_rows + scan.malformed.num_rows
            report.files.append(
                FileReport(scan.relpath, scan.header.encoding, scan.header.extra_columns,
                           scan.records + scan.malformed.num_rows, rejected)
            )
            report.rows_in += scan.records + scan.malformed.num_rows
            for reason, n in scan.reasons().items():
                report.reasons[reason] = report.reasons.get(reason, 0) + n
        params = {k: v for scan in scans for k, v in scan.params().items()}
        ipad, opad = hmac_pads(key)
        log(f"writing {report.rows_in - sum(report.reasons.values()):,} good rows")
        report.rows_out = _copy(con, [s.published() for s in scans], report.good_path, {**params, "ipad": ipad, "opad": opad})
        report.rows_rejected = _copy(
            con, [s.rejected() for s in scans], report.rejects_path, params, order="source_file, line"
        )
    written = (pq.read_metadata(report.good_path).num_rows, pq.read_metadata(report.rejects_path).num_rows)
    if written != (report.rows_out, report.rows_rejected) or report.rows_in != sum(written):
        raise ReconciliationError(
            f"rows do not reconcile: read {report.rows_in}, wrote {written[0]} good + {written[1]} rejected"
        )
    return report


def _flag(con, index: int, drop: Drop, log: Callable[[str], None]) -> Scan:
    header = read_header(drop.path)
    scan = Scan(index, drop.path, drop.relpath, header, con)
    scan.flag()
    if scan.invalid_encoding and header.encoding == "utf-8":
        # Valid UTF-8 at the top, Latin-1 further down: hospital exports do this.
        scan = Scan(index, drop.path, drop.relpath, header.as_latin1(), con)
        scan.flag()
    bad = scan.flags.num_rows + scan.malformed.num_rows
    log(f"{drop.relpath}: {scan.records + scan.malformed.num_rows:,} rows, {bad:,} rejected ({scan.header.encoding})")
    return scan


def _copy(con, selects: list[str], target: Path, params: dict, order: str | None = None) -> int:
    """One COPY for all files; output order is deterministic, so a rerun writes the same bytes."""
    union = "\nUNION ALL\n".join(f"({s})" for s in selects)
    if order:
        union = f"SELECT * FROM ({union}) ORDER BY {order}"
    return con.execute(f"COPY ({union}) TO '{_literal(target)}' ({PARQUET})", params).fetchone()[0]


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")
