"""Test names beside codes and units in headers, read from the lake's own data."""

import pyarrow as pa
import pytest
import sqlalchemy as sa

from letl.lake.catalog import access_log
from letl.query.labels import Labels, for_explorer, headers, result_unit, value_column
from letl.query.service import Explorer
from tests.query.test_explorer_service import RESULTS, SUMMARY, raw


@pytest.fixture(scope="module")
def shared_ex(module_lab_lake):
    service = Explorer(module_lab_lake, "analyst")
    yield service
    service.close()


def test_names_and_units_come_from_the_data(shared_ex, module_lab_lake):
    labels = for_explorer(shared_ex, user="ana")
    expected = dict(raw(module_lab_lake, RESULTS, "SELECT test_code, any_value(test_name) FROM t GROUP BY 1"))
    assert labels.names == expected and "2345-7" in expected
    one_unit = raw(module_lab_lake, RESULTS,
                   "SELECT test_code, any_value(unit) FROM t GROUP BY 1 HAVING count(DISTINCT unit) = 1")
    assert labels.units == dict(one_unit)
    assert labels.label("2345-7") == f"2345-7 {expected['2345-7']}"
    assert labels.label("0000-0") == "0000-0"  # a code the data does not name stays bare
    assert for_explorer(shared_ex, user="ana") is labels  # read once per explorer


def test_labels_read_the_small_summary_and_are_audited(lab_lake):
    ex = Explorer(lab_lake, "analyst")
    try:
        for_explorer(ex, user="ana")
    finally:
        ex.close()
    with lab_lake.catalog.engine.begin() as conn:
        read = conn.execute(sa.select(access_log.c.version_id, access_log.c.user)
                            .where(access_log.c.kind == "query")).all()
    summary = {v.version_id for v in lab_lake.catalog.list_versions(asset_key=SUMMARY)
               if v.version_id in lab_lake.catalog.latest_ids()}
    assert {r.version_id for r in read} == summary and {r.user for r in read} == {"ana"}


@pytest.mark.parametrize("name,is_value", [
    ("result_value", True), ("mean", True), ("avg_result_value", True), ("p90_result_value", True),
    ("count_distinct_result_value", False), ("count_all", False), ("positivity_rate", False), ("hospital_id", False),
])
def test_which_columns_carry_the_unit(name, is_value):
    assert value_column(name) is is_value


def test_header_unit_only_when_the_rows_have_one():
    labels = Labels({"2345-7": "Glucose"}, {"2345-7": "mg/dL", "718-7": "g/dL"})
    one = pa.table({"unit": ["mg/dL", "mg/dL", None], "result_value": [98.0, 101.0, None]})
    assert headers(one, labels) == {"result_value": "result_value (mg/dL)"}
    two = pa.table({"unit": ["mg/dL", "g/dL"], "result_value": [98.0, 13.1]})
    assert headers(two, labels) == {}
    by_code = pa.table({"test_code": ["718-7", "718-7"], "avg_result_value": [13.0, 14.0]})
    assert headers(by_code, labels) == {"avg_result_value": "avg_result_value (g/dL)"}
    counted = pa.table({"hospital_id": ["H001"], "avg_result_value": [98.5]})
    assert result_unit(counted, labels) is None
    assert headers(counted, labels, hint="mg/dL") == {"avg_result_value": "avg_result_value (mg/dL)"}
