"""Postgres, the system of record: every query but the publish swap (`postgres_publish`).

Query text lives here as constants that the sync store (pipeline, CLI, dashboard) and the
async one (API) both run, so each read is written once. Tables: sql/migrations/.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from leaderboard.standings import ENTRY_SCHEMA, Snapshot, snapshot_header
from leaderboard.stores.errors import SchemaMissing, StoreUnavailable, server_of
from leaderboard.stores.moderation import record_audit
from leaderboard.stores.protocols import (
    HISTORY_SCHEMA,
    INGEST_STATS_SCHEMA,
    Override,
    PeriodId,
    PeriodRecord,
)

INGEST_STATS_COLUMNS = tuple(INGEST_STATS_SCHEMA)

_PERIOD = "board_id = %(b)s AND period_type = %(t)s AND period_key = %(k)s"
# A period's registry entry and its rows matching a condition, in one statement: one snapshot,
# and the leaf it reads is locked from planning on, so a swap cannot come between them (two
# statements, even in one REPEATABLE READ transaction, can pair one publish's entry with
# another's rows).
_SNAPSHOT = (
    "SELECT p.period_start, p.period_end, p.published_at, p.run_id, p.entries, "
    "r.user_id, r.rank, r.score, r.previous_rank, r.rank_change, r.display_name, r.metadata "
    "FROM leaderboard_periods p LEFT JOIN LATERAL (SELECT user_id, rank, score, previous_rank, rank_change, "
    f"display_name, metadata FROM leaderboard_rankings WHERE {_PERIOD} AND {{rows}}) r ON true "
    f"WHERE p.{_PERIOD.replace(' AND ', ' AND p.')} ORDER BY r.rank"
)
# Ranks are 1..N without gaps, so a page is a rank range the leaf's rank index serves, whatever
# its offset. Plain bounds (no "IS NULL OR"): a generic plan of a prepared statement keeps the
# index range too.
SNAPSHOT_RANKS = _SNAPSHOT.format(rows="rank BETWEEN %(first)s AND %(last)s")
MAX_RANK = 2**31 - 1  # `rank` is an integer column
_USER_RANK = f"(SELECT rank FROM leaderboard_rankings WHERE {_PERIOD} AND user_id = %(u)s)"
SNAPSHOT_AROUND = _SNAPSHOT.format(rows=f"rank BETWEEN {_USER_RANK} - %(around)s AND {_USER_RANK} + %(around)s")
# Some users' rows: the leaf's (user_id, board_id) index, one probe per id.
SNAPSHOT_USERS = _SNAPSHOT.format(rows="user_id = ANY(%(u)s)")
PERIOD_KEYS = (
    "SELECT period_key FROM leaderboard_periods WHERE board_id = %s AND period_type = %s ORDER BY period_start DESC"
)
PERIOD_ENDS = "SELECT board_id, period_key, period_end FROM leaderboard_periods WHERE period_type = %s"
PERIODS = (
    "SELECT board_id, period_type, period_key, period_start, period_end, status, entries, published_at, run_id "
    "FROM leaderboard_periods WHERE (%(b)s::text IS NULL OR board_id = %(b)s) "
    "ORDER BY board_id, period_type, period_start DESC"
)
PUBLISHED_AT = (
    "SELECT board_id, period_type, period_key, published_at FROM leaderboard_periods "
    "WHERE (board_id, period_type, period_key) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
)
RANK_HISTORY = """SELECT p.period_key, r.rank, r.score, p.entries
    FROM (SELECT period_key, period_start, entries FROM leaderboard_periods
          WHERE board_id = %(b)s AND period_type = %(t)s ORDER BY period_start DESC LIMIT %(n)s) p
    LEFT JOIN leaderboard_rankings r ON r.board_id = %(b)s AND r.period_type = %(t)s
         AND r.period_key = p.period_key AND r.user_id = %(u)s
    ORDER BY p.period_start"""
BOARD_CONFIG = "SELECT board_id, display_limit, enabled FROM leaderboard_board_config"
SAVE_BOARD_CONFIG = (
    "INSERT INTO leaderboard_board_config (board_id, display_limit, enabled, updated_at, updated_by) "
    "VALUES (%s, %s, %s, now(), %s) ON CONFLICT (board_id) DO UPDATE SET display_limit = EXCLUDED.display_limit, "
    "enabled = EXCLUDED.enabled, updated_at = now(), updated_by = EXCLUDED.updated_by"
)
SAVE_INGEST_STATS = (
    f"INSERT INTO leaderboard_ingest_stats ({', '.join(INGEST_STATS_COLUMNS)}, written_at) "
    f"VALUES ({', '.join(['%s'] * len(INGEST_STATS_COLUMNS))}, now()) ON CONFLICT (day) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in INGEST_STATS_COLUMNS[1:])
    + ", written_at = now()"
)
INGEST_STATS = (
    f"SELECT {', '.join(INGEST_STATS_COLUMNS)} FROM leaderboard_ingest_stats WHERE day BETWEEN %s AND %s ORDER BY day"
)


def connect(database_url: str, read_only: bool = False, **kwargs: Any) -> psycopg.Connection:
    """A connection to a migrated database, or StoreUnavailable / SchemaMissing saying what to do."""
    try:
        conn = psycopg.connect(database_url, connect_timeout=kwargs.pop("connect_timeout", 10), **kwargs)
        conn.read_only = read_only
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"cannot connect to Postgres at {server_of(database_url)}: {first}") from exc
    if conn.execute("SELECT to_regclass('leaderboard_periods')").fetchone() == (None,):
        conn.close()
        raise SchemaMissing(
            f"Postgres at {server_of(database_url)} has no leaderboard schema: run `leaderboard migrate deploy`"
        )
    return conn


def _snapshot(board_id: str, period_type: str, key: str, found: list[tuple]) -> Snapshot | None:
    """A snapshot statement's rows as header and entries; None when the period is not registered."""
    if not found:
        return None
    start, end, published_at, run_id, total = found[0][:5]
    rows = pl.DataFrame([r[5:] for r in found if r[5] is not None], schema=ENTRY_SCHEMA, orient="row")
    return Snapshot(snapshot_header(board_id, period_type, key, start, end, published_at, run_id, total), rows)


