"""Datasets whose partitions were written with different columns: what gros:// says and offers.

Lab results gain columns over time (result_comparator, result_text, result_original), so old months
lack what new months have. pyarrow and pandas take a dataset's schema from its first file, the
oldest partition, and silently drop columns only newer partitions have; DuckDB does the same unless
asked for ``union_by_name=true``. gros:// cannot change what those readers infer, so it warns when
a directory read mixes schemas and offers the union as a schema to pass.
"""

from __future__ import annotations

import warnings
from typing import Sequence


class MixedSchemaWarning(UserWarning):
    """A directory read whose versions were written with different columns or types."""


def warn_if_mixed(uri: str, served: Sequence) -> None:
    # The catalog's fingerprint covers names and types, so this costs no file access.
    if len({v.schema_fingerprint for v in served if v.format == "parquet"}) > 1:
        warnings.warn(MixedSchemaWarning(
            f"{uri}: its partitions were written with different columns or types; pyarrow and pandas keep the "
            "first partition's columns unless given schema=fsspec.filesystem('gros').unified_schema(uri), "
            "DuckDB needs read_parquet(..., union_by_name=true); letl.gros.scan(uri) reads every column by itself"),
            stacklevel=6)


def unified_schema(lake, versions: Sequence, where: str, partition_column: str | None = None):
    """The union of the columns of the Parquet versions, types promoted where they differ, and the
    Hive partition column of a directory read (given a schema, pyarrow keeps only the columns in it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(lake.local_path(v)) for v in versions if v.format == "parquet"]
    if not schemas:
        raise ValueError(f"{where} serves no Parquet version")
    # Each file's pandas metadata describes that file's columns only.
    schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
    if partition_column and partition_column not in schema.names:
        schema = schema.append(pa.field(partition_column, pa.string()))
    return schema
