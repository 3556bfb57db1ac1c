"""Names of the pipeline's jobs, and the run tags that give one run a range of partitions.

Plain strings, free of Dagster: the CLI and the dashboard plan and label runs with them
without building the definitions, and the definitions name their jobs with the same ones.
"""

from __future__ import annotations

DAILY_JOB = "daily_job"
DAILY_RANKINGS_JOB = "daily_rankings_job"
WEEKLY_JOB = "weekly_job"
MONTHLY_JOB = "monthly_job"
ALL_TIME_JOB = "all_time_job"
SEASON_JOB = "season_job"
SEASONS_PARTITIONS = "seasons"  # the dynamic partitions: one per season id of the boards file
RETENTION_JOB = "retention_job"

# Dagster's documented tags for a single run over a range of partitions (with a single-run
# backfill policy, the assets get the whole range at once). Dagster exports no constants
# for them outside its private modules.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
