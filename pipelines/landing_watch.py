"""Finding new or changed landing files cheaply, for the landing sensor.

A tick must not list every old hour folder: there are thousands and almost none change.
Adding or renaming a file into a folder updates that folder's mtime, so a tick stats the
hour folders (one stat each, no listing) and lists only those changed since the last
tick (mtime or ctime: a folder copied in with `cp -a` keeps its old mtime); in them, a file
is new when its mtime or ctime (set by the sink's write or rename) is. The
cursor is the time of the last scan plus the files seen within `SLACK_NS` of it, so a file
landing while a scan runs is neither missed nor reported twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from leaderboard.landing import FILE_NAME

# Clock skew between the daemon and the file server, and attribute caching on NFS, can show a
# change late; files seen within this window are remembered by version, so none is reported twice.
SLACK_NS = 120_000_000_000
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class LandedChange:
    path: str  # relative to the landing dir
    version: str  # mtime_ns-size: a rewritten file is a new version
    hour: dt.datetime  # UTC start of its hour folder
    changed_ns: int  # the later of mtime and ctime


@dataclass
class WatchCursor:
    scanned_at_ns: int = 0  # 0: never scanned, every file is new
    recent: dict[str, str] = field(default_factory=dict)  # path -> version, changed within SLACK_NS of scanned_at

    def to_json(self) -> str:
        return json.dumps({"scanned_at_ns": self.scanned_at_ns, "recent": self.recent}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> WatchCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data["scanned_at_ns"]), dict(data["recent"]))


def _subdirs(path: Path, prefix: str) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            for e in entries:
                if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False):
                    yield e
    except FileNotFoundError:
        return


def _hour_folders(landing: Path) -> Iterator[tuple[os.DirEntry, dt.datetime]]:
    for topic in _subdirs(landing / "topics", ""):
        if topic.name.startswith("."):
            continue
        for y in _subdirs(Path(topic.path), "year="):
            for m in _subdirs(Path(y.path), "month="):
                for d in _subdirs(Path(m.path), "day="):
                    for h in _subdirs(Path(d.path), "hour="):
                        try:
                            hour = dt.datetime(
                                int(y.name[5:]), int(m.name[6:]), int(d.name[4:]), int(h.name[5:]), tzinfo=dt.UTC
                            )
                        except ValueError:
                            continue  # not a date: not the sink's layout, the reader ignores it too
                        yield h, hour


def scan(landing: Path, cursor: WatchCursor, now_ns: int | None = None) -> tuple[list[LandedChange], WatchCursor]:
    """Landing files new or changed since `cursor`, and the cursor to store for the next tick."""
    now_ns = now_ns if now_ns is not None else dt.datetime.now(dt.UTC).timestamp() * 1e9
    now_ns = int(now_ns)
    since = cursor.scanned_at_ns - SLACK_NS
    changes: list[LandedChange] = []
    recent: dict[str, str] = {}
    for folder, hour in _hour_folders(landing):
        st = folder.stat()
        if max(st.st_mtime_ns, st.st_ctime_ns) < since:  # ctime: a folder copied or moved in keeps its mtime
            continue
        with os.scandir(folder.path) as entries:
            for e in entries:
                if e.name.startswith(".") or not FILE_NAME.match(e.name) or not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat()
                changed = max(st.st_ctime_ns, st.st_mtime_ns)
                if changed < since or st.st_size == 0:
                    continue
                rel = os.path.relpath(e.path, landing)
                version = f"{st.st_mtime_ns}-{st.st_size}"
                if changed >= now_ns - SLACK_NS:
                    recent[rel] = version
                if cursor.recent.get(rel) != version:
                    changes.append(LandedChange(rel, version, hour, changed))
    changes.sort(key=lambda c: c.path)
    return changes, WatchCursor(now_ns, recent)


def local_days(hour: dt.datetime, tz: ZoneInfo) -> list[dt.date]:
    """The local days a UTC hour overlaps: one, or two where the offset is not whole hours."""
    first = hour.astimezone(tz).date()
    last = (hour + HOUR - dt.timedelta(microseconds=1)).astimezone(tz).date()
    return [first] if first == last else [first, last]
