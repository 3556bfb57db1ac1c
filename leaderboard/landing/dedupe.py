"""Duplicate removal for one local day, as a pure Polars function.

Kafka delivers at least once, so a record may land twice; which delivery counts is part of
the landing contract (the first in Kafka order), hence here beside the reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Deduped:
    events: pl.LazyFrame  # one row per event_id: the first delivery
    duplicates: int  # later deliveries of an event_id already seen (conflicts included)
    conflicts: int  # duplicates whose content differs from the first delivery


def dedupe(events: pl.LazyFrame) -> Deduped:
    """Keep the first delivery of each `event_id` in (topic, partition, offset, line) order.

    `file_idx` numbers files in Kafka order, and within a file `line` (or, for a JSON row of
    DuckDB's reader, which has none, `seq`: its place in DuckDB's scan) is that order. Only the
    rows of ids seen more than once are collected and sorted; the rest stream through untouched.
    """
    events = events.with_columns(pl.col("event_id").hash().alias("_h"))
    repeated = repeated_hashes(events.select("_h"))
    if repeated.is_empty():
        return Deduped(events.drop("_h"), 0, 0)
    multi = (
        events.join(repeated.lazy(), on="_h", how="semi")
        .drop("_h")
        .collect()
        .sort("file_idx", "line", "seq", nulls_last=True)
        .with_columns(
            pl.col("event_id").is_first_distinct().alias("_first"),
            (pl.col("content_hash") != pl.col("content_hash").first().over("event_id")).alias("_conflict"),
        )
    )
    later = multi.filter(~pl.col("_first"))
    kept = pl.concat(
        [
            events.join(repeated.lazy(), on="_h", how="anti").drop("_h"),
            multi.filter(pl.col("_first")).drop("_first", "_conflict").lazy(),
        ]
    )
    return Deduped(kept, later.height, int(later["_conflict"].sum()))


def repeated_hashes(hashes: pl.LazyFrame) -> pl.DataFrame:
    """Hashes (column `_h`) seen more than once: a superset of the repeated ids (collisions
    only add candidates, which are then compared by id), at 8 bytes a key instead of the id."""
    return hashes.group_by("_h").len().filter(pl.col("len") > 1).select("_h").collect()
