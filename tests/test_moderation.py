"""Moderation (docs/contracts.md#moderation): the `last` aggregate, per-board value ranges, and
exclusions with their audit, on real landed files, Postgres and Redis."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from leaderboard.boards import Board, BoardSet, BoardsFileError, load_boards
from leaderboard.periods import UTC, period_of
from leaderboard.stores.lake import Lake
from pipelines.steps import ingest_day, rank_period, score_day
from tests.conftest import event, land, write_boards
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


# Value ranges (docs/contracts.md#quarantine-reasons)

RANGED = """
boards:
  - {id: best, event_types: [game.finished], aggregate: max, value_range: [0, 1000]}
  - {id: games, event_types: [game.finished], aggregate: count, value_range: [-10, 5000]}
  - {id: points, event_types: [score.earned], aggregate: sum}
"""


def test_values_outside_a_boards_range_are_quarantined_with_file_line_and_reason(tmp_path):
    """A long file (read in scan order, lines found again) and a short one (read whole): the
    records out of range are quarantined with their line; the type shared by two boards must
    fit both ranges; other types and the rest of the day count as before."""
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    boards = load_boards(write_boards(tmp_path / "boards.yaml", RANGED))
    hour = dt.datetime(2026, 11, 2, 10, tzinfo=UTC)
    padding = [event(f"p{i:04d}", f"u{i % 50}", "2026-11-02T10:00:00Z", 1, name="x" * 60) for i in range(1200)]
    big = [*padding[:700], event("g1", "amy", "2026-11-02T10:05:00Z", 1001, "game.finished"), *padding[700:]]
    land(landing, "game", hour, "game+0+0.json", big)
    land(landing, "game", hour, "game+0+9.json", [
        event("g2", "bob", "2026-11-02T10:06:00Z", 1000, "game.finished"),  # the bound itself: counts
        event("g3", "cat", "2026-11-02T10:07:00Z", -1, "game.finished"),  # inside games', not best's
        event("g4", "dan", "2026-11-02T10:08:00Z", None, "game.finished"),  # absent: 1
        event("s1", "amy", "2026-11-02T10:09:00Z", 10**9),  # no range on score.earned
    ])  # fmt: skip
    assert sum(f.stat().st_size for f in (landing / "topics").rglob("*.json")) > 2 * 64 * 1024  # the scan-order path
    stats = ingest_day(landing, lake, boards, D1)
    quarantine = pl.read_parquet(lake.day_file("quarantine", D1))
    assert [(Path(r["file"]).name, r["line"], r["reason"]) for r in quarantine.iter_rows(named=True)] == [
        ("game+0+0.json", 701, "value out of range: 1001 outside [0, 1000] of board 'best', 'games'"),
        ("game+0+9.json", 2, "value out of range: -1 outside [0, 1000] of board 'best', 'games'"),
    ]
    assert '"g1"' in quarantine["raw"][0]
    assert (stats.read, stats.counted, stats.quarantined) == (1205, 1203, 2)
    score_day(lake, boards, D1)
    table = rank_period(lake, boards, period_of("daily", D1))
    best = table.filter(pl.col("board_id") == "best").select("user_id", "score").rows()
    assert best == [("bob", 1000.0), ("dan", 1.0)]
    assert table.filter(pl.col("board_id") == "games").height == 2
    assert table.filter((pl.col("board_id") == "points") & (pl.col("user_id") == "amy"))["score"].item() == 10**9


def test_a_value_range_must_be_ordered_and_shared_types_need_ranges_that_meet(tmp_path):
    with pytest.raises(BoardsFileError, match=r"board 'b' field 'value_range'.*min <= max; got \[5.0, 1.0\]"):
        load_boards(write_boards(tmp_path / "a.yaml", "boards: [{id: b, event_types: [t], aggregate: max, "
                                 "value_range: [5, 1]}]"))  # fmt: skip
    with pytest.raises(BoardsFileError, match=r"boards x, y count 't' with value_range that do not overlap"):
        load_boards(write_boards(tmp_path / "b.yaml", """
boards:
  - {id: x, event_types: [t], aggregate: max, value_range: [0, 10]}
  - {id: y, event_types: [t], aggregate: sum, value_range: [20, 30]}
"""))  # fmt: skip
