"""Dagster resources: where the landing zone and the lake are."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """The landing zone Kafka Connect writes to and the Parquet lake the pipeline owns."""

    landing_dir: str
    lake_dir: str

    @property
    def landing(self) -> Path:
        return Path(self.landing_dir)

    @property
    def lake(self) -> Lake:
        return Lake(Path(self.lake_dir))


class StoresResource(dg.ConfigurableResource):
    """Postgres and Redis to publish to; both unset is the embedded default (lake only)."""

    lake_dir: str
    database_url: str | None = None
    redis_url: str | None = None
    key_prefix: str = "leaderboard"
    redis_max_connections: int = 50

    @property
    def stores(self) -> Stores:
        return Stores(
            Lake(Path(self.lake_dir)), self.database_url, self.redis_url, self.key_prefix, self.redis_max_connections
        )
