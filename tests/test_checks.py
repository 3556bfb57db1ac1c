"""Asset checks: each fails on crafted bad input and then blocks publication."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import polars as pl
import psycopg
import pytest
import redis

from leaderboard.boards import Board
from leaderboard.settings import Settings, load_settings
from leaderboard.stores import redis as cache
from leaderboard.stores.lake import Lake, read_snapshot
from pipelines import assets, checks
from pipelines.definitions import build_defs
from pipelines.jobs import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from tests.conftest import REDIS_URL, event, land

DAY = dt.date(2026, 3, 3)
HOUR = dt.datetime(2026, 3, 3, 10, tzinfo=dt.UTC)
BOARD = Board(id="points", event_types=("score.earned",), aggregate="sum", min_score=2)


def _table(ranks: list[int], users: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"board_id": ["points"] * len(ranks), "user_id": users, "rank": ranks})


def test_ranks_must_be_one_to_n():
    assert checks.ranks_contiguous(_table([1, 2, 3], ["a", "b", "c"])).passed
    gap = checks.ranks_contiguous(_table([1, 2, 4], ["a", "b", "c"]))
    assert not gap.passed and "position 3 has rank 4" in gap.problems[0]
    assert not checks.ranks_contiguous(_table([1, 2, 2], ["a", "b", "c"])).passed
    assert not checks.ranks_contiguous(_table([0, 1, 2], ["a", "b", "c"])).passed


def test_one_row_per_user():
    assert checks.one_row_per_user(_table([1, 2], ["a", "b"])).passed
    twice = checks.one_row_per_user(_table([1, 2, 3], ["a", "b", "a"]))
    assert twice.problems == ["points: a has 2 rows"]


def test_entries_must_equal_users_with_counted_events_after_min_score():
    scores = pl.DataFrame({"board_id": ["points"] * 3, "user_id": ["a", "b", "c"], "score": [5.0, 2.0, 1.0]})
    users = checks.eligible_users(scores, [BOARD])  # c is under min_score
    assert checks.entries_match_users(_table([1, 2], ["a", "b"]), users, [BOARD]).passed
    lost = checks.entries_match_users(_table([1], ["a"]), users, [BOARD])
    assert lost.problems == ["points: 1 entries for 2 users with counted events"]


def test_counted_users_come_from_clean_events_by_each_boards_rule():
    events = pl.LazyFrame(
        {
            "event_type": ["score.earned", "score.earned", "score.earned", "other", "score.earned"],
            "user_id": ["a", "a", "b", "c", "d"],
            "value": [1.0, 1.5, 2.0, 100.0, 1.0],
        }
    )
    got = checks.counted_users(events, [BOARD]).sort("user_id")
    assert got.get_column("user_id").to_list() == ["a", "b"]  # a: 2.5, b: 2.0 reach 2; c other type; d 1.0
    count_board = Board(id="n", event_types=("score.earned",), aggregate="count", min_score=2)
    assert checks.counted_users(events, [count_board]).get_column("user_id").to_list() == ["a"]


def test_quarantine_rate_threshold():
    samples = pl.DataFrame({"file": ["f.json"], "line": [7], "reason": ["invalid JSON"], "raw": ["{"]})
    assert checks.quarantine_rate(1000, 9, 0.01, samples).passed
    over = checks.quarantine_rate(1000, 10, 0.01, samples)
    assert not over.passed
    assert over.problems == ["10 of 1000 records quarantined (1.00%, limit 1.00%)", "f.json:7: invalid JSON"]


def test_cache_must_equal_postgres_entry_for_entry():
    stored = pl.DataFrame(
        {
            "user_id": ["a", "b"],
            "rank": [1, 2],
            "score": [5.0, 3.0],
            "previous_rank": [None, 1],
            "rank_change": [None, -1],
        }
    )
    same = [
        {
            "rank": r["rank"],
            "user_id": r["user_id"],
            "score": r["score"],
            "previous_rank": r["previous_rank"],
            "rank_change": r["rank_change"],
        }
        for r in stored.iter_rows(named=True)
    ]
    assert checks.cache_matches_postgres("points", same, stored).passed
    stale = [dict(same[0], score=4), *same[1:]]
    assert "first difference at position 1" in checks.cache_matches_postgres("points", stale, stored).problems[0]
    assert not checks.cache_matches_postgres("points", same[:1], stored).passed
    assert not checks.cache_matches_postgres("points", None, stored).passed


@pytest.fixture
def stack(settings, migrated_url, redis_prefix, monkeypatch):
    """Definitions publishing to the lake, a fresh Postgres database and a Redis prefix."""
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    s = load_settings()
    with dg.DagsterInstance.ephemeral() as instance:
        yield s, build_defs(s), instance


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, day: dt.date) -> dg.ExecuteInProcessResult:
    tags = {PARTITION_RANGE_START_TAG: day.isoformat(), PARTITION_RANGE_END_TAG: day.isoformat()}
    return defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def _published_state(s, lake: Lake) -> tuple:
    with psycopg.connect(s.DATABASE_URL) as conn:
        registry = conn.execute(
            "SELECT run_id, entries FROM leaderboard_periods WHERE board_id = 'points' AND period_key = %s",
            (DAY.isoformat(),),
        ).fetchall()
    client = redis.Redis.from_url(REDIS_URL)
    body = client.get(f"{s.REDIS_KEY_PREFIX}:points:DAILY:{DAY}:rankings")
    client.close()
    snap = read_snapshot(lake, "points", "daily", DAY.isoformat())
    assert snap is not None
    return registry, json.loads(body)["entries"], snap.header["run_id"], snap.frame.get_column("rank").to_list()


def test_good_day_passes_every_check_including_redis_against_postgres(stack):
    s, defs, instance = stack
    land(
        s.LEADERBOARD_LANDING_DIR,
        "events",
        HOUR,
        "events+0+0.json",
        [event(f"e{i}", f"u{i % 3}", f"2026-03-03T10:0{i}:00Z", i) for i in range(6)],
    )
    result = _run(defs, instance, "daily_job", DAY)
    assert result.success
    assert _checks(result) == {
        "clean_events:quarantine_rate": True,
        "daily_rankings:ranks_contiguous": True,
        "daily_rankings:one_row_per_user": True,
        "daily_rankings:entries_match_scores": True,
        "daily_rankings:redis_matches_postgres": True,
    }


def _gap(table: pl.DataFrame) -> pl.DataFrame:
    return table.with_columns(
        pl.when(pl.col("rank") >= 2).then(pl.col("rank") + 1).otherwise(pl.col("rank")).alias("rank")
    )


def _user_twice(table: pl.DataFrame) -> pl.DataFrame:
    points = table.filter(pl.col("board_id") == "points")
    return pl.concat([table, points.head(1).with_columns(rank=pl.lit(points.height + 1, pl.Int64))])


def _user_lost(table: pl.DataFrame) -> pl.DataFrame:
    return table.filter(~((pl.col("board_id") == "points") & (pl.col("rank") == pl.col("rank").max().over("board_id"))))


def _land_four_events(s: Settings) -> None:
    """Four users' events in one landed file of DAY."""
    land(s.LEADERBOARD_LANDING_DIR, "events", HOUR, "events+0+0.json",
         [event(f"e{i}", f"u{i}", f"2026-03-03T10:0{i}:00Z", i + 1) for i in range(4)])  # fmt: skip


