"""Issue 10: numbers, censored numbers, coded and free-text results, and empty ones: where each lands
(ingest_drops and labs_job), what the summary makes of them, and old lakes without the new columns."""

import csv
import math
from collections import Counter
from contextlib import closing

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from letl.labs.drops import find_drops
from letl.labs.ingest import ingest_drops
from letl.labs.sample import generate_drops, write_drop
from letl.labs.schema import DROP_COLUMNS, NEGATIVE_CODES, OTHER_RESULT, POSITIVE_CODES, RESULT_CODES, RESULT_KIND_COLUMNS, Reason
from letl.labs.summary import column_name, summarize
from letl.query import library
from letl.query.engine import locked_connection
from letl.query.service import Explorer
from letl_assets.definitions import defs

MONTH, PARTITION = "2024-03", "2024-03-01"
GLUCOSE, CREATININE, SODIUM, SARS, LOCAL = "2345-7", "2160-0", "2951-2", "94500-6", "LOCAL-1"
CHECKS = {"rows_reconcile", "no_raw_identifiers", "physiological_bounds"}
# result_value as dropped, test, then where it lands: (result_value, result_comparator, result_text,
# result_original) when published, or the reject reason.
CASES = [
    ("98.5", GLUCOSE, (98.5, None, None, None)),
    (" 7.25 ", LOCAL, (7.25, None, None, None)),
    ("<0.5", CREATININE, (0.5, "<", None, "<0.5")),
    ("< 0.20", CREATININE, (0.2, "<", None, "< 0.20")),
    (">1000", GLUCOSE, (1000.0, ">", None, ">1000")),
    (">= 150", SODIUM, (150.0, ">=", None, ">= 150")),
    ("<=  5", LOCAL, (5.0, "<=", None, "<=  5")),
    (">1999", GLUCOSE, (1999.0, ">", None, ">1999")),  # some possible value is above it
    ("<=10", GLUCOSE, (10.0, "<=", None, "<=10")),  # it may be 10, the lowest possible
    (">5", GLUCOSE, (5.0, ">", None, ">5")),  # a bound below the possible: physiological_bounds must not count it
    ("Positive", SARS, (None, None, "positive", "Positive")),
    ("POS", SARS, (None, None, "positive", "POS")),
    ("+", SARS, (None, None, "positive", "+")),
    ("NEG", SARS, (None, None, "negative", "NEG")),
    ("-", SARS, (None, None, "negative", "-")),
    ("DETECTED", SARS, (None, None, "detected", "DETECTED")),
    ("Not  Detected", SARS, (None, None, "not detected", "Not  Detected")),
    ("none detected", SARS, (None, None, "not detected", "none detected")),
    ("reactive", LOCAL, (None, None, "reactive", "reactive")),
    ("Non-Reactive", LOCAL, (None, None, "non-reactive", "Non-Reactive")),
    ("non reactive", LOCAL, (None, None, "non-reactive", "non reactive")),
    ("Inconclusive", SARS, (None, None, "indeterminate", "Inconclusive")),
    ("equivocal", LOCAL, (None, None, "indeterminate", "equivocal")),
    ("INVALID", SARS, (None, None, "invalid", "INVALID")),
    ("see comment", GLUCOSE, (None, None, OTHER_RESULT, "see comment")),
    ("NaN", GLUCOSE, (None, None, OTHER_RESULT, "NaN")),  # not a number a reader could use
    ("1,5", GLUCOSE, (None, None, OTHER_RESULT, "1,5")),
    ("=5", GLUCOSE, (None, None, OTHER_RESULT, "=5")),
    ("<>5", GLUCOSE, (None, None, OTHER_RESULT, "<>5")),
    ("", GLUCOSE, Reason.MISSING_RESULT),
    ("   ", SARS, Reason.MISSING_RESULT),
    ("<5", GLUCOSE, Reason.OUT_OF_RANGE),  # below 5 mg/dL is below anything possible
    (">2000", GLUCOSE, Reason.OUT_OF_RANGE),
    ("2500", GLUCOSE, Reason.OUT_OF_RANGE),
]
HAND = "labs/H042/2024-03.csv"


