"""The read path: Redis first, then the primary store (Postgres, refilling Redis, or the lake).

Every answer is one page of one published snapshot; `published_at` says which. The stores
themselves (and every query) live in `leaderboard.stores`; this module decides the order
and keeps the hot route cheap.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import psycopg
import redis.asyncio as aioredis

from api.observability import CACHE_HIT, CACHE_MISS
from leaderboard.boards import Board, BoardSet, display_limit
from leaderboard.periods import local_midnight, parse_period_key, status_at
from leaderboard.standings import StandingsError, check_board, page_of, resolve_key
from leaderboard.stores import Override
from leaderboard.stores.protocols import AsyncStandingsSource
from leaderboard.stores.redis import AsyncBodies

log = logging.getLogger(__name__)
OVERRIDES_TTL = 10.0
LOCAL_CACHE_SECONDS = 1.0


@lru_cache(maxsize=4096)
def _period_end(period_type: str, key: str, tz: ZoneInfo) -> dt.datetime:
    return local_midnight(parse_period_key(period_type, key).end, tz)


def bounded_put(cache: dict, key: object, value: object, limit: int = 10_000) -> None:
    if len(cache) > limit:  # many distinct pages: start over rather than grow without end
        cache.clear()
    cache[key] = value


@dataclass(frozen=True)
class Page:
    """One page of standings; `raw` is the published body's JSON when the page is that body as is."""

    body: dict
    raw: bytes | None = None


@dataclass(frozen=True)
class _Cached:
    """A body read from Redis, parsed once, and until when this process may keep it."""

    until: float
    raw: bytes
    body: dict


