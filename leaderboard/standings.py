"""Published standings as every reader sees them: a period's snapshot, its body, and lookups.

The lake, Postgres and Redis all hand out a `Snapshot`; `Snapshot.body` is the one place the
standings body of docs/contracts.md#routes is built, so `leaderboard show`, the API and the
Redis cache answer alike.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

import polars as pl

from leaderboard.boards import ALL_PERIOD_TYPES, SEASON, Board, BoardSet
from leaderboard.periods import (
    ALL_TIME_KEY,
    UTC,
    PeriodError,
    Status,
    parse_period_key,
    period_of,
    season_at,
    status_at,
)

# One entry of a period, as stores return it and the body lists it. `metadata` is a JSON object
# as text, kept as published (its key order and spacing), and parsed only into a body.
ENTRY_SCHEMA = {"user_id": pl.String, "rank": pl.Int64, "score": pl.Float64, "previous_rank": pl.Int64,
                "rank_change": pl.Int64, "display_name": pl.String, "metadata": pl.String}  # fmt: skip
# Columns an entry gained after snapshots were first published: a frame or file without them
# (published before, or by older code) reads them as nulls.
NAME_COLUMNS = {"display_name": pl.String, "metadata": pl.String}


def with_name_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with `display_name` and `metadata`, as nulls where it has none (an older snapshot)."""
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in NAME_COLUMNS.items() if name not in frame.columns]
    return frame.with_columns(missing) if missing else frame


class StandingsError(LookupError):
    """Unknown board or period, or nothing published; the message says what exists."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


def snapshot_header(
    board_id: str,
    period_type: str,
    period_key: str,
    start: dt.datetime,
    end: dt.datetime,
    published_at: dt.datetime,
    run_id: str,
    total: int,
) -> dict:
    """What a published period says of itself (lake file metadata, Redis body, registry)."""
    return {
        "board_id": board_id,
        "period_type": period_type,
        "period_key": period_key,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "published_at": published_at.isoformat(),
        "run_id": run_id,
        "total": total,
    }


def json_number(value: float | None) -> float | int | None:
    """A score as the body sends it: an integral value up to 2^53 as an integer, NaN as null."""
    if value is None or math.isnan(value):
        return None
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


@dataclass(frozen=True)
class Snapshot:
    """One published period of one board: its header and (some of) its rows in rank order."""

    header: dict
    frame: pl.DataFrame

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", with_name_columns(self.frame))  # an older snapshot: nulls

    @property
    def period_end(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.header["period_end"])

    def status(self, now: dt.datetime | None = None) -> Status:
        return status_at(self.period_end, now)

    def body(self, tz: ZoneInfo, limit: int, offset: int = 0, now: dt.datetime | None = None) -> dict:
        """The standings body for one page of this snapshot; `offset` counts from its first row."""
        h = self.header
        page = self.frame.slice(offset, limit)
        return {
            "board": h["board_id"],
            "period": h["period_type"],
            "period_key": h["period_key"],
            "period_start": dt.datetime.fromisoformat(h["period_start"]).astimezone(tz).isoformat(),
            "period_end": self.period_end.astimezone(tz).isoformat(),
            "status": self.status(now),
            "published_at": h["published_at"],
            "total": int(h["total"]),
            "entries": [entry_of(r) for r in page.iter_rows(named=True)],
        }


def entry_of(row: dict) -> dict:
    """A standings row (ENTRY_SCHEMA) as the body lists it."""
    metadata = row["metadata"]
    return {
        "rank": row["rank"],
        "user_id": row["user_id"],
        "score": json_number(row["score"]),
        "previous_rank": row["previous_rank"],
        "rank_change": row["rank_change"],
        "display_name": row["display_name"],
        "metadata": None if metadata is None else json.loads(metadata),
    }


def page_of(body: dict, limit: int, offset: int, now: dt.datetime | None = None) -> dict:
    """A page of a ready standings body (as cached), its status as of now."""
    return {
        **body,
        "status": status_at(dt.datetime.fromisoformat(body["period_end"]), now),
        "entries": body["entries"][offset : offset + limit],
    }


class PublishedStandings(Protocol):
    """What finding a period's standings needs of a store."""

    def snapshot(self, board_id: str, period_type: str, key: str) -> Snapshot | None: ...

    def published_keys(self, board_id: str, period_type: str) -> list[str]: ...


