"""The tier policy: what it plans (and why), that planning moves nothing, that applying is exact and
idempotent, and its Dagster face (sensor, policy job, move job) and CLI."""

import dataclasses
import json
from datetime import timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from letl.cli import main as cli
from letl.lake import policy
from letl.lake.catalog import access_log, latest, moves
from letl.lake.lake import Lake
from letl.lake.moves import Mover
from letl.lake.policy import ApplyError, PlannedMove, PolicySettings
from letl_assets.resources.tiers import LakeResource
from letl_assets.sensors import tiering

DAY = timedelta(days=1)
ONLY_WATERMARKS = PolicySettings(max_idle={})  # isolates a rule: nothing idles out


@pytest.fixture(autouse=True)
def plain_tiers(letl_env, monkeypatch):
    """pmem, ssd and hdd as POSIX directories, no object store, policy defaults."""
    monkeypatch.delenv("LETL_S3_ENDPOINT", raising=False)
    for name in ("MAX_IDLE_PMEM", "MAX_IDLE_SSD", "MAX_IDLE_HDD", "MAX_IDLE_CORTX", "PROMOTE_READS",
                 "PROMOTE_WINDOW", "SUPERSEDED_RETENTION"):
        monkeypatch.delenv(f"LETL_POLICY_{name}", raising=False)


def relake(monkeypatch, **quotas) -> Lake:
    """The same lake, seen with these tier quotas (bytes), as a new process would."""
    for name, quota in quotas.items():
        monkeypatch.setenv(f"LETL_TIER_{name.upper()}_QUOTA", str(quota))
    lake = Lake.from_env()
    assert list(lake.tiers) == ["pmem", "ssd", "hdd"]
    return lake


def write(lake, asset, tier, seed=0, partition=None, **kw):
    frame = pd.DataFrame({"x": np.random.default_rng(seed).random(2000)})
    version = lake.write_version(asset, frame, partition=partition, tier_hint=tier, strict_tier=True, **kw)
    assert version.tier == tier
    return version


def read_at(lake, version, *whens):
    with lake.catalog.engine.begin() as conn:
        conn.execute(access_log.insert(), [
            {"version_id": version.version_id, "accessed_at": when, "kind": "load"} for when in whens
        ])


def moves_of(planned):
    return [(m.version_id, m.src_tier, m.dst_tier, m.rule) for m in planned]


def snapshot(lake):
    """Everything a plan must not change: each version's row, the latest pointers, the move log."""
    with lake.catalog.engine.begin() as conn:
        pointers = sorted(tuple(r) for r in conn.execute(sa.select(latest.c.asset_key, latest.c.branch,
                                                                     latest.c.partition, latest.c.version_id)))
        log = conn.execute(sa.select(sa.func.count()).select_from(moves)).scalar_one()
    return lake.catalog.list_versions(), pointers, log


# ---------------------------------------------------------------- rules


def test_watermark_demotes_least_recently_used_until_below_low(lake, monkeypatch):
    vs = [write(lake, f"labs/a{i}", "pmem", seed=i) for i in range(5)]
    t0 = max(v.created_at for v in vs)
    # Last use: v1 never read (its creation), v3 read at day 2, v0 day 5, v4 day 7, v2 day 9.
    for v, day in ((vs[3], 2), (vs[0], 5), (vs[4], 7), (vs[2], 9)):
        read_at(lake, v, t0 + day * DAY)
    read_at(lake, vs[1], vs[1].created_at - DAY)  # a read before creation does not count as use
    total = sum(v.bytes for v in vs)
    quota = int(total / 0.95)  # 95% used: above the high watermark (90%)
    lake = relake(monkeypatch, pmem=quota)
    now = t0 + 10 * DAY

    planned = policy.plan(lake, ONLY_WATERMARKS, now=now)

    assert moves_of(planned) == [(vs[1].version_id, "pmem", "ssd", "watermark"),
                                 (vs[3].version_id, "pmem", "ssd", "watermark")]
    assert planned[0].reason.startswith("pmem above high watermark (95% of ")
    assert "least recently used" in planned[0].reason
    assert planned[0].bytes == vs[1].bytes and planned[0].asset_key == "labs/a1"
    left = total - sum(m.bytes for m in planned)
    assert left < 0.7 * quota <= left + planned[-1].bytes  # below low, and not one version further


