"""The DuckDB SQL of the lab ingest: validation, exact-duplicate detection, de-identification.

Values (file paths, the key pads, test bounds) are bound as parameters. Identifiers
come from the header, which ``read_header`` validated, and are quoted here.
"""

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .header import Header
from .schema import DROP_COLUMNS, LAB_TESTS, RESTRICTED_ZIP3, Reason

def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Each raw field is parsed once, in the typed source below; rules and outputs reuse the parsed values.
_PARSED = {
    "_pid": "nullif(trim(s.patient_id), '')",
    "_collected": "try_cast(s.collected_at AS TIMESTAMP)",
    "_reported_raw": "nullif(trim(s.reported_at), '')",
    "_reported": "try_cast(s.reported_at AS TIMESTAMP)",
    "_birth_raw": "nullif(trim(s.birth_date), '')",
    "_birth": "try_cast(s.birth_date AS DATE)",
    "_value": "try_cast(nullif(trim(s.result_value), '') AS DOUBLE)",
    "_zip": "trim(s.zip)",
}
# The first failing rule names the row.
_REASON = f"""CASE
    WHEN _pid IS NULL THEN '{Reason.MISSING_PATIENT_ID}'
    WHEN _collected IS NULL THEN '{Reason.BAD_DATE}'
    WHEN _reported_raw IS NOT NULL AND _reported IS NULL THEN '{Reason.BAD_DATE}'
    WHEN _birth_raw IS NOT NULL AND _birth IS NULL THEN '{Reason.BAD_DATE}'
    WHEN _value IS NULL OR NOT isfinite(_value) THEN '{Reason.NON_NUMERIC}'
    WHEN _value NOT BETWEEN lo AND hi THEN '{Reason.OUT_OF_RANGE}'
END"""
_DETAIL = """CASE
    WHEN _pid IS NULL THEN 'patient_id is empty'
    WHEN _collected IS NULL THEN 'collected_at=' || coalesce(collected_at, '')
    WHEN _reported_raw IS NOT NULL AND _reported IS NULL THEN 'reported_at=' || reported_at
    WHEN _birth_raw IS NOT NULL AND _birth IS NULL THEN 'birth_date=' || birth_date
    WHEN _value IS NULL OR NOT isfinite(_value) THEN 'result_value=' || coalesce(result_value, '')
    ELSE 'result_value=' || result_value || ' outside [' || lo || ', ' || hi || '] for ' || test_code
END"""
_TYPED = {
    "hospital_id": "trim(hospital_id)",
    # HMAC-SHA256 (RFC 2104) spelled in SQL; equal to Python's hmac, checked in the tests.
    "patient_key": "sha256($opad || unhex(sha256($ipad || _pid::BLOB)))",
    "birth_year": """CAST(CASE WHEN date_sub('year', _birth, _collected::DATE) > 89
                          THEN year(_collected) - 90 ELSE year(_birth) END AS SMALLINT)""",
    "sex": "CASE upper(trim(sex)) WHEN 'M' THEN 'M' WHEN 'F' THEN 'F' ELSE 'U' END",
    "zip3": f"""CASE WHEN NOT regexp_full_match(_zip, '[0-9]{{5}}(-[0-9]{{4}})?') THEN NULL
                WHEN left(_zip, 3) IN ({', '.join(f"'{z}'" for z in RESTRICTED_ZIP3)}) THEN '000'
                ELSE left(_zip, 3) END""",
    "test_code": "trim(test_code)",
    "test_name": "trim(test_name)",
    "result_value": "_value",
    "unit": "trim(unit)",
    "reference_low": "try_cast(nullif(trim(reference_low), '') AS DOUBLE)",
    "reference_high": "try_cast(nullif(trim(reference_high), '') AS DOUBLE)",
    "abnormal_flag": "upper(trim(abnormal_flag))",
    "collected_at": "_collected",
    "reported_at": "_reported",
}


