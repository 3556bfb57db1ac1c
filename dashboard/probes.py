"""Reachability of what the product runs on: Postgres, Redis, the API and the Dagster UI.

Each probe answers in a few seconds at most and never raises: a person reads the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from dashboard import api_client
from dashboard.stores import CONNECT_TIMEOUT
from leaderboard.stores import StoreUnavailable, server_of
from leaderboard.stores.postgres import PostgresStore


@dataclass(frozen=True)
class Probe:
    name: str
    state: str  # ok, degraded, down, not configured, not running (the Dagster UI: optional)
    detail: str


def postgres(database_url: str | None) -> Probe:
    if not database_url:
        return Probe("Postgres", "not configured", "DATABASE_URL unset: the lake is the store")
    try:
        PostgresStore(database_url, read_only=True, connect_timeout=CONNECT_TIMEOUT).ping()
    except StoreUnavailable as exc:
        return Probe("Postgres", "down", str(exc))
    return Probe("Postgres", "ok", server_of(database_url))


def redis(redis_url: str | None) -> Probe:
    if not redis_url:
        return Probe("Redis", "not configured", "REDIS_URL unset: no cache in front of the store")
    import redis as redis_py

    client = redis_py.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis_py.RedisError as exc:
        return Probe("Redis", "down", f"Redis at {server_of(redis_url)}: {exc}")
    finally:
        client.close()
    return Probe("Redis", "ok", server_of(redis_url))


def api(api_url: str) -> Probe:
    ready = api_client.readiness(api_url)
    details = ", ".join(f"{k} {v}" for k, v in ready.get("details", {}).items())
    state = {"ok": "ok", "degraded": "degraded"}.get(ready.get("status", ""), "down")
    return Probe("API", state, f"{api_url}: {ready.get('status')}" + (f" ({details})" if details else ""))


def dagster_ui(dagster_url: str) -> Probe:
    try:
        response = httpx.get(dagster_url.rstrip("/") + "/server_info", timeout=2)
    except httpx.HTTPError as exc:
        return Probe("Dagster UI", "not running", f"{dagster_url}: {type(exc).__name__} (run links will not open)")
    if response.status_code != 200:
        return Probe("Dagster UI", "not running", f"{dagster_url}: HTTP {response.status_code}")
    return Probe("Dagster UI", "ok", dagster_url)
