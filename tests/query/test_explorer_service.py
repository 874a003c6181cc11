"""The explorer's query service on a lake built by the real labs_job: views, pruning, cache, roles, audit."""

import io
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from letl.gros.fs import GrosFileSystem
from letl.lake.catalog import access_log
from letl.lake.catalog import query_log as query_events
from letl.lake.errors import Conflict
from letl.query.datasets import at_tag, history, lineage, load_datasets, view_names, visible
from letl.query.engine import QueryError, QueryTimeout
from letl.query.query_builder import Aggregate, Filter, Query
from letl.query.service import Explorer, Settings, sql_hash
from letl.query.sql_guard import UnsafeSQL

RESULTS, REJECTS, SUMMARY = "labs/lab_results", "labs/lab_results_rejects", "labs/lab_results_summary"


def raw(lake, key, sql, partitions=None, *, view="t"):
    """The same question asked of plain DuckDB over the latest version files, as the view ``view``."""
    files = [str(lake.local_path(v)) for v in lake.catalog.list_versions(asset_key=key)
             if v.version_id in lake.catalog.latest_ids() and (partitions is None or v.partition in partitions)]
    con = duckdb.connect()
    con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({files!r})")
    return con.sql(sql).fetchall()


@pytest.fixture
def ex(lab_lake):
    service = Explorer(lab_lake, "analyst")
    yield service
    service.close()


@pytest.fixture(scope="module")
def shared_ex(module_lab_lake):
    """One explorer, and so one worker process, for the module's tests that assert nothing about the lake's state.

    They only read its datasets; the audit rows their queries add are asserted by the tests with a lake of their own.
    """
    service = Explorer(module_lab_lake, "analyst")
    yield service
    service.close()


def query_log(lake):
    with lake.catalog.engine.begin() as conn:
        return conn.execute(sa.select(access_log).where(access_log.c.kind == "query")).mappings().all()


def test_datasets_describe_themselves(lab_lake):
    found = {d.key: d for d in load_datasets(lab_lake)}
    assert set(found) == {RESULTS, REJECTS, SUMMARY}
    results = found[RESULTS]
    assert results.access == "deidentified" and found[REJECTS].access == "restricted"
    assert results.owners == ("team:lab-data",) and results.group == "labs"
    assert results.partitions == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert results.rows == sum(v.rows for v in results.latest) > 0
    assert found[SUMMARY].fresh_within is not None and found[SUMMARY].freshness().startswith("fresh")
    assert lineage(lab_lake, found[SUMMARY]) == ([RESULTS], [])
    assert lineage(lab_lake, results)[1] == [SUMMARY]
    assert [d.key for d in visible(list(found.values()), "analyst")] == [RESULTS, SUMMARY]
    assert len(visible(list(found.values()), "steward")) == 3


def test_view_names_are_short_unless_they_clash():
    assert view_names(["labs/lab_results", "team/x-y"]) == {"labs/lab_results": "lab_results", "team/x-y": "x_y"}
    assert view_names(["a/data", "b/data", "c/9lives"]) == {"a/data": "a_data", "b/data": "b_data", "c/9lives": "_9lives"}


def test_views_answer_like_raw_duckdb(shared_ex, module_lab_lake):
    ex, lab_lake = shared_ex, module_lab_lake
    ours = ex.run("SELECT hospital_id, count(*) AS n, round(avg(result_value), 6) AS m FROM lab_results "
                  "GROUP BY ALL ORDER BY ALL").table
    theirs = raw(lab_lake, RESULTS, "SELECT hospital_id, count(*), round(avg(result_value), 6) FROM t "
                 "GROUP BY ALL ORDER BY ALL")
    assert [tuple(r.values()) for r in ours.to_pylist()] == theirs
    assert set(ex.snapshot.views) == {"lab_results", "lab_results_summary"}  # no rejects for analysts


