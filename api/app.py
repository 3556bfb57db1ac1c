"""`create_app()`: the Litestar application, its lifespan (pools) and error handling."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from api.admin import AdminController
from api.deps import Services, dependencies
from api.freshness import watching
from api.health import HealthController
from api.moderation import ModerationController
from api.observability import ObservabilityMiddleware, configure_logging, metrics
from api.openapi import document_boards, forbid_unknown_fields, openapi_config
from api.params import query_names, reject_unknown_query
from api.reader import Reader
from api.results import ResultsController
from api.schemas import BoardConfigPatch, ConfigUpdate, ExclusionRequest, LiftRequest, ReopenRequest
from api.standings import StandingsController
from api.users import UsersController
from leaderboard.boards import current_boards, load_boards
from leaderboard.settings import Settings, get_settings
from leaderboard.standings import StandingsError
from leaderboard.stores import StoreUnavailable
from leaderboard.stores.lake_async import AsyncLake
from leaderboard.stores.postgres import AsyncPostgres
from leaderboard.stores.redis import AsyncBodies, hiredis_packing

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5  # what a 503 asks clients to wait: about the time pools take to reconnect
# A pool whose server is down retries in the background for this long, then on demand (the next
# request or readiness probe): it reconnects soon after the server comes back, not after a
# backoff that grew through the outage.
RECONNECT_SECONDS = 2.0
REDIS_HEALTH_CHECK_SECONDS = 5  # a connection idle this long is PINGed before use


def _standings_error(request: Request[Any, Any, Any], exc: StandingsError) -> Response[Any]:
    return ProblemDetailsException(status_code=exc.status, detail=str(exc)).to_response(request)


def _unavailable(request: Request[Any, Any, Any], exc: StoreUnavailable) -> Response[Any]:
    """No store could answer: 503 with Retry-After, never a 500, never a 404 hiding the outage.
    The detail names no server (the log does)."""
    log.info("503 on %s %s: %s", request.method, request.url.path, exc)  # the reader warned of the store
    return ProblemDetailsException(
        status_code=503,
        detail="a store this answer needs is unavailable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    ).to_response(request)


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


def redis_pool(url: str, max_connections: int) -> aioredis.BlockingConnectionPool:
    """The API's Redis connections. Blocking: past `max_connections` a request waits for one
    instead of failing over. A command on a connection that died with its server (a restart) is
    sent once more on a new one; a timeout is not retried: the next store answers instead."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=2, socket_timeout=2, socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=REDIS_HEALTH_CHECK_SECONDS,
    )  # fmt: skip
    pool.connection_class = hiredis_packing(pool.connection_class)  # the friends board's 200 ids: packed in C
    return pool


class FailOpenRedisStore(RedisStore):
    """Rate-limit counters in Redis shared by every replica; with Redis down, requests pass
    (unlimited) rather than fail: a cache outage must not take the API down. After a failure
    Redis is not asked for a second, so an outage costs no request a connection attempt."""

    _down_until = 0.0

    def _down(self) -> bool:
        return self._down_until > time.monotonic()

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + 1.0
        log.warning("rate limit store unavailable, not limiting: %s", exc)

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        if self._down():
            return None
        try:
            return await super().get(key, renew_for)
        except (aioredis.RedisError, OSError) as exc:
            self._failed(exc)
            return None

    async def set(self, key: str, value: str | bytes, expires_in: int | dt.timedelta | None = None) -> None:
        if self._down():
            return
        try:
            await super().set(key, value, expires_in)
        except (aioredis.RedisError, OSError) as exc:
            self._failed(exc)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    services = Services(settings)

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
                # A connection that died with its server (a restart) is found and replaced when
                # taken, not handed to a request.
                check=AsyncConnectionPool.check_connection,
                reconnect_timeout=RECONNECT_SECONDS,
            )
            await pool.open(wait=False)
        client = None
        if settings.redis_url:
            client = aioredis.Redis(connection_pool=redis_pool(settings.redis_url, settings.REDIS_MAX_CONNECTIONS))
        stores = services.stores
        lake = AsyncLake(stores.lake)
        reader = Reader(
            boards=current_boards(),
            primary=AsyncPostgres(pool) if pool is not None else lake,
            cache=AsyncBodies(client, stores.keys) if client is not None else None,
            cache_ttl=settings.CACHE_TTL_SECONDS,
            fallback=lake if pool is not None else None,  # the lake holds every snapshot Postgres does
        )
        services.attach(reader)
        await reader.fresh_overrides()
        try:
            async with watching(reader):  # the freshness gauges of /metrics, refreshed in the background
                yield
        finally:
            services.attach(None)
            if pool is not None:
                await pool.close()
            if client is not None:
                await client.aclose()

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    store = (
        FailOpenRedisStore(
            aioredis.Redis(connection_pool=redis_pool(settings.redis_url, settings.REDIS_MAX_CONNECTIONS)),
            namespace=f"{settings.REDIS_KEY_PREFIX}:ratelimit",
            handle_client_shutdown=True,
        )
        if settings.redis_url
        else MemoryStore()
    )
    rate_limit = RateLimitConfig(
        rate_limit=("minute", settings.RATE_LIMIT_PER_MINUTE),
        exclude=["/health", "/metrics", "/schema"],
        middleware_class=RetryAfterRateLimit,
    )
    app = Litestar(
        route_handlers=[
            StandingsController,
            UsersController,
            AdminController,
            HealthController,
            metrics,
            ResultsController,
            ModerationController,
        ],
        state=State({"settings": settings}),  # for the guards, which get no dependencies
        dependencies=dependencies(services),
        middleware=[ObservabilityMiddleware(), *([rate_limit.middleware] if settings.RATE_LIMIT_PER_MINUTE else [])],
        stores={"rate_limit": store},
        lifespan=[lifespan],
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True))],
        exception_handlers={
            StandingsError: _standings_error,
            StoreUnavailable: _unavailable,
            Exception: _internal_error,
        },
        before_request=reject_unknown_query,
        logging_config=None,  # configure_logging above owns the handlers (JSON or text)
        openapi_config=openapi_config(),
    )
    app.state.query_names = query_names(app)
    forbid_unknown_fields(app, ConfigUpdate, BoardConfigPatch, ReopenRequest, ExclusionRequest, LiftRequest)
    document_boards(app, load_boards(settings.LEADERBOARD_BOARDS, settings.LEADERBOARD_TIMEZONE))
    return app
