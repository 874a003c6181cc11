"""Landing sensor: a new or changed drop requests a run of its month."""

import hashlib
import json
from collections import defaultdict

import dagster as dg

from letl_assets.assets.labs import LAB_DROPS, lab_results
from letl_assets.resources.landing import LandingZone


@dg.sensor(
    target=[lab_results],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lab_drops_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    """Requests one run per month whose drop files are new or changed since the last tick.

    The cursor maps each file to its (mtime, size) signature, so a late historic
    month is seen like any other. The run key hashes every file of the month, so one
    state of a month's content is processed exactly once, even if the cursor is lost.
    Files under labs/ that are no drop are logged with their reason when first seen (or
    when the reason changes), not on every tick.
    """
    cursor = json.loads(context.cursor) if context.cursor else {}
    # A cursor from before ignored files were remembered is the flat map of files.
    seen: dict[str, str] = cursor["files"] if "files" in cursor else cursor
    scan = landing.scan()
    ignored = {i.relpath: i.reason for i in scan.ignored}
    for relpath, reason in sorted(ignored.items()):
        if cursor.get("ignored", {}).get(relpath) != reason:
            context.log.warning(f"ignored {relpath}: {reason}")
    by_month = defaultdict(list)
    for drop in scan.drops:
        by_month[drop.partition_key].append(drop)
    changed = {
        partition: [d for d in drops if seen.get(d.relpath) != d.signature]
        for partition, drops in by_month.items()
    }
    requests, events = [], []
    for partition, new in sorted(changed.items()):
        if not new:
            continue
        state = "\n".join(sorted(d.signature for d in by_month[partition]))
        requests.append(
            dg.RunRequest(
                run_key=f"labs-{partition}-{hashlib.sha256(state.encode()).hexdigest()[:16]}",
                partition_key=partition,
                tags={"letl/changed_files": ",".join(d.relpath for d in new)[:1000]},
            )
        )
        events.extend(
            dg.AssetMaterialization(
                LAB_DROPS, partition=partition, metadata={"path": d.relpath, "bytes": d.size, "hospital_id": d.hospital_id}
            )
            for d in new
        )
        seen.update({d.relpath: d.signature for d in new})
    if requests:
        context.log.info(f"{len(requests)} month(s) with new or changed drops: {[r.partition_key for r in requests]}")
    cursor = {"files": seen, "ignored": ignored}
    return dg.SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(cursor, sort_keys=True))
