"""Settlement's queries: each board's period state, its history, the admin audit and the
webhook outbox (tables: sql/migrations/0006.settlement.sql; rules: `leaderboard.settlement`).

Postgres only: a settlement, its history row and its outbox row are written in one
transaction, which the lake cannot give (docs/contracts.md#settlement, without Postgres).
A settlement or reopening takes the period's publish lock (`postgres_publish`), so it never
lands between a publisher's check of the period's state and its swap.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
from psycopg_pool import AsyncConnectionPool

from leaderboard.settlement import (
    PIPELINE_ACTOR,
    SETTLED_EVENT,
    Settlement,
    SettlementError,
    late_events,
    settled_event,
    settles,
)
from leaderboard.standings import NAME_COLUMNS, Snapshot
from leaderboard.stores.errors import SchemaMissing
from leaderboard.stores.moderation import record_audit
from leaderboard.stores.postgres import SNAPSHOT_RANKS, AsyncPostgres, PostgresStore, _ranks, _snapshot
from leaderboard.stores.postgres_publish import RANKING_COLUMNS

SETTLEMENT_COLUMNS = ("board_id", "period_type", "period_key", "state", "revision", "content_hash", "entries",
                      "events", "settled_at", "published_at", "reopened_at", "late_after_settlement",
                      "last_late_at")  # fmt: skip
_COLUMNS = ", ".join(SETTLEMENT_COLUMNS)
_PERIOD = "board_id = %(b)s AND period_type = %(t)s AND period_key = %(k)s"
LOCK_TIMEOUT = "10s"  # a settlement waits this long for a publish of the period, then tries next tick

HISTORY_SCHEMA = {"id": pl.Int64, "at": pl.Datetime("us", "UTC"), "board_id": pl.String, "period_type": pl.String,
                  "period_key": pl.String, "action": pl.String, "revision": pl.Int64, "content_hash": pl.String,
                  "entries": pl.Int64, "actor": pl.String, "reason": pl.String}  # fmt: skip
AUDIT_SCHEMA = {"id": pl.Int64, "at": pl.Datetime("us", "UTC"), "actor": pl.String, "action": pl.String,
                "target": pl.String, "reason": pl.String, "details": pl.String}  # fmt: skip
OUTBOX_SCHEMA = {"id": pl.String, "board_id": pl.String, "period_type": pl.String, "period_key": pl.String,
                 "revision": pl.Int64, "created_at": pl.Datetime("us", "UTC"), "attempts": pl.Int64,
                 "next_attempt_at": pl.Datetime("us", "UTC"), "last_attempt_at": pl.Datetime("us", "UTC"),
                 "last_status": pl.Int64, "last_error": pl.String,
                 "delivered_at": pl.Datetime("us", "UTC")}  # fmt: skip
STATE_SCHEMA = {"board_id": pl.String, "period_type": pl.String, "period_key": pl.String, "state": pl.String,
                "revision": pl.Int64, "content_hash": pl.String, "entries": pl.Int64, "events": pl.Int64,
                "settled_at": pl.Datetime("us", "UTC"), "published_at": pl.Datetime("us", "UTC"),
                "reopened_at": pl.Datetime("us", "UTC"), "late_after_settlement": pl.Int64,
                "last_late_at": pl.Datetime("us", "UTC")}  # fmt: skip

# Published periods that may settle now: ended and published since (registry status `final`),
# SETTLE_GRACE_MINUTES past their end; or reopened that long ago and republished since.
DUE = """SELECT p.board_id, p.period_type, p.period_key, p.content_hash, p.entries, p.published_at, s.revision
    FROM leaderboard_periods p LEFT JOIN leaderboard_settlements s
         ON s.board_id = p.board_id AND s.period_type = p.period_type AND s.period_key = p.period_key
    WHERE p.period_type IN ('daily', 'weekly', 'monthly', 'season') AND p.status = 'final'
      AND ((s.state IS NULL AND p.period_end + %(grace)s <= %(now)s)
           OR (s.state = 'reopened' AND s.reopened_at + %(grace)s <= %(now)s AND p.published_at > s.reopened_at))
      AND (%(b)s::text IS NULL OR (p.board_id = %(b)s AND p.period_type = %(t)s AND p.period_key = %(k)s))
    ORDER BY p.period_end, p.board_id, p.period_type LIMIT %(limit)s"""
SAVE_SETTLED = f"""INSERT INTO leaderboard_settlements ({_COLUMNS})
    VALUES (%(b)s, %(t)s, %(k)s, 'settled', %(revision)s, %(hash)s, %(entries)s, %(events)s, %(now)s,
            %(published_at)s, NULL, 0, NULL)
    ON CONFLICT (board_id, period_type, period_key) DO UPDATE SET state = 'settled',
        revision = EXCLUDED.revision, content_hash = EXCLUDED.content_hash, entries = EXCLUDED.entries,
        events = EXCLUDED.events, settled_at = EXCLUDED.settled_at, published_at = EXCLUDED.published_at,
        reopened_at = NULL, late_after_settlement = 0, last_late_at = NULL
    RETURNING {_COLUMNS}"""
ADD_HISTORY = """INSERT INTO leaderboard_settlement_history
    (board_id, period_type, period_key, action, revision, content_hash, entries, at, actor, reason)
    VALUES (%(b)s, %(t)s, %(k)s, %(action)s, %(revision)s, %(hash)s, %(entries)s, %(now)s, %(actor)s, %(reason)s)"""
ADD_OUTBOX = """INSERT INTO leaderboard_webhook_outbox
    (id, event_type, board_id, period_type, period_key, revision, body, created_at, next_attempt_at)
    VALUES (%(id)s, %(event)s, %(b)s, %(t)s, %(k)s, %(revision)s, %(body)s, %(now)s, %(now)s)"""
STATE = f"SELECT {_COLUMNS} FROM leaderboard_settlements WHERE {_PERIOD}"
SETTLED_IN_PERIOD = (
    f"SELECT {_COLUMNS} FROM leaderboard_settlements "
    "WHERE period_type = %s AND period_key = %s AND state = 'settled' ORDER BY board_id"
)
RECORD_LATE = f"""UPDATE leaderboard_settlements SET late_after_settlement = %(late)s, last_late_at = %(now)s
    WHERE {_PERIOD} AND state = 'settled' AND late_after_settlement < %(late)s"""
# The settled standings with their settlement, in one statement (one snapshot of both).
RESULTS = f"""SELECT {", ".join("s." + c for c in SETTLEMENT_COLUMNS)}, snap.* FROM ({SNAPSHOT_RANKS}) snap
    LEFT JOIN leaderboard_settlements s ON s.{_PERIOD.replace(" AND ", " AND s.")} ORDER BY snap.rank"""
AWAITING_REPUBLISH = """SELECT s.board_id, s.period_type, s.period_key, s.reopened_at FROM leaderboard_settlements s
    JOIN leaderboard_periods p ON p.board_id = s.board_id AND p.period_type = s.period_type
         AND p.period_key = s.period_key
    WHERE s.state = 'reopened' AND p.published_at <= s.reopened_at ORDER BY s.reopened_at"""
# The next delivery due: not before an older revision of the same period was delivered.
CLAIM = """UPDATE leaderboard_webhook_outbox SET next_attempt_at = %(lease)s WHERE id = (
    SELECT o.id FROM leaderboard_webhook_outbox o
    WHERE o.delivered_at IS NULL AND o.next_attempt_at <= %(now)s AND NOT EXISTS (
        SELECT 1 FROM leaderboard_webhook_outbox e WHERE e.delivered_at IS NULL AND e.event_type = o.event_type
           AND e.board_id = o.board_id AND e.period_type = o.period_type AND e.period_key = o.period_key
           AND e.revision < o.revision)
    ORDER BY o.next_attempt_at, o.created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id, body, attempts, board_id, period_type, period_key, revision"""
ATTEMPTED = """UPDATE leaderboard_webhook_outbox SET attempts = attempts + 1, last_attempt_at = %(now)s,
    last_status = %(status)s, last_error = %(error)s, next_attempt_at = %(next)s,
    delivered_at = CASE WHEN %(ok)s THEN %(now)s::timestamptz END
    WHERE id = %(id)s"""
UNDELIVERED = """SELECT count(*) FILTER (WHERE attempts = 0), count(*) FILTER (WHERE attempts > 0), min(created_at)
    FROM leaderboard_webhook_outbox WHERE delivered_at IS NULL"""


def period_lock(period_type: str, period_key: str) -> str:
    """The advisory lock a publisher of the period holds (`postgres_publish.publish`)."""
    return f"{period_type}|{period_key}"


def _settlement(row: tuple) -> Settlement:
    return Settlement(*row)


class SettlementChanged(RuntimeError):
    """A board of the period settled or reopened between a publisher's check and its swap."""


@dataclass(frozen=True)
class Due:
    board_id: str
    period_type: str
    period_key: str


@dataclass(frozen=True)
class OutboxItem:
    """A delivery claimed for one attempt."""

    id: str
    body: bytes
    attempts: int  # before this one
    board_id: str
    period_type: str
    period_key: str
    revision: int


@dataclass(frozen=True)
class Undelivered:
    pending: int  # never tried
    failing: int  # tried, no 2xx yet
    oldest: dt.datetime | None


def frozen_in(conn: psycopg.Connection, period_type: str, period_key: str) -> dict[str, Settlement]:
    """board -> settlement of the boards of a period that are settled now."""
    try:
        rows = conn.execute(SETTLED_IN_PERIOD, (period_type, period_key)).fetchall()
    except psycopg.errors.UndefinedTable as exc:  # a schema from before settlement: publishing needs it now
        raise SchemaMissing(
            "Postgres has no settlement tables (sql/migrations/0006.settlement.sql): run `leaderboard migrate deploy`"
        ) from exc
    return {r[0]: _settlement(r) for r in rows}


def check_unchanged(conn: psycopg.Connection, period_type: str, period_key: str, frozen: set[str]) -> None:
    """Under the period's lock: the boards settled are still those the publisher planned for."""
    now = set(frozen_in(conn, period_type, period_key))
    if now != frozen:
        raise SettlementChanged(f"{period_type} {period_key}: settled boards were {sorted(frozen)}, now {sorted(now)}")


@dataclass(frozen=True)
class PostgresSettlement:
    """Settlement state, history, audit and outbox over Postgres."""

    store: PostgresStore

    # settling and reopening
    def due(self, now: dt.datetime, grace: dt.timedelta, limit: int = 200) -> list[Due]:
        with self.store.connection() as conn:
            rows = conn.execute(DUE, {"now": now, "grace": grace, "b": None, "t": None, "k": None,
                                      "limit": limit}).fetchall()  # fmt: skip
        return [Due(*r[:3]) for r in rows]

    def settle(
        self,
        due: Due,
        now: dt.datetime,
        grace: dt.timedelta,
        tz: ZoneInfo,
        webhook_limit: int | None,
        actor: str = PIPELINE_ACTOR,
    ) -> Settlement | None:
        """Settle one board's period if it is still due: state, history and (when `webhook_limit`
        is given: a webhook is configured) the outbox row with the top `webhook_limit`, in one
        transaction under the period's lock. None when it is no longer due, or a publish of the
        period held the lock past LOCK_TIMEOUT (the next tick tries again)."""
        params = {"b": due.board_id, "t": due.period_type, "k": due.period_key}
        try:
            with self.store.connection() as conn, conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                lock = period_lock(due.period_type, due.period_key)
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
                row = conn.execute(DUE, {**params, "now": now, "grace": grace, "limit": 1}).fetchone()
                if row is None:
                    return None
                _, _, _, content_hash, entries, published_at, previous = row
                events = conn.execute(
                    f"SELECT coalesce(sum(event_count), 0) FROM leaderboard_rankings WHERE {_PERIOD}", params
                ).fetchone()[0]  # type: ignore[index]
                revision = (previous or 0) + 1
                saved = conn.execute(SAVE_SETTLED, {**params, "revision": revision, "hash": content_hash,
                                                    "entries": entries, "events": events, "now": now,
                                                    "published_at": published_at}).fetchone()  # fmt: skip
                reason = "grace period passed" if previous is None else "settled again after reopening"
                history = {"action": "settled", "revision": revision, "entries": entries, "hash": content_hash}
                conn.execute(ADD_HISTORY, {**params, **history, "now": now, "actor": actor, "reason": reason})
                if webhook_limit is not None:
                    found = conn.execute(SNAPSHOT_RANKS, _ranks(due.board_id, due.period_type, due.period_key,
                                                                 webhook_limit, 0)).fetchall()  # fmt: skip
                    snapshot = _snapshot(due.board_id, due.period_type, due.period_key, found)
                    assert snapshot is not None  # the registry row was just read under the lock
                    event_id = str(uuid.uuid4())
                    body = settled_event(event_id, snapshot.body(tz, webhook_limit), revision, content_hash, now)
                    conn.execute(ADD_OUTBOX, {**params, "id": event_id, "event": SETTLED_EVENT, "revision": revision,
                                              "body": body.decode(), "now": now})  # fmt: skip
        except psycopg.errors.LockNotAvailable:
            return None
        return _settlement(saved)  # type: ignore[arg-type]

    def settle_due(
        self,
        now: dt.datetime,
        grace: dt.timedelta,
        tz: ZoneInfo,
        webhook_limit: Callable[[str], int] | None,
        limit: int = 200,
    ) -> list[Settlement]:
        """Settle every period due now (at most `limit`, oldest first); `webhook_limit` gives a
        board's number of entries in the webhook body, None when no webhook is configured."""
        settled = []
        for due in self.due(now, grace, limit):
            top = webhook_limit(due.board_id) if webhook_limit is not None else None
            done = self.settle(due, now, grace, tz, top)
            if done is not None:
                settled.append(done)
        return settled

    def reopen(
        self, board_id: str, period_type: str, period_key: str, actor: str, reason: str, now: dt.datetime
    ) -> Settlement:
        """Reopen a settled period: its next publish is no longer refused, and it settles again
        SETTLE_GRACE_MINUTES after now (once republished) under the next revision. History and
        the admin audit record who and why, in the same transaction."""
        params = {"b": board_id, "t": period_type, "k": period_key}
        what = f"{board_id} {period_type} {period_key}"
        if not reason.strip():
            raise SettlementError("a reopening needs a reason", 400)
        with self.store.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (period_lock(period_type, period_key),))
            row = conn.execute(STATE + " FOR UPDATE", params).fetchone()
            if row is None:
                raise SettlementError(f"{what} is not settled: only a settled period can be reopened")
            current = _settlement(row)
            if current.state == "reopened":
                raise SettlementError(
                    f"{what} is already reopened (since {current.reopened_at:%Y-%m-%dT%H:%M:%SZ}); "
                    "it settles again by itself"
                )
            conn.execute(
                f"UPDATE leaderboard_settlements SET state = 'reopened', reopened_at = %(now)s WHERE {_PERIOD}",
                {**params, "now": now},
            )
            conn.execute(ADD_HISTORY, {**params, "action": "reopened", "revision": current.revision,
                                       "hash": current.content_hash, "entries": current.entries, "now": now,
                                       "actor": actor, "reason": reason})  # fmt: skip
            details = {"revision": current.revision, "content_hash": current.content_hash}
            record_audit(conn, now, actor, "period.reopen", f"{board_id}/{period_type}/{period_key}", reason, details)
            return _settlement(conn.execute(STATE, params).fetchone())  # type: ignore[arg-type]

    def state(self, board_id: str, period_type: str, period_key: str) -> Settlement | None:
        with self.store.connection() as conn:
            row = conn.execute(STATE, {"b": board_id, "t": period_type, "k": period_key}).fetchone()
        return _settlement(row) if row else None

    # what a publish of a settled period does instead
    def frozen(self, period_type: str, period_key: str) -> dict[str, Settlement]:
        with self.store.connection() as conn:
            return frozen_in(conn, period_type, period_key)

    def record_late(self, period_type: str, period_key: str, late: dict[str, int], now: dt.datetime) -> None:
        """Each board's count of events a refused publish would have added (kept at its largest)."""
        with self.store.connection() as conn, conn.transaction():
            for board_id, count in late.items():
                conn.execute(RECORD_LATE, {"b": board_id, "t": period_type, "k": period_key, "late": count, "now": now})

    def published_rows(self, period_type: str, period_key: str, boards: list[str]) -> pl.DataFrame:
        """The published rows of some boards of a period (RANKING_COLUMNS and the names), for a
        publish that keeps them as they are in the period's new leaf."""
        columns = [*RANKING_COLUMNS, *NAME_COLUMNS]
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM leaderboard_rankings WHERE period_type = %s "
                "AND period_key = %s AND board_id = ANY(%s) ORDER BY board_id, rank",
                (period_type, period_key, boards),
            ).fetchall()
        return pl.DataFrame(rows, schema=columns, orient="row")

    def awaiting_republish(self) -> list[tuple[Due, dt.datetime]]:
        """Reopened periods not published since their reopening, with when they were reopened."""
        with self.store.connection() as conn:
            return [(Due(b, t, k), at) for b, t, k, at in conn.execute(AWAITING_REPUBLISH).fetchall()]

    # for operators
    def history(self, limit: int = 200, board_id: str | None = None) -> pl.DataFrame:
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(HISTORY_SCHEMA)} FROM leaderboard_settlement_history "
                "WHERE %(b)s::text IS NULL OR board_id = %(b)s ORDER BY id DESC LIMIT %(n)s",
                {"b": board_id, "n": limit},
            ).fetchall()
        return pl.DataFrame(rows, schema=HISTORY_SCHEMA, orient="row")

    def states(self, limit: int = 200) -> pl.DataFrame:
        """Settled and reopened periods, the reopened first, then the latest settled."""
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM leaderboard_settlements "
                "ORDER BY state = 'settled', settled_at DESC, board_id LIMIT %s",
                (limit,),
            ).fetchall()
        return pl.DataFrame(rows, schema=STATE_SCHEMA, orient="row")

    def audit(self, limit: int = 200) -> pl.DataFrame:
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT id, at, actor, action, target, reason, details::text FROM leaderboard_admin_audit "
                "ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return pl.DataFrame(rows, schema=AUDIT_SCHEMA, orient="row")

    # the webhook outbox
    def claim(self, now: dt.datetime, lease: dt.timedelta) -> OutboxItem | None:
        """The next delivery due, leased for one attempt: a second deliverer skips it."""
        with self.store.connection() as conn, conn.transaction():
            row = conn.execute(CLAIM, {"now": now, "lease": now + lease}).fetchone()
        if row is None:
            return None
        item_id, body, *rest = row
        return OutboxItem(str(item_id), body.encode(), *rest)

    def attempted(
        self, item: OutboxItem, now: dt.datetime, status: int | None, error: str | None, next_at: dt.datetime | None
    ) -> None:
        """Record an attempt: delivered (`next_at` None) or due again at `next_at`."""
        with self.store.connection() as conn, conn.transaction():
            conn.execute(ATTEMPTED, {"id": item.id, "now": now, "status": status, "error": error,
                                     "ok": next_at is None, "next": next_at or now})  # fmt: skip

    def outbox(self, limit: int = 200, undelivered_only: bool = False) -> pl.DataFrame:
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT id::text, {', '.join(list(OUTBOX_SCHEMA)[1:])} FROM leaderboard_webhook_outbox "
                "WHERE NOT %s OR delivered_at IS NULL ORDER BY created_at DESC, revision DESC LIMIT %s",
                (undelivered_only, limit),
            ).fetchall()
        return pl.DataFrame(rows, schema=OUTBOX_SCHEMA, orient="row")

    def bodies(self, board_id: str, period_type: str, period_key: str) -> list[bytes]:
        """The bodies queued for a period, oldest revision first."""
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT body FROM leaderboard_webhook_outbox WHERE {_PERIOD} ORDER BY revision",
                {"b": board_id, "t": period_type, "k": period_key},
            ).fetchall()
        return [r[0].encode() for r in rows]

    def undelivered(self) -> Undelivered:
        with self.store.connection() as conn:
            return Undelivered(*conn.execute(UNDELIVERED).fetchone())  # type: ignore[misc]


