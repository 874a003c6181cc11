"""ingest_drops on generated drops (planted defects, messy formats) and on hand-made edge cases."""

import csv
import gzip
import hashlib
import hmac
import io
import re
from collections import Counter
from datetime import date, datetime

import pyarrow.parquet as pq
import pytest

from letl.labs.drops import find_drops
from letl.labs.ingest import ingest_drops
from letl.labs.sample import write_drop
from letl.labs.schema import DROP_COLUMNS, RESTRICTED_ZIP3, TESTS_BY_CODE, Reason

KEY = b"test-key-not-secret"
MONTH = "2024-03"
KINDS = {Reason.MALFORMED, Reason.MISSING_PATIENT_ID, Reason.BAD_DATE, Reason.MISSING_RESULT,
         Reason.OUT_OF_RANGE, Reason.DUPLICATE}
PROFILES = {
    "plain": {},
    "latin1_crlf": {"encoding": "latin-1", "crlf": True},
    "bom_crlf": {"bom": True, "crlf": True},
    "gzip": {"gzip": True},
    "shuffled": {"shuffle_columns": True},
    "extra_columns": {"extra_columns": ("ordering_provider", "comment")},
}


def make_drop(landing, hospital="H001", rows=1200, seed=7, **opts):
    name = f"{MONTH}.csv.gz" if opts.get("gzip") else f"{MONTH}.csv"
    return write_drop(landing / "labs" / hospital / name, hospital_id=hospital, month=MONTH, rows=rows, seed=seed, **opts)


def ingest(landing, key=KEY):
    out = landing.parent / f"out-{landing.name}"
    out.mkdir(exist_ok=True)
    drops = find_drops(landing, MONTH)
    report = ingest_drops(drops, out / "good.parquet", out / "rejects.parquet", key, out, log=lambda _: None)
    return report, pq.read_table(report.good_path).to_pylist(), pq.read_table(report.rejects_path).to_pylist()


