"""What every page needs first: the settings and the boards, or a plain message instead of a traceback."""

from __future__ import annotations

from typing import NoReturn

import streamlit as st

from leaderboard.boards import BoardSet, BoardsFileError, current_boards
from leaderboard.settings import Settings, SettingsError, get_settings


def _stop(message: str) -> NoReturn:
    st.error(message)
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises; this keeps type checkers honest


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        _stop(f"The dashboard cannot start: {exc}")


def boards() -> BoardSet:
    try:
        return current_boards()
    except (BoardsFileError, OSError) as exc:
        _stop(f"Cannot read the boards file: {exc}")


def refresh_every(s: Settings) -> int | None:
    """The fragment interval, None when DASHBOARD_REFRESH_SECONDS=0 turns refreshing off."""
    return s.DASHBOARD_REFRESH_SECONDS or None


def postgres_problem(problem: str | None, s: Settings) -> bool:
    """Shows why a Postgres-only page has nothing: a note where Postgres is not configured (the
    embedded default), a warning where it is but fails. True when there was a problem."""
    if not problem:
        return False
    (st.info if s.DATABASE_URL is None else st.warning)(problem)
    return True
