"""The storage layer: which stores a process uses, chosen once from the settings.

The lake is always there (the embedded default, with neither DATABASE_URL nor
REDIS_URL/REDIS_HOST set); Postgres, when configured, is the system of record for standings,
board config, refresh requests and ingest stats; Redis, when configured, caches standings.
Callers ask `Stores` for a protocol (`leaderboard.stores.protocols`) and never for a
backend. All query text lives in this package.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import redis as redis_py

from leaderboard.periods import PeriodError, local_midnight, parse_period_key
from leaderboard.settings import Settings
from leaderboard.stores import redis as redis_store
from leaderboard.stores.errors import SchemaMissing, StoreUnavailable, server_of
from leaderboard.stores.lake import Lake, LakeIngestStats, LakeStandings, read_header
from leaderboard.stores.lake_records import LakeBoardConfig, LakeRefreshRequests
from leaderboard.stores.moderation import PostgresModeration
from leaderboard.stores.postgres import (
    PostgresBoardConfig,
    PostgresIngestStats,
    PostgresRefreshRequests,
    PostgresStore,
    connect,
)
from leaderboard.stores.protocols import (
    BoardConfigStore,
    IngestStatsStore,
    Override,
    RefreshRequestStore,
    StandingsStore,
)

__all__ = [
    "BoardConfigStore",
    "IngestStatsStore",
    "Lake",
    "Override",
    "RefreshRequestStore",
    "SchemaMissing",
    "StandingsStore",
    "StoreUnavailable",
    "Stores",
    "server_of",
]


@dataclass(frozen=True)
class Stores:
    lake: Lake
    database_url: str | None = None
    redis_url: str | None = None
    key_prefix: str = "leaderboard"
    redis_max_connections: int = 50
    read_only: bool = False  # Postgres sessions refuse writes (the dashboard's)
    connect_timeout: int = 10

    @classmethod
    def from_settings(cls, s: Settings) -> Stores:
        return cls(Lake(s.LEADERBOARD_LAKE_DIR), s.DATABASE_URL, s.redis_url, s.REDIS_KEY_PREFIX,
                   s.REDIS_MAX_CONNECTIONS)  # fmt: skip

    @property
    def keys(self) -> redis_store.CacheKeys:
        return redis_store.CacheKeys(self.key_prefix)

    @property
    def record(self) -> PostgresStore | None:
        """Postgres, the system of record, when configured."""
        if not self.database_url:
            return None
        return PostgresStore(self.database_url, self.read_only, self.connect_timeout)

    def standings(self) -> StandingsStore:
        """Where published standings are read: Postgres when configured, else the lake."""
        return self.record or LakeStandings(self.lake)

    def lake_standings(self) -> StandingsStore:
        """The lake's copy: a reader's fallback when Postgres is down."""
        return LakeStandings(self.lake)

    def lake_ingest_stats(self) -> IngestStatsStore:
        """The lake's copy: a reader's fallback when Postgres is down."""
        return LakeIngestStats(self.lake)

    def period_ends(self, period_type: str, tz: ZoneInfo) -> dict[str, dict[str, dt.datetime]]:
        """board -> {key: period end} of the published periods of a type (for the Redis period
        lists): the registry's when Postgres is configured, else from the lake's keys (all-time's
        end is its publish's to say)."""
        if self.record is not None:
            found: dict[str, dict[str, dt.datetime]] = {}
            for (board, key), end in self.record.period_ends(period_type).items():
                found.setdefault(board, {})[key] = end
            return found
        out: dict[str, dict[str, dt.datetime]] = {}
        for board, listed_type, key, _ in self.lake.snapshots():
            if listed_type != period_type or period_type == "all_time":
                continue
            if period_type == "season":  # a season's end is the boards file's: its snapshot names it
                header = read_header(self.lake, board, period_type, key)
                if header is not None:
                    out.setdefault(board, {})[key] = dt.datetime.fromisoformat(header["period_end"])
                continue
            try:
                out.setdefault(board, {})[key] = local_midnight(parse_period_key(period_type, key).end, tz)
            except PeriodError:
                continue  # not a period file
        return out

    def board_config(self) -> BoardConfigStore:
        return PostgresBoardConfig(self.record) if self.record else LakeBoardConfig(self.lake)

    def refresh_requests(self) -> RefreshRequestStore:
        return PostgresRefreshRequests(self.record) if self.record else LakeRefreshRequests(self.lake)

    def ingest_stats(self) -> IngestStatsStore:
        """Where ingest stats are read; they are always written to the lake too (`save_ingest_stats`)."""
        return PostgresIngestStats(self.record) if self.record else LakeIngestStats(self.lake)

    def excluded(self, now: dt.datetime) -> pl.DataFrame | None:
        """The exclusions in force at `now` (docs/contracts.md#moderation); None without Postgres,
        where there are none."""
        if self.record is None:
            return None
        return PostgresModeration(self.record).excluded(now)

    def save_ingest_stats(self, stats: dict) -> None:
        LakeIngestStats(self.lake).save(stats)
        if self.record:
            PostgresIngestStats(self.record).save(stats)

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection | None]:
        """A connection for publishing and retention, or None in the embedded default."""
        if not self.database_url:
            yield None
            return
        with connect(self.database_url) as conn:
            yield conn

    @contextmanager
    def redis(self) -> Iterator[redis_py.Redis | None]:
        if not self.redis_url:
            yield None
            return
        client = redis_store.connect(self.redis_url, self.redis_max_connections)
        try:
            yield client
        finally:
            client.close()
