"""Admin routes: board overrides and refresh requests (a bearer token with the admin role)."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, Response, get, post, put, route
from litestar.enums import HttpMethod
from litestar.plugins.problem_details import ProblemDetailsException

from api.auth import Caller
from api.deps import StoresDep
from api.guards import BEARER, requires_admin
from api.params import strict_body
from api.reader import Reader
from api.schemas import BoardConfig, ConfigBody, ConfigUpdate, RefreshAccepted, problems
from leaderboard.stores import Override
from leaderboard.stores.redis import rebuild as rebuild_cache


def _current(reader: Reader) -> ConfigBody:
    return ConfigBody({b.id: BoardConfig(reader.limit_for(b), reader.enabled(b.id)) for b in reader.boards.boards})


class AdminController(Controller):
    path = "/leaderboard/config"
    tags = ("admin",)
    guards = (requires_admin,)
    security = (BEARER,)

    @get("/", responses=problems(401, 403, 429))
    async def get_config(self, reader: Reader) -> ConfigBody:
        """Effective display limit and enabled flag of every board."""
        return _current(reader)

    @route("/", http_method=HttpMethod.OPTIONS, include_in_schema=False)
    async def allowed_methods(self) -> Response[None]:
        """Litestar's automatic answer here would list only the methods of the path's first
        handler. Handlers register in name order: this one must sort before `get_config`."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, PUT"})

    @put("/", responses=problems(400, 401, 403, 429, 503))
    async def put_config(
        self, request: Request[Any, Any, Any], reader: Reader, stores: StoresDep, caller: Caller, data: ConfigUpdate
    ) -> ConfigBody:
        """Change boards' display limit (1-1000) or enabled flag; applied without restart."""
        data = await strict_body(request, ConfigUpdate)  # `data` documents the body; this checks it
        changes: dict[str, Override] = {}
        for board_id, patch in data.boards.items():
            if reader.boards.get(board_id) is None:
                raise ProblemDetailsException(status_code=400, detail=f"unknown board {board_id!r}")
            old = reader.overrides.get(board_id, Override())
            changes[board_id] = Override(
                patch.display_limit if patch.display_limit is not None else old.display_limit,
                patch.enabled if patch.enabled is not None else old.enabled,
            )
        await anyio.to_thread.run_sync(stores.board_config().save, changes, caller.sub, data.reason)
        await reader.reload_overrides()
        return _current(reader)

    @post("/refresh", status_code=202, responses=problems(401, 403, 429, 503))
    async def refresh(self, reader: Reader, stores: StoresDep, caller: Caller) -> Response[RefreshAccepted]:
        """Reload the config, rebuild the Redis cache from Postgres, and ask the pipeline to
        recompute the current periods (a refresh request it picks up)."""
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
