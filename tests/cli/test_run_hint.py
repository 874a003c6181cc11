"""`letl run`'s closing hint names the Dagster instance the run used, not a fixed path."""

import shlex

import pytest


@pytest.fixture
def quick_run(letl_env, monkeypatch):
    """`letl run` over one tiny drop, its materialization stubbed: the hint, not Dagster, is under test."""
    import letl_assets.local_run as local_run
    from letl.labs.sample import generate_drops
    from letl.lake.config import LakeConfig

    generate_drops(letl_env["landing"], months=1, hospitals=1, rows_per_file=20, seed=1)
    used = []

    def run_months(months, force, log=print, bar=None):
        used.append(local_run.ensure_dagster_home(LakeConfig.resolve().home))  # as the real one does
        return []

    monkeypatch.setattr(local_run, "run_months", run_months)
    return used


def _hint(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("Open the Dagster UI"))


def test_the_hint_names_letl_home_dagster_when_dagster_home_is_unset(letl_env, quick_run, monkeypatch, capsys):
    from letl.cli.main import main

    monkeypatch.delenv("DAGSTER_HOME")
    main(["run"])
    instance = (letl_env["home"] / "dagster").absolute()
    assert quick_run == [instance]
    assert f"DAGSTER_HOME={shlex.quote(str(instance))} dg dev" in _hint(capsys.readouterr().out)


def test_the_hint_names_the_dagster_home_that_was_set(letl_env, quick_run, tmp_path, monkeypatch, capsys):
    from letl.cli.main import main

    mine = tmp_path / "my dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(mine))
    main(["run"])
    assert quick_run == [mine]
    hint = _hint(capsys.readouterr().out)
    assert f"DAGSTER_HOME='{mine}' dg dev" in hint and ".letl/dagster" not in hint
