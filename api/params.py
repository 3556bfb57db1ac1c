"""Request parameters and dependencies shared by the controllers."""

from __future__ import annotations

import datetime as dt

from litestar.datastructures import State
from litestar.plugins.problem_details import ProblemDetailsException

from api.reader import Reader


def reader_of(state: State) -> Reader:
    return state.reader


def local_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ProblemDetailsException(status_code=400, detail=f"at={value!r} is not a date like 2026-11-26") from None
