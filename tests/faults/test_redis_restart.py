"""Redis killed and started again (empty) while clients read.

A redis-server of the test's own in front of a scratch database; the API (granian) runs without
the lake, so every answer Redis cannot give comes from Postgres. Nothing fails, before, during
or after; readiness is `ok` again within 5 s, and the API refills the new, empty Redis without
a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import redis

from api.auth import mint
from leaderboard.boards import current_boards
from leaderboard.settings import load_settings
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from leaderboard.stores.redis import CacheKeys
from tests.conftest import scratch_database
from tests.faults.servers import (
    SECRET,
    Readiness,
    RedisServer,
    Tally,
    api_environ,
    api_server,
    calls_for,
    load,
    publish_hot_and_cold,
)

LOAD_SECONDS, DOWN_AFTER, DOWN_FOR = 20.0, 5.0, 5.0


def test_redis_restart_under_load(tmp_path: Path) -> None:
    started = time.monotonic()
    server = RedisServer()
    prefix = f"lbfault-{uuid.uuid4().hex[:8]}"
    try:
        server.start()
        with scratch_database(migrated=True) as url:
            boards = current_boards()
            lake = Lake(tmp_path / "lake")
            publish_hot_and_cold(lake, boards, Stores(lake, url, server.url, prefix))
            today = dt.datetime.now(boards.tz).date()
            user = "user-00010"
            calls = calls_for(today, user, mint(load_settings(JWT_SECRET=SECRET), user))
            tally, ready = Tally(), Readiness()
            marks: dict[str, float] = {}
            with api_server(api_environ(url, server.url, prefix, tmp_path / "no-lake"), tmp_path) as base:
                apis = {"api": base}

                async def scenario() -> None:
                    poller = asyncio.create_task(ready.poll(apis))
                    loader = asyncio.create_task(load(apis, calls, LOAD_SECONDS, clients=3, tally=tally))
                    await asyncio.sleep(DOWN_AFTER)
                    marks["down"] = time.monotonic()
                    server.kill()
                    await asyncio.sleep(DOWN_FOR)
                    await asyncio.to_thread(server.start)
                    marks["up"] = time.monotonic()
                    await loader
                    ready.stop.set()
                    await poller

                asyncio.run(scenario())
            refilled = redis.Redis.from_url(server.url).ttl(CacheKeys(prefix).rankings("points", "daily", str(today)))
    finally:
        server.remove()

    counts = tally.counts()
    recovered = ready.ok_again("api", marks["up"])
    print(f"\nredis restart: {len(tally.seen)} requests in {LOAD_SECONDS:.0f} s, Redis down "
          f"{marks['up'] - marks['down']:.1f} s; ready again after {recovered} s; whole test "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    for api, kinds in counts.items():
        print(f"  {api}: " + "; ".join(f"{kind} {json.dumps(statuses)}" for kind, statuses in kinds.items()))
    assert set(tally.statuses()) == {"200"}, counts  # zero errors: Postgres answered what Redis could not
    assert any(s == "degraded" for _, _, s in ready.seen), ready.seen
    assert recovered is not None and recovered <= 5.0, (recovered, ready.seen[-20:])
    assert refilled > 0  # the API reached the new Redis and refilled the top page (with its TTL)
