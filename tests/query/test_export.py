"""Full-result exports in CSV, JSON and Parquet, equal to what DuckDB returns, and audited."""

import datetime as dt
import io
import json
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from letl.lake.catalog import access_log
from letl.query.export import format_of, table_bytes
from letl.query.query_builder import Query
from letl.query.service import Explorer, Settings, sql_hash
from tests.query.test_explorer_service import RESULTS, raw

SQL = "SELECT hospital_id, test_code, result_value, collected_at FROM lab_results ORDER BY ALL"
PLAIN = "SELECT hospital_id, test_code, result_value, collected_at FROM t ORDER BY ALL"


def read(path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    return pd.DataFrame(json.loads(path.read_text()))


@pytest.mark.parametrize("hand_written", [False, True], ids=["builder", "sql-worker"])
@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_export_holds_the_full_result_up_to_the_cap(lab_lake, tmp_path, fmt, hand_written):
    ex = Explorer(lab_lake, "analyst", Settings(row_cap=10, download_cap=2_000))
    try:
        columns = ["hospital_id", "test_code", "result_value", "collected_at"]
        query = Query("lab_results", columns=columns, order_by=columns)
        sql, params = (SQL, None) if hand_written else ex.build(query)
        rows = ex.export(sql, params, tmp_path / f"out.{fmt}", trusted=not hand_written, user="ana",
                         read=None if hand_written else ex.estimate(query))
    finally:
        ex.close()
    expected = pd.DataFrame(raw(lab_lake, RESULTS, PLAIN),
                            columns=["hospital_id", "test_code", "result_value", "collected_at"]).head(2_000)
    got = read(tmp_path / f"out.{fmt}")
    assert rows == len(got) == 2_000
    got["collected_at"] = pd.to_datetime(got["collected_at"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    with lab_lake.catalog.engine.begin() as conn:
        logged = conn.execute(sa.select(access_log.c.sql_hash, access_log.c.rows).where(
            access_log.c.kind == "query")).all()
    assert {(h, n) for h, n in logged} == {(sql_hash(sql.strip(), params), 2_000)}


@pytest.mark.parametrize("hand_written", [False, True], ids=["builder", "sql-worker"])
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_an_export_with_repeated_column_names_is_refused_and_writes_nothing(lab_lake, tmp_path, fmt, hand_written):
    """A JSON row is an object: the second 'unit' would silently replace the first."""
    from letl.query.engine import DuplicateColumns

    ex = Explorer(lab_lake, "analyst", Settings(row_cap=10, download_cap=2_000))
    sql = "SELECT unit, result_value AS unit FROM lab_results"
    out = tmp_path / "out"
    out.mkdir()
    try:
        # Its own class through the SQL worker too, so that the refusal is audited as what it is.
        with pytest.raises(DuplicateColumns) as refused:
            ex.export(sql, None, out / f"result.{fmt}", trusted=not hand_written, user="ana")
    finally:
        ex.close()
    assert str(refused.value) == "the result has 2 columns named 'unit': give them distinct names (... AS unit_2)"
    assert list(out.iterdir()) == []


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match=r"cannot export to 'out\.xlsx': name it \.csv, \.json or \.parquet"):
        format_of("/tmp/out.xlsx")


def test_json_values_are_plain_json():
    table = pa.table({"d": [dt.date(2024, 1, 2)], "t": [dt.datetime(2024, 1, 2, 3, 4, 5)],
                      "x": pa.array([Decimal("13097")], pa.decimal128(38, 0)), "f": [float("nan")], "s": ["é"]})
    assert json.loads(table_bytes(table, "json")) == [
        {"d": "2024-01-02", "t": "2024-01-02T03:04:05", "x": 13097, "f": None, "s": "é"}]
    parquet = pq.read_table(io.BytesIO(table_bytes(table, "parquet")))
    assert parquet.schema.field("x").type == pa.decimal128(38, 0) and parquet.to_pylist()[0]["x"] == Decimal("13097")

