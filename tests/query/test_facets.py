"""Facets: the top values with counts, as DuckDB counts them, within the cost guard."""

import pytest

from letl.query import facets as fc
from letl.query.query_builder import Filter
from letl.query.service import Explorer, Settings
from tests.query.test_explorer_service import RESULTS, raw


@pytest.fixture(scope="module")
def shared_ex(module_lab_lake):
    service = Explorer(module_lab_lake, "analyst")
    yield service
    service.close()


def test_a_facet_is_the_top_values_with_counts_under_the_filters(shared_ex, module_lab_lake):
    filters = [Filter("hospital_id", "in", ["H001", "H003"])]
    sql, params = shared_ex.build(fc.facet_query("lab_results", "test_code", filters, top=4))
    assert sql.count("GROUP BY") == 1 and sql.endswith("LIMIT 5")
    got = fc.facet("test_code", shared_ex.run(sql, params, trusted=True).table, top=4)
    expected = raw(module_lab_lake, RESULTS, "SELECT test_code, count(*) FROM t WHERE hospital_id IN ('H001', 'H003') "
                   "GROUP BY 1 ORDER BY 2 DESC, 1")
    assert got.values == expected[:4] and got.more is (len(expected) > 4)


def test_default_facets_are_low_cardinality_codes_first(shared_ex, module_lab_lake):
    picked = fc.default_columns(shared_ex, "lab_results")
    assert picked == ["hospital_id", "test_code", "abnormal_flag"]
    for column in picked:
        (distinct,), = raw(module_lab_lake, RESULTS, f"SELECT count(DISTINCT {column}) FROM t")
        assert 2 <= distinct <= fc.MAX_DISTINCT
    (patients,), = raw(module_lab_lake, RESULTS, "SELECT count(DISTINCT patient_key) FROM t")
    assert patients > fc.MAX_DISTINCT  # an identifier with many values is no facet


def test_no_default_facets_past_the_confirm_threshold(module_lab_lake):
    ex = Explorer(module_lab_lake, "analyst", Settings(confirm_bytes=1))
    try:
        assert fc.default_columns(ex, "lab_results") == []
    finally:
        ex.close()
