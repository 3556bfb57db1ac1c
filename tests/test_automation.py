"""Schedules, the landing and refresh sensors, and declarative automation of the periods."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pytest
from dagster._utils.schedules import cron_string_iterator

from leaderboard.settings import SettingsError, load_settings
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from pipelines import landing_watch
from pipelines.automation import refresh_cron
from pipelines.definitions import build_defs
from pipelines.jobs import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from pipelines.landing_watch import WatchCursor, local_days
from pipelines.resources import LakeResource, StoresResource
from tests.conftest import event, land

NY = ZoneInfo("America/New_York")
UTC = dt.UTC


@pytest.fixture
def ny_defs(settings, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("LEADERBOARD_TIMEZONE", "America/New_York")
    return build_defs(load_settings())


def _tick(defs: dg.Definitions, name: str, at: dt.datetime) -> list[str]:
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def(name)
    with (
        dg.instance_for_test() as instance,  # a schedule context needs an instance with a ref
        dg.build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=repo) as context,
    ):
        data = schedule.evaluate_tick(context)
    return [r.partition_key for r in data.run_requests or []]


@pytest.mark.parametrize(
    ("name", "local", "expected"),
    [
        # 2026-03-08 is the 23-hour day in New York (02:00 EST -> 03:00 EDT)
        ("live_refresh", dt.datetime(2026, 3, 7, 23, 55, tzinfo=NY), "2026-03-07"),
        ("live_refresh", dt.datetime(2026, 3, 8, 0, 0, tzinfo=NY), "2026-03-08"),
        ("live_refresh", dt.datetime(2026, 3, 8, 23, 55, tzinfo=NY), "2026-03-08"),  # 03:55Z next day
        ("live_refresh", dt.datetime(2026, 3, 9, 0, 0, tzinfo=NY), "2026-03-09"),
        ("daily_close", dt.datetime(2026, 3, 8, 0, 15, tzinfo=NY), "2026-03-07"),
        ("daily_close", dt.datetime(2026, 3, 9, 0, 15, tzinfo=NY), "2026-03-08"),
        ("daily_close", dt.datetime(2026, 11, 2, 0, 15, tzinfo=NY), "2026-11-01"),  # the 25-hour day closes
    ],
)
def test_schedule_ticks_request_the_local_day(ny_defs, name, local, expected):
    assert _tick(ny_defs, name, local.astimezone(UTC)) == [expected]


def test_schedules_tick_at_local_times_across_dst(ny_defs):
    repo = ny_defs.get_repository_def()
    close, refresh = repo.get_schedule_def("daily_close"), repo.get_schedule_def("live_refresh")
    assert close.execution_timezone == refresh.execution_timezone == "America/New_York"
    start = dt.datetime(2026, 3, 7, 12, tzinfo=UTC).timestamp()
    ticks = cron_string_iterator(start, close.cron_schedule, close.execution_timezone)  # what the daemon uses
    got = [next(ticks).astimezone(UTC) for _ in range(3)]
    # 00:15 local each day: EST (-5) before the switch, EDT (-4) after
    assert got == [
        dt.datetime(2026, 3, 8, 5, 15, tzinfo=UTC),
        dt.datetime(2026, 3, 9, 4, 15, tzinfo=UTC),
        dt.datetime(2026, 3, 10, 4, 15, tzinfo=UTC),
    ]
    assert refresh.cron_schedule == "*/5 * * * *"


def test_schedule_before_start_date_requests_nothing(ny_defs):
    assert _tick(ny_defs, "live_refresh", dt.datetime(2023, 6, 1, 12, tzinfo=UTC)) == []


@pytest.mark.parametrize(
    ("minutes", "cron"), [(5, "*/5 * * * *"), (30, "*/30 * * * *"), (60, "0 */1 * * *"), (1440, "0 0 * * *")]
)
def test_refresh_interval_becomes_a_cron(minutes, cron):
    assert refresh_cron(minutes) == cron


@pytest.mark.parametrize("minutes", [7, 45, 90, 300])
def test_refresh_interval_that_would_tick_unevenly_is_refused(settings, monkeypatch, minutes):
    monkeypatch.setenv("REFRESH_INTERVAL_MINUTES", str(minutes))
    with pytest.raises(SettingsError, match=f"REFRESH_INTERVAL_MINUTES='{minutes}': .*must divide an hour"):
        load_settings()


def test_utc_hour_maps_to_local_days():
    assert local_days(dt.datetime(2026, 3, 9, 3, tzinfo=UTC), NY) == [dt.date(2026, 3, 8)]
    assert local_days(dt.datetime(2026, 3, 9, 4, tzinfo=UTC), NY) == [dt.date(2026, 3, 9)]
    # a half-hour offset: 18:00-19:00Z is 23:30-00:30 in Kolkata
    assert local_days(dt.datetime(2026, 3, 9, 18, tzinfo=UTC), ZoneInfo("Asia/Kolkata")) == [
        dt.date(2026, 3, 9),
        dt.date(2026, 3, 10),
    ]


def _sense(defs: dg.Definitions, settings, cursor: str | None) -> dg.SensorResult:
    sensor = defs.get_repository_def().get_sensor_def("landing_files")
    lake = LakeResource(landing_dir=str(settings.LEADERBOARD_LANDING_DIR), lake_dir=str(settings.LEADERBOARD_LAKE_DIR))
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"lake": lake}, definitions=defs
        ) as context,
    ):
        return sensor(context)


def _requested(result: dg.SensorResult) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests or [])


def test_landing_sensor_requests_each_day_once_and_late_files_again(ny_defs, settings):
    landing = settings.LEADERBOARD_LANDING_DIR
    h1 = dt.datetime(2026, 3, 9, 3, tzinfo=UTC)  # New York 2026-03-08 23:00
    h2 = dt.datetime(2026, 3, 9, 15, tzinfo=UTC)  # New York 2026-03-09 11:00
    land(landing, "events", h1, "events+0+0.json", [event("a", "u1", "2026-03-09T03:10:00Z", 1)])
    land(landing, "events", h1, "events+1+0.json", [event("b", "u2", "2026-03-09T03:20:00Z", 1)])
    land(landing, "events", h2, "events+0+1.json", [event("c", "u1", "2026-03-09T15:10:00Z", 1)])
    first = _sense(ny_defs, settings, None)
    assert _requested(first) == ["2026-03-08", "2026-03-09"]
    by_day = {r.partition_key: r for r in first.run_requests}
    assert by_day["2026-03-08"].tags["leaderboard/files"] == "2"
    assert len({r.run_key for r in first.run_requests}) == 2

    again = _sense(ny_defs, settings, first.cursor)
    assert _requested(again) == []

    # a late file for the old day, in its old hour folder
    land(landing, "events", h1, "events+0+7.json", [event("d", "u3", "2026-03-09T03:30:00Z", 1)])
    late = _sense(ny_defs, settings, again.cursor)
    assert _requested(late) == ["2026-03-08"]
    assert late.run_requests[0].run_key not in {r.run_key for r in first.run_requests}

    # the cursor restored from its string behaves the same
    restored = WatchCursor.from_json(late.cursor).to_json()
    assert restored == late.cursor
    assert _requested(_sense(ny_defs, settings, restored)) == []

    # a rewritten file (new size) is a new version of it
    land(
        landing,
        "events",
        h2,
        "events+0+1.json",
        [event("c", "u1", "2026-03-09T15:10:00Z", 2), event("e", "u4", "2026-03-09T15:11:00Z", 1)],
    )
    assert _requested(_sense(ny_defs, settings, restored)) == ["2026-03-09"]


def test_landing_sensor_does_not_list_unchanged_folders(settings, monkeypatch):
    monkeypatch.setattr(landing_watch, "SLACK_NS", 200_000_000)  # so that the folders age within the test
    landing = settings.LEADERBOARD_LANDING_DIR
    for day in range(1, 29):
        hour = dt.datetime(2026, 2, day, 12, tzinfo=UTC)
        land(landing, "events", hour, "events+0+0.json", [event(f"e{day}", "u", hour.isoformat(), 1)])
    time.sleep(0.5)  # older than the slack before the first scan
    changes, cursor = landing_watch.scan(landing, WatchCursor())
    assert len(changes) == 28
    hour = dt.datetime(2026, 2, 3, 12, tzinfo=UTC)
    land(landing, "events", hour, "events+0+9.json", [event("late", "u", hour.isoformat(), 1)])

    listed: list[str] = []
    real_scandir = os.scandir

    def spy(path):
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(landing_watch.os, "scandir", spy)
    changes, _ = landing_watch.scan(landing, cursor)
    assert [c.path.rsplit("/", 1)[1] for c in changes] == ["events+0+9.json"]
    hour_folders_listed = [p for p in listed if Path(p).name.startswith("hour=")]
    assert hour_folders_listed == [str(hour_folder_of(landing, hour))]


def test_a_folder_copied_in_with_its_old_times_is_still_seen(settings, tmp_path):
    landing = settings.LEADERBOARD_LANDING_DIR
    (landing / "topics").mkdir(parents=True)
    _, cursor = landing_watch.scan(landing, WatchCursor())
    time.sleep(0.01)
    hour = dt.datetime(2026, 2, 3, 12, tzinfo=UTC)
    elsewhere = land(tmp_path / "restore", "events", hour, "events+0+0.json", [event("e", "u", hour.isoformat(), 1)])
    old = time.time() - 30 * 86_400
    os.utime(elsewhere, (old, old))
    os.utime(elsewhere.parent, (old, old))
    target = hour_folder_of(landing, hour)
    target.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(elsewhere.parent), str(target)], check=True)  # keeps the old mtimes
    assert target.stat().st_mtime < time.time() - 86_400
    changes, _ = landing_watch.scan(landing, cursor, now_ns=cursor.scanned_at_ns + 10 * landing_watch.SLACK_NS)
    assert [c.path.rsplit("/", 1)[1] for c in changes] == ["events+0+0.json"]


def hour_folder_of(landing: Path, hour: dt.datetime) -> Path:
    from leaderboard.landing import hour_folder

    return hour_folder(landing, "events", hour)


@pytest.mark.parametrize("store", ["lake", "postgres"])
def test_refresh_requests_become_one_run_and_end_as_that_run_did(settings, store, request):
    database_url = request.getfixturevalue("migrated_url") if store == "postgres" else None
    lake = Lake(settings.LEADERBOARD_LAKE_DIR)
    defs = build_defs(settings)
    repo = defs.get_repository_def()
    resources = {
        "lake": LakeResource(landing_dir=str(settings.LEADERBOARD_LANDING_DIR), lake_dir=str(lake.root)),
        "stores": StoresResource(lake_dir=str(lake.root), database_url=database_url),
    }
    (settings.LEADERBOARD_LANDING_DIR / "topics").mkdir(parents=True)
    with dg.instance_for_test() as instance:

        def request_and_run(fail: bool) -> tuple[str, dg.ExecuteInProcessResult]:
            # what POST /leaderboard/config/refresh calls
            rid = Stores(lake, database_url).refresh_requests().request("admin")
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
                run_request = repo.get_sensor_def("refresh_requests")(context)
            assert isinstance(run_request, dg.RunRequest)
            assert run_request.partition_key == dt.datetime.now(UTC).date().isoformat()  # boards.yaml is UTC
            assert Stores(lake, database_url).refresh_requests().status(rid) == "running"
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
                assert isinstance(repo.get_sensor_def("refresh_requests")(context), dg.SkipReason)  # taken once
            job = defs.resolve_job_def("daily_job")
            if fail:  # a landing zone that is not there fails the run
                job = build_defs(
                    settings.model_copy(update={"LEADERBOARD_LANDING_DIR": lake.root / "nowhere"})
                ).resolve_job_def("daily_job")
            result = job.execute_in_process(
                instance=instance, tags=run_request.tags, partition_key=run_request.partition_key, raise_on_error=False
            )
            assert result.success is not fail
            ended = dg.DagsterEventType.RUN_FAILURE if fail else dg.DagsterEventType.RUN_SUCCESS
            event = next(e for e in result.all_events if e.event_type == ended)
            name = "refresh_requests_failed" if fail else "refresh_requests_done"
            context = dg.build_run_status_sensor_context(
                name, event, instance, result.dagster_run, resources=resources, repository_def=repo
            )
            repo.get_sensor_def(name)(context)
            return rid, result

        rid, _ = request_and_run(fail=False)
        assert Stores(lake, database_url).refresh_requests().status(rid) == "done"
        rid, _ = request_and_run(fail=True)
        assert Stores(lake, database_url).refresh_requests().status(rid) == "failed"


def _run_range(defs, instance, job: str, first: str | None = None, last: str | None = None) -> None:
    tags = {} if first is None else {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}
    assert defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags).success


def _requested_by_automation(result) -> dict[str, list[str | None]]:
    names = ("daily_rankings", "weekly_rankings", "monthly_rankings", "all_time_rankings")
    found = {n: sorted(result.get_requested_partitions(dg.AssetKey(n)), key=str) for n in names}
    return {n: keys for n, keys in found.items() if keys}


def test_periods_follow_their_days_by_declarative_automation(settings):
    landing, lake = settings.LEADERBOARD_LANDING_DIR, Lake(settings.LEADERBOARD_LAKE_DIR)
    defs = build_defs(settings)
    for day in (1, 2):  # Sunday 2026-03-01 ends ISO week 9; Monday 03-02 starts week 10
        hour = dt.datetime(2026, 3, day, 12, tzinfo=UTC)
        land(landing, "events", hour, "events+0+0.json", [event(f"e{day}", "u1", hour.isoformat(), 5)])
    with dg.DagsterInstance.ephemeral() as instance:
        start = dg.evaluate_automation_conditions(defs, instance)
        assert start.total_requested == 0

        _run_range(defs, instance, "daily_job", "2026-03-01", "2026-03-02")
        after_days = dg.evaluate_automation_conditions(defs, instance, cursor=start.cursor)
        # the weeks and month holding the days, and those after them (their previous ranks changed)
        assert _requested_by_automation(after_days) == {
            "weekly_rankings": ["2026-02-23", "2026-03-02", "2026-03-09"],
            "monthly_rankings": ["2026-03-01", "2026-04-01"],
            "all_time_rankings": [None],
        }
        _run_range(defs, instance, "weekly_job", "2026-02-23", "2026-03-09")
        _run_range(defs, instance, "monthly_job", "2026-03-01", "2026-04-01")
        _run_range(defs, instance, "all_time_job")
        assert lake.snapshot("points", "weekly", "2026-W10").is_file()
        assert not lake.snapshot("points", "weekly", "2026-W11").exists()  # none of its days ran yet
        settled = dg.evaluate_automation_conditions(defs, instance, cursor=after_days.cursor)
        assert settled.total_requested == 0

        # a late file for the closed Sunday: its week, the week after, the month, all-time, and Monday's ranks
        land(
            landing,
            "events",
            dt.datetime(2026, 3, 1, 12, tzinfo=UTC),
            "events+0+9.json",
            [event("late", "u2", "2026-03-01T12:30:00Z", 9)],
        )
        _run_range(defs, instance, "daily_job", "2026-03-01", "2026-03-01")
        late = dg.evaluate_automation_conditions(defs, instance, cursor=settled.cursor)
        assert _requested_by_automation(late) == {
            "daily_rankings": ["2026-03-02"],
            "weekly_rankings": ["2026-02-23", "2026-03-02"],
            "monthly_rankings": ["2026-03-01", "2026-04-01"],
            "all_time_rankings": [None],
        }


def test_a_ten_day_backfill_equals_ten_single_day_runs(settings, tmp_path):
    from pipelines.generate import GenerateSpec, generate

    first = dt.date(2026, 2, 24)
    days = [first + dt.timedelta(days=i) for i in range(10)]
    generate(GenerateSpec(settings.LEADERBOARD_LANDING_DIR, first, 10, 60, 300, seed=5, bad_rate=0.002, dup_rate=0.02))
    lakes = {}
    for mode in ("backfill", "day_by_day"):
        lake_dir = tmp_path / mode
        defs = build_defs(settings.model_copy(update={"LEADERBOARD_LAKE_DIR": lake_dir}))
        with dg.DagsterInstance.ephemeral() as instance:
            if mode == "backfill":
                _run_range(defs, instance, "daily_job", days[0].isoformat(), days[-1].isoformat())
                assert len(instance.get_run_records()) == 1
            else:
                for day in days:
                    _run_range(defs, instance, "daily_job", day.isoformat(), day.isoformat())
                assert len(instance.get_run_records()) == 10
        lakes[mode] = Lake(lake_dir)
    stable = ["board_id", "user_id", "rank", "score", "previous_rank", "rank_change", "event_count", "reached_at"]
    compared = 0
    for day in days:
        for dataset in ("clean_events", "daily_scores"):
            a, b = (pl.read_parquet(lakes[m].day_file(dataset, day)) for m in lakes)
            assert a.sort(a.columns).equals(b.sort(b.columns)), (dataset, day)
        for board in ("points", "referrals", "high_score", "fastest_lap"):
            a, b = (pl.read_parquet(lakes[m].snapshot(board, "daily", day.isoformat())).select(stable) for m in lakes)
            assert a.equals(b), (board, day)
            compared += a.height
    assert compared > 500


def test_first_tick_skips_days_ingested_after_their_files_landed(settings):
    defs = build_defs(settings)
    landing, lake = settings.LEADERBOARD_LANDING_DIR, Lake(settings.LEADERBOARD_LAKE_DIR)
    for day in (1, 2):
        hour = dt.datetime(2026, 3, day, 12, tzinfo=UTC)
        land(landing, "events", hour, "events+0+0.json", [event(f"e{day}", "u1", hour.isoformat(), 5)])
    with dg.DagsterInstance.ephemeral() as instance:
        _run_range(defs, instance, "daily_job", "2026-03-01", "2026-03-01")
    assert lake.day_file("clean_events", dt.date(2026, 3, 1)).is_file()
    assert _requested(_sense(defs, settings, None)) == ["2026-03-02"]


def test_a_day_still_running_does_not_hold_its_week_back(settings):
    landing = settings.LEADERBOARD_LANDING_DIR
    defs = build_defs(settings)
    hour = dt.datetime(2026, 3, 2, 12, tzinfo=UTC)
    land(landing, "events", hour, "events+0+0.json", [event("e1", "u1", hour.isoformat(), 5)])
    with dg.DagsterInstance.ephemeral() as instance:
        start = dg.evaluate_automation_conditions(defs, instance)
        _run_range(defs, instance, "daily_job", "2026-03-02", "2026-03-02")
        # the next refresh of the same day is already queued when automation looks
        instance.create_run_for_job(
            defs.resolve_job_def("daily_job"),
            tags={"dagster/partition": "2026-03-02"},
            status=dg.DagsterRunStatus.NOT_STARTED,
        )
        result = dg.evaluate_automation_conditions(defs, instance, cursor=start.cursor)
        assert result.get_requested_partitions(dg.AssetKey("weekly_rankings")) == {"2026-03-02", "2026-03-09"}


def test_no_new_run_for_a_day_whose_run_waits_in_the_queue(settings):
    defs = build_defs(settings)
    landing = settings.LEADERBOARD_LANDING_DIR
    hour = dt.datetime(2026, 3, 2, 12, tzinfo=UTC)
    land(landing, "events", hour, "events+0+0.json", [event("e1", "u1", hour.isoformat(), 5)])
    sensor = defs.get_repository_def().get_sensor_def("landing_files")
    lake = LakeResource(landing_dir=str(landing), lake_dir=str(settings.LEADERBOARD_LAKE_DIR))
    with dg.DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(
            defs.resolve_job_def("daily_job"),
            tags={"leaderboard/day": "2026-03-02"},
            status=dg.DagsterRunStatus.NOT_STARTED,
        )
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}, definitions=defs) as context:
            assert _requested(sensor(context)) == []  # the queued run will read the new file
        instance.report_run_canceled(run)
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}, definitions=defs) as context:
            assert _requested(sensor(context)) == ["2026-03-02"]
