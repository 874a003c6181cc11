"""The explorer's memory and time limits hold against the queries an attacker would write.

Each query runs in its own subprocess, so its peak RSS is the kernel's high-water mark for that
process alone (``VmHWM``), not the test runner's: on the explorer's locked connection for the
in-process layers (guard, watchdog), and in a driver whose only child is the SQL worker for the
process layer (``letl.query.worker``), whose peak is then ``RUSAGE_CHILDREN``.
"""
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import psutil
import pytest

from letl.lake.config import parse_size
from letl.query.service import Explorer

LIMIT = "256MB"
REPO = Path(__file__).resolve().parents[2]
# Run in tmp_path, not the repository: DuckDB spills to ".tmp" under the working directory.
CHILD_RUN = dict(env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)

CHILD = r"""
import json, os, sys, threading, time
import psutil
from letl.query.engine import locked_connection, run_query

data, sql, timeout_s, check, ceiling = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
files = {name: [os.path.join(data, f"{name}.parquet")] for name in ("t", "big")}
con = locked_connection(files, [data], memory_limit=sys.argv[6], threads=2)
run_query(con, "SELECT count(*) FROM big")  # DuckDB, Arrow and the views warmed up: not the query's doing
baseline = psutil.Process().memory_info().rss

def escape_hatch():
    # A regression must fail this test, not take the machine's memory with it.
    while psutil.Process().memory_info().rss < ceiling:
        time.sleep(0.01)
    print(json.dumps({"error": "escaped", "baseline": baseline, "peak": psutil.Process().memory_info().rss}), flush=True)
    os._exit(3)

threading.Thread(target=escape_hatch, daemon=True).start()
try:
    run_query(con, sql, row_cap=10, timeout_s=timeout_s, check=check)
    error = None
except Exception as e:
    error = type(e).__name__
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would report the test runner's own peak.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "baseline": baseline, "peak": peak}))
"""


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """The two tables every child reads, written once: no query here writes to them."""
    data = tmp_path_factory.mktemp("tables")
    for name, rows in (("t", 1_000), ("big", 300_000)):
        duckdb.sql(f"COPY (SELECT range AS a, 'v' || range AS s FROM range({rows})) TO '{data / name}.parquet'")
    return data


def run_child(tmp_path, tables, sql, timeout_s=30.0, check=True):
    bound = 1.5 * parse_size(LIMIT)
    ceiling = int(4 * bound + 2**30)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tables), sql, str(timeout_s), "1" if check else "0", str(ceiling), LIMIT],
        cwd=tmp_path, **CHILD_RUN,
    )
    # DuckDB's progress bar may share the line.
    lines = [line[line.index('{"error"'):] for line in done.stdout.splitlines() if '{"error"' in line]
    assert lines, done.stderr[-2000:]
    out = json.loads(lines[-1])
    # The allowance is the child's RSS before the query (Python, DuckDB, pyarrow and the warmed views,
    # about 110 MB): the limit is about what a query adds, and the interpreter is not the query's.
    out["within"] = out["peak"] <= out["baseline"] + bound
    return out


# Each built gigabytes in one call before the guard (7 GB RSS for the first, under a 1 GB limit).
@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM (SELECT unnest(generate_series(1, 100000000)))",
    "SELECT count(*) FROM (SELECT unnest(range(100000000)))",
    "SELECT length(repeat('x', 2000000000))",
    "SELECT length(lpad('x', 2000000000, 'y'))",
    "SELECT len(list_resize([1], 300000000))",
    "SELECT length(printf('%1000000000d', 1))",
    "SELECT length(format('{:>{}}', 'x', 1000000000))",
    "SELECT len(flatten([generate_series(1, 4000) for x in generate_series(1, 4000)]))",
    "SELECT length(list_reduce(generate_series(1, 40), lambda acc, x: acc || acc, 'x'))",
    "WITH RECURSIVE r(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM r WHERE n < 40) "
    "SELECT max(length(s)) FROM r",
])
def test_value_builders_are_refused_before_they_allocate(tmp_path, tables, sql):
    out = run_child(tmp_path, tables, sql)
    assert out["error"] == "UnsafeSQL" and out["within"], out


