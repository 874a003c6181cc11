"""`letl run --months`: friendly month spellings and ranges; anything else is one line of bad input."""

import os
import subprocess
import sys

import pytest

from letl.lake.errors import InvalidInput
from letl_assets.local_run import parse_months


def test_months_accept_both_spellings_and_ranges_and_never_repeat():
    assert parse_months(["2024-3", "2024-03", "2024-03-01"]) == ["2024-03-01"]
    assert parse_months(["2023-11..2024-02", "2024-01"]) == ["2023-11-01", "2023-12-01", "2024-01-01", "2024-02-01"]


@pytest.mark.parametrize("text", ["foo", "2024-13", "2024-0", "../../etc", "2024-01..", "2024-05..2024-01", "24-01",
                                  "1899-12", "1899-12..1900-02", "2026-06..9999-12"])
def test_anything_else_is_refused_naming_the_argument(text):
    with pytest.raises(InvalidInput, match="--months"):
        parse_months([text])


def test_months_from_1900_to_the_current_one_are_accepted():
    from letl.labs.drops import current_month

    assert parse_months(["1900-01", current_month()]) == ["1900-01-01", f"{current_month()}-01"]


def test_letl_run_refuses_a_bad_month_and_a_month_without_drops_in_one_line(letl_env, capsys):
    from letl.cli.main import main
    from letl.labs.sample import generate_drops

    generate_drops(letl_env["landing"], months=1, hospitals=1, rows_per_file=20, seed=1)
    assert main(["run", "--months", "2024-13"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    result = subprocess.run([sys.executable, "-m", "letl.cli.main", "run", "--months", "2023-01"],  # the real process
                            env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_bad_month_is_refused_before_any_work(letl_env, capsys):
    """In an empty landing zone, `letl run` would generate the sample drops first: a bad --months
    must be refused before that, leaving the landing zone and the lake as they were."""
    from letl.cli.main import main

    assert main(["run", "--months", "2024-13"]) == 2
    assert capsys.readouterr().err == ("error: --months '2024-13': give a month as YYYY-MM (or YYYY-M), "
                                       "or a range YYYY-MM..YYYY-MM\n")
    assert list(letl_env["landing"].iterdir()) == []
    assert not (letl_env["home"] / "catalog.sqlite").exists()
