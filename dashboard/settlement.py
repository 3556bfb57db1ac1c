"""Settlement for operators: the periods settled or reopened, every settlement and reopening,
the webhook deliveries and the admin audit, read-only from Postgres (docs/contracts.md#settlement).

Settlement lives in Postgres only: without DATABASE_URL, or with it unreachable, the view
says why it has nothing to show instead of showing a lake copy (there is none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg

from dashboard.stores import stores_of
from leaderboard.stores import SchemaMissing, StoreUnavailable
from leaderboard.stores.settlement import (
    AUDIT_SCHEMA,
    HISTORY_SCHEMA,
    OUTBOX_SCHEMA,
    STATE_SCHEMA,
    PostgresSettlement,
    Undelivered,
)

NO_POSTGRES = "Settlement needs Postgres: DATABASE_URL is not set, so no period is ever settled."


@dataclass(frozen=True)
class SettlementView:
    states: pl.DataFrame
    history: pl.DataFrame
    outbox: pl.DataFrame  # undelivered first
    audit: pl.DataFrame
    undelivered: Undelivered
    source: str
    problem: str | None = None  # why the view is empty


def _empty(source: str, problem: str) -> SettlementView:
    return SettlementView(
        pl.DataFrame(schema=STATE_SCHEMA),
        pl.DataFrame(schema=HISTORY_SCHEMA),
        pl.DataFrame(schema=OUTBOX_SCHEMA),
        pl.DataFrame(schema=AUDIT_SCHEMA),
        Undelivered(0, 0, None),
        source,
        problem,
    )


def settlement_view(database_url: str | None, lake_dir: Path, limit: int = 200) -> SettlementView:
    stores = stores_of(database_url, lake_dir)
    if stores.record is None:
        return _empty("nowhere", NO_POSTGRES)
    source = f"Postgres at {stores.record.server}"
    store = PostgresSettlement(stores.record)
    try:
        undelivered = store.outbox(limit, undelivered_only=True)
        outbox = pl.concat([undelivered, store.outbox(limit).filter(pl.col("delivered_at").is_not_null())]).head(limit)
        return SettlementView(
            store.states(limit), store.history(limit), outbox, store.audit(limit), store.undelivered(), source
        )
    except StoreUnavailable as exc:
        return _empty(source, f"{source} is unreachable: {exc}")
    except (SchemaMissing, psycopg.errors.UndefinedTable):
        return _empty(source, f"{source} has no settlement tables: run `leaderboard migrate deploy`.")
