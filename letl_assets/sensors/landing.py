"""Landing sensor: a month whose drops are not what its current results were built from requests a run."""

import hashlib
import json
from collections import defaultdict

import dagster as dg

from letl.labs.reconcile import month_problem, recorded_sources
from letl.lake import names
from letl_assets.assets.labs import LAB_DROPS, lab_results
from letl_assets.resources.landing import LandingZone
from letl_assets.resources.tiers import LakeResource


def month_state(drops) -> str:
    """One state of a month's drop files: the run key of its run and what the cursor remembers."""
    return hashlib.sha256("\n".join(sorted(d.signature for d in drops)).encode()).hexdigest()[:16]


def _seen_months(cursor: dict, by_month: dict) -> dict[str, str]:
    """partition -> state from a cursor; a cursor of the earlier formats (every file's signature, flat
    or under "files") counts a month as seen when each of its files now has the signature it had."""
    if "months" in cursor:
        return cursor["months"]
    files = cursor.get("files", cursor)
    return {partition: month_state(drops) for partition, drops in by_month.items()
            if all(files.get(d.relpath) == d.signature for d in drops)}


@dg.sensor(
    target=[lab_results],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lab_drops_sensor(context: dg.SensorEvaluationContext, landing: LandingZone, lake: LakeResource) -> dg.SensorResult:
    """Requests one run per month whose drop files changed since the last tick and whose results are
    not current for them, by the rule `letl run` skips a month by (``month_problem``): after `letl run`
    (or with a lost cursor) nothing is requested for a month it built.

    The cursor holds one short state hash per month present in the landing zone, so it stays as small
    as the landing zone's list of months; months whose drops are gone leave it. The run key is that
    state, so one state of a month's content is processed once even if the cursor is lost. A month with
    a file modified in the last ``settle_seconds`` waits for the next tick. Files under
    labs/ that are no drop are logged with their reason when first seen (or when the reason changes),
    not on every tick.
    """
    cursor = json.loads(context.cursor) if context.cursor else {}
    scan = landing.scan()
    ignored = {i.relpath: i.reason for i in scan.ignored}
    for relpath, reason in sorted(ignored.items()):
        if cursor.get("ignored", {}).get(relpath) != reason:
            context.log.warning(f"ignored {relpath}: {reason}")
    by_month = defaultdict(list)
    for drop in scan.drops:
        by_month[drop.partition_key].append(drop)
    # A month with a file still being written waits for it: a run now would build it without that file.
    uploading = {d.partition_key for d in scan.unsettled}
    seen = _seen_months(cursor, by_month)
    the_lake = lake.get_lake()
    months, requests, events = {}, [], []
    for partition, drops in sorted(by_month.items()):
        if partition in uploading:
            if partition in seen:
                months[partition] = seen[partition]
            continue
        months[partition] = state = month_state(drops)
        if seen.get(partition) == state:
            continue
        problem = month_problem(the_lake, partition, [d.signature for d in drops])
        if problem is None:
            continue
        latest = the_lake.latest(names.LAB_RESULTS, partition)
        built = set(recorded_sources(latest)) if latest else set()
        changed = [d for d in drops if d.signature not in built]
        requests.append(dg.RunRequest(
            run_key=f"labs-{partition}-{state}",
            partition_key=partition,
            tags={"letl/changed_files": ",".join(d.relpath for d in changed)[:1000], "letl/reason": problem[:200]},
        ))
        events.extend(
            dg.AssetMaterialization(
                LAB_DROPS, partition=partition, metadata={"path": d.relpath, "bytes": d.size, "hospital_id": d.hospital_id}
            )
            for d in changed
        )
    if requests:
        context.log.info(f"{len(requests)} month(s) with new or changed drops: {[r.partition_key for r in requests]}")
    cursor = {"months": months, "ignored": ignored}
    return dg.SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(cursor, sort_keys=True))
