"""Request and response bodies as msgspec structs: they validate requests (their constraints
answer 400 naming the field) and make the OpenAPI schema."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import annotated_types
import msgspec
from litestar.openapi import ResponseSpec

DisplayLimit = Annotated[int, msgspec.Meta(ge=1, le=1000, description="Entries shown on a board's first page")]


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, the body of every error (`application/problem+json`)."""

    status: int
    detail: str
    title: str | None = None
    extra: list[Any] | dict[str, Any] | None = None


# Every error status a route may answer, documented in its OpenAPI operation so a schema-driven
# client (or fuzzer) can check answers against it. 500 is not among them: it is a bug.
_PROBLEMS = {
    400: "A parameter is invalid or out of bounds; the detail (or `extra`) names it",
    401: "No bearer token, or a refused one (`WWW-Authenticate: Bearer`)",
    403: "The token lacks the role or user this route needs",
    404: "Unknown or disabled board, board without this period type, period not published, or user not ranked in it",
    409: "The period is not in the settlement state this route needs (not settled yet, or not reopenable); "
    "the detail says its state",
    429: "Over the per-address rate limit; `Retry-After` says when to try again",
    503: "No store can answer now (Postgres, Redis and the lake down or unreachable); `Retry-After` says when to retry",
}


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for these error statuses (`responses=` of a route)."""
    return {
        code: ResponseSpec(Problem, description=_PROBLEMS[code], media_type="application/problem+json",
                           generate_examples=False)
        for code in codes
    }  # fmt: skip


class Entry(msgspec.Struct):
    rank: int
    user_id: str  # on a group board, the group's id
    score: float | None  # a whole score is sent as an integer, which a JSON Schema number admits
    previous_rank: int | None
    rank_change: int | None
    display_name: str | None
    metadata: dict[str, Any] | None  # a JSON object, as published


class PeriodHeader(msgspec.Struct):
    """What every standings answer says of its period and snapshot."""

    board: str
    period: str
    period_key: str
    period_start: str
    period_end: str
    status: str
    published_at: str
    total: int


class Standings(PeriodHeader):
    entries: list[Entry]


class UserEntry(Entry):
    percentile: float  # share of the period's users at or below this rank, in %


class UserStanding(PeriodHeader):
    entry: UserEntry
    neighbors: list[Entry]


MAX_USER_IDS = 200  # ids one friends-board request may ask for

# msgspec validates the Meta; Litestar documents an item's bound from annotated_types only.
UserId = Annotated[str, msgspec.Meta(min_length=1), annotated_types.MinLen(1)]


class UserIds(msgspec.Struct):
    """The users a friends board shows (a group board: group ids); an id given twice counts once."""

    user_ids: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_USER_IDS)]


class Selected(PeriodHeader):
    """Some users' entries in one snapshot, in rank order, and the ids of those not ranked in it."""

    entries: list[Entry]
    absent: list[str]


class SeasonInfo(msgspec.Struct):
    """A season of the boards file: [start, end) as local date-times with their UTC offset."""

    id: str
    title: str
    start: str
    end: str


class BoardInfo(msgspec.Struct):
    id: str
    title: str
    aggregate: str
    order: str
    periods: list[str]
    display_limit: int
    seasons: list[SeasonInfo] = msgspec.field(default_factory=list)  # oldest first; period `season`, key = id


class Periods(msgspec.Struct):
    board: str
    period: str
    keys: list[str]


class Health(msgspec.Struct):
    status: str
    details: dict[str, str] = {}


NOT_READY = {503: ResponseSpec(Health, description="No store can serve standings: `unavailable`, with details",
                               generate_examples=False)}  # fmt: skip


class BoardConfig(msgspec.Struct):
    """A board's effective settings (its own limit may exceed what an admin can set)."""

    display_limit: int
    enabled: bool


class BoardConfigPatch(msgspec.Struct, forbid_unknown_fields=True):
    """What an admin changes on one board; a field left out keeps its value."""

    display_limit: DisplayLimit | None = None
    enabled: bool | None = None


class ConfigBody(msgspec.Struct):
    boards: dict[str, BoardConfig]


class ConfigUpdate(msgspec.Struct, forbid_unknown_fields=True):
    boards: dict[str, BoardConfigPatch]
    reason: Annotated[str, msgspec.Meta(max_length=500, description="Why, kept in the audit")] = ""


class RefreshAccepted(msgspec.Struct):
    id: str
    status: str
    cache_periods_rebuilt: int | None


class Results(Standings):
    """Settled standings (docs/contracts.md#settlement): frozen under `revision` and `content_hash`."""

    state: str  # `settled`
    revision: int
    content_hash: str
    settled_at: str
    late_after_settlement: int  # counted events that arrived after settlement and are not in these standings


class ReopenRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500, description="Why, kept in the audit")]


class SettlementState(msgspec.Struct):
    """A board's period as settlement sees it after an admin's change."""

    board: str
    period: str
    period_key: str
    state: str  # `settled` or `reopened`
    revision: int  # of the last settlement
    content_hash: str
    settled_at: str
    reopened_at: str | None


# A reason says something: at least one character that is not white space.
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=r"\S", description="Why, kept in the audit")]


class ExclusionRequest(msgspec.Struct, forbid_unknown_fields=True):
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="A user id, or a group id")]
    reason: Reason
    board: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="null: every board")] | None = None
    until: Annotated[dt.datetime, msgspec.Meta(description="RFC 3339 with offset; null: until lifted")] | None = None


class LiftRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class ExclusionBody(msgspec.Struct):
    """An exclusion (docs/contracts.md#moderation); `in_force`: neither lifted nor expired now."""

    id: int
    board: str | None  # null: every board
    subject: str
    reason: str
    created_by: str
    created_at: str
    until: str | None
    lifted_at: str | None
    lifted_by: str | None
    lift_reason: str | None
    in_force: bool


class AuditEntry(msgspec.Struct):
    """One admin change: a board config update, an exclusion or its lifting, a reopening."""

    id: int
    at: str
    actor: str
    action: str  # board.config, exclusion.add, exclusion.lift, period.reopen
    target: str
    reason: str
    details: dict[str, Any]
