"""Period arithmetic in the boards' IANA time zone (docs/contracts.md#boards-and-periods).

A period is a half-open range of local days [start, end). Its instants are the local
midnights, so a daily period lasts 23 or 25 hours across a DST change. A season
(docs/contracts.md#seasons) is the exception: its instants are its own local date-times, and
its days are the local days it touches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from leaderboard.boards import ALL_PERIOD_TYPES, SEASON, Board, BoardSet, PeriodType, local_instant

UTC = dt.UTC
ALL_TIME_KEY = "all"
_WEEK_KEY = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH_KEY = re.compile(r"^(\d{4})-(\d{2})$")


Status = Literal["live", "final"]


class PeriodError(ValueError):
    """A period type, key or date that cannot be understood; the message says what is accepted."""


def status_at(end: dt.datetime, now: dt.datetime | None = None) -> Status:
    """The one live/final rule: a period is live until the instant it ends."""
    return "live" if (now or dt.datetime.now(UTC)) < end else "final"


def parse_date(text: str) -> dt.date:
    """A local date as users type it (`2026-11-26`), or a PeriodError saying the expected form.
    Only that form: `fromisoformat` alone would also take `20261126` and `2026-W48-4`."""
    try:
        if len(text) != 10 or text[4] != "-" or text[7] != "-":
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"{text!r} is not a date like 2026-11-26") from None


def parse_when(text: str) -> dt.date | dt.datetime:
    """A local date (`2026-03-29`) or a date-time (`2026-03-29T12:00`, local without an offset,
    else the instant it names), or a PeriodError saying the forms."""
    if len(text) == 10:
        return parse_date(text)
    try:
        if len(text) < 16 or text[10] not in "T ":
            raise ValueError(text)
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"{text!r} is not a date like 2026-11-26 (nor a date-time like 2026-11-26T12:00)") from None


@dataclass(frozen=True, order=True)
class Period:
    type: PeriodType
    key: str
    start: dt.date  # first local day
    end: dt.date  # first local day after the period
    # A season's own [start, end) in UTC; None for the calendar periods (local midnights).
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None

    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(n) for n in range((self.end - self.start).days)]

    def bounds(self, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
        """The period's [start, end) as UTC instants."""
        if self.start_at is not None and self.end_at is not None:
            return self.start_at, self.end_at
        return local_midnight(self.start, tz), local_midnight(self.end, tz)

    def status(self, tz: ZoneInfo, now: dt.datetime | None = None) -> Status:
        return status_at(self.bounds(tz)[1], now)

    def previous(self, start_date: dt.date) -> Period | None:
        """The period of the same type just before this one, or None before `start_date`.
        A season has none: each is a competition of its own, so its entries show no rank change."""
        if self.type == SEASON:
            return None
        if self.type == "all_time":
            last = self.end - dt.timedelta(days=2)
            return all_time(start_date, last) if last >= start_date else None
        prev = period_of(self.type, self.start - dt.timedelta(days=1), start_date)
        return prev if prev.end > start_date else None


def season_period(board: Board, season_id: str, tz: ZoneInfo) -> Period:
    """The board's season as a period: its UTC window and the local days it touches."""
    season = board.season(season_id)
    if season is None:
        known = ", ".join(s.id for s in board.seasons) or "none"
        raise PeriodError(f"board {board.id!r} has no season {season_id!r}; its seasons: {known}")
    start, end = local_instant(season.start, tz), local_instant(season.end, tz)
    last_day = (end - dt.timedelta(microseconds=1)).astimezone(tz).date()
    return Period(SEASON, season.id, start.astimezone(tz).date(), last_day + dt.timedelta(days=1), start, end)


def season_at(board: Board, at: dt.datetime | dt.date, tz: ZoneInfo) -> Period | None:
    """The board's season containing instant `at` (a date-time without an offset is local); for
    a local date, the one containing its midnight, else the first that starts during that day."""
    periods = [season_period(board, s.id, tz) for s in board.seasons]
    try:
        if isinstance(at, dt.datetime):
            if at.tzinfo is None:
                at = local_instant(at, tz)
            return next((p for p in periods if p.bounds(tz)[0] <= at < p.bounds(tz)[1]), None)
        day_start, day_end = local_midnight(at, tz), local_midnight(at + dt.timedelta(days=1), tz)
    except OverflowError:  # a time at the very ends of the calendar: no season is there
        return None
    found = season_at(board, day_start, tz)
    return found or next((p for p in periods if day_start <= p.bounds(tz)[0] < day_end), None)


