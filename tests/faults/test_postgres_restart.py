"""Postgres stopped (`pg_ctl stop -m immediate`) and started again while clients read.

A cluster of the test's own, migrated and published to; two API servers (granian) in front of it
and the shared Redis: one without the lake (as the Kubernetes deployment), one with it. What
Redis holds (top pages, hot users, period lists) never fails; the rest is 503 (never 500 or 404)
on the API without the lake while Postgres is down, and served by the lake on the other; both
are ready (`ok`) again within 5 s of Postgres coming back, with no API restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

from api.auth import mint
from leaderboard.boards import current_boards
from leaderboard.settings import load_settings
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from leaderboard.stores.migrations import deploy
from tests.conftest import REDIS_URL, scratch_redis_prefix
from tests.faults.servers import (
    SECRET,
    PostgresCluster,
    Readiness,
    Tally,
    api_environ,
    api_server,
    calls_for,
    load,
    publish_hot_and_cold,
)

LOAD_SECONDS, DOWN_AFTER, DOWN_FOR = 20.0, 5.0, 7.0


def test_postgres_restart_under_load(tmp_path: Path) -> None:
    started = time.monotonic()
    cluster = PostgresCluster()
    try:
        cluster.start()
        deploy(cluster.url)
        boards = current_boards()
        lake = Lake(tmp_path / "lake")
        with scratch_redis_prefix() as prefix:
            publish_hot_and_cold(lake, boards, Stores(lake, cluster.url, REDIS_URL, prefix))
            user = "user-00010"
            calls = calls_for(dt.datetime.now(boards.tz).date(), user, mint(load_settings(JWT_SECRET=SECRET), user))
            tally, ready = Tally(), Readiness()
            marks: dict[str, float] = {}
            bare_env = api_environ(cluster.url, REDIS_URL, prefix, tmp_path / "no-lake")
            with api_server(bare_env, tmp_path) as bare, api_server({**bare_env, "LEADERBOARD_LAKE_DIR": str(lake.root)},
                                                                     tmp_path) as with_lake:  # fmt: skip
                apis = {"no-lake": bare, "lake": with_lake}

                async def scenario() -> None:
                    poller = asyncio.create_task(ready.poll(apis))
                    loader = asyncio.create_task(load(apis, calls, LOAD_SECONDS, clients=3, tally=tally))
                    await asyncio.sleep(DOWN_AFTER)
                    marks["down"] = time.monotonic()
                    await asyncio.to_thread(cluster.stop, "immediate")
                    await asyncio.sleep(DOWN_FOR)
                    await asyncio.to_thread(cluster.start)
                    marks["up"] = time.monotonic()
                    await loader
                    ready.stop.set()
                    await poller

                asyncio.run(scenario())
    finally:
        cluster.remove()

    counts = tally.counts()
    recovered = {api: ready.ok_again(api, marks["up"]) for api in apis}
    print(f"\npostgres restart: {len(tally.seen)} requests in {LOAD_SECONDS:.0f} s, Postgres down "
          f"{marks['up'] - marks['down']:.1f} s; ready again after {recovered} s; whole test "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    for api, kinds in counts.items():
        print(f"  {api}: " + "; ".join(f"{kind} {json.dumps(statuses)}" for kind, statuses in kinds.items()))
    outage = (marks["down"], marks["up"] + 5.0)
    assert not [s for s in tally.statuses() if not s.isdigit()], counts  # no transport errors
    assert set(tally.statuses(hot=True, calls=calls)) == {"200"}, counts  # Redis served them throughout
    assert set(tally.statuses("lake", hot=False, calls=calls)) == {"200"}, counts  # the lake behind Postgres
    cold = tally.statuses("no-lake", hot=False, calls=calls)
    assert set(cold) == {"200", "503"} and cold["503"] > 0, counts  # the outage was met, as 503
    assert set(tally.statuses("no-lake", hot=False, calls=calls, until=outage[0])) == {"200"}
    assert set(tally.statuses("no-lake", hot=False, calls=calls, since=outage[1])) == {"200"}
    degraded = {a for _, a, s in ready.seen if s == "degraded"}
    assert degraded == set(apis), ready.seen  # readiness said so while Postgres was down
    assert all(r is not None and r <= 5.0 for r in recovered.values()), (recovered, ready.seen[-20:])
