"""The catalog's record of requests: writes and moves by request id, their owners and attempts.

A part of the Catalog (which inherits it), kept apart because it is a concern of its own: a
request is reserved before any work, only its owner (the holder of its token) changes it, and
every attempt at it is kept.
"""

from datetime import datetime
from typing import Iterable

import sqlalchemy as sa

from letl.lake.catalog_schema import OPEN_STATES, as_utc, moves, request_attempts, upsert_dialect, utcnow, versions
from letl.lake.errors import InProgress


class RequestLog:
    engine: sa.Engine

    def request(self, request_id: str) -> dict | None:
        with self.engine.begin() as conn:
            row = conn.execute(moves.select().where(moves.c.request_id == request_id)).first()
        return dict(row._mapping) if row else None

    def reserve_request(self, row: dict) -> bool:
        """Insert a request and its first attempt unless the id is taken; True if this call got it."""
        now = utcnow()
        values = {**row, "attempt": 1, "created_at": now, "updated_at": now, "heartbeat_at": now}
        with self.engine.begin() as conn:
            insert = upsert_dialect(conn).insert(moves).values(**values)
            if conn.execute(insert.on_conflict_do_nothing(index_elements=["request_id"])).rowcount != 1:
                return False
            conn.execute(request_attempts.insert().values(
                request_id=row["request_id"], attempt=1, owner_host=row.get("owner_host"),
                owner_pid=row.get("owner_pid"), started_at=now, outcome="running"))
        return True

    def take_over_request(self, request_id: str, dead_token: str | None, owner: dict) -> bool:
        """Become the owner of a request whose owner is gone. A compare-and-set on the old token:
        of two processes settling the same dead owner, exactly one wins."""
        token = moves.c.owner_token
        now = utcnow()
        with self.engine.begin() as conn:
            return conn.execute(moves.update().where(
                moves.c.request_id == request_id, token.is_(None) if dead_token is None else token == dead_token,
            ).values(**owner, heartbeat_at=now, updated_at=now)).rowcount == 1

    def begin_attempt(self, request_id: str, token: str) -> int:
        """Start the owner's own attempt at the work (after settling whatever the last one left)."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(moves.c.attempt, moves.c.owner_host, moves.c.owner_pid).where(
                moves.c.request_id == request_id, moves.c.owner_token == token)).first()
            if row is None:
                raise InProgress(f"request {request_id!r} was taken over by another owner")
            attempt = (row.attempt or 1) + 1  # rows from before attempts were counted had one
            conn.execute(moves.update().where(moves.c.request_id == request_id)
                         .values(attempt=attempt, state="started", detail=None, updated_at=now))
            conn.execute(request_attempts.insert().values(
                request_id=request_id, attempt=attempt, owner_host=row.owner_host, owner_pid=row.owner_pid,
                started_at=now, outcome="running"))
        return attempt

    def update_request(self, request_id: str, token: str, conn: sa.Connection | None = None, **values) -> bool:
        """Change a request as its owner (False if it is not); a state past the open ones also ends the
        current attempt with that outcome."""
        if conn is None:
            with self.engine.begin() as own:
                return self.update_request(request_id, token, conn=own, **values)
        now = utcnow()
        where = (moves.c.request_id == request_id, moves.c.owner_token == token)
        if conn.execute(moves.update().where(*where).values(**values, updated_at=now)).rowcount != 1:
            return False
        if values.get("state") not in (None, *OPEN_STATES):
            attempt = conn.execute(sa.select(moves.c.attempt).where(*where)).scalar_one()
            conn.execute(request_attempts.update().where(
                request_attempts.c.request_id == request_id, request_attempts.c.attempt == attempt,
                request_attempts.c.ended_at.is_(None),
            ).values(ended_at=now, outcome=values["state"], detail=values.get("detail")))
        return True

    def heartbeat(self, request_id: str, token: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(moves.update().where(moves.c.request_id == request_id, moves.c.owner_token == token)
                                .values(heartbeat_at=utcnow())).rowcount == 1

    def switch_tier(self, version_id: str, from_tier: str, to_tier: str, request: tuple[str, str, dict]) -> bool:
        """Point a version at another tier and advance the move that did it, in one transaction.
        False (nothing changed) if the version is no longer on from_tier."""
        with self.engine.begin() as conn:
            switched = conn.execute(versions.update().where(
                versions.c.version_id == version_id, versions.c.tier == from_tier).values(tier=to_tier)).rowcount
            if switched != 1:
                return False
            if not self.update_request(request[0], request[1], conn=conn, **request[2]):
                raise InProgress(f"request {request[0]!r} was taken over by another owner; nothing switched")
        return True

    def requests_in(self, states: Iterable[str]) -> list[dict]:
        query = moves.select().where(moves.c.state.in_(tuple(states))).order_by(moves.c.created_at)
        with self.engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def move_history(self, version_ids: Iterable[str]) -> dict[str, int]:
        """How many requests moved (or tried to move) each of these versions."""
        ids = sorted(set(version_ids))
        if not ids:
            return {}
        query = (sa.select(moves.c.version_id, sa.func.count()).where(moves.c.version_id.in_(ids))
                 .group_by(moves.c.version_id))
        with self.engine.begin() as conn:
            return dict(conn.execute(query).all())

    def finished_moves(self, since: datetime | None = None, seen: Iterable[str] = (), limit: int = 200) -> list[dict]:
        """Moves between tiers that finished (state 'done') at or after ``since``, oldest first, with the
        version's asset key, partition and branch, leaving out the request ids in ``seen``: a watcher
        reports each once by resuming a while before the last updated_at it reported (a stamp is taken
        before the commit, so a later commit can carry an older one), leaving out the ids it reported since."""
        query = (sa.select(moves.c.request_id, moves.c.version_id, moves.c.src_tier, moves.c.dst_tier,
                           moves.c.updated_at, versions.c.asset_key, versions.c.partition, versions.c.branch)
                 .join(versions, versions.c.version_id == moves.c.version_id)
                 # A row from before kinds were recorded is a move unless it came from outside (a write).
                 .where(moves.c.state == "done",
                        sa.or_(moves.c.kind == "move", sa.and_(moves.c.kind.is_(None), moves.c.src_tier != "external")))
                 .order_by(moves.c.updated_at, moves.c.request_id).limit(limit))
        if since is not None:
            query = query.where(moves.c.updated_at >= since)
        if seen := sorted(set(seen)):
            query = query.where(moves.c.request_id.not_in(seen))
        with self.engine.begin() as conn:
            return [{**r._mapping, "updated_at": as_utc(r.updated_at)} for r in conn.execute(query)]
