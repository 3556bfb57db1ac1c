"""Benchmark: publish one period of N ranked rows to Postgres through the real publish path
(parallel COPY into a new leaf, index, swap it in with the registry upsert in one
transaction) against executemany INSERT of the same rows,
in the same script; then the Redis publish of that period (staged keys, MULTI/EXEC rename).

    .venv/bin/python bench/publish.py --rows 1000000 --repeat 5
Needs a Postgres it may create a database in (--admin-url) and a Redis (--redis-url).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
import uuid

import polars as pl
import psycopg
import redis

from leaderboard.standings import Snapshot
from leaderboard.stores import postgres_publish as pg
from leaderboard.stores import redis as cache
from leaderboard.stores.migrations import deploy

START, END = dt.datetime(2026, 11, 26, tzinfo=dt.UTC), dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


def rows(n: int) -> pl.DataFrame:
    return pl.DataFrame({"i": pl.int_range(n, eager=True)}).select(
        pl.lit("points").alias("board_id"), pl.lit("daily").alias("period_type"),
        pl.lit("2026-11-26").alias("period_key"), pl.lit(START).alias("period_start"), pl.lit(END).alias("period_end"),
        pl.format("user-{}", pl.col("i")).alias("user_id"), (pl.col("i") + 1).cast(pl.Int64).alias("rank"),
        (1e9 - pl.col("i")).cast(pl.Float64).alias("score"), pl.lit(None, pl.Int64).alias("previous_rank"),
        pl.lit(None, pl.Int64).alias("rank_change"), pl.lit(3, pl.Int64).alias("event_count"),
        pl.lit(START).alias("reached_at"), pl.lit(END).alias("published_at"), pl.lit("bench").alias("run_id"),
    )  # fmt: skip


def header(n: int) -> dict:
    return {"board_id": "points", "period_type": "daily", "period_key": "2026-11-26", "period_start": START.isoformat(),
            "period_end": END.isoformat(), "published_at": END.isoformat(), "run_id": "bench", "total": n}  # fmt: skip


def executemany(conn: psycopg.Connection, frame: pl.DataFrame) -> None:
    with conn.transaction(), conn.cursor() as cur:
        # executemany cannot swap a leaf partition: it deletes and inserts into the indexed table
        cur.execute("DELETE FROM leaderboard_rankings WHERE period_key = '2026-11-26'")
        cur.executemany(
            f"INSERT INTO leaderboard_rankings ({', '.join(pg.RANKING_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(pg.RANKING_COLUMNS))})",
            frame.select(pg.RANKING_COLUMNS).rows(),
        )


def quiesce(conn: psycopg.Connection, timeout: float = 120.0) -> None:
    """Start a timed run on a quiet server: the previous run's dead rows vacuumed, its dirty pages
    written out and no autovacuum running, so neither method pays for the other's leftovers.
    `conn` is in autocommit: each poll of pg_stat_activity then sees a fresh snapshot."""
    conn.execute("VACUUM leaderboard_rankings")
    conn.execute("CHECKPOINT")
    busy = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE backend_type = 'autovacuum worker' AND datname = current_database()"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and conn.execute(busy).fetchone()[0]:  # type: ignore[index]
        time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    name = f"lb_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        deploy(url)
        frame = rows(args.rows)
        times: dict[str, list[float]] = {"copy": [], "executemany": []}
        with psycopg.connect(url, autocommit=True) as conn:
            for i in range(args.repeat):
                for how in ("copy", "executemany") if i % 2 == 0 else ("executemany", "copy"):
                    quiesce(conn)
                    t0 = time.perf_counter()
                    if how == "copy":
                        pg.publish(url, frame, [header(args.rows)], "final")
                    else:
                        executemany(conn, frame)
                    times[how].append(time.perf_counter() - t0)
                    print(f"  {how:12} {times[how][-1]:7.2f}s", flush=True)
        client = redis.Redis.from_url(args.redis_url)
        keys = cache.CacheKeys(f"bench-{uuid.uuid4().hex[:8]}")
        redis_times = []
        body = Snapshot(header(args.rows), frame).body(dt.UTC, 100)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cache.publish(client, keys, "points", "daily", "2026-11-26", body, frame, current=False)
            redis_times.append(time.perf_counter() - t0)
        client.delete(*client.scan_iter(match=f"{keys.prefix}:*"))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{args.rows:,} rows: publish (COPY) median {med['copy']:.2f}s, executemany median "
            f"{med['executemany']:.2f}s, ratio {med['executemany'] / med['copy']:.1f}x; Redis publish "
            f"(top-100 body + per-user hash) median {statistics.median(redis_times):.2f}s ({args.repeat} runs each)"
        )
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
