"""Settlement on the real Postgres and Redis of this machine, through Dagster: a late file
corrects a closing period and leaves a settled one as it was; an operator's reopening lets it
change, under a new revision (docs/contracts.md#settlement)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import dagster as dg
import psycopg
import pytest
import redis
from click.testing import CliRunner

from cli.main import main
from leaderboard.periods import UTC
from leaderboard.settings import SettingsError, get_settings, load_settings
from leaderboard.settlement import (
    phase,
    retry_delay,
    settled_event,
    signature,
    signature_matches,
)
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake, read_snapshot
from leaderboard.stores.postgres import PostgresStore
from leaderboard.stores.settlement import Due, PostgresSettlement, period_lock
from pipelines.definitions import build_defs
from pipelines.resources import StoresResource
from pipelines.settlement import SettlementResource
from tests.conftest import REDIS_URL, event, land

D1, D2 = dt.date(2026, 11, 2), dt.date(2026, 11, 3)  # a Monday and Tuesday of ISO week 2026-W45 (boards: UTC)
END1 = dt.datetime(2026, 11, 3, tzinfo=UTC)  # D1's end
GRACE = dt.timedelta(minutes=60)


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_phases_of_a_period():
    end = END1
    assert phase(end, end - dt.timedelta(seconds=1), None) == "live"
    assert phase(end, end, None) == "closing"
    assert phase(end, end + dt.timedelta(days=30), None) == "closing"  # until the pipeline settles it


def test_retries_back_off_exponentially_up_to_an_hour():
    first = dt.timedelta(seconds=30)
    assert [retry_delay(n, first).total_seconds() for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert retry_delay(500, first) == dt.timedelta(hours=1)


def test_the_signature_is_an_hmac_of_the_exact_body():
    standings = {"board": "points", "period": "daily", "period_key": "2026-11-02", "period_start": "a",
                 "period_end": "b", "published_at": "c", "total": 1,
                 "entries": [{"rank": 1, "user_id": "ü", "score": 3}]}  # fmt: skip
    body = settled_event("id-1", standings, 2, "abc", END1)
    assert json.loads(body)["data"]["entries"][0]["user_id"] == "ü" and body.isascii()
    sig = signature("k" * 32, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert signature_matches("k" * 32, body, sig)
    assert not signature_matches("k" * 32, body + b" ", sig)
    assert not signature_matches("x" * 32, body, sig)
    assert not signature_matches("k" * 32, body, None)


def test_a_webhook_url_needs_a_strong_secret(settings):
    with pytest.raises(SettingsError, match=r"SETTLEMENT_WEBHOOK_SECRET='<0 bytes>': .*must be set"):
        load_settings(SETTLEMENT_WEBHOOK_URL="http://127.0.0.1:9/hook")
    with pytest.raises(SettingsError, match=r"SETTLEMENT_WEBHOOK_SECRET='<5 bytes>': .*at least 32 bytes"):
        load_settings(SETTLEMENT_WEBHOOK_URL="http://127.0.0.1:9/hook", SETTLEMENT_WEBHOOK_SECRET="short")
    with pytest.raises(SettingsError, match="SETTLEMENT_WEBHOOK_URL"):
        load_settings(SETTLEMENT_WEBHOOK_URL="ftp://example.com/", SETTLEMENT_WEBHOOK_SECRET="s" * 32)
    assert load_settings().SETTLE_GRACE_MINUTES == 60


@pytest.fixture
def deployed(settings, migrated_url, redis_prefix, monkeypatch):
    """Two days of points published to Postgres, Redis and the lake through Dagster."""
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    get_settings.cache_clear()
    landing = settings.LEADERBOARD_LANDING_DIR
    land(landing, "game", dt.datetime(2026, 11, 2, 10, tzinfo=UTC), "game+0+0.json",
         [event("a1", "u1", "2026-11-02T10:00:00Z", 10), event("a2", "u2", "2026-11-02T10:30:00Z", 5),
          event("g1", "u4", "2026-11-02T10:40:00Z", 42, "game.finished")])  # fmt: skip
    land(landing, "game", dt.datetime(2026, 11, 3, 9, tzinfo=UTC), "game+0+2.json",
         [event("b1", "u1", "2026-11-03T09:00:00Z", 3)])  # fmt: skip
    cli("materialize", "--start", str(D1), "--end", str(D2))
    return get_settings()


def late_file(settings, offset: int, user: str, at: str, value: float) -> None:
    """A file landing for D1 after it was processed, and the run the landing sensor asks for."""
    hour = dt.datetime.fromisoformat(at.replace("Z", "+00:00")).replace(minute=0, second=0)
    land(
        settings.LEADERBOARD_LANDING_DIR,
        "game",
        hour,
        f"game+0+{offset}.json",
        [event(f"late-{offset}", user, at, value)],
    )
    cli("materialize", "--start", str(D1), "--end", str(D1))


def published(settings, board: str, period_type: str, key: str) -> dict:
    """What each store holds of a board's period."""
    lake = read_snapshot(Lake(settings.LEADERBOARD_LAKE_DIR), board, period_type, key)
    assert lake is not None
    with psycopg.connect(settings.DATABASE_URL) as conn:
        rows = conn.execute(
            "SELECT user_id, rank, score, event_count FROM leaderboard_rankings WHERE board_id = %s "
            "AND period_type = %s AND period_key = %s ORDER BY rank",
            (board, period_type, key),
        ).fetchall()
        registry = conn.execute(
            "SELECT published_at, content_hash, status FROM leaderboard_periods WHERE board_id = %s "
            "AND period_type = %s AND period_key = %s",
            (board, period_type, key),
        ).fetchone()
    body = redis.Redis.from_url(REDIS_URL).get(Stores.from_settings(settings).keys.rankings(board, period_type, key))
    return {"lake": (lake.header, lake.frame.rows()), "rows": rows, "registry": registry, "redis": body}


