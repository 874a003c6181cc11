"""What stands in front of the API's endpoints: a body cap enforced before anything is read, and
validation errors that name the field and the problem but never echo what was sent.

The cap (``LETL_API_MAX_BODY``, default 64 KiB: bodies are small JSON) holds with or without a
token, because FastAPI reads a body before it runs the token check. A declared Content-Length over
the cap is refused at once; a body without one (chunked) is counted as it streams and refused as
soon as it passes the cap, so the server never holds more than the cap and one chunk.
"""

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from letl.lake.config import setting
from letl.lake.errors import TooLarge, http_status

MAX_BODY_ENV = "LETL_API_MAX_BODY"
MAX_PROBLEMS = 10


def max_body() -> int:
    return setting(MAX_BODY_ENV)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"request body over the {limit:,}-byte cap ({MAX_BODY_ENV}); the API takes small JSON bodies")


class BodyLimit:
    """Pure ASGI middleware: it sees the body as messages, before any framework buffers it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = max_body()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            refusal = _too_large(limit)
            status, detail = (http_status(refusal), str(refusal)) if declared.isdigit() else (400, "malformed Content-Length")
            response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI lets an HTTPException raised while reading the body through unchanged.
                    refusal = _too_large(limit)
                    raise HTTPException(http_status(refusal), str(refusal), headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)


def _where(loc: tuple, known: frozenset[str]) -> str:
    """The field an error is about, named only when it is one the API declares (never a sent key)."""
    source = str(loc[0]) if loc else "request"
    if len(loc) < 2 or not isinstance(loc[1], str):  # a JSON decode error's loc holds a position
        return source
    return f"{source}.{loc[1]}" if loc[1] in known else f"{source}: a field it does not take"


def validation_handler(known: frozenset[str]):
    """A 422 handler in place of FastAPI's, whose body repeats the input (``input``, ``ctx``)."""

    async def handle(_request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = [f"{_where(tuple(e.get('loc', ())), known)}: {e.get('msg', 'invalid')}" for e in errors[:MAX_PROBLEMS]]
        more = f"; and {len(errors) - MAX_PROBLEMS} more" if len(errors) > MAX_PROBLEMS else ""
        return JSONResponse({"detail": f"invalid request: {'; '.join(problems)}{more}"}, status_code=422)

    return handle
