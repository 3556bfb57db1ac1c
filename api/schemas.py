"""Request and response bodies as msgspec structs: they validate requests (their constraints
answer 400 naming the field) and make the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

import msgspec

DisplayLimit = Annotated[int, msgspec.Meta(ge=1, le=1000, description="Entries shown on a board's first page")]


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


class RefreshAccepted(msgspec.Struct):
    id: str
    status: str
    cache_periods_rebuilt: int | None
