"""Writing through gros://: a staging file that becomes a new lake version when closed cleanly."""

from __future__ import annotations

import io
import os
import socket
import sys
from pathlib import Path

from letl.lake.uri import SCHEME, GrosRef, format_uri


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
        from letl.lake.lake import current_user
        from letl.lake.names import refuse_produced

        refuse_produced(self.lake, self.ref.asset_key)
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
