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

from leaderboard.stores import pgcopy
from leaderboard.stores.errors import SchemaMissing, server_of
from leaderboard.stores.lake import Lake
from leaderboard.stores.postgres import connect

CACHE_SCHEMA = {
    "user_id": pl.String,
    "display_name": pl.String,
    "avatar_url": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}

# Both directions go through COPY: a period can publish a million users, and a million-element
# array parameter or a million Python tuples cost seconds where COPY costs a fraction of one.
# Times cross as epoch microseconds, exact and independent of the session's time zone.
STAGE_ASKED = 'CREATE TEMP TABLE identity_asked (user_id text COLLATE "C") ON COMMIT DROP'
COPY_ASKED = "COPY identity_asked (user_id) FROM STDIN (FORMAT BINARY)"
LOOKUP = (
    "COPY (SELECT c.user_id, c.display_name, c.avatar_url, (extract(epoch FROM c.fetched_at) * 1000000)::bigint "
    "FROM leaderboard_identity_cache c JOIN identity_asked a ON a.user_id = c.user_id) TO STDOUT (FORMAT csv)"
)
STAGE_ANSWERED = (
    'CREATE TEMP TABLE identity_answered (user_id text COLLATE "C", display_name text, avatar_url text, '
    "fetched_us bigint) ON COMMIT DROP"
)
COPY_ANSWERED = "COPY identity_answered FROM STDIN (FORMAT csv)"
# Rows in user_id order: two publishes saving overlapping users lock them in the same order,
# so they wait for each other instead of deadlocking.
SAVE = (
    "INSERT INTO leaderboard_identity_cache (user_id, display_name, avatar_url, fetched_at) "
    "SELECT user_id, display_name, avatar_url, timestamptz 'epoch' + fetched_us * interval '1 microsecond' "
    "FROM identity_answered ORDER BY user_id "
    "ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name, "
    "avatar_url = EXCLUDED.avatar_url, fetched_at = EXCLUDED.fetched_at"
)
_TEXT = ("user_id", "display_name", "avatar_url")


class IdentityCache(Protocol):
    def lookup(self, user_ids: pl.Series) -> pl.DataFrame:
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

    def lookup(self, user_ids: pl.Series) -> pl.DataFrame:
        if user_ids.is_empty():
            return pl.DataFrame(schema=CACHE_SCHEMA)
        out = bytearray()
        with connect(self.database_url) as conn, conn.transaction():
            try:
                conn.execute(STAGE_ASKED)
                asked = pl.DataFrame({"user_id": user_ids.cast(pl.String)})
                with conn.cursor() as cur, cur.copy(COPY_ASKED) as copy:
                    for part in pgcopy.encode(asked, {"user_id": "text"}):
                        copy.write(part)
                with conn.cursor() as cur, cur.copy(LOOKUP) as copy:
                    for part in copy:
                        out += part
            except psycopg.errors.UndefinedTable as exc:
                raise _missing_table(self.database_url, exc) from exc
        if not out:
            return pl.DataFrame(schema=CACHE_SCHEMA)
        found = pl.read_csv(
            bytes(out),
            has_header=False,
            new_columns=list(CACHE_SCHEMA),
            schema_overrides=dict.fromkeys(_TEXT, pl.String) | {"fetched_at": pl.Int64},
        )
        return found.with_columns(pl.from_epoch("fetched_at", "us").dt.replace_time_zone("UTC"))

    def save(self, rows: pl.DataFrame) -> None:
        if rows.is_empty():
            return
        with connect(self.database_url) as conn, conn.transaction():
            try:
                conn.execute(STAGE_ANSWERED)
                csv = rows.select(*_TEXT, pl.col("fetched_at").dt.epoch("us")).write_csv(include_header=False)
                with conn.cursor() as cur, cur.copy(COPY_ANSWERED) as copy:
                    copy.write(csv.encode())
                conn.execute(SAVE)
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
        return self.lake.folder / "identity" / "cache.parquet"

    def _all(self) -> pl.DataFrame:
        if not self.lake.pull(self.path).is_file():
            return pl.DataFrame(schema=CACHE_SCHEMA)
        return pl.read_parquet(self.path).select(list(CACHE_SCHEMA)).cast(CACHE_SCHEMA)  # type: ignore[arg-type]

    def lookup(self, user_ids: pl.Series) -> pl.DataFrame:
        return self._all().join(user_ids.cast(pl.String).alias("user_id").to_frame(), on="user_id", how="semi")

    def save(self, rows: pl.DataFrame) -> None:
        if rows.is_empty():
            return
        kept = self._all().join(rows.select("user_id"), on="user_id", how="anti")
        self.lake.write_parquet(pl.concat([kept, rows.select(list(CACHE_SCHEMA))]), self.path)


def identity_cache(database_url: str | None, lake: Lake) -> IdentityCache:
    """Postgres when configured (the system of record), else the lake."""
    return PostgresIdentityCache(database_url) if database_url else LakeIdentityCache(lake)