def hot_seasons(board: Board, today: dt.date, tz: ZoneInfo) -> tuple[str, ...]:
    """The board's seasons touching local day `today`, and the last one that ended before it."""
    day_start, day_end = local_midnight(today, tz), local_midnight(today + dt.timedelta(days=1), tz)
    periods = [season_period(board, s.id, tz) for s in board.seasons]
    touching = [p.key for p in periods if p.bounds(tz)[0] < day_end and day_start < p.bounds(tz)[1]]
    before = [p for p in periods if p.bounds(tz)[1] <= day_start]
    return tuple(touching + ([max(before, key=lambda p: p.bounds(tz)[1]).key] if before else []))


def season_boards(boards: BoardSet, season_id: str) -> tuple[BoardSet, Period]:
    """The boards listing season `season_id` (they give it one window: `load_boards` checks)
    and the season as a period: what one run of the season's partition ranks and publishes."""
    listing = boards.with_season(season_id)
    if not listing:
        raise PeriodError(f"no board has a season {season_id!r}; seasons: {', '.join(boards.season_ids()) or 'none'}")
    return dataclasses.replace(boards, boards=listing), season_period(listing[0], season_id, boards.tz)


def period_end(boards: BoardSet, board_id: str, period_type: str, key: str) -> dt.datetime:
    """When a published period of a board ends (a season's end is the board's to say)."""
    if period_type == SEASON:
        board = boards.get(board_id)
        if board is None:
            raise PeriodError(f"unknown board {board_id!r}")
        return season_period(board, key, boards.tz).bounds(boards.tz)[1]
    return local_midnight(parse_period_key(period_type, key).end, boards.tz)


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant a local day starts; where midnight is skipped, the first instant after."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(UTC)


def utc_month(instant: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC calendar month containing `instant`: the bounds of a Postgres partition."""
    t = instant.astimezone(UTC)
    return dt.datetime(t.year, t.month, 1, tzinfo=UTC), dt.datetime(
        t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC
    )


def day_length_hours(day: dt.date, tz: ZoneInfo) -> float:
    start, end = period_of("daily", day).bounds(tz)
    return (end - start).total_seconds() / 3600


def utc_hours(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """UTC hour starts whose hour overlaps [start, end): the landing folders to read."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += dt.timedelta(hours=1)


def all_time(start_date: dt.date, last_day: dt.date) -> Period:
    return Period("all_time", ALL_TIME_KEY, start_date, last_day + dt.timedelta(days=1))


def period_of(period_type: str, day: dt.date, start_date: dt.date | None = None) -> Period:
    """The period of `period_type` containing local `day` (all-time: up to and including it)."""
    if period_type == "daily":
        return Period("daily", day.isoformat(), day, day + dt.timedelta(days=1))
    if period_type == "weekly":
        monday = day - dt.timedelta(days=day.weekday())
        year, week, _ = monday.isocalendar()
        return Period("weekly", f"{year}-W{week:02d}", monday, monday + dt.timedelta(days=7))
    if period_type == "monthly":
        first = day.replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        return Period("monthly", f"{first:%Y-%m}", first, nxt)
    if period_type == "all_time":
        if start_date is None:
            raise PeriodError("an all-time period needs the boards' start_date")
        return all_time(start_date, day)
    if period_type == SEASON:
        raise PeriodError("a season is the board's: see season_period")
    raise PeriodError(f"unknown period type {period_type!r}; use one of {', '.join(ALL_PERIOD_TYPES)}")


def parse_period_key(period_type: str, key: str) -> Period:
    """A daily, weekly or monthly period from its key (`2026-11-26`, `2026-W48`, `2026-11`)."""
    try:
        if period_type == "daily":
            return period_of("daily", dt.date.fromisoformat(key))
        if period_type == "weekly" and (m := _WEEK_KEY.match(key)):
            return period_of("weekly", dt.date.fromisocalendar(int(m[1]), int(m[2]), 1))
        if period_type == "monthly" and (m := _MONTH_KEY.match(key)):
            return period_of("monthly", dt.date(int(m[1]), int(m[2]), 1))
    except ValueError:
        pass
    examples = {"daily": "2026-11-26", "weekly": "2026-W48", "monthly": "2026-11"}
    if period_type not in examples:
        raise PeriodError(f"period type {period_type!r} has no keys to parse")
    raise PeriodError(f"bad {period_type} period key {key!r}; expected like {examples[period_type]}")


def periods_touching(period_type: str, first: dt.date, last: dt.date) -> list[Period]:
    """Every daily/weekly/monthly period that contains at least one day of [first, last]."""
    out: list[Period] = []
    day = first
    while day <= last:
        period = period_of(period_type, day)
        out.append(period)
        day = period.end
    return out
