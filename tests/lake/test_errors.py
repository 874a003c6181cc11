"""The one error table: each error maps to one exit code and one HTTP status."""

import pytest
from error_tree import every_error

from letl.lake import errors


def listed_row(cls: type) -> type:
    """The table row a class takes: the one listed class among its ancestors that no other listed one refines."""
    listed = [c for c in cls.__mro__ if c in errors._TABLE]
    nearest = [c for c in listed if not any(o is not c and issubclass(o, c) for o in listed)]
    assert len(nearest) == 1, f"{cls.__name__} inherits two rows of the error table: {nearest}"
    return nearest[0]


def test_every_error_has_one_exit_code_and_one_status():
    found = every_error()
    assert {"NotFound", "Conflict", "InvalidInput", "TierUnavailable", "GrosURIError", "CatalogNotEmpty"} <= {
        c.__name__ for c in found}
    for cls in found:
        row = listed_row(cls)
        # Only LetlError itself may fall to the base row: a new error names its category.
        assert row is not errors.LetlError or cls is errors.LetlError, f"{cls.__name__} has no row in errors._TABLE"
        exc = cls.__new__(cls)  # subclasses may take more arguments; the table looks at the type alone
        code, status = errors.exit_code(exc), errors.http_status(exc)
        assert (code, status) == errors._TABLE[row], cls


def test_each_row_has_its_own_exit_code():
    codes: dict[int, type] = {}
    for cls, (code, _status) in errors._TABLE.items():
        if cls is errors.TooLarge:  # a body over the cap is invalid input to a script; only HTTP tells it apart
            continue
        assert codes.setdefault(code, cls) is cls, f"{cls.__name__} shares exit code {code} with {codes[code].__name__}"


def test_builtins_still_catch_lake_errors():
    with pytest.raises(FileNotFoundError):
        raise errors.NotFound("no such dataset")
    with pytest.raises(LookupError):
        raise errors.NotFound("no such repo")
    with pytest.raises(ValueError):
        raise errors.InvalidInput("bad")
    with pytest.raises(PermissionError):
        raise errors.AccessDenied("no")
    with pytest.raises(ConnectionError):
        raise errors.TierUnavailable("down")
    assert errors.exit_code(RuntimeError("boom")) == errors.EXIT_INTERNAL
    assert errors.http_status(KeyError("k")) == 500


def test_in_progress_is_a_conflict_with_its_own_code_and_a_retry_hint():
    exc = errors.InProgress("running", retry_after=5)
    assert isinstance(exc, errors.Conflict) and exc.retry_after == 5
    assert errors.http_status(exc) == 409 and errors.exit_code(exc) != errors.exit_code(errors.Conflict("x"))


def test_one_line_folds_newlines_and_names_foreign_types():
    assert errors.one_line(errors.NotFound("a\n  b")) == "a b"
    assert errors.one_line(KeyError("k")) == "KeyError: 'k'"
