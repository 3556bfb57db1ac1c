"""The Parquet lake: where each dataset lives, atomic writes, and published standings.

Layout under LEADERBOARD_LAKE_DIR:
  clean_events/date=D/events.parquet       deduplicated events of local day D
  quarantine/date=D/records.parquet        records that broke the contract, with file/line/reason
  ingest_stats/date=D/stats.parquet        read / counted / duplicates / conflicts / quarantined
  daily_scores/date=D/scores.parquet       per board and user, the input of every rollup
  standings/<board>/<period_type>/<key>.parquet   published snapshots, one per board and period
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from leaderboard.periods import UTC


@dataclass(frozen=True)
class Lake:
    root: Path

    def day_file(self, dataset: str, day: dt.date) -> Path:
        name = {"clean_events": "events", "quarantine": "records", "ingest_stats": "stats", "daily_scores": "scores"}[
            dataset
        ]
        return self.root / dataset / f"date={day.isoformat()}" / f"{name}.parquet"

    def days(self, dataset: str) -> list[dt.date]:
        """Local days for which `dataset` has a file, oldest first."""
        folder = self.root / dataset
        if not folder.is_dir():
            return []
        out = []
        for p in folder.glob("date=*"):
            try:
                day = dt.date.fromisoformat(p.name.removeprefix("date="))
            except ValueError:
                continue
            if self.day_file(dataset, day).is_file():
                out.append(day)
        return sorted(out)

    def snapshot(self, board_id: str, period_type: str, key: str) -> Path:
        return self.root / "standings" / board_id / period_type / f"{key}.parquet"

    @contextmanager
    def workdir(self, name: str) -> Iterator[Path]:
        """A private scratch folder under the lake (same file system), removed afterwards."""
        path = self.root / ".staging" / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def install(self, staged: Path, path: Path) -> None:
        """Move a file written in a `workdir` into place in one rename (same file system)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)

    def published_keys(self, board_id: str, period_type: str) -> list[str]:
        """Published period keys, newest first (keys sort chronologically within a type)."""
        folder = self.root / "standings" / board_id / period_type
        if not folder.is_dir():
            return []
        keys = [p.stem for p in folder.glob("*.parquet") if not p.name.startswith(".")]
        return sorted(keys, reverse=True)


SNAPSHOT_META_KEY = "leaderboard.period"


def snapshot_header(
    board_id: str,
    period_type: str,
    period_key: str,
    start: dt.datetime,
    end: dt.datetime,
    published_at: dt.datetime,
    run_id: str,
    total: int,
) -> dict:
    """What a published period says of itself (lake file metadata, Redis body, registry)."""
    return {
        "board_id": board_id,
        "period_type": period_type,
        "period_key": period_key,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "published_at": published_at.isoformat(),
        "run_id": run_id,
        "total": total,
    }


def write_atomic(frame: pl.DataFrame, path: Path, header: dict | None = None) -> None:
    """Write Parquet under a hidden temp name, then rename: readers see the old file or the new.

    `header` goes into the file's key-value metadata, so a period with no entries still says
    which period it is and when it was published.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    metadata = {SNAPSHOT_META_KEY: json.dumps(header, default=str)} if header is not None else None
    try:
        frame.write_parquet(tmp, statistics=True, metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _number(value: float | None) -> float | int | None:
    if value is None or math.isnan(value):
        return None
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


@dataclass(frozen=True)
class Snapshot:
    """One published period of one board: its header and its rows in rank order."""

    header: dict
    frame: pl.DataFrame

    @property
    def period_end(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.header["period_end"])

    def status(self, now: dt.datetime | None = None) -> str:
        return "live" if (now or dt.datetime.now(UTC)) < self.period_end else "final"

    def body(self, tz: ZoneInfo, limit: int, offset: int = 0, now: dt.datetime | None = None) -> dict:
        """The standings body of DESIGN §7 for one page of this snapshot."""
        h = self.header
        page = self.frame.slice(offset, limit)
        return {
            "board": h["board_id"],
            "period": h["period_type"],
            "period_key": h["period_key"],
            "period_start": dt.datetime.fromisoformat(h["period_start"]).astimezone(tz).isoformat(),
            "period_end": self.period_end.astimezone(tz).isoformat(),
            "status": self.status(now),
            "published_at": h["published_at"],
            "total": int(h["total"]),
            "entries": [
                {
                    "rank": r["rank"],
                    "user_id": r["user_id"],
                    "score": _number(r["score"]),
                    "previous_rank": r["previous_rank"],
                    "rank_change": r["rank_change"],
                }
                for r in page.iter_rows(named=True)
            ],
        }


def read_snapshot(lake: Lake, board_id: str, period_type: str, key: str) -> Snapshot | None:
    path = lake.snapshot(board_id, period_type, key)
    try:
        # One open file for header and rows: a publish renaming a new file in meanwhile
        # cannot pair the old header with the new rows.
        with path.open("rb") as fh:
            meta = pl.read_parquet_metadata(fh)
            fh.seek(0)
            frame = pl.read_parquet(fh)
    except FileNotFoundError:
        return None
    return Snapshot(json.loads(meta[SNAPSHOT_META_KEY]), frame)


def read_header(lake: Lake, board_id: str, period_type: str, key: str) -> dict | None:
    """A published snapshot's header alone (Parquet footer metadata: no rows are read)."""
    try:
        meta = pl.read_parquet_metadata(lake.snapshot(board_id, period_type, key))
    except FileNotFoundError:
        return None
    return json.loads(meta[SNAPSHOT_META_KEY])
