"""End to end through the real command lines (dagster and letl in subprocesses), on generated sample drops."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from letl.cli.main import main
from letl.labs.sample import generate_drops

BIN = Path(sys.executable).parent
REPO = Path(__file__).parents[2]
ASSETS = ("labs/lab_results", "labs/lab_results_rejects", "labs/lab_results_summary")
PARTITION = "2024-01-01"


def run(cwd, *args, timeout=300):
    """A command with the fixture's LETL_* and DAGSTER_HOME variables (monkeypatched into os.environ)."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=dict(os.environ), capture_output=True,
                          text=True, timeout=timeout)


def materialize(select="key:labs/lab_results*"):
    """README.md's `dg launch` (dg reads [tool.dg] in pyproject.toml, so it runs from the repository root)."""
    return run(REPO, "dg", "launch", "--assets", select, "--partition", PARTITION)


def letl(capsys, *args) -> tuple[int, str, str]:
    """`letl` in this process; the entry point itself runs as a subprocess in the --help and unknown-dataset tests."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def catalog(capsys):
    code, out, err = letl(capsys, "lake", "ls", "--json")
    assert code == 0, err
    return json.loads(out)


def _materialize_as_the_readme_says(env) -> None:
    # README.md, "To materialize through Dagster's own CLI" (dg launch).
    drops = generate_drops(env["landing"], months=1, hospitals=2, rows_per_file=500, seed=11)
    done = materialize()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = {"rows": sum(d.rows for d in drops), "rejected": sum(sum(d.defects.values()) for d in drops)}
    (env["home"].parent / "drops.json").write_text(json.dumps(counts))


@pytest.fixture(scope="module")
def materialized(built_once) -> Path:
    """One month from two hospitals, materialized once by a `dagster asset materialize` subprocess."""
    return built_once("e2e-readme-materialize", _materialize_as_the_readme_says)


@pytest.fixture
def drop_counts(materialized, copy_lake) -> dict[str, int]:
    """This test's copy of the materialized lake, and the rows and planted defects of its drops."""
    copy_lake(materialized)
    return json.loads((materialized / "drops.json").read_text())


def test_materialize_is_idempotent_and_tracked(letl_env, drop_counts, tmp_path, capsys):
    versions = catalog(capsys)
    assert sorted(v["asset"] for v in versions) == sorted(ASSETS)
    assert {v["partition"] for v in versions} == {PARTITION} and all(v["latest"] for v in versions)
    by_asset = {v["asset"]: v for v in versions}
    rows, rejected = drop_counts["rows"], drop_counts["rejected"]
    assert (by_asset[ASSETS[0]]["rows"], by_asset[ASSETS[1]]["rows"]) == (rows - rejected, rejected)

    again = materialize("key:labs/lab_results,key:labs/lab_results_rejects,key:labs/lab_results_summary")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert catalog(capsys) == versions  # identical output reuses the same versions, nothing new

    code, out, err = letl(capsys, "run")
    assert code == 0, out + err
    assert "2024-01: up to date" in out
    assert f"in {rows:,} = out {rows - rejected:,} + rejected {rejected:,}" in out
    assert catalog(capsys) == versions

    code, out, err = letl(capsys, "lake", "show", "labs/lab_results_summary", "--json")
    assert code == 0, err
    [summary] = json.loads(out)
    assert summary["version"] == by_asset["labs/lab_results_summary"]["version"]
    assert summary["upstreams"] == [f"labs/lab_results@{PARTITION}:{by_asset['labs/lab_results']['version']}"]
    code, out, err = letl(capsys, "lake", "show", "labs/lab_results", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["downstreams"] == [
        f"labs/lab_results_summary@{PARTITION}:{summary['version']}"
    ]


def test_readme_dagster_command_materializes_lab_results(letl_env, drop_counts, capsys):
    # The README command ran in `materialized`, which asserts it exited 0.
    assert {v["asset"] for v in catalog(capsys)} >= {"labs/lab_results", "labs/lab_results_rejects"}


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
