"""Finding new or changed landing files cheaply, for the landing sensor.

A tick must not list every old hour folder: there are thousands and almost none change.
Adding or renaming a file into a folder updates that folder's mtime, so a tick stats the
hour folders (one stat each, no listing) and lists only those changed since the last
tick (mtime or ctime: a folder copied in with `cp -a` keeps its old mtime); in them, a file
is new when its mtime or ctime (set by the sink's write or rename) is. The
cursor is the time of the last scan plus the files seen within `SLACK_NS` of it, so a file
landing while a scan runs is neither missed nor reported twice.

A bucket (`s3://`) has no folder times, and a full listing costs one request per thousand
objects of all time, so `scan_bucket` lists hour prefixes: every tick the hours since the last
tick plus `RECENT_HOURS` (where the sink writes nearly everything), and `SWEEP_HOURS` older
ones, walking back to `start_date` and round again, so a late file in an old hour is found
within one sweep. An object is new when its last-modified time is past the cursor's (or, in
the sweep, past the previous sweep's start); S3 lists an object only once its upload is
complete, so none is half written, and the sink writes no temporary names there (names
starting with `.` or ending in `.tmp`, from other writers, are skipped as in a folder).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from leaderboard import objstore
from leaderboard.landing import FILE_NAME, hour_rel
from leaderboard.objstore import S3Location

# Clock skew between the daemon and the file server, and attribute caching on NFS, can show a
# change late; files seen within this window are remembered by version, so none is reported twice.
SLACK_NS = 120_000_000_000
HOUR = dt.timedelta(hours=1)
RECENT_HOURS = 3  # hour prefixes before the current one listed on every tick of a bucket
SWEEP_HOURS = 24  # older hour prefixes listed per tick, back to start_date and round again
CATCH_UP_HOURS = 7 * 24  # at most this many hours since the last tick are listed at once


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
    # a bucket's sweep of old hours: the next hour to list, when this round and the one before began
    sweep_next: str | None = None
    sweep_started_ns: int = 0
    sweep_prev_ns: int = 0

    def to_json(self) -> str:
        data: dict[str, object] = {"scanned_at_ns": self.scanned_at_ns, "recent": self.recent}
        if self.sweep_started_ns:
            data |= {
                "sweep_next": self.sweep_next,
                "sweep_started_ns": self.sweep_started_ns,
                "sweep_prev_ns": self.sweep_prev_ns,
            }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> WatchCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            int(data["scanned_at_ns"]),
            dict(data["recent"]),
            data.get("sweep_next"),
            int(data.get("sweep_started_ns", 0)),
            int(data.get("sweep_prev_ns", 0)),
        )


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


def _hour_of(rel: str) -> dt.datetime | None:
    """The UTC hour of a key `topics/<t>/year=/month=/day=/hour=/<name>`, None off the layout."""
    parts = rel.split("/")
    if len(parts) != 7 or parts[0] != "topics" or parts[1].startswith("."):
        return None
    try:
        y, m, d, h = (int(p.split("=", 1)[1]) for p in parts[2:6])
        return dt.datetime(y, m, d, h, tzinfo=dt.UTC)
    except (ValueError, IndexError):
        return None


def _landed(landing: S3Location, obj: objstore.ObjectInfo) -> tuple[str, dt.datetime, int] | None:
    """(path relative to the landing prefix, hour, change time) of a landing object, or None
    for one the reader would not read (hidden, temporary, foreign name, empty)."""
    rel = landing.rel(obj.key)
    name = rel.rsplit("/", 1)[-1]
    hour = _hour_of(rel)
    if hour is None or name.startswith(".") or not FILE_NAME.match(name) or obj.size == 0:
        return None
    return rel, hour, int(obj.last_modified.timestamp() * 1e9)


def scan_bucket(
    landing: S3Location, cursor: WatchCursor, first_hour: dt.datetime, now_ns: int | None = None
) -> tuple[list[LandedChange], WatchCursor]:
    """Landing objects new or changed since `cursor` (see the module's docstring), and the next cursor.

    `first_hour` is where the sweep of old hours turns round (start_date's first UTC hour).
    The first tick lists the whole `topics/` prefix once: every object is new then. A round of
    the sweep reports the objects changed between the starts of the two rounds before it, so
    the rounds' spans neither overlap nor leave a gap (an object is reported once, late by up
    to two rounds; only one landing in an old hour within SLACK_NS before the first tick may be
    reported by it and again by the first round), and only those changed after their hour left
    the head (every tick lists an hour until the first tick past RECENT_HOURS + 1 hours after
    its start: the head saw the rest).
    """
    now_ns = int(now_ns if now_ns is not None else dt.datetime.now(dt.UTC).timestamp() * 1e9)
    store = objstore.store_of(landing)
    now_hour = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).replace(minute=0, second=0, microsecond=0)
    found: list[tuple[str, str, dt.datetime, int, tuple[int, int]]] = []  # rel, version, hour, changed, span
    if not cursor.scanned_at_ns:
        for obj in objstore.list_objects(store, landing.key("topics")):
            if (landed := _landed(landing, obj)) is not None:
                found.append((*landed[:1], obj.etag, *landed[1:], (0, _NEVER)))
        head = now_hour - RECENT_HOURS * HOUR
        return _changes(found, cursor, now_ns, WatchCursor(now_ns, {}, (head - HOUR).isoformat(), now_ns, now_ns))
    last = dt.datetime.fromtimestamp(cursor.scanned_at_ns / 1e9, dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = max(min(now_hour, last) - RECENT_HOURS * HOUR, now_hour - CATCH_UP_HOURS * HOUR)
    recent = (cursor.scanned_at_ns - SLACK_NS, _NEVER)
    hours = [(h, recent) for h in _hours(start, now_hour + 2 * HOUR)]  # one ahead: producers' clocks run early
    sweep_next = dt.datetime.fromisoformat(cursor.sweep_next) if cursor.sweep_next else start - HOUR
    sweep_next = min(sweep_next, start - HOUR)
    started, prev = cursor.sweep_started_ns or now_ns, cursor.sweep_prev_ns or cursor.scanned_at_ns
    for _ in range(SWEEP_HOURS):
        if sweep_next < first_hour:  # round again from the head
            sweep_next, started, prev = start - HOUR, now_ns, started
            if sweep_next < first_hour:
                break
        # what landed before the hour left the head was reported there (the last tick listing it ran after)
        left_head = int((sweep_next + (RECENT_HOURS + 1) * HOUR).timestamp() * 1e9)
        hours.append((sweep_next, (max(prev - SLACK_NS, left_head), started - SLACK_NS)))
        sweep_next -= HOUR
    topics, _ = objstore.list_children(store, landing.key("topics"))
    topics = sorted(t for t in topics if not t.startswith("."))
    prefixes = [(hour_rel(t, h), span) for t in topics for h, span in hours]
    with ThreadPoolExecutor(min(objstore.FETCH_THREADS, max(1, len(prefixes)))) as pool:
        listed = pool.map(lambda p: objstore.list_children(store, landing.key(p[0]))[1], prefixes)
        for (_, span), objects in zip(prefixes, listed, strict=True):
            for obj in objects:
                if (landed := _landed(landing, obj)) is not None:
                    found.append((landed[0], obj.etag, landed[1], landed[2], span))
    return _changes(found, cursor, now_ns, WatchCursor(now_ns, {}, sweep_next.isoformat(), started, prev))


_NEVER = 2**63


def _hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    return [start + i * HOUR for i in range(int((end - start) / HOUR))]


def _changes(
    found: list[tuple[str, str, dt.datetime, int, tuple[int, int]]], cursor: WatchCursor, now_ns: int, nxt: WatchCursor
) -> tuple[list[LandedChange], WatchCursor]:
    """The objects changed within their span, less those the last tick reported (`recent`)."""
    changes = []
    for rel, version, hour, changed, (since, until) in found:
        if not since <= changed < until:
            continue
        if changed >= now_ns - SLACK_NS:
            nxt.recent[rel] = version
        if cursor.recent.get(rel) != version:
            changes.append(LandedChange(rel, version, hour, changed))
    changes.sort(key=lambda c: c.path)
    return changes, nxt


def local_days(hour: dt.datetime, tz: ZoneInfo) -> list[dt.date]:
    """The local days a UTC hour overlaps: one, or two where the offset is not whole hours."""
    first = hour.astimezone(tz).date()
    last = (hour + HOUR - dt.timedelta(microseconds=1)).astimezone(tz).date()
    return [first] if first == last else [first, last]
