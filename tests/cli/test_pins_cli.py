"""`letl tier pin`, `unpin` and `pins` as an operator runs them, and `letl tier plan` showing what pins hold."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from letl.cli import main as cli
from letl.lake.catalog import access_log, utcnow
from letl.lake.config import format_size

LETL = str(Path(sys.executable).parent / "letl")


@pytest.fixture
def letl(capsys):
    """`letl` in this process, answering as the process would (code, stdout, stderr)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


def write(lake, partition: str, tier: str = "ssd", seed: int = 0):
    frame = pd.DataFrame({"a": range(seed, seed + 10)})
    return lake.write_version("labs/cli", frame, partition=partition, tier_hint=tier, strict_tier=True)


def read_often(lake, version) -> None:
    """Three reads within the last hours: the policy wants to promote the version."""
    now = utcnow()
    with lake.catalog.engine.begin() as conn:
        conn.execute(access_log.insert(), [{"version_id": version.version_id, "kind": "load",
                                            "accessed_at": now - timedelta(minutes=m)} for m in (1, 2, 3)])


def test_a_manual_demotion_pinned_through_the_real_letl_survives_the_plan(lake):
    version = write(lake, "2024-01-01")
    read_often(lake, version)
    env = dict(os.environ)

    pinned = subprocess.run([LETL, "tier", "pin", version.version_id, "--tier", "hdd", "--reason", "cold storage audit",
                             "--request-id", "pin-1"], env=env, capture_output=True, text=True)
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.splitlines() == [
        f"pinned version:{version.version_id} to hdd: the tier policy leaves it there",
        f"pin-1: {version.version_id} ssd -> hdd: done"]
    assert lake.catalog.get(version.version_id).tier == "hdd"

    plan = subprocess.run([LETL, "tier", "plan"], env=env, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0] == "tier policy: nothing to move"
    assert "pinned, left alone (1): the policy would otherwise move these" in lines
    held = next(line for line in lines if line.startswith("labs/cli "))
    assert version.version_id in held and "hdd -> ssd" in held and "read 3 times in 1 day" in held
    assert "pins (1):" in lines and any(f"version:{version.version_id}" in line and "cold storage audit" in line
                                        for line in lines)

    listed = subprocess.run([LETL, "tier", "pins", "--json"], env=env, capture_output=True, text=True, check=True)
    [pin] = json.loads(listed.stdout)
    assert (pin["target"], pin["tier"], pin["holds"], pin["reason"]) == (
        f"version:{version.version_id}", "hdd", 1, "cold storage audit")

    unpinned = subprocess.run([LETL, "tier", "unpin", version.version_id], env=env, capture_output=True, text=True)
    assert unpinned.returncode == 0 and "was on hdd" in unpinned.stdout
    assert lake.catalog.list_pins() == []


