"""Publishing to the real Postgres and Redis of this machine (no mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading

import polars as pl
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner
from psycopg_pool import AsyncConnectionPool

from cli.main import main
from leaderboard.boards import current_boards
from leaderboard.periods import period_of
from leaderboard.settings import get_settings
from leaderboard.stores import Stores, errors, pgcopy, postgres_publish
from leaderboard.stores import redis as cache
from leaderboard.stores.lake import Lake, read_snapshot
from leaderboard.stores.lake_async import AsyncLake
from leaderboard.stores.migrations import MIGRATIONS_DIR, deploy, status, yoyo_url
from leaderboard.stores.postgres import AsyncPostgres, PostgresStore
from leaderboard.stores.redis import AsyncBodies
from pipelines.steps import publish_period
from tests.conftest import REDIS_URL
from tests.named_entries import METADATA, expected_entry, named_table, publish_named

FIRST, LAST = dt.date(2026, 3, 27), dt.date(2026, 4, 2)  # a month boundary inside one ISO week


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_migrations_apply_on_an_empty_database_and_are_idempotent(database_url, settings, monkeypatch):
    assert [s.applied for s in status(database_url)] == [False] * len(list(MIGRATIONS_DIR.glob("*.sql")))
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["migrate", "status"])
    assert result.exit_code == 1 and "pending  0001.initial-schema" in result.output
    assert f"applied {len(list(MIGRATIONS_DIR.glob('*.sql')))} migration(s)" in cli("migrate", "deploy")
    assert "up to date" in cli("migrate", "deploy")
    listed = cli("migrate", "status")
    assert "applied  0001.initial-schema" in listed and "applied  0004.entry-names" in listed
    assert "applied  0009.seasons" in listed
    assert deploy(database_url) == []
    with psycopg.connect(database_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {
        "leaderboard_periods",
        "leaderboard_ingest_stats",
        "leaderboard_board_config",
        "leaderboard_refresh_requests",
        "leaderboard_rankings_all_time",
        "leaderboard_settlements",
        "leaderboard_settlement_history",
        "leaderboard_admin_audit",
        "leaderboard_webhook_outbox",
        "leaderboard_exclusions",
    } <= tables


@pytest.fixture
def published(settings, migrated_url, redis_prefix, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    get_settings.cache_clear()
    cli(
        "generate",
        "--start",
        str(FIRST),
        "--days",
        "7",
        "--users",
        "120",
        "--events-per-day",
        "800",
        "--dup-rate",
        "0.02",
        "--bad-rate",
        "0.01",
    )
    cli("materialize", "--start", str(FIRST), "--end", str(LAST))
    return get_settings()


def periods_published(boards):
    out = [period_of("daily", FIRST + dt.timedelta(days=i)) for i in range(7)]
    out += [
        period_of("weekly", FIRST),
        period_of("weekly", LAST),
        period_of("monthly", FIRST),
        period_of("monthly", LAST),
        period_of("all_time", LAST, boards.start_date),
    ]
    return out


def test_postgres_rows_equal_the_lake_and_redis_top_equals_postgres(published):
    boards, lake = current_boards(), Lake(published.LEADERBOARD_LAKE_DIR)
    stores = Stores.from_settings(published)
    client = redis.Redis.from_url(REDIS_URL)
    cols = ["user_id", "rank", "score", "previous_rank", "rank_change", "event_count"]
    with psycopg.connect(published.DATABASE_URL) as conn:
        for period in periods_published(boards):
            for board in boards.with_period(period.type):
                snap = read_snapshot(lake, board.id, period.type, period.key)
                assert snap is not None and snap.frame.height > 0
                rows = conn.execute(
                    f"SELECT {', '.join(cols)} FROM leaderboard_rankings WHERE board_id = %s AND period_type = %s "
                    "AND period_key = %s ORDER BY rank",
                    (board.id, period.type, period.key),
                ).fetchall()
                assert rows == snap.frame.select(cols).rows(), (board.id, period.key)
                reg = conn.execute(
                    "SELECT entries, status FROM leaderboard_periods WHERE board_id = %s AND "
                    "period_type = %s AND period_key = %s",
                    (board.id, period.type, period.key),
                ).fetchone()
                assert reg == (len(rows), "final")
                body = json.loads(client.get(stores.keys.rankings(board.id, period.type, period.key)))
                top = PostgresStore(published.DATABASE_URL).snapshot(board.id, period.type, period.key,
                                                                      board.display_limit or 30).frame  # fmt: skip
                assert [(e["user_id"], e["rank"]) for e in body["entries"]] == top.select("user_id", "rank").rows()
                assert body["total"] == len(rows) and body["period_key"] == period.key
        stats = conn.execute(
            "SELECT sum(read), sum(counted + duplicates + quarantined) FROM leaderboard_ingest_stats"
        ).fetchone()
        assert stats[0] == stats[1] > 0
        # publishing the same range again leaves no duplicates
        before = conn.execute("SELECT count(*) FROM leaderboard_rankings").fetchone()[0]
    cli("materialize", "--start", str(FIRST), "--end", str(LAST))
    with psycopg.connect(published.DATABASE_URL) as conn:
        assert conn.execute("SELECT count(*) FROM leaderboard_rankings").fetchone()[0] == before
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM leaderboard_rankings GROUP BY board_id, "
            "period_type, period_key, user_id HAVING count(*) > 1) d"
        ).fetchone()[0]
        assert dupes == 0
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'p' AND relname LIKE 'leaderboard_rankings_daily_%'"
            )
        }
        assert parts == {"leaderboard_rankings_daily_2026_03", "leaderboard_rankings_daily_2026_04"}
        # one leaf table per published period: the old leaves were swapped out, not kept
        leaves = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'leaderboard_rankings_daily_2026_03'::regclass"
        ).fetchone()[0]
        assert leaves == 4  # days 2026-03-27..30: the 31st ends on 04-01, in the April partition


def test_cache_rebuild_restores_redis_after_flushdb(published, monkeypatch):
    db15 = REDIS_URL.rsplit("/", 1)[0] + "/13"  # a database of its own: FLUSHDB must not hit others
    monkeypatch.setenv("REDIS_URL", db15)
    get_settings.cache_clear()
    client = redis.Redis.from_url(db15)
    client.flushdb()
    out = cli("cache", "rebuild")
    stores = Stores.from_settings(get_settings())
    boards = current_boards()
    key = stores.keys.rankings("points", "weekly", period_of("weekly", LAST).key)
    body = json.loads(client.get(key))
    assert body["entries"][0]["rank"] == 1 and "rebuilt" in out
    assert client.get(stores.keys.current("points", "all_time")) == b"all"
    users = client.hgetall(stores.keys.users("points", "all_time", "all"))
    assert len(users) == body["total"] or len(users) > 0
    # the hot all-time period answers by rank too, with its header; every period list is whole
    ranks = client.hgetall(stores.keys.ranks("points", "all_time", "all"))
    ids = [u for n in range(len(ranks) - 1) for u in json.loads(ranks[str(n).encode()])]
    assert json.loads(ranks[b"header"])["total"] == len(users) == len(ids)
    assert [json.loads(users[u.encode()])["rank"] for u in ids] == list(range(1, len(ids) + 1))
    record = stores.record
    assert record is not None
    for board in boards.boards:
        for period_type in board.periods:
            listed = [k.decode() for k in client.zrange(stores.keys.periods(board.id, period_type), 0, -1, desc=True)]
            assert listed == record.published_keys(board.id, period_type)
    client.flushdb()
    publishing = f"{key}:staging:0123abcd"  # a publish in flight: its keys are renamed into place at the end
    client.set(publishing, b"{}")
    cli("cache", "rebuild", "--board", "points")
    assert client.exists(publishing), "a rebuild must not delete a live publish's staging keys"
    assert client.exists(key) and not client.exists(
        stores.keys.rankings("referrals", "weekly", period_of("weekly", LAST).key)
    )
    assert len(boards.boards) > 1
    client.flushdb()


def _table(users: list[str], scores: list[float]) -> pl.DataFrame:
    at = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    n = len(users)
    return pl.DataFrame(
        {
            "board_id": ["points"] * n,
            "user_id": users,
            "score": scores,
            "event_count": [1] * n,
            "reached_at": [at] * n,
            "rank": list(range(1, n + 1)),
            "previous_rank": [None] * n,
            "rank_change": [None] * n,
        },
        schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
    )


def test_readers_see_old_or_new_standings_never_a_mix(settings, migrated_url, redis_prefix):
    boards = current_boards()
    lake = Lake(settings.LEADERBOARD_LAKE_DIR)
    stores = Stores(lake, migrated_url, REDIS_URL, redis_prefix)
    period = period_of("daily", dt.date(2026, 5, 1))
    old = _table([f"old-{i}" for i in range(3000)], [float(3000 - i) for i in range(3000)])
    new = _table([f"new-{i}" for i in range(2000)], [float(2000 - i) for i in range(2000)])
    publish_period(lake, boards, period, old, "r-old", stores)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT user_id FROM leaderboard_rankings WHERE board_id = 'points' AND "
                    "period_type = 'daily' AND period_key = %s",
                    (period.key,),
                ).fetchall()
                kinds = {r[0].split("-")[0] for r in rows}
                seen.append((len(rows), ",".join(sorted(kinds))))

    api_seen: list[tuple[int, int, str]] = []

    def api_reader() -> None:
        """The API's Postgres read: the registry's entry count and the rows must be one publish's."""

        async def poll() -> None:
            async with AsyncConnectionPool(migrated_url, min_size=1, max_size=1) as pool:
                store = AsyncPostgres(pool)
                while not stop.is_set():
                    found = await store.snapshot("points", "daily", period.key, 5000)
                    assert found is not None
                    header, frame = found.header, found.frame
                    kinds = ",".join(sorted({u.split("-")[0] for u in frame["user_id"]}))
                    api_seen.append((header["total"], frame.height, kinds))

        asyncio.run(poll())

    threads = [threading.Thread(target=reader), threading.Thread(target=api_reader)]
    for thread in threads:
        thread.start()
    for i in range(6):
        publish_period(lake, boards, period, new if i % 2 == 0 else old, f"r-{i}", stores)
    stop.set()
    for thread in threads:
        thread.join()
    assert seen and set(seen) <= {(3000, "old"), (2000, "new")}, set(seen)
    assert api_seen and set(api_seen) <= {(3000, 3000, "old"), (2000, 2000, "new")}, set(api_seen)

    # a publish killed after its COPY leaves the previous standings in place, in Postgres and Redis
    client = redis.Redis.from_url(REDIS_URL)
    before = client.get(stores.keys.rankings("points", "daily", period.key))

    def boom() -> None:
        raise RuntimeError("killed after COPY")

    header = {
        "board_id": "points",
        "period_type": "daily",
        "period_key": period.key,
        "period_start": "2026-05-01T00:00:00+00:00",
        "period_end": "2026-05-02T00:00:00+00:00",
        "published_at": "2026-05-02T00:00:00+00:00",
        "run_id": "x",
    }
    snapshot = new.with_columns(
        pl.lit("daily").alias("period_type"),
        pl.lit(period.key).alias("period_key"),
        pl.lit(dt.datetime(2026, 5, 1, tzinfo=dt.UTC)).alias("period_start"),
        pl.lit(dt.datetime(2026, 5, 2, tzinfo=dt.UTC)).alias("period_end"),
        pl.lit(dt.datetime(2026, 5, 2, tzinfo=dt.UTC)).alias("published_at"),
        pl.lit("x").alias("run_id"),
    )
    with psycopg.connect(migrated_url, autocommit=True) as conn:  # no open transaction to block the swap
        current = conn.execute(
            "SELECT count(*), min(user_id) FROM leaderboard_rankings WHERE period_key = %s", (period.key,)
        ).fetchone()
        with pytest.raises(RuntimeError, match="killed"):
            postgres_publish.publish(migrated_url, snapshot, [header], "final", before_commit=boom)
        assert (
            conn.execute(
                "SELECT count(*), min(user_id) FROM leaderboard_rankings WHERE period_key = %s", (period.key,)
            ).fetchone()
            == current
        )
        assert _unattached_leaves(conn) == []  # the killed publish dropped the table it had loaded
    assert client.get(stores.keys.rankings("points", "daily", period.key)) == before


