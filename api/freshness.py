"""Staleness for operators: when each enabled board's current periods were published, and
which configured stores answer (docs/contracts.md#health-and-metrics).

A task of the API's lifespan reads these every REFRESH_SECONDS, each read bounded by
TIMEOUT_SECONDS, into `api.observability.FRESHNESS`; `/metrics` only reports what it found.
So a scrape stays cheap however many boards there are, and a store that hangs costs the
task a timeout, never a scrape. "Published at" comes from the primary store (the Postgres
registry, else the lake snapshot headers): Redis is a cache and never says what was published.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from api.observability import FRESHNESS, SETTLEMENT, FreshnessCollector, SettlementCollector
from api.reader import Reader
from leaderboard.boards import SEASON
from leaderboard.periods import local_midnight, period_of, season_at
from leaderboard.stores.postgres import AsyncPostgres
from leaderboard.stores.protocols import PeriodId
from leaderboard.stores.settlement import AsyncSettlement

log = logging.getLogger(__name__)
REFRESH_SECONDS = 5.0
TIMEOUT_SECONDS = 2.0


@dataclass
class FreshnessWatch:
    """Reads the stores for the freshness gauges; one per API process (each worker has its own)."""

    reader: Reader
    gauges: FreshnessCollector = FRESHNESS
    settlement: SettlementCollector = SETTLEMENT
    timeout: float = TIMEOUT_SECONDS
    _failing: set[str] = field(default_factory=set)

    @property
    def primary_name(self) -> str | None:
        """The primary store's `store` label; the lake has none (a folder, not a server to be down)."""
        return "postgres" if isinstance(self.reader.primary, AsyncPostgres) else None

    def current_periods(self, now: dt.datetime) -> dict[PeriodId, float]:
        """The current period of each type of every enabled board, with its start (Unix seconds).

        Empty before the boards' start_date: nothing is due to be published yet."""
        boards = self.reader.boards
        today = now.astimezone(boards.tz).date()
        if today < boards.start_date:
            return {}
        out = {}
        for board in boards.boards:
            if self.reader.enabled(board.id):
                for period_type in board.periods:
                    if period_type == SEASON:  # the live season, if one is
                        live = season_at(board, now, boards.tz)
                        if live is not None:
                            out[board.id, period_type, live.key] = live.bounds(boards.tz)[0].timestamp()
                        continue
                    period = period_of(period_type, today, boards.start_date)
                    out[board.id, period_type, period.key] = local_midnight(period.start, boards.tz).timestamp()
        return out

    async def refresh(self, now: dt.datetime | None = None) -> None:
        """One round: the primary store and Redis side by side, each read bounded."""
        up: dict[str, bool] = {}

        async def cache(ping: Callable[[], Awaitable[None]]) -> None:
            up["redis"] = await self._answers("redis", ping)

        async with anyio.create_task_group() as group:
            group.start_soon(self._primary, up, now or dt.datetime.now(dt.UTC))
            group.start_soon(self._webhooks)
            if self.reader.cache is not None:
                group.start_soon(cache, self.reader.cache.ping)
        self.gauges.set_up(up)

    async def _answers(self, name: str, ping: Callable[[], Awaitable[None]]) -> bool:
        try:
            with anyio.fail_after(self.timeout):
                await ping()
        except Exception as exc:  # any failure, a timeout included, is "down"
            self._note(name, exc)
            return False
        self._note(name, None)
        return True

    async def _primary(self, up: dict[str, bool], now: dt.datetime) -> None:
        """Ping, then (when it answers) the overrides and the registry. Until a read succeeds the
        published values stay as last read: store_up says the store is failing."""
        name = self.primary_name
        answers = await self._answers(name or "lake", self.reader.primary.ping)
        if name is not None:
            up[name] = answers
        if not answers:
            return
        try:
            with anyio.fail_after(self.timeout):
                await self.reader.fresh_overrides()  # a board an admin disables drops out within its TTL
                periods = self.current_periods(now)
                found = await self.reader.primary.published_at(list(periods))
        except Exception as exc:
            self._note("published_at", exc)
            return
        self._note("published_at", None)
        self.gauges.set_periods(
            {(b, t): (found[b, t, k].timestamp() if (b, t, k) in found else 0.0, start)
             for (b, t, k), start in periods.items()}
        )  # fmt: skip

    async def _webhooks(self) -> None:
        """The settlement webhooks not delivered yet (Postgres only: the outbox lives there)."""
        primary = self.reader.primary
        if not isinstance(primary, AsyncPostgres):
            return
        try:
            with anyio.fail_after(self.timeout):
                found = await AsyncSettlement(primary.pool).undelivered()
        except Exception as exc:
            self._note("webhook outbox", exc)
            return
        self._note("webhook outbox", None)
        self.settlement.set_undelivered(found.pending, found.failing, found.oldest.timestamp() if found.oldest else 0.0)

    def _note(self, what: str, failure: Exception | None) -> None:
        """Log a read's changes of state, not every round of a long outage."""
        if failure is not None and what not in self._failing:
            self._failing.add(what)
            detail = str(failure) or f"no answer within {self.timeout:g} s"  # a timeout says nothing itself
            log.warning("freshness metrics: %s failed: %s: %s", what, type(failure).__name__, detail)
        elif failure is None and what in self._failing:
            self._failing.discard(what)
            log.info("freshness metrics: %s answers again", what)

    async def run(self, every: float) -> None:
        """Refresh now, then every `every` seconds after the previous round ended."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug here must not end the task: the gauges would freeze
                log.exception("freshness metrics: refresh failed")
            await anyio.sleep(every)


@contextlib.asynccontextmanager
async def watching(reader: Reader, every: float | None = None) -> AsyncIterator[FreshnessWatch]:
    """The lifespan's background refresh: started without waiting for it, stopped and its
    values cleared on shutdown (a stopped app must not report an old view)."""
    watch = FreshnessWatch(reader)
    task = asyncio.get_running_loop().create_task(watch.run(REFRESH_SECONDS if every is None else every))
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        watch.gauges.clear()
        watch.settlement.clear()
