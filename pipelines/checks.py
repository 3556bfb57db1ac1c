"""Asset checks as pure functions: what must hold before (and after) standings are published.

Each returns a `Verdict`; the assets turn them into Dagster check results, and refuse to
publish a period whose standings fail one, so the previous snapshot stays in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from leaderboard.boards import Board
from leaderboard.ranking import group_of

RANKS_CONTIGUOUS = "ranks_contiguous"
ONE_ROW_PER_USER = "one_row_per_user"
ENTRIES_MATCH_SCORES = "entries_match_scores"
QUARANTINE_RATE = "quarantine_rate"
CACHE_MATCHES_POSTGRES = "redis_matches_postgres"
SAMPLE = 5


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)  # one line each, at most SAMPLE per board


def ranks_contiguous(table: pl.DataFrame) -> Verdict:
    """Ranks of each board are exactly 1..N: no gap, no repeat, no zero."""
    problems = []
    for (board,), rows in table.group_by("board_id", maintain_order=True):
        ranks = rows.get_column("rank").sort()
        expected = pl.int_range(1, rows.height + 1, eager=True)
        if not ranks.cast(pl.Int64).equals(expected.cast(pl.Int64)):
            wrong = [f"position {i + 1} has rank {r}" for i, r in enumerate(ranks.to_list()) if r != i + 1]
            problems.append(f"{board}: ranks are not 1..{rows.height} ({'; '.join(wrong[:SAMPLE])})")
    return Verdict(RANKS_CONTIGUOUS, not problems, problems)


def one_row_per_user(table: pl.DataFrame) -> Verdict:
    repeated = table.group_by("board_id", "user_id").len().filter(pl.col("len") > 1).sort("board_id", "user_id")
    problems = [
        f"{r['board_id']}: {r['user_id']} has {r['len']} rows" for r in repeated.head(SAMPLE).iter_rows(named=True)
    ]
    if repeated.height > SAMPLE:
        problems.append(f"... {repeated.height - SAMPLE} more")
    return Verdict(ONE_ROW_PER_USER, not problems, problems)


def counted_users(events: pl.LazyFrame, boards: list[Board]) -> pl.DataFrame:
    """Per board, the users whose counted events reach `min_score`, straight from clean events.

    Deliberately not the ranking's code path (no daily_scores, no rollup): the check compares
    two computations, not one with itself.
    """
    parts = []
    for b in boards:
        mine = events.filter(pl.col("event_type").is_in(list(b.event_types)))
        if b.group_by:  # a group board's "users" are its groups; events naming none are not counted
            mine = mine.with_columns(group_of(b).alias("user_id")).filter(pl.col("user_id").is_not_null())
        value = pl.col("value")
        latest = value.sort_by(["occurred_at", "file_idx", "event_id"]).last()  # the ranking's ORDER, written out
        score = {"sum": value.sum(), "count": pl.len().cast(pl.Float64), "max": value.max(), "min": value.min(),
                 "last": latest}  # fmt: skip
        per_user = mine.group_by("user_id").agg(score[b.aggregate].alias("score"))
        if b.min_score is not None:
            per_user = per_user.filter(pl.col("score") >= b.min_score)
        parts.append(per_user.select(pl.lit(b.id).alias("board_id"), "user_id"))
    if not parts:
        return pl.DataFrame(schema={"board_id": pl.String, "user_id": pl.String})
    return pl.concat(parts).collect()


def eligible_users(scores: pl.DataFrame, boards: list[Board]) -> pl.DataFrame:
    """Per board, the users of rolled-up `scores` that reach `min_score` (periods over many days)."""
    keep = pl.lit(False)
    for b in boards:
        passes = pl.lit(True) if b.min_score is None else pl.col("score") >= b.min_score
        keep = keep | ((pl.col("board_id") == b.id) & passes)
    return scores.filter(keep).select("board_id", "user_id")


def entries_match_users(table: pl.DataFrame, users: pl.DataFrame, boards: list[Board]) -> Verdict:
    """Entries per board equal the users with counted events that reach `min_score` (`users`)."""
    problems = []
    for board in boards:
        expected = users.filter(pl.col("board_id") == board.id).get_column("user_id").n_unique()
        entries = table.filter(pl.col("board_id") == board.id).height
        if entries != expected:
            problems.append(f"{board.id}: {entries} entries for {expected} users with counted events")
    return Verdict(ENTRIES_MATCH_SCORES, not problems, problems)


def quarantine_rate(read: int, quarantined: int, max_rate: float, samples: pl.DataFrame) -> Verdict:
    """The share of quarantined records stays under `max_rate` (a producer or sink gone wrong)."""
    rate = quarantined / read if read else 0.0
    if rate < max_rate:
        return Verdict(QUARANTINE_RATE, True)
    lines = [f"{quarantined} of {read} records quarantined ({rate:.2%}, limit {max_rate:.2%})"]
    lines += [f"{r['file']}:{r['line']}: {r['reason']}" for r in samples.head(SAMPLE).iter_rows(named=True)]
    return Verdict(QUARANTINE_RATE, False, lines)


def cache_matches_postgres(board_id: str, cached: list[dict] | None, stored: pl.DataFrame) -> Verdict:
    """Redis' ready-to-send top N is Postgres' top N (`stored`, limited alike), entry for entry."""
    if cached is None:
        return Verdict(CACHE_MATCHES_POSTGRES, False, [f"{board_id}: no rankings key in Redis"])
    columns = ["rank", "user_id", "score", "previous_rank", "rank_change"]
    in_cache = [tuple(e[c] for c in columns) for e in cached]
    in_pg = [tuple(r[c] for c in columns) for r in stored.iter_rows(named=True)]
    if in_cache == in_pg:
        return Verdict(CACHE_MATCHES_POSTGRES, True)
    at = next(
        (i for i, (a, b) in enumerate(zip(in_cache, in_pg, strict=False)) if a != b), min(len(in_cache), len(in_pg))
    )
    return Verdict(
        CACHE_MATCHES_POSTGRES,
        False,
        [f"{board_id}: Redis {len(in_cache)} entries, Postgres {len(in_pg)}; first difference at position {at + 1}"],
    )


def standings_verdicts(table: pl.DataFrame, users: pl.DataFrame, boards: list[Board]) -> list[Verdict]:
    """The checks that must pass before a period's standings are published."""
    return [ranks_contiguous(table), one_row_per_user(table), entries_match_users(table, users, boards)]
