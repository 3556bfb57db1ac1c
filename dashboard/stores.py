"""Ingest statistics, quarantine, rank history and freshness, from Postgres or the lake.

With DATABASE_URL set, Postgres is the system of record; without it, or when it cannot be
reached, the same facts come from the lake, and the answer says so. Postgres sessions are
read-only: no page writes data. The reads themselves are the storage layer's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import polars as pl
import psycopg

from leaderboard.boards import BoardSet
from leaderboard.periods import UTC
from leaderboard.standings import resolve_key
from leaderboard.stores import SchemaMissing, StoreUnavailable
from leaderboard.stores.lake import Lake, LakeIngestStats, LakeStandings
from leaderboard.stores.lake import quarantine_sample as lake_quarantine_sample
from leaderboard.stores.postgres import PostgresIngestStats, PostgresStore
from leaderboard.stores.protocols import PeriodId

CONNECT_TIMEOUT = 3
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """A frame and where it came from; `warning` says when a configured store was skipped."""

    frame: pl.DataFrame
    source: str
    warning: str | None = None


def record_store(database_url: str) -> PostgresStore:
    """Postgres as the dashboard uses it: read-only, and quick to give up on a dead server."""
    return PostgresStore(database_url, read_only=True, connect_timeout=CONNECT_TIMEOUT)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _either(
    database_url: str | None, from_pg: Callable[[PostgresStore], T], from_lake: Callable[[], T], lake_root: Path
) -> tuple[T, str, str | None]:
    """Postgres when configured and up, else the lake, saying why."""
    warning = None
    if database_url:
        store = record_store(database_url)
        try:
            return from_pg(store), f"Postgres at {store.server}", None
        except (SchemaMissing, psycopg.Error) as exc:
            warning = f"{_first_line(exc)}; showing the lake's copy instead."
        except StoreUnavailable as exc:
            cause = _first_line(exc.__cause__ or exc)
            warning = f"Postgres at {store.server} is unreachable: {cause}; showing the lake's copy instead."
    return from_lake(), f"lake at {lake_root}", warning


def ingest_stats(database_url: str | None, lake_dir: Path, first: dt.date, last: dt.date) -> Answer:
    """Per local day in [first, last]: files, read, counted, duplicates, conflicts, quarantined."""
    lake = Lake(lake_dir)
    found = _either(
        database_url,
        lambda pg: PostgresIngestStats(pg).between(first, last),
        lambda: LakeIngestStats(lake).between(first, last),
        lake.root,
    )
    return Answer(*found)


def quarantine_sample(lake_dir: Path, first: dt.date, last: dt.date, limit: int = 50) -> tuple[pl.DataFrame, int]:
    """The newest quarantined records with their reasons, and how many there are in all."""
    return lake_quarantine_sample(Lake(lake_dir), first, last, limit)


def rank_history(
    database_url: str | None, lake_dir: Path, board: str, period_type: str, user_id: str, periods: int = 12
) -> Answer:
    """The user's rank and score in each of the last `periods` published periods (oldest first);
    a period where the user is not ranked has a null rank."""
    lake = Lake(lake_dir)
    found = _either(
        database_url,
        lambda pg: pg.rank_history(board, period_type, user_id, periods),
        lambda: LakeStandings(lake).rank_history(board, period_type, user_id, periods),
        lake.root,
    )
    return Answer(*found)


FRESHNESS_SCHEMA = {"board": pl.String, "period": pl.String, "period_key": pl.String,
                    "published_at": pl.Datetime("us", "UTC"), "age_minutes": pl.Float64,
                    "fresh": pl.Boolean}  # fmt: skip


def freshness(
    database_url: str | None, lake_dir: Path, boards: BoardSet, stale_minutes: int, now: dt.datetime | None = None
) -> Answer:
    """For each board's current period of each type: when it was last published and whether that is
    within `stale_minutes` (a current period never published is not fresh)."""
    now = now or dt.datetime.now(UTC)
    today = now.astimezone(boards.tz).date()
    wanted: list[PeriodId] = [
        (b.id, p, resolve_key(boards, p, None if p == "all_time" else today)) for b in boards.boards for p in b.periods
    ]
    lake = Lake(lake_dir)
    published, source, warning = _either(
        database_url,
        lambda pg: pg.published_at(wanted),
        lambda: LakeStandings(lake).published_at(wanted),
        lake.root,
    )
    rows = []
    for board, ptype, key in wanted:
        at = published.get((board, ptype, key))
        age = (now - at).total_seconds() / 60 if at else None
        rows.append((board, ptype, key, at, age, age is not None and age <= stale_minutes))
    return Answer(pl.DataFrame(rows, schema=FRESHNESS_SCHEMA, orient="row"), source, warning)
