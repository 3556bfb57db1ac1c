"""Retention (DESIGN §6): remove published periods that ended before now - RETENTION_DAYS.

Planning reads only; applying removes exactly what the plan lists. Postgres partitions whose
whole month ended before the cutoff are dropped, the rows of the one straddling it deleted;
Redis keys, lake snapshots and old clean-event files follow. All-time standings and
`daily_scores` stay: all-time and later rollups are rebuilt from them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from leaderboard.boards import BoardSet
from leaderboard.cache import CacheKeys
from leaderboard.lake import Lake
from leaderboard.periods import UTC, PeriodError, local_midnight, parse_period_key, utc_month

_PARTITION = re.compile(r"^leaderboard_rankings_(daily|weekly|monthly)_(\d{4})_(\d{2})$")


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

    def summary(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "periods": len(self.periods),
            "postgres_partitions_dropped": self.drop_partitions,
            "postgres_partitions_trimmed": self.trim_partitions,
            "lake_snapshots": len(self.snapshots),
            "clean_event_files": len(self.clean_event_files),
        }


def plan(
    lake: Lake, boards: BoardSet, now: dt.datetime, retention_days: int, conn: psycopg.Connection | None = None
) -> RetentionPlan:
    """What retention would remove at `now` (passed in, so tests and dry runs are exact)."""
    result = RetentionPlan(cutoff=now - dt.timedelta(days=retention_days))
    cutoff = result.cutoff
    expired: dict[tuple[str, str, str], ExpiredPeriod] = {}
    # lake snapshots: their end follows from the key
    standings = lake.root / "standings"
    for path in sorted(standings.glob("*/*/*.parquet")) if standings.is_dir() else []:
        board_id, period_type, key = path.parent.parent.name, path.parent.name, path.stem
        if period_type == "all_time" or path.name.startswith("."):
            continue
        try:
            end = local_midnight(parse_period_key(period_type, key).end, boards.tz)
        except PeriodError:
            continue
        if end < cutoff:
            result.snapshots.append(path)
            expired[(board_id, period_type, key)] = ExpiredPeriod(board_id, period_type, key, end)
    if conn is not None:
        rows = conn.execute(
            "SELECT board_id, period_type, period_key, period_end FROM leaderboard_periods "
            "WHERE period_type <> 'all_time' AND period_end < %s ORDER BY period_end",
            (cutoff,),
        ).fetchall()
        for board_id, period_type, key, end in rows:
            expired[(board_id, period_type, key)] = ExpiredPeriod(board_id, period_type, key, end)
        names = [
            r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') ORDER BY relname")
        ]
        for name in names:
            if m := _PARTITION.match(name):
                lo, hi = utc_month(dt.datetime(int(m[2]), int(m[3]), 1, tzinfo=UTC))
                if hi <= cutoff:
                    result.drop_partitions.append(name)
                elif lo < cutoff:
                    result.trim_partitions.append(name)
    result.periods = sorted(expired.values(), key=lambda p: (p.period_end, p.board_id, p.period_type))
    for day in lake.days("clean_events"):
        if local_midnight(day + dt.timedelta(days=1), boards.tz) < cutoff:
            result.clean_event_files.append(lake.day_file("clean_events", day))
    return result


def apply(
    p: RetentionPlan,
    conn: psycopg.Connection | None = None,
    client: redis.Redis | None = None,
    keys: CacheKeys | None = None,
) -> None:
    """Remove what the plan lists: Postgres first (system of record), then Redis and the lake."""
    if conn is not None:
        with conn.transaction():
            for name in p.drop_partitions:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
            for name in p.trim_partitions:
                conn.execute(f'DELETE FROM "{name}" WHERE period_end < %s', (p.cutoff,))
            conn.execute(
                "DELETE FROM leaderboard_periods WHERE period_type <> 'all_time' AND period_end < %s", (p.cutoff,)
            )
    if client is not None and keys is not None and p.periods:
        names = []
        for e in p.periods:
            names += [
                keys.rankings(e.board_id, e.period_type, e.period_key),
                keys.users(e.board_id, e.period_type, e.period_key),
            ]
        for i in range(0, len(names), 1000):
            client.delete(*names[i : i + 1000])
    for path in [*p.snapshots, *p.clean_event_files]:
        path.unlink(missing_ok=True)
