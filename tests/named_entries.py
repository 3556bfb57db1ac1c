"""Standings whose entries carry names and metadata, and a publish of them to each store.

`publish_named` writes what the pipeline's publish writes (Postgres swap, Redis bodies and
per-user hashes, lake snapshot), through the stores' own functions, keeping every column of
the table: the store round trips of names and metadata are tested here whatever the
pipeline passes on.
"""

from __future__ import annotations

import datetime as dt
import json

import polars as pl

from leaderboard.boards import BoardSet, display_limit
from leaderboard.periods import Period, status_at
from leaderboard.standings import Snapshot, snapshot_header
from leaderboard.stores import Stores, postgres_publish
from leaderboard.stores import redis as cache
from leaderboard.stores.lake import write_atomic

# Metadata as producers send it: key order, spacing, unicode escapes and nesting are kept as is.
METADATA = [
    '{"team": "red", "level": 3}',
    '{"z":1,"a":{"nested":[1,2.5,null,true]},"emoji":"\\ud83d\\udc7e"}',
    "{}",
    '{"bio": "' + "x" * 980 + '"}',
]
NAMES = ["Zoë 👾", "", "Robert'); DROP TABLE students;--", "a" * 64]


def named_table(board_id: str, n: int, at: dt.datetime) -> pl.DataFrame:
    """`n` ranked users of one board (rank i: user u00i, score 1000-i); every fifth without a
    name, every third without metadata, the others cycling through NAMES and METADATA."""
    return pl.DataFrame(
        {"board_id": [board_id] * n, "user_id": [f"u{i:03}" for i in range(1, n + 1)],
         "score": [float(1000 - i) for i in range(1, n + 1)], "event_count": [1] * n, "reached_at": [at] * n,
         "rank": list(range(1, n + 1)), "previous_rank": [None if i % 2 else i + 1 for i in range(1, n + 1)],
         "rank_change": [None if i % 2 else 1 for i in range(1, n + 1)],
         "display_name": [None if i % 5 == 0 else NAMES[i % len(NAMES)] for i in range(1, n + 1)],
         "metadata": [None if i % 3 == 0 else METADATA[i % len(METADATA)] for i in range(1, n + 1)]},
        schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
    )  # fmt: skip


def expected_entry(row: dict) -> dict:
    """A table row as every body must list it."""
    meta = row["metadata"]
    return {"rank": row["rank"], "user_id": row["user_id"], "score": int(row["score"]),
            "previous_rank": row["previous_rank"], "rank_change": row["rank_change"],
            "display_name": row["display_name"], "metadata": None if meta is None else json.loads(meta)}  # fmt: skip


def publish_named(
    stores: Stores, boards: BoardSet, period: Period, table: pl.DataFrame, now: dt.datetime, run_id: str = "named"
) -> None:
    """Publish `table` (every board of the period in it) to Postgres and Redis when configured,
    and to the lake, keeping its `display_name` and `metadata`."""
    start, end = period.bounds(boards.tz)
    hot = cache.hot_keys(period.type, now.astimezone(boards.tz).date())
    published = []
    for board in boards.with_period(period.type):
        rows = table.filter(pl.col("board_id") == board.id).sort("rank")
        header = snapshot_header(board.id, period.type, period.key, start, end, now, run_id, rows.height)
        names = [c for c in ("display_name", "metadata") if c in rows.columns]
        snapshot = rows.select(
            pl.lit(board.id).alias("board_id"), pl.lit(period.type).alias("period_type"),
            pl.lit(period.key).alias("period_key"), pl.lit(start).alias("period_start"),
            pl.lit(end).alias("period_end"), "user_id", "rank", "score", "previous_rank", "rank_change",
            "event_count", "reached_at", pl.lit(now).alias("published_at"), pl.lit(run_id).alias("run_id"), *names,
        )  # fmt: skip
        published.append((board, header, snapshot))
    if stores.database_url:
        postgres_publish.publish(stores.database_url, pl.concat([s for _, _, s in published]),
                                 [h for _, h, _ in published], status_at(end, now))  # fmt: skip
    with stores.redis() as client:
        for board, header, snapshot in published:
            if client is not None:
                body = Snapshot(header, snapshot).body(boards.tz, display_limit(board), now=now)
                current = period.type == "all_time" or start <= now < end
                rows = snapshot if period.key in hot else None
                cache.publish(client, stores.keys, board.id, period.type, period.key, body, rows, current)
            write_atomic(snapshot, stores.lake.snapshot(board.id, period.type, period.key), header)
