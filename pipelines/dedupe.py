"""Duplicate removal for one local day (DESIGN §4), as a pure Polars function."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Deduped:
    events: pl.DataFrame  # one row per event_id: the first delivery
    duplicates: int  # later deliveries of an event_id already seen (conflicts included)
    conflicts: int  # duplicates whose content differs from the first delivery


def dedupe(events: pl.DataFrame) -> Deduped:
    """Keep the first delivery of each `event_id` in (topic, partition, offset, line) order.

    `file_idx` numbers files in Kafka order, so (file_idx, line) is that order. Only ids seen
    more than once are sorted, which keeps the common case (no redelivery) a hash pass.
    """
    repeated = pl.col("event_id").is_duplicated()
    multi = events.filter(repeated)
    if multi.is_empty():
        return Deduped(events, 0, 0)
    multi = multi.sort("file_idx", "line").with_columns(
        pl.col("event_id").is_first_distinct().alias("_first"),
        (pl.col("content_hash") != pl.col("content_hash").first().over("event_id")).alias("_conflict"),
    )
    later = multi.filter(~pl.col("_first"))
    kept = pl.concat([events.filter(~repeated), multi.filter(pl.col("_first")).drop("_first", "_conflict")])
    return Deduped(kept.sort("file_idx", "line"), later.height, int(later["_conflict"].sum()))
