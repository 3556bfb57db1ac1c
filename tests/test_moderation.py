"""Moderation (docs/contracts.md#moderation): the `last` aggregate, per-board value ranges, and
exclusions with their audit, on real landed files, Postgres and Redis."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from leaderboard.boards import Board, BoardSet
from leaderboard.periods import UTC, period_of
from leaderboard.stores.lake import Lake
from pipelines.steps import ingest_day, rank_period, score_day
from tests.conftest import event, land
from tests.reference import Reference

D1, D2 = dt.date(2026, 11, 2), dt.date(2026, 11, 3)  # a Monday and Tuesday of ISO week 2026-W45
RATING = Board(id="rating", event_types=("rating.changed",), aggregate="last")
TEAM_LEVEL = Board(id="team_level", event_types=("rating.changed",), aggregate="last", group_by="attributes.team")


def _boards(tmp_path: Path, *boards: Board) -> BoardSet:
    return BoardSet(tuple(boards), "UTC", dt.date(2024, 1, 1), tmp_path / "boards.yaml")


def _run(landing: Path, lake: Lake, boards: BoardSet, days: list[dt.date]) -> None:
    for day in days:
        ingest_day(landing, lake, boards, day)
        score_day(lake, boards, day)


def _rating(eid: str, user: str, at: str, value: float, **attrs: object) -> dict:
    return event(eid, user, at, value, "rating.changed", **({"attributes": attrs} if attrs else {}))


def test_last_is_the_value_of_the_latest_counted_event_as_the_reference_says(tmp_path):
    """Latest by occurred_at, then the files' Kafka order, then event id (as display names); over
    days, the latest day's; ties in value rank by the time it was reached."""
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    boards = _boards(tmp_path, RATING, TEAM_LEVEL)
    h1, h2 = dt.datetime(2026, 11, 2, 10, tzinfo=UTC), dt.datetime(2026, 11, 3, 9, tzinfo=UTC)
    land(landing, "game", h1, "game+0+0.json", [
        _rating("a1", "amy", "2026-11-02T10:00:00Z", 1500, team="red"),
        _rating("a2", "amy", "2026-11-02T10:30:00Z", 1400, team="red"),  # later, lower: counts
        _rating("b1", "bob", "2026-11-02T10:20:00Z", 1600, team="blue"),
        _rating("b2", "bob", "2026-11-02T10:20:00Z", 1700, team="blue"),  # same time, same file: greater id
        _rating("c1", "cat", "2026-11-02T10:40:00Z", 1450, team="red"),
        event("x1", "cat", "2026-11-02T10:50:00Z", 9999, "other.type"),  # not counted
    ])  # fmt: skip
    land(landing, "game", h1, "game+1+0.json", [
        _rating("b0", "bob", "2026-11-02T10:20:00Z", 1000, team="blue"),  # same time, a later partition
    ])  # fmt: skip
    land(landing, "game", h2, "game+0+5.json", [
        _rating("a3", "amy", "2026-11-03T09:00:00Z", 1800, team="blue"),  # next day: the week takes it
        _rating("d1", "dan", "2026-11-03T09:10:00Z", 1800, team="red"),  # same value, reached later
    ])  # fmt: skip
    _run(landing, lake, boards, [D1, D2])
    ref = Reference(landing, "UTC")
    for period in (period_of("daily", D1), period_of("daily", D2), period_of("weekly", D1)):
        table = rank_period(lake, boards, period)
        for board in boards.boards:
            want = ref.entries(board, period.start, period.end - dt.timedelta(days=1))
            rows = table.filter(pl.col("board_id") == board.id).sort("rank")
            got = [
                (r["user_id"], r["rank"], r["score"], r["event_count"], r["reached_at"])
                for r in rows.iter_rows(named=True)
            ]
            assert got == [(k, e.rank, e.score, e.event_count, e.reached_at)
                           for k, e in sorted(want.items(), key=lambda kv: kv[1].rank)], (board.id, period.key)  # fmt: skip
    day1 = rank_period(lake, boards, period_of("daily", D1)).filter(pl.col("board_id") == "rating")
    assert day1.select("user_id", "score").rows() == [("cat", 1450.0), ("amy", 1400.0), ("bob", 1000.0)]
    week = rank_period(lake, boards, period_of("weekly", D1))
    assert week.filter(pl.col("board_id") == "rating").select("user_id", "score").rows() == [
        ("amy", 1800.0), ("dan", 1800.0), ("cat", 1450.0), ("bob", 1000.0)]  # fmt: skip
    assert week.filter(pl.col("board_id") == "team_level").select("user_id", "score").rows() == [
        ("blue", 1800.0), ("red", 1800.0)]  # fmt: skip
