from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from leaderboard.periods import (
    PeriodError,
    day_length_hours,
    parse_period_key,
    period_of,
    periods_touching,
    utc_hours,
)

NY = ZoneInfo("America/New_York")
START = dt.date(2024, 1, 1)
D = dt.date


def test_keys_for_each_period_type():
    day = D(2026, 11, 26)
    assert period_of("daily", day).key == "2026-11-26"
    assert period_of("weekly", day).key == "2026-W48"
    assert period_of("weekly", day).start == D(2026, 11, 23)  # Monday
    assert period_of("monthly", day).key == "2026-11"
    assert period_of("all_time", day, START).key == "all"
    assert period_of("all_time", day, START).days()[-1] == day


def test_dst_days_last_23_and_25_hours_in_new_york():
    assert day_length_hours(D(2026, 3, 8), NY) == 23
    assert day_length_hours(D(2026, 11, 1), NY) == 25
    assert day_length_hours(D(2026, 11, 2), NY) == 24
    start, end = period_of("daily", D(2026, 3, 8)).bounds(NY)
    assert (start.hour, end.hour) == (5, 4)  # UTC-5 at the start, UTC-4 at the end
    assert len(list(utc_hours(start, end))) == 23


def test_iso_week_53_of_2026_and_its_neighbours():
    w53 = period_of("weekly", D(2026, 12, 31))
    assert w53.key == "2026-W53" and w53.start == D(2026, 12, 28) and w53.end == D(2027, 1, 4)
    assert period_of("weekly", D(2027, 1, 3)).key == "2026-W53"  # Sunday of the same ISO week
    assert period_of("weekly", D(2027, 1, 4)).previous(START) == w53
    assert w53.previous(START).key == "2026-W52"
    assert parse_period_key("weekly", "2026-W53") == w53
    with pytest.raises(PeriodError):
        parse_period_key("weekly", "2025-W53")  # 2025 has 52 ISO weeks


def test_previous_periods_cross_boundaries():
    assert period_of("daily", D(2027, 1, 1)).previous(START).key == "2026-12-31"
    assert period_of("monthly", D(2027, 1, 15)).previous(START).key == "2026-12"
    assert period_of("monthly", D(2026, 3, 1)).previous(START).days()[-1] == D(2026, 2, 28)
    assert period_of("all_time", D(2026, 5, 2), START).previous(START).end == D(2026, 5, 2)
    assert period_of("daily", START).previous(START) is None
    assert period_of("all_time", START, START).previous(START) is None


@pytest.mark.parametrize(
    ("ptype", "key"), [("daily", "2026-13-01"), ("weekly", "2026-48"), ("monthly", "2026-1"), ("yearly", "2026")]
)
def test_bad_keys_are_refused_with_an_example(ptype, key):
    with pytest.raises(PeriodError):
        parse_period_key(ptype, key)


def test_periods_touching_a_range():
    weeks = periods_touching("weekly", D(2026, 12, 30), D(2027, 1, 12))
    assert [w.key for w in weeks] == ["2026-W53", "2027-W01", "2027-W02"]
    months = periods_touching("monthly", D(2026, 11, 30), D(2027, 1, 1))
    assert [m.key for m in months] == ["2026-11", "2026-12", "2027-01"]
