"""End to end through the real command lines, in subprocesses, on generated sample drops."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from letl.labs.sample import generate_drops

BIN = Path(sys.executable).parent
ASSETS = ("labs/lab_results", "labs/lab_results_rejects", "labs/lab_results_summary")
PARTITION = "2024-01-01"


def run(cwd, *args, timeout=300):
    """A command with the fixture's LETL_* and DAGSTER_HOME variables (monkeypatched into os.environ)."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=dict(os.environ), capture_output=True,
                          text=True, timeout=timeout)


def materialize(cwd, select=None):
    select = select or ",".join(ASSETS)
    return run(cwd, "dagster", "asset", "materialize", "-m", "letl_assets.definitions", "--select", select,
               "--partition", PARTITION)


def catalog(cwd):
    done = run(cwd, "letl", "lake", "ls", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def drops(letl_env):
    return generate_drops(letl_env["landing"], months=1, hospitals=2, rows_per_file=500, seed=11)


def test_materialize_is_idempotent_and_tracked(letl_env, drops, tmp_path):
    first = materialize(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    versions = catalog(tmp_path)
    assert sorted(v["asset"] for v in versions) == sorted(ASSETS)
    assert {v["partition"] for v in versions} == {PARTITION} and all(v["latest"] for v in versions)
    by_asset = {v["asset"]: v for v in versions}
    rows = sum(d.rows for d in drops)
    rejected = sum(sum(d.defects.values()) for d in drops)
    assert (by_asset[ASSETS[0]]["rows"], by_asset[ASSETS[1]]["rows"]) == (rows - rejected, rejected)

    again = materialize(tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert catalog(tmp_path) == versions  # identical output reuses the same versions, nothing new

    up_to_date = run(tmp_path, "letl", "run")
    assert up_to_date.returncode == 0, up_to_date.stdout + up_to_date.stderr
    assert "2024-01: up to date" in up_to_date.stdout
    assert f"in {rows:,} = out {rows - rejected:,} + rejected {rejected:,}" in up_to_date.stdout
    assert catalog(tmp_path) == versions

    shown = run(tmp_path, "letl", "lake", "show", "labs/lab_results_summary", "--json")
    assert shown.returncode == 0, shown.stderr
    [summary] = json.loads(shown.stdout)
    assert summary["version"] == by_asset["labs/lab_results_summary"]["version"]
    assert summary["upstreams"] == [f"labs/lab_results@{PARTITION}:{by_asset['labs/lab_results']['version']}"]
    shown = run(tmp_path, "letl", "lake", "show", "labs/lab_results", "--json")
    assert json.loads(shown.stdout)[0]["downstreams"] == [
        f"labs/lab_results_summary@{PARTITION}:{summary['version']}"
    ]


def test_readme_dagster_command_materializes_lab_results(letl_env, drops, tmp_path):
    # README.md, "To materialize through Dagster's own CLI".
    done = materialize(tmp_path, select="key:labs/lab_results*")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {v["asset"] for v in catalog(tmp_path)} >= {"labs/lab_results", "labs/lab_results_rejects"}


def test_help_names_the_subcommands(letl_env, tmp_path):
    top = run(tmp_path, "letl", "--help")
    assert top.returncode == 0
    for command in ("sample-data", "run", "lake", "summary"):
        assert command in top.stdout
    lake = run(tmp_path, "letl", "lake", "--help")
    assert lake.returncode == 0
    assert "ls" in lake.stdout.split() or "{ls,show}" in lake.stdout
    assert "show" in lake.stdout and "list versions" in lake.stdout


def test_show_unknown_asset_fails_clearly(letl_env, tmp_path):
    done = run(tmp_path, "letl", "lake", "show", "no/such")
    assert done.returncode != 0
    assert done.stderr.startswith("error: unknown dataset 'no/such'") and "Traceback" not in done.stderr
    assert "known datasets: none" in done.stderr
    assert "Traceback" not in done.stderr