def test_watermark_has_hysteresis_and_respects_quota_zero(lake, monkeypatch):
    vs = [write(lake, f"labs/a{i}", "pmem", seed=i) for i in range(5)]
    total = sum(v.bytes for v in vs)
    now = max(v.created_at for v in vs) + DAY
    # 85%: above the low watermark but not the high one: nothing to do.
    assert policy.plan(relake(monkeypatch, pmem=int(total / 0.85)), ONLY_WATERMARKS, now=now) == []
    assert policy.plan(relake(monkeypatch, pmem=0), ONLY_WATERMARKS, now=now) == []  # no quota
    assert len(policy.plan(relake(monkeypatch, pmem=int(total / 0.95)), ONLY_WATERMARKS, now=now)) == 2


def test_watermark_skips_unavailable_and_full_tiers(lake, monkeypatch):
    vs = [write(lake, f"labs/a{i}", "pmem", seed=i) for i in range(5)]
    now = max(v.created_at for v in vs) + DAY
    total = sum(v.bytes for v in vs)
    down = relake(monkeypatch, pmem=int(total / 0.95))
    monkeypatch.setattr(down.tiers["ssd"], "unavailable", lambda: "tier ssd unavailable: test")
    planned = policy.plan(down, ONLY_WATERMARKS, now=now)
    assert [m.dst_tier for m in planned] == ["hdd", "hdd"]

    full = relake(monkeypatch, pmem=int(total / 0.95), ssd=1)  # ssd has no room for any version
    assert [m.dst_tier for m in policy.plan(full, ONLY_WATERMARKS, now=now)] == ["hdd", "hdd"]


def test_idle_versions_sink_one_tier(lake, monkeypatch):
    ssd_idle = write(lake, "labs/ssd_idle", "ssd", seed=1)
    ssd_used = write(lake, "labs/ssd_used", "ssd", seed=2)
    pmem_used = write(lake, "labs/pmem_used", "pmem", seed=3)
    pmem_idle = write(lake, "labs/pmem_idle", "pmem", seed=4)
    hdd_idle = write(lake, "labs/hdd_idle", "hdd", seed=5)
    t0 = max(v.created_at for v in (ssd_idle, ssd_used, pmem_used, pmem_idle, hdd_idle))
    now = t0 + 40 * DAY
    read_at(lake, ssd_used, now - 10 * DAY)
    read_at(lake, pmem_used, now - DAY / 2)
    read_at(lake, pmem_idle, now - 2 * DAY)

    planned = policy.plan(lake, PolicySettings(), now=now)

    assert sorted(moves_of(planned)) == sorted([(ssd_idle.version_id, "ssd", "hdd", "idle"),
                                                (pmem_idle.version_id, "pmem", "ssd", "idle")])
    reasons = {m.version_id: m.reason for m in planned}
    assert reasons[ssd_idle.version_id] == "idle 40 days on ssd (max 30 days)"
    assert reasons[pmem_idle.version_id] == "idle 2 days on pmem (max 1 day)"

    # Settings come from LETL_POLICY_* at run time; the coldest tier never sinks further.
    monkeypatch.setenv("LETL_POLICY_MAX_IDLE_SSD", "50d")
    monkeypatch.setenv("LETL_POLICY_MAX_IDLE_HDD", "1h")
    assert moves_of(policy.plan(lake, now=now)) == [(pmem_idle.version_id, "pmem", "ssd", "idle")]


def test_idle_skips_an_unavailable_tier(lake, monkeypatch):
    idle = write(lake, "labs/idle", "pmem")
    monkeypatch.setattr(lake.tiers["ssd"], "unavailable", lambda: "tier ssd unavailable: test")
    assert moves_of(policy.plan(lake, PolicySettings(), now=idle.created_at + 2 * DAY)) == [
        (idle.version_id, "pmem", "hdd", "idle")]


