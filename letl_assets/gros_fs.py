"""The gros:// fsspec protocol: read lake versions from pandas, pyarrow and duckdb, write new ones.

Registered through the ``fsspec.specs`` entry point, so after ``pip install`` a notebook needs
no import of letl_assets:

    pd.read_parquet("gros://labs.lab_results:latest?partition=2024-03-01")
    pd.read_parquet("gros://labs.lab_results")          # every partition, as a dataset
    pd.read_csv("gros://team.notes:latest")             # a version stored as CSV
    df.to_parquet("gros://team.my_dataset/my-branch")   # a new version on my-branch

Paths (a URI without ``gros://``) name either one version, which is a file, or several
(no partition on a partitioned asset, or ``?partition=*``), which is a directory holding one
pseudo-file per selected version::

    {directory path}/partition={P}.{format}       (P is ``_`` for the unpartitioned version)

Every read is logged in the catalog's access log with kind ``gros``, user and host. A write
goes to a staging file and becomes a version only when the file is closed without error.
"""

from __future__ import annotations

import atexit
import gc
import io
import os
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from fsspec.spec import AbstractFileSystem

from letl_assets.lake.uri import PARTITION, SCHEME, GrosRef, GrosURIError, format_uri, parse, resolve

ACCESS_KIND = "gros"
CHILD = re.compile(r"partition=(?P<partition>" + PARTITION.pattern + r")\.(?P<fmt>[A-Za-z0-9]+)")
UNPARTITIONED = "_"



class GrosNotFoundError(LookupError):
    """A well-formed URI that selects nothing (unknown repo, branch or partition, or a tag
    without a match).

    Deliberately not a FileNotFoundError: pyarrow turns those into a bare "path not found",
    and the point of this error is to say which part of the URI matched nothing.
    ``exists``/``isdir``/``isfile`` still answer False.
    """


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


