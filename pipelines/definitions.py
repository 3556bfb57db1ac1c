"""The Dagster code location: `dagster dev` (workspace.yaml), the code server and the run
workers load `defs` from here; the CLI calls `build_defs` with its own settings.

Importing this module builds nothing: Dagster calls `defs` when it loads the code location.
"""

from __future__ import annotations

import warnings

import dagster as dg

from leaderboard.boards import load_boards
from leaderboard.settings import Settings, get_settings
from pipelines.assets import build_assets
from pipelines.automation import build_automation
from pipelines.jobs import ALL_TIME_JOB, DAILY_JOB, DAILY_RANKINGS_JOB, MONTHLY_JOB, SEASON_JOB, WEEKLY_JOB
from pipelines.maintenance import build_retention
from pipelines.moderation import build_moderation
from pipelines.partitions import PeriodPartitions
from pipelines.resources import LakeResource, StoresResource
from pipelines.seasons import build_seasons
from pipelines.settlement import SettlementResource, build_settlement

# Beta parameters the assets rely on knowingly. Their warnings come each time a process loads
# the code location (every run worker does), where they would only bury the ones that matter.
KNOWN_BETA = r"Parameter `(backfill_policy|allow_nonexistent_upstream_partitions)`"


def build_defs(settings: Settings) -> dg.Definitions:
    """Every asset, job, schedule, sensor and resource, for these settings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=KNOWN_BETA, category=dg.BetaWarning)
        return _build(settings)


def _build(settings: Settings) -> dg.Definitions:
    boards = load_boards(settings.LEADERBOARD_BOARDS, settings.LEADERBOARD_TIMEZONE)
    parts = PeriodPartitions.for_boards(boards)
    assets = build_assets(boards, parts, settings)
    jobs = [
        dg.define_asset_job(
            DAILY_JOB,
            selection=["clean_events", "daily_scores", "daily_rankings"],
            description="Ingest, score and rank a range of local days.",
        ),
        dg.define_asset_job(
            DAILY_RANKINGS_JOB,
            selection=["daily_rankings"],
            description="Re-rank days without re-reading their events (e.g. after the day before changed).",
        ),
        dg.define_asset_job(WEEKLY_JOB, selection=["weekly_rankings"]),
        dg.define_asset_job(MONTHLY_JOB, selection=["monthly_rankings"]),
        dg.define_asset_job(ALL_TIME_JOB, selection=["all_time_rankings"]),
        dg.define_asset_job(SEASON_JOB, selection=["season_rankings"], description="Rank and publish one season."),
    ]
    retention_job, retention_schedule = build_retention(boards, settings.RETENTION_DAYS)
    schedules, sensors = build_automation(boards, settings)
    sensors += build_seasons(boards, settings)
    reranks = {"daily": jobs[1], "weekly": jobs[2], "monthly": jobs[3], "season": jobs[5]}
    sensors += build_settlement(boards, settings, reranks)
    sensors += build_moderation(boards, settings)
    return dg.Definitions(
        assets=assets,
        jobs=[*jobs, retention_job],
        schedules=[*schedules, retention_schedule],
        sensors=sensors,
        # Steps of a run depend on each other in a line, so a process per step would only add
        # its start-up (and memory); parallelism comes from runs and partitions.
        executor=dg.in_process_executor,
        resources={
            "lake": LakeResource.from_settings(settings),
            "stores": StoresResource.from_settings(settings),
            "settlement": SettlementResource.from_settings(settings),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, from the process's settings (environment and `.env`)."""
    return build_defs(get_settings())