def test_a_users_neighbours_come_from_one_publish(redis_prefix):
    """While a hot period is republished over and over (two tables that share no user id), every
    /me read from Redis gives an entry, neighbours and header of one publish: the neighbours' ids
    are all of one table, their ranks contiguous around the user's, and the total that table's."""
    keys = cache.CacheKeys(redis_prefix)
    client = redis.Redis.from_url(REDIS_URL)
    tables = {
        "a": _table([f"a-{i}" for i in range(3000)], [float(3000 - i) for i in range(3000)]),
        "b": _table([f"b-{i}" for i in range(2000)], [float(i) for i in range(2000)]),
    }
    end = dt.datetime(2026, 5, 2, tzinfo=dt.UTC)

    def body(kind: str) -> dict:
        return {"board": "points", "period": "daily", "period_key": "2026-05-01", "period_start": "2026-05-01T00:00:00+00:00",
                "period_end": end.isoformat(), "status": "final", "published_at": f"2026-05-02T00:00:0{'ab'.index(kind)}+00:00",
                "total": tables[kind].height, "entries": []}  # fmt: skip

    def publish(kind: str) -> None:
        cache.publish(client, keys, "points", "daily", "2026-05-01", body(kind), tables[kind], False,
                      {"2026-04-30": end - dt.timedelta(days=1)})  # fmt: skip

    publish("a")
    stop = threading.Event()
    seen: list[tuple[str, int, int]] = []

    def republish() -> None:
        while not stop.is_set():
            for kind in ("b", "a"):
                publish(kind)

    async def read() -> None:
        reader = aioredis.Redis.from_url(REDIS_URL)
        bodies = cache.AsyncBodies(reader, keys)
        try:
            for i in range(300):
                user = ("a-", "b-")[i % 2] + str(i * 7 % 2000)
                found = await bodies.around("points", "daily", "2026-05-01", user, 3)
                if found is None or found.entry is None:
                    continue  # the other table's publish holds the period now
                kinds = {e["user_id"][0] for e in found.neighbors}
                ranks = [e["rank"] for e in found.neighbors]
                assert kinds == {user[0]} and found.entry["user_id"] == user, found
                assert ranks == list(range(ranks[0], ranks[0] + len(ranks))) and found.entry["rank"] in ranks
                assert found.header["total"] == {"a": 3000, "b": 2000}[user[0]]
                seen.append((user[0], found.entry["rank"], len(ranks)))
        finally:
            await reader.aclose()

    thread = threading.Thread(target=republish)
    thread.start()
    try:
        asyncio.run(read())
    finally:
        stop.set()
        thread.join()
    assert {k for k, _, _ in seen} == {"a", "b"}, seen[:5]  # both publishes were read, never a mix

    async def around(user: str, k: int) -> list[int]:
        reader = aioredis.Redis.from_url(REDIS_URL)
        try:
            found = await cache.AsyncBodies(reader, keys).around("points", "daily", "2026-05-01", user, k)
        finally:
            await reader.aclose()
        assert found is not None and found.entry is not None and found.entry["user_id"] == user
        return [e["rank"] for e in found.neighbors]

    publish("a")  # alone now: a rank block boundary, the last rank, the first
    assert asyncio.run(around("a-99", 3)) == [97, 98, 99, 100, 101, 102, 103]
    assert asyncio.run(around("a-2999", 50)) == list(range(2950, 3001))
    assert asyncio.run(around("a-0", 0)) == [1]
    assert [k.decode() for k in client.zrange(keys.periods("points", "daily"), 0, -1, desc=True)] == [
        "2026-05-01", "2026-04-30"]  # fmt: skip
    # not hot any more: the per-user and per-rank hashes go with the next publish
    cache.publish(client, keys, "points", "daily", "2026-05-01", body("a"), None, False)
    assert not client.exists(keys.users("points", "daily", "2026-05-01"), keys.ranks("points", "daily", "2026-05-01"))


