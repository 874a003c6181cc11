"""Tests for the sample lab-drop generator: the files are re-read and re-checked independently."""

import csv
import gzip
import io
import re
from collections import Counter
from datetime import datetime, timedelta

import pytest

from letl.labs.sample import generate_drops, write_drop
from letl.labs.schema import DROP_COLUMNS, LAB_TESTS, QUALITATIVE_TESTS, RESULT_CODES, TESTS_BY_CODE, Reason

DEFECTS = {Reason.BAD_DATE, Reason.MISSING_RESULT, Reason.MISSING_PATIENT_ID, Reason.OUT_OF_RANGE, Reason.DUPLICATE,
           Reason.MALFORMED}
CENSORED = re.compile(r"([<>]=?) *(\d+(?:\.\d+)?)")
SPELLINGS = {s.replace(" ", ""): code for code, spellings in RESULT_CODES.items() for s in spellings}

TS = "%Y-%m-%d %H:%M:%S"


def read_drop(path):
    """Decode like a careful consumer would: gunzip, strip a UTF-8 BOM, fall back to Latin-1."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    try:
        text, encoding = raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.decode("latin-1"), "latin-1"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return {"raw": raw, "encoding": encoding, "header": rows[0], "records": rows[1:]}


def row_defects(header, record, seen):
    """Every defect kind a record shows, judged from the parsed text alone."""
    if len(record) != len(header):
        return [Reason.MALFORMED]
    found = []
    if tuple(record) in seen:
        found.append(Reason.DUPLICATE)
    seen.add(tuple(record))
    r = dict(zip(header, record, strict=False))
    if r["patient_id"] == "":
        found.append(Reason.MISSING_PATIENT_ID)
    try:
        datetime.strptime(r["collected_at"], TS)
    except ValueError:
        found.append(Reason.BAD_DATE)
    kind, value, op = result_kind(r["result_value"])
    if kind == "missing":
        found.append(Reason.MISSING_RESULT)
    elif value is not None and r["test_code"] in TESTS_BY_CODE:
        lo, hi = TESTS_BY_CODE[r["test_code"]].min_possible, TESTS_BY_CODE[r["test_code"]].max_possible
        possible = {"<": value > lo, "<=": value >= lo, ">": value < hi, ">=": value <= hi, None: lo <= value <= hi}
        if not possible[op]:
            found.append(Reason.OUT_OF_RANGE)
    return found


def result_kind(text):
    """What a result is, judged independently of the parser: missing, number, censored, qualitative or other."""
    text = text.strip()
    if not text:
        return "missing", None, None
    try:
        return "number", float(text), None
    except ValueError:
        pass
    if m := CENSORED.fullmatch(text):
        return "censored", float(m.group(2)), m.group(1)
    return ("qualitative" if text.lower().replace(" ", "") in SPELLINGS else "other"), None, None


def count_kinds(drop):
    """Published results that are not plain numbers, as GeneratedDrop.kinds counts them."""
    kinds = Counter(result_kind(r["result_value"])[0] for r in clean_rows(drop))
    return {k: kinds[k] for k in ("qualitative", "censored", "other")}


def count_defects(drop):
    seen, counts = set(), Counter()
    for record in drop["records"]:
        found = row_defects(drop["header"], record, seen)
        assert len(found) <= 1, f"row with several defects: {found} {record}"
        counts.update(found)
    return dict(counts)


def clean_rows(drop):
    seen = set()
    return [dict(zip(drop["header"], rec, strict=False)) for rec in drop["records"]
            if not row_defects(drop["header"], rec, seen)]


def test_write_drop_is_byte_deterministic(tmp_path):
    kw = dict(hospital_id="H002", month="2024-02", rows=500, seed=7)
    a, b = write_drop(tmp_path / "a.csv", **kw), write_drop(tmp_path / "b.csv", **kw)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.defects == b.defects and a.rows == b.rows == 500
    c = write_drop(tmp_path / "c.csv", **{**kw, "seed": 8})
    assert c.path.read_bytes() != a.path.read_bytes()
    # gzip headers may carry a file name and mtime; neither may leak into the bytes.
    g1 = write_drop(tmp_path / "one.csv.gz", **kw, gzip=True)
    g2 = write_drop(tmp_path / "two" / "other.csv.gz", **kw, gzip=True)
    assert g1.path.read_bytes() == g2.path.read_bytes()
    assert g1.path.read_bytes()[4:8] == b"\0\0\0\0"  # MTIME unset, so a rerun next week matches too
    assert gzip.decompress(g1.path.read_bytes()) == a.path.read_bytes()


def test_generate_drops_is_deterministic(tmp_path):
    kw = dict(months=2, hospitals=5, rows_per_file=300)
    first, second = generate_drops(tmp_path / "a", **kw), generate_drops(tmp_path / "b", **kw)
    assert [d.path.relative_to(tmp_path / "a") for d in first] == [d.path.relative_to(tmp_path / "b") for d in second]
    assert all(x.path.read_bytes() == y.path.read_bytes() for x, y in zip(first, second, strict=False))
    other = generate_drops(tmp_path / "c", seed=1, **kw)
    assert all(x.path.read_bytes() != y.path.read_bytes() for x, y in zip(first, other, strict=False))


def test_layout_header_and_record_counts(tmp_path):
    drops = generate_drops(tmp_path, months=3, hospitals=5, rows_per_file=400, start_month="2023-11")
    assert len(drops) == 15
    assert {d.month for d in drops} == {"2023-11", "2023-12", "2024-01"}
    for d in drops:
        assert re.fullmatch(r"H00[1-5]/\d{4}-\d{2}\.csv(\.gz)?", str(d.path.relative_to(tmp_path / "labs")))
        assert d.path.parent.name == d.hospital_id and d.path.name.startswith(d.month)
        drop = read_drop(d.path)
        assert set(DROP_COLUMNS) <= set(drop["header"])
        assert len(drop["records"]) == d.rows == 400
        assert count_defects(drop) == d.defects
        assert set(d.defects) == DEFECTS
        assert count_kinds(drop) == d.kinds and min(d.kinds.values()) >= 1
    # Atomic writes leave no temp files behind.
    assert sorted(p for p in (tmp_path / "labs").rglob("*") if p.is_file()) == sorted(d.path for d in drops)


@pytest.mark.parametrize("rows,rate,expected", [(5000, 0.02, 100), (200, 0.001, 1), (150, 0.0, 0), (1000, 0.01, 10)])
def test_defect_counts_are_exact(tmp_path, rows, rate, expected):
    d = write_drop(tmp_path / "x.csv", hospital_id="H003", month="2024-06", rows=rows, seed=3, defect_rate=rate)
    assert d.defects == ({r: expected for r in DEFECTS} if expected else {})
    drop = read_drop(d.path)
    assert len(drop["records"]) == rows
    assert count_defects(drop) == d.defects
    assert len(clean_rows(drop)) == rows - sum(d.defects.values())


def test_clean_rows_are_realistic_and_consistent(tmp_path):
    d = write_drop(tmp_path / "x.csv", hospital_id="H001", month="2024-02", rows=3000, seed=0)
    rows = clean_rows(read_drop(d.path))
    assert len(rows) == 3000 - sum(d.defects.values())
    flags, tests, kinds = Counter(), Counter(), Counter()
    [sars] = QUALITATIVE_TESTS
    for r in rows:
        kind, value, op = result_kind(r["result_value"])
        kinds[kind] += 1
        tests[r["test_code"]] += 1
        if r["test_code"] == sars.code:
            # Coded results only, flagged abnormal (A) when positive, never with a unit or range.
            assert kind == "qualitative" and SPELLINGS[r["result_value"].lower().replace(" ", "")] in sars.results, r
            assert (r["test_name"], r["unit"], r["reference_low"], r["reference_high"]) == (sars.name, "", "", "")
            positive = SPELLINGS[r["result_value"].lower().replace(" ", "")] in ("positive", "detected")
            assert r["abnormal_flag"] == ("A" if positive else "" if "invalid" in r["result_value"].lower() else "N")
        else:
            test = TESTS_BY_CODE[r["test_code"]]
            assert (r["test_name"], r["unit"]) == (test.name, test.unit)
            assert (float(r["reference_low"]), float(r["reference_high"])) == (test.ref_low, test.ref_high)
            assert kind in ("number", "censored", "other"), r
            if kind == "number":
                assert re.fullmatch(r"-?\d+\.\d\d", r["result_value"])
                expected = "H" if value > test.ref_high else "L" if value < test.ref_low else "N"
                assert r["abnormal_flag"] == expected, r
                flags[expected] += 1
            elif kind == "censored":  # a reporting limit, inside what is possible, flagged by its side
                assert test.min_possible < value < test.max_possible
                assert r["abnormal_flag"] == ("L" if op[0] == "<" and value <= test.ref_low else
                                              "H" if op[0] == ">" and value >= test.ref_high else "N"), r
        collected, reported = datetime.strptime(r["collected_at"], TS), datetime.strptime(r["reported_at"], TS)
        assert (collected.year, collected.month) == (2024, 2)
        assert timedelta(hours=1) <= reported - collected <= timedelta(hours=48)
        assert re.fullmatch(r"MRN\d{7}", r["patient_id"]) and r["hospital_id"] == "H001"
        assert re.fullmatch(r"[^,]+, [^,]+", r["patient_name"])
        assert "1925-01-01" <= r["birth_date"] <= "2015-12-31"
        assert r["sex"] in {"M", "F", "U"} and re.fullmatch(r"\d{5}", r["zip"])
    assert min(flags.values()) > 0 and len(flags) == 3  # normal, high and low all occur
    assert set(tests) == {t.code for t in LAB_TESTS} | {sars.code}
    assert {k: kinds[k] for k in d.kinds} == d.kinds and min(d.kinds.values()) > 0
    assert kinds["number"] > 0.95 * len(rows)  # the numeric tests keep their share
    assert any(r["birth_date"] < "1935-01-01" for r in rows)  # some patients are over 89
    assert any(r["zip"].startswith("0") for r in rows)  # leading zeros survive as text
    assert any(not r["patient_name"].isascii() for r in rows)
    assert all(r["patient_name"].encode("latin-1") for r in rows)


def test_names_are_quoted_per_rfc4180(tmp_path):
    d = write_drop(tmp_path / "x.csv", hospital_id="H001", month="2024-01", rows=2000, seed=0)
    text = d.path.read_text("utf-8")
    names = {r["patient_name"] for r in clean_rows(read_drop(d.path))}
    assert all(f'"{n}"' in text for n in names if '"' not in n)
    quoted = [n for n in names if '"' in n]  # an embedded quote is doubled inside a quoted field
    assert quoted and all('"' + n.replace('"', '""') + '"' in text for n in quoted)


def test_patients_are_stable_across_months(tmp_path):
    drops = generate_drops(tmp_path, months=2, hospitals=1, rows_per_file=1000)
    people = []
    for d in drops:
        seen = {}
        for r in clean_rows(read_drop(d.path)):
            person = (r["patient_name"], r["birth_date"], r["sex"], r["zip"])
            assert seen.setdefault(r["patient_id"], person) == person
        people.append(seen)
    common = people[0].keys() & people[1].keys()
    assert len(common) > 20
    assert all(people[0][p] == people[1][p] for p in common)


def test_patient_identity_does_not_depend_on_file_size(tmp_path):
    def identities(month, rows):
        d = write_drop(tmp_path / f"{month}.csv", hospital_id="H005", month=month, rows=rows, seed=2)
        return {r["patient_id"]: (r["patient_name"], r["birth_date"], r["sex"], r["zip"])
                for r in clean_rows(read_drop(d.path))}

    small, large = identities("2024-04", 600), identities("2024-05", 5000)
    common = small.keys() & large.keys()
    assert len(common) > 20 and all(small[p] == large[p] for p in common)


def test_messy_formats_cover_every_quirk(tmp_path):
    drops = generate_drops(tmp_path, months=3, hospitals=5, rows_per_file=300)
    seen = Counter()
    for d in drops:
        drop = read_drop(d.path)
        raw = drop["raw"]
        seen["bom"] += raw.startswith(b"\xef\xbb\xbf")
        seen["crlf"] += raw.count(b"\r\n") == d.rows + 1
        seen["latin1"] += drop["encoding"] == "latin-1"
        seen["gzip"] += d.path.name.endswith(".csv.gz")
        seen["shuffled"] += [c for c in drop["header"] if c in DROP_COLUMNS] != list(DROP_COLUMNS)
        seen["extra"] += "ordering_provider" in drop["header"]
    assert set(seen) == {"bom", "crlf", "latin1", "gzip", "shuffled", "extra"} and min(seen.values()) >= 1
    plain = read_drop(tmp_path / "labs" / "H001" / "2024-01.csv")
    assert plain["encoding"] == "utf-8" and not plain["raw"].startswith(b"\xef\xbb\xbf")
    assert b"\r" not in plain["raw"] and plain["header"] == list(DROP_COLUMNS)


def test_messy_false_is_plain(tmp_path):
    drops = generate_drops(tmp_path, months=3, hospitals=5, rows_per_file=300, messy=False)
    for d in drops:
        raw = d.path.read_bytes()
        assert d.path.suffix == ".csv" and not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw
        text = raw.decode("utf-8")
        assert text.split("\n", 1)[0] == ",".join(DROP_COLUMNS)
        assert count_defects(read_drop(d.path)) == d.defects


def test_format_options_do_not_change_records(tmp_path):
    kw = dict(hospital_id="H004", month="2024-03", rows=800, seed=5)
    plain = read_drop(write_drop(tmp_path / "p.csv", **kw).path)
    messy_drop = write_drop(tmp_path / "m.csv", **kw, encoding="latin-1", crlf=True, shuffle_columns=True,
                            extra_columns=("ordering_provider",))
    messy = read_drop(messy_drop.path)
    assert messy["encoding"] == "latin-1" and b"\r\n" in messy["raw"]
    with pytest.raises(UnicodeDecodeError):
        messy["raw"].decode("utf-8")
    full = [r for r in messy["records"] if len(r) == len(messy["header"])]
    assert all(re.fullmatch(r"[^,]+, [^,]+ MD", dict(zip(messy["header"], r, strict=False))["ordering_provider"]) for r in full)

    def project(drop):
        return [tuple(dict(zip(drop["header"], r, strict=False))[c] for c in DROP_COLUMNS)
                for r in drop["records"] if len(r) == len(drop["header"])]

    assert project(plain) == project(messy)
    assert count_defects(messy) == messy_drop.defects


def test_rejects_unencodable_bom(tmp_path):
    with pytest.raises(ValueError):
        write_drop(tmp_path / "x.csv", hospital_id="H001", month="2024-01", rows=10, seed=0, encoding="latin-1", bom=True)
    assert not list(tmp_path.iterdir())
