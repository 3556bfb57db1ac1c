"""The pipeline with the landing zone and the lake in a bucket: `leaderboard materialize` gives
exactly the standings of local folders, `leaderboard show` and the API read them back, and
retention deletes from the bucket."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from api.app import create_app
from cli.main import main
from leaderboard import objstore
from leaderboard.boards import current_boards
from leaderboard.objstore import S3Location
from leaderboard.settings import get_settings, load_settings
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake, LakeIngestStats, read_snapshot
from leaderboard.stores.lake_records import LakeBoardConfig, LakeRefreshRequests
from leaderboard.stores.protocols import Override
from pipelines import retention
from tests.conftest import scratch_bucket

TZ = "America/New_York"
FIRST, DAYS = dt.date(2026, 3, 7), 3  # the DST day 03-08 in the middle


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def upload(folder: Path, location: S3Location) -> int:
    store = objstore.store_of(location)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        objstore.put_bytes(store, location.key(path.relative_to(folder).as_posix()), path.read_bytes())
    return len(files)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same landed days materialized from local folders and from the bucket."""
    with pytest.MonkeyPatch.context() as monkeypatch, scratch_bucket(monkeypatch) as s3_bucket:
        yield from _both(tmp_path_factory.mktemp("s3e2e"), s3_bucket, monkeypatch)


def _both(tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEADERBOARD_TIMEZONE", TZ)
    monkeypatch.delenv("LEADERBOARD_BOARDS", raising=False)
    last = FIRST + dt.timedelta(days=DAYS - 1)
    runs = {}
    for name, landing, lake in [
        ("files", str(tmp_path / "landing"), str(tmp_path / "lake")),
        ("s3", f"s3://{s3_bucket}/sink", f"s3://{s3_bucket}/lake"),
    ]:
        monkeypatch.setenv("LEADERBOARD_LANDING_DIR", str(tmp_path / "landing"))
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / f"dagster-{name}"))
        get_settings.cache_clear()
        if name == "files":
            cli("generate", "--start", str(FIRST), "--days", str(DAYS), "--users", "80", "--events-per-day", "600",
                "--seed", "3", "--bad-rate", "0.004", "--dup-rate", "0.03")  # fmt: skip
        else:
            assert upload(tmp_path / "landing", S3Location(s3_bucket, "sink")) > 0
        monkeypatch.setenv("LEADERBOARD_LANDING_DIR", landing)
        monkeypatch.setenv("LEADERBOARD_LAKE_DIR", lake)
        get_settings.cache_clear()
        cli("materialize", "--start", str(FIRST), "--end", str(last))
        runs[name] = get_settings().LEADERBOARD_LAKE_DIR
    yield {name: Lake(root) for name, root in runs.items()}
    get_settings.cache_clear()


def test_materialize_from_a_bucket_gives_the_standings_of_local_folders(both):
    files, s3 = both["files"], both["s3"]
    assert s3.bucket is not None and files.bucket is None
    listed = files.snapshots()
    assert [s[:3] for s in s3.snapshots()] == [s[:3] for s in listed] and len(listed) > 20
    for board, period_type, key, _ in listed:
        want, got = read_snapshot(files, board, period_type, key), read_snapshot(s3, board, period_type, key)
        assert want is not None and got is not None
        columns = [c for c in want.frame.columns if c not in ("published_at", "run_id")]
        assert got.frame.select(columns).equals(want.frame.select(columns)), (board, period_type, key)
        assert got.header["total"] == want.header["total"]
    for dataset in ("clean_events", "daily_scores", "quarantine", "ingest_stats"):
        assert s3.days(dataset) == files.days(dataset)
    stats = LakeIngestStats(s3).between(FIRST, FIRST + dt.timedelta(days=DAYS))
    want = LakeIngestStats(files).between(FIRST, FIRST + dt.timedelta(days=DAYS))
    same = ["day", "files", "read", "counted", "duplicates", "conflicts", "quarantined"]
    assert stats.select(same).equals(want.select(same)) and stats["quarantined"].sum() > 0
    # quarantined records name their objects
    day = s3.days("quarantine")[0]
    q = pl.read_parquet(s3.pull(s3.day_file("quarantine", day)))
    assert q.height and all(f.startswith(f"s3://{s3.bucket.bucket}/sink/topics/") for f in q["file"])


