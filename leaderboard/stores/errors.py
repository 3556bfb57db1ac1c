"""Errors every store raises, so callers handle "a store is down" once, whichever it is."""

from __future__ import annotations

from urllib.parse import urlsplit


class StoreUnavailable(RuntimeError):
    """Postgres or Redis cannot be reached; the message names the server and the cause."""


class SchemaMissing(StoreUnavailable):
    """The database has not been migrated."""


def server_of(url: str) -> str:
    """host:port of a server URL, for messages (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}".rstrip(":")
