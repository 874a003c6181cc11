"""Physical lines of a drop: counted, normalized for the CSV reader when needed, or quarantined.

The CSV reader counts records, not lines: it skips blank lines, merges the lines after a quote
left open into one record (an unbalanced quote hides the next rows), and fails on mixed CRLF/LF.
So every file's physical lines (LF, CRLF or a lone CR ends one) are counted by a cheap byte pass,
and the ingest checks that the reader accounted for each of them. Where it did not, or where the
line endings would defeat it, ``normalize`` writes a copy into staging with one LF per line and
the same line numbers: each line the reader cannot take as a record of its own (blank, with an
unbalanced quote, too long) is left empty there and written, with its raw text, to a side table
of rejects. Everything streams in chunks; memory stays bounded.
"""

import codecs
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from letl.labs.schema import REJECT_COLUMNS

CHUNK = 1 << 20
MAX_LINE = 1 << 20  # the reader's own limit is 2 MB; longer lines are rejected here
KEEP = 1 << 16  # characters of a quarantined line kept in raw_line
REJECT_SCHEMA = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in REJECT_COLUMNS])
BATCH = 65_536  # rows of rejects held at a time
SIDE_SCHEMA = pa.schema([("line", pa.int64()), ("reason", pa.string()), ("detail", pa.string()),
                         ("raw_line", pa.string())])
_BYTES_NL = re.compile(rb"\r\n|\r|\n")
_TEXT_NL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Survey:
    lines: int
    irregular_endings: bool  # CR-only, lone CRs, or CRLF mixed with LF: the reader fails on these
    damaged: bool  # a gzip stream that breaks before its end: lines counts what could be read


def chunks(path: Path, is_gzip: bool, damage: list | None = None):
    """The file's (decompressed) bytes, at most CHUNK at a time. A damaged gzip stream ends the
    data where it breaks, noted in damage when given."""
    with open(path, "rb") as f:
        if not is_gzip:
            while block := f.read(CHUNK):
                yield block
            return
        # zlib rather than GzipFile: a cut stream still yields what it holds before the cut.
        stream = zlib.decompressobj(wbits=31)
        try:
            while raw := f.read(CHUNK):
                while raw:
                    if stream.eof:  # the next member of a concatenated gzip file
                        stream = zlib.decompressobj(wbits=31)
                    block = stream.decompress(raw, CHUNK)
                    raw = stream.unused_data if stream.eof else stream.unconsumed_tail
                    if block:
                        yield block
            while not stream.eof and (block := stream.decompress(b"", CHUNK)):
                yield block
            broken = not stream.eof
        except zlib.error:
            broken = True
        if broken and damage is not None:
            damage.append(True)


def survey(path: Path, is_gzip: bool) -> Survey:
    lf = cr = crlf = 0
    last, damage = b"", []
    for block in chunks(path, is_gzip, damage):
        lf, in_block = lf + block.count(b"\n"), block.count(b"\r")
        if in_block or last == b"\r":  # most drops hold no CR: no third pass over them
            cr, crlf = cr + in_block, crlf + block.count(b"\r\n") + (last == b"\r" and block[:1] == b"\n")
        last = block[-1:]
    lines = lf + cr - crlf + (last not in (b"", b"\n", b"\r"))
    return Survey(lines, cr != crlf or (crlf > 0 and lf != crlf), bool(damage))


def split(blocks, pattern):
    """Every physical line, without its terminator; None for a line over MAX_LINE."""
    pending, cr, skipping = None, None, False
    for block in blocks:
        if cr is None:
            cr = "\r" if isinstance(block, str) else b"\r"
        pending = block if pending is None else pending + block
        start = 0
        for match in pattern.finditer(pending):
            if match.end() == len(pending) and pending.endswith(cr):
                break  # a CR at the end of a block may be the first half of CRLF
            if not skipping:
                yield pending[start:match.start()]
            skipping, start = False, match.end()
        pending = pending[start:]
        if skipping:
            pending = pending[-1:]  # inside an over-long line: only a CR at its end may matter
        elif len(pending) > MAX_LINE + 1:  # a CR kept for a possible CRLF does not count
            yield None
            skipping, pending = True, pending[-1:]
    if pending and not skipping:
        yield pending[:-1] if pending.endswith(cr) else pending


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


