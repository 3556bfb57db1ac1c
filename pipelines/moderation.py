"""Moderation in Dagster (docs/contracts.md#moderation): the sensor that has the current periods
republished when an exclusion is added, lifted or expires, so the standings follow within one
tick and one run, not only at the next scheduled `live_refresh`.

It asks for a run of `daily_job` for today (as a refresh request does): that run ranks today
with the exclusions in force, and today's week, month and all-time follow by declarative
automation. Every board is republished: the run ranks the day's boards together. Settled periods
are not touched (the publish skips them): they change only through a reopening.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from leaderboard.boards import BoardSet
from leaderboard.moderation import NO_POSTGRES
from leaderboard.periods import UTC
from leaderboard.settings import Settings
from leaderboard.stores.moderation import PostgresModeration
from pipelines.automation import DAY_TAG, TRIGGER_TAG
from pipelines.jobs import DAILY_JOB
from pipelines.resources import StoresResource

SENSOR = "moderation_changes"


def build_moderation(boards: BoardSet, settings: Settings) -> list[dg.SensorDefinition]:
    @dg.sensor(
        name=SENSOR,
        job_name=DAILY_JOB,
        minimum_interval_seconds=settings.LANDING_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When an exclusion is added, lifted or expires, a run of the current day: its "
        "week, month and all-time follow, so the standings drop (or restore) the subject.",
    )
    def moderation_changes(context: dg.SensorEvaluationContext, stores: StoresResource) -> dg.SensorResult:
        record = stores.stores.record
        if record is None:
            return dg.SensorResult(skip_reason=NO_POSTGRES)
        now = dt.datetime.now(UTC)
        cursor = json.loads(context.cursor) if context.cursor else None
        after = cursor["audit"] if cursor else None
        since = dt.datetime.fromisoformat(cursor["at"]) if cursor else now
        found = PostgresModeration(record).changes(after, since, now)
        next_cursor = json.dumps({"audit": found.last_audit_id, "at": now.isoformat()})
        if not found.count:
            # The first tick only learns where the audit is: what was there before is in the
            # standings already (every run ranks with the exclusions in force).
            why = "no exclusion added, lifted or expired" if cursor else "first tick: the audit's position noted"
            return dg.SensorResult(skip_reason=why, cursor=next_cursor)
        day = now.astimezone(boards.tz).date()
        named = ", ".join(b or "every board" for b in found.boards)
        context.log.info(f"{found.count} exclusion change(s) ({named}) -> a run of {day} and its periods")
        request = dg.RunRequest(
            run_key=f"moderation:{found.last_audit_id}:{now.isoformat()}",
            partition_key=day.isoformat(),
            tags={TRIGGER_TAG: "moderation", DAY_TAG: day.isoformat()},
        )
        return dg.SensorResult(run_requests=[request], cursor=next_cursor)

    return [moderation_changes]
