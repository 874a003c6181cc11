"""Explorer bench: the explorer's query service against raw DuckDB over the same Parquet files.

    python bench/explorer.py --rows 10000000

A temporary lake (its own LETL_HOME under bench/out/, removed afterwards) gets 12 monthly
partitions 2024-01-01..2024-12-01 of a lab_results-shaped table, rows/12 each, sorted by
(hospital_id, test_code) like the real pipeline, zstd Parquet on the ssd tier. Data is made
with DuckDB directly (the ingest pipeline is not run).

Three representative queries run both ways in one process:
  ours  Explorer(lake).run(sql, use_cache=False): SQL guard, the locked connection's views
        (Hive-style partition_key, file pruning), row cap wrapper, and the catalog access-log
        insert. The result cache is OFF (use_cache=False) so every warm run really executes.
  raw   a fresh duckdb.connect() with the explorer's threads, memory_limit and Parquet
        metadata cache, read_parquet over the very same version files (lake.local_path).
For diagnosis, each query is also timed through Explorer.run(trusted=True, log=False), and the
fixed per-call costs (SQL guard, table parse, access-log insert) are measured on their own.
Queries: one_month (per hospital and test in 2024-03: count, avg, abnormal rate),
year_trend (per month and hospital over all 12 months: count, abnormal rate) and
selective (all columns of one hospital's one test in Q2). Results of both sides are checked
equal before timing. Each query is warmed once per side, then --repeat runs alternate
ours/raw; medians are reported. For year_trend the raw side tries several ways to name the
month and the fastest is the baseline (all are reported).

The last line printed is one JSON object: time_ratio (ours / raw, per query and worst) and
one_month_ms (ours, median, warm). A human-readable table goes to stderr.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE.parent))  # run as `python bench/explorer.py` from anywhere

ASSET = "labs/lab_results"
MONTHS = [f"2024-{m:02d}-01" for m in range(1, 13)]
TARGET_RATIO, TARGET_ONE_MONTH_MS = 1.1, 100.0

# code, name, unit, reference low, reference high
TESTS = [
    ("GLU", "Glucose", "mg/dL", 70.0, 99.0),
    ("HBA1C", "Hemoglobin A1c", "%", 4.0, 5.6),
    ("NA", "Sodium", "mmol/L", 135.0, 145.0),
    ("K", "Potassium", "mmol/L", 3.5, 5.1),
    ("CREAT", "Creatinine", "mg/dL", 0.6, 1.3),
    ("ALT", "Alanine aminotransferase", "U/L", 7.0, 56.0),
    ("AST", "Aspartate aminotransferase", "U/L", 10.0, 40.0),
    ("HGB", "Hemoglobin", "g/dL", 12.0, 17.5),
    ("WBC", "White blood cells", "10^9/L", 4.5, 11.0),
    ("PLT", "Platelets", "10^9/L", 150.0, 400.0),
]

ABNORMAL = "avg(CASE WHEN abnormal_flag <> 'N' THEN 1.0 ELSE 0.0 END)"
HOSPITAL, TEST, QUARTER = "H003", "GLU", ("2024-04-01", "2024-06-01")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- data -------------------------------------------------------------------------------------

def month_sql(month: str, rows: int, seed: int, target: Path) -> str:
    """One month of lab results, deterministic in (month, seed), sorted like the pipeline's output."""
    tests = ", ".join(f"({i}, '{c}', '{n}', '{u}', {lo}, {hi})" for i, (c, n, u, lo, hi) in enumerate(TESTS))
    patients = max(rows // 20, 1)
    return f"""
    COPY (
      WITH t(idx, code, name, unit, lo, hi) AS (VALUES {tests}),
      r AS (SELECT i, hash(i, '{month}', {seed}) AS h FROM range({rows}) AS g(i)),
      x AS (
        SELECT r.*, t.*,
               ((h >> 24) % 1000000) / 1e6 AS u,
               TIMESTAMP '{month}' + to_seconds(CAST((h >> 40) % (
                   epoch(TIMESTAMP '{month}' + INTERVAL 1 MONTH) - epoch(TIMESTAMP '{month}')) AS BIGINT)) AS collected
        FROM r JOIN t ON t.idx = CAST((h >> 8) % {len(TESTS)} AS INTEGER)
      ),
      v AS (
        SELECT *, round(lo + (hi - lo) * (u * 1.4 - 0.2), 3) AS value,
               'H' || lpad(CAST(1 + h % 5 AS VARCHAR), 3, '0') AS hosp
        FROM x
      )
      SELECT hosp AS hospital_id,
             sha256('patient-' || CAST((h >> 16) % {patients} AS VARCHAR) || '-{seed}') AS patient_key,
             CAST(1930 + (h >> 20) % 80 AS SMALLINT) AS birth_year,
             ['M', 'F', 'U'][1 + CAST((h >> 12) % 3 AS INTEGER)] AS sex,
             lpad(CAST((h >> 30) % 1000 AS VARCHAR), 3, '0') AS zip3,
             code AS test_code, name AS test_name, value AS result_value, unit,
             lo AS reference_low, hi AS reference_high,
             CASE WHEN value > hi THEN 'H' WHEN value < lo THEN 'L' ELSE 'N' END AS abnormal_flag,
             collected AS collected_at,
             collected + to_minutes(CAST(30 + (h >> 50) % 4320 AS BIGINT)) AS reported_at,
             'labs/' || hosp || '/{month[:7]}.csv' AS source_file
      FROM v
      ORDER BY hospital_id, test_code
    ) TO '{target}' (FORMAT parquet, COMPRESSION zstd)
    """


def build_lake(rows: int, seed: int):
    """The temp lake (env already points at it): 12 monthly versions of labs/lab_results on ssd."""
    import duckdb

    from letl.lake.lake import Lake

    lake = Lake.from_env()
    per_month = [rows // 12 + (1 if i < rows % 12 else 0) for i in range(12)]
    versions = []
    gen = load = 0.0
    con = duckdb.connect()
    for month, n in zip(MONTHS, per_month, strict=False):
        staged = lake.staging_path()
        started = time.perf_counter()
        con.execute(month_sql(month, n, seed, staged))
        gen += time.perf_counter() - started
        started = time.perf_counter()
        versions.append(lake.write_version(
            ASSET, staged, partition=month, tier_hint="ssd",
            metadata={"dataset": {"access": "deidentified", "description": "bench: synthetic lab results"}},
        ))
        load += time.perf_counter() - started
        log(f"  {month}: {n:,} rows, {versions[-1].bytes / 2**20:.1f} MiB on {versions[-1].tier}")
    con.close()
    return lake, versions, gen, load


# --- queries ----------------------------------------------------------------------------------

def quoted(paths) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def queries(files: dict[str, Path]) -> dict[str, dict]:
    """name -> {ours: sql, raw: {variant: sql}, keys: sort columns for the equality check}."""
    march = quoted([files["2024-03-01"]])
    year = quoted([files[m] for m in MONTHS])
    q2 = [m for m in MONTHS if QUARTER[0] <= m <= QUARTER[1]]
    quarter = quoted([files[m] for m in q2])
    one_month = (f"SELECT hospital_id, test_code, count(*) AS n, avg(result_value) AS avg_value, "
                 f"{ABNORMAL} AS abnormal_rate FROM {{src}}{{where}} GROUP BY hospital_id, test_code "
                 f"ORDER BY hospital_id, test_code")
    trend = (f"SELECT {{month}} AS month, hospital_id, count(*) AS n, {ABNORMAL} AS abnormal_rate "
             f"FROM {{src}} GROUP BY ALL ORDER BY month, hospital_id")
    union = " UNION ALL ".join(
        f"SELECT DATE '{m}' AS month, hospital_id, abnormal_flag FROM read_parquet({quoted([files[m]])})"
        for m in MONTHS)
    selective = f"SELECT * FROM {{src}} WHERE {{part}}hospital_id = '{HOSPITAL}' AND test_code = '{TEST}'"
    return {
        "one_month": {
            "ours": one_month.format(src="lab_results", where=" WHERE partition_key = DATE '2024-03-01'"),
            "raw": {"file": one_month.format(src=f"read_parquet({march})", where="")},
            "keys": ["hospital_id", "test_code"],
        },
        "year_trend": {
            "ours": trend.format(month="partition_key", src="lab_results"),
            "raw": {
                "date_trunc": trend.format(month="CAST(date_trunc('month', collected_at) AS DATE)",
                                           src=f"read_parquet({year})"),
                "union_per_file": (f"SELECT month, hospital_id, count(*) AS n, {ABNORMAL} AS abnormal_rate "
                                   f"FROM ({union}) GROUP BY ALL ORDER BY month, hospital_id"),
                "filename": trend.format(
                    month="CAST(regexp_extract(filename, '/([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/]*$', 1) AS DATE)",
                    src=f"read_parquet({year}, filename = true)"),
            },
            "keys": ["month", "hospital_id"],
        },
        "selective": {
            "ours": selective.format(
                src="lab_results",
                part=f"partition_key BETWEEN DATE '{QUARTER[0]}' AND DATE '{QUARTER[1]}' AND "),
            "raw": {"files": selective.format(src=f"read_parquet({quarter})", part="")},
            "keys": None,  # every column
        },
    }


def same(ours, raw, keys: list[str] | None) -> str | None:
    """None when the two Arrow tables hold the same rows (floats to 1e-9 relative), else why not."""
    import numpy as np
    import pyarrow as pa

    if "partition_key" in ours.column_names and "partition_key" not in raw.column_names:
        ours = ours.drop_columns(["partition_key"])
    if ours.column_names != raw.column_names:
        return f"columns differ: {ours.column_names} vs {raw.column_names}"
    if ours.num_rows != raw.num_rows:
        return f"row counts differ: {ours.num_rows} vs {raw.num_rows}"
    order = [(k, "ascending") for k in (keys or ours.column_names)]
    ours, raw = ours.sort_by(order), raw.sort_by(order)
    for name in ours.column_names:
        a, b = ours.column(name), raw.column(name)
        if pa.types.is_floating(a.type) or pa.types.is_decimal(a.type):
            if not np.allclose(a.to_numpy(zero_copy_only=False).astype(float),
                               b.to_numpy(zero_copy_only=False).astype(float), rtol=1e-9, atol=0, equal_nan=True):
                return f"column {name} differs"
        elif not a.equals(b):
            return f"column {name} differs"
    return None


# --- timing -----------------------------------------------------------------------------------

def bench(rows: int, repeat: int, seed: int, threads: int, memory_limit: str) -> dict:
    import duckdb

    from letl.query.service import Explorer, Settings

    log(f"building the lake: {rows:,} rows in 12 monthly partitions")
    lake, versions, gen_s, load_s = build_lake(rows, seed)
    files = {v.partition: lake.local_path(v) for v in versions}

    settings = Settings(row_cap=max(rows, 1) + 1, download_cap=max(rows, 1) + 1, timeout_s=600.0,
                        memory_limit=memory_limit, threads=threads)
    started = time.perf_counter()
    ex = Explorer(lake, role="analyst", settings=settings)
    open_s = time.perf_counter() - started
    assert "lab_results" in ex.snapshot.views, f"view lab_results missing: {sorted(ex.snapshot.views)}"
    assert ex.snapshot.views["lab_results"].hive, "lab_results is not Hive-partitioned"

    raw = duckdb.connect()
    raw.execute("SET parquet_metadata_cache = true")  # as the explorer's connection: a strict baseline
    raw.execute(f"SET memory_limit = '{memory_limit}'")
    raw.execute(f"SET threads = {int(threads)}")

    def run_ours(sql):
        started = time.perf_counter()
        res = ex.run(sql, use_cache=False)
        seconds = time.perf_counter() - started
        assert not res.cached and not res.truncated, "ours: cached or truncated result"
        return seconds, res.table

    def run_raw(sql):
        started = time.perf_counter()
        table = raw.sql(sql).to_arrow_table()
        return time.perf_counter() - started, table

    def run_bare(sql):
        """Diagnostic: ours without the SQL guard and the access log (trusted=True, log=False)."""
        started = time.perf_counter()
        ex.run(sql, trusted=True, log=False, use_cache=False)
        return time.perf_counter() - started

    report = {}
    try:
        for name, q in queries(files).items():
            log(f"{name}: checking results and warming up")
            _, ours_table = run_ours(q["ours"])  # warm-up run doubles as the equality check
            for variant, sql in q["raw"].items():
                _, raw_table = run_raw(sql)
                problem = same(ours_table, raw_table, q["keys"])
                if problem:
                    raise SystemExit(f"{name}: ours and raw ({variant}) disagree: {problem}")
            ours_t, bare_t, raw_t = [], [], {v: [] for v in q["raw"]}
            for _ in range(repeat):
                ours_t.append(run_ours(q["ours"])[0])
                bare_t.append(run_bare(q["ours"]))
                for variant, sql in q["raw"].items():
                    raw_t[variant].append(run_raw(sql)[0])
            raw_ms = {v: statistics.median(t) * 1e3 for v, t in raw_t.items()}
            best = min(raw_ms, key=raw_ms.get)
            ours_ms = statistics.median(ours_t) * 1e3
            entry = {
                "ours_ms": round(ours_ms, 2),
                "raw_ms": round(raw_ms[best], 2),
                "time_ratio": round(ours_ms / raw_ms[best], 3),
                "ours_min_ms": round(min(ours_t) * 1e3, 2),
                "ours_unguarded_unlogged_ms": round(statistics.median(bare_t) * 1e3, 2),
                "unguarded_unlogged_ratio": round(statistics.median(bare_t) * 1e3 / raw_ms[best], 3),
                "raw_min_ms": round(min(raw_t[best]) * 1e3, 2),
                "result_rows": ours_table.num_rows,
            }
            if len(raw_ms) > 1:
                entry["raw_variant"] = best
                entry["raw_variants_ms"] = {v: round(ms, 2) for v, ms in raw_ms.items()}
            report[name] = entry
            log(f"  ours {entry['ours_ms']:.1f} ms, raw {entry['raw_ms']:.1f} ms, ratio {entry['time_ratio']}")
        overhead = fixed_costs(ex, queries(files)["one_month"]["ours"], repeat)
    finally:
        raw.close()
        ex.close()
        lake.catalog.engine.dispose()

    ratios = {name: e["time_ratio"] for name, e in report.items()}
    ratios["worst"] = max(ratios.values())
    return {
        "rows": rows,
        "files": len(versions),
        "bytes": sum(v.bytes for v in versions),
        "repeat": repeat,
        "threads": threads,
        "memory_limit": memory_limit,
        "result_cache": "off (use_cache=False): warm runs execute every time",
        "access_log": "on: one catalog insert per ours query",
        "time_ratio": ratios,
        "one_month_ms": report["one_month"]["ours_ms"],
        "queries": report,
        "fixed_costs_ms": overhead,
        "targets": {"time_ratio": TARGET_RATIO, "one_month_ms": TARGET_ONE_MONTH_MS},
        "meets_targets": ratios["worst"] <= TARGET_RATIO and report["one_month"]["ours_ms"] < TARGET_ONE_MONTH_MS,
        "generate_seconds": round(gen_s, 2),
        "write_version_seconds": round(load_s, 2),
        "explorer_open_seconds": round(open_s, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def fixed_costs(ex, sql: str, repeat: int) -> dict:
    """Diagnostic: medians of the per-query steps of Explorer.run that do not depend on the data."""
    from letl.query.sql_guard import analyze

    estimate = ex.estimate_sql(sql)
    steps = {
        "sql_guard": lambda: analyze(sql),
        "access_log_insert": lambda: ex._log(estimate, "bench", 0, "bench"),
    }
    out = {}
    for name, step in steps.items():
        times = []
        for _ in range(max(repeat, 3)):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        out[name] = round(statistics.median(times) * 1e3, 2)
    out["note"] = ("Explorer.run parses hand-written SQL once (guard and the views it reads) "
                   "and inserts one audit row per version read")
    return out


def table(result: dict) -> str:
    lines = [f"{'query':<12}{'ours ms':>10}{'raw ms':>10}{'ratio':>8}{'rows':>10}   ours w/o guard+log ms"]
    for name, e in result["queries"].items():
        lines.append(f"{name:<12}{e['ours_ms']:>10.1f}{e['raw_ms']:>10.1f}{e['time_ratio']:>8.3f}{e['result_rows']:>10,}"
                     f"   {e['ours_unguarded_unlogged_ms']:.1f}")
    fixed = result["fixed_costs_ms"]
    lines.append(f"fixed costs per call: SQL guard {fixed['sql_guard']} ms, "
                 f"access-log insert {fixed['access_log_insert']} ms")
    lines.append(f"worst ratio {result['time_ratio']['worst']} (target <= {TARGET_RATIO}); one month "
                 f"{result['one_month_ms']} ms warm (target < {TARGET_ONE_MONTH_MS:g}); "
                 f"{result['rows']:,} rows, {result['files']} files, {result['bytes'] / 2**20:.1f} MiB, "
                 f"peak RSS {result['peak_rss_mib']} MiB; result cache off")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="rows over the 12 monthly files (default 10M)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per query and side; medians are reported (default 5)")
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads on both sides (explorer default 2)")
    p.add_argument("--memory-limit", default="1GiB", help="DuckDB memory_limit on both sides (explorer default 1GiB)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    if args.rows < 12 or args.repeat < 1:
        p.error("--rows must be at least 12 and --repeat at least 1")

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT, prefix="explorer-") as tmp:
        home, pmem = Path(tmp) / "home", Path(tmp) / "pmem"
        pmem.mkdir()
        for name in ("LETL_BRANCH", "LETL_CATALOG_URL", "LETL_TIER_SSD_PATH", "LETL_TIER_HDD_PATH",
                     "LETL_TIER_PMEM_QUOTA", "LETL_TIER_SSD_QUOTA", "LETL_TIER_HDD_QUOTA",
                     "LETL_PSEUDONYM_KEY_FILE", "LETL_TIERS_FILE"):
            os.environ.pop(name, None)
        os.environ.update(LETL_HOME=str(home), LETL_LANDING=str(Path(tmp) / "landing"),
                          LETL_TIER_PMEM_PATH=str(pmem), LETL_OBJECTSTORE="off",
                          LETL_PSEUDONYM_KEY="bench-key-not-secret")
        result = bench(args.rows, args.repeat, args.seed, args.threads, args.memory_limit)
    log(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
