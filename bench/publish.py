"""Benchmark: publish one period of N ranked rows to Postgres through the real publish path
(parallel COPY into a new leaf, index, swap it in with the registry upsert in one
transaction) against executemany INSERT of the same rows,
in the same script; then the Redis publish of that period (staged keys, MULTI/EXEC rename).

    .venv/bin/python bench/publish.py --rows 1000000 --repeat 5
Needs a Postgres it may create a database in (--admin-url) and a Redis (--redis-url).

Each timed run is a fresh subprocess of the checkout it measures. --code DIR publishes with
another checkout's code (bench/checkout.py); given more than once, the checkouts' runs
alternate, each into a scratch database deployed by its own migrations and a Redis prefix of
its own, and their medians are compared to the first's (--only-ours leaves executemany out):

    git worktree add /tmp/before <commit> && .venv/bin/python bench/publish.py --rows 1000000 \
        --repeat 3 --only-ours --code /tmp/before --code .
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
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


def executemany(conn: psycopg.Connection, frame: pl.DataFrame, columns: tuple[str, ...]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        # executemany cannot swap a leaf partition: it deletes and inserts into the indexed table
        cur.execute("DELETE FROM leaderboard_rankings WHERE period_key = '2026-11-26'")
        cur.executemany(
            f"INSERT INTO leaderboard_rankings ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            frame.select(columns).rows(),
        )


def quiesce(conn: psycopg.Connection, scratch: str, timeout: float = 120.0) -> None:
    """Start a timed run on a quiet server: the previous run's dead rows vacuumed, its dirty pages
    written out and no autovacuum running in any of this run's scratch databases (named `scratch`
    and after), so no run pays for another's leftovers. `conn` is in autocommit: each poll of
    pg_stat_activity then sees a fresh snapshot."""
    conn.execute("VACUUM leaderboard_rankings")
    conn.execute("CHECKPOINT")
    busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND datname LIKE %s"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and conn.execute(busy, (f"{scratch}%",)).fetchone()[0]:  # type: ignore[index]
        time.sleep(0.5)


def _child(args: argparse.Namespace) -> None:
    """One step in the checkout args.code[0]; a timed step prints its seconds as JSON."""
    from checkout import load, use

    use(args.code[0])
    pg = load("postgres_publish")
    if args.child == "deploy":
        load("migrations").deploy(args.url)  # type: ignore[attr-defined]
        return
    frame = rows(args.rows)
    with psycopg.connect(args.url, autocommit=True) as conn:
        quiesce(conn, args.scratch)
        if args.child == "executemany":
            t0 = time.perf_counter()
            executemany(conn, frame, pg.RANKING_COLUMNS)  # type: ignore[attr-defined]
            print(json.dumps({"seconds": time.perf_counter() - t0}))
            return
    cache, snapshot = load("redis"), load("Snapshot")
    c0, t0 = time.process_time(), time.perf_counter()
    pg.publish(args.url, frame, [header(args.rows)], "final")  # type: ignore[attr-defined]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    client = redis.Redis.from_url(args.redis_url)
    body = snapshot(header(args.rows), frame).body(dt.UTC, 100)  # type: ignore[operator]
    c0, t0 = time.process_time(), time.perf_counter()
    keys = cache.CacheKeys(args.prefix)  # type: ignore[attr-defined]
    cache.publish(client, keys, "points", "daily", "2026-11-26", body, frame, current=False)  # type: ignore[attr-defined]
    redis_seconds, redis_cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU: this process's (every thread's), not the servers'
    print(json.dumps({"seconds": seconds, "cpu": cpu, "redis": redis_seconds, "redis_cpu": redis_cpu}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--only-ours", action="store_true", help="time our publish alone, without executemany")
    p.add_argument(
        "--code", action="append", help="checkout whose publish runs (this one by default); repeat to compare"
    )
    p.add_argument("--child", choices=["deploy", "ours", "executemany"], help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--scratch", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    codes = [str(Path(c).resolve()) for c in args.code or [ROOT]]
    scratch, prefix = f"lb_bench_{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    names = {code: f"{scratch}_{k}" for k, code in enumerate(codes)}  # one database per checkout
    urls = {code: args.admin_url.rsplit("/", 1)[0] + f"/{name}" for code, name in names.items()}
    try:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'CREATE DATABASE "{name}"')

        def child(who: str, code: str) -> str:
            cmd = [sys.executable, __file__, "--child", who, "--code", code, "--url", urls[code],
                   "--rows", str(args.rows), "--scratch", scratch, "--prefix", f"{prefix}-{codes.index(code)}",
                   "--redis-url", args.redis_url]  # fmt: skip
            return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout

        for code in codes:
            child("deploy", code)
        sides = [("ours", code) for code in codes] + ([] if args.only_ours else [("executemany", codes[0])])
        runs: dict[tuple[str, str], list[dict]] = {side: [] for side in sides}
        for i in range(args.repeat):
            for who, code in sides if i % 2 == 0 else sides[::-1]:
                r = json.loads(child(who, code).strip().splitlines()[-1])
                runs[who, code].append(r)
                redis_part = (
                    f" (client CPU {r['cpu']:.2f}s), Redis {r['redis']:.2f}s (client CPU {r['redis_cpu']:.2f}s)"
                    if "redis" in r
                    else ""
                )
                print(f"  {who:12} {r['seconds']:7.2f}s{redis_part}  {code}", flush=True)
        for code in codes:
            with psycopg.connect(urls[code]) as conn:
                n = conn.execute("SELECT count(*) FROM leaderboard_rankings").fetchone()[0]  # type: ignore[index]
            if n != args.rows:
                print(f"  {code}: {n:,} rows in leaderboard_rankings, not {args.rows:,}")
    finally:
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}-*"))
        if keys:
            client.delete(*keys)
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    fields = ("seconds", "cpu", "redis", "redis_cpu")
    med = {code: {f: statistics.median(r[f] for r in runs["ours", code]) for f in fields} for code in codes}
    first = med[codes[0]]["seconds"]
    for code in codes:
        m = med[code]
        vs = (
            " (the first's: " + ", ".join(f"{m[f] / med[codes[0]][f]:.2f}x" for f in fields) + ")"
            if code != codes[0]
            else ""
        )
        print(
            f"{args.rows:,} rows: publish (COPY) median {m['seconds']:.2f}s (client CPU {m['cpu']:.2f}s); "
            f"Redis publish (top-100 body + per-user hash) median {m['redis']:.2f}s "
            f"(client CPU {m['redis_cpu']:.2f}s){vs}; code {code}"
        )
    if not args.only_ours:
        many = statistics.median(r["seconds"] for r in runs["executemany", codes[0]])
        print(f"executemany median {many:.2f}s, ratio {many / first:.1f}x the first code's publish")
    print(f"({args.repeat} runs each, alternated)")


if __name__ == "__main__":
    main()
