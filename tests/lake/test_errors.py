"""The one error table: each error maps to one exit code and one HTTP status, the CLI prints one line."""

import subprocess
import sys

import pytest

from letl.lake import errors


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_has_one_exit_code_and_one_status():
    seen_codes: dict[int, type] = {}
    for cls in [errors.LetlError, *_subclasses(errors.LetlError)]:
        exc = cls.__new__(cls)  # subclasses may take more arguments; the table looks at the type alone
        code, status = errors.exit_code(exc), errors.http_status(exc)
        assert code >= 1 and code < errors.EXIT_INTERNAL and 400 <= status <= 599, cls
        if cls in errors._TABLE and cls is not errors.TooLarge:  # TooLarge shares InvalidInput's exit code
            assert seen_codes.setdefault(code, cls) is cls, f"{cls.__name__} shares exit code {code}"


def test_builtins_still_catch_lake_errors():
    with pytest.raises(FileNotFoundError):
        raise errors.NotFound("no such dataset")
    with pytest.raises(ValueError):
        raise errors.InvalidInput("bad")
    with pytest.raises(PermissionError):
        raise errors.AccessDenied("no")
    assert errors.exit_code(RuntimeError("boom")) == errors.EXIT_INTERNAL


def test_in_progress_is_a_conflict_with_its_own_code_and_a_retry_hint():
    exc = errors.InProgress("running", retry_after=5)
    assert isinstance(exc, errors.Conflict) and exc.retry_after == 5
    assert errors.http_status(exc) == 409 and errors.exit_code(exc) != errors.exit_code(errors.Conflict("x"))


def test_one_line_folds_newlines_and_names_foreign_types():
    assert errors.one_line(errors.NotFound("a\n  b")) == "a b"
    assert errors.one_line(KeyError("k")) == "KeyError: 'k'"


def letl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "letl.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_unknown_dataset_gives_the_same_exit_code_everywhere(lake):
    show = letl("lake", "show", "nope")
    move = letl("tier", "move", "--asset", "nope", "--to", "hdd")
    assert show.returncode == move.returncode == errors.exit_code(errors.NotFound("x")), (show.stderr, move.stderr)
    for result in (show, move):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
