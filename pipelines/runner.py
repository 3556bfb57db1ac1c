"""Materialize a range of local days, and every period they touch, through Dagster.

Every run pays Dagster's start-up overhead, so the range goes in as few runs as the
partitions allow: one ranged run for the days, one for the weeks, one for the months, one
for all-time, one per season touching the range. The runs are recorded in the instance under
DAGSTER_HOME, so they show in the UI.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from leaderboard.boards import BoardSet
from leaderboard.periods import Period, period_of, periods_touching, season_boards
from leaderboard.run_errors import step_failure_message
from leaderboard.settings import Settings, get_settings
from leaderboard.stores.lake import Lake
from pipelines.jobs import (
    ALL_TIME_JOB,
    DAILY_JOB,
    DAILY_RANKINGS_JOB,
    MONTHLY_JOB,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    SEASON_JOB,
    SEASONS_PARTITIONS,
    WEEKLY_JOB,
)
from pipelines.partitions import partition_key
from pipelines.resources import secrets_in_environment


class RangeError(ValueError):
    """A requested range the partitions cannot cover; the message gives the allowed days."""


@dataclass(frozen=True)
class PlannedRun:
    job: str
    first_key: str | None  # None: an unpartitioned run
    last_key: str | None
    label: str


@dataclass(frozen=True)
class RunOutcome:
    planned: PlannedRun
    run_id: str
    success: bool
    seconds: float
    error: str | None


def plan_runs(boards: BoardSet, first: dt.date, last: dt.date, today: dt.date, lake: Lake) -> list[PlannedRun]:
    """The runs that bring days [first, last] and their weeks, months and all-time up to date.

    The period right after the range is re-ranked too when it is already published: its
    previous_rank comes from the last period of the range, which may just have changed.
    """
    if first > last:
        raise RangeError(f"--start {first} is after --end {last}")
    if first < boards.start_date:
        raise RangeError(f"--start {first} is before start_date {boards.start_date} of {boards.source}")
    if last > today:
        raise RangeError(f"--end {last} is in the future (today is {today} in {boards.timezone})")
    runs = [PlannedRun(DAILY_JOB, first.isoformat(), last.isoformat(), f"days {first}..{last}")]
    after = period_of("daily", last + dt.timedelta(days=1))
    if _published(lake, boards, after):
        runs.append(PlannedRun(DAILY_RANKINGS_JOB, after.key, after.key, f"daily {after.key} (previous ranks)"))
    for job, period_type in ((WEEKLY_JOB, "weekly"), (MONTHLY_JOB, "monthly")):
        if not boards.with_period(period_type):
            continue
        periods = periods_touching(period_type, first, last)
        following = period_of(period_type, periods[-1].end)
        if _published(lake, boards, following):
            periods.append(following)
        runs.append(
            PlannedRun(
                job,
                partition_key(periods[0]),
                partition_key(periods[-1]),
                f"{period_type} {periods[0].key}..{periods[-1].key}",
            )
        )
    if boards.with_period("all_time"):
        runs.append(PlannedRun(ALL_TIME_JOB, None, None, "all-time"))
    # seasons touching the range and started by its end: one run each (a partition per season)
    for season_id in boards.season_ids():
        _, season = season_boards(boards, season_id)
        if season.start <= last and first < season.end:
            runs.append(PlannedRun(SEASON_JOB, season_id, season_id, f"season {season_id}"))
    return runs


def _published(lake: Lake, boards: BoardSet, period: Period) -> bool:
    return any(lake.has_snapshot(b.id, period.type, period.key) for b in boards.with_period(period.type))


def _failure(result: dg.ExecuteInProcessResult) -> str:
    messages = (step_failure_message(e) for e in result.all_events)
    return next((m for m in messages if m), "run failed (see the run in the Dagster UI)")


def execute(
    defs: dg.Definitions,
    runs: list[PlannedRun],
    instance: dg.DagsterInstance,
    on_done: Callable[[RunOutcome], None] | None = None,
    log_level: str = "WARNING",
    settings: Settings | None = None,
) -> list[RunOutcome]:
    """Run the planned runs in order; stop at the first failure (later periods need its output).

    The runs read their secrets from the environment, with those that `settings` (default:
    the process's) found in `.env` added to it while they go.
    """
    with secrets_in_environment(settings or get_settings()):
        return _execute(defs, runs, instance, on_done, log_level)


def _execute(
    defs: dg.Definitions,
    runs: list[PlannedRun],
    instance: dg.DagsterInstance,
    on_done: Callable[[RunOutcome], None] | None,
    log_level: str,
) -> list[RunOutcome]:
    outcomes = []
    for planned in runs:
        tags = {}
        partition = None
        if planned.job == SEASON_JOB and planned.first_key is not None:
            # a season partition exists once registered (the sensor does it too; this run may come first)
            if not instance.has_dynamic_partition(SEASONS_PARTITIONS, planned.first_key):
                instance.add_dynamic_partitions(SEASONS_PARTITIONS, [planned.first_key])
            partition = planned.first_key
        elif planned.first_key is not None:
            tags = {PARTITION_RANGE_START_TAG: planned.first_key, PARTITION_RANGE_END_TAG: planned.last_key}
        t0 = time.perf_counter()
        result = defs.resolve_job_def(planned.job).execute_in_process(
            instance=instance,
            tags=tags,
            partition_key=partition,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        outcome = RunOutcome(
            planned,
            result.run_id,
            result.success,
            round(time.perf_counter() - t0, 2),
            None if result.success else _failure(result),
        )
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
        if not result.success:
            break
    return outcomes
