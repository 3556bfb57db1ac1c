"""Retention (docs/contracts.md#retention): remove published periods that ended before now - RETENTION_DAYS.

Planning reads only; applying removes exactly what the plan lists. Postgres partitions whose
whole month ended before the cutoff are dropped, the rows of the one straddling it deleted;
Redis keys, lake snapshots and old clean-event files follow. All-time standings and
`daily_scores` stay: all-time and later rollups are rebuilt from them.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from leaderboard.boards import BoardSet
from leaderboard.periods import PeriodError, local_midnight, parse_period_key
from leaderboard.stores import postgres
from leaderboard.stores.lake import Lake
from leaderboard.stores.redis import CacheKeys, forget

# No step runs this long: a scratch folder untouched for longer belongs to a killed process.
WORKDIR_MAX_AGE = dt.timedelta(hours=6)


@dataclass(frozen=True)
class ExpiredPeriod:
    board_id: str
    period_type: str
    period_key: str
    period_end: dt.datetime


@dataclass
class RetentionPlan:
    cutoff: dt.datetime
    periods: list[ExpiredPeriod] = field(default_factory=list)
    drop_partitions: list[str] = field(default_factory=list)
    trim_partitions: list[str] = field(default_factory=list)
    snapshots: list[Path] = field(default_factory=list)
    clean_event_files: list[Path] = field(default_factory=list)
    abandoned_workdirs: list[Path] = field(default_factory=list)
    lake: Lake | None = None  # where the files are removed from (a bucket's objects too)

    def summary(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "periods": len(self.periods),
            "postgres_partitions_dropped": self.drop_partitions,
            "postgres_partitions_trimmed": self.trim_partitions,
            "lake_snapshots": len(self.snapshots),
            "clean_event_files": len(self.clean_event_files),
            "abandoned_workdirs": len(self.abandoned_workdirs),
        }


def plan(
    lake: Lake, boards: BoardSet, now: dt.datetime, retention_days: int, conn: psycopg.Connection | None = None
) -> RetentionPlan:
    """What retention would remove at `now` (passed in, so tests and dry runs are exact)."""
    result = RetentionPlan(cutoff=now - dt.timedelta(days=retention_days), lake=lake)
    cutoff = result.cutoff
    expired: dict[tuple[str, str, str], ExpiredPeriod] = {}
    # lake snapshots: their end follows from the key
    for board_id, period_type, key, path in lake.snapshots():
        if period_type == "all_time":
            continue
        try:
            end = local_midnight(parse_period_key(period_type, key).end, boards.tz)
        except PeriodError:
            continue
        if end < cutoff:
            result.snapshots.append(path)
            expired[(board_id, period_type, key)] = ExpiredPeriod(board_id, period_type, key, end)
    if conn is not None:
        for board_id, period_type, key, end in postgres.expired_periods(conn, cutoff):
            expired[(board_id, period_type, key)] = ExpiredPeriod(board_id, period_type, key, end)
        for part in postgres.month_partitions(conn):
            if part.end <= cutoff:
                result.drop_partitions.append(part.name)
            elif part.start < cutoff:
                result.trim_partitions.append(part.name)
    result.periods = sorted(expired.values(), key=lambda p: (p.period_end, p.board_id, p.period_type))
    for day in lake.days("clean_events"):
        if local_midnight(day + dt.timedelta(days=1), boards.tz) < cutoff:
            result.clean_event_files.append(lake.day_file("clean_events", day))
    # scratch folders of runs killed mid-step (a finished step removes its own)
    result.abandoned_workdirs = [p for p, changed in lake.workdirs() if changed < now - WORKDIR_MAX_AGE]
    return result


def apply(
    p: RetentionPlan,
    conn: psycopg.Connection | None = None,
    client: redis.Redis | None = None,
    keys: CacheKeys | None = None,
) -> None:
    """Remove what the plan lists: Postgres first (system of record), then Redis and the lake."""
    if conn is not None:
        postgres.remove_expired(conn, p.drop_partitions, p.trim_partitions, p.cutoff)
    if client is not None and keys is not None and p.periods:
        forget(client, keys, [(e.board_id, e.period_type, e.period_key) for e in p.periods], p.cutoff)
    for path in [*p.snapshots, *p.clean_event_files]:
        if p.lake is not None:
            p.lake.remove(path)  # in a bucket, its object (a snapshot: pointer, then objects)
        else:
            path.unlink(missing_ok=True)
    for folder in p.abandoned_workdirs:
        shutil.rmtree(folder, ignore_errors=True)
