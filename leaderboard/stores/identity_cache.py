"""The identity service's answers, kept so a publish asks it only for users missing or expired
here, and so a publish it does not answer still carries the names last known
(docs/contracts.md#identity-service).

Postgres table `leaderboard_identity_cache` (sql/migrations/0005.identity-cache.sql) when
DATABASE_URL is set, else one Parquet file in the lake, `identity/cache.parquet`. A row with a
null `display_name` records that the service knew no name for that user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl
import psycopg

from leaderboard.stores.errors import SchemaMissing, server_of
from leaderboard.stores.lake import Lake, write_atomic
from leaderboard.stores.postgres import connect

CACHE_SCHEMA = {
    "user_id": pl.String,
    "display_name": pl.String,
    "avatar_url": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}

LOOKUP = (
    "SELECT c.user_id, c.display_name, c.avatar_url, c.fetched_at FROM leaderboard_identity_cache c "
    "JOIN unnest(%s::text[]) AS asked(user_id) ON asked.user_id = c.user_id"
)
# Rows in user_id order: two publishes saving overlapping users lock them in the same order,
# so they wait for each other instead of deadlocking.
SAVE = (
    "INSERT INTO leaderboard_identity_cache (user_id, display_name, avatar_url, fetched_at) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) ORDER BY 1 "
    "ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name, "
    "avatar_url = EXCLUDED.avatar_url, fetched_at = EXCLUDED.fetched_at"
)


class IdentityCache(Protocol):
    def lookup(self, user_ids: list[str]) -> pl.DataFrame:
        """The cached rows (CACHE_SCHEMA) of those users that have one, fresh or expired."""
        ...

    def save(self, rows: pl.DataFrame) -> None:
        """Insert or replace these users' rows (CACHE_SCHEMA)."""
        ...


def _missing_table(database_url: str, exc: psycopg.errors.UndefinedTable) -> SchemaMissing:
    return SchemaMissing(
        f"Postgres at {server_of(database_url)} has no leaderboard_identity_cache table (migration "
        "0005.identity-cache): run `leaderboard migrate deploy`"
    )


@dataclass(frozen=True)
class PostgresIdentityCache:
    database_url: str

    def lookup(self, user_ids: list[str]) -> pl.DataFrame:
        if not user_ids:
            return pl.DataFrame(schema=CACHE_SCHEMA)
        with connect(self.database_url) as conn:
            try:
                rows = conn.execute(LOOKUP, (user_ids,)).fetchall()
            except psycopg.errors.UndefinedTable as exc:
                raise _missing_table(self.database_url, exc) from exc
        return pl.DataFrame(rows, schema=CACHE_SCHEMA, orient="row")

    def save(self, rows: pl.DataFrame) -> None:
        if rows.is_empty():
            return
        columns = [rows[c].to_list() for c in CACHE_SCHEMA]
        with connect(self.database_url) as conn, conn.transaction():
            try:
                conn.execute(SAVE, columns)
            except psycopg.errors.UndefinedTable as exc:
                raise _missing_table(self.database_url, exc) from exc


@dataclass(frozen=True)
class LakeIdentityCache:
    """The embedded default's cache: one file, rewritten whole (temp file + rename) on save.

    Two publishes saving at once may lose one's answers (the last rename wins): those users are
    asked again by a later publish, nothing else is lost.
    """

    lake: Lake

    @property
    def path(self) -> Path:
        return self.lake.root / "identity" / "cache.parquet"

    def _all(self) -> pl.DataFrame:
        if not self.path.is_file():
            return pl.DataFrame(schema=CACHE_SCHEMA)
        return pl.read_parquet(self.path).select(list(CACHE_SCHEMA)).cast(CACHE_SCHEMA)  # type: ignore[arg-type]

    def lookup(self, user_ids: list[str]) -> pl.DataFrame:
        return self._all().filter(pl.col("user_id").is_in(user_ids))

    def save(self, rows: pl.DataFrame) -> None:
        if rows.is_empty():
            return
        kept = self._all().join(rows.select("user_id"), on="user_id", how="anti")
        write_atomic(pl.concat([kept, rows.select(list(CACHE_SCHEMA))]), self.path)


def identity_cache(database_url: str | None, lake: Lake) -> IdentityCache:
    """Postgres when configured (the system of record), else the lake."""
    return PostgresIdentityCache(database_url) if database_url else LakeIdentityCache(lake)