def _params(board_id: str, period_type: str, key: str, **more: object) -> dict[str, object]:
    return {"b": board_id, "t": period_type, "k": key, **more}


def _around(board_id: str, period_type: str, key: str, user_id: str, k: int) -> tuple[str, dict[str, object]]:
    """The statement and parameters of one user's neighbourhood. Postgres text cannot hold a NUL
    character, so no such id is ranked there: it asks for the period's entry with no user."""
    if "\x00" in user_id:
        return SNAPSHOT_USERS, _params(board_id, period_type, key, u=[])
    return SNAPSHOT_AROUND, _params(board_id, period_type, key, u=user_id, around=k)


def _users(board_id: str, period_type: str, key: str, user_ids: list[str]) -> dict[str, object]:
    """Parameters of SNAPSHOT_USERS; an id with a NUL character cannot be ranked in Postgres (as `_around`)."""
    return _params(board_id, period_type, key, u=[u for u in user_ids if "\x00" not in u])


def _ranks(board_id: str, period_type: str, key: str, top: int | None, after: int) -> dict[str, object]:
    """Parameters of SNAPSHOT_RANKS: ranks after `after` up to `top` (no bound when None)."""
    return _params(board_id, period_type, key, first=after + 1, last=MAX_RANK if top is None else top)


# What a read meets when Postgres is down, restarting or out of pool connections (PoolTimeout
# is an OperationalError): the API then treats the store as down, not as a bug.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return StoreUnavailable(f"Postgres read failed: {type(exc).__name__}: {first}".rstrip(": "))


def _unnest(periods: list[PeriodId]) -> tuple[list[str], list[str], list[str]]:
    return [p[0] for p in periods], [p[1] for p in periods], [p[2] for p in periods]


