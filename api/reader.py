"""The read path: Redis, then Postgres (refilling Redis), then the lake.

Every answer is one page of one published snapshot; `published_at` says which. The stores
themselves (and every query) live in `leaderboard.stores`; this module decides the order
(docs/contracts.md#read-order-of-the-api) and keeps the hot route cheap. A store that fails
(`StoreUnavailable`) is down for the request, which asks the next one; when none can answer,
`StoreUnavailable` reaches the app, which answers 503. Only a store that is up saying "not
published" makes a 404.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from api.observability import CACHE_HIT, CACHE_MISS
from leaderboard.boards import SEASON, Board, BoardSet, display_limit
from leaderboard.periods import local_midnight, parse_period_key, period_end, status_at
from leaderboard.standings import Snapshot, StandingsError, check_board, check_key, page_of, resolve_key
from leaderboard.stores import Override, StoreUnavailable
from leaderboard.stores.protocols import AsyncStandingsSource
from leaderboard.stores.redis import AsyncBodies

log = logging.getLogger(__name__)
OVERRIDES_TTL = 10.0
LOCAL_CACHE_SECONDS = 1.0
# A store that failed is skipped by this process for this long: during an outage at most one
# request a second waits for it (a pool timeout), the others go straight to the next store.
DOWN_SECONDS = 1.0
T = TypeVar("T")


class _Skipped(enum.Enum):
    DOWN = enum.auto()


DOWN = _Skipped.DOWN
Down = Literal[_Skipped.DOWN]


@lru_cache(maxsize=4096)
def _period_end(period_type: str, key: str, tz: ZoneInfo) -> dt.datetime:
    return local_midnight(parse_period_key(period_type, key).end, tz)


def _end_of(boards: BoardSet, board_id: str, period_type: str, key: str) -> dt.datetime:
    """When a period ends; a season's from the boards file (its key alone does not say)."""
    if period_type == SEASON:
        return period_end(boards, board_id, period_type, key)
    return _period_end(period_type, key, boards.tz)


