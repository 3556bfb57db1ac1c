"""Redis, the hot-read cache of published standings (docs/contracts.md#stores).

Keys, extending the seed's `leaderboard:DAILY:2024-01-15:rankings` with the board:
  {prefix}:{board}:{PERIOD}:{key}:rankings   top display_limit as the ready standings body (JSON)
  {prefix}:{board}:{PERIOD}:{key}:users      hash user_id -> entry JSON, for the hot periods only
  {prefix}:{board}:{PERIOD}:current          the key of the current period
A period is written under staging keys, then renamed into place in one MULTI/EXEC.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

import polars as pl
import redis
import redis.asyncio as aioredis

from leaderboard import faults
from leaderboard.boards import BoardSet, display_limit
from leaderboard.periods import ALL_TIME_KEY, period_of
from leaderboard.stores.errors import StoreUnavailable, server_of
from leaderboard.stores.postgres import PostgresStore

PERIOD_NAMES = {"daily": "DAILY", "weekly": "WEEKLY", "monthly": "MONTHLY", "all_time": "ALL_TIME"}
STAGING_TTL_SECONDS = 3600  # a crashed publish leaves nothing behind for long
HSET_CHUNK = 10_000


@dataclass(frozen=True)
class CacheKeys:
    prefix: str

    def base(self, board: str, period_type: str) -> str:
        return f"{self.prefix}:{board}:{PERIOD_NAMES[period_type]}"

    def rankings(self, board: str, period_type: str, key: str) -> str:
        return f"{self.base(board, period_type)}:{key}:rankings"

    def users(self, board: str, period_type: str, key: str) -> str:
        return f"{self.base(board, period_type)}:{key}:users"

    def current(self, board: str, period_type: str) -> str:
        return f"{self.base(board, period_type)}:current"


def hot_keys(period_type: str, today: dt.date) -> tuple[str, ...]:
    """Keys of the current and the previous period of a type: those keep a per-user lookup."""
    if period_type == "all_time":
        return (ALL_TIME_KEY,)
    current = period_of(period_type, today)
    previous = period_of(period_type, current.start - dt.timedelta(days=1))
    return (current.key, previous.key)


def connect(url: str, max_connections: int = 50) -> redis.Redis:
    client = redis.Redis.from_url(url, max_connections=max_connections, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StoreUnavailable(f"cannot reach Redis at {server_of(url)}: {exc}") from exc
    return client


def user_entries(rows: pl.DataFrame) -> dict[str, str]:
    encoded = rows.select(
        "user_id", pl.struct("rank", "score", "previous_rank", "rank_change").struct.json_encode().alias("entry")
    )
    return dict(zip(encoded["user_id"].to_list(), encoded["entry"].to_list(), strict=True))


def publish(
    client: redis.Redis,
    keys: CacheKeys,
    board: str,
    period_type: str,
    period_key: str,
    body: dict,
    rows: pl.DataFrame | None,
    current: bool,
) -> None:
    """Stage the period's keys, then swap them in with one MULTI/EXEC.

    `rows` (all entries) is given for hot periods only; a period that is no longer hot loses
    its per-user hash. `current` also points the type's `current` key at this period.
    """
    token = uuid.uuid4().hex
    final_rankings = keys.rankings(board, period_type, period_key)
    final_users = keys.users(board, period_type, period_key)
    staged_rankings, staged_users = f"{final_rankings}:staging:{token}", f"{final_users}:staging:{token}"
    try:
        stage = client.pipeline(transaction=False)
        stage.set(staged_rankings, json.dumps(body, separators=(",", ":")), ex=STAGING_TTL_SECONDS)
        entries = user_entries(rows) if rows is not None and rows.height else {}
        items = list(entries.items())
        for i in range(0, len(items), HSET_CHUNK):
            stage.hset(staged_users, mapping=dict(items[i : i + HSET_CHUNK]))
        if entries:
            stage.expire(staged_users, STAGING_TTL_SECONDS)
        stage.execute()
        faults.pause("redis", final_rankings)
        swap = client.pipeline(transaction=True)
        swap.rename(staged_rankings, final_rankings)
        swap.persist(final_rankings)
        if entries:
            swap.rename(staged_users, final_users)
            swap.persist(final_users)
        else:
            swap.delete(final_users)
        if current:
            swap.set(keys.current(board, period_type), period_key)
        swap.execute()
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis publish of {final_rankings} failed: {exc}") from exc


def drop_staging(client: redis.Redis, keys: CacheKeys, board: str, period_type: str, period_key: str) -> int:
    """Delete the period's staging keys that a killed publish left (else they live out their TTL).

    Only for a caller holding the period's lock: a live publisher's staging keys look the same.
    """
    return delete_matching(client, f"{keys.base(board, period_type)}:{period_key}:*:staging:*")


DELETE_CHUNK = 1000


def delete_keys(client: redis.Redis, names: list[str]) -> None:
    """Delete keys in chunks: one DEL of a million names would block the server."""
    for i in range(0, len(names), DELETE_CHUNK):
        client.delete(*names[i : i + DELETE_CHUNK])


def delete_matching(client: redis.Redis, pattern: str) -> int:
    """Delete every key matching `pattern` (SCAN, not KEYS: the server keeps serving)."""
    names = list(client.scan_iter(match=pattern, count=DELETE_CHUNK))
    delete_keys(client, names)
    return len(names)


def rebuild(
    record: PostgresStore,
    client: redis.Redis,
    keys: CacheKeys,
    boards: BoardSet,
    board_id: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Clear a board's keys (or every board's) and rebuild them from the Postgres registry.

    The "clear and rebuild cache" step of the service this replaces; returns the number of
    periods written.
    """
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(boards.tz).date()
    delete_matching(client, f"{keys.prefix}:{board_id or '*'}:*")
    written = 0
    for entry in record.periods(board_id):
        board = boards.get(entry.board_id)
        if board is None or entry.period_type not in board.periods:
            continue  # registered by an older boards file; nothing serves it now
        limit = display_limit(board)
        hot = entry.period_key in hot_keys(entry.period_type, today)
        # Entry and rows again, from one statement: a publish since the listing cannot mix in.
        snapshot = record.snapshot(entry.board_id, entry.period_type, entry.period_key, None if hot else limit)
        if snapshot is None:
            continue  # removed (retention) since the listing
        body = snapshot.body(boards.tz, limit, now=now)
        current = entry.period_type == "all_time" or entry.period_start <= now < entry.period_end
        rows = snapshot.frame if hot else None
        publish(client, keys, entry.board_id, entry.period_type, entry.period_key, body, rows, current)
        written += 1
    return written


@dataclass(frozen=True)
class AsyncBodies:
    """The API's view of Redis: ready standings bodies by period, read and refilled."""

    client: aioredis.Redis
    keys: CacheKeys

    async def get(self, board_id: str, period_type: str, key: str) -> bytes | None:
        return await self.client.get(self.keys.rankings(board_id, period_type, key))

    async def put(self, board_id: str, period_type: str, key: str, body: dict, ttl_seconds: int) -> None:
        await self.client.set(self.keys.rankings(board_id, period_type, key), json.dumps(body), ex=ttl_seconds)

    async def ping(self) -> None:
        await self.client.ping()
