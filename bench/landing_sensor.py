"""How much a landing sensor tick costs against listing every landed file.

Builds a landing zone of DAYS days x 24 hours x TOPICS topics with FILES files per hour
folder, then times (a) a tick with nothing new, (b) a tick after a burst of new files in a
few folders, and (c) the baseline: a full walk that stats every file, as a naive sensor would.

    .venv/bin/python bench/landing_sensor.py --days 365 --topics 3 --files 4 --burst 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

from leaderboard.landing import hour_folder
from pipelines.landing_watch import WatchCursor, scan


def _full_walk(landing: Path) -> int:
    n = 0
    for folder, _, files in os.walk(landing):
        for name in files:
            os.stat(os.path.join(folder, name))
            n += 1
    return n


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--topics", type=int, default=3)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--burst", type=int, default=2000, help="new files in one tick, over 10 hour folders")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        old = time.time() - 7 * 86400
        folders = 0
        for h in range(args.days * 24):
            hour = start + dt.timedelta(hours=h)
            for t in range(args.topics):
                folder = hour_folder(landing, f"topic{t}", hour)
                folder.mkdir(parents=True)
                for f in range(args.files):
                    path = folder / f"topic{t}+{f}+{h}.json"
                    path.write_bytes(b"{}\n")
                    os.utime(path, (old, old))
                os.utime(folder, (old, old))
                folders += 1
        total = args.files * folders
        _, cursor = scan(landing, WatchCursor())
        time.sleep(6)  # past the cursor's slack: these files are old news now

        idle = _median(lambda: scan(landing, cursor), args.repeat)
        for i in range(args.burst):
            hour = start + dt.timedelta(hours=i % 10)
            (hour_folder(landing, "topic0", hour) / f"topic0+9+{1_000_000 + i}.json").write_bytes(b"{}\n")
        changes, _ = scan(landing, cursor)
        assert len(changes) == args.burst, len(changes)
        burst = _median(lambda: scan(landing, cursor), args.repeat)
        walk = _median(lambda: _full_walk(landing), args.repeat)
    print(f"landing zone: {folders} hour folders, {total + args.burst} files")
    print(f"tick, nothing new:          median {idle * 1000:8.1f} ms")
    print(f"tick, {args.burst} new files:      median {burst * 1000:8.1f} ms")
    print(f"baseline full walk + stat:  median {walk * 1000:8.1f} ms")
    print(f"ratio idle tick / full walk: {idle / walk:.2f}; burst tick / full walk: {burst / walk:.2f}")


if __name__ == "__main__":
    main()
