"""De-identification end to end: labs_job on generated drops, then every published Parquet file is scanned."""

import csv
import gzip
import hashlib
import hmac
import io
import os
import re
import stat

import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import DagsterInstance

from letl.labs.sample import generate_drops
from letl.labs.schema import IDENTIFIER_COLUMNS
from letl_assets.definitions import defs

MONTHS = ("2024-01-01", "2024-02-01")
CHECKS = {"rows_reconcile", "no_raw_identifiers", "physiological_bounds"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def run_month(partition):
    result = defs.resolve_job_def("labs_job").execute_in_process(
        partition_key=partition, instance=DagsterInstance.get(), raise_on_error=False
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def source_identifiers(landing):
    """Raw identifier values of every source row, by kind, read independently of the parser."""
    found = {c: set() for c in IDENTIFIER_COLUMNS}
    for path in sorted((landing / "labs").rglob("*.csv*")):
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.name.endswith(".gz") else raw
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        header, *records = csv.reader(io.StringIO(text, newline=""))
        for record in records:
            if len(record) == len(header):
                for c in IDENTIFIER_COLUMNS:
                    found[c].add(record[header.index(c)])
            else:  # a malformed line: its fields cannot be placed, so take anything that looks like one
                for field in record:
                    if re.fullmatch(r"MRN\d{7}", field):
                        found["patient_id"].add(field)
                    elif DATE.match(field):
                        found["birth_date"].add(field)
                    elif re.fullmatch(r"\d{5}", field):
                        found["zip"].add(field)
                    elif ", " in field:
                        found["patient_name"].add(field)
    return {c: values - {""} for c, values in found.items()}


def leaks(path, identifiers):
    """Column values of a Parquet file equal to a raw identifier, or (strings) containing an id, name or date."""
    exact = set().union(*identifiers.values())
    inside = re.compile("|".join(re.escape(v) for c in ("patient_id", "patient_name", "birth_date")
                                 for v in sorted(identifiers[c], key=len, reverse=True)))
    table = pq.read_table(path)
    found = []
    for name in table.column_names:
        for value in pc.unique(table.column(name)).to_pylist():
            if value is None:
                continue
            text = value if isinstance(value, str) else str(value)
            if text in exact or (isinstance(value, str) and inside.search(value)):
                found.append((name, text))
    return found


def tier_files(lake, asset):
    files = []
    for tier in lake.tiers.values():
        root = tier.spec.path
        files += [p for p in root.rglob("*.parquet")
                  if ".tmp" not in p.relative_to(root).parts and p.relative_to(root).parts[1:3] == ("labs", asset)]
    return sorted(files)


def pseudonym(key, patient_id):
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()


def test_published_tables_hold_no_raw_identifiers_and_keys_are_stable(letl_env, lake):
    generate_drops(letl_env["landing"], months=2, hospitals=2, rows_per_file=600, seed=5)
    results = [run_month(p) for p in MONTHS]
    identifiers = source_identifiers(letl_env["landing"])
    assert all(len(values) > 50 for values in identifiers.values()), {c: len(v) for c, v in identifiers.items()}
    assert any(not name.isascii() for name in identifiers["patient_name"])

    published = tier_files(lake, "lab_results") + tier_files(lake, "lab_results_summary")
    catalogued = {lake.local_path(v) for a in ("labs/lab_results", "labs/lab_results_summary")
                  for v in lake.catalog.list_versions(a)}
    assert len(published) == 4 and set(published) == catalogued  # the walk saw every published version
    for path in published:
        assert leaks(path, identifiers) == [], path
    # The scan does find raw values where they are allowed: the restricted rejects.
    rejects = tier_files(lake, "lab_results_rejects")
    assert len(rejects) == 2 and all(leaks(path, identifiers) for path in rejects)
    assert not set(pq.read_schema(published[0]).names) & set(IDENTIFIER_COLUMNS)

    for result in results:
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == CHECKS
        assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]
    assert_same_patient_same_key(letl_env, lake)


def assert_same_patient_same_key(letl_env, lake):
    key = os.environ["LETL_PSEUDONYM_KEY"].encode()
    keys_by_month, ids_by_month = [], []
    for partition in MONTHS:
        table = lake.read_table(lake.latest("labs/lab_results", partition), ["hospital_id", "patient_key"])
        keys_by_month.append(set(zip(table.column("hospital_id").to_pylist(), table.column("patient_key").to_pylist(),
                                      strict=True)))
        landing = letl_env["landing"] / "labs"
        ids = set()
        for path in landing.glob(f"*/{partition[:7]}.csv*"):
            text = path.read_bytes().decode("latin-1")  # patient ids and hospital ids are ASCII
            ids |= {(m[0], m[1]) for m in re.findall(r"^(H\d{3}),(MRN\d{7}),", text, re.M)}
        ids_by_month.append({(h, pseudonym(key, pid)) for h, pid in ids})
    for keys, expected in zip(keys_by_month, ids_by_month, strict=False):
        assert keys <= expected  # every key is the HMAC of a patient id of that month
    # Keys of one patient agree across months: many patients of month 1 are found under the same key in month 2.
    assert len(keys_by_month[0] & keys_by_month[1]) > 50


def test_generated_key_file_is_private_and_reused(letl_env, lake, monkeypatch):
    monkeypatch.delenv("LETL_PSEUDONYM_KEY")
    generate_drops(letl_env["landing"], months=2, hospitals=1, rows_per_file=400, seed=9)
    key_file = letl_env["home"] / "pseudonym.key"
    assert not key_file.exists()
    run_month(MONTHS[0])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert re.fullmatch(rb"[0-9a-f]{64}\n?", key)
    first = lake.latest("labs/lab_results", MONTHS[0])

    run_month(MONTHS[0])
    run_month(MONTHS[1])
    assert key_file.read_bytes() == key
    assert lake.latest("labs/lab_results", MONTHS[0]).version_id == first.version_id  # same bytes: same pseudonyms
    assert [p.name for p in letl_env["home"].iterdir() if "pseudonym" in p.name] == ["pseudonym.key"]
    text = (letl_env["landing"] / "labs" / "H001" / "2024-02.csv").read_text(encoding="utf-8")
    expected = {pseudonym(key.strip(), pid) for pid in re.findall(r"^H001,(MRN\d{7}),", text, re.M)}
    keys = set(lake.read_table(lake.latest("labs/lab_results", MONTHS[1]), ["patient_key"]).column(0).to_pylist())
    assert keys and keys <= expected
