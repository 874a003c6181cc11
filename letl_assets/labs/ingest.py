"""Parse one month of drops into validated, de-identified rows and quarantined rejects.

DuckDB does all the work, never pandas. Each CSV is parsed once (``Scan.stage``) into
an uncompressed Parquet stage in file order; from the stages, in parallel:
1. ``Scan.flag``: the few records that are invalid or repeat an earlier one;
2. the month's pseudonym map, one HMAC per distinct patient rather than per row;
3. one COPY of every file's good records into one zstd Parquet file;
4. one COPY of every file's flagged records and unsplittable lines into the rejects.
Every record read ends up in exactly one output; ``rows_in == rows_out + rows_rejected``
is checked against the Parquet footers before anything is published, and so is
``lines_in == header_lines + rows_in`` against each file's physical lines, counted apart
from the CSV reader (``lines.survey``). A file the reader would miscount is normalized into
staging first (``lines.normalize``); one that cannot be read as a drop at all is quarantined
line by line under a file-level reason (``Quarantined``), and the other files still publish.
"""

import os
import re
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow.parquet as pq

from ..lake.errors import InvalidInput, LetlError
from .drops import Drop
from .header import DropSchemaError, FileProblem, read_header
from .lines import SideWriter, normalize, quarantine, survey
from .schema import Reason
from .rules import HMAC, hmac_pads
from .sql import NO_RECORDS, Quarantined, Scan, literal

# Parquet v2 encodings make the output smaller and cheaper to write (measured: 1.1-1.9 CPU-s
# less per 10M rows on the pseudonym column alone); pyarrow and DuckDB read it.
PARQUET = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2"
REJECTS = "labs/lab_results_rejects"


class ReconciliationError(LetlError):
    pass


@dataclass
class FileReport:
    relpath: str
    encoding: str
    extra_columns: list[str]
    rows: int
    rejected: int
    lines: int = 0  # physical lines, counted apart from the CSV reader
    problem: str | None = None  # a file-level reason: every line of the file was quarantined


@dataclass
class IngestReport:
    good_path: Path
    rejects_path: Path
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    lines_in: int = 0  # = header lines + rows_in: every physical line is a header, a record or a reject
    header_lines: int = 0
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
    memory_limit: str = "600MB",
) -> IngestReport:
    report = IngestReport(Path(good_path), Path(rejects_path))
    config = {"memory_limit": memory_limit, "temp_directory": str(temp_dir)}
    scans: list[Scan | Quarantined] = []
    with duckdb.connect(config=config) as con:
        try:
            for i, drop in enumerate(drops):
                scans.append(_read(con, i, drop, Path(temp_dir), log))
            for scan in scans:
                report.files.append(FileReport(scan.relpath, scan.encoding, scan.extra_columns, scan.rows,
                                               scan.rejected_count, scan.lines, scan.problem))
                report.rows_in += scan.rows
                report.lines_in += scan.lines
                report.header_lines += isinstance(scan, Scan)
                for reason, n in scan.reasons().items():
                    report.reasons[reason] = report.reasons.get(reason, 0) + n
            ipad, opad = hmac_pads(key)
            patients = " UNION ".join(s.patients() for s in scans if s.patients()) or \
                "SELECT NULL::VARCHAR AS patient_id WHERE false"
            con.execute(
                f"CREATE TEMP TABLE letl_pseudonyms AS SELECT patient_id, {HMAC} AS patient_key FROM ({patients})",
                {"ipad": ipad, "opad": opad},
            )
            params = {k: v for scan in scans for k, v in scan.params().items()}
            log(f"writing {report.rows_in - sum(report.reasons.values()):,} good rows")
            # A total order makes a rerun write the same bytes (and so reuse its version); by
            # hospital and test, it also lets readers skip row groups on the usual filters.
            published = [s.published() for s in scans if s.published()] or [f"SELECT {NO_RECORDS}"]
            report.rows_out = _copy(con, published, report.good_path, params, order="source_file, test_code, _rn")
            report.rows_rejected = _copy(
                con, [s.rejected() for s in scans], report.rejects_path, params, order="source_file, line"
            )
        except duckdb.Error as error:
            # DuckDB's message may quote a field of a drop: only its kind goes on, never the text.
            raise LetlError(f"the lab ingest's DuckDB query failed ({type(error).__name__}); its message is "
                            "withheld as it may quote patient data; run the month again, and report the run id "
                            "if it fails again") from None
        finally:
            for scan in scans:
                scan.drop_stage()
    written = (pq.read_metadata(report.good_path).num_rows, pq.read_metadata(report.rejects_path).num_rows)
    if written != (report.rows_out, report.rows_rejected) or report.rows_in != sum(written):
        raise ReconciliationError(
            f"rows do not reconcile: read {report.rows_in}, wrote {written[0]} good + {written[1]} rejected"
        )
    if report.lines_in != report.header_lines + report.rows_in:
        raise ReconciliationError(f"lines do not reconcile: {report.lines_in} physical lines, "
                                  f"{report.header_lines} headers + {report.rows_in} rows")
    return report


