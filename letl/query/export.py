"""Result files in CSV, JSON or Parquet, written batch by batch (a full download is never whole in memory).

The format is the file's suffix. JSON is an array of objects, one per row, as Datasette gives it:
dates and times in ISO 8601, decimals as numbers, NaN and infinities as null. Parquet keeps the
result's Arrow types exactly.
"""

import datetime as dt
import io
import json
import math
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}
LABELS = {"csv": "CSV", "json": "JSON", "parquet": "Parquet"}


def format_of(path: str | Path) -> str:
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot export to {Path(path).name!r}: name it .csv, .json or .parquet")
    return fmt


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


class _JsonArray:
    def __init__(self, sink: BinaryIO):
        self.sink, self.first = sink, True
        sink.write(b"[")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        for row in batch.to_pylist():
            self.sink.write(b"\n" if self.first else b",\n")
            self.first = False
            self.sink.write(json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False,
                                       allow_nan=False).encode())

    def close(self) -> None:
        self.sink.write(b"\n]\n")


@contextmanager
def writer(sink: str | Path | BinaryIO, schema: pa.Schema, fmt: str) -> Iterator[Callable[[pa.RecordBatch], None]]:
    """``write(batch)`` for ``fmt`` into ``sink`` (a path or a binary file), closed on leaving."""
    if fmt == "csv":
        with pa_csv.CSVWriter(sink, schema) as out:
            yield out.write_batch
    elif fmt == "parquet":
        with pq.ParquetWriter(sink, schema.remove_metadata()) as out:  # not the runner's own markers
            yield out.write_batch
    elif fmt == "json":
        own = isinstance(sink, (str, Path))
        handle = open(sink, "wb") if own else sink
        try:
            out = _JsonArray(handle)
            yield out.write_batch
            out.close()
        finally:
            if own:
                handle.close()
    else:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def table_bytes(table: pa.Table, fmt: str) -> bytes:
    """A result already in memory (one that fits the page) as a file's bytes."""
    buffer = io.BytesIO()
    with writer(buffer, table.schema, fmt) as write:
        for batch in table.to_batches():
            write(batch)
    return buffer.getvalue()