def test_partition_filter_reads_only_that_months_file(shared_ex):
    """DuckDB's own profile: the one-month query opens 1 of the 3 month files."""
    ex = shared_ex
    cur = ex.con.cursor()
    plan = cur.sql("EXPLAIN ANALYZE SELECT count(*) FROM lab_results WHERE partition_key = DATE '2024-02-01'").fetchall()
    text = plan[0][1]
    assert "Total Files Read: 1" in text and "partition_key=2024-02-01" in text
    everything = cur.sql("EXPLAIN ANALYZE SELECT count(*) FROM lab_results").fetchall()[0][1]
    assert "Total Files Read: 3" in everything
    est = ex.estimate(Query("lab_results", filters=[Filter("partition_key", "=", date(2024, 2, 1))]))
    assert [v.partition for v in est.versions] == ["2024-02-01"] and est.total == 3 and est.pruned
    between = ex.estimate(Query("lab_results", filters=[Filter("partition_key", "between",
                                                                (date(2024, 2, 1), date(2024, 3, 1)))]))
    assert [v.partition for v in between.versions] == ["2024-02-01", "2024-03-01"]
    assert between.bytes == sum(v.bytes for v in between.versions)


def test_full_scan_above_threshold_needs_confirmation(lab_lake):
    month_bytes = lab_lake.latest(RESULTS, "2024-01-01").bytes
    small = Explorer(lab_lake, "analyst", Settings(confirm_bytes=2 * month_bytes))
    whole = small.estimate(Query("lab_results"))
    month = small.estimate(Query("lab_results", filters=[Filter("partition_key", "=", date(2024, 1, 1))]))
    assert small.needs_confirmation(whole) and not small.needs_confirmation(month)
    assert not Explorer(lab_lake, "analyst").needs_confirmation(whole)  # default threshold: 512 MiB


def test_builder_query_matches_raw_duckdb_and_is_logged(ex, lab_lake):
    q = Query("lab_results", filters=[Filter("partition_key", "=", date(2024, 3, 1)), Filter("hospital_id", "in", ["H002"])],
              group_by=["test_code"], aggregates=[Aggregate("count"), Aggregate("max", "result_value")],
              order_by=["test_code"])
    sql, params = ex.build(q)
    assert "?" in sql and "H002" not in sql  # values travel as parameters
    est = ex.estimate(q)
    result = ex.run(sql, params, trusted=True, read=est, user="ana")
    theirs = raw(lab_lake, RESULTS, "SELECT test_code, count(*), max(result_value) FROM t WHERE hospital_id = 'H002' "
                 "GROUP BY ALL ORDER BY ALL", partitions={"2024-03-01"})
    assert [tuple(r.values()) for r in result.table.to_pylist()] == theirs
    logged = query_log(lab_lake)
    assert len(logged) == 1 and logged[0]["user"] == "ana" and logged[0]["rows"] == len(theirs)
    assert logged[0]["sql_hash"] == result.sql_hash and logged[0]["version_id"] == est.versions[0].version_id


def test_result_cache_is_keyed_by_versions(lab_lake):
    sql = "SELECT count(*) AS n FROM lab_results_summary"
    first = Explorer(lab_lake, "analyst")
    a, b = first.run(sql), first.run(sql)
    assert not a.cached and b.cached and a.table.equals(b.table)
    assert len(query_log(lab_lake)) == 2 * 3  # cached answers are audited too: 3 versions each time
    # A new version of one month: a new snapshot key, so the same SQL is answered afresh.
    version = lab_lake.latest(SUMMARY, "2024-01-01")
    table = lab_lake.read_table(version).slice(0, 1)
    lab_lake.write_version(SUMMARY, table, partition="2024-01-01", metadata=version.metadata)
    second = Explorer(lab_lake, "analyst")
    assert second.snapshot.key != first.snapshot.key
    fresh = second.run(sql)
    assert not fresh.cached and fresh.table.column("n")[0].as_py() == a.table.column("n")[0].as_py() - len(
        lab_lake.read_table(version)) + 1


