"""Duplicate removal for one local day, as a pure Polars function.

Kafka delivers at least once, so a record may land twice; which delivery counts is part of
the landing contract (the first in Kafka order), hence here beside the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from leaderboard.landing.contract import content_hash

HASHES_PER_PASS = 16_000_000  # distinct ids counted at once (about half a gigabyte)

# Where a delivery sits (file, then line or scan place) and what it holds
DELIVERY_SCHEMA = {
    "event_id": pl.String,
    "file_idx": pl.Int32,
    "line": pl.Int64,
    "seq": pl.Int64,
    "content_hash": pl.UInt64,
}


@dataclass(frozen=True)
class Deduped:
    events: pl.LazyFrame  # one row per event_id: the first delivery
    duplicates: int  # later deliveries of an event_id already seen (conflicts included)
    conflicts: int  # duplicates whose content differs from the first delivery
    # every delivery (DELIVERY_SCHEMA) of each id delivered more than once: what a later merge
    # needs to pick the first again when an earlier delivery lands after a later one
    repeats: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DELIVERY_SCHEMA))


def dedupe(events: pl.LazyFrame, rows: int = 0, workdir: Path | None = None) -> Deduped:
    """Keep the first delivery of each `event_id` in (topic, partition, offset, line) order.

    `file_idx` numbers files in Kafka order, and within a file `line` (or, for a JSON row of
    DuckDB's reader, which has none, `seq`: its place in DuckDB's scan) is that order. Only the
    rows of ids seen more than once are collected and sorted; the rest stream through untouched.
    Past HASHES_PER_PASS `rows`, the ids are counted a share at a time (in `workdir`).
    """
    events = events.with_columns(pl.col("event_id").hash().alias("_h"))
    if rows > HASHES_PER_PASS and workdir is not None:
        spill = workdir / "id-hashes.parquet"
        events.select("_h").sink_parquet(spill)  # hashed once, then read a share per pass
        repeated = repeated_hashes(pl.scan_parquet(spill), -(-rows // HASHES_PER_PASS))
    else:
        repeated = repeated_hashes(events.select("_h"))
    if repeated.is_empty():
        return Deduped(events.drop("_h"), 0, 0)
    columns = [c for c in events.collect_schema().names() if c != "_h"]
    # A test on the file's own column, which the Parquet reader makes first, decoding only the
    # rows it keeps: a join on the `_h` column held several hundred megabytes of a day's events.
    multi = (
        events.drop("_h", "content_hash")  # the content hash worked out below, for these rows only
        .filter(pl.col("event_id").hash().is_in(repeated["_h"].implode()))
        .collect(engine="streaming")
        .with_columns(content_hash().alias("content_hash"))
        .select(columns)
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
    repeats = multi.filter(pl.col("event_id").is_duplicated()).select(list(DELIVERY_SCHEMA))
    return Deduped(kept, later.height, int(later["_conflict"].sum()), repeats.cast(DELIVERY_SCHEMA))  # type: ignore[arg-type]


def repeated_hashes(hashes: pl.LazyFrame, passes: int = 1) -> pl.DataFrame:
    """Hashes (column `_h`) seen more than once: a superset of the repeated ids (collisions
    only add candidates, which are then compared by id), at 8 bytes a key instead of the id.

    Found by sorting, whose memory is a few copies of the hashes, where a hash table of a
    day's distinct ids takes several times that. In `passes`, each sorting the hashes of one
    remainder: past some tens of millions even the copies take gigabytes."""
    shares = [hashes] if passes == 1 else [hashes.filter(pl.col("_h") % passes == k) for k in range(passes)]
    found = []
    for share in shares:
        ordered = share.collect(engine="streaming").get_column("_h").sort()
        found.append(ordered.filter(ordered == ordered.shift(1)).unique().to_frame())
    return pl.concat(found)


@dataclass(frozen=True)
class Merged:
    """Deliveries of a day's repeated ids, merged across reads of its files."""

    repeats: pl.DataFrame  # DELIVERY_SCHEMA: every delivery of each id delivered more than once
    later: pl.DataFrame  # event_id, file_idx, line, seq of each delivery that is not its id's first
    duplicates: int  # over the whole day: deliveries that are not their id's first
    conflicts: int


def merge_deliveries(deliveries: list[pl.DataFrame], rank: pl.DataFrame) -> Merged:
    """The first delivery of each id among `deliveries` (DELIVERY_SCHEMA frames that may
    overlap: the repeats known so far, and the deliveries each read kept of the ids they share),
    with the day's duplicate and conflict counts, as `dedupe` gives them for all files at once.

    `file_idx` numbers files in the order they were read; `rank` (file_idx, rank) maps it to
    Kafka order, so an earlier delivery read later still wins.
    """
    key = ["event_id", "file_idx", "line", "seq"]
    every = (
        pl.concat([d.select(list(DELIVERY_SCHEMA)).cast(DELIVERY_SCHEMA) for d in deliveries])  # type: ignore[arg-type]
        .unique(subset=key, keep="first")
        .filter(pl.col("event_id").is_duplicated())
        .join(rank, on="file_idx", how="left")
        .sort("rank", "line", "seq", nulls_last=True)
        .with_columns(
            pl.col("event_id").is_first_distinct().alias("_first"),
            (pl.col("content_hash") != pl.col("content_hash").first().over("event_id")).alias("_conflict"),
        )
    )
    later = every.filter(~pl.col("_first"))
    return Merged(
        repeats=every.select(list(DELIVERY_SCHEMA)),
        later=later.select(key),
        duplicates=later.height,
        conflicts=int(later["_conflict"].sum()),
    )
