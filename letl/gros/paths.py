"""gros:// paths as fsspec sees them: a URI without its scheme, and the pseudo-files of a directory.

A path names one version (a file) or several (a directory). Inside a directory, each selected
version is the pseudo-file ``partition_key={P}/data.{format}``: Hive-style, so that pandas, pyarrow,
polars and DuckDB, which all read ``key=value`` directories as a column, keep the partition as the
column ``partition_key``, the name the explorer's views and ``letl sql`` give it (letl/query/views.py).
``{P}`` is percent-encoded (lake/uri.encode_partition: "x/y" is ``partition_key=x%2Fy``), as those
readers decode it, so a name holding '/' or '=' stays one path segment and the column holds the real name.
The unpartitioned version is the file ``partition=_.{format}`` in the directory itself: a Hive key
that is null in every file is one pyarrow cannot type, and readers take no column from a file name.
Every path reaches the strict parser (lake/uri.py) exactly once.
"""

from __future__ import annotations

import re
from typing import Any

from letl.lake.uri import PARTITION_COLUMN, SCHEME, GrosRef, GrosURIError, checked_partition, hive_segment, parse

UNPARTITIONED = re.compile(r"partition=_\.(?P<fmt>[A-Za-z0-9]+)")
# Encoded, so no '/' and no '='; what it decodes to is checked as a URI's partition is.
HIVE_DIR = re.compile(PARTITION_COLUMN + r"=(?P<partition>[A-Za-z0-9_.%-]+)")
WILDCARD = re.compile(r"\*\*?(?P<suffix>\.[A-Za-z0-9]+)?")
CHILD_FILE = "data"
CHILD = re.compile(CHILD_FILE + r"\.(?P<fmt>[A-Za-z0-9]+)")


def as_directory(path: str) -> str:
    """One trailing '/' is how fsspec callers spell a directory; anything more is left to the parser."""
    return path[:-1] if path.endswith("/") else path


def strip_protocol(path: Any) -> str:
    path = str(path)
    return as_directory(path[len(SCHEME):] if path.startswith(SCHEME) else path)


def split_ref(path: Any) -> tuple[GrosRef, str | None]:
    """(the ref of the top-level path, the partition of the pseudo-file inside it or None): a
    pseudo-file stands for the version the listing that named it served (gros_reads.py).
    Callers pass the path as given: stripping it twice would forgive a second trailing '/'."""
    top, partition, _ = split_path(path)
    return top, partition


def split_path(path: Any) -> tuple[GrosRef, str | None, bool]:
    """Like :func:`split_ref`, and whether the path is a partition's Hive directory (``.../partition_key=P``)
    rather than the pseudo-file inside it."""
    path = strip_protocol(path)
    parts = path.split("/")
    if len(parts) >= 2 and UNPARTITIONED.fullmatch(parts[-1]):
        return _parent("/".join(parts[:-1]), path), "", False
    is_dir = True
    if len(parts) >= 3 and CHILD.fullmatch(parts[-1]):
        parts, is_dir = parts[:-1], False
    hive = HIVE_DIR.fullmatch(parts[-1]) if len(parts) >= 2 else None
    if hive is None:
        return parse(SCHEME + path), None, False
    return _parent("/".join(parts[:-1]), path), checked_partition(SCHEME + path, hive["partition"]), is_dir


def _parent(head: str, path: str) -> GrosRef:
    parent = parse(SCHEME + head)
    if parent.partition not in (None, "*"):
        raise GrosURIError(f"invalid gros path {path!r}: {head!r} names a single version, not a directory")
    return parent


def without_wildcards(path: str) -> tuple[str, str]:
    """(the path without its trailing wildcard segments, the file suffix they ask for): how DuckDB and
    fsspec users spell "every file of this directory", ``x/*``, ``x/**`` or ``x/*/*.parquet``."""
    base, suffix = as_directory(path), ""
    while True:
        head, sep, last = base.rpartition("/")
        wildcard = WILDCARD.fullmatch(last) if sep and head else None
        if wildcard is None:
            return base, suffix
        base, suffix = head, suffix or (wildcard["suffix"] or "")


def ref_of(path: Any) -> GrosRef:
    """The ref a path names; a pseudo-file inside a directory names one partition of it."""
    top, partition = split_ref(path)
    return top if partition is None else top.with_partition(partition)


def hive_dir(directory: str, version) -> str:
    # Children keep the caller's spelling of the directory (with or without gros://):
    # pyarrow checks that every listed path lies under the base dir it asked about.
    return f"{as_directory(str(directory))}/{hive_segment(version.partition)}"


def child_name(directory: str, version) -> str:
    if not version.partition:
        return f"{as_directory(str(directory))}/partition=_.{version.format}"
    return f"{hive_dir(directory, version)}/{CHILD_FILE}.{version.format}"
