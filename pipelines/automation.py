"""Schedules and sensors that keep standings fresh without an operator.

Only days are ever requested here (the `daily_job`: ingest, score, rank a day). Weekly,
monthly and all-time standings, and the re-ranking of the day after a changed day, follow
by declarative automation (`follows_daily_scores`): whatever changed a day (schedule,
landing sensor, UI backfill, CLI), the periods above it are recomputed once it is done,
with no second list of "what depends on what" to keep in step with the assets.
"""

import datetime as dt
import hashlib
import uuid
from collections import defaultdict

import dagster as dg

from leaderboard.boards import BoardSet
from leaderboard.objstore import S3Location
from leaderboard.periods import period_of
from leaderboard.settings import Settings
from pipelines.jobs import DAILY_JOB
from pipelines.landing_watch import LandedChange, WatchCursor, local_days, scan, scan_bucket
from pipelines.resources import LakeResource, StoresResource

TRIGGER_TAG = "leaderboard/trigger"
DAY_TAG = "leaderboard/day"  # deploy/dagster.yaml runs one run per day at a time
REFRESH_TAG = "leaderboard/refresh_batch"  # the refresh requests a run serves


def follows_daily_scores(existing_only: bool = False) -> dg.AutomationCondition:
    """Recompute a partition once its daily scores changed (and it is not being computed already).

    Unlike `eager()`, old partitions count too: a late file for a closed day must correct
    that day's week and month. `existing_only` re-ranks only what was already published
    (the day after a changed day); new days come from `daily_job` with their events.
    """
    # No "& ~any_deps_in_progress()": a day of live traffic nearly always has a run going or
    # queued, which would hold its week back for good. A period computed while its day runs
    # reads that day's previous scores (files are swapped whole) and is requested again after.
    condition = dg.AutomationCondition.any_deps_updated().since_last_handled() & ~dg.AutomationCondition.in_progress()
    if existing_only:
        condition = condition & ~dg.AutomationCondition.missing()
    return condition.with_label("daily scores changed")


def refresh_cron(minutes: int) -> str:
    """REFRESH_INTERVAL_MINUTES as cron; settings only accept values that tick evenly."""
    if minutes < 60:
        return f"*/{minutes} * * * *"
    return f"0 */{minutes // 60} * * *" if minutes < 1440 else "0 0 * * *"


def _day_request(day: dt.date, trigger: str, run_key: str | None = None, **tags: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        partition_key=day.isoformat(),
        tags={TRIGGER_TAG: trigger, DAY_TAG: day.isoformat(), **tags},
    )


def _waiting(instance: dg.DagsterInstance, job_name: str, day: dt.date) -> bool:
    """A run of `day` that has not started yet will read every file there is when it does.

    Retries do not count: they may re-execute from the failed step, after the reading.
    """
    waiting = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
    runs = instance.get_run_records(dg.RunsFilter(job_name=job_name, tags={DAY_TAG: day.isoformat()}, statuses=waiting))
    return any("dagster/parent_run_id" not in r.dagster_run.tags for r in runs)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _newer_than_ingest(lake: LakeResource, day: dt.date, found: list[LandedChange]) -> bool:
    written_ns = lake.lake.modified_ns(lake.lake.day_file("clean_events", day))
    return written_ns is None or max(c.changed_ns for c in found) >= written_ns


