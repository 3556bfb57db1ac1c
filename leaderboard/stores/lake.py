"""The Parquet lake: where each dataset lives, atomic writes, and the store protocols over it.

The embedded default's only store, and always written besides Postgres and Redis: the
pipeline reads its own datasets back from here.

Layout under LEADERBOARD_LAKE_DIR:
  clean_events/date=D/events.parquet       deduplicated events of local day D
  quarantine/date=D/records.parquet        records that broke the contract, with file/line/reason
  ingest_stats/date=D/stats.parquet        read / counted / duplicates / conflicts / quarantined
  daily_scores/date=D/scores.parquet       per board and user, the input of every rollup
  standings/<board>/<period_type>/<key>.parquet   published snapshots, one per board and period
  .live/date=D/                            the current day's live state: clean events by read, manifest
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from leaderboard import faults
from leaderboard.periods import UTC
from leaderboard.standings import Snapshot
from leaderboard.stores.protocols import HISTORY_SCHEMA, INGEST_STATS_SCHEMA, PeriodId


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

    def live_dir(self, day: dt.date) -> Path:
        """What the current day's live refreshes keep to merge the next one's files into
        (pipelines/live.py): in the lake's work area, not a dataset."""
        return self.root / ".live" / f"date={day.isoformat()}"

    @contextmanager
    def workdir(self, name: str) -> Iterator[Path]:
        """A private scratch folder under the lake (same file system), removed afterwards."""
        path = self.root / ".staging" / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def workdirs(self) -> list[tuple[Path, dt.datetime]]:
        """Every scratch folder with its last change: a process killed inside `workdir` leaves its own."""
        folder = self.root / ".staging"
        if not folder.is_dir():
            return []
        return [(p, dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC)) for p in sorted(folder.iterdir())]

    def install(self, staged: Path, path: Path) -> None:
        """Move a file written in a `workdir` into place in one rename (same file system)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)

    def snapshots(self) -> list[tuple[str, str, str, Path]]:
        """Every published snapshot as (board, period type, key, path)."""
        folder = self.root / "standings"
        if not folder.is_dir():
            return []
        found = sorted(p for p in folder.glob("*/*/*.parquet") if not p.name.startswith("."))
        return [(p.parent.parent.name, p.parent.name, p.stem, p) for p in found]

    def published_keys(self, board_id: str, period_type: str) -> list[str]:
        """Published period keys, newest first (keys sort chronologically within a type)."""
        folder = self.root / "standings" / board_id / period_type
        if not folder.is_dir():
            return []
        keys = [p.stem for p in folder.glob("*.parquet") if not p.name.startswith(".")]
        return sorted(keys, reverse=True)


SNAPSHOT_META_KEY = "leaderboard.period"


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
        if header is not None:  # a published snapshot
            faults.pause("lake", str(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_atomic(source: Path, path: Path) -> None:
    """A copy of a file, renamed into place as `write_atomic` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def drop_temp_files(path: Path) -> list[Path]:
    """Delete the temp files `write_atomic` left beside `path` when killed before its rename.

    Only for a caller that is the one writer of `path` now: a live writer's temp file looks the same.
    """
    found = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return found