@dataclass(frozen=True)
class AsyncSettlement:
    """The API's settlement reads over its Postgres pool (the same failures as its other reads:
    StoreUnavailable when the server is down)."""

    pool: AsyncConnectionPool

    async def results(
        self, board_id: str, period_type: str, period_key: str, top: int, after: int
    ) -> tuple[Settlement | None, Snapshot | None]:
        """The period's settlement (None: never settled) and its standings' ranks after+1 .. top
        (None: not published), of one statement."""
        rows = await AsyncPostgres(self.pool)._rows(RESULTS, _ranks(board_id, period_type, period_key, top, after))
        if not rows:
            return None, None
        n = len(SETTLEMENT_COLUMNS)
        settled = _settlement(rows[0][:n]) if rows[0][0] is not None else None
        return settled, _snapshot(board_id, period_type, period_key, [r[n:] for r in rows])

    async def undelivered(self) -> Undelivered:
        rows = await AsyncPostgres(self.pool)._rows(UNDELIVERED, None)
        return Undelivered(*rows[0])


def refuse_settled(
    record: PostgresStore | None, period_type: str, period_key: str, table: pl.DataFrame, now: dt.datetime
) -> dict[str, Settlement]:
    """The boards of a period that are settled, whose publish is therefore refused; the events
    the refused standings count beyond the settled ones are recorded on each as
    `late_after_settlement`. Empty without Postgres (nothing settles there)."""
    if record is None or not settles(period_type):
        return {}
    store = PostgresSettlement(record)
    frozen = store.frozen(period_type, period_key)
    if frozen:
        counted = dict(
            table.filter(pl.col("board_id").is_in(list(frozen)))
            .group_by("board_id")
            .agg(pl.col("event_count").sum())
            .iter_rows()
        )
        late = {b: late_events(int(counted.get(b, 0)), s.events) for b, s in frozen.items()}
        store.record_late(period_type, period_key, {b: n for b, n in late.items() if n}, now)
    return frozen


def kept_rows(
    record: PostgresStore, period_type: str, period_key: str, boards: list[str], like: pl.DataFrame
) -> pl.DataFrame:
    """The settled boards' rows as published, shaped like `like` (the rows being published) for
    the period's new leaf, which holds every board of the period. `published_at` and `run_id`
    are the leaf's (one value per leaf); the registry keeps each board's own."""
    rows = PostgresSettlement(record).published_rows(period_type, period_key, boards)
    if like.height:
        rows = rows.with_columns(pl.lit(like["published_at"][0]).alias("published_at"),
                                 pl.lit(like["run_id"][0]).alias("run_id"))  # fmt: skip
    return rows.select(like.columns).cast(like.schema)  # type: ignore[arg-type]
