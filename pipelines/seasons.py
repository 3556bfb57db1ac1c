"""The `season_rankings` sensor (docs/contracts.md#seasons): registers each season of the
boards file as a partition and asks for a season's ranking whenever what it reads changed.

Seasons are not declared automation like the calendar periods: their partitions are season
ids, which no partition mapping ties to days. The sensor reads the boards file on each tick,
so a season added to the file is a partition at the next tick, without a reload. A season is
requested again when the `daily_scores` of one of its days changed (live, and late files while
closing) and once more when it ends: that publish says `final`, which settlement waits for.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import dagster as dg

from leaderboard.boards import BoardSet, BoardsFileError, load_boards
from leaderboard.periods import UTC, Period, season_boards
from leaderboard.settings import Settings
from pipelines.automation import TRIGGER_TAG
from pipelines.jobs import SEASON_JOB, SEASONS_PARTITIONS
from pipelines.resources import LakeResource

SEASON_TAG = "leaderboard/season"


def season_state(lake: LakeResource, period: Period, now: dt.datetime, tz: dt.tzinfo) -> str | None:
    """What a ranking of the season would read, as a short digest with its phase (None before
    it starts): the same digest twice means the same standings, so no second run."""
    start, end = period.bounds(tz)  # type: ignore[arg-type]
    if now < start:
        return None
    stamps = []
    for day in period.days():
        modified = lake.lake.modified_ns(lake.lake.day_file("daily_scores", day))
        if modified is not None:
            stamps.append(f"{day}@{modified}")
    if not stamps:
        return None  # none of its days scored yet: nothing to publish
    phase = "live" if now < end else "ended"
    return f"{phase}:{hashlib.sha256(chr(10).join(stamps).encode()).hexdigest()[:16]}"


def season_requests(
    boards: BoardSet, lake: LakeResource, registered: set[str], now: dt.datetime
) -> tuple[list[str], list[dg.RunRequest]]:
    """Season ids to register, and a run of each season whose inputs or phase changed."""
    new = [s for s in boards.season_ids() if s not in registered]
    requests = []
    for season_id in boards.season_ids():
        _, period = season_boards(boards, season_id)
        state = season_state(lake, period, now, boards.tz)
        if state is None:
            continue
        requests.append(
            dg.RunRequest(
                job_name=SEASON_JOB,
                partition_key=season_id,
                run_key=f"season:{season_id}:{state}",  # one run per state of its inputs
                tags={TRIGGER_TAG: "season", SEASON_TAG: season_id},
            )
        )
    return new, requests


def build_seasons(boards: BoardSet, settings: Settings) -> list[dg.SensorDefinition]:
    @dg.sensor(
        name="season_rankings",
        job_name=SEASON_JOB,
        minimum_interval_seconds=settings.AUTOMATION_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Register the boards file's seasons as partitions; rank a season while it is live, "
        "when it ends and after a late file (when the daily scores of its days changed).",
    )
    def season_rankings(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        try:  # the file as it is now: a season added since the code location loaded counts too
            current = load_boards(settings.LEADERBOARD_BOARDS, settings.LEADERBOARD_TIMEZONE)
        except BoardsFileError as exc:
            context.log.warning(f"{exc}; seasons of the file as loaded are used")
            current = boards
        registered = set(context.instance.get_dynamic_partitions(SEASONS_PARTITIONS))
        new, requests = season_requests(current, lake, registered, dt.datetime.now(UTC))
        if new:
            context.log.info(f"new seasons: {', '.join(new)}")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(SEASONS_PARTITIONS, new)] if new else None,
            skip_reason=None if requests or new else "no season changed",
        )

    return [season_rankings]