def test_promotion_after_n_reads_within_the_window(lake, monkeypatch):
    hot = write(lake, "labs/hot", "ssd", seed=1)
    almost = write(lake, "labs/almost", "ssd", seed=2)
    old_reads = write(lake, "labs/old_reads", "ssd", seed=3)
    cold_hot = write(lake, "labs/cold_hot", "hdd", seed=4)
    top = write(lake, "labs/top", "pmem", seed=5)
    now = max(v.created_at for v in (hot, almost, old_reads, cold_hot, top)) + 5 * DAY
    recent = [now - timedelta(hours=h) for h in (1, 2, 3, 4, 5)]
    read_at(lake, hot, *recent[:3])
    read_at(lake, almost, *recent[:2], now - 2 * DAY, now - 3 * DAY)  # N-1 in the window, more outside
    read_at(lake, old_reads, *(now - DAY - timedelta(minutes=m) for m in (1, 2, 3, 4)))  # just outside
    read_at(lake, cold_hot, *recent)
    read_at(lake, top, *recent)  # already on the hottest tier
    read_at(lake, hot, now + timedelta(hours=1))  # after `now`: not yet happened

    planned = policy.plan(lake, PolicySettings(), now=now)

    assert sorted(moves_of(planned)) == sorted([(hot.version_id, "ssd", "pmem", "promote"),
                                                (cold_hot.version_id, "hdd", "ssd", "promote")])
    reasons = {m.version_id: m.reason for m in planned}
    assert reasons[hot.version_id] == "read 3 times in 1 day"
    assert reasons[cold_hot.version_id] == "read 5 times in 1 day"

    monkeypatch.setenv("LETL_POLICY_PROMOTE_READS", "2")
    assert {m.version_id for m in policy.plan(lake, now=now)} == {
        hot.version_id, almost.version_id, cold_hot.version_id}
    monkeypatch.setenv("LETL_POLICY_PROMOTE_READS", "3")
    monkeypatch.setenv("LETL_POLICY_PROMOTE_WINDOW", "4d")  # a wider window takes in the older reads
    assert {m.version_id for m in policy.plan(lake, now=now)} == {
        hot.version_id, almost.version_id, old_reads.version_id, cold_hot.version_id}


def test_promotion_needs_room_under_the_high_watermark(lake, monkeypatch):
    hot = write(lake, "labs/hot", "ssd", seed=1)
    now = hot.created_at + DAY
    read_at(lake, hot, *(now - timedelta(hours=h) for h in (1, 2, 3)))
    # Room under the quota but not under 90% of it: no promotion.
    assert policy.plan(relake(monkeypatch, pmem=int(hot.bytes / 0.95)), PolicySettings(), now=now) == []
    assert moves_of(policy.plan(relake(monkeypatch, pmem=int(hot.bytes / 0.85)), PolicySettings(), now=now)) == [
        (hot.version_id, "ssd", "pmem", "promote")]


def test_promotion_skips_an_unavailable_tier(lake, monkeypatch):
    hot = write(lake, "labs/hot", "hdd")
    now = hot.created_at + DAY
    read_at(lake, hot, *(now - timedelta(hours=h) for h in (1, 2, 3)))
    monkeypatch.setattr(lake.tiers["ssd"], "unavailable", lambda: "tier ssd unavailable: test")
    assert moves_of(policy.plan(lake, PolicySettings(), now=now)) == [(hot.version_id, "hdd", "pmem", "promote")]


def test_superseded_versions_go_to_the_coldest_tier_after_retention(lake):
    first = write(lake, "labs/x", "pmem", seed=1, partition="2024-01-01")
    second = write(lake, "labs/x", "ssd", seed=2, partition="2024-01-01")
    third = write(lake, "labs/x", "ssd", seed=3, partition="2024-01-01")
    other = write(lake, "labs/x", "ssd", seed=4, partition="2024-02-01")  # only version of its partition
    settings = PolicySettings(max_idle={})

    assert policy.plan(lake, settings, now=third.created_at + 6 * DAY) == []
    planned = policy.plan(lake, settings, now=third.created_at + 8 * DAY)
    assert sorted(moves_of(planned)) == sorted([(first.version_id, "pmem", "hdd", "superseded"),
                                                (second.version_id, "ssd", "hdd", "superseded")])
    assert {m.reason for m in planned} == {"superseded 8 days ago"}
    assert lake.latest("labs/x", "2024-01-01").version_id == third.version_id
    assert other.version_id not in {m.version_id for m in planned}


