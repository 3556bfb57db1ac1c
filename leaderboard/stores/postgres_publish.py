"""Publishing a period to Postgres atomically (reads and other queries: `postgres`).

A period's rows and its registry entries are swapped in one transaction (a freshly loaded
leaf partition replaces the old one), so a reader sees the old standings or the new ones,
never a mix or an empty board.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import polars as pl
import psycopg
from psycopg import sql

from leaderboard import faults
from leaderboard.periods import utc_month
from leaderboard.standings import with_name_columns
from leaderboard.stores import pgcopy
from leaderboard.stores.postgres import connect

log = logging.getLogger(__name__)

RANKING_COLUMNS = (
    "board_id", "period_type", "period_key", "period_start", "period_end", "user_id", "rank", "score",
    "previous_rank", "rank_change", "event_count", "reached_at", "published_at", "run_id",
)  # fmt: skip


PERIOD_COLUMNS = ("period_type", "period_key", "period_start", "period_end", "published_at", "run_id")
# The other columns with their Postgres types, as binary COPY sends them (they must be the table's).
USER_COLUMNS = {"board_id": "text", "user_id": "text", "rank": "int4", "score": "float8", "previous_rank": "int4",
                "rank_change": "int4", "event_count": "int8", "reached_at": "timestamptz", "display_name": "text",
                "metadata": "text"}  # fmt: skip


def content_hash(rows: pl.DataFrame) -> str:
    """Hash of what readers see (who, rank, score, name, metadata), not of when or by which run."""
    stable = with_name_columns(rows).select(
        "user_id", "rank", "score", "previous_rank", "event_count", "reached_at", "display_name", "metadata"
    )
    return hashlib.sha256(stable.hash_rows(seed=0).to_arrow().buffers()[1]).hexdigest() if rows.height else ""


def _leaf_check(period_type: str, period_key: str, period_end: dt.datetime) -> sql.Composed:
    """A CHECK matching the leaf's whole partition constraint, so ATTACH needs no scan."""
    conds = [
        sql.SQL("period_type = {}").format(sql.Literal(period_type)),
        sql.SQL("period_key = {}").format(sql.Literal(period_key)),
    ]
    if period_type not in KEPT_TYPES:
        lo, hi = utc_month(period_end)
        conds.append(sql.SQL("period_end >= {} AND period_end < {}").format(sql.Literal(lo), sql.Literal(hi)))
    return sql.SQL(" AND ").join(conds)


# Period types partitioned by key alone, never by month: retention keeps them.
KEPT_TYPES = ("all_time", "season")
# A period this large loads over LOAD_CONNECTIONS connections at once: the server's COPY work
# is one process per connection, and is most of a publish's time (bench/publish.py).
LOAD_CONNECTIONS = 2
PARALLEL_LOAD_ROWS = 100_000
_LEAF_PREFIX = "lr_"


