"""Settlement routes (docs/contracts.md#settlement): a period's settled results, and an
admin's reopening of a settled period.

Both read and write Postgres only: settlement lives there (without DATABASE_URL nothing ever
settles, and both answer 409 saying so). A Postgres that is down is a 503, as for every read.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import anyio
from litestar import Controller, get, post
from litestar.plugins.problem_details import ProblemDetailsException

from api.auth import Caller
from api.deps import StoresDep
from api.guards import BEARER, requires_admin
from api.params import At, Limit, Offset, PeriodType, RequiredAt, local_date
from api.reader import Reader
from api.schemas import ReopenRequest, Results, SettlementState, problems
from leaderboard.boards import Board
from leaderboard.periods import UTC
from leaderboard.settings import Settings
from leaderboard.settlement import Settlement, SettlementError, earliest_settlement, phase, settles
from leaderboard.standings import StandingsError, check_key, resolve_key
from leaderboard.stores.postgres import AsyncPostgres
from leaderboard.stores.settlement import AsyncSettlement, PostgresSettlement

NO_POSTGRES = "settlement needs Postgres (DATABASE_URL): without it no period is ever settled"


def _conflict(detail: str) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=409, detail=detail)


def _not_settled(what: str, end: dt.datetime, settled: Settlement | None, grace: dt.timedelta, tz: ZoneInfo) -> str:
    """Why there are no results yet, and from when there may be."""
    state = phase(end, dt.datetime.now(UTC), settled)
    earliest = earliest_settlement(end, grace, settled).astimezone(tz).isoformat()
    if state == "live":
        return f"{what} is live until {end.astimezone(tz).isoformat()}; it settles at the earliest at {earliest}"
    if state == "reopened" and settled is not None and settled.reopened_at is not None:
        return (
            f"{what} was reopened at {settled.reopened_at.astimezone(tz).isoformat()}; it settles again under "
            f"revision {settled.revision + 1} at the earliest at {earliest}, once recomputed"
        )
    return f"{what} is closing (late files still correct it); it settles at the earliest at {earliest}"


async def _results(
    reader: Reader, settings: Settings, found: Board, period: str, key: str, limit: int | None, offset: int
) -> Results:
    """The settled standings of one board's period, or the 409 saying when they will be."""
    what = f"{found.id} {period} {key}"
    if not settles(period):
        raise _conflict("all-time standings never settle: they have no end")
    if not isinstance(reader.primary, AsyncPostgres):
        raise _conflict(NO_POSTGRES)
    limit = limit or reader.limit_for(found)
    settled, snapshot = await AsyncSettlement(reader.primary.pool).results(
        found.id, period, key, offset + limit, offset
    )
    if snapshot is None:
        raise StandingsError(f"no published {period} standings of {found.id!r} for {key}")
    if settled is None or settled.state != "settled":
        grace = dt.timedelta(minutes=settings.SETTLE_GRACE_MINUTES)
        raise _conflict(_not_settled(what, snapshot.period_end, settled, grace, reader.boards.tz))
    return Results(
        **snapshot.body(reader.boards.tz, limit),
        state=settled.state,
        revision=settled.revision,
        content_hash=settled.content_hash,
        settled_at=settled.settled_at.isoformat(),
        late_after_settlement=settled.late_after_settlement,
    )


class ResultsController(Controller):
    path = "/leaderboard"
    tags = ("settlement",)

    @get("/{board:str}/{period:str}/results", responses=problems(400, 404, 409, 429, 503))
    async def results(
        self,
        reader: Reader,
        settings: Settings,
        board: str,
        period: PeriodType,
        at: At = None,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Results:
        """The settled standings of a period (one page), with their revision and content hash;
        409 while the period is live, closing or reopened."""
        found = reader.board(board, period)
        key = resolve_key(reader.boards, period, local_date(at, period), found.id)
        return await _results(reader, settings, found, period, key, limit, offset)

    @get("/{board:str}/{period:str}/{key:str}/results", responses=problems(400, 404, 409, 429, 503))
    async def results_by_key(
        self,
        reader: Reader,
        settings: Settings,
        board: str,
        period: PeriodType,
        key: str,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Results:
        """The settled standings of a period named by its key (a season id:
        `/leaderboard/points/season/spring/results`); 409 while it is not settled."""
        found = reader.board(board, period)
        return await _results(
            reader, settings, found, period, check_key(reader.boards, found, period, key), limit, offset
        )

    @post(
        "/{board:str}/{period:str}/reopen",
        status_code=200,
        guards=[requires_admin],
        security=[BEARER],
        responses=problems(400, 401, 403, 404, 409, 429, 503),
    )
    async def reopen(
        self,
        reader: Reader,
        stores: StoresDep,
        caller: Caller,
        board: str,
        period: PeriodType,
        data: ReopenRequest,
        at: RequiredAt,
    ) -> SettlementState:
        """Reopen a settled period (admin): its next publish may change it, and it settles again
        SETTLE_GRACE_MINUTES later under the next revision. Who and why go to the audit."""
        found = reader.board(board, period)
        key = resolve_key(reader.boards, period, local_date(at, period), found.id)
        if not settles(period):
            raise _conflict("all-time standings never settle, so they cannot be reopened")
        if stores.record is None:
            raise _conflict(NO_POSTGRES)
        store = PostgresSettlement(stores.record)
        try:
            done = await anyio.to_thread.run_sync(
                store.reopen, found.id, period, key, caller.sub, data.reason, dt.datetime.now(UTC)
            )
        except SettlementError as exc:
            raise ProblemDetailsException(status_code=exc.status, detail=str(exc)) from None
        return SettlementState(
            board=done.board_id,
            period=done.period_type,
            period_key=done.period_key,
            state=done.state,
            revision=done.revision,
            content_hash=done.content_hash,
            settled_at=done.settled_at.isoformat(),
            reopened_at=done.reopened_at.isoformat() if done.reopened_at else None,
        )
