"""At a size where DuckDB reads in parallel, every reject still names its physical line, and reruns match."""

import csv
import hashlib

import pyarrow.parquet as pq

from letl.labs.drops import find_drops
from letl.labs.ingest import ingest_drops
from letl.labs.sample import write_drop

ROWS = 200_000  # per file; each is several of the CSV reader's buffers, so both threads read it


def test_lines_stay_exact_and_output_is_byte_identical_on_a_large_drop(tmp_path):
    """Two files: the good rows of both come from one scan of the stages, which must keep them apart
    and in order (a UNION ALL of the two interleaved them, differently from run to run)."""
    landing = tmp_path / "landing"
    drops = {h: write_drop(landing / "labs" / h / "2024-05.csv", hospital_id=h, month="2024-05", rows=ROWS, seed=3)
             for h in ("H001", "H002")}
    digests = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        out.mkdir()
        report = ingest_drops(find_drops(landing), out / "good.parquet", out / "rejects.parquet", b"k", out,
                              log=lambda _: None)
        digests.append([hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("good.parquet", "rejects.parquet")])
    assert digests[0] == digests[1]
    assert len(report.files) == 2
    for file in report.files:
        assert file.rows == ROWS
        assert file.rejected == sum(drops[file.relpath.split("/")[1]].defects.values())
    assert report.rows_in == 2 * ROWS

    good = pq.read_table(tmp_path / "run0" / "good.parquet", columns=["source_file"]).column(0).to_pylist()
    assert good == sorted(good) and len(set(good)) == 2  # file after file
    wrong = []
    rejects = pq.read_table(tmp_path / "run0" / "rejects.parquet").to_pylist()
    assert [(r["source_file"], r["line"]) for r in rejects] == sorted((r["source_file"], r["line"]) for r in rejects)
    texts = {d.path.relative_to(landing).as_posix(): d.path.read_text(encoding="utf-8").split("\n") for d in drops.values()}
    for reject in rejects:
        lines = texts[reject["source_file"]]
        physical = lines[reject["line"] - 1]
        if reject["reason"] == "malformed_row":
            ok = reject["raw_line"] == physical
        elif reject["reason"] == "duplicate":
            ok = lines[int(reject["detail"].rsplit(" ", 1)[1]) - 1] == physical
        else:
            ok = next(csv.reader([physical]))[1] == (reject["patient_id"] or "")
        if not ok:
            wrong.append((reject["source_file"], reject["line"]))
    assert wrong == []
