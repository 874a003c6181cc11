"""The API answers every lake error with the status the one error table gives it, in one line."""

import importlib
import pkgutil

import pytest
import sqlalchemy as sa
from fastapi import HTTPException

import letl
from letl.api.app import _http_errors
from letl.lake import errors


def _every_error() -> list[type]:
    for module in pkgutil.walk_packages(letl.__path__, "letl."):  # defines every subclass
        importlib.import_module(module.name)

    def walk(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    return [errors.LetlError, *walk(errors.LetlError)]


def answer(exc: BaseException) -> HTTPException:
    with pytest.raises(HTTPException) as caught, _http_errors():
        raise exc
    return caught.value


def made(cls: type, message: str) -> BaseException:
    """An instance as its raiser makes it, or, for one whose constructor takes more, the bare type with this message."""
    try:
        return cls(message)
    except TypeError:
        exc = cls.__new__(cls)
        exc.args = (message,)
        return exc


@pytest.mark.parametrize("cls", _every_error(), ids=lambda c: c.__name__)
def test_every_lake_error_gets_its_table_status(cls):
    exc = made(cls, "first line\n  second line")
    got = answer(exc)
    assert got.status_code == errors.http_status(exc)
    assert got.detail.startswith("first line second line") and "\n" not in got.detail
    assert ("letl tier fsck" in got.detail) == (got.status_code >= 500)  # a server-side failure says how to settle it


def test_in_progress_and_a_concurrent_request_id_ask_for_a_retry():
    busy = answer(errors.InProgress("running elsewhere", retry_after=7))
    assert (busy.status_code, busy.headers) == (409, {"Retry-After": "7"})
    raced = answer(sa.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")))
    assert raced.status_code == errors.http_status(errors.InProgress("x")) and raced.headers["Retry-After"] == "2"
    assert "UNIQUE" not in raced.detail


def test_a_backend_failure_is_an_unavailable_tier_and_a_bug_stays_a_bug():
    down = answer(ConnectionRefusedError("connection refused"))
    assert down.status_code == errors.http_status(errors.TierUnavailable("x")) == 502
    assert down.detail.startswith("tier backend failed (ConnectionRefusedError: connection refused)")
    with pytest.raises(KeyError), _http_errors():
        raise KeyError("a bug")
