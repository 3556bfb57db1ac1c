"""Servers a fault test owns (a Postgres cluster, a redis-server, the API) and its load generator.

Each server listens on 127.0.0.1 on a free port, keeps its files in a temporary folder and is
stopped by the test that started it: the shared Postgres and Redis are never touched. Every
wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import polars as pl

from leaderboard.boards import BoardSet
from leaderboard.periods import period_of
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from pipelines.steps import publish_period
from tests.conftest import free_port

SECRET = "f" * 40


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (scripts/services)")
    return found[-1].parent


def _wait(what: str, ready: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {seconds} s")


class PostgresCluster:
    """A cluster of the test's own (initdb, pg_ctl). As root, its binaries run as `postgres`,
    which refuses to run as root."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lb-fault-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres")
        self.bin = _pg_bin()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A redis-server of the test's own, nothing persisted: a restart comes back empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lb-fault-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        def pong() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
            except redis.RedisError:
                return False

        _wait("redis-server", pong, 15)

    def kill(self) -> None:
        """As a crash: SIGKILL, no goodbye to the clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def api_server(environ: dict[str, str], cwd: Path) -> Iterator[str]:
    """`leaderboard api` (granian) on a free port until the block ends; yields its base URL."""
    port = free_port()
    leaderboard = Path(sys.executable).with_name("leaderboard")
    log = (cwd / f"api-{port}.log").open("wb")
    server = subprocess.Popen([str(leaderboard), "api", "--port", str(port)], env=environ, cwd=cwd,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait("the API", up, 120)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def api_environ(database_url: str, redis_url: str, prefix: str, lake: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "LEADERBOARD_"))}
    # The limiter stays on (its counters are in the Redis that restarts), set too high to refuse.
    return {**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
            "LEADERBOARD_LAKE_DIR": str(lake), "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "10000000",
            "LOG_LEVEL": "WARNING", "DATABASE_POOL_MIN_SIZE": "2"}  # fmt: skip


USERS = 2000


def standings_table(n: int = USERS) -> pl.DataFrame:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {"board_id": ["points"] * n, "user_id": [f"user-{i:05}" for i in range(1, n + 1)],
         "score": [float(10 * (n - i)) for i in range(n)], "event_count": [1] * n, "reached_at": [at] * n,
         "rank": list(range(1, n + 1)), "previous_rank": [None] * n, "rank_change": [None] * n},
        schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
    )  # fmt: skip


COLD_DAYS = 5  # a day this far back is not hot: Redis keeps no per-user hashes for it


def publish_hot_and_cold(lake: Lake, boards: BoardSet, stores: Stores) -> None:
    """Today and yesterday (hot), a day COLD_DAYS back (cold), this week and all-time."""
    now = dt.datetime.now(dt.UTC)
    today = now.astimezone(boards.tz).date()
    table = standings_table()
    periods = [period_of("daily", today - dt.timedelta(days=d)) for d in (COLD_DAYS, 1, 0)]
    periods += [period_of("weekly", today), period_of("all_time", today, boards.start_date)]
    for period in periods:
        publish_period(lake, boards, period, table, "fault-test", stores, now=now)


@dataclass(frozen=True)
class Call:
    """One request of the mix: `hot` ones are answered by Redis while it holds them."""

    kind: str
    path: str
    hot: bool
    params: dict[str, str | int] = field(default_factory=dict)
    token: str | None = None


def calls_for(today: dt.date, user: str, token: str) -> list[Call]:
    """Hot calls Redis answers while it holds them; cold ones need Postgres or the lake."""
    day, cold = today.isoformat(), (today - dt.timedelta(days=COLD_DAYS)).isoformat()
    return [
        Call("standings top", "/leaderboard/points/daily", True, {"at": day}),
        Call("page in the body", "/leaderboard/points/weekly", True, {"at": day, "limit": 10, "offset": 5}),
        Call("me", "/leaderboard/points/daily/me", True, {"at": day, "around": 3}, token),
        Call("user all-time", f"/leaderboard/points/all_time/users/{user}", True, {"around": 2}, token),
        Call("periods", "/leaderboard/points/daily/periods", True),
        Call("deep page", "/leaderboard/points/daily", False, {"at": day, "offset": 1500, "limit": 20}),
        Call("me on a cold day", "/leaderboard/points/daily/me", False, {"at": cold, "around": 2}, token),
    ]


@dataclass
class Tally:
    """Answers by API, request kind and status (`error` for a transport failure), with when."""

    seen: list[tuple[float, str, str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for _, api, kind, status in self.seen:
            out.setdefault(api, {}).setdefault(kind, Counter())[status] += 1  # type: ignore[arg-type]
        return {a: {k: dict(sorted(kinds[k].items())) for k in sorted(kinds)} for a, kinds in sorted(out.items())}

    def statuses(self, api: str | None = None, hot: bool | None = None, calls: list[Call] | None = None,
                 since: float = 0.0, until: float = float("inf")) -> Counter[str]:  # fmt: skip
        kinds = None if hot is None or calls is None else {c.kind for c in calls if c.hot == hot}
        return Counter(s for t, a, k, s in self.seen if (api is None or a == api) and (kinds is None or k in kinds)
                       and since <= t < until)  # fmt: skip


async def load(apis: dict[str, str], calls: list[Call], seconds: float, clients: int, tally: Tally,
               max_requests: int = 50_000) -> None:  # fmt: skip
    """`clients` concurrent clients per API, each going round the mix until `seconds` pass."""
    deadline = time.monotonic() + seconds
    sent = 0

    async def client(name: str, base: str, start: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            i = start
            while time.monotonic() < deadline and sent < max_requests:
                call = calls[i % len(calls)]
                i += 1
                sent += 1
                headers = {"Authorization": f"Bearer {call.token}"} if call.token else {}
                try:
                    status = str((await http.get(call.path, params=call.params, headers=headers)).status_code)
                except httpx.HTTPError as exc:
                    status = f"error:{type(exc).__name__}"
                tally.seen.append((time.monotonic(), name, call.kind, status))

    await asyncio.gather(*(client(n, b, c) for n, b in apis.items() for c in range(clients)))


@dataclass
class Readiness:
    """/health/ready of each API, polled until stopped: (when, API, `status` field or error)."""

    seen: list[tuple[float, str, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self, apis: dict[str, str], every: float = 0.2, limit: float = 120) -> None:
        """Each API in a loop of its own, so a probe waiting on a dead store delays no other."""
        deadline = time.monotonic() + limit

        async def probe(name: str, base: str) -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                while not self.stop.is_set() and time.monotonic() < deadline:
                    try:
                        state = (await http.get(f"{base}/health/ready")).json()["status"]
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        state = f"error:{type(exc).__name__}"
                    self.seen.append((time.monotonic(), name, state))
                    await asyncio.sleep(every)

        await asyncio.gather(*(probe(n, b) for n, b in apis.items()))

    def ok_again(self, api: str, since: float) -> float | None:
        """Seconds from `since` to the first `ok` of `api` at or after it."""
        return next((round(t - since, 2) for t, a, s in self.seen if a == api and t >= since and s == "ok"), None)