def publish(
    database_url: str,
    rows: pl.DataFrame,
    headers: list[dict],
    status: str,
    before_commit: Callable[[], None] | None = None,
    after_commit: Callable[[], None] | None = None,
    under_lock: Callable[[psycopg.Connection], None] | None = None,
) -> None:
    """Swap one period (every board of it) and its registry entries in a single transaction.

    The rows are loaded into a new table outside any partition (in parallel for a large
    period), indexed, and then attached in place of the period's old leaf together with the
    registry upsert; readers see the old leaf or the new one. `rows` has RANKING_COLUMNS, and
    `display_name` and `metadata` (JSON object text) when it names its users (else NULLs);
    `before_commit` runs just before that COMMIT (tests kill it there). `after_commit` runs
    after it, with the period's lock still held: a caller's other stores written there are
    written by one publisher at a time too, so a second publish of the period cannot land
    in Postgres between this one's Postgres and its other stores. `under_lock` runs first once
    the lock is held; raising there publishes nothing (settlement: a board settled meanwhile).
    """
    rows = with_name_columns(rows)
    first = headers[0]
    period_type, period_key = first["period_type"], first["period_key"]
    period_end = dt.datetime.fromisoformat(first["period_end"])
    lock = f"{period_type}|{period_key}"
    # within Postgres's 63 characters, so the random part is never cut off (season ids run to 64)
    leaf = f"{_LEAF_PREFIX}{period_type}_{re.sub(r'[^0-9A-Za-z]', '_', period_key)[:32]}_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(leaf)
    parts = LOAD_CONNECTIONS if rows.height >= PARALLEL_LOAD_ROWS else 1
    with connect(database_url, autocommit=True) as conn:
        # A publisher cut off from the server would keep the period's lock until the server's
        # keepalive gives up (2 hours by default); these make it about a minute.
        conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
        # One publisher per period at a time, for the whole publish; others wait.
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock,))
        try:
            if under_lock:
                under_lock(conn)
            drop_orphan_leaves(conn)
            parent = conn.execute("SELECT leaderboard_ensure_partition(%s, %s)", (period_type, period_end)).fetchone()
            with conn.transaction():
                _create_leaf(conn, ident)
                # The period's lock name lets a later publish tell this table, if orphaned, from a live one.
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(ident, sql.Literal(lock)))
            try:
                with ThreadPoolExecutor(parts + 1) as pool:
                    # Hashing overlaps the load (a thread of its own): both are mostly outside the GIL.
                    digests = pool.submit(lambda: {h["board_id"]: _digest(rows, h["board_id"]) for h in headers})
                    _load_and_index(pool, conn, database_url, ident, rows, parts,
                                    _leaf_check(period_type, period_key, period_end), lock)  # fmt: skip
                with conn.transaction():
                    _swap(conn, parent[0], ident, period_key)  # type: ignore[index]
                    conn.execute(sql.SQL("COMMENT ON TABLE {} IS NULL").format(ident))  # a partition now, no orphan
                    for header in headers:
                        _register(conn, header, status, *digests.result()[header["board_id"]])
                    faults.pause("swap", lock)
                    if before_commit:
                        before_commit()
            except BaseException:
                # Unless the swap committed (an interrupt can come after COMMIT): then it is the period's.
                with contextlib.suppress(psycopg.Error):  # the connection may be the cause; the next publish sweeps it
                    attached = conn.execute("SELECT relispartition FROM pg_class WHERE oid = to_regclass(%s)",
                                            (ident.as_string(conn),)).fetchone()  # fmt: skip
                    if attached == (False,):
                        conn.execute(sql.SQL("DROP TABLE {}").format(ident))
                raise
            if after_commit:
                after_commit()
        finally:
            with contextlib.suppress(psycopg.Error):  # must not hide the error being raised
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))


def _digest(rows: pl.DataFrame, board_id: str) -> tuple[int, str]:
    board_rows = rows.filter(pl.col("board_id") == board_id)
    return board_rows.height, content_hash(board_rows)


def _create_leaf(conn: psycopg.Connection, ident: sql.Identifier) -> None:
    """A table for the period's rows, without the columns constant over the period (see _add_period_columns)."""
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE leaderboard_rankings)").format(ident))
    drops = sql.SQL(", ").join(sql.SQL("DROP COLUMN {}").format(sql.Identifier(c)) for c in PERIOD_COLUMNS)
    conn.execute(sql.SQL("ALTER TABLE {} {}").format(ident, drops))


