"""lab_drops_sensor: one run per month whose drops are new or changed, with a content-derived run key."""

import json
import os
import time

import dagster as dg

from letl_assets.assets.labs import LAB_DROPS
from letl_assets.resources.landing import LandingZone
from letl_assets.resources.tiers import LakeResource
from letl_assets.sensors.landing import lab_drops_sensor

HOUR = 3600


def tick(cursor=None, settle_seconds=0):
    resources = {"landing": LandingZone(settle_seconds=settle_seconds), "lake": LakeResource()}
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        result = lab_drops_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def drop(landing, relpath, text="hospital_id,patient_id\nH001,MRN0000001\n", age=HOUR):
    """A landing file, made to look settled (modified `age` seconds ago) unless age=0."""
    path = landing / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def requests(result):
    return [(r.partition_key, r.run_key) for r in result.run_requests]


def test_new_file_requests_its_month_once(letl_env):
    drop(letl_env["landing"], "labs/H001/2024-03.csv")
    first = tick()
    [(partition, run_key)] = requests(first)
    assert partition == "2024-03-01"
    assert run_key.startswith("labs-2024-03-01-")
    assert first.run_requests[0].tags["letl/changed_files"] == "labs/H001/2024-03.csv"
    events = first.asset_events
    assert [(e.asset_key, e.partition) for e in events] == [(LAB_DROPS, "2024-03-01")]
    assert events[0].metadata["path"].value == "labs/H001/2024-03.csv"
    assert list(json.loads(first.cursor)["months"]) == ["2024-03-01"]

    assert requests(tick()) == [(partition, run_key)]  # deterministic: a lost cursor gives the same run key
    again = tick(first.cursor)
    assert requests(again) == [] and again.asset_events == []
    assert json.loads(again.cursor) == json.loads(first.cursor)


def test_late_historic_month_is_requested(letl_env):
    landing = letl_env["landing"]
    drop(landing, "labs/H001/2024-05.csv")
    drop(landing, "labs/H001/2024-06.csv")
    cursor = tick().cursor
    drop(landing, "labs/H002/2023-11.csv.gz", text="late")
    late = tick(cursor)
    assert [p for p, _ in requests(late)] == ["2023-11-01"]
    assert [e.partition for e in late.asset_events] == ["2023-11-01"]
    assert requests(tick(late.cursor)) == []


def test_changed_file_gets_a_new_run_key(letl_env):
    path = drop(letl_env["landing"], "labs/H001/2024-03.csv")
    first = tick()
    [(_, first_key)] = requests(first)

    path.write_text(path.read_text() + "H001,MRN0000002\n")  # new size and mtime
    changed = tick(first.cursor)
    [(partition, changed_key)] = requests(changed)
    assert partition == "2024-03-01" and changed_key != first_key

    past = time.time() - 2 * HOUR  # same size, only the modification time differs
    os.utime(path, (past, past))
    touched = tick(changed.cursor)
    [(_, touched_key)] = requests(touched)
    assert touched_key not in (first_key, changed_key)
    assert requests(tick(touched.cursor)) == []


def test_two_files_of_one_month_make_one_request(letl_env):
    landing = letl_env["landing"]
    drop(landing, "labs/H001/2024-03.csv")
    drop(landing, "labs/H002/2024-03.csv.gz", text="gz")
    drop(landing, "labs/H002/2024-04.csv")
    result = tick()
    assert [p for p, _ in requests(result)] == ["2024-03-01", "2024-04-01"]
    march = result.run_requests[0]
    assert set(march.tags["letl/changed_files"].split(",")) == {"labs/H001/2024-03.csv", "labs/H002/2024-03.csv.gz"}
    assert sorted(e.partition for e in result.asset_events) == ["2024-03-01", "2024-03-01", "2024-04-01"]

    # One changed file re-requests its month only, keyed on the state of both of its files.
    drop(landing, "labs/H002/2024-03.csv.gz", text="gz, re-sent")
    [(partition, run_key)] = requests(tick(result.cursor))
    assert partition == "2024-03-01" and run_key != march.run_key


def test_settle_seconds_skips_a_file_being_written(letl_env):
    landing = letl_env["landing"]
    path = drop(landing, "labs/H001/2024-03.csv", age=0)
    fresh = tick(settle_seconds=HOUR)
    assert requests(fresh) == [] and fresh.asset_events == []
    assert json.loads(fresh.cursor)["months"] == {}

    past = time.time() - 2 * HOUR
    os.utime(path, (past, past))
    [(partition, _)] = requests(tick(fresh.cursor, settle_seconds=HOUR))
    assert partition == "2024-03-01"


def test_a_month_waits_while_one_of_its_files_is_still_being_written(letl_env):
    landing = letl_env["landing"]
    drop(landing, "labs/H001/2024-03.csv")
    path = drop(landing, "labs/H002/2024-03.csv", age=0)
    drop(landing, "labs/H001/2024-04.csv")
    waiting = tick(settle_seconds=HOUR)
    assert [p for p, _ in requests(waiting)] == ["2024-04-01"]  # not March without H002's file
    past = time.time() - 2 * HOUR
    os.utime(path, (past, past))
    [request] = tick(waiting.cursor, settle_seconds=HOUR).run_requests
    assert request.partition_key == "2024-03-01"
    assert set(request.tags["letl/changed_files"].split(",")) == {"labs/H001/2024-03.csv", "labs/H002/2024-03.csv"}