def history(settings, board: str, key: str) -> list[tuple]:
    with psycopg.connect(settings.DATABASE_URL) as conn:
        return conn.execute(
            "SELECT action, revision, content_hash, actor, reason FROM leaderboard_settlement_history "
            "WHERE board_id = %s AND period_type = 'daily' AND period_key = %s ORDER BY id",
            (board, key),
        ).fetchall()


def test_a_late_file_corrects_a_closing_period_and_not_a_settled_one_until_reopened(deployed):
    settings = deployed
    store = PostgresSettlement(PostgresStore(settings.DATABASE_URL))
    key = str(D1)
    assert published(settings, "points", "daily", key)["registry"][2] == "final"

    # closing: within the grace nothing settles, and a late file corrects the day
    assert store.settle_due(END1 + dt.timedelta(minutes=59), GRACE, dt.UTC, None) == []
    late_file(settings, 10, "u3", "2026-11-02T12:00:00Z", 100)
    closing = published(settings, "points", "daily", key)
    assert [r[0] for r in closing["rows"]] == ["u3", "u1", "u2"]
    assert json.loads(closing["redis"])["entries"][0]["user_id"] == "u3"

    # the grace passed: D1 settles (every board of it), D2 (ended a day later) not yet
    settled = store.settle_due(END1 + GRACE, GRACE, dt.UTC, None)
    assert {(s.board_id, s.period_key, s.revision) for s in settled} == {
        (b, key, 1) for b in ("points", "referrals", "high_score", "fastest_lap")
    }
    points = store.state("points", "daily", key)
    assert points is not None and points.state == "settled" and points.events == 3
    assert points.content_hash == closing["registry"][1] and points.entries == 3

    # a late file for the settled day: recorded, the standings stay as settled in every store
    week_before = published(settings, "points", "weekly", "2026-W45")
    late_file(settings, 11, "u2", "2026-11-02T13:00:00Z", 1000)
    assert published(settings, "points", "daily", key) == closing
    after = store.state("points", "daily", key)
    assert after is not None and after.late_after_settlement == 1 and after.last_late_at is not None
    stats = Stores.from_settings(settings).ingest_stats().between(D1, D1)
    assert stats["counted"].to_list() == [5]  # the ingest counted it (and the game event)
    week = published(settings, "points", "weekly", "2026-W45")  # the week is live: it changed
    assert week["rows"][0][0] == "u2" and week != week_before
    late_file(settings, 11, "u2", "2026-11-02T13:00:00Z", 1000)  # the same file again: counted once
    assert store.state("points", "daily", key).late_after_settlement == 1  # type: ignore[union-attr]
    others = {b: published(settings, b, "daily", key) for b in ("referrals", "high_score", "fastest_lap")}

    # an operator reopens points; the sensor asks for a recompute of the day, which changes it
    reopened = store.reopen(
        "points", "daily", key, "ops@example.com", "partner file arrived late", dt.datetime.now(UTC)
    )
    assert reopened.state == "reopened" and reopened.revision == 1
    with psycopg.connect(settings.DATABASE_URL) as conn:
        audit = conn.execute("SELECT actor, action, target, reason, details FROM leaderboard_admin_audit").fetchall()
    assert audit == [("ops@example.com", "period.reopen", f"points/daily/{key}", "partner file arrived late",
                      {"revision": 1, "content_hash": points.content_hash})]  # fmt: skip
    defs = build_defs(settings)
    resources = {"stores": StoresResource(lake_dir=str(settings.LEADERBOARD_LAKE_DIR), database_url=settings.DATABASE_URL,
                                          redis_url=REDIS_URL, key_prefix=settings.REDIS_KEY_PREFIX),
                 "settlement": SettlementResource()}  # fmt: skip
    sensor = defs.get_repository_def().get_sensor_def("settle_periods")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        [request] = result.run_requests
        assert (request.job_name, request.partition_key) == ("daily_rankings_job", key)
        run = defs.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert run.success
    changed = published(settings, "points", "daily", key)
    assert [r[0] for r in changed["rows"]] == ["u2", "u3", "u1"]
    assert json.loads(changed["redis"])["entries"][0]["user_id"] == "u2"
    # the other boards of the day stayed settled: unchanged in every store, the leaf swap included
    assert {b: published(settings, b, "daily", key) for b in others} == others
    assert others["high_score"]["rows"] == [("u4", 1, 42.0, 1)]

    # it settles again, SETTLE_GRACE_MINUTES after the reopening, under revision 2
    assert store.state("points", "daily", key).state == "reopened"  # type: ignore[union-attr]
    [again] = [s for s in store.settle_due(reopened.reopened_at + GRACE, GRACE, dt.UTC, None)  # type: ignore[operator]
               if s.board_id == "points" and s.period_key == key]  # fmt: skip
    assert again.revision == 2 and again.content_hash == changed["registry"][1] != points.content_hash
    assert again.late_after_settlement == 0 and again.events == 4
    assert [(a, r, h, who) for a, r, h, who, _ in history(settings, "points", key)] == [
        ("settled", 1, points.content_hash, "pipeline"),
        ("reopened", 1, points.content_hash, "ops@example.com"),
        ("settled", 2, again.content_hash, "pipeline"),
    ]


