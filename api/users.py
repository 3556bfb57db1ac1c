"""One user's entry with neighbours: the caller's own (`/me`) or anyone's for admins."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import Parameter

from api.auth import authenticate, require_self_or_admin
from api.params import local_date, reader_of
from api.reader import Reader
from api.schemas import UserStanding


class UsersController(Controller):
    path = "/leaderboard"
    tags = ("users",)
    dependencies = {"reader": Provide(reader_of, sync_to_thread=False)}  # noqa: RUF012 - Litestar's own attribute

    @get("/{board:str}/{period:str}/me")
    async def me(
        self,
        request: Request[Any, Any, Any],
        reader: Reader,
        board: str,
        period: str,
        at: Annotated[str | None, Parameter(description="A local date inside the period")] = None,
        around: Annotated[int, Parameter(ge=0, le=50)] = 0,
    ) -> UserStanding:
        """The caller's entry (bearer JWT `sub`) and `around` neighbours on each side."""
        caller = authenticate(request, request.app.state.settings)
        return UserStanding(**await reader.user_entry(board, period, local_date(at), caller.sub, around))

    @get("/{board:str}/{period:str}/users/{user_id:str}")
    async def user(
        self,
        request: Request[Any, Any, Any],
        reader: Reader,
        board: str,
        period: str,
        user_id: str,
        at: Annotated[str | None, Parameter(description="A local date inside the period")] = None,
        around: Annotated[int, Parameter(ge=0, le=50)] = 0,
    ) -> UserStanding:
        """One user's entry: the user themself or an admin."""
        require_self_or_admin(authenticate(request, request.app.state.settings), user_id)
        return UserStanding(**await reader.user_entry(board, period, local_date(at), user_id, around))