def test_superseded_by_a_version_on_another_branch_does_not_count(lake):
    main = write(lake, "labs/x", "ssd", seed=1)
    write(lake, "labs/x", "ssd", seed=2, branch="feature")
    assert policy.plan(lake, PolicySettings(max_idle={}), now=main.created_at + 30 * DAY) == []


def test_a_version_moves_at_most_once_per_plan(lake, monkeypatch):
    # Idle, superseded and in the LRU of an over-full tier: planned once, by the first rule.
    old = write(lake, "labs/x", "pmem", seed=1)
    new = write(lake, "labs/x", "pmem", seed=2)
    lake = relake(monkeypatch, pmem=int((old.bytes + new.bytes) / 0.95))
    planned = policy.plan(lake, PolicySettings(), now=new.created_at + 10 * DAY)
    assert [m.version_id for m in planned].count(old.version_id) == 1
    assert moves_of(planned)[0] == (old.version_id, "pmem", "ssd", "watermark")
    assert len({m.version_id for m in planned}) == len(planned)


def test_settings_from_env(monkeypatch):
    assert PolicySettings.from_env({}) == PolicySettings()
    s = PolicySettings.from_env({"LETL_POLICY_MAX_IDLE_SSD": "12h", "LETL_POLICY_MAX_IDLE_PMEM": "none",
                                 "LETL_POLICY_PROMOTE_READS": "5", "LETL_POLICY_PROMOTE_WINDOW": "90m",
                                 "LETL_POLICY_SUPERSEDED_RETENTION": "2w"})
    assert s.max_idle == {"pmem": None, "ssd": 12 * 3600.0, "hdd": None, "cortx": None}
    assert (s.promote_reads, s.promote_window, s.superseded_retention) == (5, 5400.0, 14 * 86400.0)
    with pytest.raises(ValueError, match="not a duration"):
        PolicySettings.from_env({"LETL_POLICY_MAX_IDLE_SSD": "soon"})
    with pytest.raises(ValueError, match="at least 1"):
        PolicySettings.from_env({"LETL_POLICY_PROMOTE_READS": "0"})


# ---------------------------------------------------------------- plan vs apply


@pytest.fixture
def busy_lake(lake):
    """A lake where every rule has work: superseded, idle, hot; with lineage between versions."""
    up_old = write(lake, "labs/up", "ssd", seed=1, partition="2024-01-01")
    up = write(lake, "labs/up", "ssd", seed=2, partition="2024-01-01")
    down = write(lake, "labs/down", "pmem", seed=3, partition="2024-01-01", upstream_ids=[up.version_id, up_old.version_id])
    hot = write(lake, "labs/hot", "hdd", seed=4)
    now = max(v.created_at for v in (up_old, up, down, hot)) + 10 * DAY
    read_at(lake, up, now - 5 * DAY)
    read_at(lake, hot, *(now - timedelta(hours=h) for h in (1, 2, 3)))
    return {"lake": lake, "now": now, "up_old": up_old, "up": up, "down": down, "hot": hot}


