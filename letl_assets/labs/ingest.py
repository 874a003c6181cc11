"""Parse one month of drops into validated, de-identified rows and quarantined rejects.

Each file is read twice by DuckDB, never by pandas:
1. a scan that numbers the records, validates them and hashes whole rows, keeping
   only the small set of flagged records (invalid, or an exact repeat of an earlier row);
2. a scan that joins that set back and streams Arrow batches, which are split into
   the published rows and the rejects, each written by its own Parquet writer.
Structural errors (a missing field, bad quoting) are caught by DuckDB's reject
tables with their physical line numbers. Every record read ends up in exactly one
of the two outputs, and ``rows_in == rows_out + rows_rejected`` is checked here.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import sql
from .drops import Drop
from .header import read_header
from .schema import REJECT_COLUMNS, RESULT_COLUMNS

PARQUET = {"compression": "zstd"}
BATCH_ROWS = 1 << 17


class ReconciliationError(RuntimeError):
    pass


@dataclass
class FileReport:
    relpath: str
    encoding: str
    extra_columns: list[str]
    rows: int = 0
    rejected: int = 0


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
    good_schema = sql.result_schema()
    reject_schema = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in REJECT_COLUMNS])
    with (
        duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(temp_dir)}) as con,
        pq.ParquetWriter(report.good_path, good_schema, **PARQUET) as good,
        pq.ParquetWriter(report.rejects_path, reject_schema, **PARQUET) as rejects,
    ):
        for drop in drops:
            file_report = _ingest_file(con, drop, key, good, rejects, good_schema, reject_schema, report)
            report.files.append(file_report)
            log(f"{drop.relpath}: {file_report.rows} rows, {file_report.rejected} rejected ({file_report.encoding})")
    written_good = pq.read_metadata(report.good_path).num_rows
    written_rejects = pq.read_metadata(report.rejects_path).num_rows
    if (written_good, written_rejects) != (report.rows_out, report.rows_rejected) or (
        report.rows_in != written_good + written_rejects
    ):
        raise ReconciliationError(
            f"rows do not reconcile: read {report.rows_in}, wrote {written_good} + {written_rejects} rejected"
        )
    return report


def _ingest_file(con, drop: Drop, key: bytes, good, rejects, good_schema, reject_schema, report) -> FileReport:
    header = read_header(drop.path)
    file_report = FileReport(drop.relpath, header.encoding, header.extra_columns)
    scan = sql.Scan(drop.path, header, con)
    structural = scan.flag_rows()
    if structural.invalid_encoding and header.encoding == "utf-8":
        # Valid UTF-8 at the top, Latin-1 further down: hospitals' exports do this.
        header = header.as_latin1()
        file_report.encoding = header.encoding
        scan = sql.Scan(drop.path, header, con)
        structural = scan.flag_rows()
    for batch in scan.batches(key, drop.relpath, BATCH_ROWS):
        is_good = pc.is_null(batch.column("reason"))
        good_rows = batch.filter(is_good).select(list(RESULT_COLUMNS)).cast(good_schema)
        bad_rows = scan.rejects(batch.filter(pc.invert(is_good)), reject_schema)
        good.write_batch(good_rows)
        rejects.write_table(bad_rows)
        report.rows_out += good_rows.num_rows
        file_report.rejected += bad_rows.num_rows
        for reason, n in _count(bad_rows.column("reason")).items():
            report.reasons[reason] = report.reasons.get(reason, 0) + n
    malformed = structural.to_rejects(drop.relpath, reject_schema)
    if malformed.num_rows:
        rejects.write_table(malformed)
        file_report.rejected += malformed.num_rows
        report.reasons["malformed_row"] = report.reasons.get("malformed_row", 0) + malformed.num_rows
    file_report.rows = scan.records + structural.count
    report.rows_in += file_report.rows
    report.rows_rejected += file_report.rejected
    return file_report


def _count(column: pa.Array) -> dict[str, int]:
    counts = pc.value_counts(column)
    return {v["values"].as_py(): v["counts"].as_py() for v in counts}
