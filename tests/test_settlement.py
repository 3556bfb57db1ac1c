"""Settlement on the real Postgres and Redis of this machine, through Dagster: a late file
corrects a closing period and leaves a settled one as it was; an operator's reopening lets it
change, under a new revision (docs/contracts.md#settlement)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import polars as pl
import psycopg
import pytest
import redis
import streamlit as st
from click.testing import CliRunner
from litestar.testing import TestClient
from streamlit.testing.v1 import AppTest

from api import freshness
from api.app import create_app
from api.auth import mint
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
from leaderboard.stores.errors import SchemaMissing
from leaderboard.stores.lake import Lake, read_snapshot
from leaderboard.stores.postgres import PostgresStore
from leaderboard.stores.settlement import Due, PostgresSettlement, Undelivered, period_lock, refuse_settled
from pipelines.definitions import build_defs
from pipelines.resources import StoresResource
from pipelines.settlement import SettlementResource
from tests.conftest import REDIS_URL, ROOT, event, free_port, land

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


class Receiver:
    """A webhook receiver on 127.0.0.1 that fails its first `failures` requests (HTTP 500)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes, int]] = []  # headers, body, status answered
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.requests) < receiver.failures else 204
                receiver.requests.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/settled"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> dict[str, dict]:
        """Delivery id -> event, for the requests answered 2xx."""
        return {h["X-Leaderboard-Delivery"]: json.loads(b) for h, b, status in self.requests if status < 300}


SECRET = "webhook-secret-" + "x" * 24
JWT = "jwt-secret-" + "y" * 32


def deliver_all(defs, resources, store: PostgresSettlement, receiver: Receiver, ticks: int = 40) -> None:
    """Tick the webhook sensor until the outbox is empty (bounded: `ticks` ticks, half a second apart)."""
    sensor = defs.get_repository_def().get_sensor_def("settlement_webhooks")
    with dg.instance_for_test() as instance:
        for _ in range(ticks):
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
                sensor(context)
            if ticks == 1 or store.undelivered() == Undelivered(0, 0, None):
                return
            time.sleep(0.5)
    raise AssertionError(f"still undelivered: {store.outbox(undelivered_only=True).rows()}")


def metrics_show(api: TestClient, pending: int, failing: int) -> bool:
    """/metrics reports these counts within a few background refreshes (bounded: 10 s)."""
    expected = {f'leaderboard_settlement_webhooks_undelivered{{state="pending"}} {pending:.1f}',
                f'leaderboard_settlement_webhooks_undelivered{{state="failing"}} {failing:.1f}'}  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = set(api.get("/metrics").text.splitlines())
        if expected <= lines:
            oldest = next(x for x in lines if x.startswith("leaderboard_settlement_webhook_oldest_undelivered"))
            return (float(oldest.split()[-1]) == 0) == (pending + failing == 0)
        time.sleep(0.2)
    return False