def _unattached_leaves(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'lr\\_%' AND NOT relispartition ORDER BY 1"
    )]  # fmt: skip


def test_a_large_period_loads_over_several_connections_and_orphans_are_swept(
    settings, migrated_url, redis_prefix, monkeypatch
):
    """The parallel load gives the same rows as the data; a leaf left by a killed publisher is
    dropped by the next publish, while one whose publisher still runs (lock held) is kept."""
    monkeypatch.setattr(postgres_publish, "PARALLEL_LOAD_ROWS", 100)  # every period here counts as large
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    period = period_of("daily", dt.date(2026, 5, 3))
    table = _table([f"u{i:05d}" for i in range(5001)], [float(5001 - i) for i in range(5001)])
    with psycopg.connect(migrated_url, autocommit=True) as conn, psycopg.connect(migrated_url, autocommit=True) as live:
        for name, lock in (("lr_daily_dead_1", "daily|2026-05-01"), ("lr_weekly_live_1", "weekly|2026-W18"),
                           ("lr_daily_detached_1", None)):  # fmt: skip
            conn.execute(f"CREATE TABLE {name} (LIKE leaderboard_rankings)")
            if lock:
                conn.execute(f"COMMENT ON TABLE {name} IS '{lock}'")
        live.execute("SELECT pg_advisory_lock(hashtext('weekly|2026-W18'))")  # a publisher still at work
        publish_period(lake, boards, period, table, "r-big", Stores(lake, migrated_url, None, redis_prefix))
        # the table an operator detached (no publisher's comment) is not the sweep's to drop
        assert _unattached_leaves(conn) == ["lr_daily_detached_1", "lr_weekly_live_1"]
        publish_period(lake, boards, period, table, "r-again", Stores(lake, migrated_url, None, redis_prefix))
        assert conn.execute(  # the leaf attached by the first publish carries no lock comment to be swept by
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'lr\\_%' AND relispartition "
            "AND obj_description(oid, 'pg_class') IS NOT NULL"
        ).fetchone() == (0,)
        got = pl.DataFrame(
            conn.execute(
                "SELECT user_id, rank, score FROM leaderboard_rankings WHERE board_id = 'points' "
                "AND period_type = 'daily' AND period_key = %s ORDER BY rank", (period.key,)
            ).fetchall(),
            schema={"user_id": pl.String, "rank": pl.Int64, "score": pl.Float64}, orient="row",
        )  # fmt: skip
        assert got.equals(table.select("user_id", "rank", "score"))
        assert conn.execute(
            "SELECT entries FROM leaderboard_periods WHERE board_id = 'points' AND period_key = %s", (period.key,)
        ).fetchone() == (5001,)
        # The period's constant columns, added after the load, read back on every row as the registry has them...
        assert conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE (r.period_start, r.period_end, r.published_at, r.run_id) "
            "= (p.period_start, p.period_end, p.published_at, p.run_id)) FROM leaderboard_rankings r "
            "JOIN leaderboard_periods p USING (board_id, period_type, period_key) "
            "WHERE period_type = 'daily' AND period_key = %s", (period.key,)
        ).fetchone() == (table.height, table.height)  # fmt: skip
        # ...and the leaf keeps each once (a "missing value"), not in every row
        assert conn.execute(
            "SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute WHERE atthasmissing AND attrelid = "
            "(SELECT oid FROM pg_class WHERE relname LIKE %s AND relkind = 'r' AND relispartition)",
            ("lr\\_daily\\_" + period.key.replace("-", "\\_") + "\\_%",),
        ).fetchone() == (sorted(postgres_publish.PERIOD_COLUMNS),)


