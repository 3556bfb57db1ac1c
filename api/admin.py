"""Admin routes: board overrides and refresh requests (admin JWT)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.exceptions import PermissionDeniedException
from litestar.plugins.problem_details import ProblemDetailsException

from api.auth import Caller, authenticate
from leaderboard.stores import Override, Stores
from leaderboard.stores.redis import rebuild as rebuild_cache


class BoardConfig(msgspec.Struct):
    display_limit: int
    enabled: bool


class BoardConfigPatch(msgspec.Struct, forbid_unknown_fields=True):
    display_limit: int | None = None
    enabled: bool | None = None


class ConfigBody(msgspec.Struct):
    boards: dict[str, BoardConfig]


class ConfigUpdate(msgspec.Struct, forbid_unknown_fields=True):
    boards: dict[str, BoardConfigPatch]


class RefreshAccepted(msgspec.Struct):
    id: str
    status: str
    cache_periods_rebuilt: int | None


def _admin(request: Request[Any, Any, Any]) -> Caller:
    caller = authenticate(request, request.app.state.settings)
    if not caller.is_admin:
        raise PermissionDeniedException("admin role required")
    return caller


def _current(request: Request[Any, Any, Any]) -> ConfigBody:
    reader = request.app.state.reader
    return ConfigBody({b.id: BoardConfig(reader.limit_for(b), reader.enabled(b.id)) for b in reader.boards.boards})


class AdminController(Controller):
    path = "/leaderboard/config"
    tags = ("admin",)

    @get("/")
    async def get_config(self, request: Request[Any, Any, Any]) -> ConfigBody:
        """Effective display limit and enabled flag of every board."""
        _admin(request)
        return _current(request)

    @put("/")
    async def put_config(self, request: Request[Any, Any, Any], data: ConfigUpdate) -> ConfigBody:
        """Change boards' display limit (1-1000) or enabled flag; applied without restart."""
        caller = _admin(request)
        reader = request.app.state.reader
        changes = {}
        for board_id, patch in data.boards.items():
            board = reader.boards.get(board_id)
            if board is None:
                raise ProblemDetailsException(status_code=400, detail=f"unknown board {board_id!r}")
            if patch.display_limit is not None and not 1 <= patch.display_limit <= 1000:
                raise ProblemDetailsException(
                    status_code=400, detail=f"{board_id}: display_limit must be 1-1000, got {patch.display_limit}"
                )
            old = reader.overrides.get(board_id, Override())
            changes[board_id] = Override(
                patch.display_limit if patch.display_limit is not None else old.display_limit,
                patch.enabled if patch.enabled is not None else old.enabled,
            )
        stores: Stores = request.app.state.stores
        await anyio.to_thread.run_sync(stores.board_config().save, changes, caller.sub)
        await reader.reload_overrides()
        return _current(request)

    @post("/refresh", status_code=202)
    async def refresh(self, request: Request[Any, Any, Any]) -> Response[RefreshAccepted]:
        """Reload the config, rebuild the Redis cache from Postgres, and ask the pipeline to
        recompute the current periods (a refresh request it picks up)."""
        caller = _admin(request)
        reader = request.app.state.reader
        stores: Stores = request.app.state.stores
        await reader.reload_overrides()
        rebuilt = None
        if stores.record is not None and stores.redis_url:

            def rebuild() -> int:
                with stores.redis() as client:
                    assert stores.record is not None and client is not None
                    return rebuild_cache(stores.record, client, stores.keys, reader.boards)

            rebuilt = await anyio.to_thread.run_sync(rebuild)
        rid = await anyio.to_thread.run_sync(stores.refresh_requests().request, caller.sub)
        return Response(RefreshAccepted(rid, "pending", rebuilt), status_code=202)
