"""Hand-written SQL in a process of its own, killed when it passes the explorer's bounds.

Inside one process, neither DuckDB's memory limit nor an interrupt reaches a single function call:
``s || s || ...`` over an aggregated string, or ``levenshtein`` of two long ones, runs to the end
(measured: past 3 GB under a 256 MB limit; 5.6 s against a 1 s limit). A process can be killed at
any instant. The worker keeps its own locked connection over the same views, answers one query at a
time, and is started again after a kill. Builder SQL stays in the server process: it is generated,
parameterized, and cannot build such values.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import duckdb
import psutil
import pyarrow as pa

from letl.query.engine import (
    MOVED,
    DuplicateColumns,
    QueryError,
    QueryMemoryLimit,
    QueryMoved,
    QueryTimeout,
    export_result,
    locked_connection,
    run_query,
)

__all__ = ["QueryWorker", "KILL_MEMORY", "KILL_TIME"]

POLL_S = 0.01
# The worker's own watchdog interrupts at 1.25x the memory limit and at the time limit; these are
# for the calls it cannot interrupt. Below the 1.5x promised, by what a fast allocation adds in a poll.
KILL_MEMORY = 1.3
KILL_TIME = 1.25

_ERRORS = {cls.__name__: cls for cls in (DuplicateColumns, QueryError, QueryMemoryLimit, QueryMoved, QueryTimeout)}


def _serve(conn, spec: dict[str, Any]) -> None:
    from letl.lake.lake import Lake
    from letl.query.objectfs import LakeObjectFileSystem

    filesystems = []
    if spec["object_versions"]:
        filesystems.append(LakeObjectFileSystem(lake=Lake(spec["lake_config"]), allowed=spec["object_versions"]))
    try:
        con = locked_connection(spec["views"], spec["allowed_dirs"], spec["memory_limit"], spec["threads"],
                                hive=spec["hive"], union=spec.get("union", ()), filesystems=filesystems,
                                temp_dir=spec.get("temp_dir"))
    except duckdb.IOException as e:
        # Views are bound when the worker starts, at its first query: a version may have moved since.
        moved = "No files found" in str(e)
        conn.send(("error", "QueryMoved", MOVED) if moved else ("error", "QueryError", f"query failed: {e}"))
        return
    conn.send(("ready",))
    while True:
        kind, sql, params, cap, timeout_s, path = conn.recv()
        cur = con.cursor()
        try:
            if kind == "run":
                table = run_query(cur, sql, params, row_cap=cap, timeout_s=timeout_s, check=False)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
                conn.send(("ok", sink.getvalue().to_pybytes()))
            else:
                conn.send(("ok", export_result(cur, sql, path, params, row_cap=cap, timeout_s=timeout_s, check=False)))
        except QueryError as e:
            conn.send(("error", type(e).__name__ if type(e).__name__ in _ERRORS else "QueryError", str(e)))
        finally:
            cur.close()


class QueryWorker:
    """The server's side: starts the worker, sends it one query at a time, kills it past a bound."""

    def __init__(self, spec: dict[str, Any], memory_limit: int):
        self.spec, self.memory_limit = spec, memory_limit
        self._process = None
        self._lock = threading.Lock()  # one query at a time: the process holds one connection

    def _start(self) -> None:
        # spawn, not fork: the server has threads (Streamlit, DuckDB) whose locks a fork would copy held.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, self.spec), daemon=True, name="letl-sql-worker")
        self._process.start()
        child.close()
        try:
            status, *answer = self._conn.recv()
        except EOFError:
            status, answer = "error", ["QueryError", "the query's process could not start"]
        if status == "error":
            self.close()
            raise _ERRORS[answer[0]](answer[1])

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
            self._process = None

    def run(self, sql: str, params, row_cap: int, timeout_s: float) -> pa.Table:
        return pa.ipc.open_stream(self._ask("run", sql, params, row_cap, timeout_s, None)).read_all()

    def export(self, sql: str, params, path, row_cap: int, timeout_s: float) -> int:
        return self._ask("export", sql, params, row_cap, timeout_s, str(path))

    def _ask(self, kind, sql, params, cap, timeout_s, path):
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            child = psutil.Process(self._process.pid)
            # Growth during this query: the worker's caches and allocator keep what earlier ones left.
            baseline = child.memory_info().rss
            self._conn.send((kind, sql, params, cap, timeout_s, path))
            deadline = time.monotonic() + KILL_TIME * timeout_s
            while not self._conn.poll(POLL_S):
                over = child.memory_info().rss - baseline > KILL_MEMORY * self.memory_limit
                late = time.monotonic() > deadline
                if over or late or not self._process.is_alive():
                    self.close()
                    if over:
                        raise QueryMemoryLimit(f"query exceeded the memory limit of "
                                               f"{self.memory_limit / 2**20:,.0f} MiB and was stopped")
                    if late:
                        raise QueryTimeout(f"query exceeded the time limit of {timeout_s:g} s and was stopped")
                    raise QueryError("the query's process ended unexpectedly")
            status, *answer = self._conn.recv()
        if status == "error":
            raise _ERRORS[answer[0]](answer[1])
        return answer[0]
