"""What callers need of a store, as small protocols; the lake and Postgres each implement them.

`leaderboard.stores.Stores` picks the implementation once from the settings, so a caller
never asks "is DATABASE_URL set?" and never holds query text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import polars as pl

from leaderboard.standings import Snapshot

INGEST_STATS_SCHEMA = {"day": pl.Date, "files": pl.Int64, "skipped_files": pl.Int64, "read": pl.Int64,
                       "counted": pl.Int64, "duplicates": pl.Int64, "conflicts": pl.Int64, "quarantined": pl.Int64,
                       "seconds": pl.Float64, "ungrouped": pl.String, "run_id": pl.String}  # fmt: skip
HISTORY_SCHEMA = {"period_key": pl.String, "rank": pl.Int64, "score": pl.Float64, "total": pl.Int64}
PeriodId = tuple[str, str, str]  # board_id, period_type, period_key


@dataclass(frozen=True)
class Override:
    """An admin's change to a board: display limit and whether it is served."""

    display_limit: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class PeriodRecord:
    """A published period as the registry lists it."""

    board_id: str
    period_type: str
    period_key: str
    period_start: dt.datetime
    period_end: dt.datetime
    status: str
    entries: int
    published_at: dt.datetime
    run_id: str


class StandingsStore(Protocol):
    """Published standings: a page of a period, one user's neighbourhood, the periods there are."""

    def snapshot(
        self, board_id: str, period_type: str, key: str, top: int | None = None, after: int = 0
    ) -> Snapshot | None:
        """The period with its rows of rank `after`+1 .. `top` (no upper bound when None); None if
        not published."""
        ...

    def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None:
        """The period with the rows ranked within `k` of the user's (none if unranked)."""
        ...

    def published_keys(self, board_id: str, period_type: str) -> list[str]:
        """Published period keys, newest first."""
        ...

    def published_at(self, periods: list[PeriodId]) -> dict[PeriodId, dt.datetime]:
        """When each of the given periods was last published (absent: never)."""
        ...

    def rank_history(self, board_id: str, period_type: str, user_id: str, periods: int) -> pl.DataFrame:
        """The user's rank and score in each of the last `periods` periods, oldest first (HISTORY_SCHEMA)."""
        ...


class BoardConfigStore(Protocol):
    """Admin overrides of the boards file, applied without a restart."""

    def load(self) -> dict[str, Override]: ...

    def save(self, changes: dict[str, Override], by: str, reason: str = "") -> None: ...


class RefreshRequestStore(Protocol):
    """Requests from the API for the pipeline to recompute current periods.

    `take` marks pending requests `running` under a batch (one run serves a batch); `finish`
    records how that run ended. A failed batch keeps its name, so a retry that succeeds marks it done.
    """

    def request(self, by: str) -> str: ...

    def take(self, batch: str, limit: int = 1000) -> list[str]: ...

    def finish(self, batch: str, run_id: str, ok: bool) -> int: ...

    def status(self, request_id: str) -> str | None: ...


class IngestStatsStore(Protocol):
    """Per local day: files, read, counted, duplicates, conflicts, quarantined."""

    def save(self, stats: dict) -> None: ...

    def between(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        """Days in [first, last], oldest first (INGEST_STATS_SCHEMA)."""
        ...


class AsyncStandingsSource(Protocol):
    """What the API reads from Postgres (its pool) or the lake (off the loop).

    A store that cannot answer now (down, restarting, not mounted) raises `StoreUnavailable`;
    None and [] mean a store that is up says "not published".
    """

    @property
    def name(self) -> str:
        """`postgres` or `lake`, for logs and readiness details."""
        ...

    async def snapshot(
        self, board_id: str, period_type: str, key: str, top: int | None = None, after: int = 0
    ) -> Snapshot | None:
        """Rows of rank `after`+1 .. `top`: a page costs the same at any offset."""
        ...

    async def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None: ...

    async def users(self, board_id: str, period_type: str, key: str, user_ids: list[str]) -> Snapshot | None:
        """The rows of these users that are ranked (rank order), with the period's header."""
        ...

    async def published_keys(self, board_id: str, period_type: str) -> list[str]: ...

    async def published_at(self, periods: list[PeriodId]) -> dict[PeriodId, dt.datetime]:
        """When each of the given periods was last published (absent: never)."""
        ...

    async def load(self) -> dict[str, Override]:
        """The board config (admin overrides)."""
        ...

    async def ping(self) -> None:
        """Raise when the store cannot serve."""
        ...
