"""Postgres store access: publish a period atomically, read standings, retention.

A period's rows and its registry entry are swapped in one transaction (delete, COPY,
upsert), so a reader sees the old standings or the new ones, never a mix or an empty board.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import polars as pl
import psycopg

RANKING_COLUMNS = (
    "board_id", "period_type", "period_key", "period_start", "period_end", "user_id", "rank", "score",
    "previous_rank", "rank_change", "event_count", "reached_at", "published_at", "run_id",
)  # fmt: skip


class StoreUnavailable(RuntimeError):
    """Postgres or Redis cannot be reached; the message names the server and the cause."""


def server_of(url: str) -> str:
    """host:port of a server URL, for messages (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}".rstrip(":")


def connect(database_url: str, **kwargs: object) -> psycopg.Connection:
    try:
        return psycopg.connect(database_url, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to Postgres at {server_of(database_url)}: {str(exc).strip()}") from exc


def content_hash(rows: pl.DataFrame) -> str:
    """Hash of what readers see (who, rank, score), not of when or by which run."""
    stable = rows.select("user_id", "rank", "score", "previous_rank", "event_count", "reached_at")
    return hashlib.sha256(stable.write_csv().encode()).hexdigest()


def publish(
    conn: psycopg.Connection,
    rows: pl.DataFrame,
    header: dict,
    status: str,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Replace one board-period's rows and registry entry in a single transaction.

    `rows` has RANKING_COLUMNS. `before_commit` runs inside the transaction after the COPY
    (tests use it to kill a publish midway).
    """
    key = (header["board_id"], header["period_type"], header["period_key"])
    payload = io.BytesIO()
    rows.select(RANKING_COLUMNS).write_csv(payload, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z")
    with conn.transaction(), conn.cursor() as cur:
        # One publisher per board-period at a time; others wait instead of colliding.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("|".join(key),))
        if header["period_type"] != "all_time":
            cur.execute("SELECT leaderboard_ensure_partition(%s, %s)", (header["period_type"], header["period_end"]))
        cur.execute(
            "DELETE FROM leaderboard_rankings WHERE board_id = %s AND period_type = %s AND period_key = %s", key
        )
        with cur.copy(f"COPY leaderboard_rankings ({', '.join(RANKING_COLUMNS)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(payload.getvalue())
        cur.execute(
            """INSERT INTO leaderboard_periods (board_id, period_type, period_key, period_start, period_end,
                   status, entries, published_at, run_id, content_hash)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (board_id, period_type, period_key) DO UPDATE SET
                   period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
                   status = EXCLUDED.status, entries = EXCLUDED.entries, published_at = EXCLUDED.published_at,
                   run_id = EXCLUDED.run_id, content_hash = EXCLUDED.content_hash""",
            (*key, header["period_start"], header["period_end"], status, rows.height, header["published_at"],
             header["run_id"], content_hash(rows)),
        )  # fmt: skip
        if before_commit:
            before_commit()


def save_ingest_stats(conn: psycopg.Connection, stats: dict) -> None:
    cols = ("day", "files", "skipped_files", "read", "counted", "duplicates", "conflicts", "quarantined",
            "seconds", "run_id")  # fmt: skip
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[1:])
    with conn.transaction():
        conn.execute(
            f"INSERT INTO leaderboard_ingest_stats ({', '.join(cols)}, written_at) "
            f"VALUES ({', '.join(['%s'] * len(cols))}, now()) "
            f"ON CONFLICT (day) DO UPDATE SET {updates}, written_at = now()",
            tuple(stats[c] for c in cols),
        )


@dataclass(frozen=True)
class PeriodRecord:
    board_id: str
    period_type: str
    period_key: str
    period_start: dt.datetime
    period_end: dt.datetime
    status: str
    entries: int
    published_at: dt.datetime
    run_id: str


def periods(conn: psycopg.Connection, board_id: str | None = None) -> list[PeriodRecord]:
    """Registered periods, newest first per board and type."""
    sql = (
        "SELECT board_id, period_type, period_key, period_start, period_end, status, entries, published_at, run_id "
        "FROM leaderboard_periods WHERE (%(b)s::text IS NULL OR board_id = %(b)s) "
        "ORDER BY board_id, period_type, period_start DESC"
    )
    return [PeriodRecord(*r) for r in conn.execute(sql, {"b": board_id}).fetchall()]


def top(conn: psycopg.Connection, board_id: str, period_type: str, period_key: str, limit: int) -> pl.DataFrame:
    cur = conn.execute(
        "SELECT user_id, rank, score, previous_rank, rank_change FROM leaderboard_rankings "
        "WHERE board_id = %s AND period_type = %s AND period_key = %s ORDER BY rank LIMIT %s",
        (board_id, period_type, period_key, limit),
    )
    schema = {"user_id": pl.String, "rank": pl.Int64, "score": pl.Float64, "previous_rank": pl.Int64,
              "rank_change": pl.Int64}  # fmt: skip
    return pl.DataFrame(cur.fetchall(), schema=schema, orient="row")
