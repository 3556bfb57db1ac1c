"""Benchmark: the API on granian under wrk (loopback), standings from Redis vs a trivial route.

Rate limiting is off (RATE_LIMIT_PER_MINUTE=0) unless set in the environment: Litestar's
limiter keeps a log of every request of the window per client, and wrk is one client.

Publishes one day of sample standings to a scratch Postgres database and Redis prefix, serves
`leaderboard api`, then in the same run loads `GET /leaderboard/points/daily?at=...` (a Redis
hit) and `GET /health` (no I/O) with wrk, and prints requests/s, p50/p99 and the ratio.
The friends board, `POST /leaderboard/points/all_time/users` with 200 ranked ids and a user's
token (all-time is a hot period: Redis's `:users` answers, one HMGET), is a scenario of its
own with --friends-connections (default 4: two per worker) connections: its target is a p99 under 5 ms, a
latency, which a closed loop of 64 connections would measure as queueing.

    apt-get install -y wrk
    .venv/bin/python bench/api_load.py --connections 64 --duration 6 --rounds 5 --workers 2

--code DIR serves another checkout's API (its own `leaderboard` CLI through bench/checkout.py,
under its own PYTHONPATH); given more than once, every checkout serves at once on a port of
its own, from the same landed day materialized into a database, lake and Redis prefix of its
own, and the rounds alternate between them, their medians compared to the first's:

    git worktree add /tmp/before <commit> && .venv/bin/python bench/api_load.py --duration 6 \
        --rounds 3 --workers 2 --code /tmp/before --code .
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import checkout
import httpx
import jwt
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-20"
ROUTES = ("standings", "trivial", "boards", "friends")
FRIENDS = 200  # ids per friends-board request, every one ranked
SECRET = "bench-" + "s" * 40  # JWT_SECRET of the served API
CLI = [sys.executable, str(Path(checkout.__file__).resolve())]  # + a checkout: that checkout's `leaderboard`


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a server process and its children (granian's workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # from the state on: ppid, ..., utime, stime
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, connections: int, duration: int, server: int, script: str | None = None) -> dict[str, float]:
    """wrk's figures, and the server's CPU time per request (`server`: its pid), which the
    machine's other load sways less than throughput. `script`: a wrk Lua script (a POST)."""
    cpu = _cpu_seconds(server)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", *(["-s", script] if script else []), url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    cpu = _cpu_seconds(server) - cpu

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "errors": int(non2xx[1]) if non2xx else 0,
            "cpu_us": cpu / requests * 1e6}  # fmt: skip


