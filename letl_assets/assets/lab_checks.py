"""Asset checks on the lab tables: reconciliation, de-identification, physiological bounds.

Each check evaluates every month of its run: one run may build many months (labs.SINGLE_RUN),
and each month's version gets its own verdict. AssetCheckResult can only speak for the run's
single partition, so each month's verdict is an AssetCheckEvaluation naming its partition, the
record Dagster stores per partition of a partitioned check.
"""

import warnings
from collections.abc import Callable, Iterator

import dagster as dg

from letl.labs.reconcile import reconcile_problem
from letl.labs.schema import IDENTIFIER_COLUMNS, KEY_TESTS, TESTS_BY_CODE
from letl_assets.assets.labs import LAB_REJECTS, LAB_RESULTS, MONTHLY
from letl_assets.resources.io_manager import asset_key_str
from letl_assets.resources.tiers import LakeResource

# A check on a partitioned asset must share its partitions, or it loads every month
# (see ../shared/STACK.md); Dagster 1.13 still labels that as a preview.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

# (passed, description, metadata) of one month
Verdict = tuple[bool, str | None, dict]


def _each_month(context: dg.AssetCheckExecutionContext, name: str, blocking: bool,
                judge: Callable[[str], Verdict]) -> Iterator:
    for partition in context.partition_keys:
        passed, description, metadata = judge(partition)
        yield dg.AssetCheckEvaluation(asset_key=LAB_RESULTS, check_name=name, passed=passed, partition=partition,
                                      description=description, metadata=metadata, blocking=blocking)
    yield dg.Output(None)  # the check's own output, which its downstreams wait on


@dg.asset_check(asset=LAB_RESULTS, partitions_def=MONTHLY, blocking=True)
def rows_reconcile(context: dg.AssetCheckExecutionContext, lake: LakeResource):
    """Rows read from the drops = rows published + rows rejected, both versions built from the same
    drops (recorded sources, not run ids: see ``reconcile_problem``)."""
    the_lake = lake.get_lake()

    def judge(partition: str) -> Verdict:
        results = the_lake.latest(asset_key_str(LAB_RESULTS), partition)
        rejects = the_lake.latest(asset_key_str(LAB_REJECTS), partition)
        if results is None or rejects is None:
            return False, "results or rejects version missing", {}
        problem = reconcile_problem(results, rejects)
        return problem is None, problem, {
            "rows_in": results.metadata.get("output", {}).get("rows_in"),
            "rows_out": results.rows,
            "rows_rejected": rejects.rows,
            "results_version": results.version_id,
            "rejects_version": rejects.version_id,
        }

    yield from _each_month(context, "rows_reconcile", True, judge)


@dg.asset_check(asset=LAB_RESULTS, partitions_def=MONTHLY)
def no_raw_identifiers(context: dg.AssetCheckExecutionContext, lake: LakeResource):
    """No raw identifier column; zip reduced to 3 digits; birth year folded at 90 years."""
    import duckdb

    the_lake = lake.get_lake()

    def judge(partition: str) -> Verdict:
        path = str(the_lake.local_path(the_lake.latest(asset_key_str(LAB_RESULTS), partition)))
        with duckdb.connect() as con:
            columns = [r[0] for r in con.execute("SELECT name FROM parquet_schema(?)", [path]).fetchall()]
            bad_zip, bad_key, too_old = con.execute(
                """SELECT count(*) FILTER (WHERE length(zip3) <> 3),
                          count(*) FILTER (WHERE NOT regexp_full_match(patient_key, '[0-9a-f]{64}')),
                          count(*) FILTER (WHERE year(collected_at) - birth_year > 90)
                   FROM read_parquet(?)""",
                [path],
            ).fetchone()
        leaked = sorted(set(columns) & set(IDENTIFIER_COLUMNS))
        return not leaked and bad_zip == 0 and bad_key == 0 and too_old == 0, None, {
            "identifier_columns": leaked, "bad_zip3": bad_zip, "bad_patient_key": bad_key, "age_over_90": too_old}

    yield from _each_month(context, "no_raw_identifiers", False, judge)


@dg.asset_check(asset=LAB_RESULTS, partitions_def=MONTHLY)
def physiological_bounds(context: dg.AssetCheckExecutionContext, lake: LakeResource):
    """Key tests (glucose, sodium, potassium, hemoglobin) hold only physiologically possible values."""
    import duckdb

    the_lake = lake.get_lake()
    bounds = [(c, TESTS_BY_CODE[c].min_possible, TESTS_BY_CODE[c].max_possible) for c in KEY_TESTS]

    def judge(partition: str) -> Verdict:
        version = the_lake.latest(asset_key_str(LAB_RESULTS), partition)
        path = str(the_lake.local_path(version))
        with duckdb.connect() as con:
            con.execute("CREATE TEMP TABLE bounds(code VARCHAR, lo DOUBLE, hi DOUBLE)")
            con.executemany("INSERT INTO bounds VALUES (?, ?, ?)", bounds)
            columns = {r[0] for r in con.execute("SELECT name FROM parquet_schema(?)", [path]).fetchall()}
            # A censored value's number is a bound, not a measurement; months built before result kinds
            # existed hold plain numbers only and have no comparator column.
            plain = "r.result_comparator IS NULL" if "result_comparator" in columns else "true"
            rows = con.execute(
                f"""SELECT b.code, count(*) FILTER (WHERE {plain} AND r.result_value NOT BETWEEN b.lo AND b.hi),
                           count(r.result_value) FILTER (WHERE {plain})
                   FROM bounds b LEFT JOIN read_parquet(?) r ON r.test_code = b.code GROUP BY b.code ORDER BY b.code""",
                [path],
            ).fetchall()
        outside = {code: n for code, n, _ in rows if n}
        return not outside, None, {"outside_bounds": outside, "checked_values": sum(total for *_, total in rows)}

    yield from _each_month(context, "physiological_bounds", False, judge)
