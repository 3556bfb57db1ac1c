"""Benchmark: what an exact season window costs against the calendar rollup of the same days.

Generates DAYS local days of N events each (Parquet, cached in --workdir), ingests and scores them,
then ranks, alternating order, REPEAT times each:
  season  a season from day 1 12:00 to day DAYS 12:00: the whole days rolled up from
          daily_scores, the two days it starts and ends within scored again from their clean
          events, filtered to the window (pipelines.steps.season_scores), then ranked
  rollup  the same DAYS whole days rolled up from daily_scores (what a week is), then ranked
and prints the medians and the ratio season/rollup.

    .venv/bin/python bench/season.py --events 200000 --users 50000 --days 7 --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIRST = dt.date(2026, 3, 23)  # boards in UTC: no DST in the way of the comparison

BOARDS = """timezone: UTC
start_date: 2026-03-01
boards:
  - id: points
    event_types: [score.earned]
    aggregate: sum
    metadata: [level, country]
    seasons:
      - {{id: cup, start: "{start}T12:00", end: "{end}T12:00"}}
  - id: high_score
    event_types: [game.finished]
    aggregate: max
    seasons:
      - {{id: cup, start: "{start}T12:00", end: "{end}T12:00"}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events per day")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-season")
    args = parser.parse_args()

    from leaderboard.boards import load_boards
    from leaderboard.periods import period_of, season_boards
    from leaderboard.stores.lake import Lake
    from pipelines.generate import GenerateSpec, generate
    from pipelines.steps import ingest_day, rank_period, score_day, scores_of, season_scores

    last = FIRST + dt.timedelta(days=args.days - 1)
    work = args.workdir / f"{args.events}-{args.users}-{args.days}"
    work.mkdir(parents=True, exist_ok=True)
    boards_file = work / "boards.yaml"
    boards_file.write_text(BOARDS.format(start=FIRST, end=last))
    boards = load_boards(boards_file)
    landing, lake = work / "landing", Lake(work / "lake")
    if not (work / ".complete").exists():
        t0 = time.perf_counter()
        generate(GenerateSpec(landing, FIRST, args.days, args.users, args.events, seed=3, formats=("parquet",)))
        for n in range(args.days):
            day = FIRST + dt.timedelta(days=n)
            ingest_day(landing, lake, boards, day)
            score_day(lake, boards, day)
        (work / ".complete").write_text("ok")
        print(f"generated, ingested and scored {args.days} days in {time.perf_counter() - t0:.1f}s", flush=True)

    listing, season = season_boards(boards, "cup")
    # the calendar rollup of the same days, ranked as one period of the boards that have the season
    rollup_period = period_of("daily", FIRST)

    def run_season() -> int:
        return rank_period(lake, listing, season, season_scores(lake, listing, season).collect()).height

    def run_rollup() -> int:
        days = [FIRST + dt.timedelta(days=n) for n in range(args.days)]
        scores = scores_of(lake, listing, days).collect()
        return rank_period(lake, listing, rollup_period, scores).height

    times: dict[str, list[float]] = {"season": [], "rollup": []}
    rows = {}
    for i in range(args.repeat):
        order = [("season", run_season), ("rollup", run_rollup)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            rows[name] = fn()
            times[name].append(time.perf_counter() - t0)
    season_s, rollup_s = statistics.median(times["season"]), statistics.median(times["rollup"])
    print(f"{args.days} days x {args.events:,} events, {args.users:,} users; medians of {args.repeat}")
    print(f"season (exact window, 2 days from clean events): {season_s:.3f} s  ({rows['season']:,} entries)")
    print(f"rollup (whole days from daily_scores):           {rollup_s:.3f} s  ({rows['rollup']:,} entries)")
    print(f"ratio season/rollup: {season_s / rollup_s:.2f}")


if __name__ == "__main__":
    main()
