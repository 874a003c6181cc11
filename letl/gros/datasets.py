"""``letl.gros.scan``: a gros:// URI as a pyarrow dataset or a polars LazyFrame, for clients that cannot
take an fsspec URI themselves.

polars parses ``repo:tag`` as host:port and ``?`` as a glob, and pyarrow's own ``read_table`` and
``dataset`` know only the filesystems compiled into Arrow. A pyarrow dataset over gros:// works in all
of them (``pl.scan_pyarrow_dataset``, ``duckdb.from_arrow``), so that is what this returns:

    ds = letl.gros.scan("gros://labs.lab_results")                  # every partition, with partition_key
    lf = letl.gros.scan("gros://labs.lab_results:latest", engine="polars")

The dataset reads through one pyarrow handler over a GrosFileSystem, so it is one gros:// read like a
``pd.read_parquet`` (gros_reads.py): access checked when it is made, audited in the access log when it
first reads a file. A directory (a partitioned dataset, or ``?partition=*``) is read Hive-style, and one
partition (``?partition=P``) is a file whose dataset carries ``partition_key == P`` as its partition
expression, so both have the partition column ``partition_key`` holding the real name. Partitions written
with different columns are read with the union of their columns (gros_schema.py), so nothing is dropped
and nothing needs to be passed.
"""

from __future__ import annotations

import warnings
from typing import Any

ENGINES = ("pyarrow", "polars")


def scan(uri: str, *, engine: str = "pyarrow", lake: Any = None):
    """A ``pyarrow.dataset.Dataset`` over what ``uri`` selects, or (``engine="polars"``) a polars LazyFrame
    over it. ``lake``: a Lake to read instead of the one LETL_HOME names."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    from letl.gros.fs import GrosFileSystem
    from letl.gros.paths import split_path, strip_protocol
    from letl.gros.schema import MixedSchemaWarning
    from letl.lake.errors import InvalidInput
    from letl.lake.uri import PARTITION_COLUMN

    if engine not in ENGINES:
        raise InvalidInput(f"letl.gros.scan: engine {engine!r} is not one of {', '.join(ENGINES)}")
    path = strip_protocol(uri)
    fs = GrosFileSystem(lake=lake, skip_instance_cache=lake is not None)
    with warnings.catch_warnings():
        # Answered here: a directory whose partitions differ is read with the union of their columns.
        warnings.simplefilter("ignore", MixedSchemaWarning)
        files = fs.find(path, detail=True).values()
        formats = {f["format"] for f in files}
        if len(formats) != 1:
            raise InvalidInput(f"gros://{path} mixes formats ({', '.join(sorted(formats))}): scan one partition at a time")
        fmt = formats.pop()
        directory = fs.isdir(path)
        schema = None
        if directory and fmt == "parquet" and len({f["schema_fingerprint"] for f in files}) > 1:
            schema = fs.unified_schema(path)
        # Declared, not inferred: a key such as "2024" must stay text, as the unified schema and the views have it.
        partitioned = directory and any(f["partition"] for f in files)
        hive = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.string())]), flavor="hive") if partitioned else None
        # A partition's own Hive folder (as `ls` lists it) names its partition in its last segment,
        # which pyarrow reads only below the base directory: the base is then the folder's parent.
        base = path.rpartition("/")[0] if partitioned and split_path(path)[2] else None
        handler = pafs.PyFileSystem(pafs.FSSpecHandler(fs))  # one handler: one audited read
        dataset = ds.dataset(path, filesystem=handler, format=fmt, schema=schema, partitioning=hive,
                             partition_base_dir=base)
        partition = None if directory else next(iter(files))["partition"]
        if partition and PARTITION_COLUMN not in dataset.schema.names:
            dataset = _with_partition_column(dataset, handler, path, partition)
    if engine == "polars":
        import polars as pl

        return pl.scan_pyarrow_dataset(dataset)
    return dataset


def _with_partition_column(dataset, handler, path: str, partition: str):
    """The one file of ``dataset`` as a dataset whose partition expression is ``partition_key == partition``:
    pyarrow fills the column from it, as it does for a Hive directory's files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from letl.lake.uri import PARTITION_COLUMN

    fragment = dataset.format.make_fragment(path, filesystem=handler,
                                            partition_expression=pc.field(PARTITION_COLUMN) == pa.scalar(partition))
    schema = dataset.schema.append(pa.field(PARTITION_COLUMN, pa.string()))
    return ds.FileSystemDataset([fragment], schema, dataset.format, filesystem=handler)
