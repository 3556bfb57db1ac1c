from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg
import pytest

from leaderboard.periods import UTC
from pipelines.definitions import build_defs
from pipelines.jobs import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from tests.conftest import event, land

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_partitions_in_the_boards_timezone(settings, monkeypatch):
    monkeypatch.setenv("LEADERBOARD_TIMEZONE", "America/New_York")
    from leaderboard.settings import load_settings

    defs = build_defs(load_settings())
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "landed_events",
        "clean_events",
        "daily_scores",
        "daily_rankings",
        "weekly_rankings",
        "monthly_rankings",
        "all_time_rankings",
        "season_rankings",
    }
    assert isinstance(graph.get(dg.AssetKey("season_rankings")).partitions_def, dg.DynamicPartitionsDefinition)
    daily = graph.get(dg.AssetKey("daily_rankings")).partitions_def
    weekly = graph.get(dg.AssetKey("weekly_rankings")).partitions_def
    assert daily.timezone == "America/New_York" and daily.get_first_partition_key() == "2024-01-01"
    assert weekly.get_first_partition_key() == "2024-01-01"  # a Monday
    assert graph.get(dg.AssetKey("weekly_rankings")).backfill_policy == dg.BackfillPolicy.single_run()
    for job in ("daily_job", "weekly_job", "monthly_job", "all_time_job", "season_job"):
        assert defs.resolve_job_def(job)


def test_ranking_assets_carry_checks_automation_and_freshness(settings):
    defs = build_defs(settings)
    graph = defs.resolve_asset_graph()
    for name in ("daily_rankings", "weekly_rankings", "monthly_rankings", "all_time_rankings"):
        node = graph.get(dg.AssetKey(name))
        assert node.automation_condition is not None and node.automation_condition.get_label() == "daily scores changed"
        policy = node.freshness_policy
        assert policy.fail_window.to_timedelta() == dt.timedelta(minutes=30)  # six missed 5-minute refreshes
        checks = {k.name for k in graph.get_check_keys_for_assets({dg.AssetKey(name)})}
        # lake only: no Redis-against-Postgres check to run
        assert checks == {"ranks_contiguous", "one_row_per_user", "entries_match_scores"}
    assert {k.name for k in graph.get_check_keys_for_assets({dg.AssetKey("clean_events")})} == {"quarantine_rate"}
    repo = defs.get_repository_def()
    assert {s.name for s in repo.schedule_defs} == {"live_refresh", "daily_close", "retention_daily"}
    assert {s.name for s in repo.sensor_defs} == {
        "landing_files",
        "refresh_requests",
        "refresh_requests_done",
        "refresh_requests_failed",
        "follow_daily_scores",
        "settle_periods",
        "settlement_webhooks",
        "moderation_changes",
        "season_rankings",
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in repo.sensor_defs)


