"""`letl` turns every error into one line on stderr and the error table's exit code: the same mistake
exits the same way through every command, and `letl --help` lists every group."""

import os
import subprocess
import sys

import pandas as pd
import pytest
from error_tree import every_error, made

from letl.cli import lake as lake_cli
from letl.cli import main as cli
from letl.lake import errors


def letl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "letl.cli.main", *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def letl_here(capsys, *args: str) -> tuple[int, str]:
    """`letl` in this process, for what the command answers rather than how the process ends: (code, stderr)."""
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_an_unknown_dataset_exits_the_same_way_with_the_same_message(lake, capsys):
    lake.write_version("labs/known", pd.DataFrame({"a": [1]}), partition="2024-01-01")
    show = letl("lake", "show", "nope")  # the real process: its exit status and stderr
    move_code, move_err = letl_here(capsys, "tier", "move", "--asset", "nope", "--to", "hdd")
    not_found = errors.exit_code(errors.NotFound("x"))
    assert show.returncode == move_code == not_found, (show.stderr, move_err)
    assert one_error_line(show.stderr) == one_error_line(move_err) == \
        "error: unknown dataset 'nope'; known datasets: labs/known"


def test_unknown_repos_branches_partitions_and_tags_are_not_found_everywhere(lake, capsys):
    lake.write_version("labs/known", pd.DataFrame({"a": [1]}), partition="2024-01-01")
    not_found = errors.exit_code(errors.NotFound("x"))
    for args in (("lineage", "gros://labs.nope"), ("lineage", "gros://labs.known/nobranch"),
                 ("lineage", "gros://labs.known:5"), ("lineage", "gros://labs.known?partition=2030-01-01"),
                 ("lake", "diff", "gros://labs.nope", "gros://labs.known"),
                 ("lake", "show", "labs/known", "--partition", "2030-01-01"),
                 ("tier", "move", "--asset", "labs/known", "--partition", "2030-01-01", "--to", "hdd"),
                 ("tier", "move", "--version", "20200101T000000000000Z-00000000", "--to", "hdd")):
        code, err = letl_here(capsys, *args)
        assert code == not_found, (args, err)
        one_error_line(err)


def test_malformed_input_is_invalid_input_everywhere(lake, capsys):
    lake.write_version("labs/x", pd.DataFrame({"a": [1]}))
    invalid = errors.exit_code(errors.InvalidInput("x"))
    assert invalid == 2  # argparse's own usage errors exit 2 too
    for args in (("lineage", "gros://labs..x"), ("lake", "diff", "gros://a..b", "gros://labs.x"),
                 ("tier", "move", "--asset", "labs/x", "--to", "nowhere")):
        code, err = letl_here(capsys, *args)
        assert code == invalid, (args, err)
        one_error_line(err)


@pytest.mark.parametrize("cls", every_error(), ids=lambda c: c.__name__)
def test_main_maps_every_error_through_the_table(cls, monkeypatch, capsys, letl_env):
    exc = made(cls, "first line\n  second line")

    def refuse(_args):
        raise exc

    monkeypatch.setattr(lake_cli, "cmd_ls", refuse)
    assert cli.main(["lake", "ls"]) == errors.exit_code(exc)
    assert capsys.readouterr().err == "error: first line second line\n"


def test_an_unexpected_error_is_one_line_and_its_own_code(monkeypatch, capsys, letl_env):
    def crash(_args):
        raise KeyError("boom")

    monkeypatch.setattr(lake_cli, "cmd_ls", crash)
    assert cli.main(["lake", "ls"]) == errors.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("error: KeyError: 'boom' (unexpected") and err.count("\n") == 1
    monkeypatch.setenv("LETL_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["lake", "ls"])


@pytest.mark.parametrize(("module", "extra"), [("dagster", "dagster"), ("fastapi", "api"), ("boto3.session", "s3")])
def test_a_missing_extra_names_the_pip_install_that_brings_it(module, extra, monkeypatch, capsys, letl_env):
    def needs(_args):
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    monkeypatch.setattr(lake_cli, "cmd_ls", needs)
    assert cli.main(["lake", "ls"]) == errors.exit_code(errors.LetlError())
    assert capsys.readouterr().err == (f"error: this command needs the optional dependency {module.split('.')[0]!r}: "
                                       f"pip install 'letl[{extra}]'\n")


def test_a_missing_module_of_no_extra_is_still_a_bug(monkeypatch, capsys, letl_env):
    def needs(_args):
        raise ModuleNotFoundError("No module named 'nope'", name="nope")

    monkeypatch.setattr(lake_cli, "cmd_ls", needs)
    assert cli.main(["lake", "ls"]) == errors.EXIT_INTERNAL


def test_reading_the_lake_loads_no_dagster_or_web_stack(lake):
    probe = ("import sys; from letl.cli.main import main; main(['lake', 'ls']); main(['tier', 'ls']); "
             "print(sorted(m for m in ('dagster', 'fastapi', 'uvicorn', 'streamlit', 'letl_assets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_every_group_and_its_commands(capsys):
    groups = {"sample-data": [], "run": [], "summary": [], "lake": ["ls", "show", "branches", "diff"],
              "lineage": [], "catalog": ["rebuild"], "tier": ["ls", "move", "usage", "write", "fsck", "plan"],
              "objectstore": [], "serve": []}
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert done.value.code == 0 and all(f"    {g}" in top for g in groups), top
    for group, commands in groups.items():
        with pytest.raises(SystemExit) as done:
            cli.main([group, "--help"])
        text = capsys.readouterr().out
        assert done.value.code == 0 and text.startswith(f"usage: letl {group}")
        assert all(f"    {c} " in text for c in commands), text


def test_version_prints_the_installed_release_and_exits_0(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"letl {version('letl')}\n"