def build_automation(
    boards: BoardSet, settings: Settings
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """Schedules and sensors that request runs of `daily_job`, by name (the definitions hold the job)."""
    tz = boards.tz

    def _today(instant: dt.datetime | None = None) -> dt.date:
        return (instant or dt.datetime.now(dt.UTC)).astimezone(tz).date()

    @dg.schedule(
        name="live_refresh",
        job_name=DAILY_JOB,
        cron_schedule=refresh_cron(settings.REFRESH_INTERVAL_MINUTES),
        execution_timezone=boards.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Recompute the current day (live); its week, month and all-time follow by automation.",
    )
    def live_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = _today(context.scheduled_execution_time)
        if day < boards.start_date:
            return dg.SkipReason(f"{day} is before start_date {boards.start_date}")
        if _waiting(context.instance, DAILY_JOB, day):
            return dg.SkipReason(f"a run of {day} is already waiting to start")
        return _day_request(day, "live_refresh")

    @dg.schedule(
        name="daily_close",
        job_name=DAILY_JOB,
        cron_schedule=f"{settings.DAILY_CLOSE_MINUTE} 0 * * *",
        execution_timezone=boards.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Shortly after local midnight, finalize yesterday; the periods containing it follow.",
    )
    def daily_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = _today(context.scheduled_execution_time) - dt.timedelta(days=1)
        if day < boards.start_date:
            return dg.SkipReason(f"{day} is before start_date {boards.start_date}")
        return _day_request(day, "daily_close")

    @dg.sensor(
        name="landing_files",
        job_name=DAILY_JOB,
        minimum_interval_seconds=settings.LANDING_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A run for each local day that new or changed landing files belong to (late files too).",
    )
    def landing_files(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        landing, previous = lake.landing, WatchCursor.from_json(context.cursor)
        if isinstance(landing, S3Location):
            first = period_of("daily", boards.start_date).bounds(tz)[0].astimezone(dt.UTC)
            changes, cursor = scan_bucket(landing, previous, first.replace(minute=0, second=0, microsecond=0))
        else:
            changes, cursor = scan(landing, previous)
        today = _today()
        by_day: dict[dt.date, list[LandedChange]] = defaultdict(list)
        for change in changes:
            for day in local_days(change.hour, tz):
                if boards.start_date <= day <= today:
                    by_day[day].append(change)
                else:
                    context.log.warning(f"{change.path}: day {day} is outside {boards.start_date}..{today}, not run")
        if context.cursor is None:
            # First tick (a new deployment, or the sensor reset): every file looks new, but days
            # already ingested after their last file landed need no run.
            by_day = {d: found for d, found in by_day.items() if _newer_than_ingest(lake, d, found)}
        # Files keep landing for the current day: while one of its runs waits in the queue, it
        # will read them, so runs do not pile up behind a day slower to compute than a tick.
        by_day = {d: found for d, found in by_day.items() if not _waiting(context.instance, DAILY_JOB, d)}
        requests = [
            # One run per day reads all of the day's files; the key names the file versions it
            # was asked for, so the same files never start a second run.
            _day_request(
                day,
                "landing",
                run_key=f"landing:{day}:{_digest([f'{c.path}@{c.version}' for c in found])}",
                **{"leaderboard/files": str(len(found))},
            )
            for day, found in sorted(by_day.items())
        ]
        if requests:
            context.log.info(f"{len(changes)} new or changed files -> runs for {', '.join(sorted(map(str, by_day)))}")
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else "no new landing files",
            cursor=cursor.to_json(),
        )

    @dg.sensor(
        name="refresh_requests",
        job_name=DAILY_JOB,
        minimum_interval_seconds=settings.LANDING_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Turn POST /leaderboard/config/refresh requests into a run of the current day (and periods).",
    )
    def refresh_requests(context: dg.SensorEvaluationContext, stores: StoresResource) -> dg.RunRequest | dg.SkipReason:
        batch = f"refresh:{uuid.uuid4().hex[:16]}"
        ids = stores.stores.refresh_requests().take(batch)
        if not ids:
            return dg.SkipReason("no pending refresh requests")
        context.log.info(f"refresh requests {', '.join(ids)} -> a run of {_today()} ({batch})")
        return _day_request(_today(), "refresh_request", run_key=batch, **{REFRESH_TAG: batch})

    def _finishing(name: str, status: dg.DagsterRunStatus) -> dg.RunStatusSensorDefinition:
        """Ends the refresh requests a run served as that run ended; a retried run carries the
        same tags, so a failure that a retry mends ends as done.

        It watches the runs of this code location and keeps those of `daily_job`, the job
        the refresh requests are served by (named, as the definitions hold the job).
        """

        @dg.run_status_sensor(
            name=name,
            minimum_interval_seconds=settings.LANDING_SENSOR_INTERVAL_SECONDS,
            run_status=status,
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
        def _sensor(context: dg.RunStatusSensorContext, stores: StoresResource) -> None:
            batch = context.dagster_run.tags.get(REFRESH_TAG)
            if batch and context.dagster_run.job_name == DAILY_JOB:
                ok = status == dg.DagsterRunStatus.SUCCESS
                run_id = context.dagster_run.run_id
                n = stores.stores.refresh_requests().finish(batch, run_id, ok)
                context.log.info(f"{batch}: {n} refresh requests {'done' if ok else 'failed'}")

        return _sensor

    finished = [
        _finishing("refresh_requests_done", dg.DagsterRunStatus.SUCCESS),
        _finishing("refresh_requests_failed", dg.DagsterRunStatus.FAILURE),
    ]

    follow = dg.AutomationConditionSensorDefinition(
        "follow_daily_scores",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.AUTOMATION_INTERVAL_SECONDS,
        description="Weekly, monthly and all-time standings (and the next day's ranks) after their days changed.",
    )
    return [live_refresh, daily_close], [landing_files, refresh_requests, *finished, follow]
