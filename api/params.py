"""Request parameters shared by the controllers."""

from __future__ import annotations

import datetime as dt

from litestar.plugins.problem_details import ProblemDetailsException

from leaderboard.periods import PeriodError, parse_date


def local_date(value: str | None) -> dt.date | None:
    """`?at=` as a date, or 400 saying what a date looks like."""
    if value is None:
        return None
    try:
        return parse_date(value)
    except PeriodError as exc:
        raise ProblemDetailsException(status_code=400, detail=f"at={exc}") from None
