"""No patient value in any log: drops planted with distinctive identifiers go through every failing path
of the real job (run_months, and `letl run` in a subprocess); then the console, every file under
DAGSTER_HOME (event log, run storage, compute logs), LETL_HOME (the catalog's bytes and tables, the
manifests, staging) and the de-identified versions are searched for them. Only the restricted rejects,
the quarantine, may hold them, and they must: that proves the values were read at all."""

import csv
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from dagster._utils.error import serializable_error_info_from_exc_info

from letl.labs import sql
from letl.labs.drops import find_drops
from letl.labs.ingest import ingest_drops
from letl.labs.sample import write_drop
from letl.labs.schema import DROP_COLUMNS
from letl.lake.errors import LetlError
from letl.lake.lake import Lake
from letl_assets.local_run import run_months

MONTH = "2024-03"
NAME, MRN, BIRTH, ZIP = "ZZPATIENTNAME, Quentin", "MRN-9731-UNIQUE", "1917-04-23", "Z9731Z"
PLANTED = ("ZZPATIENTNAME", MRN, BIRTH, ZIP)
BIN = Path(sys.executable).parent
ASSETS = ("labs/lab_results", "labs/lab_results_rejects", "labs/lab_results_summary")


def record(**changes) -> dict:
    return dict(hospital_id="H005", patient_id=MRN, patient_name=NAME, birth_date=BIRTH, sex="M", zip=ZIP,
                test_code="2345-7", test_name="Glucose", result_value="101", unit="mg/dL", reference_low="70",
                reference_high="99", abnormal_flag="H", collected_at=f"{MONTH}-05 08:00:00",
                reported_at=f"{MONTH}-05 10:00:00") | changes


def csv_text(records, header=True, columns=DROP_COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def plant(landing: Path) -> None:
    labs = landing / "labs"
    for hospital in ("H001", "H002", "H003", "H004", "H006"):
        (labs / hospital).mkdir(parents=True)
    rows = [record(), record(patient_id=f"{MRN}-2")]
    (labs / "H001" / f"{MONTH}.csv").write_text(csv_text(rows, header=False))  # headerless
    (labs / "H002" / f"{MONTH}.csv").write_bytes(b"\x00\x07\xff garbage " + csv_text(rows).encode() + b"\x00")
    (labs / "H003" / f"{MONTH}.csv").write_bytes(csv_text(rows).encode("utf-16"))
    (labs / "H004" / f"{MONTH}.csv.gz").write_text(csv_text(rows))  # not gzip
    (labs / "H006" / f"{MONTH}.csv").write_text(csv_text(rows, columns=[c for c in DROP_COLUMNS if c != "zip"]))
    # A readable drop whose planted rows fail row by row: each lands in the rejects, never in a message.
    good = write_drop(labs / "H005" / f"{MONTH}.csv", hospital_id="H005", month=MONTH, rows=300, seed=3)
    broken = csv_text([record(collected_at="TBD"), record(birth_date="2999-01-01"), record(result_value="ERR"),
                       record(collected_at="2023-01-01 08:00:00"), record(patient_name=f"{NAME} \"Q")],
                      header=False)
    short = ",".join(v for k, v in record().items() if k != "sex") + "\n"
    with open(good.path, "a", encoding="utf-8") as f:
        f.write(broken + short + "\n" + csv_text([record()], header=False).replace("\n", "\r"))


def leaks_in_bytes(data: bytes) -> list[str]:
    return [v for v in PLANTED if v.encode() in data]


def scan_tree(root: Path, skip=lambda _path: False) -> dict[str, list[str]]:
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not skip(p)):
        if hits := leaks_in_bytes(path.read_bytes()):
            found[str(path.relative_to(root))] = hits
    return found


def catalog_leaks(catalog: Path) -> dict[str, list[str]]:
    found = {}
    with sqlite3.connect(catalog) as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                if hits := [v for v in PLANTED if v in repr(row)]:
                    found.setdefault(table, []).extend(hits)
    return found


def test_no_planted_identifier_reaches_any_log_or_the_catalog(letl_env, capfd):
    plant(letl_env["landing"])
    console = []
    [outcome] = run_months(None, force=False, log=console.append)
    assert outcome["status"] == "ok", (outcome, console)
    cli = subprocess.run([str(BIN / "letl"), "run", "--force"], env=dict(os.environ), capture_output=True, text=True,
                         timeout=600, cwd=letl_env["home"])
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    captured = capfd.readouterr()
    text = "\n".join(console) + captured.out + captured.err + cli.stdout + cli.stderr
    assert "missing_header" in text and "utf16_file" in text, "the failing paths were not taken"
    assert [v for v in PLANTED if v in text] == [], "a planted value reached the console"

    assert scan_tree(letl_env["dagster_home"]) == {}
    lake = Lake.from_env()
    version_objects = {Path(lake.local_path(v)) for asset in ASSETS for v in lake.catalog.list_versions(asset)}
    assert scan_tree(letl_env["home"], skip=lambda p: p in version_objects) == {}
    assert scan_tree(letl_env["pmem"], skip=lambda p: p in version_objects) == {}
    assert catalog_leaks(letl_env["home"] / "catalog.sqlite") == {}

    restricted = {Path(lake.local_path(v)) for v in lake.catalog.list_versions("labs/lab_results_rejects")}
    for path in version_objects - restricted:  # the de-identified datasets
        table = pq.read_table(path)
        assert [v for v in PLANTED if v in repr(table.to_pylist())] == [], path
    rejects = "".join(repr(pq.read_table(p).to_pylist()) for p in restricted)
    assert all(v in rejects for v in PLANTED), "the quarantine should hold the planted values"


def test_a_duckdb_error_reaches_no_log_with_its_message(tmp_path, monkeypatch):
    """DuckDB's messages quote lines ('Original Line: ...'): an unexpected one is passed on by kind only."""
    write_drop(tmp_path / "labs" / "H001" / f"{MONTH}.csv", hospital_id="H001", month=MONTH, rows=50, seed=1)

    def fail(_scan):
        raise duckdb.ConversionException(f"Could not convert string '{MRN}'; Original Line: {NAME},{BIRTH}")

    monkeypatch.setattr(sql.Scan, "flag", fail)
    with pytest.raises(LetlError) as error:
        ingest_drops(find_drops(tmp_path), tmp_path / "g.parquet", tmp_path / "r.parquet", b"k", tmp_path,
                     log=lambda _: None)
    shown = serializable_error_info_from_exc_info((error.type, error.value, error.tb)).to_string()
    assert "ConversionException" in shown and [v for v in PLANTED if v in shown] == []
