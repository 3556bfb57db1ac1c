"""The staleness metrics of /metrics (api/freshness.py) against real stores: a period published
with a known `published_at` to a scratch Postgres database, Redis prefix and lake, scraped
through the app with its lifespan running, and through `leaderboard api --workers 2`."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl
import psycopg
import pytest
from litestar.testing import TestClient
from prometheus_client import Counter, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

import api.freshness
import api.reader
from api.app import create_app
from api.freshness import FreshnessWatch
from api.observability import REGISTRY, FreshnessCollector
from api.reader import Reader
from leaderboard.boards import BoardSet, current_boards
from leaderboard.periods import UTC, local_midnight, period_of
from leaderboard.ranking import STANDINGS_SCHEMA
from leaderboard.settings import Settings, load_settings
from leaderboard.stores import Override, Stores
from leaderboard.stores.lake import Lake
from leaderboard.stores.postgres import AsyncPostgres
from pipelines.steps import publish_period
from tests.conftest import REDIS_URL, scratch_database, scratch_redis_prefix

DOWN_POSTGRES = "postgresql://postgres@127.0.0.1:1/x"
DOWN_REDIS = "redis://127.0.0.1:1/0"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refresh rounds a test can wait for."""
    monkeypatch.setattr(api.freshness, "REFRESH_SECONDS", 0.05)


@pytest.fixture
def stores(settings: Settings) -> Iterator[Stores]:
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix:
        yield Stores(Lake(settings.LEADERBOARD_LAKE_DIR), url, REDIS_URL, prefix)


def moments_ago(microsecond: int = 0) -> dt.datetime:
    """A publish instant just past, on today's date in the boards' zone (as the API's "current")."""
    now = dt.datetime.now(UTC)
    at = now.replace(microsecond=microsecond) - dt.timedelta(seconds=2)
    midnight = local_midnight(now.astimezone(current_boards().tz).date(), current_boards().tz)
    return max(at, midnight)


def publish_today(stores: Stores, at: dt.datetime) -> BoardSet:
    """Today's daily standings of every board, published at `at` (one user on `points`)."""
    boards = current_boards()
    row = {"board_id": "points", "user_id": "u1", "score": 3.0, "event_count": 3, "reached_at": at, "rank": 1}
    table = pl.DataFrame([row], schema=STANDINGS_SCHEMA)
    period = period_of("daily", at.astimezone(boards.tz).date())
    publish_period(stores.lake, boards, period, table, "run-1", stores, now=at)
    return boards


def app_for(stores: Stores, database: str | None = None, cache: str | None = None) -> TestClient:
    settings = load_settings(DATABASE_URL=database, REDIS_URL=cache, REDIS_KEY_PREFIX=stores.key_prefix,
                             LEADERBOARD_LAKE_DIR=stores.lake.root, RATE_LIMIT_PER_MINUTE=0)  # fmt: skip
    return TestClient(create_app(settings))


def samples(text: str) -> Samples:
    """Every series of a scrape; a series reported twice (once per worker, say) fails."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in found, f"{key} reported twice"
            found[key] = s.value
    return found


def of(found: Samples, name: str) -> dict[tuple[str, ...], float]:
    """One metric's series, by label values."""
    return {tuple(v for _, v in labels): value for (n, labels), value in found.items() if n == name}


def scrape_until(get: Callable[[], str], ready: Callable[[Samples], bool], seconds: float = 10) -> Samples:
    """Scrapes until `ready` holds; every scrape must answer at once, whatever the stores do."""
    deadline = time.monotonic() + seconds
    while True:
        start = time.monotonic()
        found = samples(get())
        assert time.monotonic() - start < 1.5, "a scrape waited for a store (reads are given 2 s)"
        if ready(found):
            return found
        assert time.monotonic() < deadline, f"not seen in {seconds} s: {found}"
        time.sleep(0.05)


def expected_starts(boards: BoardSet, now: dt.datetime) -> dict[tuple[str, str], float]:
    today = now.astimezone(boards.tz).date()
    return {
        (b.id, p): local_midnight(period_of(p, today, boards.start_date).start, boards.tz).timestamp()
        for b in boards.boards
        for p in b.periods
    }