def _read(con, index: int, drop: Drop, temp_dir: Path, log: Callable[[str], None]) -> Scan | Quarantined:
    """The drop parsed so that every physical line is a header, a record or a reject on its own line;
    a file that cannot be read that way is quarantined, so the month's other drops still publish."""
    if os.path.realpath(drop.path) != str(drop.path):
        raise InvalidInput(f"{drop.relpath}: the file was replaced by a symlink since the landing scan; "
                           "refused, nothing was read from it; run the month again")
    try:
        header = read_header(drop.path, drop.relpath)
    except DropSchemaError as problem:
        return _quarantine(index, drop, temp_dir, problem.reason, problem.encoding, str(problem), log, problem.gzip)
    counted = survey(drop.path, header.gzip)
    if counted.damaged:
        return _quarantine(index, drop, temp_dir, FileProblem.BAD_GZIP, header.encoding,
                           f"{drop.relpath}: the gzip stream is damaged after line {counted.lines:,}; compress the "
                           "export again and drop it again", log, True)
    source, side, scan = drop.path, None, None
    if not counted.irregular_endings:
        scan = _parse(con, index, drop, header, source, None, temp_dir)
    if scan is None or scan.lines != counted.lines:
        # The reader skipped or merged lines (blank lines, a quote left open), or would fail on the line endings.
        if scan:
            scan.drop_stage()
        source, side = _normalize(drop, header, temp_dir)
        scan = _parse(con, index, drop, replace(header, gzip=False), source, side, temp_dir)
    if scan is None or scan.lines != counted.lines:
        if scan:
            scan.drop_stage()
        source.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return _quarantine(index, drop, temp_dir, FileProblem.UNREADABLE, header.encoding,
                           f"{drop.relpath}: the CSV reader cannot split it into one record per line; "
                           "check its quoting and line endings and drop it again", log, header.gzip)
    scan.cleanup += [source, side] if side else []
    scan.flag()
    set_aside = f"; normalized, {scan.side_rows:,} line(s) rejected on their own" if side else ""
    log(f"{drop.relpath}: {scan.rows:,} rows, {scan.rejected_count:,} rejected ({scan.encoding}{set_aside})")
    return scan


def _normalize(drop: Drop, header, temp_dir: Path) -> tuple[Path, Path]:
    source = temp_dir / f"{uuid.uuid4().hex}-normalized.csv"
    side = SideWriter(temp_dir / f"{uuid.uuid4().hex}-side.parquet")
    try:
        normalize(drop.path, header.gzip, source, side, Reason.MALFORMED)
    finally:
        side.close()
    return source, side.path


def _parse(con, index, drop, header, source, side, temp_dir) -> Scan | None:
    """A stage of the file, re-read as Latin-1 when valid UTF-8 at the top turns into Latin-1
    further down (hospital exports do this); None if the reader fails on it."""
    for candidate in (header, header.as_latin1()):
        scan = Scan(index, source, drop.relpath, candidate, con, temp_dir, drop.month, side)
        try:
            scan.stage()
        except duckdb.Error:
            # Its message may quote a line of the file, so it goes nowhere.
            scan.drop_stage()
            return None
        if not (scan.invalid_encoding and candidate.encoding == "utf-8"):
            return scan
        scan.drop_stage()
    return None


def _quarantine(index, drop, temp_dir, reason, encoding, message, log, is_gzip: bool) -> Quarantined:
    """is_gzip: the lines are those of the decompressed stream (as far as it can be read)."""
    side = SideWriter(temp_dir / f"{uuid.uuid4().hex}-side.parquet")
    try:
        lines = quarantine(drop.path, is_gzip, encoding, side, reason, message.split(": ", 1)[-1])
    finally:
        side.close()
    log(f"{message}. Its {lines:,} line(s) are quarantined in {REJECTS} as {reason}; "
        "the month's other drops go through." if lines else f"{message}.")
    return Quarantined(index, drop.relpath, encoding, side.path, lines, reason)


def _copy(con, selects: list[str], target: Path, params: dict, order: str) -> int:
    union = "\nUNION ALL\n".join(f"({s})" for s in selects)
    union = f"SELECT * EXCLUDE (_rn) FROM ({union}) ORDER BY {order}"
    used = set(re.findall(r"\$(\w+)", union))  # DuckDB refuses parameters a statement does not use
    return con.execute(f"COPY ({union}) TO '{literal(target)}' ({PARQUET})",
                       {k: v for k, v in params.items() if k in used}).fetchone()[0]