def test_plan_moves_nothing_and_apply_moves_exactly_the_plan(busy_lake):
    lake, now = busy_lake["lake"], busy_lake["now"]
    before = snapshot(lake)
    planned = policy.plan(lake, PolicySettings(), now=now)
    assert sorted(moves_of(planned)) == sorted([
        (busy_lake["down"].version_id, "pmem", "ssd", "idle"),
        (busy_lake["hot"].version_id, "hdd", "ssd", "promote"),
        (busy_lake["up_old"].version_id, "ssd", "hdd", "superseded"),
    ])
    assert snapshot(lake) == before  # planning moved nothing, logged no move
    assert policy.plan(lake, PolicySettings(), now=now) == planned  # and is deterministic

    results = policy.apply(lake, planned, "test-plan")
    assert [(r.version_id, r.src_tier, r.dst_tier, r.state, r.repeated) for r in results] == [
        (m.version_id, m.src_tier, m.dst_tier, "done", False) for m in planned]
    assert [r.request_id for r in results] == [f"test-plan:{m.version_id}:{m.dst_tier}" for m in planned]
    after, pointers, _ = snapshot(lake)
    dst = {m.version_id: m.dst_tier for m in planned}
    old = {v.version_id: v for v in before[0]}
    for v in after:
        assert v.tier == dst.get(v.version_id, old[v.version_id].tier)
        # Only the location changed: same id, asset key, partition, bytes, sha256.
        assert v == dataclasses.replace(old[v.version_id], tier=v.tier)
        assert lake.tiers[v.tier].backend.exists(v.storage_key)
        for name in set(lake.tiers) - {v.tier}:
            assert not lake.tiers[name].backend.exists(v.storage_key)
    assert pointers == before[1]
    assert {u.version_id for u in lake.catalog.upstreams(busy_lake["down"].version_id)} == {
        busy_lake["up"].version_id, busy_lake["up_old"].version_id}
    assert lake.read_table(lake.catalog.get(busy_lake["up_old"].version_id)).num_rows == 2000

    again = policy.apply(lake, planned, "test-plan")
    assert all(r.repeated for r in again) and len(again) == len(planned)
    assert snapshot(lake)[:2] == (after, pointers)
    # Only the hot version wants more: it rises one tier per plan.
    assert moves_of(policy.plan(lake, PolicySettings(), now=now)) == [
        (busy_lake["hot"].version_id, "ssd", "pmem", "promote")]


def test_apply_goes_on_past_a_failing_move_and_reports_it(busy_lake):
    lake = busy_lake["lake"]
    hot = busy_lake["hot"]
    bogus = PlannedMove("no-such-version", "labs/ghost", "", "ssd", "hdd", "test", 1)
    real = PlannedMove(hot.version_id, hot.asset_key, "", "hdd", "ssd", "test", hot.bytes)
    with pytest.raises(ApplyError, match="1 of 2 planned move") as caught:
        policy.apply(lake, [bogus, real], "p")
    assert [r.version_id for r in caught.value.results] == [hot.version_id]
    assert [m.version_id for m, _ in caught.value.failures] == ["no-such-version"]
    assert lake.catalog.get(hot.version_id).tier == "ssd"


def test_plan_key_is_stable_until_the_versions_move(busy_lake):
    lake, now = busy_lake["lake"], busy_lake["now"]
    planned = policy.plan(lake, PolicySettings(), now=now)
    key = policy.plan_key(lake, planned)
    assert policy.plan_key(lake, policy.plan(lake, PolicySettings(), now=now)) == key
    assert policy.plan_key(lake, planned[:1]) != key
    policy.apply(lake, planned, "k")
    assert policy.plan_key(lake, planned) != key  # the same moves wanted again later are new requests


# ---------------------------------------------------------------- pins


def test_pins_stop_the_policy_undoing_twelve_manual_demotions(lake):
    """The incident: an operator demoted twelve busy partitions to hdd by hand, and the next tick
    promoted every one back. With the asset pinned to hdd the plan leaves them, and says why."""
    hot = [write(lake, "labs/busy", "ssd", seed=i, partition=f"2024-{i + 1:02d}-01") for i in range(12)]
    now = max(v.created_at for v in hot) + DAY
    for v in hot:
        read_at(lake, v, *(now - timedelta(hours=h) for h in (1, 2, 3)))
        Mover(lake).move(v.version_id, "hdd", f"by-hand-{v.version_id}")
    ids = sorted(v.version_id for v in hot)
    assert sorted(moves_of(policy.plan(lake, PolicySettings(), now=now))) == [(i, "hdd", "ssd", "promote") for i in ids]

    lake.catalog.pin("labs/busy", "main", "hdd", pinned_by="operator", reason="keep off ssd")
    planned, held = policy.plan_with_pins(lake, PolicySettings(), now=now)
    assert planned == [] and sorted(moves_of(held)) == [(i, "hdd", "ssd", "promote") for i in ids]
    assert policy.apply(lake, planned, "tick") == []
    assert {lake.catalog.get(i).tier for i in ids} == {"hdd"}


