"""The dg verbs the README shows first, run as users run them: from the repository root, which
[tool.dg] in pyproject.toml makes a dg project whose code location is letl_assets.definitions."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
DG = Path(sys.executable).parent / "dg"


def dg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DG), *args], cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)


def test_dg_check_defs_and_list_defs_load_the_production_location(letl_env):
    checked = dg("check", "defs")
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr
    assert "does not match the virtual environment" not in checked.stdout + checked.stderr

    listed = dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"] for a in defs["assets"]}
    assert assets == {"labs/lab_drops", "labs/lab_results", "labs/lab_results_rejects", "labs/lab_results_summary"}
    assert {s["name"] for s in defs["sensors"]} == {
        "lab_drops_sensor", "tier_policy_sensor", "tier_moves_sensor", "freshness_sensor", "letl_automation"}
    assert {j["name"] for j in defs["jobs"]} >= {"labs_job", "tier_policy_job", "tier_move_job"}
