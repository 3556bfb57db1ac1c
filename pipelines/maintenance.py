"""The retention job and its daily schedule."""

import datetime as dt

import dagster as dg

from leaderboard.boards import BoardSet
from pipelines import retention
from pipelines.jobs import RETENTION_JOB
from pipelines.resources import LakeResource, StoresResource


class RetentionConfig(dg.Config):
    dry_run: bool = False
    now: str | None = None  # ISO instant to evaluate at (default: the run's start)


def build_retention(boards: BoardSet, retention_days: int) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.op(description=f"Remove published periods that ended more than {retention_days} days ago.")
    def remove_expired_periods(
        context: dg.OpExecutionContext, config: RetentionConfig, lake: LakeResource, stores: StoresResource
    ) -> dg.Output[None]:
        now = dt.datetime.fromisoformat(config.now) if config.now else dt.datetime.now(dt.UTC)
        s = stores.stores
        with s.postgres() as conn, s.redis() as client:
            p = retention.plan(lake.lake, boards, now, retention_days, conn)
            if not config.dry_run:
                retention.apply(p, conn, client, s.keys)
        summary = p.summary()
        context.log.info(f"{'would remove' if config.dry_run else 'removed'}: {summary}")
        expired = [f"{e.board_id} {e.period_type} {e.period_key}" for e in p.periods]
        return dg.Output(
            None,
            metadata={
                **{k: v if isinstance(v, int | str) else dg.MetadataValue.json(v) for k, v in summary.items()},
                "dry_run": config.dry_run,
                "expired_periods": dg.MetadataValue.md("\n".join(f"- {e}" for e in expired) or "(none)"),
            },
        )

    @dg.job(name=RETENTION_JOB, description="Delete expired standings from Postgres, Redis and the lake.")
    def retention_job() -> None:
        remove_expired_periods()

    schedule = dg.ScheduleDefinition(
        name="retention_daily",
        job=retention_job,
        cron_schedule="30 3 * * *",
        execution_timezone=boards.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return retention_job, schedule