def test_a_late_file_corrects_a_closing_period_and_not_a_settled_one_until_reopened(deployed, boards, monkeypatch):
    settings = deployed
    daily = {b.id for b in boards.with_period("daily")}  # each settles, each with a webhook
    monkeypatch.setattr(freshness, "REFRESH_SECONDS", 0.2)  # the /metrics gauges' background reads
    store = PostgresSettlement(PostgresStore(settings.DATABASE_URL))
    key = str(D1)
    assert published(settings, "points", "daily", key)["registry"][2] == "final"
    monkeypatch.setenv("JWT_SECRET", JWT)
    get_settings.cache_clear()
    app = create_app(get_settings())
    admin = {"Authorization": f"Bearer {mint(get_settings(), 'ops@example.com', admin=True)}"}
    results = f"/leaderboard/points/daily/results?at={key}"
    with Receiver(failures=3) as receiver, TestClient(app) as api:
        defs = build_defs(settings)
        resources = {
            "stores": StoresResource(lake_dir=str(settings.LEADERBOARD_LAKE_DIR), database_url=settings.DATABASE_URL,
                                     redis_url=REDIS_URL, key_prefix=settings.REDIS_KEY_PREFIX),
            "settlement": SettlementResource(webhook_url=receiver.url, webhook_secret=SECRET, retry_seconds=3),
        }  # fmt: skip

        # closing: within the grace nothing settles, results are a 409, and a late file corrects the day
        assert store.settle_due(END1 + dt.timedelta(minutes=59), GRACE, dt.UTC, None) == []
        answer = api.get(results)
        assert answer.status_code == 409 and "is closing" in answer.json()["detail"]
        assert answer.headers["content-type"].startswith("application/problem+json")
        late_file(settings, 10, "u3", "2026-11-02T12:00:00Z", 100)
        closing = published(settings, "points", "daily", key)
        assert [r[0] for r in closing["rows"]] == ["u3", "u1", "u2"]
        assert json.loads(closing["redis"])["entries"][0]["user_id"] == "u3"

        # the grace passed: D1 settles (every board of it, each with a webhook in the outbox), D2 not yet
        settled = store.settle_due(END1 + GRACE, GRACE, dt.UTC, lambda board: 2)
        assert {(s.board_id, s.period_key, s.revision) for s in settled} == {(b, key, 1) for b in daily}
        points = store.state("points", "daily", key)
        assert points is not None and points.state == "settled" and points.events == 3
        assert points.content_hash == closing["registry"][1] and points.entries == 3
        first = api.get(results).json()
        assert (first["state"], first["revision"], first["content_hash"]) == ("settled", 1, points.content_hash)
        assert [e["user_id"] for e in first["entries"]] == ["u3", "u1", "u2"] and first["status"] == "final"
        assert api.get(f"/leaderboard/points/daily/results?at={D2}").status_code == 409  # closing
        assert "never settle" in api.get("/leaderboard/points/all_time/results").json()["detail"]

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
        assert api.get(results).json() == {**first, "late_after_settlement": 1}
        others = {b: published(settings, b, "daily", key) for b in ("referrals", "high_score", "fastest_lap")}

        # each settlement reaches the receiver, signed, though it fails its first three tries
        assert metrics_show(api, pending=len(daily), failing=0)
        deliver_all(defs, resources, store, receiver, ticks=1)
        assert [status for _, _, status in receiver.requests] == [500, 500, 500] + [204] * (len(daily) - 3)
        assert metrics_show(api, pending=0, failing=3)  # failed deliveries are visible, in the dashboard too
        page = settlement_page()
        assert "3 webhook deliveries failing" in page.error[0].value and "HTTP 500" in page.error[0].value
        assert [m.value for m in page.metric] == [str(len(daily)), "0", "0", "3"]
        assert store.outbox(undelivered_only=True)["last_status"].to_list() == [500] * 3
        deliver_all(defs, resources, store, receiver)
        assert metrics_show(api, pending=0, failing=0)
        for headers, body, _ in receiver.requests:
            assert signature_matches(SECRET, body, headers["X-Leaderboard-Signature"])
            assert headers["X-Leaderboard-Event"] == "period.settled" and headers["Content-Type"] == "application/json"
            assert headers["X-Leaderboard-Delivery"] == json.loads(body)["id"] == headers["Idempotency-Key"]
        outbox = store.outbox()
        assert set(receiver.delivered()) == set(outbox["id"])  # every queued event, at least once
        assert outbox["attempts"].sum() == outbox.height + 3 and outbox["delivered_at"].null_count() == 0
        failed_ids = {h["X-Leaderboard-Delivery"] for h, _, status in receiver.requests if status == 500}
        assert failed_ids <= set(receiver.delivered())  # retried under the same idempotency id
        [event1] = [
            e
            for e in receiver.delivered().values()
            if e["data"]["board"] == "points" and e["data"]["period_key"] == key
        ]
        assert event1["data"]["revision"] == 1 and event1["data"]["content_hash"] == points.content_hash
        assert event1["data"]["entries"] == first["entries"][:2]  # the top display limit (2 here)

        # an operator reopens points (admins only, with a reason); the sensor asks for a recompute
        assert api.post(f"/leaderboard/points/daily/reopen?at={key}", json={"reason": "x"}).status_code == 401
        user = {"Authorization": f"Bearer {mint(get_settings(), 'u1')}"}
        assert (
            api.post(f"/leaderboard/points/daily/reopen?at={key}", json={"reason": "x"}, headers=user).status_code
            == 403
        )
        assert api.post(f"/leaderboard/points/daily/reopen?at={key}", json={}, headers=admin).status_code == 400
        answer = api.post(f"/leaderboard/points/daily/reopen?at={key}", json={"reason": "partner file arrived late"},
                          headers=admin)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert (answer.json()["state"], answer.json()["revision"]) == ("reopened", 1)
        again = api.post(f"/leaderboard/points/daily/reopen?at={key}", json={"reason": "again"}, headers=admin)
        assert again.status_code == 409 and "already reopened" in again.json()["detail"]
        assert "was reopened" in api.get(results).json()["detail"]
        with psycopg.connect(settings.DATABASE_URL) as conn:
            audit = conn.execute(
                "SELECT actor, action, target, reason, details FROM leaderboard_admin_audit"
            ).fetchall()
        assert audit == [("ops@example.com", "period.reopen", f"points/daily/{key}", "partner file arrived late",
                          {"revision": 1, "content_hash": points.content_hash})]  # fmt: skip
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

        # it settles again SETTLE_GRACE_MINUTES after the reopening (the sensor's tick was within it; a grace
        # of 0 stands for the wait here), under revision 2, with a new delivery
        assert store.state("points", "daily", key).state == "reopened"  # type: ignore[union-attr]
        resettled = store.settle_due(dt.datetime.now(UTC), dt.timedelta(0), dt.UTC, lambda board: 2)
        [rev2] = [s for s in resettled if s.board_id == "points" and s.period_key == key]
        assert rev2.revision == 2 and rev2.content_hash == changed["registry"][1] != points.content_hash
        assert rev2.late_after_settlement == 0 and rev2.events == 4
        second = api.get(results).json()
        assert (second["revision"], second["content_hash"]) == (2, rev2.content_hash)
        assert [e["user_id"] for e in second["entries"]] == ["u2", "u3", "u1"]
        assert [(a, r, h, who) for a, r, h, who, _ in history(settings, "points", key)] == [
            ("settled", 1, points.content_hash, "pipeline"),
            ("reopened", 1, points.content_hash, "ops@example.com"),
            ("settled", 2, rev2.content_hash, "pipeline"),
        ]
        deliver_all(defs, resources, store, receiver)
        [event2] = [e for e in receiver.delivered().values()
                    if e["data"]["board"] == "points" and e["data"]["period_key"] == key and e["data"]["revision"] == 2]  # fmt: skip
        assert event2["id"] != event1["id"] and event2["data"]["content_hash"] == rev2.content_hash
        assert [e["user_id"] for e in event2["data"]["entries"]] == ["u2", "u3"]

    # the operator's view
    listed = cli("settlement", "history", "--board", "points")
    assert (
        f"reopened  points daily {key} revision 1" in listed
        and "by ops@example.com: partner file arrived late" in listed
    )
    assert "0 pending, 0 failing" in cli("settlement", "status")
    reopen = ["settlement", "reopen", "points", "daily", "--at", key, "--reason", "dispute #12", "--by", "ann"]
    assert "reopened points daily 2026-11-02 (revision 2)" in cli(*reopen)
    refused = CliRunner().invoke(main, reopen)
    assert refused.exit_code == 1 and "is already reopened" in refused.output
    assert history(settings, "points", key)[-1] == ("reopened", 2, rev2.content_hash, "ann", "dispute #12")
    page = settlement_page()
    assert not page.error and [m.value for m in page.metric][1:] == ["1", "0", "0"]
    shown = {
        tuple(r)
        for r in frame_with(page, "action", "period_key")[
            ["board_id", "period_key", "action", "revision", "actor"]
        ].values
    }
    assert {("points", key, "settled", 2, "pipeline"), ("points", key, "reopened", 2, "ann")} <= shown
    assert frame_with(page, "target")["actor"].tolist() == ["ann", "ops@example.com"]  # the audit, newest first
    assert frame_with(page, "late_after_settlement")["state"][0] == "reopened"


