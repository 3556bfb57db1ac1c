"""Request parameters shared by the controllers."""

from __future__ import annotations

import datetime as dt

from litestar.plugins.problem_details import ProblemDetailsException

from leaderboard.periods import PeriodError, parse_date

# The deepest page a client may ask for. A page costs the same at any offset (a rank range), but
# an unbounded offset would invite walking a million-user period page by page; past this, 400.
MAX_OFFSET = 100_000


def local_date(value: str | None) -> dt.date | None:
    """`?at=` as a date, or 400 saying what a date looks like."""
    if value is None:
        return None
    try:
        return parse_date(value)
    except PeriodError as exc:
        raise ProblemDetailsException(status_code=400, detail=f"at={exc}") from None
