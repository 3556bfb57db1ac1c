"""Soak: the API on granian under wrk for a minute per route, the public standings route and the
bearer-token `/me`, counting every error (non-2xx answers, socket errors).

Publishes one day (`--day`) of sample standings through the pipeline to a scratch Postgres
database and Redis prefix, serves `leaderboard api`, mints a token for a ranked user, then loads
`GET /leaderboard/points/daily?at=...` and `GET /leaderboard/points/daily/me?at=...` (with
`Authorization: Bearer ...`) one after the other, each for `--duration` seconds at
`--connections` connections. Prints req/s, p50/p99, errors and the load average seen (the
highest 1-minute figure sampled during the run; wrk and the server share the machine), and
exits 1 if any request failed.

Rate limiting is off (RATE_LIMIT_PER_MINUTE=0) unless set in the environment: wrk is one client.

    apt-get install -y wrk
    .venv/bin/python bench/api_soak.py --duration 60 --connections 64 --workers 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import redis

from api.auth import mint
from leaderboard.settings import load_settings
from leaderboard.stores.migrations import deploy


def free_port() -> int:
    """A port no one listens on now, so the server never meets another run's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wrk(url: str, connections: int, duration: int, headers: list[str]) -> dict[str, float]:
    """One wrk run: req/s, p50/p99 in ms, requests, non-2xx answers, socket errors, and the
    highest 1-minute load average sampled while it ran."""
    peak = [load_average()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5):
            peak.append(load_average())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        args = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency"]
        for header in headers:
            args += ["-H", header]
        out = subprocess.run([*args, url], check=True, capture_output=True, text=True, timeout=duration + 60).stdout
    finally:
        stop.set()
        sampler.join()

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "requests": int(re.search(r"(\d+) requests in", out)[1]),  # type: ignore[index]
        "p50": ms("50%"),
        "p99": ms("99%"),
        "non2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
        "load": max(peak),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=60, help="seconds per route")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--day", default=dt.datetime.now(dt.UTC).date().isoformat(),
                   help="the day published and asked for (default today, UTC: a hot period, so Redis holds "
                        "each user's entry; an older day sends /me to Postgres)")  # fmt: skip
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    bindir = Path(sys.executable).parent
    name, prefix = f"lb_soak_{uuid.uuid4().hex[:8]}", f"soak-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_hex(32)
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    server = None
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": args.redis_url, "REDIS_KEY_PREFIX": prefix,
                   "LEADERBOARD_LANDING_DIR": f"{tmp}/landing", "LEADERBOARD_LAKE_DIR": f"{tmp}/lake",
                   "DAGSTER_HOME": f"{tmp}/dagster", "JWT_SECRET": secret, "LOG_LEVEL": "WARNING",
                   "RATE_LIMIT_PER_MINUTE": os.environ.get("RATE_LIMIT_PER_MINUTE", "0")}  # fmt: skip
            deploy(url)
            cli = str(bindir / "leaderboard")
            subprocess.run([cli, "generate", "--start", args.day, "--days", "1", "--users", "5000",
                            "--events-per-day", "50000"], env=env, check=True, capture_output=True)  # fmt: skip
            materialize = [cli, "materialize", "--start", args.day, "--end", args.day]
            subprocess.run(materialize, env=env, check=True, capture_output=True)
            port = free_port()
            server = subprocess.Popen([cli, "api", "--port", str(port), "--workers", str(args.workers)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            standings = f"{base}/leaderboard/points/daily?at={args.day}"
            page = httpx.get(standings).json()
            user = page["entries"][len(page["entries"]) // 2]["user_id"]  # a user in the middle of the page
            bearer = f"Authorization: Bearer {mint(load_settings(JWT_SECRET=secret), user, ttl_seconds=3600)}"
            me = f"{base}/leaderboard/points/daily/me?at={args.day}"
            assert httpx.get(me, headers={"Authorization": bearer.split(": ", 1)[1]}).status_code == 200
            routes = {"standings": (standings, []), "/me": (me, [bearer])}
            for target, headers in routes.values():
                wrk(target, args.connections, 2, headers)  # warm up
            before = load_average()
            for route, (target, headers) in routes.items():
                results[route] = wrk(target, args.connections, args.duration, headers)
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
    print(f"{args.duration} s per route, {args.connections} connections, granian {args.workers} workers, "
          f"{os.cpu_count()} CPUs; 1-min load average {before:.2f} before the first run")  # fmt: skip
    for route, r in results.items():
        print(f"{route:10} {r['rps']:9.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
              f"requests {r['requests']:.0f}  non-2xx {r['non2xx']:.0f}  socket errors {r['socket_errors']:.0f}  "
              f"load average up to {r['load']:.2f}")  # fmt: skip
    if any(r["non2xx"] or r["socket_errors"] for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