@dataclass
class Reader:
    boards: BoardSet
    primary: AsyncStandingsSource
    cache: AsyncBodies | None = None
    cache_ttl: int = 300
    overrides: dict[str, Override] = field(default_factory=dict)
    overrides_loaded: float = 0.0
    _local: dict[tuple[str, str, str], _Cached] = field(default_factory=dict)
    _pages: dict[tuple[str, str, dt.date | None, int | None, int], tuple[float, Page]] = field(default_factory=dict)

    async def reload_overrides(self) -> None:
        found = await self.primary.load()
        self.overrides_loaded = time.monotonic()
        if found != self.overrides:
            self._pages.clear()  # a remembered page may belong to a board now disabled or re-limited
        self.overrides = found

    async def fresh_overrides(self) -> None:
        """Admin changes reach every replica within OVERRIDES_TTL seconds, without a restart."""
        if time.monotonic() - self.overrides_loaded > OVERRIDES_TTL:
            self.overrides_loaded = time.monotonic()  # one request reloads; the others go on
            try:
                await self.reload_overrides()
            except Exception as exc:  # keep serving with the last known overrides
                log.warning("cannot reload board overrides: %s", exc)

    def limit_for(self, board: Board) -> int:
        override = self.overrides.get(board.id)
        return (override.display_limit if override else None) or display_limit(board)

    def enabled(self, board_id: str) -> bool:
        override = self.overrides.get(board_id)
        return override.enabled if override else True

    def board(self, board_id: str, period_type: str) -> Board:
        board = check_board(self.boards, board_id, period_type)
        if not self.enabled(board_id):
            raise StandingsError(f"board {board_id!r} is disabled")
        return board

    async def standings(
        self, board_id: str, period_type: str, at: dt.date | None, limit: int | None, offset: int
    ) -> Page:
        """One page; a whole-body answer is remembered per request for LOCAL_CACHE_SECONDS, like
        the body it came from: the hot route then costs a dict lookup, not the period arithmetic again."""
        await self.fresh_overrides()
        request = (board_id, period_type, at, limit, offset)
        now = time.monotonic()
        remembered = self._pages.get(request)
        if remembered is not None:
            if remembered[0] > now:
                CACHE_HIT.inc()
                return remembered[1]
            # Expired: this request refreshes it while the others keep the old page, rather than
            # every request in flight asking Redis at once (that stampede was the p99).
            self._pages[request] = (now + LOCAL_CACHE_SECONDS, remembered[1])
        board = self.board(board_id, period_type)
        key = resolve_key(self.boards, period_type, at)
        cached = await self._from_redis(board, period_type, key, fresh=remembered is not None)
        if cached is not None and self._is_whole_body(board, period_type, key, limit, offset, cached.body):
            CACHE_HIT.inc()
            # Kept no longer than the body it came from, nor past the period's end: then its
            # status flips and a request without ?at= means the next period.
            left = (_period_end(period_type, key, self.boards.tz) - dt.datetime.now(dt.UTC)).total_seconds()
            until = min(cached.until, time.monotonic() + left) if left > 0 else cached.until
            page = Page(cached.body, cached.raw)
            bounded_put(self._pages, request, (until, page))
            return page
        self._pages.pop(request, None)  # not a whole body any more: never serve the old one again
        limit = limit or self.limit_for(board)
        body = cached.body if cached is not None else None
        if body is not None and (offset + limit <= len(body["entries"]) or body["total"] <= len(body["entries"])):
            CACHE_HIT.inc()
            return Page(page_of(body, limit, offset))
        if self.cache is not None:
            CACHE_MISS.inc()
        fresh = await self._from_primary(board, period_type, key, limit, offset)
        if fresh is not None:
            return Page(fresh)
        if body is not None:  # the primary store is down: serve what the cache holds
            return Page(page_of(body, limit, offset))
        raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")

    def _is_whole_body(
        self, board: Board, period_type: str, key: str, limit: int | None, offset: int, body: dict
    ) -> bool:
        """The default first page of a daily/weekly/monthly period is the published body as is,
        while its status still holds."""
        if (
            offset
            or period_type == "all_time"
            or board.id in self.overrides
            or limit not in (None, display_limit(board))
        ):
            return False
        return body["status"] == status_at(_period_end(period_type, key, self.boards.tz))

    async def _from_redis(self, board: Board, period_type: str, key: str, fresh: bool = False) -> _Cached | None:
        """The cached body, kept by this process for LOCAL_CACHE_SECONDS, so a hot board is one
        Redis read (and one JSON parse) a second per worker, not one per request. A whole body is
        kept, so a reader still sees one published snapshot, at most that much late. `fresh`
        skips this process's copy."""
        if self.cache is None:
            return None
        name = (board.id, period_type, key)
        now = time.monotonic()
        hit = self._local.get(name)
        if hit is not None and hit.until > now and not fresh:
            return hit
        try:
            raw = await self.cache.get(*name)
        except aioredis.RedisError as exc:
            log.warning("redis read failed, falling back: %s", exc)
            return None
        if raw is None:
            return None
        cached = _Cached(now + LOCAL_CACHE_SECONDS, raw, json.loads(raw))
        bounded_put(self._local, name, cached)
        return cached

    async def _from_primary(self, board: Board, period_type: str, key: str, limit: int, offset: int) -> dict | None:
        top = max(limit + offset, self.limit_for(board))
        try:
            snapshot = await self.primary.snapshot(board.id, period_type, key, top)
        except (psycopg.Error, OSError) as exc:
            log.warning("primary store read failed: %s", exc)
            return None
        if snapshot is None:
            return None
        await self._refill(board, period_type, key, snapshot.body(self.boards.tz, self.limit_for(board)))
        return snapshot.body(self.boards.tz, limit, offset)

    async def _refill(self, board: Board, period_type: str, key: str, body: dict) -> None:
        if self.cache is None:
            return
        try:
            await self.cache.put(board.id, period_type, key, body, self.cache_ttl)
        except aioredis.RedisError as exc:
            log.warning("redis refill failed: %s", exc)

    async def periods(self, board_id: str, period_type: str) -> list[str]:
        board = self.board(board_id, period_type)
        return await self.primary.published_keys(board.id, period_type)

    async def user_entry(self, board_id: str, period_type: str, at: dt.date | None, user_id: str, around: int) -> dict:
        """One user's entry with `percentile`, and the entries from rank-around to rank+around."""
        board = self.board(board_id, period_type)
        key = resolve_key(self.boards, period_type, at)
        snapshot = await self.primary.around(board.id, period_type, key, user_id, around)
        if snapshot is None:
            raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")
        body = snapshot.body(self.boards.tz, max(snapshot.frame.height, 1))
        neighbors = body.pop("entries")
        entry = next((e for e in neighbors if e["user_id"] == user_id), None)
        if entry is None:
            raise StandingsError(f"user {user_id!r} has no entry in {board.id} {period_type} {key}")
        total = body["total"]
        entry = {**entry, "percentile": round(100.0 * (total - entry["rank"] + 1) / total, 2)}
        return {**body, "entry": entry, "neighbors": neighbors}
