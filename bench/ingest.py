"""Ingest bench: the labs/lab_results materialization against a raw DuckDB COPY, same drop, same run.

    python bench/ingest.py --rows 10000000

(a) raw: one DuckDB COPY of the CSV files to zstd Parquet, patient_id replaced by a
    salted sha256 (no validation, no rejects, no HMAC);
(b) ours: materializing labs/lab_results (+ its rejects) through Dagster and the lake.
Each side runs in a fresh process that reports its own wall time and peak RSS (VmHWM: Linux
carries ru_maxrss across exec, so a child would report the bench's own peak after generating the
drop). The last line printed is one JSON object; ratio = our throughput / raw throughput, from
the medians, with every run's figures beside it to show the spread on a shared machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

PEAK = r"""
def peak_rss_mib():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
"""

RAW = PEAK + r"""
import json, sys, time, duckdb
files, target = json.loads(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
duckdb.sql(f'''COPY (SELECT hospital_id, sha256('salt' || patient_id) AS patient_id, birth_date, sex, zip,
                 test_code, test_name, result_value, unit, reference_low, reference_high, abnormal_flag,
                 collected_at, reported_at
          FROM read_csv({files!r}, header = true, all_varchar = true, store_rejects = true))
     TO '{target}' (FORMAT parquet, COMPRESSION zstd)''')
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}))
"""

OURS = PEAK + r"""
import json, sys, time
import dagster as dg
from letl_assets.definitions import defs
job = defs.resolve_job_def("labs_job")
selection = [dg.AssetKey(["labs", "lab_results"]), dg.AssetKey(["labs", "lab_results_rejects"])]
sub = job.get_subset(asset_selection=set(selection))
started = time.perf_counter()
result = sub.execute_in_process(partition_key=sys.argv[1], instance=dg.DagsterInstance.ephemeral(),
                                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
seconds = time.perf_counter() - started
assert result.success
mats = {tuple(m.asset_key.path): m.metadata for m in result.asset_materializations_for_node("lab_results")}
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib(),
                  "rows_out": mats[("labs", "lab_results")]["dagster/row_count"].value,
                  "rows_rejected": mats[("labs", "lab_results_rejects")]["dagster/row_count"].value}))
"""


def make_drop(rows: int, files: int, seed: int) -> list[Path]:
    from letl.labs.sample import write_drop

    landing = OUT / f"landing-{rows}-{files}-{seed}"
    paths = []
    for i in range(files):
        path = landing / "labs" / f"H{i + 1:03d}" / "2024-03.csv"
        if not path.exists():
            print(f"generating {path} ({rows // files:,} rows)", file=sys.stderr)
            write_drop(path, hospital_id=f"H{i + 1:03d}", month="2024-03", rows=rows // files, seed=seed + i)
        paths.append(path)
    return paths


def child(code: str, args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="rows in the drop (default 10M)")
    p.add_argument("--files", type=int, default=5, help="hospital files the rows are split into (default 5)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each side; medians are reported")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    drop = make_drop(args.rows, args.files, args.seed)
    size = sum(f.stat().st_size for f in drop)
    raw_runs, our_runs = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            raw_runs.append(child(RAW, [json.dumps([str(f) for f in drop]), f"{tmp}/raw.parquet"], dict(os.environ)))
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            env = dict(os.environ, LETL_HOME=f"{tmp}/home", LETL_LANDING=str(drop[0].parents[2]),
                       LETL_TIER_PMEM_PATH=f"{tmp}/pmem", LETL_PSEUDONYM_KEY="bench-key")
            our_runs.append(child(OURS, ["2024-03-01"], env))
    raw_s = statistics.median(r["seconds"] for r in raw_runs)
    our_s = statistics.median(r["seconds"] for r in our_runs)
    result = {
        "rows": args.rows,
        "input_mib": round(size / 2**20, 1),
        "raw_seconds": round(raw_s, 2),
        "ours_seconds": round(our_s, 2),
        "raw_mib_per_s": round(size / 2**20 / raw_s, 1),
        "ours_mib_per_s": round(size / 2**20 / our_s, 1),
        "ratio": round(raw_s / our_s, 3),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in our_runs)),
        "raw_peak_rss_mib": round(max(r["peak_rss_mib"] for r in raw_runs)),
        "rows_out": our_runs[-1]["rows_out"],
        "rows_rejected": our_runs[-1]["rows_rejected"],
        "files": args.files,
        "duckdb_memory": os.environ.get("LETL_DUCKDB_MEMORY", "default"),
        "raw_runs_s": [round(r["seconds"], 2) for r in raw_runs],
        "ours_runs_s": [round(r["seconds"], 2) for r in our_runs],
        "ours_peak_rss_runs_mib": [round(r["peak_rss_mib"]) for r in our_runs],
    }
    print(f"raw DuckDB COPY: {raw_s:.2f}s  ours: {our_s:.2f}s  ratio {result['ratio']}  "
          f"peak RSS ours {result['peak_rss_mib']} MiB, raw {result['raw_peak_rss_mib']} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    main()
