"""Response bodies of DESIGN §7 as msgspec structs (they also make the OpenAPI schema)."""

from __future__ import annotations

import msgspec


class Entry(msgspec.Struct):
    rank: int
    user_id: str
    score: float | int | None
    previous_rank: int | None
    rank_change: int | None


class Standings(msgspec.Struct):
    board: str
    period: str
    period_key: str
    period_start: str
    period_end: str
    status: str
    published_at: str
    total: int
    entries: list[Entry]


class UserEntry(msgspec.Struct):
    rank: int
    user_id: str
    score: float | int | None
    previous_rank: int | None
    rank_change: int | None
    percentile: float


class UserStanding(msgspec.Struct):
    board: str
    period: str
    period_key: str
    period_start: str
    period_end: str
    status: str
    published_at: str
    total: int
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