def settlement_page() -> AppTest:
    st.cache_data.clear()
    page = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    page.switch_page("app_pages/settlement.py").run()
    assert not page.exception, page.exception
    return page


def frame_with(page: AppTest, *columns: str):
    [found] = [d.value for d in page.dataframe if set(columns) <= set(d.value.columns)]
    return found


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


def test_without_postgres_nothing_settles_and_every_entry_point_says_why(settings, monkeypatch):
    monkeypatch.setenv("JWT_SECRET", JWT)
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as api:
        answer = api.get(f"/leaderboard/points/daily/results?at={D1}")
        assert answer.status_code == 409 and "needs Postgres (DATABASE_URL)" in answer.json()["detail"]
        admin = {"Authorization": f"Bearer {mint(get_settings(), 'ops', admin=True)}"}
        answer = api.post(f"/leaderboard/points/daily/reopen?at={D1}", json={"reason": "r"}, headers=admin)
        assert answer.status_code == 409 and "needs Postgres" in answer.json()["detail"]
        assert api.get(f"/leaderboard/nope/daily/results?at={D1}").status_code == 404
        assert api.get(f"/leaderboard/points/yearly/results?at={D1}").status_code == 400
    defs = build_defs(get_settings())
    resources = {
        "stores": StoresResource(lake_dir=str(settings.LEADERBOARD_LAKE_DIR)),
        "settlement": SettlementResource(),
    }
    with dg.instance_for_test() as instance:
        for name in ("settle_periods", "settlement_webhooks"):
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
                skipped = defs.get_repository_def().get_sensor_def(name)(context)
            assert isinstance(skipped, dg.SkipReason) and "needs Postgres" in (skipped.skip_message or "")
    result = CliRunner().invoke(main, ["settlement", "status"])
    assert result.exit_code == 2 and "settlement needs Postgres: set DATABASE_URL" in result.output


