"""The HTTP API of the tiering service: the original LETL endpoints, on the same code path as `letl tier`.

Every endpoint needs ``Authorization: Bearer $LETL_API_TOKEN`` (read per request; unset -> 503, never open;
missing or wrong -> 401). The four POST endpoints take ``{source_uri, destination_uri, request_id}``;
``request_id`` (1-128 of ``[A-Za-z0-9._:-]``) is the idempotency key: repeating it returns the first
result with ``"repeated": true`` and does nothing; reusing it for another write or move -> 409.

- ``POST /cortx/write``: source_uri is a registered source (lake/sources.py): a file inside the landing
  zone or a ``LETL_SOURCE_ROOTS`` directory (absolute path or ``file://`` URL), or a lake version as
  ``gros://`` (read under gros:// access rules); anything else on the server -> 403. destination_uri names
  the dataset (``team.my_dataset`` or ``team/my_dataset``, optionally ``?partition=P``); a dataset the
  code location produces, or one a pipeline run has written, -> 409. Writes a new version on tier
  ``cortx`` (``Mover.write``).
- ``POST /daos/ssd/write``: the same onto the DAOS/SSD tier (``daos`` if configured, else ``ssd``).
- ``POST /tiering/D-C``: moves a version from the DAOS/SSD tier to ``cortx`` (``Mover.move``: copy,
  verify, switch, delete). source_uri is a version id, or a dataset as above meaning its latest version;
  destination_uri must be the destination tier's name or ``<name>://`` (else 422).
- ``POST /tiering/C-D``: from ``cortx`` to the DAOS/SSD tier. Both moves refuse (409) a version that is
  not on the endpoint's source tier.
- ``GET /tiers``: name, rank, location, quota, bytes used, versions, availability (and why not).
- ``GET /moves/{request_id}``: the recorded result of a write or move, 404 if unknown.

Answers: 200 with the MoveResult (src_tier 'external' for a write; state done, or rolled_back if refused);
403 a source that is not registered, or a restricted lake version for a non-steward; 409 MoveConflict
(request id reused, destination holding other bytes, wrong source tier) or a produced destination; 404
unknown version, dataset or source file; 413 a body over ``LETL_API_MAX_BODY`` (guard.py); 422
malformed body, dataset name or tier. Error details name the field and the problem and never repeat
unvalidated input. 502 a tier backend failed (object store down, I/O error, failed verification): probed before
anything is recorded, and the answer says where the catalog places the version; 503 tier ``cortx`` not
configured (run ``letl objectstore up``); 507 the tier's quota is full. Errors: ``{"detail": "..."}``.
"""

import hmac
from collections import Counter
from contextlib import contextmanager
from typing import Callable
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from letl.api.guard import BodyLimit, validation_handler
from letl.lake.config import setting
from letl.lake.errors import InProgress, InvalidInput, LetlError, NotFound, TierUnavailable, http_status, one_line
from letl.lake.lake import Lake, current_user
from letl.lake.moves import MoveConflict, Mover, MoveResult
from letl.lake.names import asset_key_of, refuse_produced
from letl.lake.sources import resolve_source
from letl.storage.contract import validate_key
from letl.storage.s3 import S3ProbeError

OBJECT_TIER = "cortx"
MIN_TOKEN_LENGTH = 32
NO_OBJECT_TIER = ("tier 'cortx' is not configured: start the object store with `letl objectstore up` (or set "
                  "LETL_TIER_CORTX_PATH=s3://bucket/prefix with LETL_S3_ENDPOINT and keys), then retry")


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_uri: str = Field(min_length=1, max_length=4096, description="writes: a registered source (a "
                            "landing-zone file path or file:// URL, or gros://...); moves: a version id or a "
                            "dataset (labs.lab_results?partition=2024-03-01)")
    destination_uri: str = Field(min_length=1, max_length=4096, description="writes: the dataset (team.my_dataset"
                                 "[?partition=P]); moves: the destination tier's name, e.g. 'cortx' or 'cortx://'")
    request_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                            description="idempotency key: a repeat returns the first result")