def test_published_at_of_current_periods_from_the_registry(stores: Stores):
    at = moments_ago(123456)
    boards = publish_today(stores, at)
    # Postgres is the system of record: its registry says when, not the lake's copy of the header.
    later = at + dt.timedelta(seconds=1, microseconds=1)
    with psycopg.connect(stores.database_url) as conn:
        conn.execute("UPDATE leaderboard_periods SET published_at = %s WHERE board_id = 'high_score'", (later,))
    with app_for(stores, stores.database_url, stores.redis_url) as c:
        found = scrape_until(lambda: c.get("/metrics").text, lambda f: bool(of(f, "leaderboard_store_up")))
    published = of(found, "leaderboard_published_timestamp_seconds")
    expected = {(b.id, p): 0.0 for b in boards.boards for p in b.periods}  # 0: never published
    expected.update({(b.id, "daily"): at.timestamp() for b in boards.boards if "daily" in b.periods})
    expected["high_score", "daily"] = later.timestamp()
    assert published == expected
    assert of(found, "leaderboard_period_start_timestamp_seconds") == expected_starts(boards, at)
    assert of(found, "leaderboard_store_up") == {("postgres",): 1.0, ("redis",): 1.0}


def test_a_disabled_board_has_no_series(stores: Stores, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(api.reader, "OVERRIDES_TTL", 0.0)  # admin changes seen at the next round
    at = moments_ago()
    publish_today(stores, at)
    config = stores.board_config()

    def boards_in(found: Samples) -> set[str]:
        return {board for board, _ in of(found, "leaderboard_published_timestamp_seconds")}

    config.save({"referrals": Override(enabled=False)}, by="test")
    with app_for(stores, stores.database_url, stores.redis_url) as c:
        found = scrape_until(lambda: c.get("/metrics").text, lambda f: bool(boards_in(f)))
        assert boards_in(found) == {"points", "high_score", "fastest_lap", "teams", "referrers"}
        assert not any(board == "referrals" for board, _ in of(found, "leaderboard_period_start_timestamp_seconds"))
        # an admin's change reaches the metrics as it reaches the routes, without a restart
        config.save({"referrals": Override(enabled=True), "points": Override(enabled=False)}, by="test")
        found = scrape_until(lambda: c.get("/metrics").text, lambda f: "referrals" in boards_in(f))
        assert boards_in(found) == {"referrals", "high_score", "fastest_lap", "teams", "referrers"}


def test_a_store_down_is_0_and_never_slows_a_scrape(stores: Stores):
    at = moments_ago()
    publish_today(stores, at)
    # Postgres unreachable: 0, and nothing published is known (Redis is a cache, never asked)
    with app_for(stores, DOWN_POSTGRES, stores.redis_url) as c:
        found = scrape_until(lambda: c.get("/metrics").text, lambda f: ("postgres",) in of(f, "leaderboard_store_up"))
        assert of(found, "leaderboard_store_up") == {("postgres",): 0.0, ("redis",): 1.0}
        assert of(found, "leaderboard_published_timestamp_seconds") == {}
        assert c.get("/leaderboard/points/daily").status_code == 200  # still served from Redis
    # Redis unreachable: 0; the registry still read
    with app_for(stores, stores.database_url, DOWN_REDIS) as c:
        found = scrape_until(lambda: c.get("/metrics").text, lambda f: ("redis",) in of(f, "leaderboard_store_up"))
        assert of(found, "leaderboard_store_up") == {("postgres",): 1.0, ("redis",): 0.0}
        assert of(found, "leaderboard_published_timestamp_seconds")["points", "daily"] == at.timestamp()


def test_values_read_stay_while_postgres_fails(settings: Settings):
    """A store that stops answering is 0 in store_up; the instants read before it failed stay,
    so the stale alert still counts from the last publish anyone saw."""
    gauges = FreshnessCollector()
    gauges.set_periods({("points", "daily"): (1234.5, 1000.0)})

    async def round_with_postgres_down() -> None:
        pool = AsyncConnectionPool(DOWN_POSTGRES, open=False, timeout=0.2, kwargs={"connect_timeout": 1})
        await pool.open(wait=False)
        try:
            reader = Reader(boards=current_boards(), primary=AsyncPostgres(pool))
            await FreshnessWatch(reader, gauges, timeout=0.5).refresh()
        finally:
            await pool.close()

    asyncio.run(round_with_postgres_down())
    found = {(m.name, *s.labels.values()): s.value for m in gauges.collect() for s in m.samples}
    assert found == {
        ("leaderboard_published_timestamp_seconds", "points", "daily"): 1234.5,
        ("leaderboard_period_start_timestamp_seconds", "points", "daily"): 1000.0,
        ("leaderboard_store_up", "postgres"): 0.0,
    }


def test_lake_only_reads_the_snapshot_headers_and_has_no_store_series(settings: Settings):
    stores = Stores(Lake(settings.LEADERBOARD_LAKE_DIR))
    at = moments_ago(654321)
    publish_today(stores, at)
    with app_for(stores) as c:
        found = scrape_until(
            lambda: c.get("/metrics").text, lambda f: bool(of(f, "leaderboard_published_timestamp_seconds"))
        )
    assert of(found, "leaderboard_published_timestamp_seconds")["points", "daily"] == at.timestamp()
    assert of(found, "leaderboard_published_timestamp_seconds")["points", "weekly"] == 0.0
    assert of(found, "leaderboard_store_up") == {}
    # the lifespan ended: this process no longer reports the view of an app that is gone
    assert not of(samples(generate_latest(REGISTRY).decode()), "leaderboard_published_timestamp_seconds")


def test_a_multiprocess_scrape_sums_counters_and_reports_freshness_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """PROMETHEUS_MULTIPROC_DIR as `leaderboard api --workers N` sets it: two workers' counter
    files are summed, and the freshness series come once, from the worker answering."""
    stores = Stores(Lake(settings.LEADERBOARD_LAKE_DIR))
    at = moments_ago()
    publish_today(stores, at)
    files = tmp_path / "metrics"
    files.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(files))
    for pid in (101, 102):  # what two worker processes write
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda pid=pid: pid))
        Counter("leaderboard_cache_requests", "Standings reads", ["result"], registry=None).labels("hit").inc(3)
    with app_for(stores) as c:
        found = scrape_until(
            lambda: c.get("/metrics").text, lambda f: bool(of(f, "leaderboard_published_timestamp_seconds"))
        )
    assert of(found, "leaderboard_cache_requests_total") == {("hit",): 6.0}
    assert of(found, "leaderboard_published_timestamp_seconds")["points", "daily"] == at.timestamp()


