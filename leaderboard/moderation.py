"""Moderation rules (docs/contracts.md#moderation): who is excluded from which board, and when.

Pure values: the queries are `leaderboard.stores.moderation`'s, the dropping of excluded
subjects from the scores `leaderboard.ranking.without_excluded`'s. An exclusion is in force from
its creation until it is lifted or its `until` passes; it applies to every ranking computed
while in force (settled periods are not recomputed: they change only through a reopening).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

MAX_REASON_CHARS = 500
MAX_SUBJECT_CHARS = 64  # a user id or group id
EXCLUDED_SCHEMA = {"board_id": pl.String, "user_id": pl.String}  # board_id null: every board
NO_POSTGRES = "moderation needs Postgres (DATABASE_URL): exclusions and the audit are kept there"


class ModerationError(LookupError):
    """A moderation action that does not apply (400, 404 or 409); the message says why."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Exclusion:
    """One row of `leaderboard_exclusions`."""

    id: int
    board_id: str | None  # None: every board
    subject_id: str
    reason: str
    created_by: str
    created_at: dt.datetime
    until: dt.datetime | None
    lifted_at: dt.datetime | None
    lifted_by: str | None
    lift_reason: str | None

    def in_force(self, now: dt.datetime) -> bool:
        return self.lifted_at is None and (self.until is None or now < self.until)

    @property
    def target(self) -> str:
        """How the audit names it: `<board or *>/<subject>`."""
        return f"{self.board_id or '*'}/{self.subject_id}"


def stored_text(text: str) -> str:
    """Postgres text holds no NUL character: it is kept as U+FFFD, as the landing keeps bad bytes."""
    return text.replace("\x00", "\ufffd")


def check_reason(reason: str) -> None:
    if not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise ModerationError(f"reason must be 1-{MAX_REASON_CHARS} characters, not blank", 400)


def check_request(subject: str, reason: str, until: dt.datetime | None, now: dt.datetime) -> None:
    """What an exclusion needs, said as the operator must fix it (400)."""
    if not 1 <= len(subject) <= MAX_SUBJECT_CHARS:
        raise ModerationError(f"subject must be a user or group id of 1-{MAX_SUBJECT_CHARS} characters", 400)
    check_reason(reason)
    if until is not None and until.tzinfo is None:
        raise ModerationError("until needs a UTC offset (e.g. 2026-12-01T00:00:00Z)", 400)
    if until is not None and until <= now:  # well-formed, but over already: a conflict with the clock
        raise ModerationError(f"until {until.isoformat()} is not in the future", 409)
