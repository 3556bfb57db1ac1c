"""Reading standings through the HTTP API, as any client would (docs/contracts.md#routes).

The dashboard never reads published standings behind the API's back: what it shows is what
API clients get. Failures become `ApiError` with a sentence a person can act on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class ApiError(RuntimeError):
    """The API could not answer; `unreachable` tells a dead API from a refused request."""

    def __init__(self, message: str, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


def _get(api_url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    url = api_url.rstrip("/") + path
    try:
        response = httpx.get(url, params={k: v for k, v in (params or {}).items() if v is not None}, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise ApiError(
            f"The API at {api_url} is unreachable ({type(exc).__name__}: {exc or 'no answer'}). "
            "Start it with `leaderboard api`, or set API_URL.",
            unreachable=True,
        ) from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.reason_phrase
        except ValueError:
            detail = response.text[:200] or response.reason_phrase
        raise ApiError(f"{detail} (HTTP {response.status_code} from {path})", status=response.status_code)
    return response.json()


def boards(api_url: str) -> list[dict]:
    """Enabled boards with their periods and display limits."""
    return _get(api_url, "/leaderboard/boards")


def period_keys(api_url: str, board: str, period: str) -> list[str]:
    """Published period keys, newest first."""
    return _get(api_url, f"/leaderboard/{board}/{period}/periods")["keys"]


def standings(
    api_url: str, board: str, period: str, at: dt.date | None, limit: int | None = None, key: str | None = None
) -> dict:
    """One period's standings body (header and the first `limit` entries, the board's display
    limit by default): the period containing `at`, or the one named by `key` (a season id)."""
    if key is not None:
        return _get(api_url, f"/leaderboard/{board}/{period}/{key}", {"limit": limit})
    return _get(api_url, f"/leaderboard/{board}/{period}", {"at": at.isoformat() if at else None, "limit": limit})


def readiness(api_url: str) -> dict:
    """`/health/ready` as {status, details}; a 503 still says which store is down."""
    url = api_url.rstrip("/") + "/health/ready"
    try:
        response = httpx.get(url, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return {"status": "down", "details": {"error": f"{type(exc).__name__}: {exc or 'no answer'}"}}
    try:
        return response.json()
    except ValueError:
        return {"status": f"HTTP {response.status_code}", "details": {}}
