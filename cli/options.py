"""Option callbacks shared by the command groups."""

from __future__ import annotations

import datetime as dt

import click

from leaderboard.periods import PeriodError, parse_date, parse_when


def local_date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    """A `YYYY-MM-DD` option as a date, or click's usage error quoting the period rule."""
    if value is None:
        return None
    try:
        return parse_date(value)
    except PeriodError as exc:
        raise click.BadParameter(str(exc)) from None


def local_when(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | dt.datetime | None:
    """A `YYYY-MM-DD` option or a local date-time (`2026-03-29T12:00`; a season's instant, or the
    local day it falls on for the calendar periods)."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except PeriodError as exc:
        raise click.BadParameter(str(exc)) from None


def utc_instant(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    """An ISO instant with its UTC offset (`2026-12-01T00:00:00Z`): a local time would be ambiguous."""
    if value is None:
        return None
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO instant") from None
    if instant.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset (e.g. 2026-12-01T00:00:00Z)")
    return instant
