"""Moderation (docs/contracts.md#moderation): the `last` aggregate, per-board value ranges, and
exclusions with their audit, on real landed files, Postgres and Redis."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
import streamlit as st
from click.testing import CliRunner
from litestar.testing import TestClient
from streamlit.testing.v1 import AppTest

from api.app import create_app
from api.auth import mint
from api.reader import LOCAL_CACHE_SECONDS
from cli.main import main
from leaderboard.boards import Board, BoardSet, BoardsFileError, load_boards
from leaderboard.moderation import NO_POSTGRES
from leaderboard.periods import UTC, period_of
from leaderboard.settings import get_settings
from leaderboard.stores.lake import Lake
from leaderboard.stores.moderation import PostgresModeration
from leaderboard.stores.postgres import PostgresStore
from leaderboard.stores.settlement import PostgresSettlement
from pipelines.definitions import build_defs
from pipelines.resources import LakeResource, StoresResource
from pipelines.steps import ingest_day, rank_period, score_day
from tests.conftest import REDIS_URL, ROOT, event, land, write_boards
from tests.reference import Reference

D1, D2 = dt.date(2026, 11, 2), dt.date(2026, 11, 3)  # a Monday and Tuesday of ISO week 2026-W45
RATING = Board(id="rating", event_types=("rating.changed",), aggregate="last")
TEAM_LEVEL = Board(id="team_level", event_types=("rating.changed",), aggregate="last", group_by="attributes.team")


def _boards(tmp_path: Path, *boards: Board) -> BoardSet:
    return BoardSet(tuple(boards), "UTC", dt.date(2024, 1, 1), tmp_path / "boards.yaml")


def _run(landing: Path, lake: Lake, boards: BoardSet, days: list[dt.date]) -> None:
    for day in days:
        ingest_day(landing, lake, boards, day)
        score_day(lake, boards, day)


def _rating(eid: str, user: str, at: str, value: float, **attrs: object) -> dict:
    return event(eid, user, at, value, "rating.changed", **({"attributes": attrs} if attrs else {}))


def test_last_is_the_value_of_the_latest_counted_event_as_the_reference_says(tmp_path):
    """Latest by occurred_at, then the files' Kafka order, then event id (as display names); over
    days, the latest day's; ties in value rank by the time it was reached."""
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    boards = _boards(tmp_path, RATING, TEAM_LEVEL)
    h1, h2 = dt.datetime(2026, 11, 2, 10, tzinfo=UTC), dt.datetime(2026, 11, 3, 9, tzinfo=UTC)
    land(landing, "game", h1, "game+0+0.json", [
        _rating("a1", "amy", "2026-11-02T10:00:00Z", 1500, team="red"),
        _rating("a2", "amy", "2026-11-02T10:30:00Z", 1400, team="red"),  # later, lower: counts
        _rating("b1", "bob", "2026-11-02T10:20:00Z", 1600, team="blue"),
        _rating("b2", "bob", "2026-11-02T10:20:00Z", 1700, team="blue"),  # same time, same file: greater id
        _rating("c1", "cat", "2026-11-02T10:40:00Z", 1450, team="red"),
        event("x1", "cat", "2026-11-02T10:50:00Z", 9999, "other.type"),  # not counted
    ])  # fmt: skip
    land(landing, "game", h1, "game+1+0.json", [
        _rating("b0", "bob", "2026-11-02T10:20:00Z", 1000, team="blue"),  # same time, a later partition
    ])  # fmt: skip
    land(landing, "game", h2, "game+0+5.json", [
        _rating("a3", "amy", "2026-11-03T09:00:00Z", 1800, team="blue"),  # next day: the week takes it
        _rating("d1", "dan", "2026-11-03T09:10:00Z", 1800, team="red"),  # same value, reached later
    ])  # fmt: skip
    _run(landing, lake, boards, [D1, D2])
    ref = Reference(landing, "UTC")
    for period in (period_of("daily", D1), period_of("daily", D2), period_of("weekly", D1)):
        table = rank_period(lake, boards, period)
        for board in boards.boards:
            want = ref.entries(board, period.start, period.end - dt.timedelta(days=1))
            rows = table.filter(pl.col("board_id") == board.id).sort("rank")
            got = [
                (r["user_id"], r["rank"], r["score"], r["event_count"], r["reached_at"])
                for r in rows.iter_rows(named=True)
            ]
            assert got == [(k, e.rank, e.score, e.event_count, e.reached_at)
                           for k, e in sorted(want.items(), key=lambda kv: kv[1].rank)], (board.id, period.key)  # fmt: skip
    day1 = rank_period(lake, boards, period_of("daily", D1)).filter(pl.col("board_id") == "rating")
    assert day1.select("user_id", "score").rows() == [("cat", 1450.0), ("amy", 1400.0), ("bob", 1000.0)]
    week = rank_period(lake, boards, period_of("weekly", D1))
    assert week.filter(pl.col("board_id") == "rating").select("user_id", "score").rows() == [
        ("amy", 1800.0), ("dan", 1800.0), ("cat", 1450.0), ("bob", 1000.0)]  # fmt: skip
    assert week.filter(pl.col("board_id") == "team_level").select("user_id", "score").rows() == [
        ("blue", 1800.0), ("red", 1800.0)]  # fmt: skip