def physical_lines(path, encoding):
    """The file's lines, indexed by physical line number (1 = header), terminators removed."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    return [None] + [line.removesuffix("\r") for line in text.split("\n")]


def parse(line):
    return next(csv.reader([line]))


def check_rejects_against_file(rejects, lines):
    """Every reject points at the physical line holding exactly its record, and that line shows the defect."""
    header = parse(lines[1])
    rejected = Counter(r["line"] for r in rejects)
    assert max(rejected.values()) == 1, "two rejects point at the same line"
    for r in rejects:
        physical = lines[r["line"]]
        fields = parse(physical)
        if r["reason"] == Reason.MALFORMED:
            assert len(fields) == len(header) - 1
            assert r["raw_line"].strip("\r\n") == physical  # exact raw_line: test_malformed_raw_line_is_the_line
            assert all(r[c] is None for c in DROP_COLUMNS)
            continue
        record = dict(zip(header, fields, strict=False))
        if r["reason"] == Reason.DUPLICATE:
            # The raw fields live once, on the accepted line the duplicate repeats.
            assert all(r[c] is None for c in DROP_COLUMNS)
        else:
            assert {c: r[c] or "" for c in DROP_COLUMNS} == {c: record[c] for c in DROP_COLUMNS}, r["line"]
        if r["reason"] == Reason.MISSING_PATIENT_ID:
            assert record["patient_id"] == ""
        elif r["reason"] == Reason.BAD_DATE:
            with pytest.raises(ValueError):
                datetime.strptime(record["collected_at"], "%Y-%m-%d %H:%M:%S")
        elif r["reason"] == Reason.MISSING_RESULT:
            assert record["result_value"].strip() == ""
        elif r["reason"] == Reason.OUT_OF_RANGE:
            test = TESTS_BY_CODE[record["test_code"]]
            assert not test.min_possible <= float(record["result_value"]) <= test.max_possible
        else:
            assert r["reason"] == Reason.DUPLICATE
            first = int(re.fullmatch(r"same as line (\d+)", r["detail"]).group(1))
            assert 2 <= first < r["line"]
            assert lines[first] == physical
            assert first not in rejected, "a duplicate must name the accepted line it repeats"


@pytest.mark.parametrize("profile", PROFILES)
def test_planted_defects_are_rejected_on_their_lines(tmp_path, profile):
    opts = PROFILES[profile]
    gen = make_drop(tmp_path / "landing", **opts)
    report, good, rejects = ingest(tmp_path / "landing")
    assert set(gen.defects) == KINDS and all(n == 12 for n in gen.defects.values())
    assert Counter(r["reason"] for r in rejects) == gen.defects
    assert report.reasons == gen.defects
    assert report.rows_in == gen.rows == report.rows_out + report.rows_rejected
    assert (len(good), len(rejects)) == (report.rows_out, report.rows_rejected)
    [file] = report.files
    assert (file.relpath, file.rows, file.rejected) == (gen.path.relative_to(tmp_path / "landing").as_posix(),
                                                        gen.rows, sum(gen.defects.values()))
    assert file.encoding == ("latin-1" if opts.get("encoding") else "utf-8")
    assert file.extra_columns == list(opts.get("extra_columns", ()))
    assert {r["source_file"] for r in rejects} == {g["source_file"] for g in good} == {file.relpath}
    check_rejects_against_file(rejects, physical_lines(gen.path, file.encoding))


@pytest.mark.parametrize("profile", ["plain", "latin1_crlf", "bom_crlf"])
def test_malformed_raw_line_is_exactly_the_physical_line(tmp_path, profile):
    gen = make_drop(tmp_path / "landing", **PROFILES[profile])
    report, _, rejects = ingest(tmp_path / "landing")
    lines = physical_lines(gen.path, report.files[0].encoding)
    malformed = [(r["raw_line"], lines[r["line"]]) for r in rejects if r["reason"] == Reason.MALFORMED]
    assert len(malformed) == gen.defects[Reason.MALFORMED]
    assert [raw for raw, _ in malformed] == [line for _, line in malformed]


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "plain"])
def test_messy_formats_yield_the_same_records_as_a_plain_file(tmp_path, profile):
    make_drop(tmp_path / "plain")
    make_drop(tmp_path / "messy", **PROFILES[profile])
    _, plain_good, plain_rejects = ingest(tmp_path / "plain")
    _, messy_good, messy_rejects = ingest(tmp_path / "messy")

    def rows(table):  # a malformed row's detail names the column count, which extra columns change
        skip = {"source_file", "raw_line"}
        return Counter(tuple((k, v) for k, v in r.items()
                             if k not in skip and not (k == "detail" and r.get("reason") == Reason.MALFORMED))
                       for r in table)

    assert rows(messy_good) == rows(plain_good)
    assert rows(messy_rejects) == rows(plain_rejects)
    names = {r["patient_name"] for r in messy_rejects if r["patient_name"]}
    assert any(ch in name for name in names for ch in "éüöñ"), "accented names must survive into the rejects"


def test_mixed_encoding_file_is_reread_as_latin1(tmp_path):
    prefix_drop = write_drop(tmp_path / "prefix.csv", hospital_id="H900", month=MONTH, rows=3000, seed=3,
                             defect_rate=0)
    body_drop = write_drop(tmp_path / "body.csv", hospital_id="H001", month=MONTH, rows=600, seed=7,
                           encoding="latin-1")
    prefix = [line for line in prefix_drop.path.read_bytes().split(b"\n")[1:] if line and line.isascii()]
    header, body = body_drop.path.read_bytes().split(b"\n", 1)
    top = header + b"\n" + b"\n".join(prefix) + b"\n"
    assert len(top) > 1 << 16 and not body.isascii()  # valid UTF-8 at the top, Latin-1 further down
    path = tmp_path / "landing" / "labs" / "H001" / f"{MONTH}.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(top + body)

    report, good, rejects = ingest(tmp_path / "landing")
    assert report.files[0].encoding == "latin-1"
    assert not [r for r in rejects if re.search("encod|unicode", r["detail"] or "", re.I)]
    assert Counter(r["reason"] for r in rejects) == body_drop.defects
    assert report.rows_in == len(prefix) + body_drop.rows == len(good) + len(rejects)
    check_rejects_against_file(rejects, physical_lines(path, "latin-1"))
    assert any(r["patient_name"] and not r["patient_name"].isascii() for r in rejects)


@pytest.mark.parametrize("missing", ["patient_id", "collected_at", "zip"])
def test_missing_required_column_quarantines_the_file_naming_file_and_column(tmp_path, missing):
    gen = make_drop(tmp_path / "landing", rows=60)
    make_drop(tmp_path / "landing", hospital="H002", rows=60, seed=8)
    table = list(csv.reader(io.StringIO(gen.path.read_text(encoding="utf-8"), newline="")))
    at = table[0].index(missing)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([c for i, c in enumerate(row) if i != at] for row in table)
    gen.path.write_text(out.getvalue(), encoding="utf-8")
    messages = []
    drops = find_drops(tmp_path / "landing", MONTH)
    report = ingest_drops(drops, tmp_path / "good.parquet", tmp_path / "rejects.parquet", KEY, tmp_path,
                          log=messages.append)
    [message] = [m for m in messages if "H001" in m]
    assert "labs/H001/2024-03.csv" in message
    assert re.search(rf"missing required column\(s\)[^;]*\b{missing}\b", message), message
    broken, other = report.files
    assert (broken.problem, broken.rows, broken.lines, broken.rejected) == ("missing_columns", 61, 61, 61)
    assert other.problem is None and report.rows_out > 0  # the other hospital still goes through
    assert report.reasons["missing_columns"] == 61
    assert report.lines_in == report.header_lines + report.rows_out + report.rows_rejected


def expected_age_folded_year(birth: date, collected: datetime) -> int:
    age = collected.year - birth.year - ((collected.month, collected.day) < (birth.month, birth.day))
    return collected.year - 90 if age > 89 else birth.year


def pseudonym(key: bytes, patient_id: str) -> str:
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("key", [KEY, b"k" * 64, bytes(range(100))], ids=["short", "64-bytes", "100-bytes"])
def test_good_rows_are_pseudonymized_and_generalized(tmp_path, key):
    gen = make_drop(tmp_path / "landing", rows=800)
    _, good, rejects = ingest(tmp_path / "landing", key)
    lines = physical_lines(gen.path, "utf-8")
    header, bad = parse(lines[1]), {r["line"] for r in rejects}
    expected, folded = Counter(), 0
    for number in range(2, len(lines)):
        if number in bad or not lines[number]:
            continue
        rec = dict(zip(header, parse(lines[number]), strict=False))
        collected, birth = datetime.fromisoformat(rec["collected_at"]), date.fromisoformat(rec["birth_date"])
        year = expected_age_folded_year(birth, collected)
        folded += year != birth.year
        zip3 = "000" if rec["zip"][:3] in RESTRICTED_ZIP3 else rec["zip"][:3]
        expected[(pseudonym(key, rec["patient_id"]), year, zip3, collected)] += 1
    assert folded > 0, "the sample should hold patients over 89"
    assert Counter((g["patient_key"], g["birth_year"], g["zip3"], g["collected_at"]) for g in good) == expected


EDGE_CASES = [  # patient_id, birth_date, collected_at, zip, birth_year, zip3
    ("P1", "1930-01-01", "2024-03-01 08:00:00", "03601", 1934, "000"),  # 94 years: folded; 036 restricted
    ("P2", "1935-01-01", "2024-03-15 08:00:00", "10210", 1935, "000"),  # 89 years: kept
    ("P3", "1920-05-05", "2024-03-02 08:00:00", "55601", 1934, "000"),
    ("P4", "1900-01-01", "2024-03-31 23:00:00", "89001", 1934, "000"),  # born on the earliest date accepted
    ("P5", "1990-07-04", "2024-03-03 08:00:00", "03701", 1990, "037"),  # leading zero kept
    ("P6", "1980-02-02", "2024-03-04 08:00:00", "12345-6789", 1980, "123"),
    ("P7", "1980-02-02", "2024-03-05 08:00:00", "1234", 1980, None),
]


def test_age_folding_and_safe_harbor_zip3_on_hand_made_rows(tmp_path):
    path = tmp_path / "landing" / "labs" / "H042" / f"{MONTH}.csv"
    path.parent.mkdir(parents=True)
    base = dict(hospital_id="H042", patient_name="Doe, Jane", sex="F", test_code="2345-7", test_name="Glucose",
                result_value="98.5", unit="mg/dL", reference_low="70", reference_high="99", abnormal_flag="N",
                reported_at="")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, DROP_COLUMNS)
        writer.writeheader()
        for pid, birth, collected, zip_code, *_ in EDGE_CASES:
            writer.writerow(base | dict(patient_id=pid, birth_date=birth, collected_at=collected, zip=zip_code))
    report, good, rejects = ingest(tmp_path / "landing")
    assert rejects == [] and report.rows_out == len(EDGE_CASES)
    by_key = {g["patient_key"]: (g["birth_year"], g["zip3"]) for g in good}
    assert by_key == {pseudonym(KEY, pid): (year, zip3) for pid, *_, year, zip3 in EDGE_CASES}
