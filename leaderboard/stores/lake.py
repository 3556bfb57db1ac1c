"""The Parquet lake: where each dataset lives, atomic writes, and the store protocols over it.

The embedded default's only store, and always written besides Postgres and Redis: the
pipeline reads its own datasets back from here.

Layout under LEADERBOARD_LAKE_DIR (a folder, or the same keys under s3://bucket/prefix):
  clean_events/date=D/events.parquet       deduplicated events of local day D
  quarantine/date=D/records.parquet        records that broke the contract, with file/line/reason
  ingest_stats/date=D/stats.parquet        read / counted / duplicates / conflicts / quarantined
  daily_scores/date=D/scores.parquet       per board and user, the input of every rollup
  standings/<board>/<period_type>/<key>.parquet   published snapshots, one per board and period
    (in a bucket: <key>.json, a pointer to <key>/<publish id>.parquet)
  .live/date=D/                            the current day's live state (on this host, also for a bucket)
"""

from __future__ import annotations

import datetime as dt
import glob
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from obstore.store import S3Store

from leaderboard import faults, objstore
from leaderboard.objstore import Location, S3Location
from leaderboard.periods import UTC
from leaderboard.standings import Snapshot
from leaderboard.stores.protocols import HISTORY_SCHEMA, INGEST_STATS_SCHEMA, PeriodId


