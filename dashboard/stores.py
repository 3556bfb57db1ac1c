"""Ingest statistics, quarantine, rank history and freshness, from Postgres or the lake.

With DATABASE_URL set, Postgres is the system of record (`leaderboard_ingest_stats`,
`leaderboard_periods`, `leaderboard_rankings`); without it, or when it cannot be reached,
the same facts come from the lake's Parquet files through DuckDB, and the answer says so.
Connections are opened read-only: no page writes data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import psycopg

from leaderboard.boards import BoardSet
from leaderboard.lake import Lake, read_header
from leaderboard.periods import UTC
from leaderboard.pg import INGEST_STATS_COLUMNS, server_of
from leaderboard.standings import resolve_key

INGEST_SCHEMA = {"day": pl.Date, "files": pl.Int64, "skipped_files": pl.Int64, "read": pl.Int64, "counted": pl.Int64,
                 "duplicates": pl.Int64, "conflicts": pl.Int64, "quarantined": pl.Int64, "seconds": pl.Float64,
                 "run_id": pl.String}  # fmt: skip
HISTORY_SCHEMA = {"period_key": pl.String, "rank": pl.Int64, "score": pl.Float64, "total": pl.Int64}


class Unreachable(RuntimeError):
    """A configured store did not answer; the message names the server, never a password."""


@dataclass(frozen=True)
class Answer:
    """A frame and where it came from; `warning` says when a configured store was skipped."""

    frame: pl.DataFrame
    source: str
    warning: str | None = None


@contextmanager
def read_only(database_url: str, timeout: int = 3) -> Iterator[psycopg.Connection]:
    """A read-only Postgres session (any write fails), with a short connect timeout."""
    try:
        conn = psycopg.connect(database_url, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"Postgres at {server_of(database_url)} is unreachable: {first}") from exc
    try:
        conn.read_only = True
        yield conn
    finally:
        conn.close()


def _either(
    database_url: str | None,
    from_pg: Callable[[psycopg.Connection], pl.DataFrame],
    from_lake: Callable[[], pl.DataFrame],
    lake_root: Path,
) -> Answer:
    """Postgres when configured and up, else the lake, saying why."""
    warning = None
    if database_url:
        try:
            with read_only(database_url) as conn:
                return Answer(from_pg(conn), f"Postgres at {server_of(database_url)}")
        except (Unreachable, psycopg.Error) as exc:
            warning = f"{exc}; showing the lake's copy instead."
    return Answer(from_lake(), f"lake at {lake_root}", warning)


def _duck(query: str, params: list[object]) -> pl.DataFrame:
    with duckdb.connect() as con:
        return con.sql(query, params=params).pl()


def ingest_stats(database_url: str | None, lake_dir: Path, first: dt.date, last: dt.date) -> Answer:
    """Per local day in [first, last]: files, read, counted, duplicates, conflicts, quarantined."""
    lake = Lake(lake_dir)

    def from_pg(conn: psycopg.Connection) -> pl.DataFrame:
        rows = conn.execute(
            f"SELECT {', '.join(INGEST_STATS_COLUMNS)} FROM leaderboard_ingest_stats "
            "WHERE day BETWEEN %s AND %s ORDER BY day",
            (first, last),
        ).fetchall()
        return pl.DataFrame(rows, schema=INGEST_SCHEMA, orient="row")

    def from_lake() -> pl.DataFrame:
        files = [str(lake.day_file("ingest_stats", d)) for d in lake.days("ingest_stats") if first <= d <= last]
        if not files:
            return pl.DataFrame(schema=INGEST_SCHEMA)
        cols = ", ".join(f"CAST({c} AS DATE) AS day" if c == "day" else c for c in INGEST_STATS_COLUMNS)
        frame = _duck(f"SELECT {cols} FROM read_parquet(?, union_by_name = true) ORDER BY day", [files])
        return frame.cast(INGEST_SCHEMA)  # type: ignore[arg-type]

    return _either(database_url, from_pg, from_lake, lake.root)


def quarantine_sample(lake_dir: Path, first: dt.date, last: dt.date, limit: int = 50) -> tuple[pl.DataFrame, int]:
    """The newest quarantined records of [first, last] with their reasons, and how many there are
    in all (quarantine is kept in the lake only: it holds raw lines, not ranking data)."""
    lake = Lake(lake_dir)
    files = [str(lake.day_file("quarantine", d)) for d in lake.days("quarantine") if first <= d <= last]
    schema = {"day": pl.Date, "reason": pl.String, "file": pl.String, "line": pl.Int64, "raw": pl.String}
    if not files:
        return pl.DataFrame(schema=schema), 0
    found = _duck(
        "SELECT date AS day, reason, file, line, left(raw, 300) AS raw, count(*) OVER () AS total "
        "FROM read_parquet(?, hive_partitioning = true) ORDER BY date DESC, file, line LIMIT ?",
        [files, limit],
    )
    total = found["total"][0] if found.height else 0
    sample = found.drop("total")
    return sample.cast(schema), int(total)  # type: ignore[arg-type]


def rank_history(
    database_url: str | None, lake_dir: Path, board: str, period_type: str, user_id: str, periods: int = 12
) -> Answer:
    """The user's rank and score in each of the last `periods` published periods (oldest first);
    a period where the user is not ranked has a null rank."""
    lake = Lake(lake_dir)

    def from_pg(conn: psycopg.Connection) -> pl.DataFrame:
        rows = conn.execute(
            """SELECT p.period_key, r.rank, r.score, p.entries
               FROM (SELECT period_key, period_start, entries FROM leaderboard_periods
                     WHERE board_id = %(b)s AND period_type = %(t)s ORDER BY period_start DESC LIMIT %(n)s) p
               LEFT JOIN leaderboard_rankings r ON r.board_id = %(b)s AND r.period_type = %(t)s
                    AND r.period_key = p.period_key AND r.user_id = %(u)s
               ORDER BY p.period_start""",
            {"b": board, "t": period_type, "u": user_id, "n": periods},
        ).fetchall()
        return pl.DataFrame(rows, schema=HISTORY_SCHEMA, orient="row")

    def from_lake() -> pl.DataFrame:
        keys = lake.published_keys(board, period_type)[:periods][::-1]
        if not keys:
            return pl.DataFrame(schema=HISTORY_SCHEMA)
        files = [str(lake.snapshot(board, period_type, k)) for k in keys]
        found = _duck(
            "SELECT period_key, max(rank) FILTER (user_id = ?) AS rank, max(score) FILTER (user_id = ?) AS score, "
            "count(*) AS total FROM read_parquet(?) GROUP BY period_key",
            [user_id, user_id, files],
        )
        return pl.DataFrame({"period_key": keys}).join(found, on="period_key", how="left").cast(HISTORY_SCHEMA)  # type: ignore[arg-type]

    return _either(database_url, from_pg, from_lake, lake.root)


FRESHNESS_SCHEMA = {"board": pl.String, "period": pl.String, "period_key": pl.String,
                    "published_at": pl.Datetime("us", "UTC"), "age_minutes": pl.Float64,
                    "fresh": pl.Boolean}  # fmt: skip


def freshness(
    database_url: str | None, lake_dir: Path, boards: BoardSet, stale_minutes: int, now: dt.datetime | None = None
) -> Answer:
    """For each board's current period of each type: when it was last published and whether that is
    within `stale_minutes` (a current period never published is not fresh)."""
    now = now or dt.datetime.now(UTC)
    today = now.astimezone(boards.tz).date()
    wanted = [
        (b.id, p, resolve_key(boards, p, None if p == "all_time" else today)) for b in boards.boards for p in b.periods
    ]
    lake = Lake(lake_dir)

    def from_pg(conn: psycopg.Connection) -> dict[tuple[str, str, str], dt.datetime]:
        rows = conn.execute(
            "SELECT board_id, period_type, period_key, published_at FROM leaderboard_periods "
            "WHERE (board_id, period_type, period_key) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))",
            ([w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted]),
        ).fetchall()
        return {(b, t, k): at for b, t, k, at in rows}

    def from_lake() -> dict[tuple[str, str, str], dt.datetime]:
        out = {}
        for board, ptype, key in wanted:
            header = read_header(lake, board, ptype, key)
            if header is not None:
                out[(board, ptype, key)] = dt.datetime.fromisoformat(header["published_at"])
        return out

    def frame(published: dict[tuple[str, str, str], dt.datetime]) -> pl.DataFrame:
        rows = []
        for board, ptype, key in wanted:
            at = published.get((board, ptype, key))
            age = (now - at).total_seconds() / 60 if at else None
            rows.append((board, ptype, key, at, age, age is not None and age <= stale_minutes))
        return pl.DataFrame(rows, schema=FRESHNESS_SCHEMA, orient="row")

    return _either(database_url, lambda conn: frame(from_pg(conn)), lambda: frame(from_lake()), lake.root)
