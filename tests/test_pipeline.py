"""End to end through Dagster: generated landing files to published snapshots.

The standings are compared with an independent DuckDB computation for every board and
period; a second run must give the same rows; a late file must change what it touches.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from cli.main import main
from leaderboard.boards import current_boards
from leaderboard.periods import period_of, periods_touching
from leaderboard.settings import get_settings
from leaderboard.stores.lake import Lake, read_snapshot
from pipelines.steps import rank_period
from tests.conftest import event, land
from tests.reference import Reference

TZ = "America/New_York"
FIRST, LAST = dt.date(2026, 2, 25), dt.date(2026, 3, 9)  # a month boundary, three weeks, the DST day 03-08
STABLE = [
    "board_id",
    "period_type",
    "period_key",
    "period_start",
    "period_end",
    "user_id",
    "rank",
    "score",
    "previous_rank",
    "rank_change",
    "event_count",
    "reached_at",
]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("LEADERBOARD_LANDING_DIR", str(root / "landing"))
        mp.setenv("LEADERBOARD_LAKE_DIR", str(root / "lake"))
        mp.setenv("DAGSTER_HOME", str(root / "dagster"))
        mp.setenv("LEADERBOARD_TIMEZONE", TZ)
        mp.delenv("LEADERBOARD_BOARDS", raising=False)
        get_settings.cache_clear()
        out = cli(
            "generate",
            "--start",
            str(FIRST),
            "--days",
            str((LAST - FIRST).days + 1),
            "--users",
            "150",
            "--events-per-day",
            "1500",
            "--seed",
            "11",
            "--bad-rate",
            "0.01",
            "--dup-rate",
            "0.03",
        )
        cli("materialize", "--start", str(FIRST), "--end", str(LAST))
        yield root, out
        get_settings.cache_clear()


def snapshot_rows(lake: Lake, board: str, ptype: str, key: str) -> pl.DataFrame:
    snap = read_snapshot(lake, board, ptype, key)
    assert snap is not None, (board, ptype, key)
    return snap.frame.select(STABLE)


def all_snapshots(lake: Lake) -> dict[Path, pl.DataFrame]:
    return {p: pl.read_parquet(p).select(STABLE) for p in sorted((lake.root / "standings").rglob("*.parquet"))}


def test_every_board_and_period_matches_an_independent_duckdb_computation(env):
    root, _ = env
    lake, boards = Lake(root / "lake"), current_boards()
    ref = Reference(root / "landing", TZ)
    periods = [period_of("daily", FIRST + dt.timedelta(days=i)) for i in range((LAST - FIRST).days + 1)]
    periods += periods_touching("weekly", FIRST, LAST) + periods_touching("monthly", FIRST, LAST)
    periods.append(period_of("all_time", LAST, boards.start_date))
    checked = 0
    for period in periods:
        prev = period.previous(boards.start_date)
        for board in boards.with_period(period.type):
            got = snapshot_rows(lake, board.id, period.type, period.key)
            want = ref.ranking(board, period.start, period.end - dt.timedelta(days=1))
            before = ref.ranking(board, prev.start, prev.end - dt.timedelta(days=1)) if prev else {}
            assert got.height == len(want) > 0, (board.id, period.key)
            for row in got.iter_rows(named=True):
                rank, score = want[row["user_id"]]
                assert (row["rank"], row["score"]) == (rank, pytest.approx(score)), (board.id, period.key, row)
                expected_prev = before.get(row["user_id"], (None,))[0]
                assert row["previous_rank"] == expected_prev, (board.id, period.key, row)
                assert row["rank_change"] == (None if expected_prev is None else expected_prev - rank)
            checked += 1
    assert checked == len(boards.boards) * len(periods)


def test_group_boards_names_and_metadata_match_the_reference_row_for_row(env):
    """The team and referral boards (published) and every entry's name and metadata (as the
    pipeline ranks them from its daily_scores: snapshots do not store names yet) against the
    reference's plain-Python computation over the landed events."""
    root, _ = env
    lake, boards = Lake(root / "lake"), current_boards()
    ref = Reference(root / "landing", TZ)
    periods = [period_of("daily", FIRST), period_of("daily", dt.date(2026, 3, 8)), period_of("daily", LAST)]
    periods += periods_touching("weekly", FIRST, LAST) + periods_touching("monthly", FIRST, LAST)
    periods.append(period_of("all_time", LAST, boards.start_date))
    named = renamed = 0
    for period in periods:
        table = rank_period(lake, boards, period)
        for board_id in ("teams", "referrers", "points"):
            board = boards.get(board_id)
            assert board is not None
            want = ref.entries(board, period.start, period.end - dt.timedelta(days=1))
            rows = table.filter(pl.col("board_id") == board_id).sort("rank")
            columns = ["user_id", "rank", "score", "event_count", "reached_at"]
            published = snapshot_rows(lake, board_id, period.type, period.key).select(columns)
            assert rows.select(columns).equals(published), (board_id, period.key)
            got = [
                (r["user_id"], r["rank"], r["score"], r["event_count"], r["reached_at"], r["display_name"],
                 None if r["metadata"] is None else json.loads(r["metadata"]))
                for r in rows.iter_rows(named=True)
            ]  # fmt: skip
            expected = [
                (k, e.rank, e.score, e.event_count, e.reached_at, e.display_name, e.metadata)
                for k, e in sorted(want.items(), key=lambda kv: kv[1].rank)
            ]
            assert got == expected, (board_id, period.key)
            assert len(got) > 0
            named += sum(1 for g in got if g[5])
            renamed += sum(1 for g in got if g[5] and ("day" in g[5] or "Ace" in g[5]))
    assert named > 1000 and renamed > 100  # names were there to compare, changing ones among them


