"""Shaping data for display: pure functions from API bodies and store answers to frames and text.

Kept apart from the pages so they can be tested without Streamlit and the pages stay layout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import polars as pl

from dashboard.pipeline import PartitionCell, RunRow
from leaderboard.objstore import S3Location
from leaderboard.periods import UTC, PeriodError, parse_period_key

SYMBOLS = {"materialized": "✔", "stale": "↻", "failed": "✖", "running": "…", "missing": "·"}
COLOURS = {"materialized": "#c8e6c9", "stale": "#ffe0b2", "failed": "#ffcdd2", "running": "#bbdefb", "missing": ""}
LEGEND = " · ".join(f"{SYMBOLS[s]} {s}" for s in SYMBOLS)


def movement(previous_rank: int | None, rank_change: int | None) -> str:
    """▲ n (moved up n places), ▼ n (down), = (same place), new (not ranked in the previous period)."""
    if previous_rank is None or rank_change is None:
        return "new"
    if rank_change > 0:
        return f"▲ {rank_change}"
    if rank_change < 0:
        return f"▼ {-rank_change}"
    return "="


def standings_table(body: dict) -> pl.DataFrame:
    """Rank, user (or group), name, score and movement of the entries of one standings body, in
    rank order; the name is blank where none is known."""
    entries = body.get("entries", [])
    table = pl.DataFrame(
        {
            "rank": [e["rank"] for e in entries],
            "user": [e["user_id"] for e in entries],
            "name": [e.get("display_name") or "" for e in entries],
            "score": [float(e["score"]) if e["score"] is not None else None for e in entries],
            "movement": [movement(e["previous_rank"], e["rank_change"]) for e in entries],
        },
        schema={"rank": pl.Int64, "user": pl.String, "name": pl.String, "score": pl.Float64, "movement": pl.String},
    )
    whole = table["score"].drop_nulls()
    if (whole == whole.round()).all() and (whole.abs() <= 2**53).all():  # counts and points: no ".0"
        table = table.with_columns(pl.col("score").cast(pl.Int64))
    return table


def styled_standings(table: pl.DataFrame) -> pd.io.formats.style.Styler:
    """The standings table with moves up in green and down in red."""

    def colour(move: str) -> str:
        return "color: #2e7d32" if move.startswith("▲") else "color: #c62828" if move.startswith("▼") else ""

    return table.to_pandas().style.map(colour, subset=["movement"]).hide(axis="index")


def when(text: str | None, now: dt.datetime | None = None) -> str:
    """An instant as `2026-11-26 14:05 UTC (12 min ago)`."""
    if not text:
        return "never"
    at = dt.datetime.fromisoformat(text)
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({ago(at, now)})"


def ago(at: dt.datetime, now: dt.datetime | None = None) -> str:
    seconds = max(0.0, ((now or dt.datetime.now(UTC)) - at).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def bounds(body: dict) -> str:
    """The period's local [start, end) as written by the API, e.g. `2026-11-23 00:00 → 2026-11-30 00:00 (+01:00)`."""
    start = dt.datetime.fromisoformat(body["period_start"])
    end = dt.datetime.fromisoformat(body["period_end"])
    return f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} ({start:%z})".replace("(+0000)", "(UTC)")


def season_label(season: dict | None, key: str) -> str:
    """`Spring cup (spring) · 2026-03-27 18:00 → 2026-04-02 18:00`; the id alone for a season
    the boards file no longer lists."""
    if season is None:
        return key
    start, end = dt.datetime.fromisoformat(season["start"]), dt.datetime.fromisoformat(season["end"])
    name = f"{season['title']} ({key})" if season["title"] else key
    return f"{name} · {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M}"


def key_date(period_type: str, key: str) -> dt.date | None:
    """A local date inside a published period (its first day), or None for all-time."""
    if period_type == "all_time":
        return None
    try:
        return parse_period_key(period_type, key).start
    except PeriodError:
        return None


def partition_frame(cells: Sequence[PartitionCell]) -> pd.DataFrame:
    """Assets as rows, days as columns (oldest left), a status word in each cell."""
    days = sorted({c.day for c in cells})
    assets = list(dict.fromkeys(c.asset for c in cells))
    grid = pd.DataFrame("missing", index=pd.Index(assets, name="asset"), columns=[f"{d:%m-%d}" for d in days])
    for c in cells:
        grid.loc[c.asset, f"{c.day:%m-%d}"] = c.status
    return grid


def styled_grid(grid: pd.DataFrame) -> pd.io.formats.style.Styler:
    """The status grid with a symbol and a colour per cell (the words stay in the data)."""
    return grid.style.format(lambda s: SYMBOLS.get(s, s)).map(
        lambda s: f"background-color: {COLOURS[s]}; text-align: center" if COLOURS.get(s) else "text-align: center"
    )


RUNS_SCHEMA = {"run": pl.String, "job": pl.String, "status": pl.String, "partitions": pl.String,
               "started": pl.Datetime("us", "UTC"), "seconds": pl.Float64, "error": pl.String}  # fmt: skip


def runs_frame(runs: Sequence[RunRow], dagster_url: str) -> pl.DataFrame:
    """Recent runs with a link to each run's page in the Dagster UI."""
    base = dagster_url.rstrip("/")
    return pl.DataFrame(
        {
            "run": [f"{base}/runs/{r.run_id}" for r in runs],
            "job": [r.job for r in runs],
            "status": [r.status for r in runs],
            "partitions": [r.partitions for r in runs],
            "started": [r.started for r in runs],
            "seconds": [r.seconds for r in runs],
            "error": [r.error or "" for r in runs],
        },
        schema=RUNS_SCHEMA,
    )


def under(frame: pl.DataFrame, column: str, folder: Path | S3Location) -> pl.DataFrame:
    """Paths in `column` shown relative to `folder` (or bucket) where they lie under it (shorter to read)."""
    prefix = (folder.url() if isinstance(folder, S3Location) else str(folder.resolve())).rstrip("/") + "/"
    return frame.with_columns(pl.col(column).str.strip_prefix(prefix))


def ingest_long(stats: pl.DataFrame) -> pl.DataFrame:
    """Per day and kind (counted, duplicates, quarantined: they add up to read), for a stacked chart."""
    return stats.select("day", "counted", "duplicates", "quarantined").unpivot(
        index="day", variable_name="kind", value_name="records"
    )


def ingest_problems(stats: pl.DataFrame) -> pl.DataFrame:
    """Per day and kind, the records that did not simply count: small next to `counted`, so charted apart."""
    return stats.select("day", "duplicates", "conflicts", "quarantined").unpivot(
        index="day", variable_name="kind", value_name="records"
    )


def freshness_styled(frame: pl.DataFrame) -> pd.io.formats.style.Styler:
    """Current periods with their age; stale or never published rows in red."""
    table = frame.to_pandas()
    table["age"] = [_minutes(m) for m in table.pop("age_minutes")]
    return table.style.apply(
        lambda row: ["" if row["fresh"] else "background-color: #ffcdd2; color: #b71c1c"] * len(row), axis=1
    )


def _minutes(m: float | None) -> str:
    if m is None or pd.isna(m):
        return "not published"
    return f"{m:.0f} min" if m < 120 else f"{m / 60:.1f} h"
