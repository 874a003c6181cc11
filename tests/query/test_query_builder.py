"""Query builder: SQL shape, execution against DuckDB vs pandas, injection, URL round trip."""

import datetime as dt

import duckdb
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from letl.query.query_builder import (
    AGG_FUNCS,
    OPS,
    Aggregate,
    Filter,
    OrderBy,
    Query,
    build,
)
from letl.query.share import from_url_params, to_url_params

SCHEMA = {"site": "VARCHAR", "test": "VARCHAR", "value": "DOUBLE", "n": "BIGINT", "day": "DATE"}
VIEW = "lab_results"


@pytest.fixture
def data() -> pd.DataFrame:
    return pd.DataFrame({
        "site": ["a", "a", "b", "b", "b", "c", "c", None],
        "test": ["hb", "glu", "hb", "hb", "glu", "hb", "glu", "hb"],
        "value": [1.0, 2.5, 3.0, 4.0, 5.5, 6.0, None, 8.0],
        "n": [1, 2, 3, 4, 5, 6, 7, 8],
        "day": pd.to_datetime(["2024-03-01", "2024-03-01", "2024-03-02", "2024-03-03",
                               "2024-03-03", "2024-03-04", "2024-03-05", "2024-03-05"]).date,
    })


@pytest.fixture
def con(data: pd.DataFrame):
    c = duckdb.connect()
    c.register("src_df", data)
    c.execute(f'CREATE TABLE "{VIEW}" AS SELECT site, test, value, n, CAST(day AS DATE) AS day FROM src_df')
    c.unregister("src_df")
    assert {r[0]: r[1] for r in c.execute(f'DESCRIBE "{VIEW}"').fetchall()} == SCHEMA
    yield c
    c.close()


def run(con, query: Query) -> pd.DataFrame:
    sql, params = build(query, SCHEMA, allowed_datasets=[VIEW])
    return con.execute(sql, params).df()


# --------------------------------------------------------------------------- SQL shape

@pytest.mark.parametrize("op,value,fragment,params", [
    ("=", "a", '"site" = ?', ["a"]),
    ("!=", "a", '"site" <> ?', ["a"]),
    ("<", "a", '"site" < ?', ["a"]),
    ("<=", "a", '"site" <= ?', ["a"]),
    (">", "a", '"site" > ?', ["a"]),
    (">=", "a", '"site" >= ?', ["a"]),
    ("between", ("a", "b"), '"site" BETWEEN ? AND ?', ["a", "b"]),
    ("in", ["a", "b", "c"], '"site" IN (?, ?, ?)', ["a", "b", "c"]),
    ("is_null", None, '"site" IS NULL', []),
    ("not_null", None, '"site" IS NOT NULL', []),
    ("contains", "x", 'contains(CAST("site" AS VARCHAR), ?)', ["x"]),
])
def test_filter_sql_shape(op, value, fragment, params):
    sql, got = build(Query(VIEW, columns=["site"], filters=[Filter("site", op, value)]), SCHEMA)
    assert sql == f'SELECT "site"\nFROM "{VIEW}"\nWHERE {fragment}'
    assert got == params


def test_every_op_is_covered_by_the_shape_test():
    assert set(OPS) == {"=", "!=", "<", "<=", ">", ">=", "between", "in", "is_null", "not_null", "contains"}


@pytest.mark.parametrize("agg,expr,params", [
    (Aggregate("count"), 'count(*) AS "count_all"', []),
    (Aggregate("count", "value"), 'count("value") AS "count_value"', []),
    (Aggregate("count_distinct", "site"), 'count(DISTINCT "site") AS "count_distinct_site"', []),
    (Aggregate("sum", "value"), 'sum("value") AS "sum_value"', []),
    (Aggregate("avg", "value", "mean_v"), 'avg("value") AS "mean_v"', []),
    (Aggregate("min", "value"), 'min("value") AS "min_value"', []),
    (Aggregate("max", "value"), 'max("value") AS "max_value"', []),
    (Aggregate("median", "value"), 'median("value") AS "median_value"', []),
    (Aggregate("quantile", "value", param=0.9), 'quantile_cont("value", ?) AS "p90_value"', [0.9]),
])
def test_aggregate_sql_shape(agg, expr, params):
    sql, got = build(Query(VIEW, aggregates=[agg]), SCHEMA)
    assert sql == f'SELECT {expr}\nFROM "{VIEW}"'
    assert got == params