def test_ingest_stats_count_each_group_boards_ungrouped_events(env):
    root, _ = env
    boards = current_boards()
    ref = Reference(root / "landing", TZ)
    stats = pl.read_parquet(root / "lake" / "ingest_stats" / "*" / "*.parquet")
    assert stats.height == (LAST - FIRST).days + 1
    totals = {"teams": 0, "referrers": 0}
    for row in stats.iter_rows(named=True):
        day = dt.date.fromisoformat(row["day"])
        counts = json.loads(row["ungrouped"])
        assert counts == {b: ref.ungrouped(boards.get(b), day) for b in ("teams", "referrers")}, day
        for b in totals:
            totals[b] += counts[b]
    assert totals["teams"] > 0 and totals["referrers"] > 0  # teamless players, sign-ups nobody referred


def test_counts_match_what_was_generated_and_runs_are_in_the_instance(env):
    root, out = env
    m = re.search(r"(\d+) events, (\d+) redeliveries, (\d+) broken records", out)
    assert m, out
    wrote = {"events": int(m[1]), "redeliveries": int(m[2]), "bad": int(m[3])}
    stats = pl.read_parquet(root / "lake" / "ingest_stats" / "*" / "*.parquet")
    assert stats["counted"].sum() == wrote["events"]
    assert stats["duplicates"].sum() == wrote["redeliveries"]
    assert stats["quarantined"].sum() == wrote["bad"]
    assert (stats["read"] == stats["counted"] + stats["duplicates"] + stats["quarantined"]).all()
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME of the fixture
        runs = instance.get_runs()
        assert {r.job_name for r in runs} >= {"daily_job", "weekly_job", "monthly_job", "all_time_job"}
        assert all(r.is_success for r in runs)
        daily = next(r for r in runs if r.job_name == "daily_job")
        assert daily.tags["dagster/asset_partition_range_start"] == str(FIRST)
        mats = instance.fetch_materializations(dg.AssetKey("clean_events"), limit=100).records
        assert {m.partition_key for m in mats} >= {str(FIRST), str(LAST)}