def test_unreachable_servers_fail_clearly_and_publish_nothing(settings, migrated_url, redis_prefix, tmp_path):
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    period = period_of("daily", dt.date(2026, 5, 1))
    table = _table(["a", "b"], [2.0, 1.0])
    with pytest.raises(errors.StoreUnavailable, match=r"cannot connect to Postgres at 127\.0\.0\.1:1"):
        publish_period(lake, boards, period, table, "r", Stores(lake, "postgresql://postgres@127.0.0.1:1/x", None))
    with pytest.raises(errors.StoreUnavailable, match=r"cannot reach Redis at 127\.0\.0\.1:1"):
        publish_period(
            lake, boards, period, table, "r", Stores(lake, migrated_url, "redis://127.0.0.1:1/0", redis_prefix)
        )
    assert read_snapshot(lake, "points", "daily", period.key) is None
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM leaderboard_periods").fetchone()[0] == 0


def test_hot_keys_are_the_current_and_previous_periods():
    assert cache.hot_keys("weekly", dt.date(2027, 1, 4)) == ("2027-W01", "2026-W53")
    assert cache.hot_keys("daily", dt.date(2026, 3, 1)) == ("2026-03-01", "2026-02-28")
    assert cache.hot_keys("all_time", dt.date(2026, 3, 1)) == ("all",)


