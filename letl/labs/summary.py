"""The monthly lab summary: one row per hospital and test, over the published results.

A flat, wide table, so that the explorer and plain DuckDB show it as it is:

- ``results``: every published result; ``abnormal_rate``: the share of them flagged H, L or A
  (HL7's "abnormal", which is how qualitative results are flagged); no flag is not abnormal, so
  that ``abnormal_rate * results`` counts the flagged ones;
- ``mean``, ``min``, ``max`` over plain numbers only (``numeric_results`` of them): a censored
  value's number is a bound, not a measurement, so it is counted apart (``censored_results``)
  and left out of the statistics;
- one count per coded result (schema.RESULT_CODES: ``positive`` ... ``invalid``, spaces and
  hyphens as underscores) and ``other`` for text outside the vocabulary;
- ``positivity_rate`` = (positive + detected + reactive) / (those + negative + not detected +
  non-reactive): indeterminate, invalid and other results count in neither; NULL when the
  denominator is 0 (a numeric test).

Results files written before results could be text have no result_comparator / result_text:
there every result is a plain number, and the summary reads them as such.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from letl.labs.schema import NEGATIVE_CODES, OTHER_RESULT, POSITIVE_CODES, RESULT_CODES, RESULT_KIND_COLUMNS


def column_name(code: str) -> str:
    """The summary column counting one coded result: "not detected" -> not_detected."""
    return code.replace(" ", "_").replace("-", "_")


def _count(codes) -> str:
    return "count(*) FILTER (WHERE result_text IN ({}))".format(", ".join(f"'{c}'" for c in codes))


_POSITIVE, _DECIDED = _count(POSITIVE_CODES), _count(POSITIVE_CODES + NEGATIVE_CODES)
_PLAIN = "result_comparator IS NULL AND result_value IS NOT NULL"
SUMMARY_SQL = f"""
    SELECT hospital_id, test_code, any_value(test_name) AS test_name, any_value(unit) AS unit,
           count(*) AS results, avg(result_value) FILTER (WHERE {_PLAIN}) AS mean,
           min(result_value) FILTER (WHERE {_PLAIN}) AS min, max(result_value) FILTER (WHERE {_PLAIN}) AS max,
           avg(coalesce(abnormal_flag IN ('H', 'L', 'A'), false)::INTEGER) AS abnormal_rate,
           count(*) FILTER (WHERE {_PLAIN}) AS numeric_results, count(result_comparator) AS censored_results,
           {", ".join(f"{_count([c])} AS {column_name(c)}" for c in (*RESULT_CODES, OTHER_RESULT))},
           CASE WHEN {_DECIDED} > 0 THEN {_POSITIVE} / {_DECIDED} END AS positivity_rate
    FROM {{source}}
    GROUP BY hospital_id, test_code
    ORDER BY hospital_id, test_code
"""


def summarize(results: Path) -> pa.Table:
    """The summary of one month's published results file."""
    import duckdb

    missing = [c for c in RESULT_KIND_COLUMNS if c not in pq.read_schema(results).names]
    source = "read_parquet(?)" if not missing else \
        "(SELECT *, {} FROM read_parquet(?))".format(", ".join(f"NULL::VARCHAR AS {c}" for c in missing))
    with duckdb.connect() as con:
        return con.sql(SUMMARY_SQL.format(source=source), params=[str(results)]).to_arrow_table()