def test_files_that_are_no_drop_are_logged_once_with_their_reason(letl_env, capsys):
    landing = letl_env["landing"]
    for relpath in (
        "labs/2024-03.csv",  # no hospital directory
        "labs/H001/2024-13.csv",
        "labs/H001/03-2024.csv",
        "labs/H001/2024-03.txt",
        "labs/H001/2024-03.csv.bak",
        "labs/H001/2024-03.csv.gz.part",
        "labs/H001/.2024-03.csv.abc123.tmp",
        "labs/H001/notes.csv",
        "labs/H 001/2024-03.csv",  # not a hospital id
        "labs/H001/old/2024-03.csv",
        "radiology/H001/2024-03.csv",  # outside labs/: another pipeline's
        "H001/2024-03.csv",
    ):
        drop(landing, relpath)
    (landing / "labs" / "H001" / "2024-04.csv").mkdir()  # a directory, not a file
    capsys.readouterr()
    ignored = tick()
    assert requests(ignored) == [] and ignored.asset_events == []
    err = capsys.readouterr().err.splitlines()
    logged = {line.split(" - WARNING - ", 1)[1] for line in err if " - WARNING - ignored " in line}
    expected = {"labs/2024-03.csv", "labs/H001/2024-13.csv", "labs/H001/03-2024.csv", "labs/H001/2024-03.txt",
                "labs/H001/2024-03.csv.bak", "labs/H001/2024-03.csv.gz.part", "labs/H001/.2024-03.csv.abc123.tmp",
                "labs/H001/notes.csv", "labs/H 001/2024-03.csv", "labs/H001/old/2024-03.csv"}
    assert {m.split(": ", 1)[0].removeprefix("ignored ") for m in logged} == expected
    assert "ignored labs/H001/old/2024-03.csv: in a nested folder: drops go directly in labs/<hospital_id>/" in logged
    assert set(json.loads(ignored.cursor)["ignored"]) == expected

    drop(landing, "labs/H001/2024-03.csv")
    picked = tick(ignored.cursor)
    assert [p for p, _ in requests(picked)] == ["2024-03-01"]
    assert list(json.loads(picked.cursor)["months"]) == ["2024-03-01"]
    assert " - WARNING - ignored " not in capsys.readouterr().err, "logged once, not on every tick"


def test_a_second_name_for_the_same_month_is_refused(letl_env):
    landing = letl_env["landing"]
    drop(landing, "labs/H001/2024-3.csv")  # accepted as 2024-03 while it is the only name
    first = tick()
    assert [p for p, _ in requests(first)] == ["2024-03-01"]
    drop(landing, "labs/H001/2024-03.CSV")
    drop(landing, "labs/H001/2024-03.csv")
    second = tick(first.cursor)
    [request] = second.run_requests  # the month's drop is now another file: a new state
    assert request.partition_key == "2024-03-01" and request.tags["letl/changed_files"] == "labs/H001/2024-03.csv"
    refused = json.loads(second.cursor)["ignored"]
    assert set(refused) == {"labs/H001/2024-03.CSV", "labs/H001/2024-3.csv"}
    second = "second file for H001 2024-03 (labs/H001/2024-03.csv is the drop)"
    assert all(r.startswith(second) for r in refused.values())


def test_cursors_of_the_earlier_per_file_formats_are_read(letl_env):
    landing = letl_env["landing"]
    drop(landing, "labs/H001/2024-03.csv")
    path = drop(landing, "labs/H001/2024-04.csv")
    files = {d.relpath: d.signature for d in LandingZone(settle_seconds=0).drops()}
    for old in (files, {"files": files, "ignored": {}}):
        assert requests(tick(json.dumps(old))) == []
    path.write_text(path.read_text() + "H001,MRN0000002\n")
    for old in (files, {"files": files, "ignored": {}}):
        assert [p for p, _ in requests(tick(json.dumps(old)))] == ["2024-04-01"]


def test_the_cursor_holds_one_state_per_month_present(letl_env):
    landing = letl_env["landing"]
    paths = [drop(landing, f"labs/H00{h}/2024-0{m}.csv") for h in (1, 2, 3) for m in (3, 4)]
    first = json.loads(tick().cursor)["months"]
    assert list(first) == ["2024-03-01", "2024-04-01"] and all(len(state) == 16 for state in first.values())
    for path in paths:
        if path.name == "2024-03.csv":
            path.unlink()
    assert list(json.loads(tick(json.dumps({"months": first})).cursor)["months"]) == ["2024-04-01"]


def test_any_month_from_1900_to_now_is_requested_and_months_outside_are_refused(letl_env, capsys):
    from datetime import datetime, timezone

    from letl_assets.assets.labs import MONTHLY

    landing = letl_env["landing"]
    now = datetime.now(timezone.utc)
    current, future = f"{now:%Y-%m}", f"{now.year + (now.month == 12):04d}-{now.month % 12 + 1:02d}"
    for month in ("1900-01", "2005-07", current, "1899-12", future):
        drop(landing, f"labs/H001/{month}.csv")
    capsys.readouterr()
    result = tick()
    partitions = [p for p, _ in requests(result)]
    assert partitions == ["1900-01-01", "2005-07-01", f"{current}-01"]
    assert all(MONTHLY.has_partition_key(p) for p in partitions)  # each request names a real partition
    assert not MONTHLY.has_partition_key(f"{future}-01") and not MONTHLY.has_partition_key("1899-12-01")
    refused = json.loads(result.cursor)["ignored"]
    assert set(refused) == {"labs/H001/1899-12.csv", f"labs/H001/{future}.csv"}
    assert refused["labs/H001/1899-12.csv"].startswith("dated 1899-12, before 1900-01")
    err = capsys.readouterr().err
    assert f"ignored labs/H001/{future}.csv: dated {future}, a month that has not begun" in err
