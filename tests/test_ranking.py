"""Ranking rules (docs/contracts.md#ranking-rules), on the pure Polars functions and on rolled-up periods."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from leaderboard.boards import Board, BoardSet
from leaderboard.periods import period_of
from leaderboard.ranking import score_events, standings
from leaderboard.stores.lake import Lake, write_atomic
from pipelines.steps import rank_period

UTC = dt.UTC
SUM = Board(id="pts", event_types=("s",), aggregate="sum")
COUNT = Board(id="cnt", event_types=("s",), aggregate="count")
MAX = Board(id="best", event_types=("s",), aggregate="max")
MIN = Board(id="lap", event_types=("s",), aggregate="min", order="asc")


def t(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 26, hour, minute, tzinfo=UTC)


def events(rows: list[tuple[str, float, dt.datetime]], event_type: str = "s") -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "event_type": [event_type] * len(rows),
            "user_id": [r[0] for r in rows],
            "value": [float(r[1]) for r in rows],
            "occurred_at": [r[2] for r in rows],
        },
        schema={
            "event_type": pl.String,
            "user_id": pl.String,
            "value": pl.Float64,
            "occurred_at": pl.Datetime("us", "UTC"),
        },
    )


def ranked(rows, board: Board) -> list[tuple]:
    table = standings(score_events(events(rows), [board]), None, [board]).collect()
    return table.select("rank", "user_id", "score", "reached_at").rows()


def test_ties_break_on_reached_at_then_user_id_bytewise():
    rows = [("bob", 5, t(1)), ("amy", 5, t(2)), ("Zed", 5, t(1)), ("cat", 7, t(3))]
    assert [r[1] for r in ranked(rows, SUM)] == ["cat", "Zed", "bob", "amy"]  # "Z" < "b" bytewise


def test_sum_and_count_reached_at_is_the_last_counted_event():
    rows = [("amy", 3, t(1)), ("amy", -1, t(5)), ("bob", 2, t(2))]
    assert ranked(rows, SUM) == [(1, "bob", 2.0, t(2)), (2, "amy", 2.0, t(5))]
    assert ranked(rows, COUNT) == [(1, "amy", 2.0, t(5)), (2, "bob", 1.0, t(2))]


def test_max_and_min_reached_at_is_the_earliest_event_with_the_extreme():
    rows = [("amy", 9, t(4)), ("amy", 9, t(2)), ("amy", 1, t(1)), ("bob", 9, t(3)), ("bob", 0, t(0))]
    assert ranked(rows, MAX) == [(1, "amy", 9.0, t(2)), (2, "bob", 9.0, t(3))]
    assert ranked(rows, MIN) == [(1, "bob", 0.0, t(0)), (2, "amy", 1.0, t(1))]  # asc: lowest first


def test_asc_order_ranks_lowest_first_and_desc_highest():
    rows = [("a", 30, t(1)), ("b", 10, t(1)), ("c", 20, t(1))]
    assert [r[1] for r in ranked(rows, MIN)] == ["b", "c", "a"]
    assert [r[1] for r in ranked(rows, MAX)] == ["a", "c", "b"]


def test_min_score_drops_users_below_it_and_ranks_stay_gapless():
    board = Board(id="pts", event_types=("s",), aggregate="sum", min_score=10)
    rows = [("a", 9.5, t(1)), ("b", 10, t(1)), ("c", 50, t(1))]
    assert ranked(rows, board) == [(1, "c", 50.0, t(1)), (2, "b", 10.0, t(1))]


def test_only_the_boards_event_types_count_and_large_integers_stay_exact():
    big = 2**52 + 1
    lf = pl.concat([events([("a", big, t(1)), ("a", 1, t(2))]), events([("a", 100, t(3))], "other")])
    table = standings(score_events(lf, [SUM]), None, [SUM]).collect()
    assert table["score"].to_list() == [float(big + 1)] and int(table["score"][0]) == big + 1


def test_previous_rank_and_rank_change():
    now = score_events(events([("a", 10, t(1)), ("b", 20, t(1)), ("c", 5, t(1))]), [SUM])
    before = score_events(events([("a", 30, t(1)), ("b", 20, t(1))]), [SUM])
    table = standings(now, before, [SUM]).collect()
    assert table.select("user_id", "rank", "previous_rank", "rank_change").rows() == [
        ("b", 1, 2, 1),
        ("a", 2, 1, -1),
        ("c", 3, None, None),
    ]


def _lake_with_days(
    tmp_path: Path, days: dict[dt.date, list[tuple[str, float]]], tz: str = "UTC"
) -> tuple[Lake, BoardSet]:
    lake = Lake(tmp_path)
    boards = BoardSet((SUM,), tz, dt.date(2024, 1, 1), tmp_path / "boards.yaml")
    for day, rows in days.items():
        at = dt.datetime.combine(day, dt.time(12), tzinfo=UTC)
        write_atomic(
            score_events(events([(u, v, at) for u, v in rows]), [SUM]).collect(), lake.day_file("daily_scores", day)
        )
    return lake, boards


@pytest.mark.parametrize(
    ("period_type", "before", "after"),
    [
        ("daily", dt.date(2026, 12, 31), dt.date(2027, 1, 1)),  # day and year boundary
        ("weekly", dt.date(2026, 12, 31), dt.date(2027, 1, 4)),  # 2026-W53 -> 2027-W01
        ("monthly", dt.date(2026, 12, 15), dt.date(2027, 1, 2)),  # month and year boundary
    ],
)
def test_previous_rank_across_boundaries(tmp_path, period_type, before, after):
    lake, boards = _lake_with_days(tmp_path, {before: [("a", 1), ("b", 5)], after: [("a", 9), ("b", 2), ("c", 1)]})
    table = rank_period(lake, boards, period_of(period_type, after))
    assert table.select("user_id", "rank", "previous_rank", "rank_change").rows() == [
        ("a", 1, 2, 1),
        ("b", 2, 1, -1),
        ("c", 3, None, None),
    ]


def test_weekly_rolls_up_the_days_of_iso_week_53(tmp_path):
    days = {
        dt.date(2026, 12, 27): [("x", 100)],
        dt.date(2026, 12, 28): [("a", 1)],
        dt.date(2027, 1, 3): [("a", 2), ("b", 2)],
        dt.date(2027, 1, 4): [("b", 100)],
    }
    lake, boards = _lake_with_days(tmp_path, days)
    table = rank_period(lake, boards, period_of("weekly", dt.date(2026, 12, 31)))
    assert table.select("user_id", "score").rows() == [("a", 3.0), ("b", 2.0)]


def test_all_time_previous_is_one_day_earlier(tmp_path):
    lake, boards = _lake_with_days(
        tmp_path,
        {dt.date(2026, 1, 1): [("a", 5)], dt.date(2026, 6, 1): [("b", 3), ("a", 1)], dt.date(2026, 6, 2): [("b", 4)]},
    )
    table = rank_period(lake, boards, period_of("all_time", dt.date(2026, 6, 2), boards.start_date))
    assert table.select("user_id", "score", "rank", "previous_rank").rows() == [("b", 7.0, 1, 2), ("a", 6.0, 2, 1)]
