"""Benchmark: the API on granian under wrk (loopback), standings from Redis vs a trivial route.

Rate limiting is off (RATE_LIMIT_PER_MINUTE=0) unless set in the environment: Litestar's
limiter keeps a log of every request of the window per client, and wrk is one client.

Publishes one day of sample standings to a scratch Postgres database and Redis prefix, serves
`leaderboard api`, then in the same run loads `GET /leaderboard/points/daily?at=...` (a Redis
hit) and `GET /health` (no I/O) with wrk, and prints requests/s, p50/p99 and the ratio.

    apt-get install -y wrk
    .venv/bin/python bench/api_load.py --connections 64 --duration 6 --rounds 5 --workers 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import redis

from leaderboard.stores.migrations import deploy

DAY = "2026-11-20"


def _wrk(url: str, connections: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "errors": int(non2xx[1]) if non2xx else 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per route; medians are printed")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    bindir = Path(sys.executable).parent
    name, prefix = f"lb_bench_{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": args.redis_url, "REDIS_KEY_PREFIX": prefix,
               "LEADERBOARD_LANDING_DIR": f"{tmp}/landing", "LEADERBOARD_LAKE_DIR": f"{tmp}/lake",
               "DAGSTER_HOME": f"{tmp}/dagster", "RATE_LIMIT_PER_MINUTE": os.environ.get("RATE_LIMIT_PER_MINUTE", "0"),
               "LOG_LEVEL": "WARNING"}  # fmt: skip
        try:
            deploy(url)
            cli = str(bindir / "leaderboard")
            subprocess.run([cli, "generate", "--start", DAY, "--days", "1", "--users", "5000",
                            "--events-per-day", "50000"], env=env, check=True, capture_output=True)  # fmt: skip
            subprocess.run([cli, "materialize", "--start", DAY, "--end", DAY], env=env, check=True, capture_output=True)
            server = subprocess.Popen([cli, "api", "--port", "3999", "--workers", str(args.workers)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            base = "http://127.0.0.1:3999"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            standings = f"{base}/leaderboard/points/daily?at={DAY}"
            assert httpx.get(standings).status_code == 200
            _wrk(standings, args.connections, 2)  # warm up
            targets = {"standings": standings, "trivial": f"{base}/health", "boards": f"{base}/leaderboard/boards"}
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
            for i in range(args.rounds):  # interleaved rounds: machine noise hits every route alike
                for route in list(targets)[i % 3 :] + list(targets)[: i % 3]:
                    runs[route].append(_wrk(targets[route], args.connections, args.duration))
            hot, trivial, boards = (
                {k: statistics.median(r[k] for r in runs[route]) for k in runs[route][0]} for route in targets
            )
        finally:
            if server:
                server.terminate()
                server.wait(timeout=20)
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for label, r in (("standings (Redis)", hot), ("trivial /health", trivial), ("/leaderboard/boards", boards)):
        print(
            f"{label:18} {r['rps']:9.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  non-2xx {r['errors']}"
        )
    print(f"ratio standings/trivial {hot['rps'] / trivial['rps']:.2f} (medians of {args.rounds} interleaved rounds, "
          f"{args.connections} connections, {args.duration}s each, granian {args.workers} workers)")  # fmt: skip


if __name__ == "__main__":
    main()