@pytest.mark.parametrize(
    ("corrupt", "failing"),
    [
        (_gap, {"ranks_contiguous"}),
        (_user_twice, {"one_row_per_user", "entries_match_scores"}),
        (_user_lost, {"entries_match_scores"}),
    ],
)
def test_bad_standings_fail_their_check_and_the_previous_standings_stay(stack, monkeypatch, corrupt, failing):
    s, defs, instance = stack
    lake = Lake(s.LEADERBOARD_LAKE_DIR)
    _land_four_events(s)
    assert _run(defs, instance, "daily_job", DAY).success
    before = _published_state(s, lake)

    real = assets.rank_period
    monkeypatch.setattr(assets, "rank_period", lambda *a, **kw: corrupt(real(*a, **kw)))
    land(
        s.LEADERBOARD_LANDING_DIR, "events", HOUR, "events+0+9.json", [event("late", "u9", "2026-03-03T10:30:00Z", 100)]
    )
    result = _run(defs, instance, "daily_job", DAY)
    assert not result.success
    found = {k.split(":")[1]: v for k, v in _checks(result).items() if k.startswith("daily_rankings:")}
    assert {name for name, passed in found.items() if not passed} == failing
    assert _published_state(s, lake) == before  # Postgres, Redis and the lake all kept the old standings
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "checks failed, previous standings kept" in failure.step_failure_data.error.message
    mats = instance.fetch_materializations(dg.AssetKey("daily_rankings"), limit=10).records
    assert len(mats) == 1  # only the first, good run materialized
    # checks that never ran (Redis after publish) report nothing rather than "passed"
    assert "redis_matches_postgres" not in found