def test_every_aggregate_func_is_covered():
    assert set(AGG_FUNCS) == {"count", "count_distinct", "sum", "avg", "min", "max", "median", "quantile"}


def test_group_by_with_aggregates_filters_order_limit_shape():
    q = Query(VIEW, group_by=["site"],
              aggregates=[Aggregate("quantile", "value", "p50", 0.5), Aggregate("count")],
              filters=[Filter("test", "=", "hb"), Filter("n", "in", [1, 2])],
              order_by=[("p50", "desc"), "site"], limit=10)
    sql, params = build(q, SCHEMA)
    assert sql == ('SELECT "site", quantile_cont("value", ?) AS "p50", count(*) AS "count_all"\n'
                   f'FROM "{VIEW}"\n'
                   'WHERE "test" = ?\n  AND "n" IN (?, ?)\n'
                   'GROUP BY "site"\n'
                   'ORDER BY "p50" DESC, "site" ASC\n'
                   'LIMIT 10')
    # params follow the textual order of the placeholders: SELECT first, then WHERE
    assert params == [0.5, "hb", 1, 2]


def test_no_columns_selects_star():
    assert build(Query(VIEW), SCHEMA) == (f'SELECT *\nFROM "{VIEW}"', [])


# --------------------------------------------------------------------------- execution vs pandas

def test_execute_filters_match_pandas(con, data):
    cases = [
        (Filter("value", ">", 3.0), data["value"] > 3.0),
        (Filter("value", "<=", 3.0), data["value"] <= 3.0),
        (Filter("site", "!=", "b"), data["site"].notna() & (data["site"] != "b")),
        (Filter("n", "between", (2, 5)), data["n"].between(2, 5)),
        (Filter("site", "in", ["a", "c"]), data["site"].isin(["a", "c"])),
        (Filter("value", "is_null"), data["value"].isna()),
        (Filter("site", "not_null"), data["site"].notna()),
        (Filter("test", "contains", "l"), data["test"].str.contains("l")),
        (Filter("day", ">=", dt.date(2024, 3, 3)), data["day"] >= dt.date(2024, 3, 3)),
    ]
    for flt, mask in cases:
        got = run(con, Query(VIEW, columns=["n"], filters=[flt], order_by=["n"]))
        expected = data.loc[mask, "n"].sort_values().tolist()
        assert got["n"].tolist() == expected, flt
        assert expected, f"test case {flt} should select something"


def test_execute_group_by_aggregates_match_pandas(con, data):
    q = Query(VIEW, group_by=["test"], aggregates=[
        Aggregate("count"), Aggregate("count", "value"), Aggregate("count_distinct", "site"),
        Aggregate("sum", "value"), Aggregate("avg", "value"), Aggregate("min", "n"),
        Aggregate("max", "n"), Aggregate("median", "value"), Aggregate("quantile", "value", "q90", 0.9),
    ], order_by=["test"])
    got = run(con, q).set_index("test")
    g = data.groupby("test")
    assert got["count_all"].tolist() == g.size().tolist()
    assert got["count_value"].tolist() == g["value"].count().tolist()
    assert got["count_distinct_site"].tolist() == g["site"].nunique().tolist()
    assert got["sum_value"].tolist() == pytest.approx(g["value"].sum().tolist())
    assert got["avg_value"].tolist() == pytest.approx(g["value"].mean().tolist())
    assert got["min_n"].tolist() == g["n"].min().tolist()
    assert got["max_n"].tolist() == g["n"].max().tolist()
    assert got["median_value"].tolist() == pytest.approx(g["value"].median().tolist())
    assert got["q90"].tolist() == pytest.approx(g["value"].quantile(0.9).tolist())
    assert got.index.tolist() == ["glu", "hb"]


def test_execute_filtered_grouped_ordered_limited(con, data):
    q = Query(VIEW, group_by=["site"], aggregates=[Aggregate("sum", "n", "total")],
              filters=[Filter("site", "not_null"), Filter("day", "between", (dt.date(2024, 3, 1), dt.date(2024, 3, 4)))],
              order_by=[OrderBy("total", desc=True)], limit=2)
    got = run(con, q)
    sub = data[data["site"].notna() & data["day"].between(dt.date(2024, 3, 1), dt.date(2024, 3, 4))]
    expected = sub.groupby("site")["n"].sum().sort_values(ascending=False).head(2)
    assert got["site"].tolist() == expected.index.tolist()
    assert got["total"].tolist() == expected.tolist()


