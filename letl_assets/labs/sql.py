"""The DuckDB SQL of the lab ingest: validation, exact-duplicate detection, de-identification.

Values (file paths, the key pads, test bounds) are bound as parameters. Identifiers
come from the header, which ``read_header`` validated, and are quoted here.
"""

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .header import Header
from .schema import DROP_COLUMNS, LAB_TESTS, RESTRICTED_ZIP3, Reason

_scan_ids = itertools.count()


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def result_schema() -> pa.Schema:
    return pa.schema(
        [
            ("hospital_id", pa.string()), ("patient_key", pa.string()), ("birth_year", pa.int16()),
            ("sex", pa.string()), ("zip3", pa.string()), ("test_code", pa.string()), ("test_name", pa.string()),
            ("result_value", pa.float64()), ("unit", pa.string()), ("reference_low", pa.float64()),
            ("reference_high", pa.float64()), ("abnormal_flag", pa.string()),
            ("collected_at", pa.timestamp("us")), ("reported_at", pa.timestamp("us")), ("source_file", pa.string()),
        ]
    )


_BLANK = "nullif(trim({}), '')"
_TS = "try_cast({} AS TIMESTAMP)"
_VALUE = "try_cast(nullif(trim(result_value), '') AS DOUBLE)"
_BOUNDS = " ".join(f"WHEN '{t.code}' THEN {_VALUE} NOT BETWEEN {t.min_possible} AND {t.max_possible}" for t in LAB_TESTS)
# Reason precedence: the first failing rule names the row. Test codes and bounds are our constants.
_REASON = f"""CASE
    WHEN {_BLANK.format('patient_id')} IS NULL THEN '{Reason.MISSING_PATIENT_ID}'
    WHEN {_TS.format('collected_at')} IS NULL THEN '{Reason.BAD_DATE}'
    WHEN {_BLANK.format('reported_at')} IS NOT NULL AND {_TS.format('reported_at')} IS NULL THEN '{Reason.BAD_DATE}'
    WHEN {_BLANK.format('birth_date')} IS NOT NULL AND try_cast(birth_date AS DATE) IS NULL THEN '{Reason.BAD_DATE}'
    WHEN {_VALUE} IS NULL OR NOT isfinite({_VALUE}) THEN '{Reason.NON_NUMERIC}'
    WHEN CASE trim(test_code) {_BOUNDS} ELSE false END THEN '{Reason.OUT_OF_RANGE}'
END"""
_DETAIL = f"""CASE
    WHEN {_BLANK.format('patient_id')} IS NULL THEN 'patient_id is empty'
    WHEN {_TS.format('collected_at')} IS NULL THEN 'collected_at=' || coalesce(collected_at, '')
    WHEN {_BLANK.format('reported_at')} IS NOT NULL AND {_TS.format('reported_at')} IS NULL THEN 'reported_at=' || reported_at
    WHEN {_BLANK.format('birth_date')} IS NOT NULL AND try_cast(birth_date AS DATE) IS NULL THEN 'birth_date=' || birth_date
    ELSE 'result_value=' || coalesce(result_value, '') || ' test_code=' || coalesce(test_code, '')
END"""
_BIRTH = "try_cast(birth_date AS DATE)"
_COLLECTED = _TS.format("collected_at")
_ZIP = "trim(zip)"
_TYPED = {
    "hospital_id": "trim(hospital_id)",
    # HMAC-SHA256 (RFC 2104) spelled in SQL; equal to Python's hmac, checked in the tests.
    "patient_key": "sha256($opad || unhex(sha256($ipad || trim(patient_id)::BLOB)))",
    "birth_year": f"""CAST(CASE WHEN date_sub('year', {_BIRTH}, {_COLLECTED}::DATE) > 89
                       THEN year({_COLLECTED}) - 90 ELSE year({_BIRTH}) END AS SMALLINT)""",
    "sex": "CASE upper(trim(sex)) WHEN 'M' THEN 'M' WHEN 'F' THEN 'F' ELSE 'U' END",
    "zip3": f"""CASE WHEN NOT regexp_full_match({_ZIP}, '[0-9]{{5}}(-[0-9]{{4}})?') THEN NULL
                WHEN left({_ZIP}, 3) IN ({', '.join(f"'{z}'" for z in RESTRICTED_ZIP3)}) THEN '000'
                ELSE left({_ZIP}, 3) END""",
    "test_code": "trim(test_code)",
    "test_name": "trim(test_name)",
    "result_value": _VALUE,
    "unit": "trim(unit)",
    "reference_low": "try_cast(nullif(trim(reference_low), '') AS DOUBLE)",
    "reference_high": "try_cast(nullif(trim(reference_high), '') AS DOUBLE)",
    "abnormal_flag": "upper(trim(abnormal_flag))",
    "collected_at": _COLLECTED,
    "reported_at": _TS.format("reported_at"),
}