def _cli(code: str, env: dict[str, str], *argv: str) -> None:
    """`leaderboard ARGV` of checkout `code`."""
    done = subprocess.run([*CLI, code, *argv], env=env, cwd=code, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"leaderboard {' '.join(argv)} failed in {code}:\n{done.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entries(url: str) -> list:
    """A page's entries: what two checkouts serving the same published day must agree on."""
    return httpx.get(url).json()["entries"]


def _friends_script(base: str, folder: str) -> str | None:
    """A wrk script POSTing FRIENDS ranked all-time ids (spread over the ranks, out of rank order)
    with a user's token; None where the checkout has no friends route."""
    total = httpx.get(f"{base}/leaderboard/points/all_time?limit=1").json()["total"]
    ids = [e["user_id"] for offset in range(0, total - total % 4, total // 4)
           for e in _entries(f"{base}/leaderboard/points/all_time?limit=50&offset={offset}")]  # fmt: skip
    ids = ids[1::2] + ids[::2]
    assert len(ids) == FRIENDS, len(ids)
    exp = int(time.time()) + 24 * 3600
    token = jwt.encode({"sub": ids[0], "exp": exp, "roles": []}, SECRET, algorithm="HS256")
    body = json.dumps({"user_ids": ids})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = httpx.post(f"{base}/leaderboard/points/all_time/users", content=body, headers=headers)
    if answer.status_code != 200:
        return None
    assert len(answer.json()["entries"]) == FRIENDS and not answer.json()["absent"], answer.text[:300]
    script = Path(folder) / f"friends-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        + "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    )
    return str(script)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per route; medians are printed")
    p.add_argument("--friends-connections", type=int, default=4, help="connections of the friends-board scenario")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument(
        "--code", action="append", help="checkout whose API is served (this one by default); repeat to compare"
    )
    args = p.parse_args()
    codes = [str(Path(c).resolve()) for c in args.code or [ROOT]]
    scratch, prefix = f"lb_bench_{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    names = {code: f"{scratch}_{k}" for k, code in enumerate(codes)}
    servers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                for name in names.values():
                    admin.execute(f'CREATE DATABASE "{name}"')
            bases: dict[str, str] = {}
            pids: dict[str, int] = {}  # granian's main process (the CLI execs it)
            for k, code in enumerate(codes):
                port = _free_port()
                env = checkout.env(
                    code, DATABASE_URL=args.admin_url.rsplit("/", 1)[0] + f"/{names[code]}", REDIS_URL=args.redis_url,
                    REDIS_KEY_PREFIX=f"{prefix}-{k}", LEADERBOARD_LANDING_DIR=f"{tmp}/landing",
                    LEADERBOARD_LAKE_DIR=f"{tmp}/lake-{k}", DAGSTER_HOME=f"{tmp}/dagster-{k}",
                    PROMETHEUS_MULTIPROC_DIR=f"{tmp}/metrics-{k}", LOG_LEVEL="WARNING",
                    RATE_LIMIT_PER_MINUTE=os.environ.get("RATE_LIMIT_PER_MINUTE", "0"), JWT_SECRET=SECRET,
                )  # fmt: skip
                os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])
                _cli(code, env, "migrate", "deploy")
                if k == 0:  # one landed day for every checkout
                    _cli(code, env, "generate", "--start", DAY, "--days", "1", "--users", "5000",
                         "--events-per-day", "50000")  # fmt: skip
                _cli(code, env, "materialize", "--start", DAY, "--end", DAY)
                serve = [*CLI, code, "api", "--port", str(port), "--workers", str(args.workers)]
                servers.append(
                    subprocess.Popen(serve, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
                bases[code], pids[code] = f"http://127.0.0.1:{port}", servers[-1].pid
            for base in bases.values():
                for _ in range(100):
                    try:
                        if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
            targets = {
                code: dict(zip(ROUTES[:3], (f"{base}/leaderboard/points/daily?at={DAY}", f"{base}/health",
                                        f"{base}/leaderboard/boards"), strict=True))
                for code, base in bases.items()
            }  # fmt: skip
            scripts: dict[str, str] = {}
            for code in codes:
                assert httpx.get(targets[code]["standings"]).status_code == 200
                if _entries(targets[code]["standings"]) != _entries(targets[codes[0]]["standings"]):
                    print(f"standings entries differ between {codes[0]} and {code}")
                friends = _friends_script(bases[code], tmp)
                if friends is not None:
                    scripts[code] = friends
                    hashed = f"{prefix}-{codes.index(code)}:points:ALL_TIME:all:users"  # what answers it
                    assert redis.Redis.from_url(args.redis_url).exists(hashed), f"{hashed} is missing"
                    targets[code]["friends"] = f"{bases[code]}/leaderboard/points/all_time/users"
                _wrk(targets[code]["standings"], args.connections, 2, pids[code])  # warm up
            routes = ROUTES if len(scripts) == len(codes) else ROUTES[:3]  # a checkout without the route: left out
            if routes != ROUTES:
                print("friends board left out: not served by every checkout")
            runs: dict[tuple[str, str], list[dict[str, float]]] = {(c, r): [] for c in codes for r in routes}
            for i in range(args.rounds):  # interleaved rounds: machine noise hits every route and checkout alike
                for code in codes if i % 2 == 0 else codes[::-1]:
                    for route in routes[i % len(routes) :] + routes[: i % len(routes)]:
                        friends = route == "friends"
                        r = _wrk(targets[code][route], args.friends_connections if friends else args.connections,
                                 args.duration, pids[code], scripts[code] if friends else None)  # fmt: skip
                        runs[code, route].append(r)
                        print(f"  {route:9} {r['rps']:7.0f} req/s  {r['cpu_us']:4.0f} µs/req  {code}", flush=True)
            med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=20)
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"{prefix}-*"))
            if keys:
                client.delete(*keys)
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                for name in names.values():
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for code in codes:
        print(code)
        for label, route in (("standings (Redis)", "standings"), ("trivial /health", "trivial"),
                             ("/leaderboard/boards", "boards"), (f"friends {FRIENDS} ids", "friends")):  # fmt: skip
            if (code, route) not in med:
                continue
            r = med[code, route]
            vs = f"  {r['rps'] / med[codes[0], route]['rps']:.2f}x the first" if code != codes[0] else ""
            if code != codes[0]:
                vs += f", server CPU {r['cpu_us'] / med[codes[0], route]['cpu_us']:.2f}x"
            print(
                f"  {label:18} {r['rps']:9.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                f"server CPU {r['cpu_us']:5.0f} µs/req  non-2xx {r['errors']:.0f}{vs}"
            )
        print(f"  ratio standings/trivial {med[code, 'standings']['rps'] / med[code, 'trivial']['rps']:.2f}")
    print(f"(medians of {args.rounds} interleaved rounds, {args.connections} connections ({args.friends_connections} "
          f"for the friends board), {args.duration}s each, granian {args.workers} workers per checkout)")  # fmt: skip


if __name__ == "__main__":
    main()