@dataclass(frozen=True)
class PostgresStore:
    """Every store protocol over Postgres, one short connection per call.

    `read_only` sessions refuse any write (the dashboard's); `connect_timeout` keeps a page or
    a probe from hanging on a dead server.
    """

    database_url: str
    read_only: bool = False
    connect_timeout: int = 10

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with connect(self.database_url, self.read_only, connect_timeout=self.connect_timeout) as conn:
            yield conn

    @property
    def server(self) -> str:
        return server_of(self.database_url)

    def ping(self) -> None:
        with self.connection() as conn:
            conn.execute("SELECT 1")

    # standings
    def snapshot(
        self, board_id: str, period_type: str, key: str, top: int | None = None, after: int = 0
    ) -> Snapshot | None:
        with self.connection() as conn:
            found = conn.execute(SNAPSHOT_RANKS, _ranks(board_id, period_type, key, top, after)).fetchall()
        return _snapshot(board_id, period_type, key, found)

    def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None:
        with self.connection() as conn:
            found = conn.execute(*_around(board_id, period_type, key, user_id, k)).fetchall()
        return _snapshot(board_id, period_type, key, found)

    def published_keys(self, board_id: str, period_type: str) -> list[str]:
        with self.connection() as conn:
            return [r[0] for r in conn.execute(PERIOD_KEYS, (board_id, period_type)).fetchall()]

    def period_ends(self, period_type: str) -> dict[tuple[str, str], dt.datetime]:
        """(board, key) -> period_end of every registered period of a type."""
        with self.connection() as conn:
            return {(b, k): end for b, k, end in conn.execute(PERIOD_ENDS, (period_type,)).fetchall()}

    def published_at(self, periods: list[PeriodId]) -> dict[PeriodId, dt.datetime]:
        with self.connection() as conn:
            rows = conn.execute(PUBLISHED_AT, _unnest(periods)).fetchall()
        return {(b, t, k): at for b, t, k, at in rows}

    def rank_history(self, board_id: str, period_type: str, user_id: str, periods: int) -> pl.DataFrame:
        with self.connection() as conn:
            rows = conn.execute(RANK_HISTORY, {"b": board_id, "t": period_type, "u": user_id, "n": periods}).fetchall()
        return pl.DataFrame(rows, schema=HISTORY_SCHEMA, orient="row")

    def periods(self, board_id: str | None = None) -> list[PeriodRecord]:
        """Registered periods, newest first per board and type."""
        with self.connection() as conn:
            return [PeriodRecord(*r) for r in conn.execute(PERIODS, {"b": board_id}).fetchall()]


@dataclass(frozen=True)
class PostgresBoardConfig:
    """BoardConfigStore over Postgres."""

    store: PostgresStore

    def load(self) -> dict[str, Override]:
        with self.store.connection() as conn:
            return {b: Override(limit, enabled) for b, limit, enabled in conn.execute(BOARD_CONFIG).fetchall()}

    def save(self, changes: dict[str, Override], by: str, reason: str = "") -> None:
        """Upsert the overrides, each change with its audit row (before and after), in one transaction."""
        now = dt.datetime.now(dt.UTC)
        with self.store.connection() as conn, conn.transaction():
            before = {b: Override(limit, enabled) for b, limit, enabled in conn.execute(BOARD_CONFIG).fetchall()}
            for board_id, o in changes.items():
                conn.execute(SAVE_BOARD_CONFIG, (board_id, o.display_limit, o.enabled, by))
                old = before.get(board_id)
                details = {"before": asdict(old) if old else None, "after": asdict(o)}
                record_audit(conn, now, by, "board.config", board_id, reason, details)


@dataclass(frozen=True)
class PostgresIngestStats:
    """IngestStatsStore over Postgres."""

    store: PostgresStore

    def save(self, stats: dict) -> None:
        with self.store.connection() as conn, conn.transaction():
            conn.execute(SAVE_INGEST_STATS, tuple(stats[c] for c in INGEST_STATS_COLUMNS))

    def between(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        with self.store.connection() as conn:
            rows = conn.execute(INGEST_STATS, (first, last)).fetchall()
        return pl.DataFrame(rows, schema=INGEST_STATS_SCHEMA, orient="row")


@dataclass(frozen=True)
class PostgresRefreshRequests:
    """RefreshRequestStore over Postgres: concurrent sensors never take the same request."""

    store: PostgresStore

    def request(self, by: str) -> str:
        with self.store.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO leaderboard_refresh_requests (requested_by) VALUES (%s) RETURNING id", (by,)
            ).fetchone()
        return str(row[0])  # type: ignore[index]

    def take(self, batch: str, limit: int = 1000) -> list[str]:
        with self.store.connection() as conn, conn.transaction():
            rows = conn.execute(
                "UPDATE leaderboard_refresh_requests SET status = 'running', run_id = %s WHERE id IN ("
                "  SELECT id FROM leaderboard_refresh_requests WHERE status = 'pending'"
                "  ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, requested_at",
                (batch, limit),
            ).fetchall()
        return [str(i) for i, _ in sorted(rows, key=lambda r: r[1])]

    def finish(self, batch: str, run_id: str, ok: bool) -> int:
        with self.store.connection() as conn, conn.transaction():
            cur = conn.execute(
                "UPDATE leaderboard_refresh_requests SET status = %s, done_at = now(), run_id = %s "
                "WHERE run_id = %s AND status IN ('running', 'failed')",
                ("done" if ok else "failed", run_id if ok else batch, batch),
            )
            return cur.rowcount

    def status(self, request_id: str) -> str | None:
        if not request_id.isdigit():
            return None
        with self.store.connection() as conn:
            row = conn.execute(
                "SELECT status FROM leaderboard_refresh_requests WHERE id = %s", (int(request_id),)
            ).fetchone()
        return row[0] if row else None


