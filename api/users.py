"""One user's entry with neighbours: the caller's own (`/me`) or anyone's for admins; and a
friends board, the entries of up to 200 users, for any caller with a token."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter

from api.auth import Caller
from api.guards import BEARER, requires_self_or_admin, requires_token
from api.params import At, PeriodType, local_date
from api.reader import Reader
from api.schemas import Selected, UserIds, UserStanding, problems


class UsersController(Controller):
    path = "/leaderboard"
    tags = ("users",)
    guards = (requires_token,)
    security = (BEARER,)

    @get("/{board:str}/{period:str}/me", responses=problems(400, 401, 404, 429, 503))
    async def me(
        self,
        reader: Reader,
        caller: Caller,
        board: str,
        period: PeriodType,
        at: At = None,
        around: Annotated[int, Parameter(ge=0, le=50)] = 0,
    ) -> UserStanding:
        """The caller's entry (bearer JWT `sub`) and `around` neighbours on each side."""
        return UserStanding(**await reader.user_entry(board, period, local_date(at, period), caller.sub, around))

    @get(
        "/{board:str}/{period:str}/users/{user_id:str}",
        guards=[requires_self_or_admin],
        responses=problems(400, 401, 403, 404, 429, 503),
    )
    async def user(
        self,
        reader: Reader,
        board: str,
        period: PeriodType,
        user_id: str,
        at: At = None,
        around: Annotated[int, Parameter(ge=0, le=50)] = 0,
    ) -> UserStanding:
        """One user's entry: the user themself or an admin."""
        return UserStanding(**await reader.user_entry(board, period, local_date(at, period), user_id, around))

    @post("/{board:str}/{period:str}/users", status_code=200, responses=problems(400, 401, 404, 429, 503))
    async def users(
        self,
        reader: Reader,
        board: str,
        period: PeriodType,
        data: UserIds,
        at: At = None,
    ) -> Selected:
        """A friends board: these users' entries in rank order, and the ids not ranked (`absent`)."""
        return Selected(**await reader.users(board, period, local_date(at, period), list(dict.fromkeys(data.user_ids))))