def test_the_result_cache_is_bounded_in_bytes(lab_lake):
    ex = Explorer(lab_lake, "analyst", Settings(cache_bytes=64 * 1024))
    small, big = "SELECT count(*) AS n FROM lab_results", "SELECT * FROM lab_results"
    assert ex.run(big).table.nbytes > 64 * 1024
    assert not ex.run(big).cached  # too big to keep
    ex.run(small)
    assert ex.run(small).cached


def test_sql_is_guarded_capped_and_errors_are_clear(lab_lake):
    ex = Explorer(lab_lake, "analyst", Settings(row_cap=5))
    capped = ex.run("SELECT * FROM lab_results")
    assert capped.truncated and capped.table.num_rows == 5
    for bad in ("COPY lab_results TO '/tmp/x.csv'", "SELECT * FROM read_csv('/etc/passwd')",
                "ATTACH '/tmp/x.db'", "SELECT 1; SELECT 2", "INSTALL httpfs"):
        with pytest.raises(UnsafeSQL):
            ex.run(bad)
    with pytest.raises(UnsafeSQL, match="unknown dataset.*lab_results_rejects"):
        ex.run("SELECT * FROM lab_results_rejects")  # restricted: no such view for analysts
    assert query_log(lab_lake)[0]["rows"] == 5


@pytest.mark.parametrize("trusted", [True, False], ids=["in-process", "sql-worker"])
def test_a_result_with_repeated_column_names_is_refused_every_time_and_audited(ex, lab_lake, trusted):
    from letl.query.engine import DuplicateColumns

    sql = "SELECT unit, unit FROM lab_results"
    for _ in range(2):  # never cached: the second run is refused as the first
        with pytest.raises(DuplicateColumns, match=r"^the result has 2 columns named 'unit': give them distinct "
                                                   r"names \(\.\.\. AS unit_2\)$"):
            ex.run(sql, trusted=trusted, read=ex.estimate_sql(sql))
    with lab_lake.catalog.engine.begin() as conn:
        reasons = conn.execute(sa.select(query_events.c.detail).where(query_events.c.kind == "query-failed")).all()
    assert [r for (r,) in reasons] == ["duplicate-columns"] * 2
    assert ex.run("SELECT unit, unit AS unit_2 FROM lab_results LIMIT 1", trusted=trusted).table.column_names == [
        "unit", "unit_2"]


def test_steward_sees_rejects(lab_lake):
    ex = Explorer(lab_lake, "steward")
    n = ex.run("SELECT count(*) AS n FROM lab_results_rejects").table.column("n")[0].as_py()
    assert n == sum(v.rows for v in lab_lake.catalog.list_versions(asset_key=REJECTS)) > 0