@dataclass(frozen=True)
class MonthPartition:
    name: str
    start: dt.datetime
    end: dt.datetime


def expired_periods(conn: psycopg.Connection, cutoff: dt.datetime) -> list[tuple[str, str, str, dt.datetime]]:
    """Registered daily/weekly/monthly periods that ended before `cutoff` (all-time and seasons never expire)."""
    return conn.execute(
        "SELECT board_id, period_type, period_key, period_end FROM leaderboard_periods "
        "WHERE period_type NOT IN ('all_time', 'season') AND period_end < %s ORDER BY period_end",
        (cutoff,),
    ).fetchall()


def month_partitions(conn: psycopg.Connection) -> list[MonthPartition]:
    return [MonthPartition(*r) for r in conn.execute("SELECT * FROM leaderboard_month_partitions()").fetchall()]


def remove_expired(conn: psycopg.Connection, drop: list[str], trim: list[str], cutoff: dt.datetime) -> None:
    """Drop whole month partitions, delete the expired rows of the one straddling `cutoff`, and
    the registry entries, in one transaction."""
    with conn.transaction():
        for name in drop:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        for name in trim:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE period_end < %s").format(sql.Identifier(name)),
                (cutoff,),
            )
        conn.execute(
            "DELETE FROM leaderboard_periods WHERE period_type NOT IN ('all_time', 'season') AND period_end < %s",
            (cutoff,),
        )


@dataclass(frozen=True)
class AsyncPostgres:
    """The API's reads over its connection pool: the same statements as PostgresStore.

    A read that meets a server down or restarting raises StoreUnavailable, so the API falls
    back to its next store instead of failing the request.
    """

    pool: AsyncConnectionPool

    @property
    def name(self) -> str:
        return "postgres"

    async def _rows(self, query: str, params: object) -> list[tuple]:
        try:
            async with self.pool.connection() as conn:
                return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]
        except UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        except psycopg.errors.UndefinedTable as exc:  # up, but not migrated: it cannot answer
            raise SchemaMissing("Postgres has no leaderboard schema: run `leaderboard migrate deploy`") from exc

    async def snapshot(
        self, board_id: str, period_type: str, key: str, top: int | None = None, after: int = 0
    ) -> Snapshot | None:
        found = await self._rows(SNAPSHOT_RANKS, _ranks(board_id, period_type, key, top, after))
        return _snapshot(board_id, period_type, key, found)

    async def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None:
        found = await self._rows(*_around(board_id, period_type, key, user_id, k))
        return _snapshot(board_id, period_type, key, found)

    async def users(self, board_id: str, period_type: str, key: str, user_ids: list[str]) -> Snapshot | None:
        found = await self._rows(SNAPSHOT_USERS, _users(board_id, period_type, key, user_ids))
        return _snapshot(board_id, period_type, key, found)

    async def published_keys(self, board_id: str, period_type: str) -> list[str]:
        return [r[0] for r in await self._rows(PERIOD_KEYS, (board_id, period_type))]

    async def published_at(self, periods: list[PeriodId]) -> dict[PeriodId, dt.datetime]:
        """When each of the given periods was last published (absent: never), in one statement."""
        return {(b, t, k): at for b, t, k, at in await self._rows(PUBLISHED_AT, _unnest(periods))}

    async def load(self) -> dict[str, Override]:
        return {b: Override(limit, enabled) for b, limit, enabled in await self._rows(BOARD_CONFIG, None)}

    async def ping(self, timeout: float = 2) -> None:
        async with self.pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")