def test_a_settlement_waits_for_a_publish_of_its_period(settings, migrated_url, monkeypatch):
    """The publisher's lock on the period: a settlement cannot land between its check and its swap."""
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    get_settings.cache_clear()
    land(settings.LEADERBOARD_LANDING_DIR, "game", dt.datetime(2026, 11, 2, 10, tzinfo=UTC), "game+0+0.json",
         [event("a1", "u1", "2026-11-02T10:00:00Z", 10)])  # fmt: skip
    cli("materialize", "--start", str(D1), "--end", str(D1))
    store = PostgresSettlement(PostgresStore(migrated_url))
    done: list[object] = []
    with psycopg.connect(migrated_url, autocommit=True) as publisher:
        publisher.execute("SELECT pg_advisory_lock(hashtext(%s))", (period_lock("daily", str(D1)),))
        worker = threading.Thread(
            target=lambda: done.append(store.settle(Due("points", "daily", str(D1)), END1 + GRACE, GRACE, dt.UTC, None))
        )
        worker.start()
        time.sleep(1.0)
        assert done == [] and store.state("points", "daily", str(D1)) is None
        publisher.execute("SELECT pg_advisory_unlock(hashtext(%s))", (period_lock("daily", str(D1)),))
        worker.join(timeout=15)
    assert not worker.is_alive() and done[0].revision == 1  # type: ignore[attr-defined]
