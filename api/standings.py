"""Public standings routes: boards, one period's standings, published periods."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get
from litestar.response.base import ASGIResponse

from api.params import At, Limit, Offset, PeriodType, local_date
from api.reader import Page, Reader, bounded_put
from api.schemas import BoardInfo, Periods, SeasonInfo, Standings, problems
from leaderboard.boards import Board
from leaderboard.periods import season_period


class _Published(Response[bytes]):
    """A cached body as published, its ASGI response built once and sent to every request for
    it: the hot route skips building a response and encoding its headers each time."""

    __slots__ = ("_asgi",)

    def __init__(self, body: bytes) -> None:
        super().__init__(body, media_type="application/json")
        self._asgi: ASGIResponse | None = None

    def to_asgi_response(self, app: Any, request: Request, **kwargs: Any) -> ASGIResponse:
        if self._asgi is None:  # the route's own settings (headers, status) are the same every time
            self._asgi = super().to_asgi_response(app, request, **kwargs)
        return self._asgi


_published: dict[bytes, _Published] = {}


def _published_response(body: bytes) -> _Published:
    response = _published.get(body)  # equal bytes match: a body re-read from Redis reuses its response
    if response is None:
        response = _Published(body)
        bounded_put(_published, body, response, limit=256)  # a body and its response each
    return response


def _seasons(board: Board, tz: ZoneInfo) -> list[SeasonInfo]:
    local = [season_period(board, s.id, tz).bounds(tz) for s in board.seasons]
    return [SeasonInfo(s.id, s.title, a.astimezone(tz).isoformat(), b.astimezone(tz).isoformat())
            for s, (a, b) in zip(board.seasons, local, strict=True)]  # fmt: skip


def _answer(page: Page) -> Response[Standings]:
    if page.raw is not None:  # the cached body as published: sent without re-encoding
        return _published_response(page.raw)
    return Response(Standings(**page.body))


class StandingsController(Controller):
    path = "/leaderboard"
    tags = ("standings",)

    @get("/boards", responses=problems(429))
    async def boards(self, reader: Reader) -> list[BoardInfo]:
        """Boards, their periods and display limits."""
        await reader.fresh_overrides()
        tz = reader.boards.tz
        return [
            BoardInfo(b.id, b.title, b.aggregate, b.order, list(b.periods), reader.limit_for(b), _seasons(b, tz))
            for b in reader.boards.boards
            if reader.enabled(b.id)
        ]

    @get("/{board:str}/{period:str}", responses=problems(400, 404, 429, 503))
    async def standings(
        self,
        reader: Reader,
        board: str,
        period: PeriodType,
        at: At = None,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Response[Standings]:
        """One period's standings (the current one, or the one containing `at`), one page. For
        `season`: the board's season containing `at` (a date or a date-time; default now), 404
        when none does."""
        page = await reader.standings(board, period, local_date(at, period), limit, offset)
        return _answer(page)

    @get("/{board:str}/{period:str}/{key:str}", responses=problems(400, 404, 429, 503))
    async def by_key(
        self,
        reader: Reader,
        board: str,
        period: PeriodType,
        key: str,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Response[Standings]:
        """One period's standings named by its key, one page: a season id of the board
        (`/leaderboard/points/season/spring`; 404 listing its seasons), or a calendar key
        (`2026-11-26`, `2026-W48`, `2026-11`, `all`)."""
        return _answer(await reader.standings(board, period, None, limit, offset, key=key))

    @get("/{board:str}/{period:str}/periods", responses=problems(400, 404, 429, 503))
    async def periods(self, reader: Reader, board: str, period: PeriodType) -> Periods:
        """Published period keys, newest first."""
        return Periods(board, period, await reader.periods(board, period))