class Scan:
    """One drop file, read by DuckDB with the header's encoding and column names.

    ``flag()`` is the only pass that looks at every record as a whole: it keeps the
    records that are invalid or repeat an earlier record (two 64-bit hashes of the
    full row, so a false duplicate needs a 128-bit collision), plus the record count.
    The published and rejected rows are then selected against those flags.
    """

    def __init__(self, index: int, path: Path, relpath: str, header: Header, con):
        self.index, self.path, self.relpath, self.header, self.con = index, path, relpath, header, con
        self.records = 0
        self.flags: pa.Table | None = None
        self.malformed: pa.Table | None = None

    @property
    def _name(self) -> str:
        # Per encoding: a Latin-1 re-read must not inherit the UTF-8 read's reject table.
        return f"letl_scan_{self.index}_{self.header.encoding.replace('-', '')}"

    def _source(self, columns: list[str], rejects: str | None = None) -> str:
        """Records numbered in file order, with each field parsed once, and the test's bounds."""
        spec = ", ".join(f"'{c}': 'VARCHAR'" for c in self.header.columns)
        parsed = ", ".join(f"{expr} AS {name}" for name, expr in _PARSED.items())
        # Both spellings skip the same unsplittable lines, so record numbers agree between passes.
        keep = (f"store_rejects = true, rejects_table = '{rejects}', rejects_scan = '{rejects}_scan'"
                if rejects else "ignore_errors = true")
        return f"""(SELECT s.rn, {', '.join('s.' + q(c) for c in columns)}, {parsed}, b.lo, b.hi
            FROM (SELECT row_number() OVER () AS rn, *
                  FROM read_csv($path_{self.index}, header = true, auto_detect = false, columns = {{{spec}}},
                                delim = ',', quote = '"', escape = '"', {keep},
                                encoding = '{self.header.encoding}',
                                compression = '{"gzip" if self.header.gzip else "none"}')) s
            LEFT JOIN letl_bounds b ON trim(s.test_code) = b.code)"""

    def params(self) -> dict[str, str]:
        return {f"path_{self.index}": str(self.path), f"file_{self.index}": self.relpath}

    def flag(self) -> None:
        every = self.header.columns
        rejects = f"{self._name}_rejects"
        cols = ", ".join(q(c) for c in every)
        flagged = self.con.sql(
            f"""SELECT rn, coalesce(reason, '{Reason.DUPLICATE}') AS reason,
                       CASE WHEN reason IS NULL AND rn > first_rn THEN first_rn END AS first_rn,
                       detail, total
                FROM (
                    SELECT rn, reason, detail, min(rn) OVER (PARTITION BY h1, h2) AS first_rn,
                           count(*) OVER () AS total
                    FROM (SELECT rn, hash({cols}) AS h1, hash('letl', {cols}) AS h2, {_REASON} AS reason,
                                 CASE WHEN {_REASON} IS NOT NULL THEN {_DETAIL} END AS detail
                          FROM {self._source(every, rejects)} t)
                )
                -- The last record always comes back, so that the total is known.
                WHERE reason IS NOT NULL OR rn > first_rn OR rn = total""",
            params={f"path_{self.index}": str(self.path)},
        ).to_arrow_table()
        self.records = flagged.column("total")[0].as_py() if flagged.num_rows else 0
        flagged = flagged.filter(pc.or_(pc.is_valid(flagged.column("first_rn")), pc.is_valid(flagged.column("detail"))))
        self.malformed = self.con.sql(
            f"""SELECT line, string_agg(DISTINCT error_type, ';') AS types,
                       string_agg(DISTINCT error_message, '; ') AS detail, trim(any_value(csv_line), chr(13) || chr(10)) AS raw_line
                FROM {rejects} GROUP BY line ORDER BY line"""
        ).to_arrow_table()
        self.flags = self._locate(flagged)
        self.con.register(f"{self._name}_flags", self.flags)
        self.con.register(f"{self._name}_malformed", self.malformed)

    @property
    def invalid_encoding(self) -> bool:
        return any("ENCODING" in t or "UNICODE" in t for t in self.malformed.column("types").to_pylist())

    def _locate(self, flagged: pa.Table) -> pa.Table:
        """Record numbers to physical lines (header = line 1), skipping lines the reader rejected."""
        bad = self.malformed.column("line").to_numpy()
        accepted_before = bad - 1 - np.arange(1, len(bad) + 1)

        def to_line(rn: np.ndarray) -> pa.Array:
            return pa.array(rn + 1 + np.searchsorted(accepted_before, rn, side="left"), pa.int64())

        rn = flagged.column("rn").to_numpy()
        first = flagged.column("first_rn")
        repeats = pc.binary_join_element_wise(
            "same as line ", pc.cast(to_line(pc.fill_null(first, 0).to_numpy()), pa.string()), ""
        )
        detail = pc.if_else(pc.is_null(first), flagged.column("detail"), repeats)
        return pa.table({"rn": flagged.column("rn"), "line": to_line(rn), "reason": flagged.column("reason"), "detail": detail})

    def reasons(self) -> dict[str, int]:
        counts = {v["values"].as_py(): v["counts"].as_py() for v in pc.value_counts(self.flags.column("reason"))}
        if self.malformed.num_rows:
            counts[Reason.MALFORMED] = self.malformed.num_rows
        return counts

    def published(self) -> str:
        """Good records, typed and de-identified."""
        typed = ", ".join(f"{expr} AS {q(name)}" for name, expr in _TYPED.items())
        return f"""SELECT {typed}, $file_{self.index} AS source_file
            FROM {self._source(list(DROP_COLUMNS))} t ANTI JOIN {self._name}_flags f ON t.rn = f.rn"""

    def rejected(self) -> str:
        """Flagged records with their raw fields, then the lines the reader could not split."""
        raw = ", ".join(f"t.{q(c)}" for c in DROP_COLUMNS)
        nulls = ", ".join(f"NULL AS {q(c)}" for c in DROP_COLUMNS)
        return f"""SELECT $file_{self.index} AS source_file, f.line::BIGINT AS line, f.reason, f.detail, {raw}, NULL AS raw_line
            FROM {self._source(list(DROP_COLUMNS))} t JOIN {self._name}_flags f ON t.rn = f.rn
            UNION ALL
            SELECT $file_{self.index}, m.line::BIGINT, '{Reason.MALFORMED}', m.detail, {nulls}, m.raw_line
            FROM {self._name}_malformed m"""


def create_bounds(con) -> None:
    """Physiologically possible values per known test; unknown tests are not range-checked."""
    con.execute("CREATE OR REPLACE TEMP TABLE letl_bounds (code VARCHAR PRIMARY KEY, lo DOUBLE, hi DOUBLE)")
    con.executemany("INSERT INTO letl_bounds VALUES (?, ?, ?)", [(t.code, t.min_possible, t.max_possible) for t in LAB_TESTS])


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer HMAC-SHA256 pads of a key (RFC 2104)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
