"""Asset checks on the lab tables: reconciliation, de-identification, physiological bounds."""

import warnings

import dagster as dg

from ..labs.schema import IDENTIFIER_COLUMNS, KEY_TESTS, TESTS_BY_CODE
from ..report import reconcile_problem
from ..resources.io_manager import asset_key_str
from ..resources.tiers import LakeResource
from .labs import LAB_REJECTS, LAB_RESULTS, MONTHLY

# A check on a partitioned asset must share its partitions, or it loads every month
# (see ../shared/STACK.md); Dagster 1.13 still labels that as a preview.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)


@dg.asset_check(asset=LAB_RESULTS, partitions_def=MONTHLY, blocking=True)
def rows_reconcile(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Rows read from the drops = rows published + rows rejected, both versions built from the same
    drops (recorded sources, not run ids: see ``reconcile_problem``)."""
    the_lake = lake.get_lake()
    results = the_lake.latest(asset_key_str(LAB_RESULTS), context.partition_key)
    rejects = the_lake.latest(asset_key_str(LAB_REJECTS), context.partition_key)
    if results is None or rejects is None:
        return dg.AssetCheckResult(passed=False, description="results or rejects version missing")
    problem = reconcile_problem(results, rejects)
    return dg.AssetCheckResult(
        passed=problem is None,
        description=problem,
        metadata={
            "rows_in": results.metadata.get("output", {}).get("rows_in"),
            "rows_out": results.rows,
            "rows_rejected": rejects.rows,
            "results_version": results.version_id,
            "rejects_version": rejects.version_id,
        },
    )


@dg.asset_check(asset=LAB_RESULTS, partitions_def=MONTHLY)
def no_raw_identifiers(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """No raw identifier column; zip reduced to 3 digits; birth year folded at 90 years."""
    the_lake = lake.get_lake()
    version = the_lake.latest(asset_key_str(LAB_RESULTS), context.partition_key)
    path = str(the_lake.local_path(version))
    import duckdb

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
    return dg.AssetCheckResult(
        passed=not leaked and bad_zip == 0 and bad_key == 0 and too_old == 0,
        metadata={"identifier_columns": leaked, "bad_zip3": bad_zip, "bad_patient_key": bad_key, "age_over_90": too_old},
    )


@dg.asset_check(asset=LAB_RESULTS, partitions_def=MONTHLY)
def physiological_bounds(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Key tests (glucose, sodium, potassium, hemoglobin) hold only physiologically possible values."""
    the_lake = lake.get_lake()
    version = the_lake.latest(asset_key_str(LAB_RESULTS), context.partition_key)
    bounds = [(c, TESTS_BY_CODE[c].min_possible, TESTS_BY_CODE[c].max_possible) for c in KEY_TESTS]
    import duckdb

    with duckdb.connect() as con:
        con.execute("CREATE TEMP TABLE bounds(code VARCHAR, lo DOUBLE, hi DOUBLE)")
        con.executemany("INSERT INTO bounds VALUES (?, ?, ?)", bounds)
        rows = con.execute(
            """SELECT b.code, count(*) FILTER (WHERE r.result_value NOT BETWEEN b.lo AND b.hi), count(r.result_value)
               FROM bounds b LEFT JOIN read_parquet(?) r ON r.test_code = b.code GROUP BY b.code ORDER BY b.code""",
            [str(the_lake.local_path(version))],
        ).fetchall()
    outside = {code: n for code, n, _ in rows if n}
    return dg.AssetCheckResult(
        passed=not outside,
        metadata={"outside_bounds": outside, "checked_values": sum(total for *_, total in rows)},
    )