@dataclass
class Structural:
    """Records DuckDB's reader could not split, with their physical line numbers."""

    lines: np.ndarray
    types: list[str]
    messages: list[str]
    raw: list[str]

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def invalid_encoding(self) -> bool:
        return any("ENCODING" in t or "UNICODE" in t for t in self.types)

    def accepted_before(self) -> np.ndarray:
        """For each bad line (sorted), how many good records precede it: maps record numbers to lines."""
        return self.lines - 1 - np.arange(1, self.count + 1)

    def to_rejects(self, source_file: str, schema: pa.Schema) -> pa.Table:
        n = self.count
        columns = {c: pa.nulls(n, pa.string()) for c in schema.names}
        columns |= {
            "source_file": pa.array([source_file] * n, pa.string()),
            "line": pa.array(self.lines, pa.int64()),
            "reason": pa.array([Reason.MALFORMED] * n, pa.string()),
            "detail": pa.array(self.messages, pa.string()),
            "raw_line": pa.array(self.raw, pa.string()),
        }
        return pa.table(columns, schema=schema)


class Scan:
    """One drop file, read by DuckDB with the header's encoding and column names."""

    def __init__(self, path: Path, header: Header, con):
        self.path, self.header, self.con = path, header, con
        self.records = 0
        self.structural: Structural | None = None

    def _source(self, needed: list[str]) -> str:
        rejects = f"letl_rejects_{next(_scan_ids)}"
        return f"""(SELECT row_number() OVER () AS rn, {', '.join(q(c) for c in needed)}
            FROM read_csv($path, header = true, all_varchar = true, names = $names,
                          delim = ',', quote = '"', escape = '"', store_rejects = true,
                          rejects_table = '{rejects}', rejects_scan = '{rejects}_scan',
                          encoding = '{self.header.encoding}',
                          compression = '{"gzip" if self.header.gzip else "none"}'))""", rejects

    def flag_rows(self) -> Structural:
        """Pass 1: keep only the numbers of records that are invalid or repeat an earlier record."""
        every = self.header.columns
        source, rejects = self._source(every)
        cols = ", ".join(q(c) for c in every)
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE flags AS
            SELECT rn, coalesce(reason, '{Reason.DUPLICATE}') AS reason,
                   CASE WHEN reason IS NULL THEN first_rn END AS first_rn, CASE WHEN reason IS NOT NULL THEN detail END AS detail
            FROM (
                SELECT rn, reason, detail, min(rn) OVER (PARTITION BY h1, h2) AS first_rn
                FROM (SELECT rn, hash({cols}) AS h1, hash('letl', {cols}) AS h2,
                             {_REASON} AS reason, {_DETAIL} AS detail
                      FROM {source})
            )
            WHERE reason IS NOT NULL OR rn > first_rn""",
            {"path": str(self.path), "names": every},
        )
        bad = self.con.execute(
            f"""SELECT line, string_agg(DISTINCT error_type, ';'), string_agg(DISTINCT error_message, '; '),
                       any_value(csv_line)
                FROM {rejects} GROUP BY line ORDER BY line"""
        ).fetchall()
        self.structural = Structural(
            np.array([r[0] for r in bad], dtype=np.int64), [r[1] for r in bad], [r[2] for r in bad], [r[3] for r in bad]
        )
        return self.structural

    def batches(self, key: bytes, source_file: str, batch_rows: int):
        """Pass 2: every record, typed and pseudonymized if good, raw if flagged."""
        source, _ = self._source(list(DROP_COLUMNS))
        typed = ", ".join(f"CASE WHEN f.reason IS NULL THEN {expr} END AS {q(name)}" for name, expr in _TYPED.items())
        raw = ", ".join(f"CASE WHEN f.reason IS NOT NULL THEN s.{q(c)} END AS {q('raw_' + c)}" for c in DROP_COLUMNS)
        ipad, opad = hmac_pads(key)
        result = self.con.sql(
            f"""SELECT s.rn, f.reason, f.detail, f.first_rn, {typed}, $source_file AS source_file, {raw}
                FROM {source} s LEFT JOIN flags f ON s.rn = f.rn""",
            params={"path": str(self.path), "names": self.header.columns, "ipad": ipad, "opad": opad,
                    "source_file": source_file},
        )
        for batch in result.to_arrow_reader(batch_rows):
            self.records += batch.num_rows
            yield batch

    def rejects(self, flagged: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
        """Flagged records with their physical line; a duplicate names the line it repeats."""
        shifts = self.structural.accepted_before()

        def to_line(rn: pa.Array) -> np.ndarray:
            values = rn.to_numpy(zero_copy_only=False)
            return values + 1 + np.searchsorted(shifts, values, side="left")

        first = flagged.column("first_rn")
        first_line = pa.array(to_line(pc.fill_null(first, 0)), pa.int64())
        repeats = pc.binary_join_element_wise("same as line ", pc.cast(first_line, pa.string()), "")
        columns = {
            "source_file": flagged.column("source_file"),
            "line": pa.array(to_line(flagged.column("rn")), pa.int64()),
            "reason": flagged.column("reason"),
            "detail": pc.if_else(pc.is_null(first), flagged.column("detail"), repeats),
            **{c: flagged.column("raw_" + c) for c in DROP_COLUMNS},
            "raw_line": pa.nulls(flagged.num_rows, pa.string()),
        }
        return pa.table(columns, schema=schema)


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer HMAC-SHA256 pads of a key (RFC 2104)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
