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

from leaderboard.boards import SEASON, BoardSet
from leaderboard.objstore import S3Location
from leaderboard.periods import UTC, season_at
from leaderboard.standings import resolve_key
from leaderboard.stores import SchemaMissing, Stores, StoreUnavailable
from leaderboard.stores.lake import Lake
from leaderboard.stores.lake import quarantine_sample as lake_quarantine_sample
from leaderboard.stores.protocols import PeriodId

CONNECT_TIMEOUT = 3  # a page or a probe gives up on a dead server quickly
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """A frame and where it came from; `warning` says when a configured store was skipped."""

    frame: pl.DataFrame
    source: str
    warning: str | None = None


def stores_of(database_url: str | None, lake_dir: Path | S3Location) -> Stores:
    """The stores as the dashboard uses them: read-only, quick to give up on a dead server."""
    return Stores(Lake(lake_dir), database_url, read_only=True, connect_timeout=CONNECT_TIMEOUT)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _either(stores: Stores, primary: Callable[[], T], lake: Callable[[], T]) -> tuple[T, str, str | None]:
    """The primary store (Postgres when configured), else the lake, saying why."""
    if stores.record is None:
        return lake(), f"lake at {stores.lake.root}", None
    try:
        return primary(), f"Postgres at {stores.record.server}", None
    except (SchemaMissing, psycopg.Error) as exc:
        warning = _first_line(exc)
    except StoreUnavailable as exc:
        warning = f"Postgres at {stores.record.server} is unreachable: {_first_line(exc.__cause__ or exc)}"
    return lake(), f"lake at {stores.lake.root}", f"{warning}; showing the lake's copy instead."


def ingest_stats(database_url: str | None, lake_dir: Path | S3Location, first: dt.date, last: dt.date) -> Answer:
    """Per local day in [first, last]: files, read, counted, duplicates, conflicts, quarantined."""
    stores = stores_of(database_url, lake_dir)
    return Answer(
        *_either(
            stores,
            lambda: stores.ingest_stats().between(first, last),
            lambda: stores.lake_ingest_stats().between(first, last),
        )
    )


def quarantine_sample(
    lake_dir: Path | S3Location, first: dt.date, last: dt.date, limit: int = 50
) -> tuple[pl.DataFrame, int]:
    """The newest quarantined records with their reasons, and how many there are in all."""
    return lake_quarantine_sample(Lake(lake_dir), first, last, limit)


def rank_history(
    database_url: str | None, lake_dir: Path | S3Location, board: str, period_type: str, user_id: str, periods: int = 12
) -> Answer:
    """The user's rank and score in each of the last `periods` published periods (oldest first);
    a period where the user is not ranked has a null rank."""
    stores = stores_of(database_url, lake_dir)
    return Answer(
        *_either(
            stores,
            lambda: stores.standings().rank_history(board, period_type, user_id, periods),
            lambda: stores.lake_standings().rank_history(board, period_type, user_id, periods),
        )
    )


FRESHNESS_SCHEMA = {"board": pl.String, "period": pl.String, "period_key": pl.String,
                    "published_at": pl.Datetime("us", "UTC"), "age_minutes": pl.Float64,
                    "fresh": pl.Boolean}  # fmt: skip


def freshness(
    database_url: str | None,
    lake_dir: Path | S3Location,
    boards: BoardSet,
    stale_minutes: int,
    now: dt.datetime | None = None,
) -> Answer:
    """For each board's current period of each type: when it was last published and whether that is
    within `stale_minutes` (a current period never published is not fresh)."""
    now = now or dt.datetime.now(UTC)
    today = now.astimezone(boards.tz).date()
    wanted: list[PeriodId] = [
        (b.id, p, resolve_key(boards, p, None if p == "all_time" else today))
        for b in boards.boards
        for p in b.periods
        if p != SEASON
    ]
    # a season is current while it is live
    wanted += [(b.id, SEASON, s.key) for b in boards.boards if (s := season_at(b, now, boards.tz)) is not None]
    stores = stores_of(database_url, lake_dir)
    published, source, warning = _either(
        stores, lambda: stores.standings().published_at(wanted), lambda: stores.lake_standings().published_at(wanted)
    )
    rows = []
    for board, ptype, key in wanted:
        at = published.get((board, ptype, key))
        age = (now - at).total_seconds() / 60 if at else None
        rows.append((board, ptype, key, at, age, age is not None and age <= stale_minutes))
    return Answer(pl.DataFrame(rows, schema=FRESHNESS_SCHEMA, orient="row"), source, warning)
