"""At a size where DuckDB reads in parallel, every reject still names its physical line, and reruns match."""

import csv
import hashlib

import pyarrow.parquet as pq

from letl_assets.labs.drops import find_drops
from letl_assets.labs.ingest import ingest_drops
from letl_assets.labs.sample import write_drop

ROWS = 400_000


def test_lines_stay_exact_and_output_is_byte_identical_on_a_large_drop(tmp_path):
    landing = tmp_path / "landing"
    drop = write_drop(landing / "labs" / "H001" / "2024-05.csv", hospital_id="H001", month="2024-05", rows=ROWS, seed=3)
    digests = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        out.mkdir()
        report = ingest_drops(find_drops(landing), out / "good.parquet", out / "rejects.parquet", b"k", out,
                              log=lambda _: None)
        digests.append([hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("good.parquet", "rejects.parquet")])
    assert digests[0] == digests[1]
    assert report.reasons == drop.defects and report.rows_in == ROWS

    lines = drop.path.read_text(encoding="utf-8").split("\n")
    wrong = []
    for reject in pq.read_table(tmp_path / "run0" / "rejects.parquet").to_pylist():
        physical = lines[reject["line"] - 1]
        if reject["reason"] == "malformed_row":
            ok = reject["raw_line"] == physical
        elif reject["reason"] == "duplicate":
            ok = lines[int(reject["detail"].rsplit(" ", 1)[1]) - 1] == physical
        else:
            ok = next(csv.reader([physical]))[1] == (reject["patient_id"] or "")
        if not ok:
            wrong.append(reject["line"])
    assert wrong == []
