"""Delivering `period.settled` events from the outbox (docs/contracts.md#settlement-webhook).

Each delivery is a POST of the stored body, signed with HMAC-SHA256, with the same
idempotency id on every attempt; a 2xx marks it delivered, anything else (another status, a
timeout, a refused connection) schedules the next attempt with exponential backoff. The
Dagster sensor `settlement_webhooks` and `leaderboard settlement deliver` call `deliver_due`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import httpx

from leaderboard.periods import UTC
from leaderboard.settlement import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SETTLED_EVENT,
    SIGNATURE_HEADER,
    retry_delay,
    signature,
)
from leaderboard.stores.settlement import OutboxItem, PostgresSettlement

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10.0  # one attempt
BUDGET_SECONDS = 30.0  # no new attempt starts after this long: a sensor tick ends well within its minute
MAX_PER_CALL = 50
LEASE = dt.timedelta(minutes=5)  # a claimed delivery is not claimed again meanwhile (a crashed deliverer's too)


@dataclass(frozen=True)
class Attempt:
    status: int | None  # the receiver's HTTP status; None when it gave none
    error: str | None  # why it failed, for operators; None when delivered

    @property
    def delivered(self) -> bool:
        return self.error is None


@dataclass
class DeliveryReport:
    delivered: list[OutboxItem] = field(default_factory=list)
    failed: list[tuple[OutboxItem, Attempt]] = field(default_factory=list)


def headers(secret: str, item: OutboxItem) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, item.body),
        DELIVERY_HEADER: item.id,
        EVENT_HEADER: SETTLED_EVENT,
        "Idempotency-Key": item.id,
        "User-Agent": "leaderboard-settlement/1",
    }


def post(client: httpx.Client, url: str, secret: str, item: OutboxItem) -> Attempt:
    """One attempt; redirects are not followed (a 3xx is a failure to fix in the URL)."""
    try:
        response = client.post(url, content=item.body, headers=headers(secret, item))
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
    if 200 <= response.status_code < 300:
        return Attempt(response.status_code, None)
    return Attempt(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")


def deliver_due(
    outbox: PostgresSettlement,
    url: str,
    secret: str,
    first_retry: dt.timedelta,
    limit: int = MAX_PER_CALL,
    budget_seconds: float = BUDGET_SECONDS,
    timeout: float = TIMEOUT_SECONDS,
) -> DeliveryReport:
    """Attempt the deliveries due now, one claimed at a time, until none is due, `limit`
    attempts were made, or `budget_seconds` passed."""
    report = DeliveryReport()
    started = time.monotonic()
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(limit):
            if time.monotonic() - started > budget_seconds:
                break
            item = outbox.claim(dt.datetime.now(UTC), LEASE)
            if item is None:
                break
            attempt = post(client, url, secret, item)
            now = dt.datetime.now(UTC)
            if attempt.delivered:
                outbox.attempted(item, now, attempt.status, None, None)
                report.delivered.append(item)
                continue
            next_at = now + retry_delay(item.attempts + 1, first_retry)
            outbox.attempted(item, now, attempt.status, attempt.error, next_at)
            report.failed.append((item, attempt))
            log.warning(
                "webhook %s (%s %s %s revision %d) attempt %d failed, next at %s: %s",
                item.id, item.board_id, item.period_type, item.period_key, item.revision,
                item.attempts + 1, next_at.isoformat(), attempt.error,
            )  # fmt: skip
    return report
