"""Moderation routes (docs/contracts.md#moderation): exclusions of users or groups from a board
or from every board, their lifting, and the admin audit (a bearer token with the admin role).

Postgres only: an exclusion and its audit row are written in one transaction. Without
DATABASE_URL every route answers 409 saying so; a Postgres that is down is a 503.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated

import anyio
from litestar import Controller, Response, get, post, route
from litestar.enums import HttpMethod
from litestar.params import Parameter
from litestar.plugins.problem_details import ProblemDetailsException

from api.auth import Caller
from api.deps import StoresDep
from api.guards import BEARER, requires_admin
from api.reader import Reader
from api.schemas import AuditEntry, ExclusionBody, ExclusionRequest, LiftRequest, problems
from leaderboard.moderation import NO_POSTGRES, Exclusion, ModerationError
from leaderboard.periods import UTC
from leaderboard.stores import Stores
from leaderboard.stores.moderation import PostgresModeration

Rows = Annotated[int, Parameter(ge=1, le=1000, description="Newest first, at most this many")]
InForce = Annotated[bool, Parameter(description="Only the exclusions neither lifted nor expired")]
Action = Annotated[str | None, Parameter(max_length=64, description="Actions starting with this, e.g. `exclusion.`")]


def _store(stores: Stores) -> PostgresModeration:
    if stores.record is None:
        raise ProblemDetailsException(status_code=409, detail=NO_POSTGRES)
    return PostgresModeration(stores.record)


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _body(e: Exclusion, now: dt.datetime) -> ExclusionBody:
    return ExclusionBody(
        id=e.id, board=e.board_id, subject=e.subject_id, reason=e.reason, created_by=e.created_by,
        created_at=e.created_at.isoformat(), until=_iso(e.until), lifted_at=_iso(e.lifted_at),
        lifted_by=e.lifted_by, lift_reason=e.lift_reason, in_force=e.in_force(now),
    )  # fmt: skip


def _failed(exc: ModerationError) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=exc.status, detail=str(exc))


class ModerationController(Controller):
    path = "/leaderboard"
    tags = ("moderation",)
    guards = (requires_admin,)
    security = (BEARER,)

    @route("/exclusions", http_method=HttpMethod.OPTIONS, include_in_schema=False)
    async def allowed_methods(self) -> Response[None]:
        """Litestar's automatic answer here would list only the methods of the path's first
        handler. Handlers register in name order: this one must sort before `exclude`."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @post("/exclusions", status_code=201, responses=problems(400, 401, 403, 409, 429, 503))
    async def exclude(self, reader: Reader, stores: StoresDep, caller: Caller, data: ExclusionRequest) -> ExclusionBody:
        """Exclude a user (or group) from a board, or from every board (`board` null), optionally
        until a time. The current periods are republished without them within one refresh."""
        store = _store(stores)
        if data.board is not None and reader.boards.get(data.board) is None:
            raise ProblemDetailsException(status_code=400, detail=f"unknown board {data.board!r}")
        now = dt.datetime.now(UTC)
        try:
            done = await anyio.to_thread.run_sync(
                lambda: store.exclude(data.board, data.subject, data.reason, caller.sub, now, data.until)
            )
        except ModerationError as exc:
            raise _failed(exc) from None
        return _body(done, now)

    @get("/exclusions", responses=problems(400, 401, 403, 409, 429, 503))
    async def exclusions(self, stores: StoresDep, in_force: InForce = False, limit: Rows = 200) -> list[ExclusionBody]:
        """Exclusions, newest first, lifted and expired ones too unless `in_force`."""
        store = _store(stores)
        now = dt.datetime.now(UTC)
        found = await anyio.to_thread.run_sync(lambda: store.listed(now, in_force, limit))
        return [_body(e, now) for e in found]

    # The id is a string to the router: a path that is not a number is a 404 after the guard (401
    # or 403 first), not a route that does not exist.
    @post("/exclusions/{exclusion_id:str}/lift", status_code=200, responses=problems(400, 401, 403, 404, 409, 429, 503))
    async def lift(self, stores: StoresDep, caller: Caller, exclusion_id: str, data: LiftRequest) -> ExclusionBody:
        """Lift an exclusion in force: the subject is ranked again from the next refresh."""
        store = _store(stores)
        if not re.fullmatch(r"[0-9]{1,19}", exclusion_id):
            raise ProblemDetailsException(status_code=404, detail=f"no exclusion {exclusion_id[:40]!r}")
        now = dt.datetime.now(UTC)
        try:
            done = await anyio.to_thread.run_sync(lambda: store.lift(int(exclusion_id), caller.sub, data.reason, now))
        except ModerationError as exc:
            raise _failed(exc) from None
        return _body(done, now)

    @get("/audit", responses=problems(400, 401, 403, 409, 429, 503))
    async def audit(self, stores: StoresDep, action: Action = None, limit: Rows = 200) -> list[AuditEntry]:
        """Every admin change, newest first: board config, exclusions and liftings, reopenings."""
        store = _store(stores)
        try:
            frame = await anyio.to_thread.run_sync(lambda: store.audit(limit, action))
        except ModerationError as exc:
            raise _failed(exc) from None
        return [
            AuditEntry(r["id"], r["at"].isoformat(), r["actor"], r["action"], r["target"], r["reason"],
                       json.loads(r["details"]))
            for r in frame.iter_rows(named=True)
        ]  # fmt: skip