def test_a_pinned_version_is_skipped_by_the_watermark_and_the_next_one_demoted(lake, monkeypatch):
    a = write(lake, "labs/a", "pmem", seed=1)  # least recently used: the one the watermark would take
    b = write(lake, "labs/b", "pmem", seed=2)
    lake = relake(monkeypatch, pmem=a.bytes + b.bytes)
    assert moves_of(policy.plan(lake, ONLY_WATERMARKS, now=b.created_at))[0][0] == a.version_id
    lake.catalog.pin("labs/a", "main", "pmem", "", a.version_id)
    planned, held = policy.plan_with_pins(lake, ONLY_WATERMARKS, now=b.created_at)
    assert moves_of(planned) == [(b.version_id, "pmem", "ssd", "watermark")]
    assert moves_of(held) == [(a.version_id, "pmem", "ssd", "watermark")]


def test_a_version_pinned_elsewhere_is_moved_to_its_tier_and_only_there(lake):
    old = write(lake, "labs/x", "ssd", seed=1, partition="2024-01-01")
    lake.catalog.pin("labs/x", "main", "hdd", partition="2024-01-01")
    new = write(lake, "labs/x", "ssd", seed=2, partition="2024-01-01")  # written after the pin: held too
    other = write(lake, "labs/x", "ssd", seed=3, partition="2024-02-01")  # another partition: not held
    planned = policy.plan(lake, PolicySettings(max_idle={}), now=new.created_at)
    assert moves_of(planned) == [(new.version_id, "ssd", "hdd", "pin")]
    assert planned[0].reason == "pinned to hdd (latest:labs/x@main?partition=2024-01-01)"
    # Superseded, the old version is no longer held by the asset's pin: the policy may move it.
    later = policy.plan(lake, PolicySettings(max_idle={}), now=new.created_at + 8 * DAY)
    assert sorted(moves_of(later)) == sorted([(new.version_id, "ssd", "hdd", "pin"),
                                              (old.version_id, "ssd", "hdd", "superseded")])
    assert other.version_id not in {m.version_id for m in later}


def test_a_version_pin_outranks_its_assets_pin_and_unpin_releases_it(lake):
    v = write(lake, "labs/x", "ssd", seed=1)
    lake.catalog.pin("labs/x", "main", "hdd")
    lake.catalog.pin("labs/x", "main", "ssd", "", v.version_id)
    assert policy.plan(lake, PolicySettings(max_idle={}), now=v.created_at) == []
    assert lake.catalog.unpin(f"version:{v.version_id}")["tier"] == "ssd"
    assert moves_of(policy.plan(lake, PolicySettings(max_idle={}), now=v.created_at)) == [
        (v.version_id, "ssd", "hdd", "pin")]
    assert lake.catalog.unpin(f"version:{v.version_id}") is None


# ---------------------------------------------------------------- Dagster


def over_full_pmem(lake, monkeypatch):
    """Two versions on pmem filling it to 100%: the plan demotes one (the older, never read)."""
    a = write(lake, "labs/a", "pmem", seed=1, partition="2024-01-01")
    b = write(lake, "labs/b", "pmem", seed=2)
    monkeypatch.setenv("LETL_TIER_PMEM_QUOTA", str(a.bytes + b.bytes))
    return a, b


def observations(result):
    return [(e.asset_key, e.partition, {k: v.value for k, v in e.metadata.items()})
            for e in (ev.event_specific_data.asset_observation for ev in result.get_asset_observation_events())]


def test_definitions_load_with_sensor_running_and_in_process_jobs():
    defs = dg.Definitions(jobs=tiering.jobs, sensors=tiering.sensors, resources={"lake": LakeResource()})
    dg.Definitions.validate_loadable(defs)
    assert tiering.tier_policy_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert tiering.tier_policy_sensor.minimum_interval_seconds == 300
    assert {j.name for j in tiering.jobs} == {"tier_policy_job", "tier_move_job"}
    assert all(j.executor_def is dg.in_process_executor for j in tiering.jobs)


