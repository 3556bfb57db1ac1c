"""Moderation for operators: the exclusions (in force first) and the admin audit, read-only from
Postgres (docs/contracts.md#moderation). Without DATABASE_URL, or with it unreachable, the view
says why it has nothing to show."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg

from dashboard.stores import stores_of
from leaderboard.moderation import NO_POSTGRES
from leaderboard.stores import SchemaMissing, StoreUnavailable
from leaderboard.stores.moderation import AUDIT_SCHEMA, EXCLUSION_SCHEMA, PostgresModeration


@dataclass(frozen=True)
class ModerationView:
    exclusions: pl.DataFrame  # EXCLUSION_SCHEMA and `state`: in force, lifted or expired; in force first
    audit: pl.DataFrame
    source: str
    problem: str | None = None  # why the view is empty


def _empty(source: str, problem: str) -> ModerationView:
    exclusions = pl.DataFrame(schema=EXCLUSION_SCHEMA).with_columns(state=pl.lit(None, pl.String))
    return ModerationView(exclusions, pl.DataFrame(schema=AUDIT_SCHEMA), source, problem)


def _with_state(frame: pl.DataFrame, now: dt.datetime) -> pl.DataFrame:
    state = (
        pl.when(pl.col("lifted_at").is_not_null())
        .then(pl.lit("lifted"))
        .when(pl.col("until").is_not_null() & (pl.col("until") <= now))
        .then(pl.lit("expired"))
        .otherwise(pl.lit("in force"))
    )
    return frame.with_columns(state.alias("state")).sort(pl.col("state") != "in force", -pl.col("id"))


def moderation_view(database_url: str | None, lake_dir: Path, limit: int = 200) -> ModerationView:
    stores = stores_of(database_url, lake_dir)
    if stores.record is None:
        return _empty("nowhere", NO_POSTGRES)
    source = f"Postgres at {stores.record.server}"
    store = PostgresModeration(stores.record)
    now = dt.datetime.now(dt.UTC)
    try:
        return ModerationView(_with_state(store.frame(now, limit=limit), now), store.audit(limit), source)
    except StoreUnavailable as exc:
        return _empty(source, f"{source} is unreachable: {exc}")
    except (SchemaMissing, psycopg.errors.UndefinedTable):
        return _empty(source, f"{source} has no moderation tables: run `leaderboard migrate deploy`.")
