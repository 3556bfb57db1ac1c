"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import Controller, Response, get

from api.reader import Reader
from api.schemas import NOT_READY, Health
from leaderboard.stores.protocols import AsyncStandingsSource


async def _state(store: AsyncStandingsSource) -> str:
    try:
        await store.ping()
    except Exception as exc:  # any failure means "down"; the detail says which
        return f"down: {type(exc).__name__}" if store.name == "postgres" else "missing"
    return "ok"


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", sync_to_thread=False)
    def live(self) -> Health:
        """Liveness: answers while the process lives, calls nothing."""
        return Health("ok")

    @get("/ready", responses=NOT_READY)
    async def ready(self, reader: Reader) -> Response[Health]:
        """Readiness: 200 `ok`, or `degraded` while some store can still serve; else 503."""
        details = {reader.primary.name: await _state(reader.primary)}
        primary_ok = details[reader.primary.name] == "ok"
        if reader.fallback is not None and not primary_ok:
            details[reader.fallback.name] = await _state(reader.fallback)  # the lake behind Postgres
        if reader.cache is not None:
            try:
                await reader.cache.ping()
                details["redis"] = "ok"
            except Exception as exc:
                details["redis"] = f"down: {type(exc).__name__}"
        if primary_ok:
            status = "ok" if details.get("redis", "ok") == "ok" else "degraded"
        elif "ok" in details.values():
            status = "degraded"  # Postgres down: Redis serves what it holds, the lake the rest
        else:
            return Response(Health("unavailable", details), status_code=503)
        return Response(Health(status, details), status_code=200)