def resolve_key(
    boards: BoardSet, period_type: str, at: dt.date | dt.datetime | None, board_id: str | None = None
) -> str:
    """The period key containing `at`, a local date or an instant (now by default); the one
    all-time period contains every date. A season is the board's (`board_id`) containing the
    instant, or for a date the one containing its midnight, else the first starting that day."""
    if period_type == "all_time":
        return ALL_TIME_KEY
    if period_type == SEASON:
        board = boards.get(board_id) if board_id else None
        if board is None:
            raise StandingsError(f"seasons are a board's: unknown board {board_id!r}")
        found = season_at(board, at or dt.datetime.now(UTC), boards.tz)
        if found is None:
            when = at.isoformat() if at else "now"
            known = season_list(board, boards)
            raise StandingsError(f"no season of {board.id!r} contains {when}; its seasons: {known}")
        return found.key
    if isinstance(at, dt.datetime):
        at = at.astimezone(boards.tz).date()
    day = at or dt.datetime.now(boards.tz).date()
    try:
        return period_of(period_type, day).key
    except OverflowError:  # a period that would end after 9999-12-31: none was ever published
        raise StandingsError(f"no {period_type} period contains {day} (dates end at 9999-12-31)") from None


def season_list(board: Board, boards: BoardSet) -> str:
    """The board's seasons as a user reads them: `spring (2026-03-27T18:00 to 2026-04-02T18:00)`."""
    return ", ".join(f"{s.id} ({s.start:%Y-%m-%dT%H:%M} to {s.end:%Y-%m-%dT%H:%M} {boards.timezone})"
                     for s in board.seasons) or "none"  # fmt: skip


def check_key(boards: BoardSet, board: Board, period_type: str, key: str) -> str:
    """A period key named in a request (`/leaderboard/{board}/{period}/{key}`): a season of the
    board (404 listing them), or a calendar period's key (404 saying its form)."""
    if period_type == SEASON:
        if board.season(key) is None:
            raise StandingsError(f"board {board.id!r} has no season {key!r}; its seasons: {season_list(board, boards)}")
        return key
    if period_type == "all_time":
        if key != ALL_TIME_KEY:
            raise StandingsError(f"no all-time period has key {key!r}: its key is {ALL_TIME_KEY!r}")
        return key
    try:
        return parse_period_key(period_type, key).key
    except PeriodError as exc:  # no such period: 404 like an unpublished one
        raise StandingsError(f"no {period_type} period has key {key!r}: {exc}") from None


def check_board(boards: BoardSet, board_id: str, period_type: str) -> Board:
    """The board, or a StandingsError saying which boards and periods exist."""
    board = boards.get(board_id)
    if board is None:
        raise StandingsError(f"unknown board {board_id!r}; boards: {', '.join(b.id for b in boards.boards)}")
    if period_type not in ALL_PERIOD_TYPES:
        raise StandingsError(f"unknown period {period_type!r}; use {', '.join(ALL_PERIOD_TYPES)}", 400)
    if period_type not in board.periods:
        hint = " (seasons are listed per board under 'seasons' in the boards file)" if period_type == SEASON else ""
        raise StandingsError(
            f"board {board_id!r} has no {period_type} standings; it has {', '.join(board.periods)}{hint}"
        )
    return board


def find_snapshot(
    store: PublishedStandings,
    boards: BoardSet,
    board_id: str,
    period_type: str,
    at: dt.date | dt.datetime | None,
    key: str | None = None,
) -> Snapshot:
    """The published period containing `at`, or named by `key`, or a StandingsError saying why none."""
    board = check_board(boards, board_id, period_type)
    key = resolve_key(boards, period_type, at, board_id) if key is None else check_key(boards, board, period_type, key)
    snapshot = store.snapshot(board_id, period_type, key)
    if snapshot is None:
        published = store.published_keys(board_id, period_type)
        hint = f"latest published: {published[0]}" if published else "nothing published yet"
        raise StandingsError(f"no published {period_type} standings of {board_id!r} for {key} ({hint})")
    return snapshot
