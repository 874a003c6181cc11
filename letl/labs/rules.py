"""The validation rules and the pseudonym of the lab ingest, as DuckDB SQL over one drop's raw
VARCHAR fields.

Each raw field is parsed once; the rules and the outputs reuse the parsed values (a result that
is not a plain number, usually a few percent of them, is looked at again by each output that needs
it). The first failing rule names the row. Dates are bound per drop: a result must be collected in
the month the drop is named for, and no date may lie before 1900 or in the future.
"""

import hashlib
from datetime import datetime, timedelta, timezone

from letl.labs.schema import LAB_TESTS, OTHER_RESULT, RESTRICTED_ZIP3, RESULT_CODES, Reason

PARSED = {
    "_pid": "nullif(trim(s.patient_id), '')",
    "_collected": "try_cast(s.collected_at AS TIMESTAMP)",
    "_reported_raw": "nullif(trim(s.reported_at), '')",
    "_reported": "try_cast(s.reported_at AS TIMESTAMP)",
    "_birth_raw": "nullif(trim(s.birth_date), '')",
    "_birth": "try_cast(s.birth_date AS DATE)",
    "_result": "nullif(trim(s.result_value), '')",
    "_value": "try_cast(nullif(trim(s.result_value), '') AS DOUBLE)",
    "_zip": "trim(s.zip)",
}
# Physiologically possible values per known test (our own constants; unknown tests are not
# range-checked). A CASE costs less here than joining a table of bounds.
BOUNDS = ", ".join(
    "CASE trim(s.test_code) " + " ".join(f"WHEN '{t.code}' THEN {float(getattr(t, attr))}" for t in LAB_TESTS)
    + f" END AS {alias}"
    for attr, alias in (("min_possible", "lo"), ("max_possible", "hi"))
)
# The kinds of a result (schema.RESULT_TYPES). Every expression over them starts with
# "CASE WHEN _NUMBER": a CASE evaluates its later branches only on the rows left, so a plain number
# costs what it did before (one try_cast), and only other text is looked at further. There one
# regex (RE2) is the cheapest test measured: 80 ns a value, against 90-100 ns for slicing the
# comparator off with left()/substr() and 235 ns for a failing try_cast. NaN and infinity are text.
_NUMBER = "isfinite(_value)"
_COMPARATOR = "regexp_extract(_result, '^[<>]=?')"
_BOUND = "try_cast(ltrim(_result, '<>= ') AS DOUBLE)"
_CENSORED = (r"CASE WHEN regexp_full_match(_result, '[<>]=? *[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?') "
             f"THEN isfinite({_BOUND}) END")
_CODED = "CASE " + " ".join(
    "WHEN replace(lower(_result), ' ', '') IN ({}) THEN '{}'".format(
        ", ".join(sorted({f"'{s.replace(' ', '')}'" for s in spellings})), code)
    for code, spellings in RESULT_CODES.items()) + f" ELSE '{OTHER_RESULT}' END"
# A censored value's number is a bound: "<X" says the value is below X, so it is impossible only
# when no possible value is below X (X <= lo), and ">X" only when none is above X (X >= hi).
_IMPOSSIBLE_BOUND = f"""CASE {_COMPARATOR} WHEN '<' THEN {_BOUND} <= lo WHEN '<=' THEN {_BOUND} < lo
                         WHEN '>' THEN {_BOUND} >= hi WHEN '>=' THEN {_BOUND} > hi END"""
