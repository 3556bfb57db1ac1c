"""Moderation's queries: exclusions and the admin audit (tables: sql/migrations/0008.moderation.sql
and 0006.settlement.sql; rules: `leaderboard.moderation`).

Postgres only: an exclusion and its audit row are written in one transaction. `record_audit` is
the one INSERT into the audit that every admin change goes through (board config, exclusions,
reopenings), inside the change's own transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
import psycopg

from leaderboard.moderation import (
    EXCLUDED_SCHEMA,
    Exclusion,
    ModerationError,
    check_reason,
    check_request,
    stored_text,
)
from leaderboard.stores.errors import SchemaMissing

if TYPE_CHECKING:
    from leaderboard.stores.postgres import PostgresStore

EXCLUSION_COLUMNS = ("id", "board_id", "subject_id", "reason", "created_by", "created_at", "until", "lifted_at",
                     "lifted_by", "lift_reason")  # fmt: skip
_COLUMNS = ", ".join(EXCLUSION_COLUMNS)
EXCLUSION_SCHEMA = {"id": pl.Int64, "board_id": pl.String, "subject_id": pl.String, "reason": pl.String,
                    "created_by": pl.String, "created_at": pl.Datetime("us", "UTC"),
                    "until": pl.Datetime("us", "UTC"), "lifted_at": pl.Datetime("us", "UTC"),
                    "lifted_by": pl.String, "lift_reason": pl.String}  # fmt: skip
AUDIT_SCHEMA = {"id": pl.Int64, "at": pl.Datetime("us", "UTC"), "actor": pl.String, "action": pl.String,
                "target": pl.String, "reason": pl.String, "details": pl.String}  # fmt: skip
EXCLUSION_ACTIONS = ("exclusion.add", "exclusion.lift")

ADD_AUDIT = """INSERT INTO leaderboard_admin_audit (at, actor, action, target, reason, details)
    VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"""
IN_FORCE = "lifted_at IS NULL AND (until IS NULL OR until > %(now)s)"
ADD = f"""INSERT INTO leaderboard_exclusions (board_id, subject_id, reason, created_by, created_at, until)
    VALUES (%(b)s, %(s)s, %(reason)s, %(by)s, %(now)s, %(until)s) RETURNING {_COLUMNS}"""
LIFT = f"""UPDATE leaderboard_exclusions SET lifted_at = %(now)s, lifted_by = %(by)s, lift_reason = %(reason)s
    WHERE id = %(id)s RETURNING {_COLUMNS}"""
ONE = f"SELECT {_COLUMNS} FROM leaderboard_exclusions WHERE id = %(id)s"
LISTED = f"""SELECT {_COLUMNS} FROM leaderboard_exclusions
    WHERE NOT %(in_force)s OR ({IN_FORCE}) ORDER BY id DESC LIMIT %(n)s"""
EXCLUDED = f"SELECT board_id, subject_id FROM leaderboard_exclusions WHERE {IN_FORCE}"
AUDIT = """SELECT id, at, actor, action, target, reason, details::text FROM leaderboard_admin_audit
    WHERE %(action)s::text IS NULL OR action LIKE %(action)s ORDER BY id DESC LIMIT %(n)s"""
# For the sensor: exclusions added or lifted after an audit id, and those whose `until` passed in
# (since, now]; with the boards they name (NULL: every board).
CHANGED = """SELECT max(id) FROM leaderboard_admin_audit"""
CHANGES = """SELECT a.id, e.board_id FROM leaderboard_admin_audit a
        JOIN leaderboard_exclusions e ON e.id = (a.details ->> 'id')::bigint
    WHERE a.action = ANY(%(actions)s) AND a.id > %(after)s
    UNION ALL
    SELECT NULL, board_id FROM leaderboard_exclusions
    WHERE lifted_at IS NULL AND until > %(since)s AND until <= %(now)s"""


def record_audit(
    conn: psycopg.Connection,
    at: dt.datetime,
    actor: str,
    action: str,
    target: str,
    reason: str,
    details: dict | None = None,
) -> int:
    """One audit row, in the caller's transaction; its id."""
    text = [stored_text(t) for t in (actor, action, target, reason)]
    row = conn.execute(ADD_AUDIT, (at, *text, json.dumps(details or {}))).fetchone()
    return int(row[0])  # type: ignore[index]


def _exclusion(row: tuple) -> Exclusion:
    return Exclusion(*row)


def _missing(exc: psycopg.errors.UndefinedTable) -> SchemaMissing:
    return SchemaMissing(
        "Postgres has no moderation tables (sql/migrations/0008.moderation.sql): run `leaderboard migrate deploy`"
    )


@dataclass(frozen=True)
class Changes:
    """What the sensor saw since its cursor."""

    last_audit_id: int  # the cursor to keep
    count: int  # exclusions added, lifted or expired
    boards: tuple[str | None, ...]  # the boards they name, None for every board