# Value ranges (docs/contracts.md#quarantine-reasons)

RANGED = """
boards:
  - {id: best, event_types: [game.finished], aggregate: max, value_range: [0, 1000]}
  - {id: games, event_types: [game.finished], aggregate: count, value_range: [-10, 5000]}
  - {id: points, event_types: [score.earned], aggregate: sum}
"""


def test_values_outside_a_boards_range_are_quarantined_with_file_line_and_reason(tmp_path):
    """A long file (read in scan order, lines found again) and a short one (read whole): the
    records out of range are quarantined with their line; the type shared by two boards must
    fit both ranges; other types and the rest of the day count as before."""
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    boards = load_boards(write_boards(tmp_path / "boards.yaml", RANGED))
    hour = dt.datetime(2026, 11, 2, 10, tzinfo=UTC)
    padding = [event(f"p{i:04d}", f"u{i % 50}", "2026-11-02T10:00:00Z", 1, name="x" * 60) for i in range(1200)]
    big = [*padding[:700], event("g1", "amy", "2026-11-02T10:05:00Z", 1001, "game.finished"), *padding[700:]]
    land(landing, "game", hour, "game+0+0.json", big)
    land(landing, "game", hour, "game+0+9.json", [
        event("g2", "bob", "2026-11-02T10:06:00Z", 1000, "game.finished"),  # the bound itself: counts
        event("g3", "cat", "2026-11-02T10:07:00Z", -1, "game.finished"),  # inside games', not best's
        event("g4", "dan", "2026-11-02T10:08:00Z", None, "game.finished"),  # absent: 1
        event("s1", "amy", "2026-11-02T10:09:00Z", 10**9),  # no range on score.earned
    ])  # fmt: skip
    assert sum(f.stat().st_size for f in (landing / "topics").rglob("*.json")) > 2 * 64 * 1024  # the scan-order path
    stats = ingest_day(landing, lake, boards, D1)
    quarantine = pl.read_parquet(lake.day_file("quarantine", D1))
    assert [(Path(r["file"]).name, r["line"], r["reason"]) for r in quarantine.iter_rows(named=True)] == [
        ("game+0+0.json", 701, "value out of range: 1001 outside [0, 1000] of board 'best', 'games'"),
        ("game+0+9.json", 2, "value out of range: -1 outside [0, 1000] of board 'best', 'games'"),
    ]
    assert '"g1"' in quarantine["raw"][0]
    assert (stats.read, stats.counted, stats.quarantined) == (1205, 1203, 2)
    score_day(lake, boards, D1)
    table = rank_period(lake, boards, period_of("daily", D1))
    best = table.filter(pl.col("board_id") == "best").select("user_id", "score").rows()
    assert best == [("bob", 1000.0), ("dan", 1.0)]
    assert table.filter(pl.col("board_id") == "games").height == 2
    assert table.filter((pl.col("board_id") == "points") & (pl.col("user_id") == "amy"))["score"].item() == 10**9


