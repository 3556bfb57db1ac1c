"""Seasons (docs/contracts.md#seasons): custom windows of a board, validated in the boards file,
ranked as period type `season` over exactly [start, end) in the boards' time zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from leaderboard.boards import BoardsFileError, load_boards
from leaderboard.periods import PeriodError, period_end, season_at, season_groups, season_period, status_at

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
# Clocks in Berlin go from 02:00 to 03:00 on 2026-03-29 (UTC+1 to UTC+2): inside the season.
BOARDS = """
timezone: Europe/Berlin
start_date: 2026-03-01
boards:
  - id: points
    event_types: [score.earned]
    aggregate: sum
    periods: [daily, weekly]
    seasons:
      - {id: spring, title: Spring cup, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
      - {id: winter, start: 2026-03-01, end: "2026-03-27T18:00"}
  - id: best
    event_types: [score.earned]
    aggregate: max
    seasons:
      - {id: spring, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
  - id: laps
    event_types: [lap.completed]
    aggregate: min
    order: asc
    seasons:
      - {id: spring, start: 2026-03-28, end: 2026-04-01}
  - id: plain
    event_types: [score.earned]
    aggregate: count
"""
SPRING_START = dt.datetime(2026, 3, 27, 17, tzinfo=UTC)  # 18:00 CET
SPRING_END = dt.datetime(2026, 4, 2, 16, tzinfo=UTC)  # 18:00 CEST


def _boards(tmp_path: Path, text: str = BOARDS):
    path = tmp_path / "boards.yaml"
    path.write_text(text)
    return load_boards(path)


def test_a_season_is_its_local_window_in_utc_across_a_dst_change(tmp_path: Path):
    boards = _boards(tmp_path)
    points = boards.get("points")
    assert points is not None and points.periods == ("daily", "weekly", "season")
    assert boards.get("plain").periods == ("daily", "weekly", "monthly", "all_time")  # type: ignore[union-attr]
    spring = season_period(points, "spring", BERLIN)
    assert spring.bounds(BERLIN) == (SPRING_START, SPRING_END)
    assert (spring.end_at - spring.start_at) == dt.timedelta(days=5, hours=23)  # type: ignore[operator]
    assert spring.days()[0] == dt.date(2026, 3, 27) and spring.days()[-1] == dt.date(2026, 4, 2)
    assert spring.previous(boards.start_date) is None
    assert period_end(boards, "points", "season", "spring") == SPRING_END
    # live until the instant it ends, then over (closing, then settled, is settlement's)
    assert spring.status(BERLIN, SPRING_END - dt.timedelta(microseconds=1)) == "live"
    assert status_at(SPRING_END, SPRING_END) == "final"
    winter = season_period(points, "winter", BERLIN)
    assert winter.bounds(BERLIN) == (dt.datetime(2026, 2, 28, 23, tzinfo=UTC), SPRING_START)  # back to back


def test_season_at_an_instant_or_a_date(tmp_path: Path):
    points = _boards(tmp_path).get("points")
    assert points is not None
    assert season_at(points, SPRING_START, BERLIN).key == "spring"  # type: ignore[union-attr]
    assert season_at(points, SPRING_START - dt.timedelta(microseconds=1), BERLIN).key == "winter"  # type: ignore[union-attr]
    assert season_at(points, SPRING_END, BERLIN) is None
    assert season_at(points, dt.date(2026, 3, 27), BERLIN).key == "winter"  # type: ignore[union-attr]  # at midnight
    assert season_at(points, dt.date(2026, 4, 2), BERLIN).key == "spring"  # type: ignore[union-attr]
    assert season_at(points, dt.date(2026, 4, 3), BERLIN) is None
    with pytest.raises(PeriodError, match="no season 'summer'; its seasons: winter, spring"):
        season_period(points, "summer", BERLIN)


def test_boards_sharing_a_season_id_rank_by_window(tmp_path: Path):
    boards = _boards(tmp_path)
    assert boards.season_ids() == ["winter", "spring"]
    groups = season_groups(boards, "spring")
    assert [([b.id for b in g.boards], p.bounds(BERLIN)) for g, p in groups] == [
        (["points", "best"], (SPRING_START, SPRING_END)),
        (["laps"], (dt.datetime(2026, 3, 27, 23, tzinfo=UTC), dt.datetime(2026, 3, 31, 22, tzinfo=UTC))),
    ]
    assert [g.with_period("season")[0].id for g, _ in groups] == ["points", "laps"]


def _season_file(*seasons: str, tz: str = "Europe/Berlin") -> str:
    lines = "\n".join(f"      - {s}" for s in seasons)
    return f"timezone: {tz}\nboards:\n  - id: points\n    event_types: [s]\n    aggregate: sum\n    seasons:\n{lines}\n"


@pytest.mark.parametrize(
    ("seasons", "expected"),
    [
        (
            ['{id: a, start: "2026-03-02T00:00", end: "2026-03-01T00:00"}'],
            "board 'points' season 'a': Value error, end 2026-03-01T00:00:00 must be after start 2026-03-02T00:00:00",
        ),
        (
            ["{id: a, start: 2026-03-01, end: 2026-03-10}", '{id: b, start: "2026-03-09T12:00", end: 2026-03-20}'],
            "board 'points' field 'seasons': Value error, seasons 'a' (2026-03-01T00:00:00 to 2026-03-10T00:00:00) "
            "and 'b' (2026-03-09T12:00:00 to 2026-03-20T00:00:00) overlap",
        ),
        (
            ["{id: a, start: 2026-03-01, end: 2026-03-10}", "{id: a, start: 2026-04-01, end: 2026-04-10}"],
            "board 'points' field 'seasons': Value error, season ids must be unique on a board; repeated: a",
        ),
        (["{id: Spring!, start: 2026-03-01, end: 2026-03-10}"], "board 'points' season 'Spring!' field 'id'"),
        (["{id: results, start: 2026-03-01, end: 2026-03-10}"], "'results' names a route"),
        (["{id: a, start: soon, end: 2026-03-10}"], "board 'points' season 'a' field 'start': Value error, 'soon'"),
        (["{id: a, start: 2026-03-01T00:00:00Z, end: 2026-03-10}"], "has a UTC offset; write the local date-time"),
        (["{id: a, start: 2026-03-01}"], "board 'points' season 'a' field 'end': Field required"),
        (["{id: a, start: 2026-03-01, end: 2026-03-10, prize: 5}"], "season 'a' field 'prize': Extra inputs"),
        (
            ['{id: a, start: "2026-03-29T02:30", end: 2026-04-10}'],
            "board 'points' season 'a' field 'start': 2026-03-29T02:30:00 does not exist in Europe/Berlin",
        ),
        (
            ['{id: a, start: 2026-03-01, end: "2026-10-25T02:30"}'],
            "board 'points' season 'a' field 'end': 2026-10-25T02:30:00 happens twice in Europe/Berlin",
        ),
    ],
)
def test_bad_seasons_name_file_board_season_and_field(tmp_path: Path, seasons: list[str], expected: str):
    with pytest.raises(BoardsFileError) as err:
        _boards(tmp_path, _season_file(*seasons))
    assert str(tmp_path / "boards.yaml") in str(err.value)
    assert expected in str(err.value)


def test_season_in_periods_needs_seasons(tmp_path: Path):
    text = "boards:\n  - id: points\n    event_types: [s]\n    aggregate: sum\n    periods: [daily, season]\n"
    with pytest.raises(BoardsFileError, match="periods lists 'season' but the board lists no seasons"):
        _boards(tmp_path, text)