def _state(url: str, prefix: str, lake_root) -> dict:
    client = redis.Redis.from_url(REDIS_URL)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT period_type, period_key, count(*) FROM leaderboard_rankings GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        registry = conn.execute("SELECT count(*) FROM leaderboard_periods").fetchone()[0]
    return {
        "rows": rows,
        "registry": registry,
        "keys": sorted(k.decode() for k in client.scan_iter(match=f"{prefix}:*")),
        "files": sorted(str(p.relative_to(lake_root)) for p in lake_root.rglob("*.parquet")),
    }


def test_retention_drops_exactly_the_expired_periods(published):
    import dagster as dg

    from pipelines.definitions import build_defs

    s = published
    lake_root = s.LEADERBOARD_LAKE_DIR
    now = "2026-07-15T00:00:00+00:00"  # RETENTION_DAYS=90: cutoff 2026-04-16
    before = _state(s.DATABASE_URL, s.REDIS_KEY_PREFIX, lake_root)
    out = cli("retention", "--dry-run", "--now", now)
    assert "would remove" in out and "drop partition leaderboard_rankings_daily_2026_03" in out
    assert "points           daily    2026-03-27" in out
    assert _state(s.DATABASE_URL, s.REDIS_KEY_PREFIX, lake_root) == before  # the dry run changed nothing

    defs = build_defs(s)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("retention_job").execute_in_process(
            instance=instance, run_config={"ops": {"remove_expired_periods": {"config": {"now": now}}}}
        )
    assert result.success
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = output.event_specific_data.metadata
    ids = [b.id for b in current_boards().boards]
    assert metadata["periods"].value == len(ids) * (7 + 2 + 1)  # each board: 7 days, 2 weeks, March

    after = _state(s.DATABASE_URL, s.REDIS_KEY_PREFIX, lake_root)
    assert {(t, k) for t, k, _ in after["rows"]} == {("monthly", "2026-04"), ("all_time", "all")}
    assert after["registry"] == len(ids) * 2
    assert all(
        ":MONTHLY:2026-04:" in k or ":ALL_TIME:" in k or k.endswith(":MONTHLY:periods") for k in after["keys"]
    ), after["keys"]
    assert any(":MONTHLY:2026-04:rankings" in k for k in after["keys"])
    client = redis.Redis.from_url(REDIS_URL)
    listed = {
        k.removeprefix(f"{s.REDIS_KEY_PREFIX}:"): client.zrange(k, 0, -1)
        for k in after["keys"]
        if k.endswith(":periods")
    }
    assert listed == {f"{b}:{t}:periods": [k] for b in ids
                      for t, k in (("MONTHLY", b"2026-04"), ("ALL_TIME", b"all"))}  # fmt: skip
    standings = {f for f in after["files"] if f.startswith("standings/")}
    assert standings == {
        f for f in before["files"] if f.startswith("standings/") and ("/monthly/2026-04" in f or "/all_time/" in f)
    }
    assert {f for f in after["files"] if f.startswith("daily_scores/")} == {
        f for f in before["files"] if f.startswith("daily_scores/")
    }
    assert not any(f.startswith("clean_events/") for f in after["files"])
    with psycopg.connect(s.DATABASE_URL) as conn:
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'p' AND relname LIKE 'leaderboard_rankings_%_20%'"
            )
        }
    assert "leaderboard_rankings_daily_2026_03" not in parts and "leaderboard_rankings_daily_2026_04" in parts


