"""One error tree for the lake and its faces, mapped in one place to CLI exit codes and HTTP statuses.

Every refusal the lake can give is a ``LetlError``. Where a builtin says the same thing, the
error is also that builtin (``NotFound`` is a ``FileNotFoundError``, ``InvalidInput`` a
``ValueError``), so callers that catch the builtin keep working. Messages are one line, name
what was wrong and say what to do; they never carry a patient value.
"""


class LetlError(Exception):
    """Base of every error the lake raises on purpose."""


class InvalidInput(LetlError, ValueError):
    """The request or file is malformed: fix it and retry."""


class TooLarge(InvalidInput):
    """The request body is over the configured cap."""


class NotFound(LetlError, FileNotFoundError):
    """No such dataset, version, tier object, request or file."""


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
    """Bytes on a tier do not match the catalog's record."""


class NoRoom(LetlError):
    """Every reachable candidate tier is over its quota."""


class TierUnavailable(LetlError, ConnectionError):
    """A tier's backend cannot be reached (object store down, DAOS agent gone, ...)."""


# (exit code, HTTP status); a subclass takes the row of its nearest listed ancestor.
_TABLE: dict[type, tuple[int, int]] = {
    LetlError: (1, 500),
    InvalidInput: (2, 422),
    TooLarge: (2, 413),
    Conflict: (3, 409),
    NotFound: (4, 404),
    VerificationFailed: (5, 502),
    NoRoom: (6, 507),
    TierUnavailable: (7, 503),
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
