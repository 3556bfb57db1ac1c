"""`create_app()`: the Litestar application, its lifespan (pools) and error handling."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.asyncio as aioredis
from litestar import Controller, Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.params import Parameter
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from psycopg_pool import AsyncConnectionPool

from api.admin import AdminController
from api.auth import authenticate, require_self_or_admin
from api.observability import ObservabilityMiddleware, configure_logging, metrics
from api.reader import Reader
from api.schemas import BoardInfo, Health, Periods, Standings, UserStanding
from leaderboard.boards import current_boards
from leaderboard.cache import CacheKeys
from leaderboard.lake import Lake
from leaderboard.settings import Settings, get_settings
from leaderboard.standings import StandingsError

log = logging.getLogger(__name__)


def _reader(state: State) -> Reader:
    return state.reader


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ProblemDetailsException(status_code=400, detail=f"at={value!r} is not a date like 2026-11-26") from None


class StandingsController(Controller):
    path = "/leaderboard"
    tags = ("standings",)
    dependencies = {"reader": Provide(_reader, sync_to_thread=False)}  # noqa: RUF012 - Litestar's own attribute

    @get("/boards")
    async def boards(self, reader: Reader) -> list[BoardInfo]:
        """Boards, their periods and display limits."""
        await reader.fresh_overrides()
        return [
            BoardInfo(b.id, b.title, b.aggregate, b.order, list(b.periods), reader.limit_for(b))
            for b in reader.boards.boards
            if reader.enabled(b.id)
        ]

    @get("/{board:str}/{period:str}")
    async def standings(
        self,
        state: State,
        board: str,
        period: str,
        at: Annotated[str | None, Parameter(description="A local date inside the period (YYYY-MM-DD)")] = None,
        limit: Annotated[int | None, Parameter(ge=1, le=100)] = None,
        offset: Annotated[int, Parameter(ge=0)] = 0,
    ) -> Response[Standings]:
        """One period's standings (the current one, or the one containing `at`), one page."""
        # The hot route reads the reader off the app state: no dependency to resolve per request.
        body = await state.reader.standings(board, period, _date(at), limit, offset)
        if isinstance(body, bytes):  # the cached body as published: sent without re-encoding
            return Response(body, media_type="application/json")
        return Response(Standings(**body))

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
        return UserStanding(**await reader.user_entry(board, period, _date(at), caller.sub, around))

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
        return UserStanding(**await reader.user_entry(board, period, _date(at), user_id, around))

    @get("/{board:str}/{period:str}/periods")
    async def periods(self, reader: Reader, board: str, period: str) -> Periods:
        """Published period keys, newest first."""
        return Periods(board, period, await reader.periods(board, period))


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", sync_to_thread=False)
    def live(self) -> Health:
        """Liveness: answers while the process lives, calls nothing."""
        return Health("ok")

    @get("/ready")
    async def ready(self, state: State) -> Response[Health]:
        """Readiness: 200 when some store can serve standings ('degraded' without Redis), else 503."""
        reader: Reader = state.reader
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


def _standings_error(request: Request[Any, Any, Any], exc: StandingsError) -> Response[Any]:
    return ProblemDetailsException(status_code=exc.status, detail=str(exc)).to_response(request)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ProblemDetailsException(status_code=500, detail="internal error").to_response(request)


class RetryAfterRateLimit(RateLimitMiddleware):
    """Litestar's limiter with `Retry-After` on refusals (it sends only the RateLimit-* draft headers)."""

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        if headers.get(self.config.rate_limit_remaining_header_key) == "0":
            headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers


class FailOpenRedisStore(RedisStore):
    """Rate-limit counters in Redis shared by every replica; with Redis down, requests pass
    (unlimited) rather than fail: a cache outage must not take the API down."""

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        try:
            return await super().get(key, renew_for)
        except aioredis.RedisError:
            return None

    async def set(self, key: str, value: str | bytes, expires_in: int | dt.timedelta | None = None) -> None:
        try:
            await super().set(key, value, expires_in)
        except aioredis.RedisError:
            log.warning("rate limit store unavailable; not limiting")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = None
        if settings.DATABASE_URL:
            pool = AsyncConnectionPool(
                settings.DATABASE_URL,
                min_size=settings.DATABASE_POOL_MIN_SIZE,
                max_size=settings.DATABASE_POOL_MAX_SIZE,
                open=False,
                timeout=3,  # a request waits at most this long for a connection, then falls back
                kwargs={"connect_timeout": 3},
            )
            await pool.open(wait=False)
        client = None
        if settings.redis_url:
            # A blocking pool: past REDIS_MAX_CONNECTIONS a request waits for a connection
            # instead of failing over to Postgres.
            pool_ = aioredis.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.REDIS_MAX_CONNECTIONS, timeout=2, socket_timeout=2,
                socket_connect_timeout=2,
            )  # fmt: skip
            client = aioredis.Redis(connection_pool=pool_)
        app.state.settings = settings
        app.state.reader = Reader(
            boards=current_boards(),
            lake=Lake(settings.LEADERBOARD_LAKE_DIR),
            keys=CacheKeys(settings.REDIS_KEY_PREFIX),
            pool=pool,
            redis=client,
            cache_ttl=settings.CACHE_TTL_SECONDS,
            database_url=settings.DATABASE_URL,
        )
        await app.state.reader.fresh_overrides()
        try:
            yield
        finally:
            if pool is not None:
                await pool.close()
            if client is not None:
                await client.aclose()

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    store = (
        FailOpenRedisStore.with_client(url=settings.redis_url, namespace=f"{settings.REDIS_KEY_PREFIX}:ratelimit")
        if settings.redis_url
        else MemoryStore()
    )
    rate_limit = RateLimitConfig(
        rate_limit=("minute", settings.RATE_LIMIT_PER_MINUTE),
        exclude=["/health", "/metrics", "/schema"],
        middleware_class=RetryAfterRateLimit,
    )
    return Litestar(
        route_handlers=[StandingsController, AdminController, HealthController, metrics],
        middleware=[ObservabilityMiddleware(), *([rate_limit.middleware] if settings.RATE_LIMIT_PER_MINUTE else [])],
        stores={"rate_limit": store},
        lifespan=[lifespan],
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True))],
        exception_handlers={StandingsError: _standings_error, Exception: _internal_error},
        logging_config=None,  # configure_logging above owns the handlers (JSON or text)
        openapi_config=OpenAPIConfig(title="Leaderboard API", version="0.1.0", path="/schema"),
    )
