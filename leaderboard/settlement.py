"""Settlement rules (docs/contracts.md#settlement): when a period's standings freeze, what a
settled period says of itself, and the `period.settled` webhook's body, signature and retries.

Pure functions over values: the queries are `leaderboard.stores.settlement`'s, the delivery
`leaderboard.webhook`'s. A period is `live` until its end, then `closing` until the pipeline
settles it (SETTLE_GRACE_MINUTES after its end at the earliest, once it was published after
its end), then `settled`; an operator may reopen it (`reopened`), and it settles again under
the next revision.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

Phase = Literal["live", "closing", "settled", "reopened"]
SETTLED_EVENT = "period.settled"
SIGNATURE_HEADER = "X-Leaderboard-Signature"
DELIVERY_HEADER = "X-Leaderboard-Delivery"  # the idempotency id, the same on every attempt
EVENT_HEADER = "X-Leaderboard-Event"
PIPELINE_ACTOR = "pipeline"
MAX_RETRY_DELAY = dt.timedelta(hours=1)


class SettlementError(LookupError):
    """A settlement action that does not apply now (409), or a period that is not there (404);
    the message says the period's state and what to do."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settlement:
    """The settlement of one board's period as stored (`leaderboard_settlements`)."""

    board_id: str
    period_type: str
    period_key: str
    state: Literal["settled", "reopened"]
    revision: int  # of the last settlement
    content_hash: str
    entries: int
    events: int  # sum of event_count over the settled rows
    settled_at: dt.datetime
    published_at: dt.datetime  # of the snapshot settled
    reopened_at: dt.datetime | None
    late_after_settlement: int
    last_late_at: dt.datetime | None


def settles(period_type: str) -> bool:
    """All-time has no end: it is never settled."""
    return period_type in ("daily", "weekly", "monthly", "season")


def phase(period_end: dt.datetime, now: dt.datetime, settlement: Settlement | None) -> Phase:
    """The one settlement rule: live until the end, then closing until settled (or reopened)."""
    if now < period_end:
        return "live"
    if settlement is None:
        return "closing"
    return settlement.state


def earliest_settlement(period_end: dt.datetime, grace: dt.timedelta, settlement: Settlement | None) -> dt.datetime:
    """When a closing period may settle (a reopened one: the grace counts from its reopening)."""
    if settlement is not None and settlement.reopened_at is not None:
        return settlement.reopened_at + grace
    return period_end + grace


def late_events(refused_events: int, settled_events: int) -> int:
    """Counted events a refused publish of a settled period would have added."""
    return max(0, refused_events - settled_events)


def retry_delay(failures: int, first: dt.timedelta) -> dt.timedelta:
    """Exponential backoff after the n-th failed attempt: first, 2 x first, 4 x first, ... at most an hour."""
    if failures < 1:
        return dt.timedelta(0)
    return min(first * 2 ** min(failures - 1, 20), MAX_RETRY_DELAY)


def settled_event(event_id: str, standings: dict, revision: int, content_hash: str, settled_at: dt.datetime) -> bytes:
    """The `period.settled` body: the settled standings' header and first page (the board's top
    display limit), their revision and hash. Compact, ASCII-only JSON: the bytes signed are the
    bytes sent and stored."""
    data = {
        "board": standings["board"],
        "period": standings["period"],
        "period_key": standings["period_key"],
        "period_start": standings["period_start"],
        "period_end": standings["period_end"],
        "revision": revision,
        "content_hash": content_hash,
        "settled_at": settled_at.isoformat(),
        "published_at": standings["published_at"],
        "total": standings["total"],
        "entries": standings["entries"],
    }
    event = {"id": event_id, "type": SETTLED_EVENT, "created_at": settled_at.isoformat(), "data": data}
    return json.dumps(event, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """`X-Leaderboard-Signature`: `sha256=` and the hex HMAC-SHA256 of the body under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver checks, in constant time."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)
