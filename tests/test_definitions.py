from __future__ import annotations

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
