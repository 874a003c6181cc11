"""The DuckDB SQL of the lab ingest: validation, exact-duplicate detection, de-identification.

Values (file paths, the key pads, test bounds) are bound as parameters. Identifiers
come from the header, which ``read_header`` validated, and are quoted here.
"""

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .header import Header
from .schema import DROP_COLUMNS, LAB_TESTS, RESTRICTED_ZIP3, RESULT_COLUMNS, Reason

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
# Physiologically possible values per known test (our own constants; unknown tests are not
# range-checked). A CASE costs less here than joining a table of bounds.
_BOUNDS = ", ".join(
    "CASE trim(s.test_code) " + " ".join(f"WHEN '{t.code}' THEN {float(getattr(t, attr))}" for t in LAB_TESTS)
    + f" END AS {alias}"
    for attr, alias in (("min_possible", "lo"), ("max_possible", "hi"))
)
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
    """One drop file, parsed exactly once into a Parquet stage in file order.

    The stage holds each record's typed, generalized fields, the raw patient id (for
    the pseudonym map; the stage is deleted with the step), two 64-bit hashes of the
    whole raw row over its columns in two orders (a false duplicate needs both to
    collide), the validation reason, the raw fields of invalid records only, and the
    record number. Everything after it reads the stage, in parallel and in any order.
    """

    def __init__(self, index: int, path: Path, relpath: str, header: Header, con, stage_dir: Path):
        self.index, self.path, self.relpath, self.header, self.con = index, path, relpath, header, con
        self.stage_path = Path(stage_dir) / f"{uuid.uuid4().hex}-{index}.parquet"
        self.records = 0
        self.flags: pa.Table | None = None
        self.malformed: pa.Table | None = None

    @property
    def _name(self) -> str:
        # Per encoding: a Latin-1 re-read must not inherit the UTF-8 read's reject table.
        return f"letl_scan_{self.index}_{self.header.encoding.replace('-', '')}"

    @property
    def _stage(self) -> str:
        return f"read_parquet('{literal(self.stage_path)}')"

    def stage(self) -> None:
        every = self.header.columns
        rejects = f"{self._name}_rejects"
        spec = ", ".join(f"'{c}': 'VARCHAR'" for c in every)
        cols = ", ".join(q(c) for c in every)
        reversed_cols = ", ".join(q(c) for c in reversed(every))
        parsed = ", ".join(f"{expr} AS {name}" for name, expr in _PARSED.items())
        typed = ", ".join(f"{expr} AS {q(name)}" for name, expr in _TYPED.items())
        raw = ", ".join(f"CASE WHEN reason IS NOT NULL THEN {q(c)} END AS {q('raw_' + c)}" for c in DROP_COLUMNS)
        # Records are numbered straight off the reader. Measured on a 2M-row drop: numbering by
        # the stage's file_row_number instead put 97k of 120k rejects on the wrong line.
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute(
            f"""COPY (
                SELECT rn, {typed}, _pid AS patient_id, h1, h2, reason,
                       CASE WHEN reason IS NOT NULL THEN {_DETAIL} END AS detail, {raw}
                FROM (SELECT *, {_REASON} AS reason
                      FROM (SELECT s.*, {parsed}, {_BOUNDS}, hash({cols}) AS h1, hash({reversed_cols}) AS h2
                            FROM (SELECT row_number() OVER () AS rn, *
                                  FROM read_csv($path, header = true, auto_detect = false, columns = {{{spec}}},
                                                delim = ',', quote = '"', escape = '"', store_rejects = true,
                                                rejects_table = '{rejects}', rejects_scan = '{rejects}_scan',
                                                encoding = '{self.header.encoding}',
                                                compression = '{"gzip" if self.header.gzip else "none"}')) s))
            ) TO '{literal(self.stage_path)}' (FORMAT parquet, COMPRESSION uncompressed)""",
            {"path": str(self.path)},
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
        """Record numbers to physical lines (header = line 1), skipping lines the reader rejected."""
        bad = self.malformed.column("line").to_numpy()
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
        nulls = ", ".join(f"NULL AS {q(c)}" for c in DROP_COLUMNS)
        return f"""SELECT $file_{self.index} AS source_file, f.line, f.reason, f.detail, {raw}, NULL AS raw_line,
                   f.line AS _rn
            FROM {self._stage} s JOIN {self._name}_flags f ON s.rn = f.rn
            UNION ALL
            SELECT $file_{self.index}, m.line, '{Reason.MALFORMED}', m.detail, {nulls}, m.raw_line, m.line
            FROM {self._name}_malformed m"""

    def params(self) -> dict[str, str]:
        return {f"file_{self.index}": self.relpath}

    def drop_stage(self) -> None:
        self.stage_path.unlink(missing_ok=True)


def literal(path: Path) -> str:
    return str(path).replace("'", "''")


# HMAC-SHA256 (RFC 2104) spelled in SQL; equal to Python's hmac, checked in the tests.
HMAC = "sha256($opad || unhex(sha256($ipad || patient_id::BLOB)))"


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer HMAC-SHA256 pads of a key (RFC 2104)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
