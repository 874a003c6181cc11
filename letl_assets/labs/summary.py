"""The monthly lab summary: per hospital and test, statistics of the published results."""

from pathlib import Path

import pyarrow as pa

SUMMARY_SQL = """
    SELECT hospital_id, test_code, any_value(test_name) AS test_name, any_value(unit) AS unit,
           count(*) AS results, avg(result_value) AS mean, min(result_value) AS min,
           max(result_value) AS max, avg((abnormal_flag IN ('H', 'L'))::INTEGER) AS abnormal_rate
    FROM read_parquet(?)
    GROUP BY hospital_id, test_code
    ORDER BY hospital_id, test_code
"""


def summarize(results: Path) -> pa.Table:
    """The summary of one month's published results file."""
    import duckdb

    with duckdb.connect() as con:
        return con.sql(SUMMARY_SQL, params=[str(results)]).to_arrow_table()
