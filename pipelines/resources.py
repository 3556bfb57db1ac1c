"""Dagster resources: where the landing zone and the lake are."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from leaderboard.lake import Lake


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
