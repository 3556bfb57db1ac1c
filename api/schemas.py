"""Response bodies of DESIGN §7 as msgspec structs (they also make the OpenAPI schema)."""

from __future__ import annotations

import msgspec


class Entry(msgspec.Struct):
    rank: int
    user_id: str
    score: float | int | None
    previous_rank: int | None
    rank_change: int | None


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


class BoardInfo(msgspec.Struct):
    id: str
    title: str
    aggregate: str
    order: str
    periods: list[str]
    display_limit: int


class Periods(msgspec.Struct):
    board: str
    period: str
    keys: list[str]


class Health(msgspec.Struct):
    status: str
    details: dict[str, str] = {}
