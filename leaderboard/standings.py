"""Finding published standings for a board, a period type and an optional date.

Used by `leaderboard show` and the API, so both answer alike.
"""

from __future__ import annotations

import datetime as dt

from leaderboard.boards import PERIOD_TYPES, Board, BoardSet
from leaderboard.lake import Lake, Snapshot, read_snapshot
from leaderboard.periods import ALL_TIME_KEY, period_of


class StandingsError(LookupError):
    """Unknown board or period, or nothing published; the message says what exists."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


def resolve_key(boards: BoardSet, period_type: str, at: dt.date | None) -> str:
    """The period key containing local date `at` (today in the boards' zone by default)."""
    if period_type == "all_time":
        if at is not None:
            raise StandingsError("all_time has a single period ('all'); --at/?at= does not apply", 400)
        return ALL_TIME_KEY
    day = at or dt.datetime.now(boards.tz).date()
    return period_of(period_type, day).key


def check_board(boards: BoardSet, board_id: str, period_type: str) -> Board:
    """The board, or a StandingsError saying which boards and periods exist."""
    board = boards.get(board_id)
    if board is None:
        raise StandingsError(f"unknown board {board_id!r}; boards: {', '.join(b.id for b in boards.boards)}")
    if period_type not in PERIOD_TYPES:
        raise StandingsError(f"unknown period {period_type!r}; use {', '.join(PERIOD_TYPES)}", 400)
    if period_type not in board.periods:
        raise StandingsError(f"board {board_id!r} has no {period_type} standings; it has {', '.join(board.periods)}")
    return board


def find_snapshot(lake: Lake, boards: BoardSet, board_id: str, period_type: str, at: dt.date | None) -> Snapshot:
    check_board(boards, board_id, period_type)
    key = resolve_key(boards, period_type, at)
    snapshot = read_snapshot(lake, board_id, period_type, key)
    if snapshot is None:
        published = lake.published_keys(board_id, period_type)
        hint = f"latest published: {published[0]}" if published else "nothing published yet"
        raise StandingsError(f"no published {period_type} standings of {board_id!r} for {key} ({hint})")
    return snapshot
