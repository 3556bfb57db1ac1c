"""Metrics, request ids and logs.

The metric names and labels are the seed's (its alert rules query
`http_requests_total{status=~"5.."}` and `http_request_duration_seconds_bucket`), so this
is a small middleware of our own: Litestar's Prometheus plugin names the label `status_code`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()
REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request duration", ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
CACHE = Counter("leaderboard_cache_requests_total", "Standings reads by Redis outcome", ["result"], registry=REGISTRY)
CACHE_HIT, CACHE_MISS = CACHE.labels("hit"), CACHE.labels("miss")


class FreshnessCollector(Collector):
    """How old the published standings are and which stores answer, as the API last found them.

    A scrape reads no store: `api.freshness` refreshes these values in the background, so a
    store that hangs cannot hang a scrape. They are not file-backed gauges: in multiprocess mode
    prometheus_client cannot drop a series (a board an admin disables) and keeps a dead
    worker's values. Every worker checks for itself, so whichever answers a scrape reports its
    own view, one series per board and period, never one per worker or a sum.
    """

    def __init__(self) -> None:
        self._periods: dict[tuple[str, str], tuple[float, float]] = {}
        self._up: dict[str, bool] = {}

    def set_periods(self, periods: Mapping[tuple[str, str], tuple[float, float]]) -> None:
        """(board, period type) -> (published at, period start), Unix seconds; published 0: never."""
        self._periods = dict(periods)

    def set_up(self, stores: Mapping[str, bool]) -> None:
        self._up = dict(stores)

    def clear(self) -> None:
        self._periods, self._up = {}, {}

    def describe(self) -> Iterable[Metric]:
        return self._families({}, {})

    def collect(self) -> Iterable[Metric]:
        return self._families(self._periods, self._up)

    @staticmethod
    def _families(periods: Mapping[tuple[str, str], tuple[float, float]], up: Mapping[str, bool]) -> list[Metric]:
        published = GaugeMetricFamily(
            "leaderboard_published_timestamp_seconds",
            "When the current period of an enabled board was last published (Unix time; 0: never)",
            labels=["board", "period"],
        )
        start = GaugeMetricFamily(
            "leaderboard_period_start_timestamp_seconds",
            "When the current period of an enabled board started (Unix time)",
            labels=["board", "period"],
        )
        for (board, period), (at, began) in sorted(periods.items()):
            published.add_metric([board, period], at)
            start.add_metric([board, period], began)
        store_up = GaugeMetricFamily(
            "leaderboard_store_up", "1 if a configured store answers, else 0", labels=["store"]
        )
        for store, ok in sorted(up.items()):
            store_up.add_metric([store], 1.0 if ok else 0.0)
        return [published, start, store_up]


FRESHNESS = FreshnessCollector()
REGISTRY.register(FRESHNESS)


class SettlementCollector(Collector):
    """The settlement webhooks not delivered yet, as the API last read the outbox (with
    Postgres only; docs/contracts.md#settlement). Like the freshness gauges, refreshed in the
    background (`api.freshness`), never read by a scrape."""

    def __init__(self) -> None:
        self._undelivered: tuple[int, int, float] | None = None

    def set_undelivered(self, pending: int, failing: int, oldest: float) -> None:
        """Never tried, tried without a 2xx, and when the oldest of them was queued (Unix seconds; 0: none)."""
        self._undelivered = (pending, failing, oldest)

    def clear(self) -> None:
        self._undelivered = None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._undelivered)

    @staticmethod
    def _families(undelivered: tuple[int, int, float] | None) -> list[Metric]:
        count = GaugeMetricFamily(
            "leaderboard_settlement_webhooks_undelivered",
            "period.settled deliveries not acknowledged with a 2xx: pending (never tried) or failing",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            "leaderboard_settlement_webhook_oldest_undelivered_timestamp_seconds",
            "When the oldest undelivered period.settled event was queued (Unix time; 0: none)",
        )
        if undelivered is not None:
            count.add_metric(["pending"], undelivered[0])
            count.add_metric(["failing"], undelivered[1])
            oldest.add_metric([], undelivered[2])
        return [count, oldest]


SETTLEMENT = SettlementCollector()
REGISTRY.register(SETTLEMENT)

request_id: ContextVar[str] = ContextVar("request_id", default="-")
# The labelled series per (method, route template, status), bound once: `.labels()` costs more
# than the increment itself on the hot path.
_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


class ObservabilityMiddleware(ASGIMiddleware):
    """Times and counts every HTTP request by route template, and gives it an X-Request-ID."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or os.urandom(16).hex()
        token = request_id.set(rid)
        status = 500
        start = time.perf_counter()
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            labels = (scope.get("method", "GET"), scope.get("path_template") or "unmatched", str(status))
            series = _series.get(labels)
            if series is None:
                series = _series[labels] = (REQUESTS.labels(*labels), DURATION.labels(*labels))
            series[0].inc()
            series[1].observe(time.perf_counter() - start)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not counted:
                # Counted before the last byte leaves: a client's next scrape, on any worker, sees it.
                count()
            await send(message)

        try:
            await next_app(scope, receive, send_with_id)
        finally:
            if not counted:  # no complete response: an error, or a client gone
                count()
            request_id.reset(token)


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics() -> Response[bytes]:
    """Prometheus text format; with several workers, the sum over all of them.

    `leaderboard api --workers N` sets PROMETHEUS_MULTIPROC_DIR, where every worker's
    counters live in files: any worker answering a scrape then reports the whole server
    (and its own freshness view, which every worker keeps).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(FRESHNESS)
        registry.register(SETTLEMENT)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