def test_dagster_instance_on_postgres_records_runs_and_materializations(settings, migrated_url, monkeypatch):
    import shutil

    from tests.conftest import ROOT

    home = settings.DAGSTER_HOME
    home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    get_settings.cache_clear()
    cli("generate", "--start", "2026-05-01", "--days", "1", "--users", "20", "--events-per-day", "200")
    cli("materialize", "--start", "2026-05-01", "--end", "2026-05-01")
    with psycopg.connect(migrated_url) as conn:
        runs = conn.execute("SELECT pipeline_name, status FROM runs ORDER BY create_timestamp").fetchall()
        assert ("daily_job", "SUCCESS") in runs and ("all_time_job", "SUCCESS") in runs
        mats = conn.execute(
            "SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).fetchall()
        assert ('["clean_events"]', "2026-05-01") in mats and ('["all_time_rankings"]', None) in mats
        # and the pipeline published to the same database
        assert conn.execute("SELECT count(*) FROM leaderboard_periods").fetchone()[0] > 0


def test_database_url_parameters_pass_through(settings, migrated_url):
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    period = period_of("daily", dt.date(2026, 5, 1))
    table = _table(["a", "b"], [2.0, 1.0])
    # sslmode reaches the driver as written: this server has no TLS, so "require" is refused ...
    with pytest.raises(errors.StoreUnavailable, match="SSL"):
        publish_period(lake, boards, period, table, "r", Stores(lake, migrated_url + "?sslmode=require"))
    # ... and "disable" works
    publish_period(
        lake, boards, period, table, "r", Stores(lake, migrated_url + "?sslmode=disable&application_name=lb")
    )
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT entries FROM leaderboard_periods WHERE board_id = 'points'").fetchone() == (2,)


def test_materialize_names_the_unreachable_server(settings, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nope")
    get_settings.cache_clear()
    cli("generate", "--start", "2026-05-01", "--days", "1", "--users", "5", "--events-per-day", "20")
    result = CliRunner().invoke(main, ["materialize", "--start", "2026-05-01", "--end", "2026-05-01"])
    assert result.exit_code != 0
    assert "cannot connect to Postgres at 127.0.0.1:1" in result.output


def test_an_unmigrated_database_says_to_run_migrations(settings, database_url):
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    with pytest.raises(errors.SchemaMissing, match="run `leaderboard migrate deploy`"):
        publish_period(lake, boards, period_of("daily", dt.date(2026, 5, 1)), _table(["a"], [1.0]), "r",
                       Stores(lake, database_url))  # fmt: skip


@pytest.mark.parametrize(
    "window_rows, key_bits, min_group_rows",
    [(16_384, 62, 1), (2, 62, 1), (2, 0, 1), (16_384, 62, 10**9), (2, 0, 10**9)],
    ids=["one-window", "windows", "struct-key", "joined", "joined-windows"],
)
def test_binary_copy_matches_the_table_and_round_trips_every_row_shape(
    migrated_url, monkeypatch, window_rows, key_bits, min_group_rows
):
    """postgres_publish.USER_COLUMNS go by binary COPY, which needs each type to be the column's exactly; and
    every shape of row (NULLs, NULL text and empty text, text lengths, multi-byte text, timestamps
    before 2000) comes back, whether a window holds one shape or several, with shapes keyed by
    packed lengths or not, grouped by shape or joined row by row."""
    monkeypatch.setattr(pgcopy, "WINDOW_ROWS", window_rows)
    monkeypatch.setattr(pgcopy, "KEY_BITS", key_bits)
    monkeypatch.setattr(pgcopy, "MIN_GROUP_ROWS", min_group_rows)
    names = {"int4": "integer", "int8": "bigint", "float8": "double precision",
             "timestamptz": "timestamp with time zone", "text": "text"}  # fmt: skip
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        table_types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'leaderboard_rankings'"
        ).fetchall())  # fmt: skip
        assert {c: table_types[c] for c in postgres_publish.USER_COLUMNS} == {
            c: names[t] for c, t in postgres_publish.USER_COLUMNS.items()
        }

        utc = dt.UTC
        frame = pl.DataFrame(
            {
                "board_id": ["points", "high_score", "points", "p", "points"],
                "user_id": ["u1", "ünïcode-👾", "u3", "a" * 64, "u1"],
                "rank": [1, 2, 3, 2_000_000_000, 5],
                "score": [1e308, -0.0, 2.5, -7.125, 0.0],
                "previous_rank": [None, 4, None, 1, None],
                "rank_change": [None, 2, None, -1_999_999_999, None],
                "event_count": [1, 2**40, 3, 0, 5],
                "reached_at": [dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=utc),
                               dt.datetime(2026, 11, 26, 12, 0, 0, 1, tzinfo=utc),
                               dt.datetime(2000, 1, 1, tzinfo=utc), dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=utc),
                               dt.datetime(1970, 1, 1, tzinfo=utc)],
                "display_name": [None, "", "Zoë 👾", "a" * 64, "x"],
                "metadata": [METADATA[1], None, "{}", METADATA[3], '{"a": 1}'],
            },
            schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
        )  # fmt: skip
        columns = ", ".join(postgres_publish.USER_COLUMNS)
        conn.execute(f"CREATE TEMP TABLE t AS SELECT {columns} FROM leaderboard_rankings LIMIT 0")
        for part in (frame, frame.clear()):
            conn.execute("TRUNCATE t")
            with conn.cursor().copy(f"COPY t ({columns}) FROM STDIN (FORMAT binary)") as copy:
                for chunk in pgcopy.encode(part, postgres_publish.USER_COLUMNS):
                    copy.write(chunk)
            back = conn.execute(f"SELECT {columns} FROM t ORDER BY rank").fetchall()
            assert back == part.sort("rank").rows()
    for bad, message in ((pl.lit(2**31), r"'rank': 2147483648\.\.2147483648 does not fit int4"),
                         (pl.lit(1.7), "'rank' must be integers for int4, got Float64")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            list(pgcopy.encode(frame.with_columns(rank=bad), postgres_publish.USER_COLUMNS))
    with pytest.raises(ValueError, match="'user_id' must be strings for text, got Int32"):
        list(pgcopy.encode(frame.with_columns(user_id=pl.lit(1, pl.Int32)), postgres_publish.USER_COLUMNS))
    with pytest.raises(ValueError, match="column 'rank': no binary COPY encoding for 'int2'"):
        list(pgcopy.encode(frame, {"rank": "int2"}))


def _redis_values(prefix: str, period_type: str, key: str) -> dict[str, dict]:
    client = redis.Redis.from_url(REDIS_URL)
    raw = client.hgetall(cache.CacheKeys(prefix).users("points", period_type, key))
    client.close()
    return {u.decode(): json.loads(v) for u, v in raw.items()}


def test_names_and_metadata_round_trip_through_every_store(settings, migrated_url, redis_prefix):
    """One publish of a hot period with names and metadata: Postgres keeps the metadata text
    byte for byte, and every read (Postgres rows and their page, the lake snapshot, Redis's
    body, `:users` by around and by ids, a rebuild from Postgres) gives the same entries."""
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    stores = Stores(lake, migrated_url, REDIS_URL, redis_prefix)
    now = dt.datetime.now(dt.UTC)
    period = period_of("daily", now.astimezone(boards.tz).date())  # today's: Redis keeps its per-user hash
    table = named_table("points", 45, now - dt.timedelta(minutes=5))
    publish_named(stores, boards, period, table, now)
    expected = [expected_entry(r) for r in table.iter_rows(named=True)]

    with psycopg.connect(migrated_url) as conn:
        stored = conn.execute(
            "SELECT user_id, display_name, metadata FROM leaderboard_rankings WHERE board_id = 'points' "
            "AND period_key = %s ORDER BY rank",
            (period.key,),
        ).fetchall()
    assert stored == table.select("user_id", "display_name", "metadata").rows()  # the text as published
    assert (
        PostgresStore(migrated_url).snapshot("points", "daily", period.key).body(boards.tz, 45)["entries"] == expected
    )
    lake_snapshot = read_snapshot(lake, "points", "daily", period.key)
    assert lake_snapshot is not None and lake_snapshot.body(boards.tz, 45)["entries"] == expected
    client = redis.Redis.from_url(REDIS_URL)
    body = json.loads(client.get(stores.keys.rankings("points", "daily", period.key)))
    assert body["entries"] == expected[:30]  # the board's display limit
    assert list(body["entries"][0]["metadata"]) == ["z", "a", "emoji"]  # key order as published
    assert body["entries"][0]["metadata"]["emoji"] == "👾"

    # `:users` values carry the two keys only when not null, metadata as the object itself
    values = _redis_values(redis_prefix, "daily", period.key)
    assert set(values["u015"]) == {"rank", "score", "previous_rank", "rank_change"}  # neither name nor metadata
    assert values["u001"]["display_name"] == "" and values["u001"]["metadata"] == {
        "z": 1,
        "a": {"nested": [1, 2.5, None, True]},
        "emoji": "👾",
    }

    ids = ["u040", "nobody", "u002", "u015", "u001"]

    async def reads() -> dict[str, object]:
        redis_async = aioredis.Redis.from_url(REDIS_URL)
        try:
            async with AsyncConnectionPool(migrated_url, min_size=1, max_size=1) as pool:
                bodies = AsyncBodies(redis_async, stores.keys)
                return {
                    "redis": await bodies.users("points", "daily", period.key, ids),
                    "around": await bodies.around("points", "daily", period.key, "u020", 2),
                    "postgres": await AsyncPostgres(pool).users("points", "daily", period.key, ids),
                    "lake": await AsyncLake(lake).users("points", "daily", period.key, ids),
                }
        finally:
            await redis_async.aclose()

    found = asyncio.run(reads())
    wanted = [expected[0], expected[1], expected[14], expected[39]]  # u001, u002, u015, u040: rank order
    assert found["redis"].entries == wanted and found["redis"].absent == ["nobody"]
    assert found["around"].neighbors == expected[17:22]
    for name in ("postgres", "lake"):
        assert found[name].body(boards.tz, 45)["entries"] == wanted, name

    # a rebuild from Postgres writes the same values again
    before = client.hgetall(stores.keys.users("points", "daily", period.key))
    client.delete(stores.keys.users("points", "daily", period.key), stores.keys.rankings("points", "daily", period.key))
    assert cache.rebuild(PostgresStore(migrated_url), client, stores.keys, boards, "points", now) > 0
    assert client.hgetall(stores.keys.users("points", "daily", period.key)) == before
    assert json.loads(client.get(stores.keys.rankings("points", "daily", period.key)))["entries"] == expected[:30]
    client.close()


def test_a_frame_without_names_is_published_and_read_with_nulls(settings, migrated_url, redis_prefix):
    """Code that publishes the standings columns without `display_name` and `metadata` still
    publishes: Postgres stores NULLs, Redis's values are as before names existed, the lake file
    holds null columns, and every read gives nulls."""
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    stores = Stores(lake, migrated_url, REDIS_URL, redis_prefix)
    now = dt.datetime.now(dt.UTC)
    period = period_of("daily", now.astimezone(boards.tz).date())
    table = _table(["a", "b", "c"], [3.0, 2.0, 1.0])
    assert "display_name" not in table.columns
    publish_period(lake, boards, period, table, "r", stores, now=now)
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute(
            "SELECT count(*), count(display_name), count(metadata) FROM leaderboard_rankings WHERE period_key = %s",
            (period.key,),
        ).fetchone() == (3, 0, 0)
    assert pl.read_parquet(lake.snapshot("points", "daily", period.key)).select(
        "display_name", "metadata"
    ).null_count().row(0) == (3, 3)
    assert {frozenset(v) for v in _redis_values(redis_prefix, "daily", period.key).values()} == {
        frozenset({"rank", "score", "previous_rank", "rank_change"})
    }
    pages = [
        PostgresStore(migrated_url).snapshot("points", "daily", period.key).body(boards.tz, 10),
        read_snapshot(lake, "points", "daily", period.key).body(boards.tz, 10),
        json.loads(redis.Redis.from_url(REDIS_URL).get(stores.keys.rankings("points", "daily", period.key))),
    ]
    for page in pages:
        assert [(e["user_id"], e["display_name"], e["metadata"]) for e in page["entries"]] == [
            ("a", None, None),
            ("b", None, None),
            ("c", None, None),
        ]


def test_rows_published_before_migration_0004_read_as_nulls_and_the_period_republishes(database_url, tmp_path):
    """A database migrated to 0003 holding a published period: 0004 adds the columns without
    touching its rows, which then read as NULL names; the period's next publish swaps in a leaf
    with names."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(database_url))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS_DIR))[:3]))
    start, end = dt.datetime(2026, 5, 1, tzinfo=dt.UTC), dt.datetime(2026, 5, 2, tzinfo=dt.UTC)
    with psycopg.connect(database_url) as conn:
        part = conn.execute("SELECT leaderboard_ensure_partition('daily', %s)", (end,)).fetchone()[0]
        conn.execute(f"CREATE TABLE lr_before PARTITION OF {part} FOR VALUES IN ('2026-05-01')")
        conn.execute(
            "INSERT INTO leaderboard_rankings (board_id, period_type, period_key, period_start, period_end, user_id, "
            "rank, score, event_count, reached_at, published_at, run_id) VALUES "
            "('points', 'daily', '2026-05-01', %s, %s, 'old', 1, 5, 1, %s, %s, 'r0')",
            (start, end, start, end),
        )
        conn.execute(
            "INSERT INTO leaderboard_periods VALUES ('points', 'daily', '2026-05-01', %s, %s, 'final', 1, %s, 'r0', '')",
            (start, end, end),
        )
    assert deploy(database_url)[0] == "0004.entry-names"
    before = PostgresStore(database_url).snapshot("points", "daily", "2026-05-01")
    assert before is not None and before.body(dt.UTC, 10)["entries"] == [
        {"rank": 1, "user_id": "old", "score": 5, "previous_rank": None, "rank_change": None,
         "display_name": None, "metadata": None}
    ]  # fmt: skip

    boards = current_boards()
    stores = Stores(Lake(tmp_path / "lake"), database_url)
    publish_named(stores, boards, period_of("daily", dt.date(2026, 5, 1)), named_table("points", 4, start), end)
    after = PostgresStore(database_url).snapshot("points", "daily", "2026-05-01")
    assert after is not None
    assert after.body(dt.UTC, 10)["entries"] == [
        expected_entry(r) for r in named_table("points", 4, start).iter_rows(named=True)
    ]


def test_hiredis_packing_sends_the_bytes_redis_py_would():
    """The API's Redis connections pack text commands with hiredis: byte for byte what redis-py
    packs, and a command with a number or a multi-word name is left to redis-py."""
    plain = aioredis.Connection()
    packed = cache.hiredis_packing(aioredis.Connection)()
    assert type(packed).__name__ == "HiredisPackedConnection"
    for args in (("HMGET", "k:users", "u1", "ünï", b"\x00\xff", ""), ("MULTI",), ("SET", "k", "v", "EX", 5),
                 ("CONFIG GET", "maxmemory"), ("ZADD", "k", 1.5, "m")):  # fmt: skip
        assert b"".join(packed.pack_command(*args)) == b"".join(plain.pack_command(*args)), args
    commands = [("MULTI",), ("HMGET", "k", *[f"user-{i}" for i in range(200)]), ("EXEC",)]
    assert b"".join(packed.pack_commands(commands)) == b"".join(plain.pack_commands(commands))


def test_show_prints_a_name_column_blank_without_a_name(settings):
    """`leaderboard show` from a lake snapshot with names: a name column, blank where the entry
    has none, one line per entry even for a name with a newline, a long name cut."""
    boards, lake = current_boards(), Lake(settings.LEADERBOARD_LAKE_DIR)
    at = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    table = named_table("points", 6, at).with_columns(
        pl.Series("display_name", ["Zoë 👾", "two\nlines", None, "n" * 40, "", "Bo"])
    )
    publish_named(Stores(lake), boards, period_of("daily", dt.date(2026, 5, 1)), table, at + dt.timedelta(days=1))
    lines = cli("show", "points", "daily", "--at", "2026-05-01").splitlines()
    assert lines[1].split() == ["rank", "user", "name", "score", "prev", "move"]
    rows = lines[2:]
    assert len(rows) == 6
    assert rows[0].split()[:3] == ["1", "u001", "Zoë"] and "two lines" in rows[1]
    assert rows[2].split()[:3] == ["3", "u003", "997"]  # no name: the score follows the user
    assert ("n" * 23 + "…") in rows[3] and "n" * 24 not in rows[3]
    assert rows[4].split()[:3] == ["5", "u005", "995"]  # an empty name: blank too
