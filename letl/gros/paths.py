"""gros:// paths as fsspec sees them: a URI without its scheme, and the pseudo-files of a directory.

A path names one version (a file) or several (a directory). Inside a directory, each selected
version is the pseudo-file ``partition={P}.{format}`` (P is ``_`` for the unpartitioned
version). Every path reaches the strict parser (lake/uri.py) exactly once.
"""

from __future__ import annotations

import re
from typing import Any

from letl.lake.uri import PARTITION, SCHEME, GrosRef, GrosURIError, parse

CHILD = re.compile(r"partition=(?P<partition>" + PARTITION.pattern + r")\.(?P<fmt>[A-Za-z0-9]+)")
UNPARTITIONED = "_"


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
    path = strip_protocol(path)
    head, sep, last = path.rpartition("/")
    child = CHILD.fullmatch(last) if sep else None
    if child is None:
        return parse(SCHEME + path), None
    parent = parse(SCHEME + head)
    if parent.partition not in (None, "*"):
        raise GrosURIError(f"invalid gros path {path!r}: {head!r} names a single version, not a directory")
    partition = child["partition"]
    return parent, "" if partition == UNPARTITIONED else partition


def ref_of(path: Any) -> GrosRef:
    """The ref a path names; a pseudo-file inside a directory names one partition of it."""
    top, partition = split_ref(path)
    return top if partition is None else top.with_partition(partition)


def child_name(directory: str, version) -> str:
    # Children keep the caller's spelling of the directory (with or without gros://):
    # pyarrow checks that every listed path lies under the base dir it asked about.
    return f"{as_directory(str(directory))}/partition={version.partition or UNPARTITIONED}.{version.format}"
