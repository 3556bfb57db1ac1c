"""Scores and standings as pure Polars functions (docs/contracts.md#ranking-rules).

Everything here takes and returns frames; the Dagster assets only move files around them.
A "scores" frame has one row per (board_id, user_id) with `score`, `event_count` and
`reached_at`; it is what `daily_scores` stores and what weekly, monthly and all-time roll up.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from leaderboard.boards import Board

SCORES_SCHEMA = {
    "board_id": pl.String,
    "user_id": pl.String,
    "score": pl.Float64,
    "event_count": pl.Int64,
    "reached_at": pl.Datetime("us", "UTC"),
}
STANDINGS_SCHEMA = {
    **SCORES_SCHEMA,
    "rank": pl.Int64,
    "previous_rank": pl.Int64,
    "rank_change": pl.Int64,
}


def _combine(board: Board) -> list[pl.Expr]:
    """Aggregations that turn many score rows of one user into one.

    They apply to single events (a row per event) and to daily rows alike: sums add up and
    the last event is when the total was reached; an extreme keeps the earliest time it was hit.
    """
    score, at = pl.col("score"), pl.col("reached_at")
    if board.aggregate in ("sum", "count"):
        return [score.sum(), pl.col("event_count").sum(), at.max()]
    best = score.max() if board.aggregate == "max" else score.min()
    return [best, pl.col("event_count").sum(), at.filter(score == best).min()]


def rollup_scores(scores: pl.LazyFrame, boards: Iterable[Board]) -> pl.LazyFrame:
    """Combine score rows (daily rows, or single events) per board and user."""
    parts = [scores.filter(pl.col("board_id") == b.id).group_by("board_id", "user_id").agg(_combine(b)) for b in boards]
    if not parts:
        return pl.LazyFrame(schema=SCORES_SCHEMA)
    return pl.concat(parts).select(list(SCORES_SCHEMA)).cast(SCORES_SCHEMA)  # type: ignore[arg-type]


def score_events(events: pl.LazyFrame, boards: Iterable[Board]) -> pl.LazyFrame:
    """One day's clean events to that day's scores per board and user (`daily_scores`)."""
    boards = list(boards)
    rows = [
        events.filter(pl.col("event_type").is_in(list(b.event_types))).select(
            pl.lit(b.id).alias("board_id"),
            "user_id",
            (pl.lit(1.0) if b.aggregate == "count" else pl.col("value")).alias("score"),
            pl.lit(1, pl.Int64).alias("event_count"),
            pl.col("occurred_at").alias("reached_at"),
        )
        for b in boards
    ]
    if not rows:
        return pl.LazyFrame(schema=SCORES_SCHEMA)
    return rollup_scores(pl.concat(rows), boards)


def rank_scores(scores: pl.LazyFrame, boards: Iterable[Board]) -> pl.LazyFrame:
    """Rank 1..N per board: score in the board's order, then `reached_at`, then `user_id` bytewise."""
    parts = []
    for b in boards:
        board = scores.filter(pl.col("board_id") == b.id)
        if b.min_score is not None:
            board = board.filter(pl.col("score") >= b.min_score)
        parts.append(
            board.sort(["score", "reached_at", "user_id"], descending=[b.order == "desc", False, False]).with_row_index(
                "rank", offset=1
            )
        )
    if not parts:
        return pl.LazyFrame(schema={**SCORES_SCHEMA, "rank": pl.Int64})
    return pl.concat(parts).with_columns(pl.col("rank").cast(pl.Int64))


def standings(current: pl.LazyFrame, previous: pl.LazyFrame | None, boards: Iterable[Board]) -> pl.LazyFrame:
    """Ranked standings of a period with `previous_rank` from the period before and the change."""
    boards = list(boards)
    ranked = rank_scores(current, boards)
    if previous is None:
        prev = pl.LazyFrame(schema={"board_id": pl.String, "user_id": pl.String, "previous_rank": pl.Int64})
    else:
        prev = rank_scores(previous, boards).select("board_id", "user_id", pl.col("rank").alias("previous_rank"))
    return (
        ranked.join(prev, on=["board_id", "user_id"], how="left", maintain_order="left")
        .with_columns((pl.col("previous_rank") - pl.col("rank")).alias("rank_change"))
        .select(list(STANDINGS_SCHEMA))
    )
