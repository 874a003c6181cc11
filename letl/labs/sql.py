"""The DuckDB SQL of the lab ingest: validation, exact-duplicate detection, de-identification.

Values (file paths, the key pads, date bounds) are bound as parameters. Identifiers
come from the header, which ``read_header`` validated, and are quoted here.

Every query runs with ``preserve_insertion_order`` and holds no join or sort: scans, filters,
projections and two Python lookups by record number (a record's line, the line it repeats) keep
each file's order in every thread, so a rerun writes the same bytes without sorting anything
(DuckDB's hash joins emit rows in an order that varies between runs, measured; its sort runs out
of memory). Memory stays bounded: besides the streams, only the repeated records are held
(16 bytes each), and the lines the reader could not split.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from duckdb.sqltypes import BIGINT, VARCHAR

from letl.labs.header import Header
from letl.labs.lines import BATCH, conform, merge_by_line, side_rejects
from letl.labs.rules import BOUNDS, DETAIL, HMAC, PARSED, REASON, TYPED, date_bounds
from letl.labs.schema import DROP_COLUMNS, RESULT_COLUMNS, RESULT_TYPES, Reason

# The reader's buffer per thread; its default (32 MB) alone fills a small memory limit. It must
# hold the longest line the reader takes (2 MB; longer ones are set aside by lines.normalize).
CSV_BUFFER, MAX_LINE_SIZE = 8 << 20, 2 << 20  # set together, or DuckDB derives the line limit from the buffer
STAGE_ROW_GROUP = 32_768  # smaller row groups than DuckDB's: less held per writing thread


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Scan:
    """One drop file, parsed exactly once into a Parquet stage in file order.

    The stage holds each record's typed, generalized fields, the raw patient id (hashed
    into the pseudonym on the way out; the stage is deleted with the step), two 64-bit
    hashes of the whole raw row over its columns in two orders (a false duplicate needs
    both to collide), the validation reason and the raw fields of invalid records only.
    It is written in file order by both threads, so its row number is the record number.
    """

    def __init__(self, index: int, source: Path, relpath: str, header: Header, con, stage_dir: Path,
                 month: str, side: Path | None = None):
        """source: the drop, or its normalized copy; side: rejects found while normalizing it."""
        self.index, self.path, self.relpath, self.header, self.con = index, source, relpath, header, con
        token = uuid.uuid4().hex
        self.stage_path = Path(stage_dir) / f"{token}-{index}.parquet"
        # Per read: a re-read (normalized, or as Latin-1) must not inherit an earlier read's reject table.
        self._name = f"letl_scan_{index}_{token[:12]}"
        self.month, self.side = month, side
        self.cleanup: list[Path] = []  # a normalized copy and its side rejects, deleted with the stage
        self.records = 0
        self.problem: str | None = None
        self.malformed: pa.Table | None = None
        self._counts: dict[str, int] = {}
        self._repeats = self._firsts = np.empty(0, np.int64)  # records repeating an earlier one, by rn

    @property
    def _stage(self) -> str:
        return (f"(SELECT file_row_number + 1 AS rn, * EXCLUDE (file_row_number) "
                f"FROM read_parquet('{literal(self.stage_path)}', file_row_number = true))")

    def stage(self) -> None:
        every = self.header.columns
        rejects = f"{self._name}_rejects"
        spec = ", ".join(f"'{c}': 'VARCHAR'" for c in every)
        cols = ", ".join(q(c) for c in every)
        reversed_cols = ", ".join(q(c) for c in reversed(every))
        parsed = ", ".join(f"{expr} AS {name}" for name, expr in PARSED.items())
        typed = ", ".join(f"{expr} AS {q(name)}" for name, expr in TYPED.items())
        raw = ", ".join(f"CASE WHEN reason IS NOT NULL THEN {q(c)} END AS {q('raw_' + c)}" for c in DROP_COLUMNS)
        # No row_number() here: a window runs on one thread. The parallel reader and the Parquet
        # writer keep the file's order (preserve_insertion_order), so the stage's file_row_number
        # numbers the records; test_ingest_scale checks every reject's line on a parallel read.
        self.con.execute(
            f"""COPY (
                SELECT {typed}, _pid AS patient_id, h1, h2, reason,
                       CASE WHEN reason IS NOT NULL THEN {DETAIL} END AS detail, {raw}
                FROM (SELECT *, {REASON} AS reason
                      FROM (SELECT s.*, {parsed}, {BOUNDS}, hash({cols}) AS h1, hash({reversed_cols}) AS h2
                            FROM read_csv($path, header = true, auto_detect = false, columns = {{{spec}}},
                                          delim = ',', quote = '"', escape = '"', store_rejects = true,
                                          rejects_table = '{rejects}', rejects_scan = '{rejects}_scan',
                                          encoding = '{self.header.encoding}',
                                          compression = '{"gzip" if self.header.gzip else "none"}',
                                          buffer_size = {CSV_BUFFER}, max_line_size = {MAX_LINE_SIZE}) s))
            ) TO '{literal(self.stage_path)}' (FORMAT parquet, COMPRESSION uncompressed, ROW_GROUP_SIZE {STAGE_ROW_GROUP})""",
            {"path": str(self.path), **date_bounds(self.month)},
        )
        self.records = pq.read_metadata(self.stage_path).num_rows
        self.malformed = self.con.sql(
            f"""SELECT line::BIGINT AS line, string_agg(DISTINCT error_type, ';') AS types,
                       string_agg(DISTINCT error_message, '; ') AS detail,
                       trim(any_value(csv_line), chr(13) || chr(10)) AS raw_line
                FROM {rejects} GROUP BY line ORDER BY line"""
        ).to_arrow_table()
        self.con.register(f"{self._name}_malformed", self.malformed)
        self._side_counts, self._side_lines = {}, np.empty(0, np.int64)
        if self.side:
            side = f"read_parquet('{literal(self.side)}')"
            counts = self.con.execute(f"SELECT reason, count(*) FROM {side} GROUP BY reason").fetchall()
            self._side_counts = dict(counts)
            # A line set aside is an empty line in the normalized copy: the reader skips it but counts it.
            self._side_lines = self.con.execute(f"SELECT line FROM {side}").fetchnumpy()["line"]

    @property
    def encoding(self) -> str:
        return self.header.encoding

    @property
    def extra_columns(self) -> list[str]:
        return self.header.extra_columns

    @property
    def lines(self) -> int:
        """Physical lines accounted for: the header, each record, each line rejected by the reader
        or set aside. Equal to the file's line count exactly when no record spans lines."""
        return 1 + self.rows

    @property
    def rows(self) -> int:
        return self.records + self.malformed.num_rows + self.side_rows

    @property
    def side_rows(self) -> int:
        return len(self._side_lines)

    @property
    def rejected_count(self) -> int:
        return sum(self.reasons().values())

    @property
    def invalid_encoding(self) -> bool:
        return any("ENCODING" in t or "UNICODE" in t for t in self.malformed.column("types").to_pylist())

    def flag(self) -> None:
        """Counts the invalid records, finds later copies of a valid record (a spillable hash
        aggregate; only the copies come back) and registers the lookups the outputs use."""
        self._counts = dict(self.con.execute(
            f"SELECT reason, count(*) FROM {self._stage} WHERE reason IS NOT NULL GROUP BY reason").fetchall())
        found = self.con.execute(
            f"""WITH k AS (SELECT rn, h1, h2 FROM {self._stage} WHERE reason IS NULL),
                d AS (SELECT h1, h2, min(rn) AS first_rn FROM k GROUP BY h1, h2 HAVING count(*) > 1)
                SELECT rn, first_rn FROM k JOIN d USING (h1, h2) WHERE rn > first_rn"""
        ).fetchnumpy()
        order = np.argsort(found["rn"], kind="stable")
        self._repeats = np.asarray(found["rn"], np.int64)[order]
        self._firsts = np.asarray(found["first_rn"], np.int64)[order]
        if len(self._repeats):
            self._counts[Reason.DUPLICATE] = len(self._repeats)
        bad = np.sort(np.concatenate([self.malformed.column("line").to_numpy(), self._side_lines]))
        self._accepted_before = bad - 1 - np.arange(1, len(bad) + 1)
        self.con.create_function(f"{self._name}_line", self._line_udf, [BIGINT], BIGINT, type="arrow")
        self.con.create_function(f"{self._name}_repeats", self._repeats_udf, [BIGINT], BIGINT, type="arrow")

    def _to_line(self, rn: np.ndarray) -> np.ndarray:
        """Record numbers to physical lines (header = line 1), skipping the lines that hold no record."""
        return rn + 1 + np.searchsorted(self._accepted_before, rn, side="left")

    def _line_udf(self, rn: pa.Array) -> pa.Array:
        return pa.array(self._to_line(rn.to_numpy()), pa.int64())

    def _repeats_udf(self, rn: pa.Array) -> pa.Array:
        return pa.array(self.repeated_lines(rn.to_numpy()), pa.int64())

    def repeated_lines(self, rn: np.ndarray) -> np.ndarray:
        """For each record, the line of the earlier record it repeats; 0 if it repeats none."""
        if not len(self._repeats):
            return np.zeros(len(rn), np.int64)
        at = np.minimum(np.searchsorted(self._repeats, rn), len(self._repeats) - 1)
        return np.where(self._repeats[at] == rn, self._to_line(self._firsts[at]), 0)

    def reasons(self) -> dict[str, int]:
        counts = dict(self._counts)
        if self.malformed.num_rows:
            counts[Reason.MALFORMED] = self.malformed.num_rows
        for reason, n in self._side_counts.items():
            counts[reason] = counts.get(reason, 0) + n
        return counts

    def rejected(self) -> Iterator[pa.Table]:
        """This file's rejects in line order: the flagged records with their raw fields (duplicates
        name the line they repeat), the lines the reader could not split and those set aside merged
        in, streamed (DuckDB's sort runs out of memory on a large file of rejects, measured)."""
        raw = ", ".join(f"{q('raw_' + c)} AS {q(c)}" for c in DROP_COLUMNS)
        records = self.con.sql(
            f"""SELECT {self._name}_line(rn) AS line, coalesce(reason, '{Reason.DUPLICATE}') AS reason,
                       CASE WHEN reason IS NULL THEN 'same as line ' || {self._name}_repeats(rn) ELSE detail END
                       AS detail, {raw}
                FROM {self._stage} WHERE reason IS NOT NULL OR {self._name}_repeats(rn) > 0""").to_arrow_reader(BATCH)
        malformed = self.malformed.append_column("reason", pa.repeat(pa.scalar(Reason.MALFORMED), self.malformed.num_rows))
        merged = merge_by_line((conform(b, self.relpath) for b in records), [conform(malformed, self.relpath)])
        return merge_by_line(merged, side_rejects(self.relpath, self.side)) if self.side else merged

    def params(self) -> dict[str, str]:
        return {f"file_{self.index}": self.relpath}

    def drop_stage(self) -> None:
        for path in (self.stage_path, *self.cleanup):
            path.unlink(missing_ok=True)


