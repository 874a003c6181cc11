"""Request ids for writes and moves: reserved before any work, answered once, never run twice at once.

``Requests.claim`` either hands back the first result (a repeat) or makes the caller the
request's only owner (a ``Claim``). A repeat that arrives while the owner works waits a little
for its result (``LETL_REQUEST_WAIT`` seconds, default 5), then gets ``InProgress``; it never
restarts the live work. Only work whose owner is gone (see leases.py) is taken over, by a
compare-and-set on the owner's token, so that one caller settles it.
"""

import json
import time
from dataclasses import asdict, dataclass

from letl.lake.catalog import FINAL_STATES, OPEN_STATES
from letl.lake.config import setting
from letl.lake.errors import Conflict, InProgress
from letl.lake.leases import Heartbeat, Lock, lock_path, new_owner, owner_alive_elsewhere


class MoveConflict(Conflict):
    """The request cannot be honoured as asked: reused request id, or a destination holding other bytes."""


@dataclass(frozen=True)
class MoveResult:
    request_id: str
    version_id: str | None  # a write's is known once it committed
    src_tier: str
    dst_tier: str
    state: str
    bytes: int | None
    seconds: float | None
    detail: str | None
    repeated: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def result_of(row: dict, repeated: bool = False) -> MoveResult:
    fields = {k: row[k] for k in MoveResult.__dataclass_fields__ if k != "repeated"}
    return MoveResult(**fields, repeated=repeated)


def _asked(row: dict) -> tuple[str, dict]:
    """What a request row asked for; rows from before 'ask' was kept say it in their columns."""
    if row.get("ask"):
        return row["kind"], json.loads(row["ask"])
    if row["src_tier"] == "external":
        return "write", {"tier": row["dst_tier"]}
    return "move", {"version_id": row["version_id"], "tier": row["dst_tier"]}


def _describe(kind: str, ask: dict) -> str:
    if kind == "move":
        return f"a move of {ask.get('version_id')} to {ask.get('tier')}"
    return f"a write to {ask.get('asset_key', 'a dataset')} on {ask.get('tier')}"


class Claim:
    """Sole ownership of a request while its work runs: the lock, the token and a heartbeat.

    ``previous`` is the row as an earlier owner left it (None for a new request): the new
    owner settles what that one left before doing its own attempt.
    """

    def __init__(self, catalog, request_id: str, lock: Lock, owner: dict, previous: dict | None):
        self.catalog, self.request_id, self.lock, self.previous = catalog, request_id, lock, previous
        self.token = owner["owner_token"]
        self.heartbeat = Heartbeat(catalog, request_id, self.token)

    def update(self, **values) -> None:
        if not self.catalog.update_request(self.request_id, self.token, **values):
            raise InProgress(f"request {self.request_id!r} was taken over by another owner")

    def as_request(self, **values) -> tuple[str, str, dict]:
        """What Catalog.commit_versions / switch_tier need to advance this request in their transaction."""
        return self.request_id, self.token, values

    def begin_attempt(self) -> int:
        return self.catalog.begin_attempt(self.request_id, self.token)

    def result(self) -> MoveResult:
        return result_of(self.catalog.request(self.request_id))

    def release(self) -> None:
        self.heartbeat.end()
        self.lock.release()

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


class Requests:
    def __init__(self, lake):
        self.home, self.catalog = lake.config.home, lake.catalog

    def get(self, request_id: str) -> MoveResult | None:
        row = self.catalog.request(request_id)
        return result_of(row) if row else None

    def claim(self, request_id: str, kind: str, ask: dict, fresh: dict) -> Claim | MoveResult:
        """Own the request (a Claim), or the first result (repeated). ``fresh`` is the row of a new request."""
        deadline = time.monotonic() + setting("LETL_REQUEST_WAIT")
        while True:
            lock = Lock.try_take(lock_path(self.home, request_id))
            try:
                row = self.catalog.request(request_id)
                if row is not None:
                    asked_kind, asked = _asked(row)
                    if asked_kind != kind or any(ask.get(k) != v for k, v in asked.items()):
                        raise MoveConflict(f"request {request_id!r} was {_describe(asked_kind, asked)}, "
                                           f"not {_describe(kind, ask)}")
                    if row["state"] in FINAL_STATES:
                        return result_of(row, repeated=True)
                if lock is not None:
                    owner = new_owner()
                    if row is None:
                        mine = self.catalog.reserve_request({**fresh, "request_id": request_id, "kind": kind,
                                                             "ask": json.dumps(ask, sort_keys=True), **owner})
                    elif row["state"] not in OPEN_STATES or not owner_alive_elsewhere(row):
                        mine = self.catalog.take_over_request(request_id, row["owner_token"], owner)
                    else:
                        mine = False
                    if mine:
                        claim, lock = Claim(self.catalog, request_id, lock, owner, row), None
                        return claim
            finally:
                if lock is not None:
                    lock.release()
            if time.monotonic() >= deadline:
                raise InProgress(f"request {request_id!r} is running under another owner; repeat it for its result")
            time.sleep(0.1)

    def owner_alive(self, row: dict) -> bool:
        """Whether an open request's owner still runs; changes nothing (for dry runs)."""
        lock = Lock.try_take(lock_path(self.home, row["request_id"]))
        if lock is None:
            return True
        lock.release()
        return owner_alive_elsewhere(row)

    def take_dead(self, row: dict) -> Claim | None:
        """Own an open request whose owner is gone (to settle it), or None while its owner lives."""
        lock = Lock.try_take(lock_path(self.home, row["request_id"]))
        if lock is None:
            return None
        row = self.catalog.request(row["request_id"])  # it may have ended before we got the lock
        owner = new_owner()
        if (row["state"] not in OPEN_STATES or owner_alive_elsewhere(row)
                or not self.catalog.take_over_request(row["request_id"], row["owner_token"], owner)):
            lock.release()
            return None
        return Claim(self.catalog, row["request_id"], lock, owner, row)