def test_export_streams_the_full_result_up_to_the_cap(lab_lake, tmp_path):
    ex = Explorer(lab_lake, "analyst", Settings(row_cap=10, download_cap=700))
    path = tmp_path / "out.csv"
    rows = ex.export("SELECT hospital_id, result_value FROM lab_results ORDER BY ALL", None, path, user="ana")
    assert rows == 700
    written = pa_csv.read_csv(path)
    expected = raw(lab_lake, RESULTS, "SELECT hospital_id, result_value FROM t ORDER BY ALL LIMIT 700")
    assert list(zip(*[written.column(i).to_pylist() for i in range(2)], strict=False)) == expected
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(UnsafeSQL):
        ex.export("COPY lab_results TO 'x.csv'", None, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_time_travel_by_tag(lab_lake):
    dataset = next(d for d in load_datasets(lab_lake) if d.key == SUMMARY)
    old = lab_lake.latest(SUMMARY, "2024-01-01")
    lab_lake.write_version(SUMMARY, lab_lake.read_table(old).slice(0, 2), partition="2024-01-01", metadata=old.metadata)
    dataset = next(d for d in load_datasets(lab_lake) if d.key == SUMMARY)
    first = at_tag(lab_lake, dataset, "0")
    assert old.version_id in {v.version_id for v in first}
    pinned = Explorer(lab_lake, "analyst", pinned={SUMMARY: first})
    now = Explorer(lab_lake, "analyst")
    sql = "SELECT count(*) AS n FROM lab_results_summary WHERE partition_key = DATE '2024-01-01'"
    assert pinned.run(sql).table.column("n")[0].as_py() == old.rows
    assert now.run(sql).table.column("n")[0].as_py() == 2
    uris = [uri for v, uri in history(lab_lake, dataset) if v.partition == "2024-01-01"]
    assert uris == ["gros://labs.lab_results_summary/main:1?partition=2024-01-01",
                    "gros://labs.lab_results_summary/main:0?partition=2024-01-01"]
    with pytest.raises(LookupError):
        at_tag(lab_lake, dataset, "1999-01-01")


def test_object_tier_versions_are_read_in_place_through_fsspec(lab_lake, objectstore, object_tier, monkeypatch):
    from letl.lake.lake import Lake
    from letl.lake.moves import Mover

    object_tier(objectstore)
    lake = Lake.from_env()
    before = raw(lake, RESULTS, "SELECT hospital_id, count(*), round(sum(result_value), 6) FROM t GROUP BY ALL ORDER BY ALL")
    moved = lake.latest(RESULTS, "2024-02-01")
    assert Mover(lake).move(moved.version_id, "cortx", "explorer-1").state == "done"
    ex = Explorer(lake, "analyst")
    files = ex.snapshot.views["lab_results"].files
    assert [f.startswith("letlobj://") for f in files] == [False, True, False]
    assert "letlobj://labs/lab_results/" in ex.snapshot.allowed_dirs
    ours = ex.run("SELECT hospital_id, count(*), round(sum(result_value), 6) FROM lab_results GROUP BY ALL ORDER BY ALL")
    assert [tuple(r.values()) for r in ours.table.to_pylist()] == before
    plan = ex.con.cursor().sql(
        "EXPLAIN ANALYZE SELECT count(*) FROM lab_results WHERE partition_key = DATE '2024-02-01'").fetchall()[0][1]
    assert "Total Files Read: 1" in plan and "letlobj://" in plan
    assert not (lake.config.home / "cache").exists() or not any((lake.config.home / "cache").iterdir())


def test_notebook_writes_declare_their_access_and_csv_is_listed_not_queried(lab_lake):
    buffer = io.BytesIO()
    pq.write_table(pa.table({"site": ["a", "b"], "n": [1, 2]}), buffer)
    open_fs = GrosFileSystem(lake=lab_lake, access="deidentified", description="Counts per site.")
    with open_fs.open("gros://team.site_counts", "wb") as f:
        f.write(buffer.getvalue())
    with GrosFileSystem(lake=lab_lake).open("gros://team.undeclared", "wb") as f:
        f.write(buffer.getvalue())
    with GrosFileSystem(lake=lab_lake, access="deidentified").open("gros://team.notes", "wb") as f:
        f.write(b"site,n\na,1\n")
    found = {d.key: d for d in load_datasets(lab_lake)}
    assert (found["team/site_counts"].access, found["team/site_counts"].description) == ("deidentified", "Counts per site.")
    assert found["team/undeclared"].access == "restricted" and found["team/notes"].access == "deidentified"
    ex = Explorer(lab_lake, "analyst")
    assert {d.key for d in ex.datasets} >= {"team/site_counts", "team/notes"}
    assert "notes" not in ex.snapshot.views and "undeclared" not in ex.snapshot.views
    assert ex.run("SELECT sum(n) AS n FROM site_counts").table.to_pylist() == [{"n": 3}]


def declassify(lake, table, partition: str) -> None:
    lake.write_version(REJECTS, table, partition=partition, run_id="declassify",
                       metadata={"dataset": {"access": "deidentified"}})


def test_one_declassified_write_does_not_open_a_restricted_dataset(lab_lake):
    rejects = lab_lake.latest(REJECTS, "2024-03-01")
    empty = lab_lake.read_table(rejects).slice(0, 0)
    # An outside gros:// writer may not touch a produced dataset at all...
    with pytest.raises(Conflict, match="produced by the pipelines"):
        with GrosFileSystem(lake=lab_lake, access="deidentified").open(
                "gros://labs.lab_results_rejects?partition=2024-03-01", "wb") as f:
            f.write(b"PAR1")
    # ...so the declassifying writes here are the pipeline's own, one partition at a time.
    declassify(lab_lake, empty, "2024-03-01")
    found = {d.key: d for d in load_datasets(lab_lake)}
    assert found[REJECTS].access == "restricted"  # the other partitions still say restricted
    assert "lab_results_rejects" not in Explorer(lab_lake, "analyst").snapshot.views
    # Every partition rewritten as de-identified: analysts see those versions, never the old ones.
    for partition in ("2024-01-01", "2024-02-01"):
        declassify(lab_lake, empty, partition)
    dataset = next(d for d in load_datasets(lab_lake) if d.key == REJECTS)
    assert dataset.access == "deidentified"
    ex = Explorer(lab_lake, "analyst")
    assert ex.run("SELECT count(*) AS n FROM lab_results_rejects").table.to_pylist() == [{"n": 0}]
    with pytest.raises(PermissionError, match="restricted"):
        Explorer(lab_lake, "analyst", pinned={REJECTS: at_tag(lab_lake, dataset, "0")})
    assert Explorer(lab_lake, "steward", pinned={REJECTS: at_tag(lab_lake, dataset, "0")}).run(
        "SELECT count(*) AS n FROM lab_results_rejects").table.column("n")[0].as_py() > 0


@pytest.mark.parametrize("flt", [
    Filter("partition_key", "=", date(2024, 2, 1)),
    Filter("partition_key", "=", "2024-02-01"),
    Filter("partition_key", "in", [date(2024, 1, 1), date(2024, 3, 1)]),
    Filter("partition_key", "!=", date(2024, 1, 1)),
    Filter("partition_key", "<", date(2024, 2, 15)),
    Filter("partition_key", "between", (date(2024, 1, 2), date(2024, 3, 1))),
    Filter("partition_key", ">=", "2024-03-01"),
])
def test_estimate_keeps_exactly_the_partitions_duckdb_reads(shared_ex, flt):
    ex = shared_ex
    query = Query("lab_results", filters=[flt])
    est = ex.estimate(query)
    sql, params = ex.build(Query("lab_results", columns=["partition_key"], group_by=["partition_key"], filters=[flt]))
    # Not from the shared explorer's cache: DuckDB reads the files for this filter.
    rows = ex.run(sql, params, trusted=True, log=False, use_cache=False).table.to_pylist()
    read = {str(r["partition_key"]) for r in rows}
    assert {v.partition for v in est.versions} == read and est.total == 3


@pytest.mark.parametrize("sql", [
    "SELECT * FROM pg_settings",
    "SELECT sql FROM sqlite_master",
    "SELECT * FROM duckdb_views",
    "SELECT * FROM pragma_database_list",
    "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings",
    "WITH x AS (SELECT * FROM duckdb_settings), duckdb_settings AS (SELECT 1) SELECT * FROM x",
    "SELECT * FROM frame",  # a Python variable in scope must never be scanned
])
def test_system_names_and_unknown_tables_are_refused(shared_ex, sql):
    ex = shared_ex
    frame = duckdb.sql("SELECT 'secret' AS s").df()  # noqa: F841 - bait for a replacement scan
    with pytest.raises(UnsafeSQL):
        ex.run(sql)
    with pytest.raises(duckdb.Error):
        ex.con.cursor().execute("SELECT * FROM frame").fetchall()


def test_ctes_over_views_are_fine(shared_ex):
    ex = shared_ex
    sql = ("WITH per AS (SELECT hospital_id, count(*) AS n FROM lab_results GROUP BY ALL) "
           "SELECT count(*) AS hospitals FROM per")
    assert ex.run(sql).table.to_pylist() == [{"hospitals": 3}]


def test_failed_queries_and_filter_values_are_audited(ex, lab_lake):
    with pytest.raises(QueryError):
        ex.run("SELECT CAST(hospital_id AS INTEGER) FROM lab_results", user="ana")
    assert ex.distinct("lab_results", "hospital_id", user="ana") == ["H001", "H002", "H003"]
    with lab_lake.catalog.engine.begin() as conn:
        rows = conn.execute(sa.select(access_log.c.kind, access_log.c.rows, access_log.c.user)
                            .where(access_log.c.kind.like("query%"))).all()
    assert ("query-failed", None, "ana") in rows and ("query", 3, "ana") in rows


def test_a_version_moved_under_open_views_gives_a_clear_error(lab_lake):
    from letl.lake.moves import Mover

    ex = Explorer(lab_lake, "analyst")
    moved = lab_lake.latest(RESULTS, "2024-02-01")
    assert Mover(lab_lake).move(moved.version_id, "hdd", "moved-under-views").state == "done"
    with pytest.raises(QueryError, match="moved since the page was opened: reload the page"):
        ex.run("SELECT count(*) FROM lab_results", use_cache=False)
    fresh = Explorer(lab_lake, "analyst")  # what a reload builds: the new location, same answer
    assert fresh.snapshot.key != ex.snapshot.key
    assert fresh.run("SELECT count(*) AS n FROM lab_results").table.column("n")[0].as_py() == sum(
        v.rows for v in fresh.view("lab_results").versions)


def test_refused_failed_and_table_free_queries_are_in_the_query_log_by_hash_only(ex, lab_lake, tmp_path):
    typed = "PAT-4711"  # a value typed into the query: it must reach no audit table
    refused = f"SELECT * FROM read_csv('{typed}.csv')"
    unknown = f"SELECT * FROM patients WHERE mrn = '{typed}'"
    table_free = f"SELECT '{typed}' AS v"
    failing = f"SELECT CAST('{typed}' AS INTEGER) AS n"
    for sql in (refused, unknown):
        with pytest.raises(UnsafeSQL):
            ex.run(sql, user="ana")
    with pytest.raises(UnsafeSQL):
        ex.export(refused, None, tmp_path / "x.csv", user="ana")
    assert ex.run(table_free, user="ana").table.num_rows == 1
    with pytest.raises(QueryError):
        ex.run(failing, user="ana")
    with lab_lake.catalog.engine.begin() as conn:
        events = conn.execute(sa.select(query_events).order_by(query_events.c.id)).mappings().all()
    assert [(e["kind"], e["sql_hash"], e["rows"], e["detail"], e["user"]) for e in events] == [
        ("query-refused", sql_hash(refused, None), None, "function", "ana"),
        ("query-refused", sql_hash(unknown, None), None, "table", "ana"),
        ("query-refused", sql_hash(refused, None), None, "function", "ana"),
        ("query", sql_hash(table_free, None), 1, None, "ana"),
        ("query-failed", sql_hash(failing, None), None, "error", "ana"),
    ]
    assert all(e["host"] for e in events)
    assert typed not in repr([dict(e) for e in events])
    assert query_log(lab_lake) == []  # none of them read a version


def test_a_query_stopped_by_the_time_limit_is_audited_with_that_reason(lab_lake):
    quick = Explorer(lab_lake, "analyst", Settings(timeout_s=0.5))
    # No dataset, no generator: ten small VALUES lists cross-joined are 10^10 rows.
    slow = "SELECT count(*) AS n FROM " + ", ".join(
        f"(VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10)) t{i}(x)" for i in range(10))
    with pytest.raises(QueryTimeout, match="time limit of 0.5 s"):
        quick.run(slow, user="ana")
    with lab_lake.catalog.engine.begin() as conn:
        events = conn.execute(sa.select(query_events.c.kind, query_events.c.detail, query_events.c.sql_hash)).all()
    assert events == [("query-failed", "time-limit", sql_hash(slow, None))]
