"""Liveness and readiness probes."""

from __future__ import annotations

import redis.asyncio as aioredis
from litestar import Controller, Response, get

from api.reader import Reader
from api.schemas import Health
from leaderboard.stores.postgres import AsyncPostgres


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", sync_to_thread=False)
    def live(self) -> Health:
        """Liveness: answers while the process lives, calls nothing."""
        return Health("ok")

    @get("/ready")
    async def ready(self, reader: Reader) -> Response[Health]:
        """Readiness: 200 when some store can serve standings ('degraded' without Redis), else 503."""
        details: dict[str, str] = {}
        primary_name = "postgres" if isinstance(reader.primary, AsyncPostgres) else "lake"
        try:
            await reader.primary.ping()
            details[primary_name] = "ok"
        except Exception as exc:  # any failure means "down"; the detail says which
            details[primary_name] = f"down: {type(exc).__name__}" if primary_name == "postgres" else "missing"
        if reader.cache is not None:
            try:
                await reader.cache.ping()
                details["redis"] = "ok"
            except aioredis.RedisError as exc:
                details["redis"] = f"down: {type(exc).__name__}"
        primary = details.get("postgres", details.get("lake"))
        if primary == "ok":
            status = "ok" if details.get("redis", "ok") == "ok" else "degraded"
        elif details.get("redis") == "ok":
            status = "degraded"  # Postgres down, cached standings can still be served
        else:
            return Response(Health("unavailable", details), status_code=503)
        return Response(Health(status, details), status_code=200)