def test_show_prints_the_table_and_the_api_body(env):
    out = cli("show", "points", "daily", "--at", str(LAST), "--limit", "3")
    assert "points" in out.lower() or "Points" in out
    body = json.loads(cli("show", "points", "weekly", "--at", str(LAST), "--limit", "2", "--offset", "1", "--json"))
    assert set(body) == {
        "board",
        "period",
        "period_key",
        "period_start",
        "period_end",
        "status",
        "published_at",
        "total",
        "entries",
    }
    assert body["period_key"] == "2026-W11" and body["status"] == "final"
    assert body["period_start"] == "2026-03-09T00:00:00-04:00"
    assert [e["rank"] for e in body["entries"]] == [2, 3]
    assert set(body["entries"][0]) == {
        "rank",
        "user_id",
        "score",
        "previous_rank",
        "rank_change",
        "display_name",
        "metadata",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope", "daily"], "unknown board 'nope'"),
        (["show", "points", "daily", "--at", "2025-01-01"], "no published daily standings"),
        (["show", "points", "daily", "--at", "01/02/2026"], "not a date"),
        (
            ["show", "points", "daily", "--at", "20260301"],
            "not a date like 2026-11-26",
        ),
        (["materialize", "--start", "2026-03-02", "--end", "2026-03-01"], "is after"),
        (["materialize", "--start", "2023-12-31", "--end", "2024-01-02"], "before start_date"),
        (["materialize", "--start", "2026-03-02", "--end", "2999-01-01"], "in the future"),
    ],
)
def test_cli_errors_say_what_is_wrong(env, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output


def test_rerun_gives_the_same_standings_and_a_late_file_changes_what_it_touches(env):
    root, _ = env
    lake = Lake(root / "lake")
    before = all_snapshots(lake)
    cli("materialize", "--start", str(FIRST), "--end", str(LAST))
    again = all_snapshots(lake)
    assert before.keys() == again.keys()
    for path, frame in before.items():
        assert frame.equals(again[path]), path

    late_day = dt.date(2026, 3, 3)
    hour = dt.datetime(2026, 3, 3, 17, tzinfo=dt.UTC)
    land(
        root / "landing",
        "game-events",
        hour,
        "game-events+0+999999.json",
        [event("late-1", "late-user", "2026-03-03T17:30:00Z", 10**9)],
    )
    cli("materialize", "--start", str(late_day), "--end", str(late_day))
    after = all_snapshots(lake)
    touched = {
        lake.snapshot("points", "daily", "2026-03-03"),
        lake.snapshot("points", "weekly", "2026-W10"),
        lake.snapshot("points", "monthly", "2026-03"),
        lake.snapshot("points", "all_time", "all"),
    }
    for path in touched:
        top = after[path].row(0, named=True)
        assert (top["user_id"], top["rank"]) == ("late-user", 1), path
        assert not after[path].equals(before[path])
    # the periods right after were re-ranked: their previous_rank follows the new standings
    following = {
        lake.snapshot("points", "daily", "2026-03-04"): lake.snapshot("points", "daily", "2026-03-03"),
        lake.snapshot("points", "weekly", "2026-W11"): lake.snapshot("points", "weekly", "2026-W10"),
    }
    for path, prev_path in following.items():
        new_prev = dict(after[prev_path].select("user_id", "rank").iter_rows())
        assert [new_prev.get(u) for u in after[path]["user_id"]] == after[path]["previous_rank"].to_list(), path
        assert not after[path].equals(before[path]), path  # everyone below late-user moved down one
    # nothing else changed
    for path, frame in before.items():
        if path not in touched and path not in following and "points" in path.parts:
            assert frame.equals(after[path]), path
    shutil.rmtree(
        root / "landing" / "topics" / "game-events" / "year=2026" / "month=03" / "day=03" / "hour=17",
        ignore_errors=True,
    )


def test_secrets_kept_in_dotenv_reach_the_runs_the_cli_starts(settings, migrated_url, redis_prefix, monkeypatch):
    """The resources read secrets from the environment only; the CLI's runs get those `.env` holds."""
    import psycopg
    import redis

    from tests.conftest import REDIS_URL

    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    dotenv = f"DATABASE_URL={migrated_url}\nREDIS_URL={REDIS_URL}\nREDIS_KEY_PREFIX={redis_prefix}\n"
    Path(".env").write_text(dotenv)  # the settings fixture works in a directory of its own
    get_settings.cache_clear()
    day = dt.date(2026, 3, 3)
    hour = dt.datetime(2026, 3, 3, 10, tzinfo=dt.UTC)
    records = [event(f"e{i}", f"u{i}", f"2026-03-03T10:0{i}:00Z", i + 1) for i in range(3)]
    land(settings.LEADERBOARD_LANDING_DIR, "events", hour, "events+0+0.json", records)

    cli("materialize", "--start", str(day), "--end", str(day))

    assert "DATABASE_URL" not in os.environ and "REDIS_URL" not in os.environ  # added for the runs only
    with psycopg.connect(migrated_url) as conn:
        periods = set(conn.execute("SELECT DISTINCT period_type, period_key FROM leaderboard_rankings").fetchall())
    assert {("daily", "2026-03-03"), ("weekly", "2026-W10"), ("monthly", "2026-03"), ("all_time", "all")} <= periods
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert any(":DAILY:2026-03-03:" in k.decode() for k in client.scan_iter(match=f"{redis_prefix}:*"))
    finally:
        client.close()


def test_dagster_commands_read_the_secrets_from_dotenv_too(settings, migrated_url, monkeypatch):
    """`dagster dev`, the daemon and `dagster asset materialize` load `.env` of their working directory."""
    import subprocess
    import sys

    import psycopg

    monkeypatch.delenv("DATABASE_URL", raising=False)
    Path(".env").write_text(f"DATABASE_URL={migrated_url}\n")
    hour = dt.datetime(2026, 3, 3, 10, tzinfo=dt.UTC)
    land(settings.LEADERBOARD_LANDING_DIR, "events", hour, "events+0+0.json", [event("e1", "u1", hour.isoformat(), 5)])
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "pipelines.definitions"]
    command += ["--select", "clean_events,daily_scores,daily_rankings", "--partition", "2026-03-03"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with psycopg.connect(migrated_url) as conn:
        periods = conn.execute("SELECT DISTINCT period_type, period_key FROM leaderboard_rankings").fetchall()
    assert periods == [("daily", "2026-03-03")]
