"""The landing zone and the drop parser: nothing read from outside the zone, no file ignored silently,
every physical line published or rejected on its own line number, unreadable files quarantined."""

import codecs
import csv
import gzip
import hashlib
import hmac
import io
import os
import random
import zlib
from collections import Counter

import pyarrow.parquet as pq
import pytest

from letl.labs import lines as drop_lines
from letl.labs.drops import scan_landing
from letl.labs.ingest import ingest_drops
from letl.labs.sample import write_drop
from letl.labs.schema import DROP_COLUMNS, IDENTIFIER_COLUMNS, Reason

KEY = b"test-key-not-secret"
MONTH = "2024-03"
OUTSIDE = "symlink pointing outside the landing zone: refused, nothing is read from it"


def clean_drop(landing, hospital="H001", rows=200, seed=7, month=MONTH, name=None, **opts):
    path = landing / "labs" / hospital / (name or f"{month}.csv")
    return write_drop(path, hospital_id=hospital, month=month, rows=rows, seed=seed, defect_rate=0, **opts)


def ingest(landing, month=MONTH):
    out = landing.parent / f"out-{landing.name}"
    out.mkdir(exist_ok=True)
    messages = []
    scan = scan_landing(landing, month)
    report = ingest_drops(scan.drops, out / "good.parquet", out / "rejects.parquet", KEY, out, log=messages.append)
    assert report.lines_in == report.header_lines + report.rows_out + report.rows_rejected
    assert sorted(p.name for p in out.iterdir()) == ["good.parquet", "rejects.parquet"], "staging left behind"
    good, rejects = pq.read_table(report.good_path).to_pylist(), pq.read_table(report.rejects_path).to_pylist()
    return report, good, rejects, messages


def lines_of(data: bytes) -> list[bytes]:
    """Physical lines, as the README defines them (LF, CRLF or a lone CR ends one), 1 = header."""
    return [None] + data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").removesuffix(b"\n").split(b"\n")


def pseudonym(patient_id):
    return hmac.new(KEY, patient_id.encode(), hashlib.sha256).hexdigest()


def test_symlinks_pointing_outside_the_zone_are_refused(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    secret = clean_drop(outside, "H001").path
    clean_drop(outside, "H002")
    (landing / "labs" / "H001").mkdir(parents=True)
    (landing / "labs" / "H001" / f"{MONTH}.csv").symlink_to(secret)  # a file symlink out
    (landing / "labs" / "H002").symlink_to(outside / "labs" / "H002")  # a hospital directory out
    clean_drop(landing, "H003")
    (landing / "labs" / "H003" / "2024-04.csv").symlink_to(landing / "labs" / "H003" / f"{MONTH}.csv")
    (landing / "labs" / "H004").symlink_to(landing / "labs" / "H003")  # inside, but would count H003 twice

    scan = scan_landing(landing)
    assert [d.relpath for d in scan.drops] == [f"labs/H003/{MONTH}.csv"]
    assert {i.relpath: i.reason for i in scan.ignored} == {
        f"labs/H001/{MONTH}.csv": OUTSIDE,
        "labs/H002": OUTSIDE,
        "labs/H003/2024-04.csv": f"the same file as labs/H003/{MONTH}.csv: refused so its rows are not counted "
                                 "twice; remove one",
        "labs/H004": "directory symlink: not followed",
    }
    assert scan_landing(landing, "2024-04").drops == []
    report, *_ = ingest(landing)
    assert [f.relpath for f in report.files] == [f"labs/H003/{MONTH}.csv"]


def test_labs_itself_symlinked_outside_is_refused(tmp_path):
    clean_drop(tmp_path / "outside")
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "labs").symlink_to(tmp_path / "outside" / "labs")
    scan = scan_landing(tmp_path / "landing")
    assert scan.drops == [] and [(i.relpath, i.reason) for i in scan.ignored] == [("labs", OUTSIDE)]


def test_a_landing_zone_that_is_itself_a_symlink_is_read(tmp_path):
    clean_drop(tmp_path / "real")
    (tmp_path / "landing").symlink_to(tmp_path / "real")
    assert [d.relpath for d in scan_landing(tmp_path / "landing").drops] == [f"labs/H001/{MONTH}.csv"]