class SideWriter:
    """Rejects found outside the CSV reader, written to Parquet in batches."""

    def __init__(self, path: Path):
        self.path, self.rows, self._batch = Path(path), 0, []
        self._writer = pq.ParquetWriter(self.path, SIDE_SCHEMA)

    def add(self, line: int, reason: str, detail: str, raw: str | None) -> None:
        self._batch.append((line, reason, detail, raw))
        self.rows += 1
        if len(self._batch) >= 50_000:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            columns = list(zip(*self._batch, strict=True))
            arrays = [pa.array(c, f.type) for c, f in zip(columns, SIDE_SCHEMA, strict=True)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=SIDE_SCHEMA))
            self._batch = []

    def close(self) -> int:
        self._flush()
        self._writer.close()
        return self.rows


def conform(batch: pa.RecordBatch | pa.Table, relpath: str) -> pa.Table:
    """Rejects in the rejects' columns: the file's name, the columns the batch has, nulls for the rest."""
    n, names = batch.num_rows, batch.schema.names
    columns = [pa.repeat(pa.scalar(relpath), n) if f.name == "source_file" else
               batch.column(f.name).cast(f.type) if f.name in names else pa.nulls(n, f.type) for f in REJECT_SCHEMA]
    return pa.Table.from_arrays(columns, schema=REJECT_SCHEMA)


def side_rejects(relpath: str, side: Path) -> Iterator[pa.Table]:
    """Rejects found outside the reader (lines.SideWriter), in line order."""
    return (conform(b, relpath) for b in pq.ParquetFile(side).iter_batches(BATCH))


def merge_by_line(first: Iterable[pa.Table], second: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Two streams of rejects, each in line order, as one stream in line order; no line is in both."""
    a, b = (t for t in first if t.num_rows), (t for t in second if t.num_rows)
    x, y = next(a, None), next(b, None)
    while x is not None and y is not None:
        cut = min(x["line"][-1].as_py(), y["line"][-1].as_py())
        (x_head, x), (y_head, y) = _split(x, cut), _split(y, cut)
        both = pa.concat_tables([x_head, y_head])
        yield both.take(pc.sort_indices(both, [("line", "ascending")]))
        x, y = x if x.num_rows else next(a, None), y if y.num_rows else next(b, None)
    for rest, stream in ((x, a), (y, b)):
        if rest is not None:
            yield rest
            yield from stream


def _split(table: pa.Table, cut: int) -> tuple[pa.Table, pa.Table]:
    at = int(np.searchsorted(table["line"].to_numpy(), cut, side="right"))
    return table.slice(0, at), table.slice(at)


def write_rejects(target: Path, tables: Iterable[pa.Table], rows: int = BATCH) -> int:
    """The rejects into one zstd Parquet file, in row groups of about ``rows``; returns the rows written."""
    written, pending, schema = 0, [], REJECT_SCHEMA
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for table in tables:
            pending.append(table)
            if sum(t.num_rows for t in pending) >= rows:
                writer.write_table(pa.concat_tables(pending), row_group_size=rows)
                written, pending = written + sum(t.num_rows for t in pending), []
        if pending or not written:  # an empty month still gets a file with the columns
            table = pa.concat_tables(pending) if pending else schema.empty_table()
            writer.write_table(table, row_group_size=rows)
            written += table.num_rows
    return written


def normalize(path: Path, is_gzip: bool, target: Path, side: SideWriter, reason: str) -> int:
    """Write the one-LF-per-line copy and the side rejects; returns the number of physical lines.

    A record is one line. A line whose quotes do not pair up (RFC 4180 doubles a quote inside a
    field, so a well-formed line holds an even number) is rejected on its own, and the next line
    starts a new record: a good row after an unbalanced quote is read, not swallowed.
    A line set aside becomes an empty line: the reader skips it, yet counts it in the line
    numbers it gives its own rejects, so those stay physical line numbers.
    """
    number = 0
    with open(target, "wb") as out:
        for line in split(chunks(path, is_gzip), _BYTES_NL):
            number += 1
            if line is None:
                side.add(number, reason, f"line longer than {MAX_LINE} bytes", None)
            elif number == 1:  # the header, read apart by read_header
                out.write(line + b"\n")
                continue
            elif line.count(b'"') % 2:
                side.add(number, reason, "unbalanced quote: a quoted field does not close on this line",
                         _decode(line[:KEEP]))
            elif not line.strip():
                side.add(number, "blank_line", "blank line", "")
            else:
                out.write(line + b"\n")
                continue
            out.write(b"\n")
    return number


def quarantine(path: Path, is_gzip: bool, encoding: str, side: SideWriter, reason: str, detail: str) -> int:
    """Every physical line of an unreadable file becomes a reject; returns the number of lines."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    blocks = (decoder.decode(block) for block in chunks(path, is_gzip))
    number = 0
    for line in split(blocks, _TEXT_NL):
        number += 1
        side.add(number, reason, detail, None if line is None else line[:KEEP])
    return number
