"""Where the Kafka Connect sink puts files, and which of them a day reads.

The layout is a contract with the sink (and the landing sensor matches the same names), so
it lives in the core package, apart from how the files' records are read.
"""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from leaderboard import objstore
from leaderboard.objstore import S3Location
from leaderboard.periods import utc_hours

# <topic>+<partition>+<offset>.<ext>; the S3 sink may put the codec before .parquet (.snappy.parquet)
FILE_NAME = re.compile(
    r"^(?P<topic>[^+/]+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.(?P<ext>json|json\.gz|(?:[a-z0-9]+\.)?parquet)$"
)


class LandingError(RuntimeError):
    """The landing zone could not be read; the message names the day and DuckDB's reason."""


@dataclass(frozen=True)
class LandedFile:
    path: Path
    topic: str
    partition: int
    offset: int
    fmt: str  # "json" (also gzip-compressed) or "parquet"
    hour: dt.datetime  # UTC start of the hour folder it sits in
    size: int  # bytes on disk when listed

    @property
    def order(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    @property
    def gzipped(self) -> bool:
        return self.path.name.endswith(".gz")


def hour_folder(landing: Path, topic: str, hour: dt.datetime) -> Path:
    return landing / hour_rel(topic, hour)


def hour_rel(topic: str, hour: dt.datetime) -> str:
    """An hour folder relative to the landing zone, `/`-separated (also an object key prefix)."""
    return f"topics/{topic}/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}"


def _ignored(name: str) -> bool:
    """A file being written (a leading `.` or a `.tmp` suffix): not listed, not counted."""
    return name.startswith(".") or name.endswith(".tmp")


def list_files(landing: Path, start: dt.datetime, end: dt.datetime) -> tuple[list[LandedFile], list[str]]:
    """Landing files in the UTC hour folders overlapping [start, end), in Kafka order.

    Files being written (a leading `.` or a `.tmp` suffix) are not listed; other names that
    are not `<topic>+<partition>+<offset>.<ext>` are returned as skipped, so an operator sees them.
    """
    topics_dir = landing / "topics"
    if not topics_dir.is_dir():
        # A wrong LEADERBOARD_LANDING_DIR must not publish empty days as if nothing happened.
        raise LandingError(f"LEADERBOARD_LANDING_DIR={landing}: no topics/ folder (is the sink writing there?)")
    files: list[LandedFile] = []
    skipped: list[str] = []
    for topic_dir in sorted(p for p in topics_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for hour in utc_hours(start, end):
            folder = hour_folder(landing, topic_dir.name, hour)
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                name = path.name
                if _ignored(name) or not path.is_file():
                    continue
                m = FILE_NAME.match(name)
                if not m:
                    skipped.append(f"{path}: not <topic>+<partition>+<offset>.json|json.gz|parquet")
                    continue
                size = path.stat().st_size
                if size == 0:
                    continue  # an empty file holds no record (and is no valid gzip or Parquet file)
                fmt = "parquet" if m["ext"].endswith("parquet") else "json"
                files.append(LandedFile(path, topic_dir.name, int(m["partition"]), int(m["offset"]), fmt, hour, size))
    files.sort(key=lambda f: (f.order, f.path.name))
    return files, skipped


def fetch_hours(
    landing: S3Location, start: dt.datetime, end: dt.datetime, into: Path
) -> tuple[list[tuple[str, str]], list[str]]:
    """Download the landing objects of the UTC hour folders overlapping [start, end) into the
    same layout under `into`, so the local reader reads them as it reads files.

    Returns the (local path, object URL) of each download and the skipped names (as
    `list_files` reports them, with the object's URL). An object is listed only once its upload
    is complete, so none is half written; names the sink does not write are skipped the same way.
    """
    store = objstore.store_of(landing)
    topics, _ = objstore.list_children(store, landing.key("topics"))
    if not topics:
        raise LandingError(f"LEADERBOARD_LANDING_DIR={landing}: no topics/ prefix (is the sink writing there?)")
    (into / "topics").mkdir(parents=True, exist_ok=True)
    prefixes = [hour_rel(t, hour) for t in sorted(topics) if not t.startswith(".") for hour in utc_hours(start, end)]
    with ThreadPoolExecutor(min(objstore.FETCH_THREADS, max(1, len(prefixes)))) as pool:
        listed = list(pool.map(lambda rel: objstore.list_children(store, landing.key(rel))[1], prefixes))
    pairs: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for objects in listed:
        for obj in objects:
            rel = landing.rel(obj.key)
            name = rel.rsplit("/", 1)[-1]
            if _ignored(name):
                continue
            if not FILE_NAME.match(name):
                skipped.append(f"{landing.url(rel)}: not <topic>+<partition>+<offset>.json|json.gz|parquet")
            elif obj.size:
                pairs.append((obj.key, into / rel))
    objstore.download(store, pairs)
    return [(str(path), landing.url(landing.rel(key))) for key, path in pairs], sorted(skipped)