# Values that grow chunk by chunk: DuckDB's own limit or the RSS watchdog stops them.
@pytest.mark.parametrize("sql", [
    "SELECT len(list(b.a)) FROM big a, t b",
    "SELECT length(string_agg(a.s, ',')) FROM big a, t b",
    "SELECT a.a, list(b.s) FROM big a, t b GROUP BY a.a ORDER BY 2 DESC",
])
def test_growing_results_stop_at_the_memory_bound(tmp_path, tables, sql):
    out = run_child(tmp_path, tables, sql, timeout_s=10)
    assert out["error"] in ("QueryMemoryLimit", "QueryTimeout") and out["within"], out


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM t a, t b, t c, t d",
    "SELECT max(lpad(a.s, 4000, 'x')) FROM big a, t b",
    "SELECT count(DISTINCT a.s || b.s) FROM big a, t b",
])
def test_long_queries_end_with_the_time_limit_error(tmp_path, tables, sql):
    out = run_child(tmp_path, tables, sql, timeout_s=1)
    assert out["error"] == "QueryTimeout" and out["within"], out


def test_a_call_that_ignores_one_interrupt_still_ends_with_the_time_limit_error(tmp_path, tables):
    """Measured with lpad('x', 300000000, 'y'): interrupted once after 1 s, it finished normally after
    21.7 s. The watchdog interrupts until the query ends. Run without the guard, which refuses it."""
    out = run_child(tmp_path, tables, "SELECT length(lpad('x', 60000000, 'y'))", timeout_s=0.5, check=False)
    assert out["error"] == "QueryTimeout", out


DRIVER = r"""
import json, os, resource, sys
import psutil
from letl.lake.config import parse_size
from letl.query.worker import QueryWorker

data, sql, timeout_s, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
views = {name: [os.path.join(data, f"{name}.parquet")] for name in ("t", "big")}
spec = dict(views=views, allowed_dirs=[data], memory_limit=limit, threads=2, hive={},
            object_versions=frozenset(), lake_config=None)
worker = QueryWorker(spec, parse_size(limit))
worker.run("SELECT count(*) FROM big", None, 10, 30)
pid = worker._process.pid
baseline = psutil.Process(pid).memory_info().rss
try:
    worker.run(sql, None, 10, timeout_s)
    error = None
except Exception as e:
    error = type(e).__name__
killed = not psutil.pid_exists(pid)
worker.close()  # reaped, so RUSAGE_CHILDREN holds its high-water mark
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"error": error, "killed": killed, "baseline": baseline, "peak": peak}))
"""


def run_worker(tmp_path, tables, sql, timeout_s):
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tables), sql, str(timeout_s), LIMIT],
                          cwd=tmp_path, **CHILD_RUN)
    lines = [line[line.index('{"error"'):] for line in done.stdout.splitlines() if '{"error"' in line]
    assert lines, done.stderr[-2000:]
    out = json.loads(lines[-1])
    # As above: the allowance is the worker's RSS before the query, with its views warmed up.
    out["within"] = out["peak"] <= out["baseline"] + 1.5 * parse_size(LIMIT)
    return out


# Single calls no interrupt reaches: in-process they went past 3 GB under 256 MB.
@pytest.mark.parametrize("sql", [
    "WITH a AS (SELECT string_agg(s, ',') s FROM big) SELECT length(" + "||".join(["s"] * 100) + ") FROM a",
    "WITH a AS (SELECT string_agg(s, ',') s FROM big) SELECT length(replace(s, '1', s)) FROM a",
    "WITH a AS (SELECT list(a) l FROM big) SELECT len(list_concat(" + ", ".join(["l"] * 100) + ")) FROM a",
])
def test_the_worker_is_killed_at_the_memory_bound(tmp_path, tables, sql):
    out = run_worker(tmp_path, tables, sql, timeout_s=30)
    assert out["error"] == "QueryMemoryLimit" and out["killed"] and out["within"], out


def test_the_worker_is_killed_when_a_single_call_outlasts_the_time_limit(tmp_path, tables):
    """In-process, this levenshtein ran 5.6 s against a 1 s limit: it checks no interrupt. Killed, the
    worker is gone before the call could end, which is what proves the limit held."""
    sql = "WITH a AS (SELECT string_agg(s, '') x FROM big WHERE a < 20000) SELECT levenshtein(x, reverse(x)) FROM a"
    out = run_worker(tmp_path, tables, sql, timeout_s=1)
    assert out["error"] == "QueryTimeout" and out["killed"], out


def test_the_worker_answers_and_stays_up(tmp_path, tables):
    out = run_worker(tmp_path, tables, "SELECT count(*) AS n FROM big a JOIN t b USING (a)", timeout_s=30)
    assert out["error"] is None and not out["killed"] and out["within"], out


def test_a_dropped_explorer_takes_its_worker_with_it(lake):
    """Streamlit evicts cached explorers without closing them; their worker processes must not pile up."""
    ex = Explorer(lake, "analyst")
    assert ex.run("SELECT 42 AS n").table.to_pylist() == [{"n": 42}]
    pid = ex._worker._process.pid
    del ex
    gc.collect()
    assert not psutil.pid_exists(pid)