def current_lake():
    """The Lake for this process's LETL_* environment, built on first use."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LETL_")))
    with _lakes_lock:
        lake = _lakes.get(key)
        if lake is None:
            from letl_assets.lake.lake import Lake

            lake = _lakes[key] = Lake.from_env()
        return lake


PARQUET_SIDECARS = ("_metadata", "_common_metadata")


class GrosFileSystem(AbstractFileSystem):
    protocol = "gros"
    root_marker = ""

    def __init__(self, *args: Any, run_id: str | None = None, step_key: str | None = None, lake: Any = None,
                 access: str | None = None, description: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.run_id, self.step_key = run_id, step_key
        self._lake = lake
        # What the explorer shows and to whom; a dataset that declares nothing stays restricted.
        self.dataset = {k: v for k, v in (("access", access), ("description", description)) if v}

    @property
    def lake(self):
        return self._lake if self._lake is not None else current_lake()

    # --- paths --------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, (list, tuple)):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(SCHEME):
            path = path[len(SCHEME):]
        return path.rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith(SCHEME) else SCHEME + name

    def _ref(self, path: str) -> GrosRef:
        """The ref a path names; a pseudo-file inside a directory names one partition of it."""
        path = self._strip_protocol(path)
        head, sep, last = path.rpartition("/")
        child = CHILD.fullmatch(last) if sep else None
        if child is None:
            return parse(SCHEME + path)
        parent = parse(SCHEME + head)
        if parent.partition not in (None, "*"):
            raise GrosURIError(f"invalid gros path {path!r}: {head!r} names a single version, not a directory")
        partition = child["partition"]
        return parent.with_partition("" if partition == UNPARTITIONED else partition)

    def _select(self, path: str):
        """(ref, versions, is_directory) for a path; GrosNotFoundError when nothing matches."""
        ref = self._ref(path)
        try:
            versions = resolve(self.lake, ref)
        except LookupError as exc:
            raise GrosNotFoundError(f"{SCHEME}{self._strip_protocol(path)}: {exc}") from None
        is_dir = ref.partition == "*" or (ref.partition is None and any(v.partition for v in versions))
        return ref, versions, is_dir

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
        }

    def _children(self, path: str, versions) -> list[dict[str, Any]]:
        # Children keep the caller's spelling of the directory (with or without gros://):
        # pyarrow checks that every listed path lies under the base dir it asked about.
        base = str(path).rstrip("/")
        return [
            self._file_info(f"{base}/partition={v.partition or UNPARTITIONED}.{v.format}", v) for v in versions
        ]

    # --- listing ------------------------------------------------------------------------

    def info(self, path, **kwargs):
        name = self._strip_protocol(path)
        if name.rpartition("/")[2] in PARQUET_SIDECARS:
            # pyarrow probes a dataset directory for these; a lake directory never has them.
            raise FileNotFoundError(name)
        _, versions, is_dir = self._select(name)
        if is_dir:
            return {"name": name, "size": 0, "type": "directory", "versions": len(versions)}
        return self._file_info(name, versions[0])

    def ls(self, path, detail=True, **kwargs):
        name = str(path).rstrip("/")
        _, versions, is_dir = self._select(name)
        entries = self._children(name, versions) if is_dir else [self._file_info(name, versions[0])]
        return entries if detail else [e["name"] for e in entries]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        name = str(path).rstrip("/")
        _, versions, is_dir = self._select(name)
        out: dict[str, dict[str, Any]] = {}
        if is_dir:
            if withdirs:
                out[name] = {"name": name, "size": 0, "type": "directory"}
            for entry in self._children(name, versions):
                out[entry["name"]] = entry
        else:
            out[name] = self._file_info(name, versions[0])
        return out if detail else sorted(out)

    def glob(self, path, maxdepth=None, **kwargs):
        """'?' and '*' are URI syntax here, not wildcards: ``x?partition=*`` and ``x/*`` both
        expand to the pseudo-files of directory x; any other path globs to itself."""
        name = str(path).rstrip("/")
        detail = kwargs.get("detail", False)
        for suffix in ("/**", "/*"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        try:
            _, versions, is_dir = self._select(name)
        except GrosNotFoundError:
            return {} if detail else []
        entries = self._children(name, versions) if is_dir else [self._file_info(name, versions[0])]
        if detail:
            return {e["name"]: e for e in entries}
        return [e["name"] for e in entries]

    def exists(self, path, **kwargs):
        try:
            self._select(path)
        except (GrosNotFoundError, GrosURIError):
            return False
        return True

    def isdir(self, path):
        try:
            return self._select(path)[2]
        except (GrosNotFoundError, GrosURIError):
            return False

    def isfile(self, path):
        try:
            return not self._select(path)[2]
        except (GrosNotFoundError, GrosURIError):
            return False

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
            return GrosWriteFile(self.lake, self._ref(name), name, self.dataset)
        if mode != "rb":
            raise ValueError(f"gros:// files open only for 'rb' or 'wb', not {mode!r}")
        _, versions, is_dir = self._select(name)
        if is_dir:
            raise IsADirectoryError(
                f"{SCHEME}{name} selects {len(versions)} versions (one per partition): "
                "read it as a dataset (pd.read_parquet) or choose one with ?partition=P"
            )
        version = versions[0]
        _collect_at_exit()
        handle = open(self.lake.local_path(version), "rb")
        try:
            self.lake.record_access(version, ACCESS_KIND, run_id=self.run_id, step_key=self.step_key)
        except BaseException:
            handle.close()
            raise
        return handle


class GrosWriteFile(io.RawIOBase):
    """A staging file that becomes a new version when closed without error.

    Leaving a ``with`` block by an exception, calling ``discard()`` or dropping the object
    unclosed leaves nothing in the catalog.
    """

    def __init__(self, lake, ref: GrosRef, name: str, dataset: dict | None = None):
        super().__init__()
        if ref.tag_kind != "realtime":
            raise PermissionError(
                f"{SCHEME}{name}: cannot write to a tagged URI (tag {format_uri(ref).split(':', 2)[-1]!r}); "
                "write to gros://{repo}[/{branch}] and a new version is created"
            )
        if ref.partition == "*":
            raise PermissionError(f"{SCHEME}{name}: write one partition at a time (?partition=P), not '*'")
        self.lake, self.ref, self.name, self.dataset = lake, ref, name, dataset or {}
        self.staged: Path = lake.staging_path(".part")
        self._fh = open(self.staged, "wb")
        self.version = None

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed gros file")
        return self._fh.write(data)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()

    def discard(self) -> None:
        """Drop what was written; nothing becomes visible."""
        if not self.closed:
            self._fh.close()
            self.staged.unlink(missing_ok=True)
            super().close()

    def close(self) -> None:
        if self.closed:
            return
        if sys.exc_info()[1] is not None:
            # Closed while an exception propagates (a `with fsspec.open(...)` block or a
            # ParquetWriter that failed): the content is incomplete, commit nothing.
            self.discard()
            return
        try:
            self._fh.close()
            self.version = self._commit()
        finally:
            self.staged.unlink(missing_ok=True)
            super().close()

    def _commit(self):
        size = self.staged.stat().st_size
        if size == 0:
            raise ValueError(f"{SCHEME}{self.name}: nothing was written, no version created")
        fmt = "parquet" if _is_parquet(self.staged, size) else "csv"
        target = self.staged.with_suffix(f".{fmt}")
        self.staged.rename(target)
        self.staged = target
        from letl_assets.lake.lake import current_user

        return self.lake.write_version(
            self.ref.asset_key,
            target,
            partition=self.ref.partition,
            branch=self.ref.branch,
            fmt=fmt,
            metadata={
                "writer": "external",
                "uri": format_uri(self.ref),
                "user": current_user(),
                "host": socket.gethostname(),
                **({"dataset": self.dataset} if self.dataset else {}),
            },
        )

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()
        else:
            self.close()
        return False

    def __del__(self):
        # An abandoned writer must not commit half a file (IOBase.__del__ would close()).
        try:
            self.discard()
        except Exception:
            pass


def _is_parquet(path: Path, size: int) -> bool:
    if size < 12:
        return False
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(-4, os.SEEK_END)
        return head == b"PAR1" and fh.read(4) == b"PAR1"
