"""Postgres store access: publish a period atomically, read standings.

A period's rows and its registry entries are swapped in one transaction (a freshly loaded
leaf partition replaces the old one), so a reader sees the old standings or the new ones,
never a mix or an empty board.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import polars as pl
import psycopg
from psycopg import sql

from leaderboard.periods import utc_month

RANKING_COLUMNS = (
    "board_id", "period_type", "period_key", "period_start", "period_end", "user_id", "rank", "score",
    "previous_rank", "rank_change", "event_count", "reached_at", "published_at", "run_id",
)  # fmt: skip


PERIOD_COLUMNS = ("period_type", "period_key", "period_start", "period_end", "published_at", "run_id")
USER_COLUMNS = tuple(c for c in RANKING_COLUMNS if c not in PERIOD_COLUMNS)


class StoreUnavailable(RuntimeError):
    """Postgres or Redis cannot be reached; the message names the server and the cause."""


def server_of(url: str) -> str:
    """host:port of a server URL, for messages (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}".rstrip(":")


class SchemaMissing(StoreUnavailable):
    """The database has not been migrated."""


def connect(database_url: str, **kwargs: object) -> psycopg.Connection:
    try:
        conn = psycopg.connect(database_url, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to Postgres at {server_of(database_url)}: {str(exc).strip()}") from exc
    if conn.execute("SELECT to_regclass('leaderboard_periods')").fetchone() == (None,):
        conn.close()
        raise SchemaMissing(
            f"Postgres at {server_of(database_url)} has no leaderboard schema: run `leaderboard migrate deploy`"
        )
    return conn


def content_hash(rows: pl.DataFrame) -> str:
    """Hash of what readers see (who, rank, score), not of when or by which run."""
    stable = rows.select("user_id", "rank", "score", "previous_rank", "event_count", "reached_at")
    return hashlib.sha256(stable.hash_rows(seed=0).to_arrow().buffers()[1]).hexdigest() if rows.height else ""


def _leaf_check(period_type: str, period_key: str, period_end: dt.datetime) -> sql.Composed:
    """A CHECK matching the leaf's whole partition constraint, so ATTACH needs no scan."""
    conds = [
        sql.SQL("period_type = {}").format(sql.Literal(period_type)),
        sql.SQL("period_key = {}").format(sql.Literal(period_key)),
    ]
    if period_type != "all_time":
        lo, hi = utc_month(period_end)
        conds.append(sql.SQL("period_end >= {} AND period_end < {}").format(sql.Literal(lo), sql.Literal(hi)))
    return sql.SQL(" AND ").join(conds)


def publish(
    conn: psycopg.Connection,
    rows: pl.DataFrame,
    headers: list[dict],
    status: str,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Swap one period (every board of it) and its registry entries in a single transaction.

    The rows go by COPY into a new table without indexes, which is then indexed and attached
    in place of the period's old leaf partition; readers see the old leaf or the new one.
    `rows` has RANKING_COLUMNS; `before_commit` runs just before COMMIT (tests kill it there).
    """
    first = headers[0]
    period_type, period_key = first["period_type"], first["period_key"]
    period_end = dt.datetime.fromisoformat(first["period_end"])
    leaf = f"lr_{period_type}_{re.sub(r'[^0-9A-Za-z]', '_', period_key)}_{uuid.uuid4().hex[:8]}"
    # Columns constant over the period become the new table's defaults: COPY carries only the
    # per-user ones (parsing 3 timestamps a row is most of a naive COPY's time).
    constant = {c: rows[c][0] for c in PERIOD_COLUMNS} if rows.height else {}
    payload = io.BytesIO()
    rows.select(USER_COLUMNS).write_csv(payload, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z")
    ident = sql.Identifier(leaf)
    with conn.transaction(), conn.cursor() as cur:
        # One publisher per period at a time; others wait instead of colliding.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{period_type}|{period_key}",))
        row = cur.execute("SELECT leaderboard_ensure_partition(%s, %s)", (period_type, period_end)).fetchone()
        parent = sql.Identifier(row[0])  # type: ignore[index]
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE leaderboard_rankings INCLUDING DEFAULTS)").format(ident))
        for column, value in constant.items():
            cur.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                    ident, sql.Identifier(column), sql.Literal(value)
                )
            )
        with cur.copy(
            # FREEZE: the table is new in this transaction, so rows need no later freezing pass
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, FREEZE)").format(
                ident, sql.SQL(", ").join(map(sql.Identifier, USER_COLUMNS))
            )
        ) as copy:
            copy.write(payload.getvalue())
        cur.execute(sql.SQL("CREATE INDEX ON {} (board_id, rank)").format(ident))
        cur.execute(sql.SQL("CREATE INDEX ON {} (board_id, user_id)").format(ident))
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})").format(
                ident, sql.Identifier(f"{leaf}_bound"), _leaf_check(period_type, period_key, period_end)
            )
        )
        old = cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = "
            "%s::regclass AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%%L)', %s::text)",
            (row[0], period_key),  # type: ignore[index]
        ).fetchone()
        if old:
            cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, sql.Identifier(old[0])))
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(old[0])))
        cur.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                parent, ident, sql.Literal(period_key)
            )
        )
        for header in headers:
            board_rows = rows.filter(pl.col("board_id") == header["board_id"])
            cur.execute(
                """INSERT INTO leaderboard_periods (board_id, period_type, period_key, period_start, period_end,
                       status, entries, published_at, run_id, content_hash)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (board_id, period_type, period_key) DO UPDATE SET
                       period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
                       status = EXCLUDED.status, entries = EXCLUDED.entries, published_at = EXCLUDED.published_at,
                       run_id = EXCLUDED.run_id, content_hash = EXCLUDED.content_hash""",
                (header["board_id"], period_type, period_key, header["period_start"], header["period_end"], status,
                 board_rows.height, header["published_at"], header["run_id"], content_hash(board_rows)),
            )  # fmt: skip
        if before_commit:
            before_commit()


INGEST_STATS_COLUMNS = ("day", "files", "skipped_files", "read", "counted", "duplicates", "conflicts",
                        "quarantined", "seconds", "run_id")  # fmt: skip


def save_ingest_stats(conn: psycopg.Connection, stats: dict) -> None:
    cols = INGEST_STATS_COLUMNS
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
