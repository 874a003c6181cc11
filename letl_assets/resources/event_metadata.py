"""The metadata of the events a lake version makes in Dagster: Dagster's standard keys where they exist
(``dagster/uri``, ``dagster/column_schema``, ``dagster/row_count``, ``dagster/partition_row_count``),
LETL's own under ``letl/``."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from letl.lake.lake import Staged

PARTITION_ROWS = "dagster/partition_row_count"


def plain_values(metadata) -> dict:
    """Event or Output metadata as JSON-able values (a MetadataValue's ``value``)."""
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def described_version(lake, staged: Staged) -> dict:
    """A staged version as the Dagster event shows it: Dagster's standard keys where they exist, LETL's own
    under letl/."""
    # What the catalog will hold once the step publishes: a reused version keeps its own id.
    version = staged.reuse or staged.version
    seconds = staged.version.metadata["write_seconds"]
    described = {"dagster/uri": lake.uri(version)}
    if version.partition:
        described[PARTITION_ROWS] = version.rows
    return {
        **described,
        "letl/tier": version.tier,
        "letl/version_id": version.version_id,
        "letl/reused": staged.reuse is not None,
        "letl/bytes": version.bytes,
        "letl/sha256": version.sha256,
        "letl/placement": version.metadata["placement"],
        "letl/write_mib_per_s": round(staged.version.bytes / 2**20 / seconds, 1) if seconds else None,
        "letl/upstream_versions": ", ".join(sorted(staged.upstream_ids)) or "none",
    }


def arrow_schema(value) -> pa.Schema | None:
    """The schema a value will be stored with, read before staging consumes it; None when it is not
    Parquet-shaped (staging then refuses it with its own message)."""
    if isinstance(value, (pa.Table, pa.RecordBatchReader)):
        return value.schema
    if isinstance(value, (str, Path)):
        try:
            return pq.read_schema(value)
        except (OSError, pa.ArrowInvalid):
            return None
    try:
        return pa.Schema.from_pandas(value, preserve_index=False)
    except (TypeError, ValueError, AttributeError, pa.ArrowException):
        return None


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """Dagster's column schema (the asset page's Columns section) of a Parquet schema."""
    return dg.TableSchema(columns=[
        dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
        for f in schema])


def table_metadata(lake, staged: list[Staged], schemas: list) -> dict:
    """What is true of the whole dataset once these versions publish: its column schema (when every
    version has the same) and its rows over every latest partition on the branch."""
    first = staged[0].version
    written = {s.version.partition for s in staged}
    others = sum(v.rows or 0 for v in lake.catalog.latest_versions(first.branch, first.asset_key)
                 if v.partition not in written)
    table: dict = {"dagster/row_count": others + sum((s.reuse or s.version).rows or 0 for s in staged)}
    if schemas and schemas[0] is not None and all(schemas[0].equals(other) for other in schemas[1:]):
        table["dagster/column_schema"] = column_schema(schemas[0])
    return table