def test_execute_plain_columns_with_limit(con, data):
    got = run(con, Query(VIEW, columns=["n", "site"], order_by=[("n", "desc")], limit=3))
    assert list(got.columns) == ["n", "site"]
    assert got["n"].tolist() == [8, 7, 6]


# --------------------------------------------------------------------------- injection

@pytest.mark.parametrize("payload", ["' OR 1=1 --", "'; DROP TABLE lab_results; --", '" OR 1=1 --',
                                     "a' UNION SELECT * FROM lab_results --"])
def test_injection_in_values_is_a_plain_value(con, payload):
    for flt in (Filter("site", "=", payload), Filter("site", "in", ["a", payload]),
                Filter("site", "contains", payload), Filter("site", "between", (payload, payload))):
        sql, params = build(Query(VIEW, columns=["site"], filters=[flt]), SCHEMA)
        assert payload not in sql
        rows = con.execute(sql, params).fetchall()
        assert rows == ([("a",), ("a",)] if flt.op == "in" else [])
    assert con.execute(f'SELECT count(*) FROM "{VIEW}"').fetchone() == (8,)


def test_value_matching_payload_is_found_as_literal(con):
    payload = "'; DROP TABLE lab_results; --"
    con.execute(f'INSERT INTO "{VIEW}" (site, n) VALUES (?, 99)', [payload])
    got = run(con, Query(VIEW, columns=["n"], filters=[Filter("site", "=", payload)]))
    assert got["n"].tolist() == [99]