def published(con, scans: list[Scan]) -> str:
    """Every file's good records, pseudonymized on the way (two hashes a row cost less than joining a
    map of pseudonyms, which would also lose the order), file after file, each in its own order:
    one scan of all the stages, which DuckDB reads in list order (a UNION ALL interleaves its parts)."""
    if not scans:  # no file could be read: the columns, typed, and no row
        return "SELECT " + ", ".join(f"NULL::{t} AS {q(c)}" for c, t in RESULT_TYPES.items()) + " WHERE false"
    by_stage = {str(scan.stage_path): scan for scan in scans}

    def repeats(filename: pa.Array, rn: pa.Array) -> pa.Array:
        rn, out = rn.to_numpy(), np.zeros(len(rn), np.int64)
        for name in pc.unique(filename).to_pylist():  # one file per chunk, but do not rely on it
            at = pc.equal(filename, name).to_numpy(zero_copy_only=False)
            out[at] = by_stage[name].repeated_lines(rn[at])
        return pa.array(out)

    udf = f"letl_repeats_{uuid.uuid4().hex[:12]}"
    con.create_function(udf, repeats, [VARCHAR, BIGINT], BIGINT, type="arrow")
    source = " ".join(f"WHEN '{literal(s.stage_path)}' THEN $file_{s.index}" for s in scans)
    columns = {"patient_key": f"{HMAC} AS patient_key", "source_file": f"CASE filename {source} END AS source_file"}
    select = ", ".join(columns.get(c, q(c)) for c in RESULT_COLUMNS)
    stages = ", ".join(f"'{literal(s.stage_path)}'" for s in scans)
    return f"""SELECT {select}
        FROM (SELECT file_row_number + 1 AS rn, * EXCLUDE (file_row_number)
              FROM read_parquet([{stages}], file_row_number = true, filename = true))
        WHERE reason IS NULL AND {udf}(filename, rn) = 0"""


class Quarantined:
    """A file that cannot be read as a drop: each of its lines is a reject under one file-level reason."""

    records = 0

    def __init__(self, index: int, relpath: str, encoding: str, side: Path, rows: int, problem: str):
        self.index, self.relpath, self.encoding, self.side = index, relpath, encoding, side
        self.rows = self.rejected_count = self.lines = rows
        self.problem, self.extra_columns = problem, []

    def reasons(self) -> dict[str, int]:
        return {self.problem: self.rows} if self.rows else {}

    def published(self) -> None:
        return None

    def rejected(self) -> Iterator[pa.Table]:
        return side_rejects(self.relpath, self.side)

    def params(self) -> dict[str, str]:
        return {f"file_{self.index}": self.relpath}

    def drop_stage(self) -> None:
        self.side.unlink(missing_ok=True)


def literal(path: Path) -> str:
    return str(path).replace("'", "''")