@dataclass(frozen=True)
class Lake:
    """The lake at a folder, or in a bucket (`s3://bucket/prefix`).

    In a bucket, files are read and written through `folder`, this host's copy: `pull` fetches
    an object there before it is read, writes put the file's object after it is written. A
    snapshot is an object of its own per publish and a small pointer object naming it (see
    `publish_snapshot`).
    """

    root: Location

    @property
    def bucket(self) -> S3Location | None:
        return self.root if isinstance(self.root, S3Location) else None

    @property
    def folder(self) -> Path:
        """Where the files are: the lake's folder, or this host's copy of the bucket's objects."""
        if isinstance(self.root, S3Location):
            return Path(tempfile.gettempdir()) / "leaderboard-lake" / self.root.bucket / self.root.prefix
        return self.root

    def _store(self) -> S3Store:
        assert isinstance(self.root, S3Location)
        return objstore.cached_store(self.root)

    def _key(self, path: Path) -> str:
        assert isinstance(self.root, S3Location)
        return self.root.key(path.relative_to(self.folder).as_posix())

    def day_file(self, dataset: str, day: dt.date) -> Path:
        name = {"clean_events": "events", "quarantine": "records", "ingest_stats": "stats", "daily_scores": "scores"}[
            dataset
        ]
        return self.folder / dataset / f"date={day.isoformat()}" / f"{name}.parquet"

    def days(self, dataset: str) -> list[dt.date]:
        """Local days for which `dataset` has a file, oldest first."""
        if self.bucket is not None:
            listed = {self.bucket.rel(o.key) for o in objstore.list_objects(self._store(), self.bucket.key(dataset))}
            folders = sorted({name.split("/")[1] for name in listed if name.count("/") == 2})
        else:
            folder = self.root / dataset
            folders = [p.name for p in folder.glob("date=*")] if folder.is_dir() else []
            listed = set()
        out = []
        for name in folders:
            try:
                day = dt.date.fromisoformat(name.removeprefix("date="))
            except ValueError:
                continue
            path = self.day_file(dataset, day)
            if path.relative_to(self.folder).as_posix() in listed if self.bucket is not None else path.is_file():
                out.append(day)
        return sorted(out)

    def snapshot(self, board_id: str, period_type: str, key: str) -> Path:
        """A snapshot's file (in a bucket, where `pull_snapshot` puts this host's copy)."""
        return self.folder / "standings" / board_id / period_type / f"{key}.parquet"

    def pull(self, path: Path) -> Path:
        """Make `path` hold the bucket's object (or not exist, if there is none); a folder's file
        is itself. Returns `path`, to read."""
        if self.bucket is not None:
            data = objstore.get_bytes(self._store(), self._key(path))
            if data is None:
                path.unlink(missing_ok=True)
            else:
                _write_bytes_atomic(path, data)
        return path

    def push(self, path: Path) -> None:
        """Put a file written under `folder` into the bucket (one PUT: readers see old or new)."""
        if self.bucket is not None:
            objstore.put_bytes(self._store(), self._key(path), path.read_bytes())

    def has(self, path: Path) -> bool:
        if self.bucket is not None:
            return objstore.head(self._store(), self._key(path)) is not None
        return path.is_file()

    def modified_ns(self, path: Path) -> int | None:
        """When the file (or object) was last written, in ns since the epoch; None if there is none."""
        if self.bucket is not None:
            found = objstore.head(self._store(), self._key(path))
            return int(found.last_modified.timestamp() * 1e9) if found else None
        return path.stat().st_mtime_ns if path.is_file() else None

    def write_parquet(self, frame: pl.DataFrame, path: Path, header: dict | None = None) -> None:
        """`write_atomic`, then into the bucket."""
        write_atomic(frame, path, header)
        self.push(path)

    def write_json(self, path: Path, data: object) -> None:
        write_json_atomic(path, data)
        self.push(path)

    def remove(self, path: Path) -> None:
        """Delete a file; in a bucket its object too (a snapshot: its pointer first, then its objects)."""
        path.unlink(missing_ok=True)
        if self.bucket is None:
            return
        key = self._key(path)
        if key.startswith(self.bucket.key("standings") + "/") and key.endswith(".parquet"):
            base = key.removesuffix(".parquet")
            objstore.delete(self._store(), [base + POINTER_SUFFIX])
            objstore.delete(self._store(), [o.key for o in objstore.list_objects(self._store(), base)])
        else:
            objstore.delete(self._store(), [key])

    def json_files(self, folder: Path) -> list[Path]:
        """The `*.json` files of a folder (in a bucket, fetched here first)."""
        if self.bucket is not None:
            found = objstore.list_children(self._store(), self._key(folder))[1]
            for obj in found:
                if obj.key.endswith(".json"):
                    self.pull(self.folder / self.bucket.rel(obj.key))
            keep = {self.folder / self.bucket.rel(o.key) for o in found}
            for stale in folder.glob("*.json") if folder.is_dir() else []:
                if stale not in keep:
                    stale.unlink(missing_ok=True)
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def live_dir(self, day: dt.date) -> Path:
        """What the current day's live refreshes keep to merge the next one's files into
        (pipelines/live.py): in the lake's work area, not a dataset."""
        return self.folder / ".live" / f"date={day.isoformat()}"

    @contextmanager
    def workdir(self, name: str) -> Iterator[Path]:
        """A private scratch folder under the lake (same file system), removed afterwards."""
        path = self.folder / ".staging" / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def workdirs(self) -> list[tuple[Path, dt.datetime]]:
        """Every scratch folder with its last change: a process killed inside `workdir` leaves its own."""
        folder = self.folder / ".staging"
        if not folder.is_dir():
            return []
        return [(p, dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC)) for p in sorted(folder.iterdir())]

    def install(self, staged: Path, path: Path) -> None:
        """Move a file written in a `workdir` into place in one rename (same file system)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)
        self.push(path)

    def snapshots(self) -> list[tuple[str, str, str, Path]]:
        """Every published snapshot as (board, period type, key, path)."""
        if self.bucket is not None:
            found = []
            for obj in objstore.list_objects(self._store(), self.bucket.key("standings")):
                parts = self.bucket.rel(obj.key).split("/")
                if len(parts) == 4 and parts[3].endswith(POINTER_SUFFIX) and not parts[3].startswith("."):
                    key = parts[3].removesuffix(POINTER_SUFFIX)
                    found.append((parts[1], parts[2], key, self.snapshot(parts[1], parts[2], key)))
            return sorted(found, key=lambda f: str(f[3]))
        folder = self.root / "standings"
        if not folder.is_dir():
            return []
        listed = sorted(p for p in folder.glob("*/*/*.parquet") if not p.name.startswith("."))
        return [(p.parent.parent.name, p.parent.name, p.stem, p) for p in listed]

    def published_keys(self, board_id: str, period_type: str) -> list[str]:
        """Published period keys, newest first (keys sort chronologically within a type; season
        ids do not, so seasons go by the start their snapshots name)."""
        if self.bucket is not None:
            prefix = self.bucket.key(f"standings/{board_id}/{period_type}")
            objects = objstore.list_children(self._store(), prefix)[1]
            names = [o.key.rsplit("/", 1)[1] for o in objects]
            keys = [n.removesuffix(POINTER_SUFFIX) for n in names if n.endswith(POINTER_SUFFIX)]
            keys = [k for k in keys if not k.startswith(".")]
        else:
            folder = self.root / "standings" / board_id / period_type
            if not folder.is_dir():
                return []
            keys = [p.stem for p in folder.glob("*.parquet") if not p.name.startswith(".")]
        if period_type == "season":
            starts = {k: (read_header(self, board_id, period_type, k) or {}).get("period_start", "") for k in keys}
            return sorted(keys, key=lambda k: (starts[k], k), reverse=True)
        return sorted(keys, reverse=True)

    def publish_snapshot(self, frame: pl.DataFrame, board_id: str, period_type: str, key: str, header: dict) -> None:
        """Publish a period's snapshot so that a reader sees the old one or the new one whole.

        A folder: a temp file renamed over the old one. A bucket: the Parquet object under a
        new key (`<key>/<publish id>.parquet`), then the pointer `<key>.json` switched to it in
        one PUT; readers follow the pointer. The versions before the one just replaced are then
        deleted (a reader that read the older pointer retries; see `snapshot_bytes`).
        """
        path = self.snapshot(board_id, period_type, key)
        if self.bucket is None:
            write_atomic(frame, path, header)
            return
        store, base = self._store(), self._key(path).removesuffix(".parquet")
        before = _pointer(store, base)
        data = f"{base}/{uuid.uuid4().hex}.parquet"
        objstore.put_bytes(store, data, _parquet_bytes(frame, header))
        faults.pause("lake", str(path))
        pointer = {"object": data.rsplit("/", 1)[1], "header": header}
        objstore.put_bytes(store, base + POINTER_SUFFIX, json.dumps(pointer, default=str).encode())
        keep = {data} | ({f"{base}/{before['object']}"} if before else set())
        objstore.delete(store, [o.key for o in objstore.list_objects(store, base) if o.key not in keep])

    def snapshot_bytes(self, board_id: str, period_type: str, key: str) -> tuple[dict, bytes] | None:
        """A bucket's snapshot: its pointer and the Parquet object it names; None if not published."""
        store = self._store()
        base = self._key(self.snapshot(board_id, period_type, key)).removesuffix(".parquet")
        for _ in range(SNAPSHOT_READ_TRIES):
            pointer = _pointer(store, base)
            if pointer is None:
                return None
            data = objstore.get_bytes(store, f"{base}/{pointer['object']}")
            if data is not None:
                return pointer, data
            # two publishes since the pointer was read deleted its object: read the new pointer
        raise RuntimeError(f"{self.root}: snapshot {board_id}/{period_type}/{key} kept changing while read")

    def has_snapshot(self, board_id: str, period_type: str, key: str) -> bool:
        path = self.snapshot(board_id, period_type, key)
        if self.bucket is None:
            return path.is_file()
        return objstore.head(self._store(), self._key(path).removesuffix(".parquet") + POINTER_SUFFIX) is not None

    def pull_snapshot(self, board_id: str, period_type: str, key: str) -> Path | None:
        """The snapshot's file, to read (in a bucket, fetched here first); None if not published."""
        path = self.snapshot(board_id, period_type, key)
        if self.bucket is None:
            return path if path.is_file() else None
        found = self.snapshot_bytes(board_id, period_type, key)
        if found is None:
            return None
        _write_bytes_atomic(path, found[1])
        return path


