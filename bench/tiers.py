"""Tier bench: the lake's verified moves against the plain tools, same bytes, same run.

    python bench/tiers.py --mib 445 --repeat 3

(1) local:    a move ssd -> hdd through Mover (request id reserved, copy while hashing, sha256
              against the catalog, xxh3 read-back, switch, second read-back, delete) against
              `cp` of the same bytes (the bench's data file, on the same filesystem) followed
              by `sync` of the copy: a move is durable, so cp + sync is the fair baseline;
              plain cp is printed as well.
(2) upload:   a move hdd -> cortx against boto3 `upload_file` of the same bytes to the same
              SeaweedFS (the lake's client settings, boto3's default TransferConfig: 8 MiB
              parts, 10 threads). The move's copy is proven by the CRC32 the server checks on
              every part and reports for the whole object, not read back.
(3) download: a move cortx -> hdd against boto3 `download_file` of the same bytes. The lake's
              read path (a cached local copy, checked against the sha256) is printed too.

Each pair runs back to back, baseline first in odd rounds and ours first in even ones: the
machine may be shared, and the spread (min-max over rounds) is reported with the medians.

The bench starts its own SeaweedFS on 127.0.0.1 (as `letl objectstore up` does) and stops
it. Data and the lake's home live under bench/out/tiers (git-ignored). Progress goes to
stderr; the last line on stdout is one JSON object. A ratio is our throughput over the
baseline's (baseline seconds / our seconds), from the medians: >= 1 means we are faster.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "tiers"
sys.path.insert(0, str(HERE.parent))


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


CPU: dict[str, list[float]] = {}
LOAD: list[float] = []  # the 1-minute load average after each round: the bench is often run on a shared machine


def cpu_seconds() -> float:
    """User + system CPU of this process's threads and of its finished children (cp, sync)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work, name: str | None = None) -> float:
    os.sync()  # every measurement starts with no dirty pages of an earlier one
    started, cpu = time.perf_counter(), cpu_seconds()
    work()
    if name is not None:  # client CPU: what the load on a shared machine cannot change
        CPU.setdefault(name, []).append(cpu_seconds() - cpu)
    return time.perf_counter() - started


def make_data(mb: int) -> Path:
    path = OUT / f"data-{mb}MiB.bin"
    if not path.is_file() or path.stat().st_size != mb * 2**20:
        log(f"generating {mb} MiB of random data in {path}")
        OUT.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(2**20))
    return path


def configure(info, home: Path) -> None:
    tiers = home / "tiers"
    os.environ.update({
        "LETL_HOME": str(home), "LETL_OBJECTSTORE": "off",
        "LETL_TIER_PMEM_PATH": str(tiers / "pmem"), "LETL_TIER_SSD_PATH": str(tiers / "ssd"),
        "LETL_TIER_HDD_PATH": str(tiers / "hdd"),
        "LETL_TIER_CORTX_PATH": f"s3://{info.bucket}/bench-{uuid.uuid4().hex[:8]}",
        "LETL_S3_ENDPOINT": info.endpoint, "LETL_S3_ACCESS_KEY_ID": info.access_key,
        "LETL_S3_SECRET_ACCESS_KEY": info.secret_key,
    })
    for name in ("LETL_TIERS_FILE", "LETL_CATALOG_URL", "LETL_TIER_SSD_QUOTA", "LETL_TIER_HDD_QUOTA", "LETL_BRANCH"):
        os.environ.pop(name, None)
    os.environ["LETL_TIER_CORTX_QUOTA"] = "0"


def pair(r: int, times: dict, base: tuple, ours: tuple) -> None:
    """Times the baseline and our side back to back, in an order that flips every round, so that a
    load change on the shared machine does not always hit the same side."""
    for name, work in (base, ours) if r % 2 == 0 else (ours, base):
        times[name].append(timed(work, name))