When = dt.date | dt.datetime


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
    """Reads for the API: `cache` (Redis), then `primary` (Postgres, or the lake without it),
    then `fallback` (the lake, behind Postgres)."""

    boards: BoardSet
    primary: AsyncStandingsSource
    cache: AsyncBodies | None = None
    cache_ttl: int = 300
    fallback: AsyncStandingsSource | None = None
    overrides: dict[str, Override] = field(default_factory=dict)
    overrides_loaded: float = 0.0
    _local: dict[tuple[str, str, str], _Cached] = field(default_factory=dict)
    # (board, period, at or "key:<key>", limit, offset); `object` as msgspec (Litestar's
    # dependency check) takes no union of two str-like types
    _pages: dict[tuple[str, str, object, int | None, int], tuple[float, Page]] = field(default_factory=dict)
    _down_until: dict[str, float] = field(default_factory=dict)

    @property
    def stores(self) -> tuple[AsyncStandingsSource, ...]:
        """The stores that hold every published snapshot, in the order they are asked."""
        return (self.primary,) if self.fallback is None else (self.primary, self.fallback)

    async def _ask(self, name: str, read: Coroutine[Any, Any, T]) -> T | Down:
        """The store's answer, or DOWN when it failed (now, or less than DOWN_SECONDS ago)."""
        if self._down_until.get(name, 0.0) > time.monotonic():
            read.close()  # never started: no "coroutine was never awaited"
            return DOWN
        try:
            return await read
        except StoreUnavailable as exc:
            self._down_until[name] = time.monotonic() + DOWN_SECONDS
            log.warning("%s unavailable, asking the next store: %s", name, exc)
            return DOWN

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
            if self._down_until.get(self.primary.name, 0.0) > time.monotonic():
                return  # keep the last known overrides; the next reload tries again
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
        self,
        board_id: str,
        period_type: str,
        at: When | None,
        limit: int | None,
        offset: int,
        key: str | None = None,
    ) -> Page:
        """One page of the period containing `at`, or of the one named by `key`; a whole-body
        answer is remembered per request for LOCAL_CACHE_SECONDS, like the body it came from:
        the hot route then costs a dict lookup, not the period arithmetic again."""
        await self.fresh_overrides()
        request = (board_id, period_type, at if key is None else f"key:{key}", limit, offset)
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
        if key is None:
            key = resolve_key(self.boards, period_type, at, board.id)
        else:
            key = check_key(self.boards, board, period_type, key)
        cached = await self._from_redis(board, period_type, key, fresh=remembered is not None)
        if cached is not None and self._is_whole_body(board, period_type, key, limit, offset, cached.body):
            CACHE_HIT.inc()
            # Kept no longer than the body it came from, nor past the period's end: then its
            # status flips and a request without ?at= means the next period.
            left = (_end_of(self.boards, board.id, period_type, key) - dt.datetime.now(dt.UTC)).total_seconds()
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
        for store in self.stores:
            # Refill Redis from the system of record only, and only where it lacks the body.
            refill = store is self.primary and self.cache is not None and cached is None
            found = await self._ask(store.name, self._page(store, board, period_type, key, limit, offset, refill))
            if found is DOWN:
                continue
            if found is None:
                raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")
            return Page(found)
        raise StoreUnavailable(f"no store can serve {board.id} {period_type} {key} now")

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
        return body["status"] == status_at(_end_of(self.boards, board.id, period_type, key))

    async def _from_redis(self, board: Board, period_type: str, key: str, fresh: bool = False) -> _Cached | None:
        """The cached body, kept by this process for LOCAL_CACHE_SECONDS, so a hot board is one
        Redis read (and one JSON parse) a second per worker, not one per request. A whole body is
        kept, so a reader still sees one published snapshot, at most that much late. `fresh`
        skips this process's copy. None when Redis lacks it or is down."""
        if self.cache is None:
            return None
        name = (board.id, period_type, key)
        now = time.monotonic()
        hit = self._local.get(name)
        if hit is not None and hit.until > now and not fresh:
            return hit
        raw = await self._ask(self.cache.name, self.cache.get(*name))
        if raw is DOWN or raw is None:
            return None
        body = json.loads(raw)
        entries = body.get("entries")
        if entries and "metadata" not in entries[0]:  # cached before entries had names: they are null
            body["entries"] = [{**e, "display_name": None, "metadata": None} for e in entries]
            raw = json.dumps(body, separators=(",", ":")).encode()
        cached = _Cached(now + LOCAL_CACHE_SECONDS, raw, body)
        bounded_put(self._local, name, cached)
        return cached

    async def _page(
        self,
        store: AsyncStandingsSource,
        board: Board,
        period_type: str,
        key: str,
        limit: int,
        offset: int,
        refill: bool,
    ) -> dict | None:
        """The page's rank range, offset+1 .. offset+limit, from a store: the same cost at any
        offset. A page inside the board's top N reads that top when Redis needs it refilled."""
        top = self.limit_for(board)
        if refill and offset + limit <= top:
            snapshot = await store.snapshot(board.id, period_type, key, top)
            if snapshot is not None:
                await self._refill(board, period_type, key, snapshot.body(self.boards.tz, top))
                return snapshot.body(self.boards.tz, limit, offset)
            return None
        snapshot = await store.snapshot(board.id, period_type, key, offset + limit, after=offset)
        return None if snapshot is None else snapshot.body(self.boards.tz, limit)

    async def _refill(self, board: Board, period_type: str, key: str, body: dict) -> None:
        if self.cache is not None:
            await self._ask(self.cache.name, self.cache.put(board.id, period_type, key, body, self.cache_ttl))

    async def periods(self, board_id: str, period_type: str) -> list[str]:
        """Published keys, newest first: Redis's list when it holds one, else each store in turn."""
        board = self.board(board_id, period_type)
        if self.cache is not None:
            listed = await self._ask(self.cache.name, self.cache.period_keys(board.id, period_type))
            if listed is not DOWN and listed:
                return listed
        for store in self.stores:
            found = await self._ask(store.name, store.published_keys(board.id, period_type))
            if found is not DOWN:
                return found
        raise StoreUnavailable(f"no store can list the {period_type} periods of {board.id} now")

    async def user_entry(self, board_id: str, period_type: str, at: When | None, user_id: str, around: int) -> dict:
        """One user's entry with `percentile`, and the entries from rank-around to rank+around,
        all of one snapshot: Redis's `:ranks` for hot periods, else each store in turn."""
        board = self.board(board_id, period_type)
        key = resolve_key(self.boards, period_type, at, board.id)
        if self.cache is not None:
            cached = await self._ask(self.cache.name, self.cache.around(board.id, period_type, key, user_id, around))
            if cached is not DOWN and cached is not None:
                header = {**cached.header, "status": status_at(dt.datetime.fromisoformat(cached.header["period_end"]))}
                return _user_body(header, cached.entry, cached.neighbors, user_id)
        for store in self.stores:
            snapshot = await self._ask(store.name, store.around(board.id, period_type, key, user_id, around))
            if snapshot is DOWN:
                continue
            if snapshot is None:
                raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")
            return _snapshot_user_body(snapshot, self.boards.tz, user_id)
        raise StoreUnavailable(f"no store can serve {board.id} {period_type} {key} now")

    async def users(self, board_id: str, period_type: str, at: When | None, user_ids: list[str]) -> dict:
        """These users' entries in rank order, and `absent`, the ids not ranked (in the order
        given), all of one snapshot: Redis's `:users` for hot periods (one round trip), else each
        store in turn. `user_ids` hold no duplicates."""
        board = self.board(board_id, period_type)
        key = resolve_key(self.boards, period_type, at, board.id)
        if self.cache is not None:
            cached = await self._ask(self.cache.name, self.cache.users(board.id, period_type, key, user_ids))
            if cached is not DOWN and cached is not None:
                header = {**cached.header, "status": status_at(dt.datetime.fromisoformat(cached.header["period_end"]))}
                return {**header, "entries": cached.entries, "absent": cached.absent}
        for store in self.stores:
            snapshot = await self._ask(store.name, store.users(board.id, period_type, key, user_ids))
            if snapshot is DOWN:
                continue
            if snapshot is None:
                raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")
            return _selected_body(snapshot, self.boards.tz, user_ids)
        raise StoreUnavailable(f"no store can serve {board.id} {period_type} {key} now")


def _selected_body(snapshot: Snapshot, tz: ZoneInfo, user_ids: list[str]) -> dict:
    body = snapshot.body(tz, max(snapshot.frame.height, 1))
    entries = sorted(body.pop("entries"), key=lambda e: e["rank"])
    ranked = {e["user_id"] for e in entries}
    return {**body, "entries": entries, "absent": [u for u in user_ids if u not in ranked]}


def _snapshot_user_body(snapshot: Snapshot, tz: ZoneInfo, user_id: str) -> dict:
    body = snapshot.body(tz, max(snapshot.frame.height, 1))
    neighbors = body.pop("entries")
    return _user_body(body, next((e for e in neighbors if e["user_id"] == user_id), None), neighbors, user_id)


def _user_body(header: dict, entry: dict | None, neighbors: list[dict], user_id: str) -> dict:
    if entry is None:
        raise StandingsError(
            f"user {user_id!r} has no entry in {header['board']} {header['period']} {header['period_key']}"
        )
    total = header["total"]
    entry = {**entry, "percentile": round(100.0 * (total - entry["rank"] + 1) / total, 2)}
    return {**header, "entry": entry, "neighbors": neighbors}