def _fast_tier(lake: Lake) -> str:
    """The DAOS/SSD side of the original service."""
    return "daos" if "daos" in lake.tiers else "ssd"


def _dataset(uri: str) -> tuple[str, str | None]:
    """'team.my_dataset' or 'team/my_dataset', optionally '?partition=P' -> (asset key, partition)."""
    name, _, query = uri.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    if set(params) - {"partition"} or len(params.get("partition", [])) > 1:
        raise InvalidInput("the only query parameter a dataset takes is one ?partition=")
    name = name.strip("/")
    asset = name if "/" in name else asset_key_of(name)
    partition = params.get("partition", [""])[0] or None
    try:
        validate_key(f"{asset}/{partition or '_'}")
    except ValueError:
        raise InvalidInput("a dataset is team.my_dataset or team/my_dataset (parts of [A-Za-z0-9_.=-]), "
                           "optionally with ?partition=P") from None
    return asset, partition


def _is_backend_failure(exc: Exception) -> bool:
    return (isinstance(exc, (OSError, S3ProbeError))
            or type(exc).__module__.split(".")[0] in ("botocore", "boto3", "urllib3", "pydaos"))


def _as_lake_error(exc: Exception) -> LetlError | None:
    """What a failure means in the lake's terms, or None for a bug (which stays a 500 with its traceback)."""
    if isinstance(exc, LetlError):
        return exc
    if isinstance(exc, sa.exc.IntegrityError):  # two requests reserved the same id at once
        return InProgress("this request_id is in use by a concurrent request; repeat it for its result")
    if _is_backend_failure(exc):
        return TierUnavailable(f"tier backend failed ({one_line(exc)})")
    return None


@contextmanager
def _http_errors(where: Callable[[], str] = lambda: "the catalog is unchanged"):
    """Lake errors become statuses through the one table in lake/errors.py; details are one line."""
    try:
        yield
    except HTTPException:
        raise
    except Exception as exc:
        if (error := _as_lake_error(exc)) is None:
            raise
        status, detail = http_status(error), one_line(error)
        if status >= 500:
            detail += f"; {where()}; repeat the request with the same request_id, or run `letl tier fsck`, to settle it"
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, InProgress) else None
        raise HTTPException(status, detail, headers=headers) from exc


def _check_available(lake: Lake, *names: str) -> None:
    for name in names:
        if name in lake.tiers and (problem := lake.tiers[name].unavailable()):
            raise TierUnavailable(problem)


def _write(lake: Lake, body: MoveRequest, tier: str) -> dict:
    mover = Mover(lake)
    with _http_errors():
        asset, partition = _dataset(body.destination_uri)
        refuse_produced(lake, asset)  # before the source is even resolved: 409 whatever it names
        repeat = mover.get(body.request_id) is not None
        # Resolved on repeats too: a request id never lets an unregistered source through.
        source = resolve_source(lake, body.source_uri, current_user(), repeat)
        if not repeat:
            _check_available(lake, tier)
        return mover.write(str(source.path), asset, tier, body.request_id, partition).as_dict()


def _move(lake: Lake, body: MoveRequest, src: str, dst: str) -> dict:
    mover = Mover(lake)
    with _http_errors():
        if body.destination_uri.strip() not in (dst, f"{dst}://"):
            raise InvalidInput(f"destination_uri does not match this endpoint, which moves {src} -> {dst}: "
                               f"use {dst!r} or '{dst}://'")
        version = lake.catalog.get(body.source_uri)
        if version is None:
            asset, partition = _dataset(body.source_uri)
            if (version := lake.latest(asset, partition)) is None:
                raise NotFound(f"source_uri names no version id or dataset (dataset {asset!r}, "
                               f"partition {partition or 'none'}, branch {lake.branch!r})")
        if mover.get(body.request_id) is None:
            if version.tier != src:
                raise MoveConflict(f"{version.version_id} is on tier {version.tier}, not {src}: "
                                   f"this endpoint moves {src} -> {dst}")
            _check_available(lake, src, dst)
    vid = version.version_id
    with _http_errors(lambda: f"the catalog places {vid} on {lake.catalog.get(vid).tier}"):
        return mover.move(vid, dst, body.request_id).as_dict()


