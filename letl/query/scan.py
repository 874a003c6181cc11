"""What a query will read, from the catalog's sizes: shown before it runs, and written to the audit log.

Which partitions a filter keeps is decided by DuckDB itself, on the partition values typed as the
view types them, with the very predicates the query builder generated. A Python re-implementation
would disagree with DuckDB on dates against timestamps, numbers against text and so on, and the
audit log would then miss versions a query really read.
"""

import re
from dataclasses import dataclass

import duckdb

from letl.lake.catalog import Version
from letl.lake.uri import PARTITION_COLUMN
from letl.query import query_builder as qb
from letl.query.views import View

_TYPE = re.compile(r"[A-Z][A-Z0-9 ]*\Z")  # DuckDB type names as DESCRIBE reports them (DATE, BIGINT, ...)
_RAW = "_letl_raw_partition"


@dataclass(frozen=True)
class Estimate:
    versions: tuple[Version, ...]
    total: int  # partitions in the views read

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.versions)

    @property
    def pruned(self) -> bool:
        return len(self.versions) < self.total


def whole(views: list[View]) -> Estimate:
    versions = tuple(v for view in views for v in view.versions)
    return Estimate(versions, len(versions))


def partitions_kept(con: duckdb.DuckDBPyConnection, view: View, partition_type: str, filters) -> Estimate:
    """The versions of ``view`` whose partition passes the query's filters on ``partition_key``."""
    on_partition = [f for f in filters if f.column == PARTITION_COLUMN]
    if not on_partition or not view.hive:
        return whole([view])
    if not _TYPE.match(partition_type):
        raise ValueError(f"unexpected partition column type {partition_type!r}")
    schema = {PARTITION_COLUMN: partition_type, _RAW: "VARCHAR"}
    query = qb.Query("_letl_partitions", columns=[_RAW], filters=on_partition)
    sql, params = qb.build(query, schema)
    rows = ", ".join("(?)" for _ in view.versions)
    cte = (f'WITH "_letl_partitions" AS (SELECT p AS "{_RAW}", CAST(p AS {partition_type}) AS "{PARTITION_COLUMN}" '
           f"FROM (VALUES {rows}) AS v(p))\n")
    kept = {r[0] for r in con.execute(cte + sql, [v.partition for v in view.versions] + params).fetchall()}
    return Estimate(tuple(v for v in view.versions if v.partition in kept), len(view.versions))