def test_a_database_without_the_settlement_tables_says_to_migrate(migrated_url):
    with psycopg.connect(migrated_url) as conn:
        conn.execute("DROP TABLE leaderboard_settlements")
    table = pl.DataFrame(schema={"board_id": pl.String, "event_count": pl.Int64})
    with pytest.raises(SchemaMissing, match=r"0006.settlement.sql\): run `leaderboard migrate deploy`"):
        refuse_settled(PostgresStore(migrated_url), "daily", str(D1), table, END1)


def test_deliveries_go_in_revision_order_and_a_claimed_one_is_leased(migrated_url):
    store = PostgresSettlement(PostgresStore(migrated_url))
    now = dt.datetime.now(UTC)
    with psycopg.connect(migrated_url) as conn:
        for revision, board in ((1, "points"), (2, "points"), (1, "referrals")):
            conn.execute(
                "INSERT INTO leaderboard_webhook_outbox (id, event_type, board_id, period_type, period_key, revision, "
                "body, created_at, next_attempt_at) VALUES (gen_random_uuid(), 'period.settled', %s, 'daily', "
                "'2026-11-02', %s, %s, %s, %s)",
                (board, revision, f'{{"r":{revision}}}', now, now - dt.timedelta(seconds=revision)),
            )
    first = store.claim(now, dt.timedelta(minutes=5))
    assert first is not None and (first.board_id, first.revision) == ("points", 1)  # revision 2 waits for it
    second = store.claim(now, dt.timedelta(minutes=5))
    assert second is not None and (second.board_id, second.revision) == ("referrals", 1)
    assert store.claim(now, dt.timedelta(minutes=5)) is None  # points 1 is leased, points 2 behind it
    store.attempted(first, now, 503, "HTTP 503", now + retry_delay(1, dt.timedelta(seconds=30)))
    assert store.claim(now + dt.timedelta(seconds=29), dt.timedelta(minutes=5)) is None
    store.attempted(first, now, 200, None, None)  # delivered on its retry
    third = store.claim(now, dt.timedelta(minutes=5))
    assert third is not None and (third.board_id, third.revision, third.body) == ("points", 2, b'{"r":2}')
    assert store.undelivered() == Undelivered(2, 0, now)  # claimed, not tried yet