def test_show_and_the_api_read_the_standings_back_from_the_bucket(both, monkeypatch):
    s3 = both["s3"]
    at = str(FIRST + dt.timedelta(days=1))
    body = json.loads(cli("show", "points", "daily", "--at", at, "--json"))
    want = read_snapshot(both["files"], "points", "daily", at)
    assert want is not None and body["total"] == want.header["total"] > 0
    assert [e["user_id"] for e in body["entries"]] == want.frame["user_id"].to_list()[: len(body["entries"])]
    settings = load_settings(DATABASE_URL=None, REDIS_URL=None, RATE_LIMIT_PER_MINUTE=0)
    assert s3.root == settings.LEADERBOARD_LAKE_DIR
    with TestClient(create_app(settings)) as c:
        answer = c.get(f"/leaderboard/points/daily?at={at}&limit=5")
        assert answer.status_code == 200, answer.text
        assert [e["user_id"] for e in answer.json()["entries"]] == want.frame["user_id"].to_list()[:5]
        assert c.get("/leaderboard/points/daily/periods").json()  # the keys listed from the pointers
        assert c.get("/health/ready").status_code in (200, 503)


def test_a_republish_switches_the_pointer_and_keeps_one_version_before(both):
    s3 = both["s3"]
    assert s3.bucket is not None
    found = read_snapshot(s3, "points", "daily", str(FIRST))
    assert found is not None
    store = objstore.store_of(s3.bucket)
    prefix = s3.bucket.key(f"standings/points/daily/{FIRST}")
    for n in range(3):
        s3.publish_snapshot(found.frame, "points", "daily", str(FIRST), {**found.header, "total": n})
    assert read_snapshot(s3, "points", "daily", str(FIRST)).header["total"] == 2
    assert len(list(objstore.list_objects(store, prefix))) == 2  # the current object and the one before


def test_retention_deletes_snapshots_and_clean_events_from_the_bucket(both):
    s3, boards = both["s3"], current_boards()
    assert s3.bucket is not None
    store = objstore.store_of(s3.bucket)
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    plan = retention.plan(s3, boards, now, 2)  # 03-07's day and its week's daily snapshots are past it
    assert plan.snapshots and plan.clean_event_files
    retention.apply(plan)
    assert FIRST not in s3.days("clean_events")
    assert str(FIRST) not in s3.published_keys("points", "daily")
    assert read_snapshot(s3, "points", "daily", str(FIRST)) is None
    assert not list(objstore.list_objects(store, s3.bucket.key(f"standings/points/daily/{FIRST}")))
    assert read_snapshot(s3, "points", "daily", str(FIRST + dt.timedelta(days=2))) is not None


def test_board_config_and_refresh_requests_live_in_the_bucket(both):
    s3 = both["s3"]
    LakeBoardConfig(s3).save({"points": Override(display_limit=7, enabled=True)}, "admin")
    other_host = Lake(s3.root)  # another pod reads what this one wrote
    assert LakeBoardConfig(other_host).load()["points"].display_limit == 7
    rid = LakeRefreshRequests(s3).request("admin")
    assert LakeRefreshRequests(other_host).take("batch-1") == [rid]
    assert LakeRefreshRequests(s3).status(rid) == "running"
    assert Stores(s3).period_ends("daily", current_boards().tz)["points"]


def test_the_dashboard_reads_the_lake_and_landing_times_from_the_bucket(both):
    from dashboard import stores as dashboard_stores
    from dashboard import views
    from dashboard.pipeline import _landed_at

    s3, files = both["s3"], both["files"]
    last = FIRST + dt.timedelta(days=DAYS - 1)
    sample, total = dashboard_stores.quarantine_sample(s3.root, FIRST, last)
    want, want_total = dashboard_stores.quarantine_sample(files.root, FIRST, last)
    assert total == want_total > 0 and sample.select("day", "line", "reason").equals(
        want.select("day", "line", "reason")
    )
    shown = views.under(sample, "file", get_settings().LEADERBOARD_LANDING_DIR)
    assert all(f.startswith("topics/") for f in shown["file"])
    stats = dashboard_stores.ingest_stats(None, s3.root, FIRST, last)
    assert stats.frame.height == DAYS and "s3://" in stats.source
    history = dashboard_stores.rank_history(None, s3.root, "points", "daily", "u1", 5)
    assert history.frame["period_key"].to_list()[-1] == str(last)
    landed = _landed_at(get_settings().LEADERBOARD_LANDING_DIR, FIRST, current_boards().tz)
    assert landed is not None and landed <= dt.datetime.now(dt.UTC)