def test_every_file_that_is_no_drop_is_listed_and_friendly_names_are_accepted(tmp_path):
    landing = tmp_path / "landing"
    rows = {}
    for hospital, name in (("H001", "notes.txt"), ("H001", "2024-13.csv"), ("H001", "old/2024-01.csv"),
                           ("H002", "2024-1.csv"), ("H003", "2024-01.CSV"),
                           ("H004", "2024-01.csv"), ("H004", "2024-1.csv"), ("H004", "2024-01.csv.gz")):
        gen = clean_drop(landing, hospital, rows=20, month="2024-01", name=name, gzip=name.endswith(".gz"))
        rows[f"labs/{hospital}/{name}"] = gen.rows
    scan = scan_landing(landing, "2024-01")
    assert [d.relpath for d in scan.drops] == ["labs/H002/2024-1.csv", "labs/H003/2024-01.CSV",
                                              "labs/H004/2024-01.csv"]
    assert all(d.month == "2024-01" for d in scan.drops)
    second = "second file for H004 2024-01 (labs/H004/2024-01.csv is the drop): refused so its rows are not " \
             "counted twice; remove one"
    assert {i.relpath: i.reason for i in scan.ignored} == {
        "labs/H001/notes.txt": "not named <hospital_id>/YYYY-MM.csv or .csv.gz",
        "labs/H001/2024-13.csv": "not named <hospital_id>/YYYY-MM.csv or .csv.gz",
        "labs/H001/old/2024-01.csv": "in a nested folder: drops go directly in labs/<hospital_id>/",
        "labs/H004/2024-1.csv": second,
        "labs/H004/2024-01.csv.gz": second,
    }
    # Every file's rows are either read, or its file is listed: none go uncounted.
    report, *_ = ingest(landing, "2024-01")
    assert report.rows_in == sum(rows[d.relpath] for d in scan.drops)
    assert set(rows) == {d.relpath for d in scan.drops} | {i.relpath for i in scan.ignored}


def test_unbalanced_quote_rejects_its_own_line_and_the_next_rows_are_read(tmp_path):
    landing = tmp_path / "landing"
    gen = clean_drop(landing, rows=300)
    lines = gen.path.read_bytes().split(b"\n")
    for number in (6, 50, 120):  # the last field opens a quote that the line does not close
        lines[number - 1] = b',"'.join(lines[number - 1].rsplit(b",", 1))
    gen.path.write_bytes(b"\n".join(lines))
    physical = lines_of(gen.path.read_bytes())

    report, good, rejects, _ = ingest(landing)
    assert [(r["line"], r["reason"]) for r in rejects] == [(6, Reason.MALFORMED), (50, Reason.MALFORMED),
                                                           (120, Reason.MALFORMED)]
    assert [r["raw_line"].encode() for r in rejects] == [physical[6], physical[50], physical[120]]
    assert "unbalanced quote" in rejects[0]["detail"]
    assert (report.rows_in, report.rows_out, report.lines_in) == (300, 297, 301)
    # The row right after the broken one is published, not hidden inside its reject.
    after = dict(zip(DROP_COLUMNS, next(csv.reader([physical[7].decode()])), strict=False))
    assert pseudonym(after["patient_id"]) in {g["patient_key"] for g in good}


@pytest.mark.parametrize("endings", ["crlf_then_lf", "alternating", "cr_only", "lone_cr_in_crlf", "gzip_alternating"])
def test_mixed_and_cr_only_line_endings_parse_with_the_same_lines(tmp_path, endings):
    plain = write_drop(tmp_path / "plain" / "labs" / "H001" / f"{MONTH}.csv", hospital_id="H001", month=MONTH,
                       rows=600, seed=3)
    lines = plain.path.read_bytes().split(b"\n")[:-1]
    if endings == "crlf_then_lf":
        data = b"\r\n".join(lines[:200]) + b"\r\n" + b"\n".join(lines[200:]) + b"\n"
    elif endings in ("alternating", "gzip_alternating"):
        data = b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines))
    elif endings == "cr_only":
        data = b"\r".join(lines) + b"\r"
    else:
        data = b"".join(line + (b"\r" if i == 300 else b"\r\n") for i, line in enumerate(lines))
    messy = tmp_path / "messy" / "labs" / "H001" / f"{MONTH}.csv"
    messy.parent.mkdir(parents=True)
    if endings.startswith("gzip"):
        messy, data = messy.with_name(f"{MONTH}.csv.gz"), gzip.compress(data)
    messy.write_bytes(data)

    report, good, rejects, _ = ingest(tmp_path / "messy")
    _, plain_good, plain_rejects, _ = ingest(tmp_path / "plain")
    assert report.rows_in == plain.rows and report.lines_in == plain.rows + 1
    assert Counter(r["reason"] for r in rejects) == plain.defects
    assert [(r["line"], r["reason"], r["patient_id"]) for r in rejects] == \
        [(r["line"], r["reason"], r["patient_id"]) for r in plain_rejects]
    def records(rows):
        return sorted((str({k: v for k, v in r.items() if k != "source_file"}) for r in rows))

    assert records(good) == records(plain_good)