@dataclass(frozen=True)
class PostgresModeration:
    """Exclusions and the admin audit over Postgres."""

    store: PostgresStore

    def exclude(
        self,
        board_id: str | None,
        subject: str,
        reason: str,
        by: str,
        now: dt.datetime,
        until: dt.datetime | None = None,
    ) -> Exclusion:
        """Exclude a user or group from a board (None: every board), with its audit row."""
        check_request(subject, reason, until, now)
        subject, reason, by = stored_text(subject), stored_text(reason), stored_text(by)
        params = {"b": board_id, "s": subject, "reason": reason, "by": by, "now": now, "until": until}
        try:
            with self.store.connection() as conn, conn.transaction():
                done = _exclusion(conn.execute(ADD, params).fetchone())  # type: ignore[arg-type]
                details = {"id": done.id, "board": board_id, "subject": subject,
                           "until": until.isoformat() if until else None}  # fmt: skip
                record_audit(conn, now, by, "exclusion.add", done.target, reason, details)
        except psycopg.errors.UndefinedTable as exc:
            raise _missing(exc) from exc
        return done

    def lift(self, exclusion_id: int, by: str, reason: str, now: dt.datetime) -> Exclusion:
        """End an exclusion in force now, with its audit row; 404 unknown, 409 no longer in force."""
        check_reason(reason)
        reason, by = stored_text(reason), stored_text(by)
        if not 0 < exclusion_id < 2**63:  # a bigserial
            raise ModerationError(f"no exclusion {exclusion_id}", 404)
        with self.store.connection() as conn, conn.transaction():
            row = conn.execute(ONE + " FOR UPDATE", {"id": exclusion_id}).fetchone()
            if row is None:
                raise ModerationError(f"no exclusion {exclusion_id}", 404)
            current = _exclusion(row)
            if current.lifted_at is not None:
                raise ModerationError(
                    f"exclusion {exclusion_id} was lifted at {current.lifted_at.isoformat()} by {current.lifted_by}"
                )
            if not current.in_force(now):
                assert current.until is not None
                raise ModerationError(f"exclusion {exclusion_id} ended by itself at {current.until.isoformat()}")
            params = {"id": exclusion_id, "now": now, "by": by, "reason": reason}
            done = _exclusion(conn.execute(LIFT, params).fetchone())  # type: ignore[arg-type]
            details = {"id": done.id, "board": done.board_id, "subject": done.subject_id}
            record_audit(conn, now, by, "exclusion.lift", done.target, reason, details)
        return done

    def get(self, exclusion_id: int) -> Exclusion | None:
        with self.store.connection() as conn:
            row = conn.execute(ONE, {"id": exclusion_id}).fetchone()
        return _exclusion(row) if row else None

    def listed(self, now: dt.datetime, in_force_only: bool = False, limit: int = 200) -> list[Exclusion]:
        """Newest first; `in_force_only`: those neither lifted nor expired."""
        with self.store.connection() as conn:
            rows = conn.execute(LISTED, {"in_force": in_force_only, "now": now, "n": limit}).fetchall()
        return [_exclusion(r) for r in rows]

    def frame(self, now: dt.datetime, in_force_only: bool = False, limit: int = 200) -> pl.DataFrame:
        rows = [tuple(getattr(e, c) for c in EXCLUSION_COLUMNS) for e in self.listed(now, in_force_only, limit)]
        return pl.DataFrame(rows, schema=EXCLUSION_SCHEMA, orient="row")

    def excluded(self, now: dt.datetime) -> pl.DataFrame:
        """(board_id or null, user_id) of every exclusion in force: what the ranking drops."""
        try:
            with self.store.connection() as conn:
                rows = conn.execute(EXCLUDED, {"now": now}).fetchall()
        except psycopg.errors.UndefinedTable as exc:
            raise _missing(exc) from exc
        return pl.DataFrame(rows, schema=EXCLUDED_SCHEMA, orient="row")

    def audit(self, limit: int = 200, action: str | None = None) -> pl.DataFrame:
        """Newest first; `action` a prefix such as `exclusion.`."""
        if action is not None:  # a prefix, not a pattern
            action = stored_text(action).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self.store.connection() as conn:
            rows = conn.execute(AUDIT, {"n": limit, "action": f"{action}%" if action else None}).fetchall()
        return pl.DataFrame(rows, schema=AUDIT_SCHEMA, orient="row")

    def changes(self, after: int | None, since: dt.datetime, now: dt.datetime) -> Changes:
        """Exclusions added or lifted after audit id `after` (None: only learn the latest id), or
        whose `until` passed in (since, now]."""
        try:
            with self.store.connection() as conn:
                last = conn.execute(CHANGED).fetchone()[0] or 0  # type: ignore[index]
                if after is None:
                    return Changes(last, 0, ())
                rows = conn.execute(CHANGES, {"actions": list(EXCLUSION_ACTIONS), "after": after, "since": since,
                                              "now": now}).fetchall()  # fmt: skip
        except psycopg.errors.UndefinedTable as exc:
            raise _missing(exc) from exc
        return Changes(max(last, after), len(rows), tuple(sorted({r[1] for r in rows}, key=lambda b: b or "")))
