"""Parse one month of drops into validated, de-identified rows and quarantined rejects.

DuckDB does the work (pyarrow only streams the rejects), never pandas. Each CSV is parsed once, on every thread
(``Scan.stage``), into an uncompressed Parquet stage in file order, while its physical lines
are counted beside it (``lines.survey``, in a thread); from the stages:
1. ``Scan.flag``: the counts of invalid records, and the few that repeat an earlier one;
2. one COPY of every file's good records, pseudonymized, into one zstd Parquet file;
3. every file's flagged records and unsplittable lines, merged in line order, into the rejects.
Nothing is sorted or joined: the files follow each other in drop order and each keeps its own,
so memory stays bounded at any size (the duplicate search is a hash aggregate, which DuckDB
spills to temp_dir) and a rerun with the same configuration writes the same bytes.
DuckDB's memory limit comes from ``LETL_DUCKDB_MEMORY`` and the machine (``memory_limit``).
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from letl.labs.drops import Drop
from letl.labs.header import DropSchemaError, FileProblem, read_header
from letl.labs.lines import SideWriter, normalize, quarantine, survey, write_rejects
from letl.labs.rules import hmac_pads
from letl.labs.schema import Reason
from letl.labs.sql import Quarantined, Scan, literal, published
from letl.lake.config import declared, parse_size, setting
from letl.lake.errors import InvalidInput, LetlError, VerificationFailed

# Parquet v2 encodings make the output smaller and cheaper to write (measured: 1.1-1.9 CPU-s
# less per 10M rows on the pseudonym column alone); pyarrow and DuckDB read it. zstd level 1
# instead of 3: 15% less CPU for the write, 8% more bytes (measured on 380k good rows).
PARQUET = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2, COMPRESSION_LEVEL 1"
REJECTS = "labs/lab_results_rejects"
MEMORY_VARIABLE = "LETL_DUCKDB_MEMORY"
DEFAULT_MEMORY = declared(MEMORY_VARIABLE).default  # with Python, Dagster and the Parquet writers the step stays under 1 GB
MIN_MEMORY = 32 << 20  # below this DuckDB cannot hold the buffers of one Parquet row group
THREAD_MEMORY = 64 << 20  # the parse's working memory per DuckDB thread (CSV buffers, row groups)
CGROUP, MEMINFO = Path("/sys/fs/cgroup"), Path("/proc/meminfo")


class ReconciliationError(VerificationFailed):
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
    memory_limit: str | None = None,
) -> IngestReport:
    """memory_limit: DuckDB's, as a size; None takes it from the environment and the machine."""
    report = IngestReport(Path(good_path), Path(rejects_path))
    # Every output keeps the order of its files (see sql.py). DuckDB turns a long IN list (the
    # rules have some) into a join, whose output order varies between runs: measured, so it is off.
    limit = memory_limit or duckdb_memory_limit()
    config = {"memory_limit": limit, "temp_directory": str(temp_dir), "threads": _threads(limit),
              "preserve_insertion_order": True, "disabled_optimizers": "in_clause"}
    scans: list[Scan | Quarantined] = []
    with duckdb.connect(config=config) as con, ThreadPoolExecutor(1) as counter:
        try:
            for i, drop in enumerate(drops):
                scans.append(_read(con, i, drop, Path(temp_dir), log, counter))
            for scan in scans:
                report.files.append(FileReport(scan.relpath, scan.encoding, scan.extra_columns, scan.rows,
                                               scan.rejected_count, scan.lines, scan.problem))
                report.rows_in += scan.rows
                report.lines_in += scan.lines
                report.header_lines += isinstance(scan, Scan)
                for reason, n in scan.reasons().items():
                    report.reasons[reason] = report.reasons.get(reason, 0) + n
            ipad, opad = hmac_pads(key)
            params = {"ipad": ipad, "opad": opad, **{k: v for scan in scans for k, v in scan.params().items()}}
            log(f"writing {report.rows_in - sum(report.reasons.values()):,} good rows")
            # One file after another, each in its own order: readers still skip row groups by hospital.
            report.rows_out = _copy(con, published(con, [s for s in scans if isinstance(s, Scan)]),
                                    report.good_path, params)
            rejects = (table for scan in scans for table in scan.rejected())
            report.rows_rejected = write_rejects(report.rejects_path, rejects)
        except (duckdb.Error, pa.ArrowException) as error:
            # DuckDB's message may quote a field of a drop (also when it reaches us through Arrow):
            # only its kind goes on, never the text.
            raise LetlError(f"the lab ingest's DuckDB query failed ({type(error).__name__}); its message is "
                            "withheld as it may quote patient data; run the month again, and report the run id "
                            "if it fails again") from None
        finally:
            for scan in scans:
                scan.drop_stage()
            for (name,) in con.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                                       "WHERE function_name LIKE 'letl_%'").fetchall():
                con.remove_function(name)  # a Python function left registered leaks at exit, noisily
    written = (pq.read_metadata(report.good_path).num_rows, pq.read_metadata(report.rejects_path).num_rows)
    if written != (report.rows_out, report.rows_rejected) or report.rows_in != sum(written):
        raise ReconciliationError(
            f"rows do not reconcile: read {report.rows_in}, wrote {written[0]} good + {written[1]} rejected"
        )
    if report.lines_in != report.header_lines + report.rows_in:
        raise ReconciliationError(f"lines do not reconcile: {report.lines_in} physical lines, "
                                  f"{report.header_lines} headers + {report.rows_in} rows")
    return report