def test_blank_lines_are_counted_on_their_own_lines(tmp_path):
    gen = clean_drop(tmp_path / "landing", rows=50)
    lines = gen.path.read_bytes().split(b"\n")
    lines[10:10] = [b"", b"   ", b"H001,too,short"]
    gen.path.write_bytes(b"\n".join(lines) + b"\n")
    report, good, rejects, _ = ingest(tmp_path / "landing")
    assert [(r["line"], r["reason"], r["raw_line"]) for r in rejects] == [
        (11, Reason.BLANK, ""), (12, Reason.BLANK, ""), (13, Reason.MALFORMED, "H001,too,short"),
        (55, Reason.BLANK, "")]  # the file ends in "\n\n"
    assert (report.rows_out, report.lines_in) == (50, 55)


@pytest.mark.parametrize("compressed", [False, True], ids=["csv", "gzip"])
def test_a_headerless_drop_is_quarantined_and_the_month_goes_on(tmp_path, compressed):
    landing = tmp_path / "landing"
    gen = clean_drop(landing, "H001", rows=40)
    body = gen.path.read_bytes().split(b"\n", 1)[1]
    gen.path.write_bytes(gzip.compress(body) if compressed else body)
    name = f"{MONTH}.csv.gz" if compressed else f"{MONTH}.csv"
    gen.path.rename(gen.path.with_name(name))
    clean_drop(landing, "H002", rows=40)

    report, good, rejects, messages = ingest(landing)
    broken = [r for r in rejects if r["source_file"] == f"labs/H001/{name}"]
    assert [r["line"] for r in broken] == list(range(1, 41))
    assert {r["reason"] for r in broken} == {"missing_header"}
    assert [r["raw_line"].encode() for r in broken] == lines_of(body)[1:]
    assert len(good) == 40 and report.files[0].problem == "missing_header"
    [message] = [m for m in messages if "H001" in m]
    assert message.startswith(f"labs/H001/{name}: no header line") and "quarantined" in message
    first = dict(zip(DROP_COLUMNS, next(csv.reader([body.split(b"\n", 1)[0].decode()])), strict=False))
    assert not [c for c in IDENTIFIER_COLUMNS if first[c] in message], "the message quotes the file's first line"


def _utf16(text):
    return text.encode("utf-16")


@pytest.mark.parametrize("kind, name, make, reason, says", [
    ("utf16", f"{MONTH}.csv", _utf16, "utf16_file", "UTF-16 text"),
    ("not_gzip", f"{MONTH}.csv.gz", str.encode, "not_gzip", "named .gz but is not gzip (plain text)"),
    ("xlsx", f"{MONTH}.csv", lambda t: b"PK\x03\x04\x14\x00\x06\x00" + t.encode() + b"\x00" * 64, "binary_file",
     "a zip archive (an Excel .xlsx?)"),
    ("binary", f"{MONTH}.csv", lambda t: bytes(range(256)) * 8 + t.encode(), "binary_file", "binary data"),
    ("damaged_gzip", f"{MONTH}.csv.gz", lambda t: gzip.compress(t.encode())[:12], "damaged_gzip", "damaged"),
    ("truncated_gzip", f"{MONTH}.csv.gz", lambda t: gzip.compress(t.encode())[:-200], "damaged_gzip",
     "the gzip stream is damaged after line"),
])
def test_unreadable_files_are_quarantined_with_a_message_saying_what_they_are(tmp_path, kind, name, make,
                                                                              reason, says):
    landing = tmp_path / "landing"
    text = clean_drop(tmp_path / "src", rows=30).path.read_text()
    path = landing / "labs" / "H001" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(make(text))
    clean_drop(landing, "H002", rows=30)

    report, good, rejects, messages = ingest(landing)
    broken, ok = report.files
    assert broken.problem == reason and broken.rows == broken.rejected == broken.lines
    assert ok.problem is None and len(good) == 30
    assert {r["reason"] for r in rejects} == ({reason} if broken.lines else set())
    [message] = [m for m in messages if "H001" in m]
    assert message.startswith(f"labs/H001/{name}: ") and says in message and "\n" not in message
    if kind in ("utf16", "not_gzip"):  # text the steward can read in the quarantine
        assert [r["raw_line"] for r in rejects] == text.splitlines()
    if kind == "truncated_gzip":  # the lines before the break, decompressed; the last one is cut
        prefix = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(make(text))
        # a streaming decoder holds back a UTF-8 character the cut split in two: it never arrives
        readable = codecs.getincrementaldecoder("utf-8")().decode(prefix).splitlines()
        assert len(readable) < len(text.splitlines())
        assert [r["raw_line"] for r in rejects] == readable