def write_hand_drop(landing):
    """One row per case, told apart by collected_at (a published row has no line number)."""
    path = landing / HAND
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, DROP_COLUMNS)
        writer.writeheader()
        for i, (value, code, _) in enumerate(CASES):
            writer.writerow(dict(hospital_id="H042", patient_id=f"P{i}", patient_name="Doe, Jane",
                                 birth_date="1970-01-01", sex="F", zip="12345", test_code=code,
                                 test_name=f"test {code}", result_value=value,
                                 unit="", reference_low="", reference_high="", abnormal_flag="",
                                 collected_at=f"{MONTH}-02 08:{i:02d}:00", reported_at=""))


def assert_cases_landed(good: list[dict], rejects: list[dict]):
    published = {g["collected_at"].minute: g for g in good if g["source_file"] == HAND}
    rejected = {r["line"] - 2: r for r in rejects if r["source_file"] == HAND}
    assert len(published) + len(rejected) == len(CASES)
    for i, (value, _code, expected) in enumerate(CASES):
        if isinstance(expected, str):
            assert i in rejected and rejected[i]["reason"] == expected, (value, rejected.get(i))
            assert (rejected[i]["result_value"] or "") == value  # the raw field is kept
        else:
            row = published[i]
            assert tuple(row[c] for c in ("result_value", *RESULT_KIND_COLUMNS)) == expected, (value, row)
    assert {r["detail"] for r in rejected.values() if r["reason"] == Reason.MISSING_RESULT} == {"result_value is empty"}


def test_each_kind_of_result_lands_where_it_should(tmp_path):
    write_hand_drop(tmp_path / "landing")
    report = ingest_drops(find_drops(tmp_path / "landing", MONTH), tmp_path / "good.parquet",
                          tmp_path / "rejects.parquet", b"k", tmp_path, log=lambda _: None)
    good, rejects = pq.read_table(report.good_path), pq.read_table(report.rejects_path)
    assert_cases_landed(good.to_pylist(), rejects.to_pylist())
    assert Reason.NON_NUMERIC not in report.reasons  # kept for old rejects, no longer produced
    assert report.reasons == dict(Counter(e for *_, e in CASES if isinstance(e, str)))
    types = {f.name: str(f.type) for f in good.schema}
    assert [types[c] for c in ("result_value", *RESULT_KIND_COLUMNS)] == ["double", "string", "string", "string"]


def test_sample_drops_publish_the_kinds_they_plant(tmp_path):
    gen = write_drop(tmp_path / "landing" / "labs" / "H001" / f"{MONTH}.csv", hospital_id="H001", month=MONTH,
                     rows=3000, seed=4)
    report = ingest_drops(find_drops(tmp_path / "landing", MONTH), tmp_path / "good.parquet",
                          tmp_path / "rejects.parquet", b"k", tmp_path, log=lambda _: None)
    assert report.reasons == gen.defects and Reason.MISSING_RESULT in report.reasons
    good = pd.read_parquet(report.good_path)
    coded = good.result_text.isin(list(RESULT_CODES))
    assert good.test_code[coded].eq(SARS).all() and good.result_text[good.test_code == SARS].notna().all()
    # Duplicates copy planted rows too, and those are rejected: so the published counts are exact.
    assert {"qualitative": int(coded.sum()), "censored": int(good.result_comparator.notna().sum()),
            "other": int((good.result_text == OTHER_RESULT).sum())} == gen.kinds
    assert good.result_value.notna().sum() == len(good) - good.result_text.notna().sum()


def expected_summary(good: pd.DataFrame) -> pd.DataFrame:
    """The summary recomputed with pandas from the published rows."""
    def one(g):
        plain = g[g.result_comparator.isna() & g.result_value.notna()]
        counts = {column_name(c): int((g.result_text == c).sum()) for c in (*RESULT_CODES, OTHER_RESULT)}
        positive = g.result_text.isin(POSITIVE_CODES).sum()
        decided = positive + g.result_text.isin(NEGATIVE_CODES).sum()
        return pd.Series({"results": len(g), "mean": plain.result_value.mean(), "min": plain.result_value.min(),
                          "max": plain.result_value.max(),
                          "abnormal_rate": g.abnormal_flag.isin(["H", "L", "A"]).mean(),
                          "numeric_results": len(plain), "censored_results": int(g.result_comparator.notna().sum()),
                          **counts, "positivity_rate": positive / decided if decided else math.nan})
    return good.groupby(["hospital_id", "test_code"]).apply(one, include_groups=False).reset_index()