def test_a_value_range_must_be_ordered_and_shared_types_need_ranges_that_meet(tmp_path):
    with pytest.raises(BoardsFileError, match=r"board 'b' field 'value_range'.*min <= max; got \[5.0, 1.0\]"):
        load_boards(write_boards(tmp_path / "a.yaml", "boards: [{id: b, event_types: [t], aggregate: max, "
                                 "value_range: [5, 1]}]"))  # fmt: skip
    with pytest.raises(BoardsFileError, match=r"boards x, y count 't' with value_range that do not overlap"):
        load_boards(write_boards(tmp_path / "b.yaml", """
boards:
  - {id: x, event_types: [t], aggregate: max, value_range: [0, 10]}
  - {id: y, event_types: [t], aggregate: sum, value_range: [20, 30]}
"""))  # fmt: skip


# Exclusions and the audit, on Postgres and Redis through Dagster and the API

JWT = "jwt-secret-" + "m" * 32
PAST = dt.date(2026, 11, 2)  # a past day, to settle and reopen


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def deployed(settings, migrated_url, redis_prefix, monkeypatch):
    """Today and a past day of points published to Postgres, Redis and the lake through Dagster."""
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    monkeypatch.setenv("JWT_SECRET", JWT)
    get_settings.cache_clear()
    landing = settings.LEADERBOARD_LANDING_DIR
    today = dt.datetime.now(UTC).date()
    midnight = dt.datetime.combine(today, dt.time(), UTC)
    at = [(midnight + dt.timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ") for s in (1, 2, 3)]
    land(landing, "game", midnight, "game+0+100.json",
         [event("t1", "u1", at[0], 10), event("t2", "u2", at[1], 5), event("t3", "u3", at[2], 3)])  # fmt: skip
    land(landing, "game", dt.datetime(2026, 11, 2, 10, tzinfo=UTC), "game+0+0.json",
         [event("a1", "u1", "2026-11-02T10:00:00Z", 10), event("a2", "u2", "2026-11-02T10:30:00Z", 5)])  # fmt: skip
    cli("materialize", "--start", str(PAST), "--end", str(PAST))
    cli("materialize", "--start", str(today), "--end", str(today))
    return get_settings()


def _resources(settings) -> dict:
    return {
        "lake": LakeResource(landing_dir=str(settings.LEADERBOARD_LANDING_DIR),
                             lake_dir=str(settings.LEADERBOARD_LAKE_DIR)),
        "stores": StoresResource(lake_dir=str(settings.LEADERBOARD_LAKE_DIR), database_url=settings.DATABASE_URL,
                                 redis_url=REDIS_URL, key_prefix=settings.REDIS_KEY_PREFIX),
    }  # fmt: skip


def _tick(defs, instance, resources, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs, cursor=cursor) as context:
        result = defs.get_repository_def().get_sensor_def("moderation_changes")(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _why(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def _refresh(defs, instance, resources, cursor: str | None) -> str:
    """One sensor tick that must ask for a run, and that run: "one refresh"."""
    result = _tick(defs, instance, resources, cursor)
    assert len(result.run_requests or []) == 1, _why(result)
    request = result.run_requests[0]  # type: ignore[index]
    assert request.partition_key == dt.datetime.now(UTC).date().isoformat()  # today: the current periods
    job = defs.resolve_job_def("daily_job")
    assert job.execute_in_process(instance=instance, tags=request.tags, partition_key=request.partition_key).success
    assert result.cursor is not None
    # An API process serves a body it read for up to LOCAL_CACHE_SECONDS: then it sees this run's.
    time.sleep(LOCAL_CACHE_SECONDS)
    return result.cursor


def _daily(api: TestClient) -> list[tuple[int, str]]:
    body = api.get("/leaderboard/points/daily").json()
    return [(e["rank"], e["user_id"]) for e in body["entries"]]


def test_an_exclusion_drops_the_user_within_one_refresh_and_lifting_restores_them(deployed):
    settings = deployed
    admin = {"Authorization": f"Bearer {mint(settings, 'ops@example.com', admin=True)}"}
    defs = build_defs(settings)
    resources = _resources(settings)
    with TestClient(create_app(settings)) as api, dg.instance_for_test() as instance:
        assert _daily(api) == [(1, "u1"), (2, "u2"), (3, "u3")]
        first = _tick(defs, instance, resources, None)  # a running sensor has its cursor
        assert not first.run_requests and "first tick" in _why(first)
        assert _why(_tick(defs, instance, resources, first.cursor)) == "no exclusion added, lifted or expired"

        answer = api.post("/leaderboard/exclusions", headers=admin,
                          json={"subject": "u1", "board": "points", "reason": "bot traffic"})  # fmt: skip
        assert answer.status_code == 201, answer.text
        made = answer.json()
        assert (made["subject"], made["board"], made["created_by"], made["in_force"]) == (
            "u1", "points", "ops@example.com", True)  # fmt: skip
        assert _daily(api) == [(1, "u1"), (2, "u2"), (3, "u3")]  # not before the refresh
        refused = {
            "nope": ({"subject": "u1", "board": "nope", "reason": "x"}, 400, "unknown board 'nope'"),
            "blank": ({"subject": "u1", "reason": "  "}, 400, "Bad Request"),  # the body's schema: `extra` says where
            "past": ({"subject": "u1", "reason": "x", "until": "2020-01-01T00:00:00Z"}, 409, "is not in the future"),
        }
        for body, status, detail in refused.values():
            answer = api.post("/leaderboard/exclusions", headers=admin, json=body)
            assert answer.status_code == status and detail in answer.json()["detail"], answer.text
        cursor = _refresh(defs, instance, resources, first.cursor)
        assert _daily(api) == [(1, "u2"), (2, "u3")]  # ranks closed up
        with psycopg.connect(settings.DATABASE_URL) as conn:
            rows = conn.execute("SELECT user_id, rank FROM leaderboard_rankings WHERE board_id = 'points' "
                                "AND period_type = 'daily' AND period_key = %s ORDER BY rank",
                                (dt.datetime.now(UTC).date().isoformat(),)).fetchall()  # fmt: skip
            # another board counting the same events keeps the user: the exclusion named one board
            teams = conn.execute("SELECT count(*) FROM leaderboard_rankings WHERE board_id = 'high_score' "
                                 "AND user_id = 'u1'").fetchone()  # fmt: skip
        assert rows == [("u2", 1), ("u3", 2)] and teams is not None
        audit = api.get("/leaderboard/audit", headers=admin).json()
        assert [(a["actor"], a["action"], a["target"], a["reason"]) for a in audit] == [
            ("ops@example.com", "exclusion.add", "points/u1", "bot traffic")]  # fmt: skip
        assert audit[0]["details"]["id"] == made["id"]
        listed = api.get("/leaderboard/exclusions", params={"in_force": "true"}, headers=admin).json()
        assert [e["id"] for e in listed] == [made["id"]]

        lifted = api.post(f"/leaderboard/exclusions/{made['id']}/lift", json={"reason": "appeal upheld"},
                          headers=admin)  # fmt: skip
        assert lifted.status_code == 200 and lifted.json()["in_force"] is False
        again = api.post(f"/leaderboard/exclusions/{made['id']}/lift", json={"reason": "twice"}, headers=admin)
        assert again.status_code == 409 and "was lifted" in again.json()["detail"]
        assert api.post("/leaderboard/exclusions/999999/lift", json={"reason": "x"}, headers=admin).status_code == 404
        _refresh(defs, instance, resources, cursor)
        assert _daily(api) == [(1, "u1"), (2, "u2"), (3, "u3")]
        actions = [a["action"] for a in api.get("/leaderboard/audit", headers=admin).json()]
        assert actions == ["exclusion.lift", "exclusion.add"]
        assert api.get("/leaderboard/exclusions", params={"in_force": "true"}, headers=admin).json() == []
    page = moderation_page()
    assert [m.value for m in page.metric] == ["0", "1", "0", "2"]
    shown = frame_with(page, "subject_id")
    assert shown[["subject_id", "board_id", "state", "lifted_by"]].values.tolist() == [
        ["u1", "points", "lifted", "ops@example.com"]]  # fmt: skip
    assert frame_with(page, "target")["action"].tolist() == ["exclusion.lift", "exclusion.add"]


def test_an_exclusion_from_every_board_that_expires_is_republished_by_the_sensor(deployed):
    settings = deployed
    store = PostgresModeration(PostgresStore(settings.DATABASE_URL))
    defs = build_defs(settings)
    resources = _resources(settings)
    now = dt.datetime.now(UTC)
    with dg.instance_for_test() as instance:
        cursor = _tick(defs, instance, resources, None).cursor
        # created a minute ago for 30 s: in force between two ticks only in the past
        gone = store.exclude(
            None, "u2", "alt account", "ops", now - dt.timedelta(minutes=1), now - dt.timedelta(seconds=30)
        )
        assert not gone.in_force(now) and store.excluded(now).is_empty()
        held = store.exclude(None, "u3", "chargeback", "ops", now)
        assert store.excluded(now).rows() == [(None, "u3")]
        automation = dg.evaluate_automation_conditions(defs, instance)
        _refresh(defs, instance, resources, cursor)

        def all_time() -> set[str]:
            with TestClient(create_app(settings)) as api:  # a new app: no page kept in its memory
                return {e["user_id"] for e in api.get("/leaderboard/points/all_time").json()["entries"]}

        with TestClient(create_app(settings)) as api:
            assert _daily(api) == [(1, "u1"), (2, "u2")]
        assert "u3" in all_time()  # not this run's: all-time, the week and the month follow it by automation
        follow = dg.evaluate_automation_conditions(defs, instance, cursor=automation.cursor)
        for asset in ("weekly_rankings", "monthly_rankings", "all_time_rankings"):
            assert len(follow.get_requested_partitions(dg.AssetKey(asset))) >= 1, asset
        assert defs.resolve_job_def("all_time_job").execute_in_process(instance=instance).success
        assert all_time() == {"u1", "u2"}
        # an expiry alone is a change: a tick whose last one was before `until` asks for a run
        last = store.changes(None, now, now).last_audit_id
        before = json.dumps({"audit": last, "at": (now - dt.timedelta(minutes=2)).isoformat()})
        assert store.changes(last, now - dt.timedelta(minutes=2), now).count == 1
        assert len(_tick(defs, instance, resources, before).run_requests or []) == 1
        assert held.in_force(now)


def test_board_config_changes_and_reopenings_are_in_the_audit(deployed):
    settings = deployed
    admin = {"Authorization": f"Bearer {mint(settings, 'ann', admin=True)}"}
    settlement = PostgresSettlement(PostgresStore(settings.DATABASE_URL))
    end = dt.datetime.combine(PAST + dt.timedelta(days=1), dt.time(), UTC)
    settled = settlement.settle_due(end + dt.timedelta(hours=2), dt.timedelta(hours=1), dt.UTC, None)
    assert ("points", str(PAST)) in {(s.board_id, s.period_key) for s in settled}
    with TestClient(create_app(settings)) as api:
        answer = api.put("/leaderboard/config", headers=admin,
                         json={"boards": {"points": {"display_limit": 5}}, "reason": "promo week"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert (
            api.put("/leaderboard/config", headers=admin, json={"boards": {"points": {"display_limit": 7}}}).status_code
            == 200
        )
        reopened = api.post(f"/leaderboard/points/daily/reopen?at={PAST}", json={"reason": "refund"}, headers=admin)
        assert reopened.status_code == 200, reopened.text
        audit = api.get("/leaderboard/audit", headers=admin).json()
        only_config = api.get("/leaderboard/audit", params={"action": "board."}, headers=admin).json()
    assert [(a["action"], a["target"], a["reason"]) for a in audit] == [
        ("period.reopen", f"points/daily/{PAST}", "refund"),
        ("board.config", "points", ""),
        ("board.config", "points", "promo week"),
    ]
    assert audit[2]["details"] == {"before": None, "after": {"display_limit": 5, "enabled": True}}
    assert audit[1]["details"]["before"] == {"display_limit": 5, "enabled": True}
    assert audit[1]["details"]["after"] == {"display_limit": 7, "enabled": True}
    assert [a["id"] for a in only_config] == [audit[1]["id"], audit[2]["id"]]
    assert "period.reopen points/daily/2026-11-02: refund" in cli("moderation", "audit")


def test_the_cli_excludes_lists_lifts_and_shows_the_audit(deployed):
    out = cli("moderation", "exclude", "u9", "--reason", "spam", "--until", "2099-01-01T00:00:00Z", "--by", "ops")
    assert out.startswith("exclusion ") and "u9 excluded from every board until 2099-01-01T00:00:00Z" in out
    ident = out.split()[1].rstrip(":")
    assert "in force" in cli("moderation", "list", "--in-force")
    assert f"exclusion {ident} lifted" in cli("moderation", "lift", ident, "--reason", "mistake", "--by", "ops")
    assert "lifted" in cli("moderation", "list")
    assert cli("moderation", "list", "--in-force").count("\n") == 1  # the header only
    audit = cli("moderation", "audit", "--action", "exclusion.")
    assert "ops exclusion.lift */u9: mistake" in audit and "ops exclusion.add */u9: spam" in audit
    bad = CliRunner().invoke(main, ["moderation", "exclude", "u9", "--reason", "x", "--until", "2020-01-01T00:00:00"])
    assert bad.exit_code != 0 and "no UTC offset" in bad.output
    bad = CliRunner().invoke(main, ["moderation", "exclude", "u9", "--reason", "x", "--board", "nope"])
    assert bad.exit_code != 0 and "unknown board 'nope'" in bad.output


def test_the_routes_are_for_admins_and_need_postgres(settings, monkeypatch):
    monkeypatch.setenv("JWT_SECRET", JWT)
    get_settings.cache_clear()
    s = get_settings()
    user = {"Authorization": f"Bearer {mint(s, 'u1')}"}
    admin = {"Authorization": f"Bearer {mint(s, 'ops', admin=True)}"}
    calls = [("post", "/leaderboard/exclusions", {"subject": "u1", "reason": "r"}),
             ("get", "/leaderboard/exclusions", None),
             ("post", "/leaderboard/exclusions/1/lift", {"reason": "r"}),
             ("get", "/leaderboard/audit", None)]  # fmt: skip
    with TestClient(create_app(s)) as api:
        for method, path, body in calls:
            kwargs = {"json": body} if body is not None else {}
            assert api.request(method, path, **kwargs).status_code == 401, path
            assert api.request(method, path, headers=user, **kwargs).status_code == 403, path
            answer = api.request(method, path, headers=admin, **kwargs)
            assert answer.status_code == 409 and answer.json()["detail"] == NO_POSTGRES, path
            assert answer.headers["content-type"].startswith("application/problem+json")
        bad = api.post("/leaderboard/exclusions", json={"subject": "u1", "reason": "r", "extra": 1}, headers=admin)
        assert bad.status_code == 400
    assert CliRunner().invoke(main, ["moderation", "list"]).exit_code != 0
    assert [i.value for i in moderation_page().info] == [NO_POSTGRES]


def moderation_page() -> AppTest:
    st.cache_data.clear()
    page = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    page.switch_page("app_pages/moderation.py").run()
    assert not page.exception, page.exception
    return page


def frame_with(page: AppTest, column: str):
    found = [d.value for d in page.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in page.dataframe]
    return found[0]
