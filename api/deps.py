"""Dependency providers: the one way handlers reach the reader, the stores, the settings and the caller.

`create_app` declares them once, app-wide (`dependencies(services)`); a handler names what it
needs. The reader and settings providers take no parameters: Litestar then calls them without
validating a signature, so the hot standings route pays a call for its reader, not a parse.
None is sent to a worker thread (`sync_to_thread=False`): each is a lookup, at most one JWT decode.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.di import Provide
from litestar.params import Dependency

from api.auth import Caller
from api.guards import verified_caller
from api.reader import Reader
from leaderboard.settings import Settings
from leaderboard.stores import Stores

# The stores as handed over, unchecked: the handler signature's converter cannot take the
# lake's folder-or-bucket root, and there is nothing in them to validate.
StoresDep = Annotated[Stores, Dependency(skip_validation=True)]


class Services:
    """What one app hands its handlers: its settings and stores, and the reader its lifespan opens."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.stores = Stores.from_settings(settings)  # chosen once; opens nothing
        self._reader: Reader | None = None

    def attach(self, reader: Reader | None) -> None:
        """The lifespan's reader while the app runs; None once its pools are closed."""
        self._reader = reader

    def settings(self) -> Settings:
        return self._settings

    def provide_stores(self) -> Stores:
        return self.stores

    def reader(self) -> Reader:
        if self._reader is None:
            raise RuntimeError("the reader exists only while the app runs (its lifespan opens it)")
        return self._reader


def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    """The caller a guard verified (verified here if no guard ran, so never an unchecked one)."""
    return verified_caller(request)


def dependencies(services: Services) -> dict[str, Provide]:
    """Fresh providers for each app: a `Provide` keeps what its first registration resolved."""
    return {
        "reader": Provide(services.reader, sync_to_thread=False),
        "settings": Provide(services.settings, sync_to_thread=False),
        "stores": Provide(services.provide_stores, sync_to_thread=False),
        "caller": Provide(provide_caller, sync_to_thread=False),
    }