def assert_same_summary(ours: pd.DataFrame, theirs: pd.DataFrame):
    ours = ours.drop(columns=["test_name", "unit"]).sort_values(["hospital_id", "test_code"]).reset_index(drop=True)
    assert list(ours.columns) == list(theirs.columns)
    numbers = list(ours.columns[2:])
    ours[numbers], theirs[numbers] = ours[numbers].astype(float), theirs[numbers].astype(float)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-12)


def run_month(partition):
    result = defs.resolve_job_def("labs_job").execute_in_process(
        partition_key=partition, instance=DagsterInstance.get(), raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == CHECKS
    assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]
    return result


def build_job_lake(env):
    """Sample drops of February and March plus the hand-made drop, through the real labs_job."""
    generate_drops(env["landing"], months=2, hospitals=2, rows_per_file=1500, seed=9, start_month="2024-02")
    write_hand_drop(env["landing"])
    for partition in ("2024-02-01", PARTITION):
        run_month(partition)


@pytest.fixture(scope="session")
def job_lake_template(built_once):
    return built_once("job-lake", build_job_lake)


@pytest.fixture
def job_lake(job_lake_template, copy_lake):
    return copy_lake(job_lake_template)


def test_labs_job_publishes_each_kind_and_summarizes_positivity(job_lake):
    lake = job_lake
    good = lake.read_table(lake.latest("labs/lab_results", PARTITION))
    rejects = lake.read_table(lake.latest("labs/lab_results_rejects", PARTITION))
    assert_cases_landed(good.to_pylist(), rejects.to_pylist())
    assert Counter(rejects.column("reason").to_pylist())[Reason.MISSING_RESULT] > 2  # the sample's too

    summary = lake.read_table(lake.latest("labs/lab_results_summary", PARTITION)).to_pandas()
    assert_same_summary(summary, expected_summary(good.to_pandas()))
    sars = summary[(summary.test_code == SARS) & (summary.hospital_id == "H001")].iloc[0]
    assert 0 < sars.positivity_rate < 1 and sars.negative + sars.not_detected > 0 and math.isnan(sars["mean"])
    assert summary[summary.test_code == GLUCOSE].positivity_rate.isna().all()  # a numeric test has none


def drop_kind_columns(table: pa.Table) -> pa.Table:
    return table.drop_columns(list(RESULT_KIND_COLUMNS))


def test_an_old_results_file_still_summarizes(tmp_path, job_lake):
    lake = job_lake
    good = lake.read_table(lake.latest("labs/lab_results", PARTITION))
    plain = good.filter(pc.is_null(good.column("result_original")))  # what an old file could hold
    pq.write_table(drop_kind_columns(plain), tmp_path / "old.parquet")
    pq.write_table(plain, tmp_path / "new.parquet")
    old = summarize(tmp_path / "old.parquet")
    assert old.equals(summarize(tmp_path / "new.parquet"))
    frame = old.to_pandas()
    assert_same_summary(frame, expected_summary(plain.to_pandas()))
    assert (frame.numeric_results == frame.results).all() and frame.positivity_rate.isna().all()


