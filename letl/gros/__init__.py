"""gros://, the lake's fsspec protocol (fs.py), and ``scan``, the lake as a pyarrow dataset or polars
LazyFrame for clients that cannot take an fsspec URI (datasets.py)."""

from letl.gros.datasets import scan

__all__ = ["scan"]
