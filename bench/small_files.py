"""How long reading one day takes when the sink lands many small files (frequent flushes).

Builds a landing zone of FILES files of EVENTS events each in one hour folder (every second
file Parquet with --parquet), then times `read_day` for the day, median of --repeat runs.
--code points the import at another checkout (e.g. an older commit in a git worktree), so
the same script measures the code before and after a change:

    .venv/bin/python bench/small_files.py --files 5000 --repeat 3
    git worktree add /tmp/before <commit> && .venv/bin/python bench/small_files.py --files 5000 --code /tmp/before
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

HOUR = dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)


def _land(folder: Path, files: int, events: int, parquet: bool) -> None:
    for i in range(files):
        records = [
            {"event_id": f"e{i}-{k}", "event_type": "score.earned", "user_id": f"user-{k}",
             "occurred_at": f"{HOUR:%Y-%m-%dT%H}:00:{k % 60:02d}Z", "value": k}
            for k in range(events)
        ]  # fmt: skip
        if parquet and i % 2:
            frame = pl.DataFrame(records).with_columns(pl.col("occurred_at").str.to_datetime(time_zone="UTC"))
            frame.write_parquet(folder / f"game+{i}+0.parquet")
        else:
            (folder / f"game+{i}+0.json").write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--events", type=int, default=10, help="events per file")
    p.add_argument("--parquet", action="store_true", help="every second file as Parquet")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to import")
    args = p.parse_args()
    sys.path.insert(0, str(args.code))
    try:
        from leaderboard.landing import hour_folder, read_day
    except ImportError:  # a checkout from before the landing package
        from pipelines.landing import hour_folder, read_day  # type: ignore[no-redef]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = hour_folder(root, "game", HOUR)
        folder.mkdir(parents=True)
        _land(folder, args.files, args.events, args.parquet)
        start = dt.datetime.combine(HOUR.date(), dt.time(), dt.UTC)
        times, read = [], 0
        for i in range(args.repeat):
            t0 = time.perf_counter()
            day = read_day(root, start, start + dt.timedelta(days=1), root / f"work-{i}")
            read = day.events.select(pl.len()).collect().item() + day.quarantine.height
            times.append(time.perf_counter() - t0)
    kinds = "JSON and Parquet" if args.parquet else "JSON"
    print(f"{args.files:,} {kinds} files of {args.events} events ({read:,} read) from {args.code}: "
          f"read_day median {statistics.median(times):.2f}s ({args.repeat} runs)")  # fmt: skip


if __name__ == "__main__":
    main()
