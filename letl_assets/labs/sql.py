"""The DuckDB SQL of the lab ingest: validation, exact-duplicate detection, de-identification.

Values (file paths, the key pads, date bounds) are bound as parameters. Identifiers
come from the header, which ``read_header`` validated, and are quoted here.
"""

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .header import Header
from .rules import BOUNDS, DETAIL, PARSED, REASON, TYPED, date_bounds
from .schema import DROP_COLUMNS, RESULT_COLUMNS, RESULT_TYPES, Reason


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Scan:
    """One drop file, parsed exactly once into a Parquet stage in file order.

    The stage holds each record's typed, generalized fields, the raw patient id (for
    the pseudonym map; the stage is deleted with the step), two 64-bit hashes of the
    whole raw row over its columns in two orders (a false duplicate needs both to
    collide), the validation reason, the raw fields of invalid records only, and the
    record number. Everything after it reads the stage, in parallel and in any order.
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
        self.flags: pa.Table | None = None
        self.malformed: pa.Table | None = None


    @property
    def _stage(self) -> str:
        return f"read_parquet('{literal(self.stage_path)}')"

    def stage(self) -> None:
        every = self.header.columns
        rejects = f"{self._name}_rejects"
        spec = ", ".join(f"'{c}': 'VARCHAR'" for c in every)
        cols = ", ".join(q(c) for c in every)
        reversed_cols = ", ".join(q(c) for c in reversed(every))
        parsed = ", ".join(f"{expr} AS {name}" for name, expr in PARSED.items())
        typed = ", ".join(f"{expr} AS {q(name)}" for name, expr in TYPED.items())
        raw = ", ".join(f"CASE WHEN reason IS NOT NULL THEN {q(c)} END AS {q('raw_' + c)}" for c in DROP_COLUMNS)
        # Records are numbered straight off the reader. Measured on a 2M-row drop: numbering by
        # the stage's file_row_number instead put 97k of 120k rejects on the wrong line.
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute(
            f"""COPY (
                SELECT rn, {typed}, _pid AS patient_id, h1, h2, reason,
                       CASE WHEN reason IS NOT NULL THEN {DETAIL} END AS detail, {raw}
                FROM (SELECT *, {REASON} AS reason
                      FROM (SELECT s.*, {parsed}, {BOUNDS}, hash({cols}) AS h1, hash({reversed_cols}) AS h2
                            FROM (SELECT row_number() OVER () AS rn, *
                                  FROM read_csv($path, header = true, auto_detect = false, columns = {{{spec}}},
                                                delim = ',', quote = '"', escape = '"', store_rejects = true,
                                                rejects_table = '{rejects}', rejects_scan = '{rejects}_scan',
                                                encoding = '{self.header.encoding}',
                                                compression = '{"gzip" if self.header.gzip else "none"}')) s))
            ) TO '{literal(self.stage_path)}' (FORMAT parquet, COMPRESSION uncompressed)""",
            {"path": str(self.path), **date_bounds(self.month)},
        )
        self.records = pq.read_metadata(self.stage_path).num_rows
        self.con.execute("SET preserve_insertion_order = false")
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
        return self.flags.num_rows + self.malformed.num_rows + self.side_rows

    @property
    def invalid_encoding(self) -> bool:
        return any("ENCODING" in t or "UNICODE" in t for t in self.malformed.column("types").to_pylist())

    def flag(self) -> None:
        """Invalid records, and later copies of a valid record (found by a spillable hash aggregate)."""
        flagged = self.con.sql(
            f"""WITH k AS (SELECT rn, h1, h2, reason, detail FROM {self._stage}),
                d AS (SELECT h1, h2, min(rn) AS first_rn FROM k WHERE reason IS NULL
                      GROUP BY h1, h2 HAVING count(*) > 1)
                SELECT rn, coalesce(reason, '{Reason.DUPLICATE}') AS reason, detail,
                       CASE WHEN reason IS NULL THEN d.first_rn END AS first_rn
                FROM k LEFT JOIN d USING (h1, h2)
                WHERE reason IS NOT NULL OR rn > d.first_rn"""
        ).to_arrow_table()
        self.flags = self._locate(flagged)
        self.con.register(f"{self._name}_flags", self.flags)

    def _locate(self, flagged: pa.Table) -> pa.Table:
        """Record numbers to physical lines (header = line 1), skipping the lines that hold no record."""
        bad = np.sort(np.concatenate([self.malformed.column("line").to_numpy(), self._side_lines]))
        accepted_before = bad - 1 - np.arange(1, len(bad) + 1)

        def to_line(rn: np.ndarray) -> pa.Array:
            return pa.array(rn + 1 + np.searchsorted(accepted_before, rn, side="left"), pa.int64())

        first = flagged.column("first_rn")
        repeats = pc.binary_join_element_wise(
            "same as line ", pc.cast(to_line(pc.fill_null(first, 0).to_numpy()), pa.string()), ""
        )
        detail = pc.if_else(pc.is_null(first), flagged.column("detail"), repeats)
        rn = flagged.column("rn")
        return pa.table({"rn": rn, "line": to_line(rn.to_numpy()), "reason": flagged.column("reason"), "detail": detail})

    def reasons(self) -> dict[str, int]:
        counts = {v["values"].as_py(): v["counts"].as_py() for v in pc.value_counts(self.flags.column("reason"))}
        if self.malformed.num_rows:
            counts[Reason.MALFORMED] = self.malformed.num_rows
        for reason, n in self._side_counts.items():
            counts[reason] = counts.get(reason, 0) + n
        return counts

    def patients(self) -> str:
        return f"SELECT DISTINCT patient_id FROM {self._stage} WHERE reason IS NULL"

    def published(self) -> str:
        """Good records, with the pseudonym from the month's map."""
        columns = ", ".join("p.patient_key" if c == "patient_key" else f"s.{q(c)}" for c in RESULT_COLUMNS[:-1])
        return f"""SELECT {columns}, $file_{self.index} AS source_file, s.rn AS _rn
            FROM {self._stage} s
            ANTI JOIN {self._name}_flags f ON s.rn = f.rn
            JOIN letl_pseudonyms p ON s.patient_id = p.patient_id"""

    def rejected(self) -> str:
        """Flagged records with their raw fields (duplicates name the line they repeat),
        then the lines the CSV reader could not split."""
        raw = ", ".join(f"s.{q('raw_' + c)} AS {q(c)}" for c in DROP_COLUMNS)
        nulls = ", ".join(f"NULL::VARCHAR AS {q(c)}" for c in DROP_COLUMNS)
        return f"""SELECT $file_{self.index} AS source_file, f.line, f.reason, f.detail, {raw}, NULL AS raw_line,
                   f.line AS _rn
            FROM {self._stage} s JOIN {self._name}_flags f ON s.rn = f.rn
            UNION ALL
            SELECT $file_{self.index}, m.line, '{Reason.MALFORMED}', m.detail, {nulls}, m.raw_line, m.line
            FROM {self._name}_malformed m""" + (f" UNION ALL {side_select(self.index, self.side)}" if self.side else "")

    def params(self) -> dict[str, str]:
        return {f"file_{self.index}": self.relpath}

    def drop_stage(self) -> None:
        for path in (self.stage_path, *self.cleanup):
            path.unlink(missing_ok=True)


