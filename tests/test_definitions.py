from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from pipelines.definitions import build_defs

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
    }
    daily = graph.get(dg.AssetKey("daily_rankings")).partitions_def
    weekly = graph.get(dg.AssetKey("weekly_rankings")).partitions_def
    assert daily.timezone == "America/New_York" and daily.get_first_partition_key() == "2024-01-01"
    assert weekly.get_first_partition_key() == "2024-01-01"  # a Monday
    assert graph.get(dg.AssetKey("weekly_rankings")).backfill_policy == dg.BackfillPolicy.single_run()
    for job in ("daily_job", "weekly_job", "monthly_job", "all_time_job"):
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