POINTER_SUFFIX = ".json"  # a bucket's snapshot pointer: standings/<board>/<type>/<key>.json
SNAPSHOT_READ_TRIES = 5


def _pointer(store: S3Store, base: str) -> dict | None:
    data = objstore.get_bytes(store, base + POINTER_SUFFIX)
    return json.loads(data) if data is not None else None


def _parquet_bytes(frame: pl.DataFrame, header: dict | None) -> bytes:
    buf = io.BytesIO()
    metadata = {SNAPSHOT_META_KEY: json.dumps(header, default=str)} if header is not None else None
    frame.write_parquet(buf, statistics=True, metadata=metadata)
    return buf.getvalue()


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """This host's copy of an object: temp file + rename, for the reader in another thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    if lake.bucket is not None:
        found = lake.snapshot_bytes(board_id, period_type, key)
        if found is None:
            return None
        return Snapshot(found[0]["header"], pl.read_parquet(io.BytesIO(found[1])))
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
    """A published snapshot's header alone (Parquet footer metadata, or a bucket's pointer: no rows are read)."""
    if lake.bucket is not None:
        base = lake._key(lake.snapshot(board_id, period_type, key)).removesuffix(".parquet")
        pointer = _pointer(lake._store(), base)
        return pointer["header"] if pointer is not None else None
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
        pulled = [self.lake.pull_snapshot(board_id, period_type, k) for k in keys]
        files = [str(p) for p in pulled if p is not None]
        if not files:  # unpublished in between (retention)
            none = pl.DataFrame(schema=HISTORY_SCHEMA)
            return pl.DataFrame({"period_key": keys}).join(none, on="period_key", how="left").cast(HISTORY_SCHEMA)  # type: ignore[arg-type]
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
        self.lake.write_parquet(
            pl.DataFrame([row]), self.lake.day_file("ingest_stats", dt.date.fromisoformat(row["day"]))
        )

    def between(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        days = [d for d in self.lake.days("ingest_stats") if first <= d <= last]
        files = [str(p) for p in (self.lake.pull(self.lake.day_file("ingest_stats", d)) for d in days) if p.is_file()]
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
    days = [d for d in lake.days("quarantine") if first <= d <= last]
    files = [str(p) for p in (lake.pull(lake.day_file("quarantine", d)) for d in days) if p.is_file()]
    if not files:
        return pl.DataFrame(schema=QUARANTINE_SAMPLE_SCHEMA), 0
    found = _duck(
        "SELECT date AS day, reason, file, line, left(raw, 300) AS raw, count(*) OVER () AS total "
        "FROM read_parquet(?, hive_partitioning = true) ORDER BY date DESC, file, line LIMIT ?",
        [files, limit],
    )
    total = found["total"][0] if found.height else 0
    return found.drop("total").cast(QUARANTINE_SAMPLE_SCHEMA), int(total)  # type: ignore[arg-type]
