"""The Dagster code location: `dagster dev` (workspace.yaml) and the CLI load `defs` from here."""

from __future__ import annotations

import warnings

import dagster as dg

from leaderboard.boards import load_boards
from leaderboard.settings import Settings, get_settings
from pipelines.assets import build_assets
from pipelines.automation import build_automation
from pipelines.maintenance import build_retention
from pipelines.partitions import PeriodPartitions
from pipelines.resources import LakeResource, StoresResource

# backfill_policy and allow_nonexistent_upstream_partitions are marked beta; we rely on them
# knowingly, so their warnings would only bury real ones in every run's log.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

DAILY_JOB, DAILY_RANKINGS_JOB = "daily_job", "daily_rankings_job"
WEEKLY_JOB, MONTHLY_JOB, ALL_TIME_JOB = "weekly_job", "monthly_job", "all_time_job"


def build_defs(settings: Settings) -> dg.Definitions:
    boards = load_boards(settings.LEADERBOARD_BOARDS, settings.LEADERBOARD_TIMEZONE)
    parts = PeriodPartitions.for_boards(boards)
    assets = build_assets(boards, parts, settings)
    daily_job = dg.define_asset_job(
        DAILY_JOB,
        selection=["clean_events", "daily_scores", "daily_rankings"],
        partitions_def=parts.daily,
        description="Ingest, score and rank a range of local days.",
    )
    jobs = [
        daily_job,
        dg.define_asset_job(
            DAILY_RANKINGS_JOB,
            selection=["daily_rankings"],
            partitions_def=parts.daily,
            description="Re-rank days without re-reading their events (e.g. after the day before changed).",
        ),
        dg.define_asset_job(WEEKLY_JOB, selection=["weekly_rankings"], partitions_def=parts.weekly),
        dg.define_asset_job(MONTHLY_JOB, selection=["monthly_rankings"], partitions_def=parts.monthly),
        dg.define_asset_job(ALL_TIME_JOB, selection=["all_time_rankings"]),
    ]
    retention_job, retention_schedule = build_retention(boards, settings.RETENTION_DAYS)
    schedules, sensors = build_automation(boards, settings, daily_job)
    return dg.Definitions(
        assets=assets,
        jobs=[*jobs, retention_job],
        schedules=[*schedules, retention_schedule],
        sensors=sensors,
        # Steps of a run depend on each other in a line, so a process per step would only add
        # seconds of start-up each (and memory); parallelism comes from runs and partitions.
        executor=dg.in_process_executor,
        resources={
            "lake": LakeResource(
                landing_dir=str(settings.LEADERBOARD_LANDING_DIR.resolve()),
                lake_dir=str(settings.LEADERBOARD_LAKE_DIR.resolve()),
            ),
            "stores": StoresResource(
                lake_dir=str(settings.LEADERBOARD_LAKE_DIR.resolve()),
                database_url=settings.DATABASE_URL,
                redis_url=settings.redis_url,
                key_prefix=settings.REDIS_KEY_PREFIX,
                redis_max_connections=settings.REDIS_MAX_CONNECTIONS,
            ),
        },
    )


defs = build_defs(get_settings())
