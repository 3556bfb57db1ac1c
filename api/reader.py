"""The read path: Redis first, then Postgres (refilling Redis), else the lake's snapshots.

Every answer is one page of one published snapshot; `published_at` says which.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import anyio
import polars as pl
import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from api.observability import CACHE_HIT, CACHE_MISS
from leaderboard import overrides as board_overrides
from leaderboard import pg
from leaderboard.boards import Board, BoardSet, display_limit
from leaderboard.cache import CacheKeys
from leaderboard.lake import Lake, read_snapshot, snapshot_header
from leaderboard.lake import Snapshot as LakeSnapshot
from leaderboard.overrides import Override
from leaderboard.periods import local_midnight, parse_period_key
from leaderboard.standings import StandingsError, check_board, resolve_key

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


@dataclass
class Reader:
    boards: BoardSet
    lake: Lake
    keys: CacheKeys
    pool: AsyncConnectionPool | None = None
    redis: aioredis.Redis | None = None
    cache_ttl: int = 300
    database_url: str | None = None
    overrides: dict[str, Override] = field(default_factory=dict)
    overrides_loaded: float = 0.0
    _local: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    _pages: dict[tuple[str, str, dt.date | None, int | None, int], tuple[float, bytes]] = field(default_factory=dict)

    async def reload_overrides(self) -> None:
        if self.pool is not None:  # a pooled connection, not a new one every OVERRIDES_TTL
            async with self.pool.connection() as conn:
                found = board_overrides.from_rows(await (await conn.execute(board_overrides.QUERY)).fetchall())
        else:
            found = await anyio.to_thread.run_sync(board_overrides.load, self.lake, self.database_url)
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
    ) -> dict | bytes:
        """The page as a dict, or as the ready JSON bytes when the cached body is the page.

        A whole-body answer is remembered per request for LOCAL_CACHE_SECONDS, like the body it
        came from: the hot route then costs a dict lookup, not the period arithmetic again."""
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
        raw, fetched_until = await self._from_redis(board, period_type, key, fresh=remembered is not None)
        if raw is not None and self._is_whole_body(board, period_type, key, limit, offset, raw):
            CACHE_HIT.inc()
            # Kept no longer than the body it came from, nor past the period's end: then its
            # status flips and a request without ?at= means the next period.
            left = (_period_end(period_type, key, self.boards.tz) - dt.datetime.now(dt.UTC)).total_seconds()
            until = min(fetched_until, time.monotonic() + left) if left > 0 else fetched_until
            bounded_put(self._pages, request, (until, raw))
            return raw
        self._pages.pop(request, None)  # not a whole body any more: never serve the old one again
        limit = limit or self.limit_for(board)
        cached = json.loads(raw) if raw else None
        if cached is not None and (
            offset + limit <= len(cached["entries"]) or cached["total"] <= len(cached["entries"])
        ):
            CACHE_HIT.inc()
            return self._page(cached, limit, offset)
        if self.redis is not None:
            CACHE_MISS.inc()
        if self.pool is not None:
            body = await self._from_postgres(board, period_type, key, limit, offset)
            if body is not None:
                return body
        else:
            snapshot = await anyio.to_thread.run_sync(read_snapshot, self.lake, board.id, period_type, key)
            if snapshot is not None:
                return snapshot.body(self.boards.tz, limit, offset)
        if cached is not None:  # Postgres is down: serve what the cache holds
            return self._page(cached, limit, offset)
        raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")

    def _page(self, body: dict, limit: int, offset: int) -> dict:
        end = dt.datetime.fromisoformat(body["period_end"])
        return {
            **body,
            "status": "live" if dt.datetime.now(dt.UTC) < end else "final",
            "entries": body["entries"][offset : offset + limit],
        }

    def _is_whole_body(
        self, board: Board, period_type: str, key: str, limit: int | None, offset: int, raw: bytes
    ) -> bool:
        """The default first page of a daily/weekly/monthly period is the published body as is,
        once its status still holds (checked on the bytes: no JSON parse on the hot path)."""
        if (
            offset
            or period_type == "all_time"
            or board.id in self.overrides
            or limit not in (None, display_limit(board))
        ):
            return False
        status = "live" if dt.datetime.now(dt.UTC) < _period_end(period_type, key, self.boards.tz) else "final"
        return f'"status":"{status}"'.encode() in raw

    async def _from_redis(
        self, board: Board, period_type: str, key: str, fresh: bool = False
    ) -> tuple[bytes | None, float]:
        """The cached body and until when this process may keep it: LOCAL_CACHE_SECONDS, so a hot
        board is one Redis read a second per worker, not one per request. A whole body is kept,
        so a reader still sees one published snapshot, at most that much late. `fresh` skips
        this process's copy."""
        now = time.monotonic()
        if self.redis is None:
            return None, now
        name = self.keys.rankings(board.id, period_type, key)
        hit = self._local.get(name)
        if hit is not None and hit[0] > now and not fresh:
            return hit[1], hit[0]
        try:
            raw = await self.redis.get(name)
        except aioredis.RedisError as exc:
            log.warning("redis read failed, falling back: %s", exc)
            return None, now
        if raw is not None:
            bounded_put(self._local, name, (now + LOCAL_CACHE_SECONDS, raw))
        return raw, now + LOCAL_CACHE_SECONDS

    async def _pg_snapshot(
        self, board: Board, period_type: str, key: str, rows_where: str, params: dict
    ) -> tuple[dict, pl.DataFrame] | None:
        """The period's registry header and some of its rows, from one statement (pg.snapshot_sql);
        None when the period is not published."""
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cur = await conn.execute(pg.snapshot_sql(rows_where), {"b": board.id, "t": period_type, "k": key, **params})
            found = pg.split_snapshot(await cur.fetchall())
        if found is None:
            return None
        return snapshot_header(board.id, period_type, key, *found[0]), found[1]

    async def _from_postgres(self, board: Board, period_type: str, key: str, limit: int, offset: int) -> dict | None:
        # Ranks are 1..N without gaps, so a page is a rank range (the top index serves it).
        top = max(limit + offset, self.limit_for(board))
        try:
            found = await self._pg_snapshot(board, period_type, key, "rank <= %(top)s", {"top": top})
        except (psycopg.Error, OSError) as exc:
            log.warning("postgres read failed: %s", exc)
            return None
        if found is None:
            return None
        snapshot = LakeSnapshot(*found)
        await self._refill(board, period_type, key, snapshot.body(self.boards.tz, self.limit_for(board)))
        return snapshot.body(self.boards.tz, limit, offset)

    async def _refill(self, board: Board, period_type: str, key: str, body: dict) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.set(self.keys.rankings(board.id, period_type, key), json.dumps(body), ex=self.cache_ttl)
        except aioredis.RedisError as exc:
            log.warning("redis refill failed: %s", exc)

    async def periods(self, board_id: str, period_type: str) -> list[str]:
        board = self.board(board_id, period_type)
        if self.pool is not None:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT period_key FROM leaderboard_periods WHERE board_id = %s AND period_type = %s "
                    "ORDER BY period_start DESC",
                    (board.id, period_type),
                )
                return [r[0] for r in await cur.fetchall()]
        return self.lake.published_keys(board.id, period_type)

    async def user_entry(self, board_id: str, period_type: str, at: dt.date | None, user_id: str, around: int) -> dict:
        """One user's entry with `percentile`, and the entries from rank-around to rank+around."""
        board = self.board(board_id, period_type)
        key = resolve_key(self.boards, period_type, at)
        found = await (self._user_from_postgres if self.pool is not None else self._user_from_lake)(
            board, period_type, key, user_id, around
        )
        if found is None:
            raise StandingsError(f"no published {period_type} standings of {board.id!r} for {key}")
        header, frame = found
        body = LakeSnapshot(header, frame).body(self.boards.tz, max(frame.height, 1))
        neighbors = body.pop("entries")
        entry = next((e for e in neighbors if e["user_id"] == user_id), None)
        if entry is None:
            raise StandingsError(f"user {user_id!r} has no entry in {board.id} {period_type} {key}")
        total = body["total"]
        entry = {**entry, "percentile": round(100.0 * (total - entry["rank"] + 1) / total, 2)}
        return {**body, "entry": entry, "neighbors": neighbors}

    async def _user_from_postgres(
        self, board: Board, period_type: str, key: str, user_id: str, around: int
    ) -> tuple[dict, pl.DataFrame] | None:
        rank = "(SELECT rank FROM leaderboard_rankings WHERE {period} AND user_id = %(u)s)"
        return await self._pg_snapshot(
            board, period_type, key, f"rank BETWEEN {rank} - %(k_)s AND {rank} + %(k_)s", {"u": user_id, "k_": around}
        )

    async def _user_from_lake(
        self, board: Board, period_type: str, key: str, user_id: str, around: int
    ) -> tuple[dict, pl.DataFrame] | None:
        snapshot = await anyio.to_thread.run_sync(read_snapshot, self.lake, board.id, period_type, key)
        if snapshot is None:
            return None
        rank = snapshot.frame.filter(pl.col("user_id") == user_id)["rank"]
        if rank.is_empty():
            return snapshot.header, snapshot.frame.clear()
        r = int(rank[0])
        return snapshot.header, snapshot.frame.filter(pl.col("rank").is_between(r - around, r + around))