def create_app(lake_factory: Callable[[], Lake] = Lake.from_env) -> FastAPI:
    bearer = HTTPBearer(auto_error=False, description="the value of LETL_API_TOKEN on the server")

    def require_token(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        expected = setting("LETL_API_TOKEN")
        if not expected:
            raise HTTPException(503, "the API is disabled: set LETL_API_TOKEN on the server to the bearer "
                                     "token clients must send, then restart it")
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def get_lake():
        lake = lake_factory()
        try:
            yield lake
        finally:
            lake.catalog.engine.dispose()

    def object_lake(lake: Lake = Depends(get_lake)) -> Lake:
        if OBJECT_TIER not in lake.tiers:
            raise HTTPException(503, NO_OBJECT_TIER)
        return lake

    app = FastAPI(title="LETL tiering service", description=__doc__, version="1",
                  dependencies=[Depends(require_token)], openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RequestValidationError, validation_handler(frozenset(MoveRequest.model_fields)))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @app.post("/cortx/write", response_model=MoveResult)
    def cortx_write(body: MoveRequest, lake: Lake = Depends(object_lake)) -> dict:
        """Write the file at source_uri as a new version of the dataset destination_uri on tier cortx."""
        return _write(lake, body, OBJECT_TIER)

    @app.post("/daos/ssd/write", response_model=MoveResult)
    def daos_ssd_write(body: MoveRequest, lake: Lake = Depends(get_lake)) -> dict:
        """Write the file at source_uri as a new version of destination_uri on tier daos (if configured) or ssd."""
        return _write(lake, body, _fast_tier(lake))

    @app.post("/tiering/D-C", response_model=MoveResult)
    def daos_to_cortx(body: MoveRequest, lake: Lake = Depends(object_lake)) -> dict:
        """Move a version (id, or a dataset's latest) from the DAOS/SSD tier to cortx; destination_uri 'cortx'.
        409 if it is not on the DAOS/SSD tier."""
        return _move(lake, body, _fast_tier(lake), OBJECT_TIER)

    @app.post("/tiering/C-D", response_model=MoveResult)
    def cortx_to_daos(body: MoveRequest, lake: Lake = Depends(object_lake)) -> dict:
        """Move a version (id, or a dataset's latest) from cortx to the DAOS/SSD tier; destination_uri names
        that tier ('ssd', or 'daos' if configured). 409 if it is not on cortx."""
        return _move(lake, body, OBJECT_TIER, _fast_tier(lake))

    @app.get("/tiers")
    def tiers(lake: Lake = Depends(get_lake)) -> dict:
        """Configured tiers, hottest first: rank, location, quota (null: none), bytes used and versions by the
        catalog's account, and whether the tier can take data now (and why not). notes: disabled tiers."""
        used, counts = lake.tier_usage(), Counter(v.tier for v in lake.catalog.list_versions())
        rows = [{"name": name, "rank": t.spec.rank, "location": t.spec.location, "quota_bytes": t.spec.quota_bytes or None,
                 "used_bytes": used.get(name, 0), "versions": counts.get(name, 0),
                 "available": (problem := t.unavailable()) is None, "unavailable_reason": problem}
                for name, t in lake.tiers.items()]
        return {"tiers": rows, "notes": list(lake.config.notes)}

    @app.get("/moves/{request_id:path}", response_model=MoveResult)
    def get_move(request_id: str = PathParam(max_length=255), lake: Lake = Depends(get_lake)) -> dict:
        """The recorded result of the write or move with this request id; 404 if unknown."""
        with _http_errors():
            if (result := Mover(lake).get(request_id)) is None:
                raise NotFound("no write or move with this request_id")
            return result.as_dict()

    return app
