"""Server-side sort and pages of builder queries, against DuckDB itself."""

import duckdb
import pandas as pd
import pytest

from letl.query import paging
from letl.query.paging import Paging
from letl.query.query_builder import Aggregate, Filter, Query, build
from letl.query.share import paging_from_url, paging_to_url

SCHEMA = {"hospital": "VARCHAR", "code": "VARCHAR", "value": "DOUBLE"}


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    # Many ties in every column: a page boundary inside a run of equal values is where rows repeat or vanish.
    con.execute("CREATE TABLE t AS SELECT 'H' || (i % 3) AS hospital, 'C' || (i % 5) AS code, "
                "(i % 7)::DOUBLE AS value FROM range(1, 1001) r(i)")
    yield con
    con.close()


def rows(con, query: Query) -> list[tuple]:
    sql, params = build(query, SCHEMA)
    return con.execute(sql, params).fetchall()


def all_pages(con, query: Query, order: Paging) -> list[tuple]:
    full = paging.ordered(query, SCHEMA, order)
    total = con.execute(*_count(full)).fetchall()[0][0]
    got = []
    for number in range(1, paging.pages(total, order.size) + 1):
        got += rows(con, paging.page(full, Paging(order.sort, order.desc, number, order.size)))
    return got


def _count(query: Query):
    sql, params = build(query, SCHEMA)
    return paging.count_sql(sql), params


@pytest.mark.parametrize("sort,desc", [("value", True), ("code", False), ("hospital", True)])
def test_pages_cover_the_sorted_result_exactly_once(con, sort, desc):
    query = Query("t", filters=[Filter("value", ">=", 2.0)])
    got = all_pages(con, query, Paging(sort, desc, 1, 64))
    direction = "DESC" if desc else "ASC"
    expected = con.execute(f"SELECT * FROM t WHERE value >= 2 ORDER BY {sort} {direction}").fetchall()
    assert len(got) == len(expected)
    assert sorted(got) == sorted(expected)  # every row once, none twice
    key = [r[list(SCHEMA).index(sort)] for r in got]
    assert key == sorted(key, reverse=desc)  # sorted over the whole result, not within each page


def test_an_aggregate_sorts_by_its_alias_with_group_ties(con):
    query = Query("t", group_by=["hospital", "code"], aggregates=[Aggregate("count", alias="n")])
    got = all_pages(con, query, Paging("n", True, 1, 4))
    expected = con.execute("SELECT hospital, code, count(*) AS n FROM t GROUP BY ALL "
                           "ORDER BY n DESC, hospital, code").fetchall()
    assert got == expected


def test_the_row_limit_bounds_the_pages(con):
    full = paging.ordered(Query("t", limit=130), SCHEMA, Paging("value", False, 1, 50))
    assert con.execute(*_count(full)).fetchall()[0][0] == 130
    assert len(rows(con, paging.page(full, Paging("value", False, 3, 50)))) == 30
    assert rows(con, paging.page(full, Paging("value", False, 4, 50))) == []


def test_default_order_and_page_sql():
    full = paging.ordered(Query("t", group_by=["code"], aggregates=[Aggregate("count")]), SCHEMA, Paging())
    sql, _ = build(paging.page(full, Paging(page=3, size=50)), SCHEMA)
    assert sql.endswith('ORDER BY "code" ASC\nLIMIT 50\nOFFSET 100')
    with pytest.raises(ValueError, match="cannot sort by 'value'"):
        paging.ordered(Query("t", group_by=["code"]), SCHEMA, Paging("value"))
    with pytest.raises(ValueError, match="offset must be a non-negative int"):
        build(Query("t", offset=-1), SCHEMA)


def test_page_sizes_stay_under_the_row_cap():
    assert paging.sizes(10_000) == list(paging.SIZES)
    assert paging.sizes(600) == [50, 100, 500]
    assert paging.sizes(20) == [20]


def test_paging_url_round_trip():
    order = Paging("value", True, 7, 500)
    assert paging_to_url(order) == {"page": "7", "size": "500", "sort": "value", "dir": "desc"}
    assert paging_from_url(paging_to_url(order)) == order
    assert paging_from_url({}) == Paging()
    assert paging_from_url({"page": ["2"]}) == Paging(page=2)


@pytest.mark.parametrize("params,msg", [
    ({"page": "0"}, "page must be a positive"), ({"page": "-1"}, "page must be a positive"),
    ({"size": "1e3"}, "size must be a positive"), ({"dir": "up"}, "dir must be asc or desc"),
])
def test_bad_paging_urls_are_refused(params, msg):
    with pytest.raises(ValueError, match=msg):
        paging_from_url(params)


def test_frame_matches_pandas_sort(con):
    """A page in the middle equals the same slice of pandas' stable sort over the whole table."""
    frame = con.execute("SELECT * FROM t").df()
    full = paging.ordered(Query("t"), SCHEMA, Paging("value", False, 1, 100))
    got = pd.DataFrame(rows(con, paging.page(full, Paging("value", False, 4, 100))), columns=list(SCHEMA))
    expected = frame.sort_values(["value", "hospital", "code"], kind="stable").iloc[300:400]
    assert sorted(map(tuple, got.values)) == sorted(map(tuple, expected.values))
