"""Liveness and readiness probes."""

from __future__ import annotations

import redis.asyncio as aioredis
from litestar import Controller, Response, get

from api.reader import Reader
from api.schemas import Health


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
        if reader.pool is not None:
            try:
                async with reader.pool.connection(timeout=2) as conn:
                    await conn.execute("SELECT 1")
                details["postgres"] = "ok"
            except Exception as exc:  # any failure means "down"; the detail says which
                details["postgres"] = f"down: {type(exc).__name__}"
        else:
            details["lake"] = "ok" if reader.lake.root.is_dir() else "missing"
        if reader.redis is not None:
            try:
                await reader.redis.ping()
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