@contextmanager
def served(environ: dict[str, str], workers: int, log: Path) -> Iterator[str]:
    """`leaderboard api --workers N` (granian) on a free port until the block ends; yields its
    base URL once every worker has started: granian misses the stop signal of a worker that
    is still starting, so stopping earlier can hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    leaderboard = Path(sys.executable).with_name("leaderboard")
    with log.open("w") as out:
        server = subprocess.Popen([str(leaderboard), "api", "--port", str(port), "--workers", str(workers)],
                                  env=environ, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("Started worker-") < workers:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_two_workers_report_one_series_each(stores: Stores, tmp_path: Path):
    """With --workers 2 (PROMETHEUS_MULTIPROC_DIR set, counters summed from files) whichever
    worker answers reports each board and period once, with the published instant."""
    at = moments_ago()
    publish_today(stores, at)
    files = tmp_path / "metrics"
    files.mkdir()
    environ = {**os.environ, "LEADERBOARD_LAKE_DIR": str(stores.lake.root), "DATABASE_URL": str(stores.database_url),
               "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": stores.key_prefix, "RATE_LIMIT_PER_MINUTE": "0",
               "PROMETHEUS_MULTIPROC_DIR": str(files)}  # fmt: skip
    with (
        served(environ, 2, tmp_path / "server.log") as base,
        httpx.Client(base_url=base, headers={"Connection": "close"}) as h,
    ):
        scrapes = [
            scrape_until(lambda: h.get("/metrics").text, lambda f: bool(of(f, "leaderboard_store_up")))
            for _ in range(8)
        ]
    for found in scrapes:
        assert of(found, "leaderboard_store_up") == {("postgres",): 1.0, ("redis",): 1.0}
        assert of(found, "leaderboard_published_timestamp_seconds")["points", "daily"] == at.timestamp()
