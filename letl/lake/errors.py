"""One error tree for the lake and its faces, mapped in one place to CLI exit codes and HTTP statuses.

Every refusal the lake can give is a ``LetlError``. Where a builtin says the same thing, the
error is also that builtin (``NotFound`` is a ``FileNotFoundError`` and a ``LookupError``,
``InvalidInput`` a ``ValueError``), so callers that catch the builtin keep working. Messages are
one line, name what was wrong and say what to do; they never carry a patient value.

``_TABLE`` is the only place that turns an error into a CLI exit code or an HTTP status: ``letl``
(letl/cli/main.py) and the API (letl/api/app.py) both ask ``exit_code`` and ``http_status``.
"""


class LetlError(Exception):
    """Base of every error the lake raises on purpose."""


class InvalidInput(LetlError, ValueError):
    """The request or file is malformed: fix it and retry."""


class TooLarge(InvalidInput):
    """The request body is over the configured cap."""


class NotFound(LetlError, FileNotFoundError, LookupError):
    """No such dataset, version, branch, tag, request or file.

    Also a LookupError: resolving a gros:// URI raised one before, and its callers catch it."""


class AccessDenied(LetlError, PermissionError):
    """The caller may not read or write this."""


class Conflict(LetlError):
    """The request contradicts what the lake holds (a reused request id, a produced asset, ...)."""


class InProgress(Conflict):
    """The same work is running now under another owner: repeat later for its result."""

    def __init__(self, message: str, retry_after: int = 2):
        super().__init__(message)
        self.retry_after = retry_after


class VerificationFailed(LetlError):
    """What was written does not match what it must: bytes on a tier against the catalog's record,
    or an ingest's rows against its file's lines."""


class NoRoom(LetlError):
    """Every reachable candidate tier is over its quota."""


class TierUnavailable(LetlError, ConnectionError):
    """A tier's backend cannot be reached (object store down, DAOS agent gone, ...).

    HTTP 502, not 503: the API is up, the store behind it is not (503 stays for an API that is
    not configured)."""


# (exit code, HTTP status); a subclass takes the row of its nearest listed ancestor. Exit 1 is also what
# a command returns when it ran and reports a problem it found (`letl run`: a month failed or is stale;
# `letl tier fsck`: objects missing; `letl objectstore status`: not running). Exit 2 is argparse's too.
_TABLE: dict[type, tuple[int, int]] = {
    LetlError: (1, 500),
    InvalidInput: (2, 422),
    TooLarge: (2, 413),
    Conflict: (3, 409),
    NotFound: (4, 404),
    VerificationFailed: (5, 502),
    NoRoom: (6, 507),
    TierUnavailable: (7, 502),
    AccessDenied: (8, 403),
    InProgress: (9, 409),
}
EXIT_INTERNAL = 70  # an error the lake did not expect (EX_SOFTWARE)


def _row(exc: BaseException) -> tuple[int, int] | None:
    for cls in type(exc).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]
    return None


def exit_code(exc: BaseException) -> int:
    row = _row(exc)
    return row[0] if row else EXIT_INTERNAL


def http_status(exc: BaseException) -> int:
    row = _row(exc)
    return row[1] if row else 500


def one_line(exc: BaseException) -> str:
    """The message as one line: CLI output and HTTP details never span lines."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, LetlError) else f"{type(exc).__name__}: {text}"
