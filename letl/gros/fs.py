"""The gros:// fsspec protocol: read lake versions from pandas, pyarrow and duckdb, write new ones.

Registered through the ``fsspec.specs`` entry point, so after ``pip install`` a notebook needs
no import of letl_assets:

    pd.read_parquet("gros://labs.lab_results:latest?partition=2024-03-01")
    pd.read_parquet("gros://labs.lab_results")          # every partition, as a dataset
    pd.read_csv("gros://team.notes:latest")             # a version stored as CSV
    df.to_parquet("gros://team.my_dataset/my-branch")   # a new version on my-branch

Paths (a URI without ``gros://``) name either one version, which is a file, or several
(no partition on a partitioned asset, or ``?partition=*``), which is a directory holding one
pseudo-file per selected version, ``{directory}/partition_key={P}/data.{format}``: Hive-style, so that
every reader keeps the partition as the column ``partition_key`` (gros_paths.py).

Every read is logged in the catalog's access log with kind ``gros``, user and host, before its
first file is handed out. The calls of one read share one resolution (one catalog query) and one
audit transaction. Structure, never timing, decides where a read begins: a new pyarrow handler
(one pandas/pyarrow call), a listing (each DuckDB glob), or an open that no listing covers (a
file never listed, or opened again once its listing opened it: gros_reads.py). A listing alone
writes no row, as it opens no file. A dataset whose partitions differ in columns warns and offers
the union (gros_schema.py). Restricted datasets (see lake/access.py) are read only by the user
names in ``LETL_STEWARDS``; a refusal is an AccessDenied (a PermissionError), audited in the query
log with kind ``gros-refused``. The strict parser (lake/uri.py) is the only door: a chained URL (``gros://x::y``) is refused
before fsspec can hand us its first link. A write goes to a staging file (gros_write.py) and
becomes a version only when the file is closed without error.
"""

from __future__ import annotations

import atexit
import gc
import socket
import threading
from typing import Any

from fsspec.spec import AbstractFileSystem

from letl.gros.paths import (
    CHILD_FILE,
    PARTITION_COLUMN,
    as_directory,
    child_name,
    hive_dir,
    ref_of,
    split_path,
    strip_protocol,
    without_wildcards,
)
from letl.gros.reads import Read, Reads, open_version
from letl.gros.schema import unified_schema, warn_if_mixed
from letl.gros.write import GrosWriteFile
from letl.lake.access import check_read
from letl.lake.config import missing_default_lake, snapshot
from letl.lake.uri import SCHEME, GrosRef, invalid, resolve_read

ACCESS_KIND = "gros"
REFUSED_KIND = "gros-refused"
# fsspec hands these to a filesystem built as one link of a chained URL ("gros://x::...").
CHAIN_OPTIONS = ("fo", "target_protocol", "target_options")


class GrosNotFoundError(LookupError):
    """A well-formed URI that selects nothing (unknown repo, branch or partition, or a tag
    without a match).

    Deliberately not a FileNotFoundError: pyarrow turns those into a bare "path not found",
    and the point of this error is to say which part of the URI matched nothing.
    ``exists``/``isdir``/``isfile`` still answer False.
    """


class NoLakeError(GrosNotFoundError):
    """No lake is configured and none is in the current directory: not "nothing matches", so a glob
    raises it rather than answering an empty list (DuckDB would say only "No files found")."""


_lakes: dict[tuple, Any] = {}
_lakes_lock = threading.Lock()

# pyarrow (26) wraps fsspec filesystems in a PyFileSystem whose reference cycles, if still
# alive at interpreter shutdown, are finalized after its thread pools stop and the process
# aborts ("terminate called without an active exception") about one run in four. Collecting
# them before shutdown avoids that; the same happens with fsspec's memory:// filesystem.
def _collect_at_exit() -> None:
    # Re-registered on every read so that it runs before handlers registered after ours.
    atexit.unregister(gc.collect)
    atexit.register(gc.collect)


_collect_at_exit()


def require_a_lake() -> None:
    """A reader never creates a lake (``config.missing_default_lake``)."""
    if problem := missing_default_lake():
        raise NoLakeError(problem)


def current_lake():
    """The Lake for this process's LETL_* environment, built on first use."""
    key = snapshot()
    with _lakes_lock:
        lake = _lakes.get(key)
        if lake is None:
            from letl.lake.lake import Lake

            lake = _lakes[key] = Lake.from_env()
        return lake


PARQUET_SIDECARS = ("_metadata", "_common_metadata")


