"""Redis hot-read cache of published standings (DESIGN §6).

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
import psycopg
import redis

from leaderboard import pg
from leaderboard.boards import BoardSet, display_limit
from leaderboard.lake import Snapshot, snapshot_header
from leaderboard.periods import ALL_TIME_KEY, period_of
from leaderboard.pg import StoreUnavailable

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
        raise StoreUnavailable(f"cannot reach Redis at {pg.server_of(url)}: {exc}") from exc
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


def rebuild(
    conn: psycopg.Connection,
    client: redis.Redis,
    keys: CacheKeys,
    boards: BoardSet,
    board_id: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Clear a board's keys (or every board's) and rebuild them from the Postgres registry.

    The seed's "clear and rebuild cache" step; returns the number of periods written.
    """
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(boards.tz).date()
    pattern = f"{keys.prefix}:{board_id or '*'}:*"
    stale = list(client.scan_iter(match=pattern, count=1000))
    for i in range(0, len(stale), 1000):
        client.delete(*stale[i : i + 1000])
    written = 0
    for record in pg.periods(conn, board_id):
        board = boards.get(record.board_id)
        if board is None or record.period_type not in board.periods:
            continue  # registered by an older boards file; nothing serves it now
        limit = display_limit(board)
        hot = record.period_key in hot_keys(record.period_type, today)
        # The entry and rows again, in one statement: a publish since the listing cannot mix in.
        ident = {"b": record.board_id, "t": record.period_type, "k": record.period_key, "top": limit}
        found = pg.split_snapshot(conn.execute(pg.snapshot_sql("true" if hot else "rank <= %(top)s"), ident).fetchall())
        if found is None:
            continue  # removed (retention) since the listing
        header = snapshot_header(record.board_id, record.period_type, record.period_key, *found[0])
        rows = found[1]
        body = Snapshot(header, rows).body(boards.tz, limit, now=now)
        current = record.period_type == "all_time" or record.period_start <= now < record.period_end
        publish(client, keys, record.board_id, record.period_type, record.period_key, body, rows if hot else None,
                current)  # fmt: skip
        written += 1
    return written