BAD_NAMES = ['site" OR 1=1 --', 'site"; DROP TABLE lab_results; --', "nope", "SITE", "", "site\x00",
             "*", "1=1"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_column_names_rejected(bad):
    attempts = [
        Query(VIEW, columns=[bad]),
        Query(VIEW, filters=[Filter(bad, "=", 1)]),
        Query(VIEW, group_by=[bad], aggregates=[Aggregate("count")]),
        Query(VIEW, aggregates=[Aggregate("sum", bad)]),
        Query(VIEW, order_by=[bad]),
        Query(VIEW, group_by=["site"], aggregates=[Aggregate("count")], order_by=[bad]),
    ]
    for q in attempts:
        with pytest.raises(ValueError, match=r"(?i)unknown|invalid|needs|must"):
            build(q, SCHEMA)


@pytest.mark.parametrize("func", ["sum(value)); DROP TABLE x; --", "SUM", "string_agg", "read_csv", ""])
def test_bad_aggregate_funcs_rejected(func):
    with pytest.raises(ValueError, match="unknown aggregate function"):
        build(Query(VIEW, aggregates=[Aggregate(func, "value")]), SCHEMA)


@pytest.mark.parametrize("alias", ['x" FROM lab_results; --', "a b", "1x", "x;--", ""])
def test_bad_alias_rejected(alias):
    with pytest.raises(ValueError, match="alias"):
        build(Query(VIEW, aggregates=[Aggregate("count", alias=alias)]), SCHEMA)


@pytest.mark.parametrize("op", ["LIKE", "= 1 OR 1=1 --", "==", ""])
def test_bad_ops_rejected(op):
    with pytest.raises(ValueError, match="unknown filter operator"):
        build(Query(VIEW, filters=[Filter("site", op, "a")]), SCHEMA)


@pytest.mark.parametrize("dataset", ['lab_results" ; DROP TABLE lab_results; --', "other",
                                     "read_parquet('/etc/passwd')", ""])
def test_bad_dataset_rejected(dataset):
    with pytest.raises(ValueError, match="dataset"):
        build(Query(dataset), SCHEMA, allowed_datasets=[VIEW])


def test_dataset_with_quote_rejected_even_without_allow_list():
    with pytest.raises(ValueError, match="dataset"):
        build(Query('x" UNION SELECT 1 --'), SCHEMA)


@pytest.mark.parametrize("order", [("site", "desc; DROP TABLE x"), ("site", "sideways"), 42, ("site",)])
def test_bad_order_direction_rejected(order):
    with pytest.raises(ValueError, match="order_by"):
        build(Query(VIEW, order_by=[order]), SCHEMA)


@pytest.mark.parametrize("limit", ["10; DROP TABLE x", -1, 1.5, True])
def test_bad_limit_rejected(limit):
    with pytest.raises(ValueError, match="limit"):
        build(Query(VIEW, limit=limit), SCHEMA)


@pytest.mark.parametrize("flt,msg", [
    (Filter("site", "in", []), "non-empty"),
    (Filter("site", "between", ("a",)), "pair"),
    (Filter("site", "=", None), "is_null"),
    (Filter("site", "is_null", "x"), "no value"),
    (Filter("site", "contains", 3), "string"),
])
def test_malformed_filter_values_rejected(flt, msg):
    with pytest.raises(ValueError, match=msg):
        build(Query(VIEW, filters=[flt]), SCHEMA)


@pytest.mark.parametrize("agg,msg", [
    (Aggregate("quantile", "value"), "fraction"),
    (Aggregate("quantile", "value", param=1.5), "fraction"),
    (Aggregate("sum", None), "needs a column"),
    (Aggregate("sum", "value", param=0.5), "no parameter"),
])
def test_malformed_aggregates_rejected(agg, msg):
    with pytest.raises(ValueError, match=msg):
        build(Query(VIEW, aggregates=[agg]), SCHEMA)


def test_non_grouped_column_rejected_when_aggregating():
    with pytest.raises(ValueError, match="group_by"):
        build(Query(VIEW, columns=["test"], group_by=["site"], aggregates=[Aggregate("count")]), SCHEMA)


def test_schema_column_with_quote_rejected():
    with pytest.raises(ValueError, match="quotes"):
        build(Query(VIEW), {**SCHEMA, 'evil"col': "VARCHAR"})


# --------------------------------------------------------------------------- URL round trip

def test_url_round_trip_example():
    q = Query(VIEW, columns=[], group_by=["site"],
              filters=[Filter("n", "between", (2, 5)), Filter("site", "in", ["a", "b"]),
                       Filter("day", ">=", dt.date(2024, 3, 2)), Filter("value", "not_null"),
                       Filter("site", "=", "' OR 1=1 --")],
              aggregates=[Aggregate("quantile", "value", "p9", 0.9), Aggregate("count")],
              order_by=[("p9", "desc")], limit=5)
    params = to_url_params(q)
    assert set(params) == {"q"} and all(isinstance(v, str) for v in params.values())
    back = from_url_params(params)
    assert back == q
    assert build(back, SCHEMA) == build(q, SCHEMA)
    assert from_url_params({"q": [params["q"]]}) == q  # parse_qs-style lists


names = st.sampled_from(list(SCHEMA))
scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20), st.dates(), st.booleans())
filters = st.one_of(
    st.builds(Filter, names, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), scalars),
    st.builds(Filter, names, st.just("between"), st.tuples(scalars, scalars)),
    st.builds(Filter, names, st.just("in"), st.lists(scalars, min_size=1, max_size=4)),
    st.builds(Filter, names, st.sampled_from(["is_null", "not_null"]), st.none()),
    st.builds(Filter, names, st.just("contains"), st.text(min_size=1, max_size=10)),
)
aggregates = st.one_of(
    st.builds(Aggregate, st.sampled_from(["count", "sum", "min", "max"]), names,
              st.one_of(st.none(), st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True))),
    st.builds(Aggregate, st.just("quantile"), names, st.none(), st.floats(0, 1)),
)
queries = st.builds(
    Query, st.text(max_size=20), st.lists(names, max_size=3), st.lists(filters, max_size=4),
    st.lists(names, max_size=2), st.lists(aggregates, max_size=3),
    st.lists(st.builds(OrderBy, names, st.booleans()), max_size=2), st.one_of(st.none(), st.integers(0, 10**9)),
)


@settings(max_examples=200, deadline=None)
@given(queries)
def test_url_round_trip_property(q):
    assert from_url_params(to_url_params(q)) == q


@pytest.mark.parametrize("bad", [{}, {"q": "not json"}, {"q": "[]"}, {"q": '{"v": 2, "dataset": "x"}'},
                                 {"q": '{"v": 1, "dataset": "x", "limit": "5; DROP"}'},
                                 {"q": '{"v": 1, "dataset": "x", "filters": [["a", "="]]}'},
                                 {"q": '{"v": 1, "dataset": "x", "filters": [["a", "=", {"$evil": 1}]]}'}])
def test_from_url_params_rejects_garbage(bad):
    with pytest.raises(ValueError):
        from_url_params(bad)


def test_url_decoded_injection_still_rejected_by_build():
    params = to_url_params(Query(VIEW, columns=['site" FROM x; --']))
    with pytest.raises(ValueError, match="column"):
        build(from_url_params(params), SCHEMA)
