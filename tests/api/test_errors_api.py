"""The API answers every lake error with the status the one error table gives it, in one line."""

import pytest
import sqlalchemy as sa
from error_tree import every_error, made
from fastapi import HTTPException

from letl.api.app import _http_errors
from letl.lake import errors


def answer(exc: BaseException) -> HTTPException:
    with pytest.raises(HTTPException) as caught, _http_errors():
        raise exc
    return caught.value


@pytest.mark.parametrize("cls", every_error(), ids=lambda c: c.__name__)
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