def one_round(r: int, data: Path, info, client, times: dict) -> None:
    from boto3.s3.transfer import TransferConfig

    from letl.lake.lake import Lake
    from letl.lake.moves import Mover

    lake = Lake.from_env()
    mover = Mover(lake)
    run = uuid.uuid4().hex[:8]
    version = lake.catalog.get(mover.write(str(data), "bench/blob", "ssd", f"w-{run}").version_id)
    hdd_root = lake.tiers["hdd"].backend.root
    hdd_root.mkdir(parents=True, exist_ok=True)
    copy = hdd_root / f"cp-{run}.bin"

    def cp_then_sync() -> None:
        started = time.perf_counter()
        subprocess.run(["cp", str(data), str(copy)], check=True)
        times["cp"].append(time.perf_counter() - started)
        subprocess.run(["sync", str(copy)], check=True)  # fsync of the copy: what makes cp durable

    pair(r, times, ("cp_sync", cp_then_sync), ("move", lambda: mover.move(version.version_id, "hdd", f"m-{run}")))
    copy.unlink()

    # boto3 sends the bench's data file (the same bytes); its object then serves boto3's download.
    baseline_key, config = f"bench-baseline/{run}", TransferConfig()
    pair(r, times, ("boto3_upload", lambda: client.upload_file(str(data), info.bucket, baseline_key, Config=config)),
         ("upload", lambda: mover.move(version.version_id, "cortx", f"u-{run}")))

    on_cortx = lake.catalog.get(version.version_id)
    times["read_path"].append(timed(lambda: lake.local_path(on_cortx), "read_path"))
    lake.local_path(on_cortx).unlink()
    fetched = OUT / f"download-{run}.bin"
    pair(r, times,
         ("boto3_download", lambda: client.download_file(info.bucket, baseline_key, str(fetched), Config=config)),
         ("download", lambda: mover.move(version.version_id, "hdd", f"d-{run}")))
    fetched.unlink()
    client.delete_object(Bucket=info.bucket, Key=baseline_key)
    assert lake.intact(lake.catalog.get(version.version_id)), "the bench's moves must end on a whole copy"
    lake.tiers["hdd"].backend.delete(version.storage_key)  # the bench's lake is thrown away; keep the disk free
    LOAD.append(os.getloadavg()[0])
    done = ", ".join(f"{name} {values[-1]:.3f}s" for name, values in times.items())
    log(f"round {r + 1} (load {LOAD[-1]:.1f}): {done}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=445, help="size of the moved file in MiB (default 445)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians and min-max are reported (default 3)")
    args = parser.parse_args()
    if args.mib < 1 or args.repeat < 1:
        parser.error("--mib and --repeat must be at least 1")

    from letl.devstore import server as store
    from letl.devstore.server import client_for

    data = make_data(args.mib)
    home = OUT / f"home-{uuid.uuid4().hex[:8]}"
    log("starting SeaweedFS on 127.0.0.1")
    info = store.up(home)
    names = ("cp", "cp_sync", "move", "boto3_upload", "upload", "boto3_download", "download", "read_path")
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        configure(info, home)
        client = client_for(info)
        for r in range(args.repeat):
            one_round(r, data, info, client, times)
    finally:
        store.down(home)
        shutil.rmtree(home, ignore_errors=True)

    size = args.mib * 2**20
    median = {name: statistics.median(values) for name, values in times.items()}
    report = {
        "mib": args.mib, "repeat": args.repeat,
        "move_vs_cp": round(median["cp_sync"] / median["move"], 3),
        "upload_vs_boto3": round(median["boto3_upload"] / median["upload"], 3),
        "download_vs_boto3": round(median["boto3_download"] / median["download"], 3),
        "move_vs_plain_cp": round(median["cp"] / median["move"], 3),
        "read_path_vs_boto3": round(median["boto3_download"] / median["read_path"], 3),
        "seconds": {name: round(value, 3) for name, value in median.items()},
        "spread": {name: [round(min(values), 3), round(max(values), 3)] for name, values in times.items()},
        "gib_per_s": {name: round(size / 2**30 / value, 3) for name, value in median.items()},
        "client_cpu_seconds": {name: round(statistics.median(values), 3) for name, values in CPU.items()},
        "load_average_1min": [round(value, 2) for value in LOAD],
    }
    for label, ours, base in (("move ssd->hdd vs cp+sync", "move", "cp_sync"),
                              ("move ssd->hdd vs plain cp", "move", "cp"),
                              ("upload (move to cortx) vs boto3 upload_file", "upload", "boto3_upload"),
                              ("download (move from cortx) vs boto3 download_file", "download", "boto3_download"),
                              ("read path (cached copy) vs boto3 download_file", "read_path", "boto3_download")):
        print(f"{label}: {median[ours]:.3f}s ({report['gib_per_s'][ours]} GiB/s) vs {median[base]:.3f}s "
              f"({report['gib_per_s'][base]} GiB/s): ratio {median[base] / median[ours]:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
