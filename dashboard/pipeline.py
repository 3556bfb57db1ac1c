"""Pipeline state read from the Dagster instance under DAGSTER_HOME (SQLite or Postgres).

Only reads: partition status is worked out from the event log the way the Dagster UI does
(latest materialization against the latest planned one and its run), without refreshing
Dagster's own status cache, so the dashboard never writes to the instance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from leaderboard.objstore import S3Location
from leaderboard.periods import UTC, period_of, utc_hours
from leaderboard.run_errors import step_failure_message

if TYPE_CHECKING:
    import dagster as dg
    from dagster import EventLogRecord

# The daily-partitioned assets, each with the asset its day is computed from.
DAILY_ASSETS: dict[str, str | None] = {"clean_events": None, "daily_scores": "clean_events",
                                       "daily_rankings": "daily_scores"}  # fmt: skip
_RUN_WORDS = {"SUCCESS": "success", "FAILURE": "failed", "CANCELED": "canceled", "CANCELING": "canceling",
              "STARTED": "running", "STARTING": "starting", "QUEUED": "queued", "NOT_STARTED": "not started",
              "MANAGED": "managed"}  # fmt: skip


def has_instance(home: Path) -> bool:
    """Whether DAGSTER_HOME holds an instance (a config or run history); the dashboard creates none."""
    return (home / "dagster.yaml").is_file() or (home / "history").is_dir()


def open_instance(home: Path) -> dg.DagsterInstance:
    import dagster as dg

    return dg.DagsterInstance.from_config(str(home.resolve()))


@dataclass(frozen=True)
class RunRow:
    run_id: str
    job: str
    status: str  # success, failed, running, ...
    partitions: str  # "2026-11-20..2026-11-26", one key, or "" for an unpartitioned run
    started: dt.datetime | None
    seconds: float | None
    error: str | None  # the first step failure of a failed run


def _partitions(tags: dict[str, str]) -> str:
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    lo, hi = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if lo and hi:
        return lo if lo == hi else f"{lo}..{hi}"
    return ""


def _failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first step failure's message, unwrapped from Dagster's own wrapper errors."""
    import dagster as dg

    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE}):
        message = step_failure_message(entry.dagster_event)
        if message:
            return message
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.RUN_FAILURE}):
        if entry.dagster_event is not None:
            return entry.dagster_event.message
    return None


def recent_runs(instance: dg.DagsterInstance, limit: int = 20, now: dt.datetime | None = None) -> list[RunRow]:
    """The newest runs first, with how long they took (so far, for a running one) and why a run failed."""
    now = now or dt.datetime.now(UTC)
    rows = []
    for record in instance.get_run_records(limit=limit):
        run = record.dagster_run
        status = _RUN_WORDS.get(run.status.value, run.status.value.lower())
        started = dt.datetime.fromtimestamp(record.start_time, UTC) if record.start_time else None
        end = dt.datetime.fromtimestamp(record.end_time, UTC) if record.end_time else None
        seconds = ((end or now) - started).total_seconds() if started else None
        rows.append(
            RunRow(
                run_id=run.run_id,
                job=run.job_name,
                status=status,
                partitions=_partitions(dict(run.tags)),
                started=started,
                seconds=round(seconds, 2) if seconds is not None else None,
                error=_failure(instance, run.run_id) if status == "failed" else None,
            )
        )
    return rows


@dataclass(frozen=True)
class PartitionCell:
    asset: str
    day: dt.date
    status: str  # materialized, stale, failed, running or missing
    materialized_at: dt.datetime | None
    run_id: str | None  # of the materialization, or of the failed/running attempt


def _latest_materializations(
    instance: dg.DagsterInstance, asset: str, keys: Sequence[str]
) -> dict[str, EventLogRecord]:
    """Newest materialization record of each partition key (event log records come newest first)."""
    import dagster as dg

    latest: dict[str, EventLogRecord] = {}
    cursor = None
    for _ in range(20):  # at most 20 pages of reruns; enough for any window the page shows
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=list(keys)),
            limit=max(100, 4 * len(keys)),
            cursor=cursor,
        )
        for record in result.records:
            latest.setdefault(record.partition_key or "", record)
        if not result.has_more or len(latest) == len(keys):
            break
        cursor = result.cursor
    return latest


def _landed_at(landing: Path | S3Location, day: dt.date, tz: ZoneInfo) -> dt.datetime | None:
    """When a file last landed in the hour folders of a local day (a folder's mtime moves when
    the sink renames a file into it; an object has its own time): later than the day's
    clean_events means late data."""
    from leaderboard import objstore
    from leaderboard.landing import hour_folder, hour_rel

    if isinstance(landing, S3Location):
        store = objstore.store_of(landing)
        start, end = period_of("daily", day).bounds(tz)
        topics = objstore.list_children(store, landing.key("topics"))[0]
        times = [
            o.last_modified
            for topic in topics
            for hour in utc_hours(start, end)
            for o in objstore.list_children(store, landing.key(hour_rel(topic, hour)))[1]
        ]
        return max(times, default=None)

    topics = landing / "topics"
    if not topics.is_dir():
        return None
    start, end = period_of("daily", day).bounds(tz)
    newest = 0.0
    for topic in (p.name for p in topics.iterdir() if p.is_dir()):
        for hour in utc_hours(start, end):
            try:
                newest = max(newest, hour_folder(landing, topic, hour).stat().st_mtime)
            except FileNotFoundError:
                continue
    return dt.datetime.fromtimestamp(newest, UTC) if newest else None


def _when(record: EventLogRecord | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(record.timestamp, UTC) if record is not None else None


def partition_grid(
    instance: dg.DagsterInstance, days: Sequence[dt.date], landing: Path | S3Location, tz: ZoneInfo
) -> list[PartitionCell]:
    """Status of every daily partition of DAILY_ASSETS over `days`.

    materialized: its newest attempt succeeded; failed / running: a newer attempt than the last
    materialization failed / is under way; stale: materialized before its upstream changed (the
    asset it is computed from was materialized since, or a landing file arrived since);
    missing: never materialized.
    """
    import dagster as dg

    keys = [d.isoformat() for d in days]
    mats = {asset: _latest_materializations(instance, asset, keys) for asset in DAILY_ASSETS}
    planned = {
        (asset, key): instance.get_latest_planned_materialization_info(dg.AssetKey(asset), key)
        for asset in DAILY_ASSETS
        for key in keys
    }
    run_ids = sorted({p.run_id for p in planned.values() if p is not None})
    run_status = {
        r.dagster_run.run_id: r.dagster_run.status
        for r in (instance.get_run_records(dg.RunsFilter(run_ids=run_ids)) if run_ids else [])
    }
    cells = []
    for asset, upstream in DAILY_ASSETS.items():
        for day, key in zip(days, keys, strict=True):
            mat = mats[asset].get(key)
            attempt = planned[(asset, key)]
            mat_id = mat.storage_id if mat is not None else -1
            at = _when(mat)
            status, run_id = ("materialized", mat.run_id) if mat is not None else ("missing", None)
            if attempt is not None and attempt.storage_id > mat_id:
                run = run_status.get(attempt.run_id)
                if run is not None and run.value in ("FAILURE", "CANCELED"):
                    status, run_id = "failed", attempt.run_id
                elif run is not None and run.value not in ("SUCCESS",):
                    status, run_id = "running", attempt.run_id
            if status == "materialized" and at is not None:
                changed = _when(mats[upstream].get(key)) if upstream else _landed_at(landing, day, tz)
                if changed is not None and changed > at:
                    status = "stale"
            cells.append(PartitionCell(asset, day, status, at, run_id))
    return cells