def test_dagster_definitions_validate_passes(tmp_path):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "LEADERBOARD_LAKE_DIR": str(tmp_path / "lake"),
        "LEADERBOARD_LANDING_DIR": str(tmp_path / "landing"),
    }
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_importing_the_runner_builds_no_definitions_and_installs_no_warning_filter():
    # A setting that would stop any build: importing must not read the settings at all.
    env = {**os.environ, "LEADERBOARD_TIMEZONE": "Not/AZone"}
    code = """
import sys, warnings
import pipelines.runner
assert "pipelines.definitions" not in sys.modules, "the runner imported the definitions"
assert "pipelines.assets" not in sys.modules, "the runner imported the assets"
import dagster as dg
import pipelines.definitions
with warnings.catch_warnings(record=True) as caught:
    warnings.warn("a beta feature", dg.BetaWarning, stacklevel=1)
assert caught, "an import silenced Dagster's beta warnings for the whole process"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_building_quietens_only_the_beta_warnings_it_knows(settings):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_defs(settings)
        warnings.warn("a beta feature used elsewhere", dg.BetaWarning, stacklevel=1)
    assert [str(w.message) for w in caught if issubclass(w.category, dg.BetaWarning)] == [
        "a beta feature used elsewhere"
    ]


DB_PASSWORD, REDIS_PASSWORD = "pg-s3cret-4f9a", "redis-s3cret-77c1"
DATABASE_URL = f"postgresql://leaderboard:{DB_PASSWORD}@db.internal:5432/leaderboard?sslmode=require"


def _shown_to_the_ui(defs: dg.Definitions) -> str:
    """The repository snapshot the code server hands the webserver, serialized: all the UI can show."""
    from dagster._core.remote_representation.external_data import RepositorySnap  # no public equivalent

    return dg.serialize_value(RepositorySnap.from_def(defs.get_repository_def()))


@pytest.mark.parametrize(
    "redis",
    [
        {"REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache.internal:6380/2"},
        {"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380", "REDIS_PASSWORD": REDIS_PASSWORD},
    ],
    ids=["redis-url", "redis-host"],
)
def test_the_ui_sees_secret_variables_by_name_only(settings, monkeypatch, redis):
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    for name, value in redis.items():
        monkeypatch.setenv(name, value)
    from leaderboard.settings import load_settings

    defs = build_defs(load_settings())
    shown = _shown_to_the_ui(defs)
    for secret in (DB_PASSWORD, REDIS_PASSWORD, DATABASE_URL, redis.get("REDIS_URL", DATABASE_URL)):
        assert secret not in shown
    configured = defs.get_repository_def().get_top_level_resources()["stores"].config_schema.default_value
    assert configured["database_url"] == {"env": "DATABASE_URL"}
    if "REDIS_URL" in redis:
        assert configured["redis_url"] == {"env": "REDIS_URL"} and configured.get("redis_host") is None
    else:
        assert configured["redis_password"] == {"env": "REDIS_PASSWORD"} and configured.get("redis_url") is None
        assert (configured["redis_host"], configured["redis_port"]) == ("cache.internal", 6380)  # not secrets


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"DATABASE_URL": DATABASE_URL, "REDIS_URL": "redis://:p@cache.internal:6379/0", "REDIS_KEY_PREFIX": "lb"},
        {"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380", "REDIS_PASSWORD": "p@ss/w:rd"},
        {"REDIS_HOST": "cache.internal", "REDIS_PASSWORD": ""},
        {"REDIS_URL": "redis://cache.internal:6379/1", "REDIS_HOST": "ignored.internal"},
    ],
    ids=["lake-only", "urls", "host-and-password", "host-without-password", "url-over-host"],
)
def test_a_run_resolves_the_stores_the_settings_name(settings, monkeypatch, env):
    from leaderboard.settings import load_settings
    from leaderboard.stores import Stores

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    with dg.build_resources({"stores": build_defs(s).resources["stores"]}) as resources:
        assert resources.stores.stores == Stores.from_settings(s)
        assert resources.stores.database_url == s.DATABASE_URL


def test_settings_built_by_hand_that_contradict_the_environment_are_refused(settings, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    other = settings.model_copy(update={"DATABASE_URL": "postgresql://someone@elsewhere/db"})
    with pytest.raises(ValueError, match="DATABASE_URL"):
        build_defs(other)


def test_daily_scores_reports_each_days_rows(settings):
    """The run's metadata counts the day's score rows, read from the scores file the ingest wrote."""
    records = [event(f"e{i}", f"u{i % 3}", f"2026-03-03T10:0{i}:00Z", i + 1) for i in range(5)]
    records.append(event("g1", "u9", "2026-03-03T10:09:00Z", 7, event_type="game.finished"))
    land(
        settings.LEADERBOARD_LANDING_DIR, "events", dt.datetime(2026, 3, 3, 10, tzinfo=UTC), "events+0+0.json", records
    )
    tags = {PARTITION_RANGE_START_TAG: "2026-03-03", PARTITION_RANGE_END_TAG: "2026-03-03"}
    with dg.DagsterInstance.ephemeral() as instance:
        result = build_defs(settings).resolve_job_def("daily_job").execute_in_process(instance=instance, tags=tags)
    assert result.success
    [scored] = result.asset_materializations_for_node("daily_scores")
    assert scored.metadata["rows"].value == 4  # points: u0, u1, u2; high_score: u9