def test_pinning_an_asset_moves_its_latest_versions_and_holds_later_ones(lake, letl):
    jan, feb = write(lake, "2024-01-01"), write(lake, "2024-02-01", tier="hdd")
    out = letl("tier", "pin", "labs.cli", "--tier", "hdd", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["pin"]["target"] == "latest:labs/cli@main" and result["pin"]["partition"] is None
    assert [(m["version_id"], m["src_tier"], m["dst_tier"]) for m in result["moves"]] == [(jan.version_id, "ssd", "hdd")]
    assert {lake.catalog.get(v.version_id).tier for v in (jan, feb)} == {"hdd"}

    later = write(lake, "2024-01-01", seed=5)  # a new latest version of a held partition, on ssd
    plan = json.loads(letl("tier", "plan", "--json").stdout)
    assert [(m["version_id"], m["dst_tier"], m["rule"]) for m in plan["planned"]] == [(later.version_id, "hdd", "pin")]
    assert (plan["held"], plan["unmet"]) == ([], [])
    assert [(p["target"], p["holds"], p["unmet"]) for p in plan["pins"]] == [("latest:labs/cli@main", 2, 1)]
    assert json.loads(letl("tier", "pins", "--json").stdout)[0]["holds"] == 2

    again = letl("tier", "pin", "labs/cli", "--partition", "2024-02-01", "--tier", "hdd")
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "already on hdd: nothing to move"
    assert letl("tier", "unpin", "labs.cli", "--partition", "2024-02-01").returncode == 0
    assert [p["target"] for p in lake.catalog.list_pins()] == ["latest:labs/cli@main"]


def test_pin_errors_are_one_line_with_the_table_exit_codes(lake, letl):
    version = write(lake, "2024-01-01")
    cases = [
        (("tier", "pin", "20240101T000000000000Z-deadbeef", "--tier", "hdd"), 4,
         "unknown version or dataset '20240101T000000000000Z-deadbeef'; known datasets: labs/cli"),
        (("tier", "pin", "labs.nope", "--tier", "hdd"), 4, "unknown version or dataset 'labs/nope'; known datasets: labs/cli"),
        (("tier", "pin", "labs.cli", "--partition", "2030-01-01", "--tier", "hdd"), 4,
         "no version of 'labs/cli' partition 2030-01-01 on branch 'main'"),
        (("tier", "pin", version.version_id, "--tier", "tape"), 2, "unknown tier 'tape'; configured tiers: pmem, ssd, hdd"),
        (("tier", "pin", version.version_id, "--partition", "2024-01-01", "--tier", "hdd"), 2,
         f"--partition applies to an asset, not to version {version.version_id}: leave it out"),
        (("tier", "unpin", version.version_id), 4, f"no pin on version:{version.version_id}; see letl tier pins"),
    ]
    for args, code, message in cases:
        out = letl(*args)
        assert (out.returncode, out.stderr.strip().splitlines()) == (code, [f"error: {message}"]), args
    assert lake.catalog.list_pins() == [] and lake.catalog.get(version.version_id).tier == "ssd"


def test_read_only_commands_without_a_lake_refuse_in_one_line_and_create_nothing(tmp_path):
    """Without LETL_HOME, a reader used to leave ./.letl/catalog.sqlite behind, which then passed for a lake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETL_")}
    for command in (["tier", "pins"], ["tier", "plan"], ["lake", "ls"], ["catalog", "upgrade"]):
        done = subprocess.run([LETL, *command], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 4, (command, done.stderr)
        assert done.stderr.splitlines() == [
            f"error: no lake here: {tmp_path / '.letl'} holds no catalog and LETL_HOME is not set; set LETL_HOME to "
            "the lake's directory (or LETL_CATALOG_URL to its catalog), e.g. export LETL_HOME=/path/to/the/lake"]
        assert list(tmp_path.iterdir()) == [], command


def test_a_pin_to_a_tier_without_room_is_refused_and_unmet_pins_are_shown(lake, letl, monkeypatch):
    version = write(lake, "2024-01-01")
    monkeypatch.setenv("LETL_TIER_PMEM_QUOTA", str(version.bytes - 1))
    out = letl("tier", "pin", version.version_id, "--tier", "pmem")
    assert out.returncode == 6, out.stderr
    [line] = out.stderr.splitlines()
    assert line == (f"error: no room on pmem: pinning would bring it to {format_size(version.bytes)}, over its quota of "
                    f"{format_size(version.bytes - 1)}; free room there or pin to another tier")
    assert lake.catalog.list_pins() == [] and lake.catalog.get(version.version_id).tier == "ssd"

    # A pin made while there was room, whose move has not happened: the plan cannot make it, and says so.
    lake.catalog.pin(version.asset_key, version.branch, "pmem", version_id=version.version_id)
    plan = json.loads(letl("tier", "plan", "--json").stdout)
    assert plan["planned"] == [] and [(u["version_id"], u["tier"], u["pinned_tier"]) for u in plan["unmet"]] == [
        (version.version_id, "ssd", "pmem")]
    text = letl("tier", "plan").stdout.splitlines()
    assert "pinned, not on their tier (1): no room there (or it is unreachable); moved when there is" in text
    assert any(version.version_id in line and " ssd " in line and " pmem " in line for line in text)
    [pin] = json.loads(letl("tier", "pins", "--json").stdout)
    assert (pin["holds"], pin["unmet"]) == (1, 1)
    assert letl("tier", "pins").stdout.splitlines()[-1] == (
        "1 pinned version(s) not on their pinned tier yet (unmet): letl tier plan shows why")


def test_a_pin_whose_request_id_was_used_for_other_work_is_refused_and_not_written(lake, letl):
    moved, other = write(lake, "2024-01-01"), write(lake, "2024-02-01", seed=3)
    assert letl("tier", "move", "--version", moved.version_id, "--to", "hdd", "--request-id", "r-1").returncode == 0
    out = letl("tier", "pin", other.version_id, "--tier", "hdd", "--request-id", "r-1")
    assert (out.returncode, out.stderr.splitlines()) == (3, [
        f"error: request 'r-1' was ssd -> hdd of {moved.version_id}, not a move of {other.version_id} to hdd: "
        "use another --request-id"])
    assert lake.catalog.list_pins() == [] and lake.catalog.get(other.version_id).tier == "ssd"
    # The same move under the same id is a repeat, not other work: the pin is written.
    again = letl("tier", "pin", moved.version_id, "--tier", "pmem", "--request-id", "r-2")
    assert again.returncode == 0, again.stderr
    assert letl("tier", "pin", moved.version_id, "--tier", "pmem", "--request-id", "r-2").returncode == 0
    assert [p["tier"] for p in lake.catalog.list_pins()] == ["pmem"]


def test_moving_a_pinned_version_off_its_tier_warns_that_the_policy_moves_it_back(lake, letl):
    version = write(lake, "2024-01-01")
    assert letl("tier", "pin", version.version_id, "--tier", "hdd").returncode == 0
    out = letl("tier", "move", "--version", version.version_id, "--to", "ssd", "--request-id", "m-1")
    assert out.returncode == 0 and out.stdout.splitlines() == [f"m-1: {version.version_id} hdd -> ssd: done"]
    assert out.stderr.splitlines() == [
        f"warning: {version.version_id} is pinned to hdd (version:{version.version_id}): the tier policy will move "
        "it back there; letl tier unpin first to keep it on ssd"]
    back = letl("tier", "move", "--version", version.version_id, "--to", "hdd")
    assert back.returncode == 0 and back.stderr == ""