def _add_period_columns(
    conn: psycopg.Connection, ident: sql.Identifier, rows: pl.DataFrame, check: sql.Composed
) -> None:
    """Add the period's constant columns to the loaded table, each with its value as default.

    Rows that exist when a column is added with a constant default do not store it (PostgreSQL
    keeps the value once, as the column's "missing value"), so a leaf takes about a third less
    space, and the load has less to send, store and log. The CHECK is verified here in one
    scan, so ATTACH needs none.
    """
    found = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attcollation <> t.typcollation THEN c.collname END, a.attnotnull
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation c ON c.oid = a.attcollation
           WHERE a.attrelid = 'leaderboard_rankings'::regclass AND a.attname = ANY(%s)""",
        (list(PERIOD_COLUMNS),),
    ).fetchall()
    adds = []
    for name, type_name, collation, not_null in sorted(found, key=lambda f: PERIOD_COLUMNS.index(f[0])):
        add = sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(name), sql.SQL(type_name))
        if collation:
            add += sql.SQL(" COLLATE {}").format(sql.Identifier(collation))
        if rows.height:
            add += sql.SQL(" DEFAULT {}").format(sql.Literal(rows[name][0]))
        if not_null:
            add += sql.SQL(" NOT NULL")
        adds.append(add)
    adds.append(sql.SQL("ADD CHECK ({})").format(check))
    conn.execute(sql.SQL("ALTER TABLE {} {}").format(ident, sql.SQL(", ").join(adds)))


def _load_and_index(
    pool: ThreadPoolExecutor, conn: psycopg.Connection, database_url: str, ident: sql.Identifier,
    rows: pl.DataFrame, parts: int, check: sql.Composed, lock: str,
) -> None:  # fmt: skip
    """COPY `rows` in `parts` slices over as many connections, add the period's columns, then
    build the two indexes."""
    conns = [conn]
    try:
        conns.extend(connect(database_url, autocommit=True) for _ in range(parts - 1))
        size = -(-rows.height // parts)
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            ident, sql.SQL(", ").join(map(sql.Identifier, USER_COLUMNS))
        )

        def load(i: int) -> None:
            with conns[i].cursor() as cur, cur.copy(copy) as out:
                chunks = pgcopy.encode(rows.slice(i * size, size), USER_COLUMNS)
                for n, part in enumerate(chunks):  # sent while the next is built
                    out.write(part)
                    if n == 0:
                        faults.pause("copy", lock)  # the server is in COPY, the header sent

        _all(pool, [lambda i=i: load(i) for i in range(parts)])
        _add_period_columns(conn, ident, rows, check)
        indexes = ("CREATE INDEX ON {} (rank, board_id)", "CREATE INDEX ON {} (user_id, board_id)")
        _all(pool, [lambda i=i, q=q: conns[i % parts].execute(sql.SQL(q).format(ident)) for i, q in enumerate(indexes)])
    finally:
        for helper in conns[1:]:
            helper.close()


def _all(pool: ThreadPoolExecutor, jobs: list[Callable[[], object]]) -> None:
    """Run the jobs at once and wait for every one (none may still use a connection when it
    is closed), then raise the first failure."""
    futures = [pool.submit(job) for job in jobs]
    wait(futures)
    for future in futures:
        future.result()


def _swap(conn: psycopg.Connection, parent_name: str, leaf: sql.Identifier, period_key: str) -> None:
    parent = sql.Identifier(parent_name)
    old = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = "
        "%s::regclass AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%%L)', %s::text)",
        (parent_name, period_key),
    ).fetchone()
    if old:
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, sql.Identifier(old[0])))
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(old[0])))
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(parent, leaf, sql.Literal(period_key))
    )


def _register(conn: psycopg.Connection, header: dict, status: str, entries: int, digest: str) -> None:
    conn.execute(
        """INSERT INTO leaderboard_periods (board_id, period_type, period_key, period_start, period_end,
               status, entries, published_at, run_id, content_hash)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (board_id, period_type, period_key) DO UPDATE SET
               period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
               status = EXCLUDED.status, entries = EXCLUDED.entries, published_at = EXCLUDED.published_at,
               run_id = EXCLUDED.run_id, content_hash = EXCLUDED.content_hash""",
        (header["board_id"], header["period_type"], header["period_key"], header["period_start"],
         header["period_end"], status, entries, header["published_at"], header["run_id"], digest),
    )  # fmt: skip


def drop_orphan_leaves(conn: psycopg.Connection) -> list[str]:
    """Drop loaded-but-never-attached leaves whose publisher is gone (killed mid-publish).

    A leaf's comment names its period's lock; a publisher holds that lock until it ends, so a
    leaf whose lock is free is an orphan. Returns the tables dropped.
    """
    orphans = (
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relkind = 'r' "
        "AND NOT c.relispartition AND c.relname LIKE %s AND c.relnamespace = current_schema()::regnamespace "
        "AND obj_description(c.oid, 'pg_class') IS NOT NULL"
    )
    prefix = _LEAF_PREFIX.replace("_", r"\_") + "%"
    dropped = []
    for name, lock in conn.execute(orphans, (prefix,)).fetchall():
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock,)).fetchone()[0]:  # type: ignore[index]
            continue  # its publisher is at work
        try:
            with conn.transaction():
                # Listed before the lock was ours: its publisher may have swapped it in since.
                if conn.execute(orphans + " AND c.relname = %s", (prefix, name)).fetchone():
                    conn.execute("SET LOCAL lock_timeout = '2s'")  # someone reading it: leave it for later
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    dropped.append(name)
        except psycopg.Error as exc:
            log.warning("could not drop orphan leaf %s: %s", name, str(exc).strip())
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
    return dropped