def test_tier_move_job_moves_a_version(lake):
    v = write(lake, "labs/a", "pmem", partition="2024-01-01")
    config = {"ops": {"move_version": {"config": {"version_id": v.version_id, "to_tier": "hdd", "request_id": "j-1"}}}}
    result = tiering.tier_move_job.execute_in_process(run_config=config, resources={"lake": LakeResource()})
    assert result.success
    assert lake.catalog.get(v.version_id).tier == "hdd"
    [(key, partition, meta)] = observations(result)
    assert (key, partition) == (dg.AssetKey(["labs", "a"]), "2024-01-01")
    assert (meta["letl/tier"], meta["letl/from_tier"], meta["letl/version_id"], meta["letl/request_id"]) == (
        "hdd", "pmem", v.version_id, "j-1")

    again = tiering.tier_move_job.execute_in_process(run_config=config, resources={"lake": LakeResource()})
    assert again.success and observations(again)[0][2]["letl/repeated"] is True

    bad = {"ops": {"move_version": {"config": {"version_id": v.version_id, "to_tier": "tape", "request_id": "j-2"}}}}
    failed = tiering.tier_move_job.execute_in_process(run_config=bad, resources={"lake": LakeResource()},
                                                      raise_on_error=False)
    assert not failed.success and lake.catalog.get(v.version_id).tier == "hdd"


def test_tier_policy_job_dry_run_moves_nothing_then_applies(lake, monkeypatch):
    a, b = over_full_pmem(lake, monkeypatch)
    before = snapshot(lake)
    dry = tiering.tier_policy_job.execute_in_process(
        run_config={"ops": {"apply_tier_policy": {"config": {"dry_run": True}}}}, resources={"lake": LakeResource()})
    assert dry.success and observations(dry) == []
    assert snapshot(lake) == before

    run = tiering.tier_policy_job.execute_in_process(resources={"lake": LakeResource()})  # dry_run defaults to False
    assert run.success
    assert lake.catalog.get(a.version_id).tier == "ssd" and lake.catalog.get(b.version_id).tier == "pmem"
    [(key, partition, meta)] = observations(run)
    assert (key, partition, meta["letl/tier"], meta["letl/from_tier"], meta["letl/version_id"], meta["letl/rule"]) == (
        dg.AssetKey(["labs", "a"]), "2024-01-01", "ssd", "pmem", a.version_id, "watermark")
    assert meta["letl/reason"].startswith("pmem above high watermark (100% of")
    assert lake.latest("labs/a", "2024-01-01").version_id == a.version_id


def test_sensor_requests_a_run_only_when_the_plan_is_not_empty(lake, monkeypatch):
    def tick():
        return tiering.tier_policy_sensor(dg.build_sensor_context(resources={"lake": LakeResource()}))

    assert isinstance(tick(), dg.SkipReason)  # empty lake
    a, _ = over_full_pmem(lake, monkeypatch)
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == tick().run_key  # unchanged plan: a pending run is not requested twice
    key = request.tags[tiering.PLAN_KEY_TAG]
    assert request.run_key == f"tier-policy-{key}" and request.tags["letl/planned_moves"] == "1"

    run = tiering.tier_policy_job.execute_in_process(run_config=request.run_config, tags=request.tags,
                                                     resources={"lake": LakeResource()})
    assert run.success and lake.catalog.get(a.version_id).tier == "ssd"
    assert Mover(lake).get(f"policy:{key}:{a.version_id}:ssd").state == "done"
    assert isinstance(tick(), dg.SkipReason)  # satisfied


# ---------------------------------------------------------------- CLI


def test_cli_plan_shows_and_apply_moves(lake, monkeypatch, capsys):
    a, b = over_full_pmem(lake, monkeypatch)
    assert cli.main(["tier", "plan", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["held"], shown["unmet"], shown["pins"]) == ([], [], [])
    [row] = shown["planned"]
    assert (row["version_id"], row["src_tier"], row["dst_tier"], row["rule"]) == (a.version_id, "pmem", "ssd", "watermark")
    assert lake.catalog.get(a.version_id).tier == "pmem"

    assert cli.main(["tier", "plan"]) == 0
    out = capsys.readouterr().out
    assert a.version_id in out and "pmem above high watermark" in out and "nothing moved" in out
    assert lake.catalog.get(a.version_id).tier == "pmem"

    assert cli.main(["tier", "plan", "--apply", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["planned"]
    assert (row["version_id"], row["state"], row["repeated"]) == (a.version_id, "done", False)
    assert lake.catalog.get(a.version_id).tier == "ssd" and lake.catalog.get(b.version_id).tier == "pmem"

    assert cli.main(["tier", "plan"]) == 0
    assert "nothing to move" in capsys.readouterr().out
