"""Dagster partitions for each period type, in the boards' time zone.

Dagster keys every time window by its first local day (`2026-11-23` for ISO week 2026-W48,
`2026-11-01` for 2026-11); `period_for_key` turns them into our period keys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg

from leaderboard.boards import SEASON, BoardSet
from leaderboard.periods import Period, period_of
from pipelines.jobs import SEASONS_PARTITIONS


@dataclass(frozen=True)
class PeriodPartitions:
    daily: dg.DailyPartitionsDefinition
    weekly: dg.WeeklyPartitionsDefinition
    monthly: dg.MonthlyPartitionsDefinition
    # Season ids, registered from the boards file by the `season_rankings` sensor: a season
    # added to the file becomes a partition without a code change or a reload.
    season: dg.DynamicPartitionsDefinition

    @classmethod
    def for_boards(cls, boards: BoardSet) -> PeriodPartitions:
        # end_offset=1 makes the current, still open day/week/month a partition (live standings).
        # Weekly and monthly windows start on or before start_date so its days all belong to one.
        first = boards.start_date
        monday = first - dt.timedelta(days=first.weekday())
        return cls(
            daily=dg.DailyPartitionsDefinition(start_date=first.isoformat(), timezone=boards.timezone, end_offset=1),
            weekly=dg.WeeklyPartitionsDefinition(
                start_date=monday.isoformat(), day_offset=1, timezone=boards.timezone, end_offset=1
            ),
            monthly=dg.MonthlyPartitionsDefinition(
                start_date=first.replace(day=1).isoformat(), timezone=boards.timezone, end_offset=1
            ),
            season=dg.DynamicPartitionsDefinition(name=SEASONS_PARTITIONS),
        )


def period_for_key(period_type: str, partition_key: str) -> Period:
    return period_of(period_type, dt.date.fromisoformat(partition_key))


def partition_key(period: Period) -> str:
    """A calendar period's Dagster key is its first day; a season's is its id."""
    return period.key if period.type == SEASON else period.start.isoformat()
