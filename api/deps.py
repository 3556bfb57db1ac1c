"""Dependency providers: the one way handlers reach the reader, the settings and the caller.

`create_app` declares them once, app-wide (`dependencies()`); a handler names what it needs.
All are sync and cheap, so none is sent to a worker thread (`sync_to_thread=False`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from api.auth import Caller
from api.guards import verified_caller
from api.reader import Reader
from leaderboard.settings import Settings


def provide_reader(state: State) -> Reader:
    """The reader the lifespan built: its pools exist only while the app runs."""
    return state.reader


def provide_settings(state: State) -> Settings:
    return state.settings


def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    """The caller a guard verified (verified here if no guard ran, so never an unchecked one)."""
    return verified_caller(request)


def dependencies() -> dict[str, Provide]:
    """Fresh providers for each app: a `Provide` keeps what its first registration resolved."""
    return {
        "reader": Provide(provide_reader, sync_to_thread=False),
        "settings": Provide(provide_settings, sync_to_thread=False),
        "caller": Provide(provide_caller, sync_to_thread=False),
    }
