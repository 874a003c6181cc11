"""The runtime half of a query's limits: its wall time and the process's RSS, watched from a thread
that interrupts DuckDB when either runs over.

DuckDB checks for an interrupt between vectors, not inside a function call, and an interrupt that
lands while no check is pending can be lost: ``lpad('x', 300000000, 'y')`` interrupted once after
1 s finished normally after 21 s. So the watchdog interrupts again at every poll until the query
ends. The RSS side covers allocations DuckDB's ``memory_limit`` does not count (values built in
expressions, Arrow buffers); what one call builds before DuckDB looks again is bounded by the SQL
guard (``letl.query.limits``) and, for hand-written SQL, by killing its process (``letl.query.worker``).
"""
from __future__ import annotations

import threading
import time

import duckdb
import psutil

__all__ = ["Watchdog"]

POLL_S = 0.02
# DuckDB's buffer manager keeps to the limit by itself; what grows past it is what it does not
# count. Tripping at 1.25x the limit leaves a quarter of it for what is allocated between two of
# DuckDB's interrupt checks, under the 1.5x the explorer promises.
TRIP = 1.25


class Watchdog:
    """``with Watchdog(con, 30, 2**30) as dog:`` runs the query; ``dog.tripped`` then says which
    limit stopped it ("time", "memory") or None."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout_s: float, memory_limit: int):
        self.con, self.timeout_s, self.memory_limit = con, timeout_s, memory_limit
        self.tripped: str | None = None
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="letl-query-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        # Growth, not the total: the process (Streamlit, other sessions' caches) already holds memory
        # the query is not to blame for.
        self._baseline = self._process.memory_info().rss
        self._deadline = time.monotonic() + self.timeout_s
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if self.tripped is None:
                if time.monotonic() >= self._deadline:
                    self.tripped = "time"
                elif self._process.memory_info().rss - self._baseline > TRIP * self.memory_limit:
                    self.tripped = "memory"
            if self.tripped is not None:
                self.con.interrupt()
