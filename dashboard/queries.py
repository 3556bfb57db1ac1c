"""The data access functions behind a short-TTL Streamlit cache, shared by every viewer.

A TTL of a few seconds keeps many open dashboards from each querying the API, Dagster and
Postgres on every refresh, while a refresh still shows what changed. Arguments are plain
values (URLs, paths, dates) so that a change of settings is a new cache entry.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import streamlit as st

from dashboard import api_client, pipeline, probes, stores
from dashboard import moderation as moderation_data
from dashboard import settlement as settlement_data
from dashboard.pipeline import PartitionCell, RunRow
from leaderboard.boards import BoardSet
from leaderboard.objstore import S3Location

if TYPE_CHECKING:
    import dagster as dg  # imported at run time only by the health page's data

TTL_SECONDS = 5


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def boards(api_url: str) -> list[dict]:
    return api_client.boards(api_url)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def period_keys(api_url: str, board: str, period: str) -> list[str]:
    return api_client.period_keys(api_url, board, period)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def standings(api_url: str, board: str, period: str, at: dt.date | None, key: str | None = None) -> dict:
    return api_client.standings(api_url, board, period, at, key=key)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def rank_history(
    database_url: str | None, lake_dir: Path, board: str, period: str, user_id: str, periods: int
) -> stores.Answer:
    return stores.rank_history(database_url, lake_dir, board, period, user_id, periods)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def ingest_stats(database_url: str | None, lake_dir: Path, first: dt.date, last: dt.date) -> stores.Answer:
    return stores.ingest_stats(database_url, lake_dir, first, last)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def quarantine_sample(lake_dir: Path, first: dt.date, last: dt.date) -> tuple[pl.DataFrame, int]:
    return stores.quarantine_sample(lake_dir, first, last)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def freshness(
    database_url: str | None, lake_dir: Path, boards_key: tuple[str, str], _boards: BoardSet, stale_minutes: int
) -> stores.Answer:
    """`boards_key` (file, time zone) stands for the unhashed `_boards` in the cache key."""
    return stores.freshness(database_url, lake_dir, _boards, stale_minutes)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def reachability(database_url: str | None, redis_url: str | None, api_url: str, dagster_url: str) -> list[probes.Probe]:
    return [probes.postgres(database_url), probes.redis(redis_url), probes.api(api_url), probes.dagster_ui(dagster_url)]


@st.cache_resource(show_spinner=False)
def _instance(home: str) -> dg.DagsterInstance:
    return pipeline.open_instance(Path(home))


def instance(home: Path) -> dg.DagsterInstance | None:
    """The Dagster instance (kept open across reruns), or None while DAGSTER_HOME holds no instance."""
    return _instance(str(home.resolve())) if pipeline.has_instance(home) else None


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def recent_runs(home: Path, limit: int) -> list[RunRow]:
    inst = instance(home)
    return pipeline.recent_runs(inst, limit) if inst is not None else []


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def partition_grid(
    home: Path, first: dt.date, last: dt.date, landing: Path | S3Location, tz: str
) -> list[PartitionCell]:
    from zoneinfo import ZoneInfo

    inst = instance(home)
    if inst is None:
        return []
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    return pipeline.partition_grid(inst, days, landing, ZoneInfo(tz))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def settlement_view(database_url: str | None, lake_dir: Path) -> settlement_data.SettlementView:
    return settlement_data.settlement_view(database_url, lake_dir)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def moderation_view(database_url: str | None, lake_dir: Path) -> moderation_data.ModerationView:
    return moderation_data.moderation_view(database_url, lake_dir)
