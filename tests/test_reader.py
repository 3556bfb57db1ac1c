"""The reader's fallback order over real stores: Redis, then Postgres, then the lake.

Each store holds the same standings published at a different instant (and one extra period of
its own), so `published_at` (or the period list) says which store answered. A store is made
to fail by pointing at a closed port or a missing folder: nothing is mocked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import polars as pl
import pytest
import redis
import redis.asyncio as aioredis
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

import api.reader
from api.app import create_app
from api.reader import Reader
from leaderboard.boards import current_boards
from leaderboard.periods import period_of
from leaderboard.settings import load_settings
from leaderboard.standings import StandingsError
from leaderboard.stores import Stores, StoreUnavailable
from leaderboard.stores.lake import Lake
from leaderboard.stores.lake_async import AsyncLake
from leaderboard.stores.postgres import AsyncPostgres
from leaderboard.stores.redis import AsyncBodies, CacheKeys
from pipelines.steps import publish_period
from tests.conftest import REDIS_URL, scratch_database, scratch_redis_prefix

DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:1/x"
DEAD_REDIS = "redis://127.0.0.1:1/0"
USERS = 50  # `points` shows 30: a page past rank 30 is not in the Redis body
SOURCES = ("redis", "postgres", "lake")


def _table(n: int) -> pl.DataFrame:
    at = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    return pl.DataFrame(
        {"board_id": ["points"] * n, "user_id": [f"u{i:03}" for i in range(1, n + 1)],
         "score": [float(1000 - i) for i in range(n)], "event_count": [1] * n, "reached_at": [at] * n,
         "rank": list(range(1, n + 1)), "previous_rank": [None] * n, "rank_change": [None] * n},
        schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
    )  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[dict]:
    """Today's daily standings in each store, published at its own instant, and an extra day
    each: Postgres the day before, the lake two days before, Redis three days before."""
    root = tmp_path_factory.mktemp("reader")
    boards = current_boards()
    today = dt.datetime.now(boards.tz).date()
    now = dt.datetime.now(dt.UTC)
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix:
        stores = {
            "lake": Stores(Lake(root / "lake")),
            "postgres": Stores(Lake(root / "postgres-side-lake"), url),
            "redis": Stores(Lake(root / "redis-side-lake"), None, REDIS_URL, prefix),
        }
        published_at = {}
        for i, (name, extra) in enumerate((("postgres", 1), ("lake", 2), ("redis", 3))):
            at = now - dt.timedelta(seconds=10 - i)
            s = stores[name]
            publish_period(s.lake, boards, period_of("daily", today - dt.timedelta(days=extra)), _table(USERS), name, s,
                           now=at)  # fmt: skip
            publish_period(s.lake, boards, period_of("daily", today), _table(USERS), name, s, now=at)
            published_at[name] = at.isoformat()
        yield {"url": url, "prefix": prefix, "lake": root / "lake", "today": today, "published_at": published_at,
               "extra": {n: (today - dt.timedelta(days=d)).isoformat() for n, d in (("postgres", 1), ("lake", 2),
                                                                                     ("redis", 3))}}  # fmt: skip


@asynccontextmanager
async def reader_over(env: dict, redis_state: str, postgres_up: bool, lake_up: bool) -> AsyncIterator[Reader]:
    """A Reader over Redis (`up`, `empty`: up with nothing cached, `down`), Postgres and the lake."""
    pool = AsyncConnectionPool(env["url"] if postgres_up else DEAD_POSTGRES, min_size=0, max_size=2, open=False,
                               timeout=0.5, kwargs={"connect_timeout": 1})  # fmt: skip
    await pool.open(wait=False)
    client = aioredis.Redis.from_url(DEAD_REDIS if redis_state == "down" else REDIS_URL)
    prefix = env["prefix"] if redis_state == "up" else f"{env['prefix']}-empty"
    lake = AsyncLake(Lake(env["lake"] if lake_up else env["lake"].with_name("no-such-lake")))
    try:
        yield Reader(current_boards(), AsyncPostgres(pool), AsyncBodies(client, CacheKeys(prefix)), fallback=lake)
    finally:
        await pool.close()
        await client.aclose()
        cleanup = redis.Redis.from_url(REDIS_URL)
        stale = list(cleanup.scan_iter(match=f"{env['prefix']}-empty:*"))  # refills of the empty case
        if stale:
            cleanup.delete(*stale)
        cleanup.close()


def expected(redis_state: str, postgres_up: bool, lake_up: bool, redis_can: bool = True) -> str | None:
    """The first store that is up and holds the answer; None: 503."""
    if redis_state == "up" and redis_can:
        return "redis"
    if postgres_up:
        return "postgres"
    return "lake" if lake_up else None


CASES = list(itertools.product(("up", "empty", "down"), (True, False), (True, False)))


def _ids(case: tuple) -> str:
    return f"redis-{case[0]}-pg-{'up' if case[1] else 'down'}-lake-{'up' if case[2] else 'down'}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_each_route_asks_redis_then_postgres_then_the_lake(published, case):
    day = published["today"]

    async def scenario() -> dict[str, object]:
        answers: dict[str, object] = {}
        async with reader_over(published, *case) as reader:
            for route, call in {
                "top": lambda: reader.standings("points", "daily", day, None, 0),
                "deep": lambda: reader.standings("points", "daily", day, 5, 40),
                "me": lambda: reader.user_entry("points", "daily", day, "u010", 2),
                "periods": lambda: reader.periods("points", "daily"),
                "friends": lambda: reader.users("points", "daily", day, ["u045", "nobody", "u003", "u031"]),
            }.items():
                try:
                    answers[route] = await call()
                except StoreUnavailable:
                    answers[route] = None
        return answers

    answers = asyncio.run(scenario())
    by_time = {at: name for name, at in published["published_at"].items()}
    top, deep, me, periods, friends = (answers[k] for k in ("top", "deep", "me", "periods", "friends"))
    assert (by_time[top.body["published_at"]] if top else None) == expected(*case)
    assert top is None or [e["rank"] for e in top.body["entries"]] == list(range(1, 31))
    # a page past the cached top is never cut from the Redis body: Postgres or the lake read its ranks
    assert (by_time[deep.body["published_at"]] if deep else None) == expected(*case, redis_can=False)
    assert deep is None or [e["rank"] for e in deep.body["entries"]] == [41, 42, 43, 44, 45]
    assert (by_time[me["published_at"]] if me else None) == expected(*case)
    assert me is None or ([e["rank"] for e in me["neighbors"]], me["entry"]["rank"]) == ([8, 9, 10, 11, 12], 10)
    source = expected(*case)
    assert periods == (None if source is None else [day.isoformat(), published["extra"][source]])
    # Redis's `:users` holds every user of today's (hot) period: ranks past its body come from it too
    assert (by_time[friends["published_at"]] if friends else None) == expected(*case)
    assert friends is None or (
        [(e["user_id"], e["rank"]) for e in friends["entries"]],
        friends["absent"],
        friends["total"],
    ) == ([("u003", 3), ("u031", 31), ("u045", 45)], ["nobody"], USERS)


def test_a_store_that_is_up_saying_not_published_is_404_and_only_then(published):
    """Postgres up and without the period: 404, though the lake behind it holds the period;
    Postgres down: the lake answers; the lake alone without it: 404; nothing up: 503."""
    lake_only = published["extra"]["lake"]
    day = dt.date.fromisoformat(lake_only)

    async def scenario() -> None:
        async with reader_over(published, "empty", True, True) as reader:
            with pytest.raises(StandingsError, match="no published daily standings"):
                await reader.standings("points", "daily", day, None, 0)
            with pytest.raises(StandingsError, match="no published daily standings"):
                await reader.user_entry("points", "daily", day, "u001", 0)
        async with reader_over(published, "down", False, True) as reader:
            assert (await reader.standings("points", "daily", day, None, 0)).body["period_key"] == lake_only
            with pytest.raises(StandingsError, match="has no entry"):
                await reader.user_entry("points", "daily", day, "nobody", 0)
            with pytest.raises(StandingsError, match="no published daily standings"):
                await reader.standings("points", "daily", day - dt.timedelta(days=30), None, 0)
        async with reader_over(published, "down", False, False) as reader:
            with pytest.raises(StoreUnavailable):
                await reader.standings("points", "daily", day, None, 0)

    asyncio.run(scenario())


def test_redis_answers_a_user_without_an_entry_from_its_own_hash(published):
    """A hot period Redis holds answers "no entry" itself: Postgres down changes nothing."""

    async def scenario() -> None:
        async with reader_over(published, "up", False, False) as reader:
            with pytest.raises(StandingsError, match="has no entry"):
                await reader.user_entry("points", "daily", published["today"], "nobody", 3)
            top = await reader.user_entry("points", "daily", published["today"], "u001", 3)
            assert [e["rank"] for e in top["neighbors"]] == [1, 2, 3, 4] and top["entry"]["percentile"] == 100.0
            # nobody asked for is ranked: every id absent, from Redis alone
            none = await reader.users("points", "daily", published["today"], ["nobody", "ghost"])
            assert (none["entries"], none["absent"]) == ([], ["nobody", "ghost"])
            assert none["published_at"] == published["published_at"]["redis"]

    asyncio.run(scenario())


def test_a_miss_refills_redis_from_postgres_never_from_the_lake(published):
    day = published["today"]
    name = CacheKeys(f"{published['prefix']}-empty").rankings("points", "daily", day.isoformat())
    sync = redis.Redis.from_url(REDIS_URL)

    async def read(postgres_up: bool) -> str:
        async with reader_over(published, "empty", postgres_up, True) as reader:
            page = await reader.standings("points", "daily", day, None, 0)
            refilled = sync.get(name)
            ttl = sync.ttl(name)
        assert (refilled is not None) == postgres_up and (ttl > 0) == postgres_up
        return page.body["published_at"]

    assert asyncio.run(read(True)) == published["published_at"]["postgres"]
    assert asyncio.run(read(False)) == published["published_at"]["lake"]


def test_a_store_that_failed_is_skipped_for_a_second(published, monkeypatch):
    """During an outage one request a second waits for the dead store; the others go straight on."""
    monkeypatch.setattr(api.reader, "DOWN_SECONDS", 1.0)
    day = published["today"]

    async def scenario() -> list[float]:
        took = []
        async with reader_over(published, "down", False, True) as reader:
            for pause in (0, 0, 1.1):
                await asyncio.sleep(pause)
                t0 = time.perf_counter()
                await reader.standings("points", "daily", day, 5, 40)
                took.append(time.perf_counter() - t0)
        return took

    first, second, after = asyncio.run(scenario())
    assert first >= 0.4 and after >= 0.4  # the pool's timeout (0.5 s), waited for Postgres
    assert second < 0.3  # skipped: the lake answered at once


def _app(env: dict, lake: Path, **settings: object) -> TestClient:
    return TestClient(create_app(load_settings(**{
        "DATABASE_URL": DEAD_POSTGRES, "REDIS_URL": DEAD_REDIS, "REDIS_KEY_PREFIX": env["prefix"],
        "LEADERBOARD_LAKE_DIR": lake, "JWT_SECRET": "s" * 40, "RATE_LIMIT_PER_MINUTE": 0, **settings,
    })))  # fmt: skip


def test_no_store_means_503_with_retry_after_on_every_read_route(published):
    from api.auth import mint

    token = mint(load_settings(JWT_SECRET="s" * 40), "u001")
    paths = ["/leaderboard/points/daily", "/leaderboard/points/daily/periods", "/leaderboard/points/daily/me",
             "/leaderboard/points/daily/users/u001", "/leaderboard/points/daily?offset=40&limit=5"]  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    friends = ("/leaderboard/points/daily/users", {"user_ids": ["u001", "u002"]})
    with _app(published, published["lake"].with_name("no-such-lake")) as c:
        for r in [c.get(path, headers=auth) for path in paths] + [c.post(friends[0], json=friends[1], headers=auth)]:
            assert r.status_code == 503, (r.url, r.text)
            assert r.headers["retry-after"] == "5" and r.headers["content-type"].startswith("application/problem+json")
            assert "127.0.0.1" not in r.text  # the detail names no server
    with _app(published, published["lake"]) as c:  # the lake behind Postgres serves them all
        for path in paths:
            assert c.get(path, headers=auth).status_code == 200, path
        assert c.post(friends[0], json=friends[1], headers=auth).status_code == 200


@pytest.mark.parametrize("offset", [100_000, 100_001])
def test_offset_is_bounded(published, offset):
    with _app(published, published["lake"], DATABASE_URL=None, REDIS_URL=None) as c:
        r = c.get("/leaderboard/points/daily", params={"offset": offset})
        schema = c.get("/schema/openapi.json").json()
    if offset == 100_000:  # past the last rank: an empty page of the snapshot
        assert r.status_code == 200 and r.json()["entries"] == [] and r.json()["total"] == USERS
    else:
        assert r.status_code == 400 and "offset" in r.text
    [param] = [
        p for p in schema["paths"]["/leaderboard/{board}/{period}"]["get"]["parameters"] if p["name"] == "offset"
    ]
    assert param["schema"]["maximum"] == 100_000


def test_every_route_documents_the_statuses_it_answers(published):
    with _app(published, published["lake"], DATABASE_URL=None, REDIS_URL=None) as c:
        paths = c.get("/schema/openapi.json").json()["paths"]
    documented = {(m, p): sorted(int(s) for s in op["responses"]) for p, ops in paths.items() for m, op in ops.items()}
    assert documented == {
        ("get", "/leaderboard/boards"): [200, 429],
        ("get", "/leaderboard/{board}/{period}"): [200, 400, 404, 429, 503],
        ("get", "/leaderboard/{board}/{period}/periods"): [200, 400, 404, 429, 503],
        ("get", "/leaderboard/{board}/{period}/{key}"): [200, 400, 404, 429, 503],
        ("get", "/leaderboard/{board}/{period}/{key}/results"): [200, 400, 404, 409, 429, 503],
        ("get", "/leaderboard/{board}/{period}/me"): [200, 400, 401, 404, 429, 503],
        ("get", "/leaderboard/{board}/{period}/users/{user_id}"): [200, 400, 401, 403, 404, 429, 503],
        ("post", "/leaderboard/{board}/{period}/users"): [200, 400, 401, 404, 429, 503],
        ("get", "/leaderboard/{board}/{period}/results"): [200, 400, 404, 409, 429, 503],
        ("post", "/leaderboard/{board}/{period}/reopen"): [200, 400, 401, 403, 404, 409, 429, 503],
        ("get", "/leaderboard/config"): [200, 401, 403, 429],
        ("put", "/leaderboard/config"): [200, 400, 401, 403, 429, 503],
        ("post", "/leaderboard/config/refresh"): [202, 401, 403, 429, 503],
        ("post", "/leaderboard/exclusions"): [201, 400, 401, 403, 409, 429, 503],
        ("get", "/leaderboard/exclusions"): [200, 400, 401, 403, 409, 429, 503],
        ("post", "/leaderboard/exclusions/{exclusion_id}/lift"): [200, 400, 401, 403, 404, 409, 429, 503],
        ("get", "/leaderboard/audit"): [200, 400, 401, 403, 409, 429, 503],
        ("get", "/health"): [200],
        ("get", "/health/ready"): [200, 503],
    }
    problem = paths["/leaderboard/{board}/{period}"]["get"]["responses"]["503"]
    assert list(problem["content"]) == ["application/problem+json"]