# The published columns of a month in which no file could be read, typed like Scan.published().
NO_RECORDS = ", ".join(f"NULL::{t} AS {q(c)}" for c, t in {**RESULT_TYPES, "_rn": "BIGINT"}.items()) + " WHERE false"


def side_select(index: int, side: Path) -> str:
    """Rejects found outside the reader (lines.SideWriter), in the rejects' columns."""
    nulls = ", ".join(f"NULL::VARCHAR AS {q(c)}" for c in DROP_COLUMNS)
    return f"""SELECT $file_{index} AS source_file, line, reason, detail, {nulls}, raw_line, line AS _rn
        FROM read_parquet('{literal(side)}')"""


class Quarantined:
    """A file that cannot be read as a drop: each of its lines is a reject under one file-level reason."""

    records = 0

    def __init__(self, index: int, relpath: str, encoding: str, side: Path, rows: int, problem: str):
        self.index, self.relpath, self.encoding, self.side = index, relpath, encoding, side
        self.rows = self.rejected_count = self.lines = rows
        self.problem, self.extra_columns = problem, []

    def reasons(self) -> dict[str, int]:
        return {self.problem: self.rows} if self.rows else {}

    def patients(self) -> None:
        return None

    def published(self) -> None:
        return None

    def rejected(self) -> str:
        return side_select(self.index, self.side)

    def params(self) -> dict[str, str]:
        return {f"file_{self.index}": self.relpath}

    def drop_stage(self) -> None:
        self.side.unlink(missing_ok=True)


def literal(path: Path) -> str:
    return str(path).replace("'", "''")
