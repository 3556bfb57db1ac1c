"""What each store holds of a published period, read back for the fault tests.

`fingerprints` reduces every (store, board, period) to one string that changes with what
readers would see and nothing else (not when, not by which run): a kill test compares them
with those of the old and the new standings. `assert_consistent` checks what must hold once
a publish has completed: the three stores hold the same publish row for row, and nothing is
left behind (unattached `lr_*` tables, Redis staging keys, temp files beside snapshots).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import polars as pl
import psycopg
import redis

from leaderboard.boards import BoardSet, display_limit
from leaderboard.periods import Period
from leaderboard.standings import Snapshot
from leaderboard.stores import redis as cache
from leaderboard.stores.lake import Lake, read_snapshot
from leaderboard.stores.postgres_publish import content_hash

STORES = ("postgres", "redis", "lake")
ROW_COLUMNS = ("user_id", "rank", "score", "previous_rank", "rank_change", "event_count", "reached_at")
ROW_SCHEMA = {"user_id": pl.String, "rank": pl.Int64, "score": pl.Float64, "previous_rank": pl.Int64,
              "rank_change": pl.Int64, "event_count": pl.Int64, "reached_at": pl.Datetime("us", "UTC")}  # fmt: skip

Key = tuple[str, str, str, str]  # store, board, period type, period key


@dataclass(frozen=True)
class Published:
    """Where one test publishes: a scratch database, a Redis key prefix, a lake."""

    database_url: str
    redis_url: str
    prefix: str
    lake: Lake
    boards: BoardSet

    def keys(self) -> cache.CacheKeys:
        return cache.CacheKeys(self.prefix)


def _sha(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def postgres_rows(conn: psycopg.Connection, board: str, period: Period) -> pl.DataFrame:
    found = conn.execute(
        f"SELECT {', '.join(ROW_COLUMNS)} FROM leaderboard_rankings WHERE board_id = %s AND period_type = %s "
        "AND period_key = %s ORDER BY rank",
        (board, period.type, period.key),
    ).fetchall()
    return pl.DataFrame(found, schema=ROW_SCHEMA, orient="row")


def registry(conn: psycopg.Connection, board: str, period: Period) -> tuple | None:
    return conn.execute(
        "SELECT entries, content_hash, run_id, published_at FROM leaderboard_periods WHERE board_id = %s "
        "AND period_type = %s AND period_key = %s",
        (board, period.type, period.key),
    ).fetchone()


def fingerprints(p: Published, periods: list[Period]) -> dict[Key, str | None]:
    """Per store, board and period, a digest of what it serves (None: nothing published).

    Postgres: the registry's entries and content hash with the rows' content hash (a registry
    entry paired with another publish's rows gives a digest of neither); Redis: the rankings
    body without `published_at`, and the users hash; the lake: the snapshot's rows and header
    without `published_at`/`run_id`.
    """
    out: dict[Key, str | None] = {}
    client = redis.Redis.from_url(p.redis_url)
    keys = p.keys()
    try:
        with psycopg.connect(p.database_url, autocommit=True) as conn:
            for period in periods:
                for board in p.boards.with_period(period.type):
                    where = (board.id, period.type, period.key)
                    entry = registry(conn, board.id, period)
                    rows = postgres_rows(conn, board.id, period)
                    out[("postgres", *where)] = (
                        None if entry is None and rows.is_empty() else f"{entry and entry[:2]}|{content_hash(rows)}"
                    )
                    body = client.get(keys.rankings(*where))
                    users = client.hgetall(keys.users(*where))
                    if body is None and not users:
                        out[("redis", *where)] = None
                    else:
                        shown = {k: v for k, v in json.loads(body).items() if k != "published_at"} if body else None
                        out[("redis", *where)] = _sha([shown, sorted(users.items())])
                    snap = read_snapshot(p.lake, *where)
                    if snap is None:
                        out[("lake", *where)] = None
                    else:
                        header = {k: v for k, v in snap.header.items() if k not in ("published_at", "run_id")}
                        out[("lake", *where)] = _sha([header, content_hash(snap.frame)])
    finally:
        client.close()
    return out


def leftovers(p: Published) -> dict[str, list[str]]:
    """What a killed run can leave behind: loaded tables never attached, staging keys, temp
    files beside the lake's snapshots, ingest scratch folders."""
    with psycopg.connect(p.database_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'lr\\_%' AND NOT relispartition"
        )]  # fmt: skip
    client = redis.Redis.from_url(p.redis_url)
    try:
        staging = sorted(k.decode() for k in client.scan_iter(match=f"{p.prefix}:*:staging:*", count=1000))
    finally:
        client.close()
    standings, scratch = p.lake.root / "standings", p.lake.root / ".staging"
    temp = sorted(str(f.relative_to(p.lake.root)) for f in standings.rglob(".*.tmp")) if standings.is_dir() else []
    workdirs = sorted(str(d.relative_to(p.lake.root)) for d in scratch.iterdir()) if scratch.is_dir() else []
    return {"tables": sorted(tables), "staging_keys": staging, "lake_temp_files": temp, "lake_workdirs": workdirs}


def assert_consistent(p: Published, periods: list[Period], today: dt.date) -> None:
    """Every period is one publish in all three stores, row for row; nothing is left behind."""
    client = redis.Redis.from_url(p.redis_url)
    keys = p.keys()
    try:
        with psycopg.connect(p.database_url, autocommit=True) as conn:
            for period in periods:
                hot = period.key in cache.hot_keys(period.type, today)
                for board in p.boards.with_period(period.type):
                    where = (board.id, period.type, period.key)
                    snap = read_snapshot(p.lake, *where)
                    assert snap is not None, f"lake: {where} missing"
                    lake_rows = snap.frame.select(ROW_COLUMNS).cast(ROW_SCHEMA)  # type: ignore[arg-type]
                    rows = postgres_rows(conn, board.id, period)
                    assert rows.rows() == lake_rows.rows(), f"postgres rows != lake rows for {where}"
                    entry = registry(conn, board.id, period)
                    assert entry is not None, f"postgres: {where} not registered"
                    entries, digest, run_id, published_at = entry
                    assert (entries, digest) == (snap.frame.height, content_hash(snap.frame)), where
                    assert (run_id, published_at) == (
                        snap.header["run_id"],
                        dt.datetime.fromisoformat(snap.header["published_at"]),
                    ), f"registry and lake hold different publishes of {where}"
                    stamped = conn.execute(
                        "SELECT DISTINCT run_id, published_at FROM leaderboard_rankings WHERE board_id = %s "
                        "AND period_type = %s AND period_key = %s",
                        where,
                    ).fetchall()
                    assert stamped in ([(run_id, published_at)], []), f"rows of {where} from another publish"
                    body = client.get(keys.rankings(*where))
                    assert body is not None, f"redis: {where} missing"
                    expected = Snapshot(snap.header, snap.frame).body(p.boards.tz, display_limit(board))
                    assert json.loads(body) == expected, f"redis body != lake snapshot for {where}"
                    users = {k.decode(): json.loads(v) for k, v in client.hgetall(keys.users(*where)).items()}
                    if hot:
                        assert users == {u: json.loads(e) for u, e in cache.user_entries(snap.frame).items()}, where
                    else:
                        assert not users, f"redis: {where} is not hot but has a users hash"
    finally:
        client.close()
    left = leftovers(p)
    assert not left["tables"] and not left["staging_keys"] and not left["lake_temp_files"], left