def test_the_explorer_reads_a_lake_whose_older_months_lack_the_new_columns(job_lake):
    lake = job_lake
    with closing(Explorer(lake, "analyst")) as ex:
        assert not any(view.mixed_schema for view in ex.snapshot.views.values())  # one schema: read as before
    # February as an older LETL wrote it: plain numbers only, no result kind columns, in the results
    # and in the summary (its old columns, computed from those results).
    feb = lake.latest("labs/lab_results", "2024-02-01")
    table = lake.read_table(feb)
    plain = drop_kind_columns(table.filter(pc.is_null(table.column("result_original"))))
    old = lake.write_version("labs/lab_results", plain, partition="2024-02-01", metadata=feb.metadata)
    feb = lake.latest("labs/lab_results_summary", "2024-02-01")
    old_summary = summarize(lake.local_path(old)).select(["hospital_id", "test_code", "test_name", "unit", "results",
                                                          "mean", "min", "max", "abnormal_rate"])
    lake.write_version("labs/lab_results_summary", old_summary, partition="2024-02-01", metadata=feb.metadata,
                       upstream_ids=[old.version_id])
    rows = {p: lake.latest("labs/lab_results", p).rows for p in ("2024-02-01", PARTITION)}
    sars = {p: sum(1 for c in lake.read_table(lake.latest("labs/lab_results", p)).column("test_code").to_pylist()
                   if c == SARS) for p in rows}
    assert sars["2024-02-01"] == 0 and sars[PARTITION] > 0

    with closing(Explorer(lake, "analyst")) as ex:
        assert ex.snapshot.views["lab_results"].mixed_schema and ex.snapshot.views["lab_results_summary"].mixed_schema
        sql = ("SELECT strftime(partition_key, '%Y-%m-%d') AS p, count(*) AS n, count(result_text) AS texts, "
               "count(result_comparator) AS censored FROM lab_results GROUP BY ALL ORDER BY p")
        for trusted in (True, False):  # in process (the builder) and in the worker (the SQL page)
            got = ex.run(sql, trusted=trusted).table.to_pylist()
            assert [(r["p"], r["n"]) for r in got] == sorted(rows.items())
            assert got[0]["texts"] == got[0]["censored"] == 0 and got[1]["texts"] > 0 and got[1]["censored"] > 0
        summary = ex.run("SELECT strftime(partition_key, '%Y-%m') AS m, sum(results) AS results, "
                         "sum(positive + detected) AS positive, max(positivity_rate) AS rate "
                         "FROM lab_results_summary GROUP BY ALL ORDER BY m", trusted=True).table.to_pylist()
        assert [(r["m"], r["results"]) for r in summary] == [("2024-02", rows["2024-02-01"]),
                                                             ("2024-03", rows[PARTITION])]
        assert summary[0]["positive"] is None and summary[0]["rate"] is None
        assert summary[1]["positive"] > 0 and 0 < summary[1]["rate"] <= 1
        assert "result_text" in ex.schema("lab_results")
        [trend] = [q for q in library.load([library.BUILTIN]) if q.name == "Positivity trend of a qualitative test"]
        got = ex.run(trend.sql, trend.values({"from_month": "2024-02-01"})).table.to_pylist()
        good = lake.read_table(lake.latest("labs/lab_results", PARTITION)).to_pandas()
        sars = good[good.test_code == SARS]
        decided = sars.result_text.isin(POSITIVE_CODES + NEGATIVE_CODES)
        expected = {h: g.result_text.isin(POSITIVE_CODES).sum() / decided[g.index].sum()
                    for h, g in sars.groupby("hospital_id")}
        assert {r["month"] for r in got} == {"2024-03"}  # February, as written before, has no such results
        assert {r["hospital_id"]: r["positivity_rate"] for r in got} == pytest.approx(expected)


@pytest.mark.parametrize("order", [("old", "new"), ("new", "old")])
def test_a_view_over_files_with_different_columns_needs_union_by_name(tmp_path, order):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "old.parquet")
    pq.write_table(pa.table({"a": [2], "b": ["x"]}), tmp_path / "new.parquet")
    files = [str(tmp_path / f"{name}.parquet") for name in order]
    con = locked_connection({"t": files}, [str(tmp_path) + "/"], union={"t"})
    assert sorted(con.execute("SELECT a, b FROM t").fetchall()) == [(1, None), (2, "x")]
    plain = locked_connection({"t": files}, [str(tmp_path) + "/"])
    with pytest.raises(duckdb.Error):  # the first file's columns, or a refusal of the file lacking one
        plain.execute("SELECT a, b FROM t").fetchall()