def test_empty_and_header_only_drops_count_their_lines(tmp_path):
    landing = tmp_path / "landing"
    (landing / "labs" / "H001").mkdir(parents=True)
    (landing / "labs" / "H001" / f"{MONTH}.csv").write_bytes(b"")
    (landing / "labs" / "H002").mkdir()
    (landing / "labs" / "H002" / f"{MONTH}.csv").write_text(",".join(DROP_COLUMNS) + "\n")
    (landing / "labs" / "H003").mkdir()
    (landing / "labs" / "H003" / f"{MONTH}.csv.gz").write_bytes(gzip.compress(b""))
    report, good, rejects, messages = ingest(landing)
    assert [(f.problem, f.lines, f.rows) for f in report.files] == [("empty_file", 0, 0), (None, 1, 0),
                                                                    ("empty_file", 0, 0)]
    assert good == rejects == [] and report.lines_in == report.header_lines == 1


DATES = [  # collected_at, reported_at, birth_date, expected reason
    ("2024-03-31 23:59:59", "", "1900-01-01", None),
    ("2024-03-01 00:00:00", "2024-04-01 08:00:00", "1950-01-01", None),  # reported next month: fine
    ("1899-12-31 08:00:00", "", "1950-01-01", Reason.DATE_RANGE),
    ("2999-03-01 08:00:00", "", "1950-01-01", Reason.DATE_RANGE),
    ("2024-03-02 08:00:00", "2999-01-01 08:00:00", "1950-01-01", Reason.DATE_RANGE),
    ("2024-03-02 08:00:00", "", "1850-06-01", Reason.DATE_RANGE),
    ("2024-03-02 08:00:00", "", "2999-06-01", Reason.DATE_RANGE),
    ("1900-05-01 08:00:00", "", "1850-06-01", Reason.DATE_RANGE),  # the first failing rule names it
    ("1900-05-01 08:00:00", "", "1880-01-01", Reason.DATE_RANGE),
    ("1900-05-01 08:00:00", "", "", Reason.OUTSIDE_MONTH),
    ("2024-02-29 23:59:59", "", "1950-01-01", Reason.OUTSIDE_MONTH),
    ("2024-04-01 00:00:00", "", "1950-01-01", Reason.OUTSIDE_MONTH),
]