# The first failing rule names the row. $earliest, $latest and the month bounds are bound per drop.
_IN_RANGE = "{0} BETWEEN $earliest AND $latest"
_NOT_IN_RANGE = " is before 1900 or in the future"
REASON = f"""CASE
    WHEN _pid IS NULL THEN '{Reason.MISSING_PATIENT_ID}'
    WHEN _collected IS NULL THEN '{Reason.BAD_DATE}'
    WHEN _reported_raw IS NOT NULL AND _reported IS NULL THEN '{Reason.BAD_DATE}'
    WHEN _birth_raw IS NOT NULL AND _birth IS NULL THEN '{Reason.BAD_DATE}'
    WHEN NOT ({_IN_RANGE.format('_collected')}) OR NOT ({_IN_RANGE.format('_reported')})
         OR NOT ({_IN_RANGE.format('_birth')}) THEN '{Reason.DATE_RANGE}'
    WHEN _collected < $month_start OR _collected >= $month_end THEN '{Reason.OUTSIDE_MONTH}'
    WHEN _result IS NULL THEN '{Reason.MISSING_RESULT}'
    WHEN {_NUMBER} THEN CASE WHEN _value NOT BETWEEN lo AND hi THEN '{Reason.OUT_OF_RANGE}' END
    WHEN {_CENSORED} THEN CASE WHEN {_IMPOSSIBLE_BOUND} THEN '{Reason.OUT_OF_RANGE}' END
END"""
DETAIL = f"""CASE
    WHEN _pid IS NULL THEN 'patient_id is empty'
    WHEN _collected IS NULL THEN 'collected_at=' || coalesce(collected_at, '')
    WHEN _reported_raw IS NOT NULL AND _reported IS NULL THEN 'reported_at=' || reported_at
    WHEN _birth_raw IS NOT NULL AND _birth IS NULL THEN 'birth_date=' || birth_date
    WHEN NOT ({_IN_RANGE.format('_collected')}) THEN 'collected_at=' || collected_at || '{_NOT_IN_RANGE}'
    WHEN NOT ({_IN_RANGE.format('_reported')}) THEN 'reported_at=' || reported_at || '{_NOT_IN_RANGE}'
    WHEN NOT ({_IN_RANGE.format('_birth')}) THEN 'birth_date=' || birth_date || '{_NOT_IN_RANGE}'
    WHEN _collected < $month_start OR _collected >= $month_end THEN 'collected_at=' || collected_at
        || ' is outside ' || strftime($month_start, '%Y-%m') || ', the month of the drop'
    WHEN _result IS NULL THEN 'result_value is empty'
    ELSE 'result_value=' || result_value || ' outside [' || lo || ', ' || hi || '] for ' || test_code
END"""
TYPED = {
    "hospital_id": "trim(hospital_id)",
    "birth_year": """CAST(CASE WHEN date_sub('year', _birth, _collected::DATE) > 89
                          THEN year(_collected) - 90 ELSE year(_birth) END AS SMALLINT)""",
    "sex": "CASE upper(trim(sex)) WHEN 'M' THEN 'M' WHEN 'F' THEN 'F' ELSE 'U' END",
    "zip3": f"""CASE WHEN NOT regexp_full_match(_zip, '[0-9]{{5}}(-[0-9]{{4}})?') THEN NULL
                WHEN left(_zip, 3) IN ({', '.join(f"'{z}'" for z in RESTRICTED_ZIP3)}) THEN '000'
                ELSE left(_zip, 3) END""",
    "test_code": "trim(test_code)",
    "test_name": "trim(test_name)",
    "result_value": f"CASE WHEN {_NUMBER} THEN _value WHEN {_CENSORED} THEN {_BOUND} END",
    "result_comparator": f"CASE WHEN {_NUMBER} THEN NULL WHEN {_CENSORED} THEN {_COMPARATOR} END",
    "result_text": f"CASE WHEN {_NUMBER} THEN NULL WHEN {_CENSORED} THEN NULL ELSE {_CODED} END",
    "result_original": f"CASE WHEN {_NUMBER} THEN NULL ELSE _result END",
    "unit": "trim(unit)",
    "reference_low": "try_cast(nullif(trim(reference_low), '') AS DOUBLE)",
    "reference_high": "try_cast(nullif(trim(reference_high), '') AS DOUBLE)",
    "abnormal_flag": "upper(trim(abnormal_flag))",
    "collected_at": "_collected",
    "reported_at": "_reported",
}


def date_bounds(month: str) -> dict[str, datetime]:
    """Dates before 1900 or after today are data errors; a day's margin covers time zones ahead of UTC."""
    start = datetime(int(month[:4]), int(month[5:7]), 1)
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1)
    latest = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)
    return {"earliest": datetime(1900, 1, 1), "latest": latest, "month_start": start, "month_end": end}


# HMAC-SHA256 (RFC 2104) spelled in SQL; equal to Python's hmac, checked in the tests.
HMAC = "sha256($opad || unhex(sha256($ipad || patient_id::BLOB)))"


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer HMAC-SHA256 pads of a key (RFC 2104)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