def duckdb_memory_limit() -> str:
    """LETL_DUCKDB_MEMORY (a size; DEFAULT_MEMORY when unset, 0 for as much as the machine allows),
    capped at half the memory available now, to the cgroup or the host: DuckDB spills what does not fit."""
    wanted = setting(MEMORY_VARIABLE)
    cap = available_memory() // 2
    return f"{max(MIN_MEMORY, min(wanted, cap) if wanted else cap) >> 20}MiB"


def _threads(limit: str) -> int:
    """DuckDB's threads: one per core, as far as the limit gives each its working memory
    (measured: a 64 MB limit runs the parse on one thread and fails on two)."""
    return max(1, min(os.cpu_count() or 1, parse_size(limit) // THREAD_MEMORY))


def available_memory() -> int:
    """Bytes this process may still take: the least of the cgroup's room and the host's MemAvailable."""
    room = []
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            room.append(int(limit) - int((CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit visible
    try:
        room.append(int(re.search(r"^MemAvailable:\s+(\d+) kB", MEMINFO.read_text(), re.MULTILINE).group(1)) << 10)
    except (OSError, AttributeError):
        pass
    return max(0, min(room)) if room else parse_size(DEFAULT_MEMORY) * 2


def _read(con, index: int, drop: Drop, temp_dir: Path, log: Callable[[str], None],
          counter: ThreadPoolExecutor) -> Scan | Quarantined:
    """The drop parsed so that every physical line is a header, a record or a reject on its own line;
    a file that cannot be read that way is quarantined, so the month's other drops still publish."""
    if os.path.realpath(drop.path) != str(drop.path):
        raise InvalidInput(f"{drop.relpath}: the file was replaced by a symlink since the landing scan; "
                           "refused, nothing was read from it; run the month again")
    try:
        header = read_header(drop.path, drop.relpath)
    except DropSchemaError as problem:
        return _quarantine(index, drop, temp_dir, problem.reason, problem.encoding, str(problem), log, problem.gzip)
    # The count runs beside the parse (DuckDB leaves the GIL); a parse it shows to be useless is dropped.
    counting = counter.submit(survey, drop.path, header.gzip)
    source, side = drop.path, None
    scan = _parse(con, index, drop, header, source, None, temp_dir)
    counted = counting.result()
    if counted.damaged or counted.irregular_endings:
        if scan:
            scan.drop_stage()
        scan = None
    if counted.damaged:
        return _quarantine(index, drop, temp_dir, FileProblem.BAD_GZIP, header.encoding,
                           f"{drop.relpath}: the gzip stream is damaged after line {counted.lines:,}; compress the "
                           "export again and drop it again", log, True)
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
        except duckdb.OutOfMemoryException:
            scan.drop_stage()
            raise  # not the file's fault: the month fails and can run again, no file is quarantined
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


def _copy(con, select: str, target: Path, params: dict) -> int:
    used = set(re.findall(r"\$(\w+)", select))  # DuckDB refuses parameters a statement does not use
    return con.execute(f"COPY ({select}) TO '{literal(target)}' ({PARQUET})",
                       {k: v for k, v in params.items() if k in used}).fetchone()[0]