class GrosFileSystem(AbstractFileSystem):
    protocol = "gros"
    root_marker = ""

    def __init__(self, *args: Any, run_id: str | None = None, step_key: str | None = None, lake: Any = None,
                 access: str | None = None, description: str | None = None, **kwargs: Any):
        if any(option in kwargs for option in CHAIN_OPTIONS):
            # fsspec split the URL at '::' and gave us only the part before it, which parses.
            raise invalid(f"{SCHEME}...::...", "fsspec URL chaining ('::') is not allowed")
        super().__init__(*args, **kwargs)
        self.run_id, self.step_key = run_id, step_key
        self._lake = lake
        # What the explorer shows and to whom; a dataset that declares nothing stays restricted.
        self.dataset = {k: v for k, v in (("access", access), ("description", description)) if v}
        self._reads = Reads(self._resolve, self)

    @property
    def lake(self):
        return self._lake if self._lake is not None else current_lake()

    # --- paths (gros_paths.py) ---------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, (list, tuple)):
            return [strip_protocol(p) for p in path]
        return strip_protocol(path)

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith(SCHEME) else SCHEME + name

    def _resolve(self, top: GrosRef) -> tuple[Any, bool]:
        """One catalog query for a top-level ref, then the access check on what it returned; a
        refusal is audited and raised, never cached."""
        from letl.lake.lake import current_user

        if self._lake is None:
            require_a_lake()
        try:
            resolution = resolve_read(self.lake, top)
        except LookupError as exc:
            raise GrosNotFoundError(f"{top}: {exc}") from None
        # Listing reveals sizes, rows and hashes too, so every path through here is checked.
        check_read(self.lake, top, resolution.served, current_user(), REFUSED_KIND, current=resolution.current)
        is_dir = top.partition == "*" or (top.partition is None and any(v.partition for v in resolution.served))
        if is_dir:
            warn_if_mixed(str(top), resolution.served)
        return resolution, is_dir

    def _select(self, path: str, starts: bool = False) -> tuple[Read, list, bool]:
        """(read, versions, is_directory) for a metadata call (info, exists, ...); GrosNotFoundError when
        nothing matches, AccessDenied (audited) when the caller may not read what it selects. A partition's
        Hive directory is a directory of its one version."""
        top, partition, hive = split_path(path)
        read, versions, is_dir = self._reads.about(top, partition, starts=starts)
        return read, versions, is_dir or hive

    def _listing(self, path: str) -> tuple[Read, list, bool]:
        """ls/glob/find: a new read, resolved afresh (gros_reads.py)."""
        top, partition, hive = split_path(path)
        read, versions, is_dir = self._reads.listing(top, partition)
        return read, versions, is_dir or hive

    def unified_schema(self, path):
        """The union of the columns of every Parquet version a path serves (gros_schema.py): pass it as
        ``schema=`` to pyarrow or pandas so that partitions written before a column existed read as
        nulls instead of hiding the column; it holds the partition column too. Reads footers, not rows
        (no audit row); resolved afresh and checked like a listing."""
        _, versions, is_dir = self._listing(path)
        hive = PARTITION_COLUMN if is_dir and any(v.partition for v in versions) else None
        return unified_schema(self.lake, versions, f"{SCHEME}{self._strip_protocol(path)}", hive)

    @staticmethod
    def _file_info(name: str, version) -> dict[str, Any]:
        return {
            "name": name,
            "size": version.bytes,
            "type": "file",
            "created": version.created_at,
            "version_id": version.version_id,
            "format": version.format,
            "partition": version.partition or None,
            "rows": version.rows,
            "sha256": version.sha256,
            "schema_fingerprint": version.schema_fingerprint,
        }

    def _tree(self, path: str, versions) -> list[tuple[int, dict[str, Any]]]:
        """(depth, entry) of everything under a directory: in a dataset, a Hive directory per partition
        with its pseudo-file (and the unpartitioned version's file beside them); in a Hive directory, its file."""
        if split_path(path)[2]:
            return [(1, self._file_info(f"{as_directory(path)}/{CHILD_FILE}.{v.format}", v)) for v in versions]
        tree = []
        for v in versions:
            if v.partition:
                tree.append((1, {"name": hive_dir(path, v), "size": 0, "type": "directory", "partition": v.partition}))
            tree.append((2 if v.partition else 1, self._file_info(child_name(path, v), v)))
        return tree

    def _children(self, path: str, versions) -> list[dict[str, Any]]:
        """Every pseudo-file under a directory."""
        return [e for _, e in self._tree(path, versions) if e["type"] == "file"]

    # --- listing ------------------------------------------------------------------------

    def info(self, path, **kwargs):
        name = self._strip_protocol(path)
        head, _, last = name.rpartition("/")
        if last in PARQUET_SIDECARS:
            # pyarrow probes a dataset directory for these; a lake directory never has them.
            ref_of(head)
            raise FileNotFoundError(name)
        _, versions, is_dir = self._select(path, starts=True)
        if is_dir:
            return {"name": name, "size": 0, "type": "directory", "versions": len(versions)}
        return self._file_info(name, versions[0])

    def ls(self, path, detail=True, **kwargs):
        name = as_directory(str(path))
        _, versions, is_dir = self._listing(path)
        if is_dir:
            entries = [e for depth, e in self._tree(name, versions) if depth == 1]
        else:
            entries = [self._file_info(name, versions[0])]
        return entries if detail else [e["name"] for e in entries]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        name = as_directory(str(path))
        _, versions, is_dir = self._listing(path)
        out: dict[str, dict[str, Any]] = {}
        if is_dir:
            if withdirs:
                out[name] = {"name": name, "size": 0, "type": "directory"}
            for depth, entry in self._tree(name, versions):
                if (withdirs or entry["type"] == "file") and (maxdepth is None or depth <= maxdepth):
                    out[entry["name"]] = entry
        else:
            out[name] = self._file_info(name, versions[0])
        return out if detail else sorted(out)

    def glob(self, path, maxdepth=None, **kwargs):
        """'?' and '*' are URI syntax here, not wildcards: ``x?partition=*``, ``x/*`` and the Hive-style
        ``x/*/*.parquet`` or ``x/**/*.parquet`` all expand to the pseudo-files of directory x; any other
        path globs to itself."""
        detail = kwargs.get("detail", False)
        name, suffix = without_wildcards(str(path))
        try:
            _, versions, is_dir = self._listing(name)
        except NoLakeError:
            raise
        except GrosNotFoundError:
            return {} if detail else []
        entries = self._children(name, versions) if is_dir else [self._file_info(name, versions[0])]
        entries = [e for e in entries if e["name"].endswith(suffix)]
        if detail:
            return {e["name"]: e for e in entries}
        return [e["name"] for e in entries]

    # A malformed URI, or no lake at all, raises here too: False would hide what is wrong behind the
    # caller's own "not found" (fsspec's caches and pandas ask exists() first).
    def _selected(self, path) -> bool | None:
        """Whether the path is a directory; None when it selects nothing."""
        try:
            return self._select(path)[2]
        except NoLakeError:
            raise
        except GrosNotFoundError:
            return None

    def exists(self, path, **kwargs):
        return self._selected(path) is not None

    def isdir(self, path):
        return self._selected(path) is True

    def isfile(self, path):
        return self._selected(path) is False

    def modified(self, path):
        _, versions, is_dir = self._select(path)
        if is_dir:
            return max(v.created_at for v in versions)
        return versions[0].created_at

    def created(self, path):
        _, versions, is_dir = self._select(path)
        return min(v.created_at for v in versions) if is_dir else versions[0].created_at

    def mkdir(self, path, create_parents=True, **kwargs):
        """Directories are views over the catalog: nothing to create (writers call this on
        the 'parent' of a URI, which need not be a URI itself)."""

    def makedirs(self, path, exist_ok=False):
        pass

    def _rm(self, path):
        raise PermissionError(f"{SCHEME}{self._strip_protocol(path)}: lake versions are immutable and cannot be deleted")

    def rm(self, path, recursive=False, maxdepth=None):
        self._rm(path if isinstance(path, str) else path[0])

    def cp_file(self, path1, path2, **kwargs):
        with self.open(path1, "rb") as src, self.open(path2, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)

    # --- reading and writing -------------------------------------------------------------

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        name = self._strip_protocol(path)
        if mode in ("wb", "xb"):
            return GrosWriteFile(self.lake, ref_of(path), name, self.dataset)
        if mode != "rb":
            raise ValueError(f"gros:// files open only for 'rb' or 'wb', not {mode!r}")
        top, partition, hive = split_path(path)
        read, versions, is_dir = self._reads.for_open(top, partition)
        if is_dir or hive:
            raise IsADirectoryError(
                f"{SCHEME}{name} selects {len(versions)} versions (one per partition): "
                "read it as a dataset (pd.read_parquet) or choose one with ?partition=P"
            )
        _collect_at_exit()
        from letl.lake.lake import current_user

        who = {"run_id": self.run_id, "step_key": self.step_key, "user": current_user(), "host": socket.gethostname()}
        return open_version(self.lake, self._reads, read, versions[0], top, partition, ACCESS_KIND, who)