def write_json_atomic(path: Path, data: object) -> None:
    """Temp file + rename: a reader (the pipeline's sensor) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


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


def _duck(query: str, params: list[object]) -> pl.DataFrame:
    with duckdb.connect() as con:
        return con.sql(query, params=params).pl()


@dataclass(frozen=True)
class LakeStandings:
    """StandingsStore over the lake's snapshot files."""

    lake: Lake

    def snapshot(
        self, board_id: str, period_type: str, key: str, top: int | None = None, after: int = 0
    ) -> Snapshot | None:
        found = read_snapshot(self.lake, board_id, period_type, key)
        if found is None or (top is None and not after):
            return found
        ranks = pl.col("rank") > after
        return Snapshot(found.header, found.frame.filter(ranks if top is None else ranks & (pl.col("rank") <= top)))

    def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None:
        found = read_snapshot(self.lake, board_id, period_type, key)
        if found is None:
            return None
        rank = found.frame.filter(pl.col("user_id") == user_id)["rank"]
        if rank.is_empty():
            return Snapshot(found.header, found.frame.clear())
        r = int(rank[0])
        return Snapshot(found.header, found.frame.filter(pl.col("rank").is_between(r - k, r + k)))

    def users(self, board_id: str, period_type: str, key: str, user_ids: list[str]) -> Snapshot | None:
        """The period with the rows of these users (those ranked), in rank order."""
        found = read_snapshot(self.lake, board_id, period_type, key)
        if found is None:
            return None
        return Snapshot(found.header, found.frame.filter(pl.col("user_id").is_in(user_ids)))

    def published_keys(self, board_id: str, period_type: str) -> list[str]:
        return self.lake.published_keys(board_id, period_type)

    def published_at(self, periods: list[PeriodId]) -> dict[PeriodId, dt.datetime]:
        out = {}
        for period in periods:
            header = read_header(self.lake, *period)
            if header is not None:
                out[period] = dt.datetime.fromisoformat(header["published_at"])
        return out

    def rank_history(self, board_id: str, period_type: str, user_id: str, periods: int) -> pl.DataFrame:
        keys = self.lake.published_keys(board_id, period_type)[:periods][::-1]
        if not keys:
            return pl.DataFrame(schema=HISTORY_SCHEMA)
        files = [str(self.lake.snapshot(board_id, period_type, k)) for k in keys]
        found = _duck(
            "SELECT period_key, max(rank) FILTER (user_id = ?) AS rank, max(score) FILTER (user_id = ?) AS score, "
            "count(*) AS total FROM read_parquet(?) GROUP BY period_key",
            [user_id, user_id, files],
        )
        return pl.DataFrame({"period_key": keys}).join(found, on="period_key", how="left").cast(HISTORY_SCHEMA)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LakeIngestStats:
    """IngestStatsStore over the lake's `ingest_stats/` day files."""

    lake: Lake

    def save(self, stats: dict) -> None:
        row = {**stats, "day": str(stats["day"]), "written_at": dt.datetime.now(UTC)}
        write_atomic(pl.DataFrame([row]), self.lake.day_file("ingest_stats", dt.date.fromisoformat(row["day"])))

    def between(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        files = [
            str(self.lake.day_file("ingest_stats", d)) for d in self.lake.days("ingest_stats") if first <= d <= last
        ]
        if not files:
            return pl.DataFrame(schema=INGEST_STATS_SCHEMA)
        found = set(_duck("SELECT * FROM read_parquet(?, union_by_name = true) LIMIT 0", [files]).columns)
        # days ingested before a column existed (ungrouped) read it as NULL
        cols = ", ".join(
            "CAST(day AS DATE) AS day" if c == "day" else c if c in found else f"NULL::VARCHAR AS {c}"
            for c in INGEST_STATS_SCHEMA
        )
        frame = _duck(f"SELECT {cols} FROM read_parquet(?, union_by_name = true) ORDER BY day", [files])
        return frame.cast(INGEST_STATS_SCHEMA)  # type: ignore[arg-type]


QUARANTINE_SAMPLE_SCHEMA = {"day": pl.Date, "reason": pl.String, "file": pl.String, "line": pl.Int64, "raw": pl.String}


def quarantine_sample(lake: Lake, first: dt.date, last: dt.date, limit: int = 50) -> tuple[pl.DataFrame, int]:
    """The newest quarantined records of [first, last] with their reasons, and how many there are
    in all (quarantine is kept in the lake only: it holds raw lines, not ranking data)."""
    files = [str(lake.day_file("quarantine", d)) for d in lake.days("quarantine") if first <= d <= last]
    if not files:
        return pl.DataFrame(schema=QUARANTINE_SAMPLE_SCHEMA), 0
    found = _duck(
        "SELECT date AS day, reason, file, line, left(raw, 300) AS raw, count(*) OVER () AS total "
        "FROM read_parquet(?, hive_partitioning = true) ORDER BY date DESC, file, line LIMIT ?",
        [files, limit],
    )
    total = found["total"][0] if found.height else 0
    return found.drop("total").cast(QUARANTINE_SAMPLE_SCHEMA), int(total)  # type: ignore[arg-type]