def test_a_check_failing_midway_through_a_range_records_the_periods_published_before_it(stack, monkeypatch):
    s, defs, instance = stack
    for day in (3, 4):
        hour = dt.datetime(2026, 3, day, 10, tzinfo=dt.UTC)
        land(
            s.LEADERBOARD_LANDING_DIR,
            "events",
            hour,
            "events+0+0.json",
            [event(f"e{day}{i}", f"u{i}", hour.isoformat(), i + 1) for i in range(3)],
        )
    real = assets.rank_period

    def bad_on_the_4th(lake, boards, period, *rest):
        table = real(lake, boards, period, *rest)
        return _gap(table) if period.key == "2026-03-04" else table

    monkeypatch.setattr(assets, "rank_period", bad_on_the_4th)
    tags = {PARTITION_RANGE_START_TAG: "2026-03-03", PARTITION_RANGE_END_TAG: "2026-03-04"}
    result = defs.resolve_job_def("daily_job").execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert not result.success
    lake = Lake(s.LEADERBOARD_LAKE_DIR)
    assert lake.snapshot("points", "daily", "2026-03-03").is_file()
    assert not lake.snapshot("points", "daily", "2026-03-04").exists()
    mats = instance.fetch_materializations(dg.AssetKey("daily_rankings"), limit=10).records
    assert [m.partition_key for m in mats] == ["2026-03-03"]


def test_redis_differing_from_postgres_after_publish_fails_the_run(stack, monkeypatch):
    s, defs, instance = stack
    _land_four_events(s)
    real = cache.publish

    def stale_body(client, keys, board, period_type, key, body, *rest):
        if board == "points":
            body = {**body, "entries": body["entries"][1:]}  # a cache missing its leader
        return real(client, keys, board, period_type, key, body, *rest)

    monkeypatch.setattr(cache, "publish", stale_body)
    result = _run(defs, instance, "daily_job", DAY)
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "redis_matches_postgres")
    assert not evaluation.passed
    assert "points: Redis 3 entries, Postgres 4" in evaluation.metadata["problems"].value


def test_quarantine_over_the_limit_fails_the_day_loudly_and_keeps_its_clean_events(stack):
    s, defs, instance = stack
    lake = Lake(s.LEADERBOARD_LAKE_DIR)
    land(
        s.LEADERBOARD_LANDING_DIR,
        "events",
        HOUR,
        "events+0+0.json",
        [event(f"e{i}", "u1", f"2026-03-03T10:0{i}:00Z", 1) for i in range(5)],
    )
    assert _run(defs, instance, "daily_job", DAY).success
    clean_before = pl.read_parquet(lake.day_file("clean_events", DAY))

    land(
        s.LEADERBOARD_LANDING_DIR,
        "events",
        HOUR,
        "events+0+5.json",
        [event("x", "u2", "2026-03-03T10:40:00Z", 1), "{not json", '{"event_id": "y"}'],
    )
    result = _run(defs, instance, "daily_job", DAY)
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_rate")
    assert not evaluation.passed
    problems = evaluation.metadata["problems"].value
    assert "2 of 8 records quarantined (25.00%, limit 1.00%)" in problems
    assert "events+0+5.json:2: " in problems  # samples name file and line
    assert pl.read_parquet(lake.day_file("clean_events", DAY)).equals(clean_before)
    assert pl.read_parquet(lake.day_file("quarantine", DAY)).height == 2  # there to look at
    assert not any(e.step_key == "daily_rankings" and e.is_step_success for e in result.all_events)
