"""Where the Kafka Connect sink puts files, and which of them a day reads.

The layout is a contract with the sink (and the landing sensor matches the same names), so
it lives in the core package, apart from how the files' records are read.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

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
    return landing / "topics" / topic / f"year={hour:%Y}" / f"month={hour:%m}" / f"day={hour:%d}" / f"hour={hour:%H}"


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
                if name.startswith(".") or name.endswith(".tmp") or not path.is_file():
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
