"""Retention's sweep of scratch folders that killed runs left in the lake."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from leaderboard.boards import BoardSet
from leaderboard.stores.lake import Lake
from pipelines import retention


def test_scratch_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path: Path, boards: BoardSet) -> None:
    lake = Lake(tmp_path / "lake")
    now = dt.datetime.now(dt.UTC)
    with lake.workdir("ingest") as live:
        (live / "part-0.parquet").write_bytes(b"x")
        killed = lake.root / ".staging" / "ingest-0badcafe"  # what a SIGKILL inside `workdir` leaves
        killed.mkdir()
        (killed / "part-0.parquet").write_bytes(b"x")
        hours_ago = (now - retention.WORKDIR_MAX_AGE - dt.timedelta(minutes=1)).timestamp()
        os.utime(killed, (hours_ago, hours_ago))

        dry = retention.plan(lake, boards, now, 90)
        assert dry.abandoned_workdirs == [killed] and dry.summary()["abandoned_workdirs"] == 1
        assert killed.is_dir()  # planning removes nothing

        retention.apply(dry)
        assert not killed.exists()
        assert (live / "part-0.parquet").is_file()  # a folder in use is recent, whatever runs in it
    assert lake.workdirs() == []
