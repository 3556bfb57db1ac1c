"""The real Dagster daemon runs our sensors and automation: a landed file becomes standings."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from leaderboard.settings import load_settings
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from pipelines.definitions import build_defs
from tests.conftest import event, land

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 240


def _wait(what: str, done: Callable[[], bool], log: Path) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < DEADLINE_SECONDS:
        if done():
            return time.monotonic() - t0
        time.sleep(1)
    pytest.fail(f"{what} not within {DEADLINE_SECONDS} s; daemon log:\n{log.read_text()[-6000:]}")


@pytest.fixture
def daemon(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    # deploy/dagster.yaml (run queue, tag limits, retries) with the default SQLite storage
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    config.pop("storage")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LEADERBOARD_LANDING_DIR": str(tmp_path / "landing"),
        "LEADERBOARD_LAKE_DIR": str(tmp_path / "lake"),
        "LANDING_SENSOR_INTERVAL_SECONDS": "2",
        "AUTOMATION_INTERVAL_SECONDS": "3",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "LEADERBOARD_TIMEZONE", "LEADERBOARD_BOARDS"):
        env.pop(name, None)
    (tmp_path / "landing" / "topics").mkdir(parents=True)
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield tmp_path, log
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_daemon_publishes_a_landed_file_and_serves_refresh_requests(daemon):
    root, log = daemon
    lake = Lake(root / "lake")
    now = dt.datetime.now(dt.UTC)
    today = now.date().isoformat()
    hour = now.replace(minute=0, second=0, microsecond=0)
    at = hour.isoformat().replace("+00:00", "Z")
    land(root / "landing", "events", hour, "events+0+0.json", [event("e1", "alice", at, 7), event("e2", "bob", at, 3)])

    daily = _wait("daily standings", lambda: lake.snapshot("points", "daily", today).is_file(), log)
    week = f"{now.isocalendar().year}-W{now.isocalendar().week:02d}"
    weekly = _wait("weekly standings (automation)", lambda: lake.snapshot("points", "weekly", week).is_file(), log)
    all_time = _wait("all-time standings", lambda: lake.snapshot("points", "all_time", "all").is_file(), log)
    print(f"daily after {daily:.0f} s, weekly {weekly:.0f} s later, all-time {all_time:.0f} s later")

    rid = Stores(lake, None).refresh_requests().request("admin")
    _wait("refresh request served", lambda: Stores(lake, None).refresh_requests().status(rid) == "done", log)

    # A backfill of three days as the UI's asset graph launches it. The single-run policy makes
    # the whole range one run per step of the asset graph that maps days one to one:
    # clean_events + daily_scores, then daily_rankings (it also reads the day before).
    first = now.date() - dt.timedelta(days=10)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(3)]
    settings = load_settings(LEADERBOARD_LANDING_DIR=root / "landing", LEADERBOARD_LAKE_DIR=root / "lake")
    graph = build_defs(settings).resolve_asset_graph()
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="ui0backfill",
            asset_graph=graph,
            partition_names=days,
            asset_selection=[dg.AssetKey(k) for k in ("clean_events", "daily_scores", "daily_rankings")],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)

        def finished() -> bool:
            return instance.get_backfill("ui0backfill").status != BulkActionStatus.REQUESTED

        _wait("backfill", finished, log)
        assert instance.get_backfill("ui0backfill").status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": "ui0backfill"}))
        ranges = sorted(
            (
                r.dagster_run.tags["dagster/asset_partition_range_start"],
                r.dagster_run.tags["dagster/asset_partition_range_end"],
            )
            for r in runs
        )
        # daily_rankings also covers the day after the range: its previous_rank reads the last day
        after = (first + dt.timedelta(days=3)).isoformat()
        assert ranges == [(days[0], days[-1]), (days[0], after)]
    assert all(lake.snapshot("points", "daily", d).is_file() for d in days)