def test_dates_before_1900_in_the_future_or_outside_the_month_are_rejected(tmp_path):
    path = tmp_path / "landing" / "labs" / "H042" / f"{MONTH}.csv"
    path.parent.mkdir(parents=True)
    base = dict(hospital_id="H042", patient_name="Doe, Jane", sex="F", zip="12345", test_code="2345-7",
                test_name="Glucose", result_value="98.5", unit="mg/dL", reference_low="70", reference_high="99",
                abnormal_flag="N")
    out = io.StringIO()
    writer = csv.DictWriter(out, DROP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for i, (collected, reported, birth, _) in enumerate(DATES):
        writer.writerow(base | dict(patient_id=f"P{i}", collected_at=collected, reported_at=reported, birth_date=birth))
    path.write_text(out.getvalue())
    report, good, rejects, _ = ingest(tmp_path / "landing")
    assert {r["line"]: r["reason"] for r in rejects} == {i + 2: why for i, (*_, why) in enumerate(DATES) if why}
    assert len(good) == sum(why is None for *_, why in DATES)
    outside = next(r for r in rejects if r["reason"] == Reason.OUTSIDE_MONTH)
    assert outside["detail"] == "collected_at=1900-05-01 08:00:00 is outside 2024-03, the month of the drop"


def test_broken_drops_through_the_real_job(letl_env):
    """The month publishes the readable drops; the rest is quarantined and counted, the job succeeds."""
    from letl.lake.lake import Lake
    from letl_assets.local_run import run_months

    landing = letl_env["landing"]
    headerless = clean_drop(landing, "H001", rows=40)
    headerless.path.write_bytes(headerless.path.read_bytes().split(b"\n", 1)[1])
    mixed = write_drop(landing / "labs" / "H002" / f"{MONTH}.csv", hospital_id="H002", month=MONTH, rows=400, seed=4)
    lines = mixed.path.read_bytes().split(b"\n")
    lines[9] = lines[9].replace(b",", b',"', 1)
    mixed.path.write_bytes(b"\r\n".join(lines[:100]) + b"\n" + b"\n".join(lines[100:]))
    dates = clean_drop(landing, "H003", rows=30)
    dates.path.write_bytes(dates.path.read_bytes().replace(b",2024-03-", b",2999-03-", 1))
    outside = clean_drop(letl_env["home"].parent / "outside", "H004", rows=30)
    (landing / "labs" / "H004").symlink_to(outside.path.parent)
    (landing / "labs" / "notes.txt").write_text("hello")

    [outcome] = run_months(None, force=False, log=lambda _line: None)
    assert outcome["status"] == "ok", outcome
    lake = Lake.from_env()
    rejects = lake.read_table(lake.latest("labs/lab_results_rejects", f"{MONTH}-01")).to_pylist()
    by_file = Counter((r["source_file"], r["reason"]) for r in rejects)
    assert by_file[(f"labs/H001/{MONTH}.csv", "missing_header")] == 40
    assert by_file[(f"labs/H002/{MONTH}.csv", Reason.MALFORMED)] == mixed.defects[Reason.MALFORMED] + 1
    assert by_file[(f"labs/H003/{MONTH}.csv", Reason.DATE_RANGE)] == 1
    assert not [r for r in rejects if "H004" in r["source_file"]]
    results = lake.latest("labs/lab_results", f"{MONTH}-01")
    out = results.metadata["output"]
    assert out["rows_in"] == 40 + 400 + 30 == out["rows_out"] + out["rows_rejected"]
    assert out["source_files"] == [f"labs/H00{i}/{MONTH}.csv" for i in (1, 2, 3)]
    assert os.path.exists(outside.path)  # refused, never moved or touched


@pytest.mark.parametrize("terminator, says", [(b"\n", "Maximum line size"), (b"\r", "line longer than 1048576")],
                         ids=["by_the_reader", "while_normalizing"])
def test_a_line_too_long_for_the_reader_is_rejected_on_its_own(tmp_path, terminator, says):
    gen = clean_drop(tmp_path / "landing", rows=30)
    lines = gen.path.read_bytes().split(b"\n")
    lines[4] = lines[4] + b"x" * (3 << 20)  # over the reader's 2 MB line limit
    gen.path.write_bytes(b"\n".join(lines[:10]) + terminator + b"\n".join(lines[10:]))  # a lone CR: normalized
    report, good, rejects, _ = ingest(tmp_path / "landing")
    assert [(r["line"], r["reason"]) for r in rejects] == [(5, Reason.MALFORMED)] and says in rejects[0]["detail"]
    assert (report.rows_out, report.lines_in) == (29, 31)


def test_the_line_count_and_the_line_splitter_agree_across_block_boundaries(tmp_path, monkeypatch):
    """LF, CRLF and lone CR at every position relative to the block size, plain and gzip."""
    rng = random.Random(5)
    path = tmp_path / "lines.bin"
    for _ in range(300):
        data = bytes(rng.choice(b"a\r\n") for _ in range(rng.randint(0, 400)))
        monkeypatch.setattr(drop_lines, "CHUNK", rng.choice([1, 2, 3, 64]))
        expected = len(lines_of(data)) - 1 if data else 0
        path.write_bytes(data)
        split = list(drop_lines.split(drop_lines.chunks(path, False), drop_lines._BYTES_NL))
        assert drop_lines.survey(path, False).lines == len(split) == expected
        assert split == (lines_of(data)[1:] if data else [])
        path.write_bytes(gzip.compress(data))
        compressed = drop_lines.survey(path, True)
        assert (compressed.lines, compressed.damaged) == (expected, False)
