"""The work of each asset for one partition, as plain functions over the lake.

Assets call these once per partition in their run; the benchmark and tests call them
directly. Nothing here knows about Dagster.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from leaderboard import faults
from leaderboard.boards import SEASON, BoardSet, display_limit, value_ranges
from leaderboard.identity import IdentityService, name_standings
from leaderboard.landing import dedupe, list_files, read_day
from leaderboard.landing.read import read_files
from leaderboard.objstore import Location, S3Location
from leaderboard.periods import UTC, Period, local_midnight, period_of, status_at
from leaderboard.ranking import (
    SCORES_SCHEMA,
    rollup_scores,
    score_events,
    standings,
    ungrouped_of,
    without_excluded,
)
from leaderboard.standings import ENTRY_SCHEMA, Snapshot, snapshot_header, with_name_columns
from leaderboard.stores import Stores
from leaderboard.stores import redis as cache
from leaderboard.stores.identity_cache import identity_cache
from leaderboard.stores.lake import Lake, copy_atomic, drop_temp_files
from leaderboard.stores.postgres_publish import publish as publish_postgres
from leaderboard.stores.settlement import SettlementChanged, check_unchanged, kept_rows, refuse_settled
from pipelines import checks, live
from pipelines.checks import Verdict

SETTLEMENT_RETRIES = 3


@dataclass(frozen=True)
class IngestStats:
    day: str
    files: int
    skipped_files: int
    read: int
    counted: int
    duplicates: int
    conflicts: int
    quarantined: int
    seconds: float
    # per group board, events of its types naming no group (not counted on it), as a JSON object
    ungrouped: str = "{}"


class QuarantineRateExceeded(RuntimeError):
    """Too many broken records in a day: its clean events are not replaced (see the verdict)."""

    def __init__(self, stats: IngestStats, verdict: Verdict) -> None:
        super().__init__(f"{stats.day}: " + "\n".join(verdict.problems))
        self.stats, self.verdict = stats, verdict


def ingest_day(
    landing: Location,
    lake: Lake,
    boards: BoardSet,
    day: dt.date,
    run_id: str = "",
    stores: Stores | None = None,
    max_quarantine_rate: float | None = None,
) -> IngestStats:
    """Read, validate and deduplicate one local day; write clean events, quarantine and stats.

    Nothing reaches the lake unless the conservation law (docs/contracts.md#event-record) holds: every record
    read is exactly one of counted (as written), duplicate or quarantined. Past
    `max_quarantine_rate` the quarantine and stats are written (to look at) but the day's
    clean events stay as they were, and QuarantineRateExceeded is raised.
    """
    t0 = time.perf_counter()
    start, end = period_of("daily", day).bounds(boards.tz)
    with lake.workdir(f"ingest-{day}") as workdir:
        landed = read_day(landing, start, end, workdir, ranges=value_ranges(boards.boards))
        events_read = landed.event_count()
        read = events_read + landed.quarantine.height
        kept = dedupe(landed.events, events_read, workdir)
        if landed.clean_file is not None and not kept.duplicates:
            staged_clean = landed.clean_file  # the events as the reader wrote them: all kept
        else:
            staged_clean = workdir / "clean.parquet"
            kept.events.drop("content_hash", "seq").sink_parquet(staged_clean)
        events = pl.scan_parquet(staged_clean)
        # Scored here, once: the events a group board leaves ungrouped are those of its types
        # that its scores do not count, so they need no reading of attributes of their own.
        scores = score_events(staged_clean, boards.boards, workdir).collect()
        by_type = dict(events.group_by("event_type").len().collect().iter_rows())
        counted = sum(by_type.values())
        ungrouped = ungrouped_of(scores, by_type, boards.boards)
        staged_scores = workdir / "scores.parquet"
        scores.write_parquet(staged_scores, statistics=True, metadata={SCORED_WITH: scored_with(boards)})
        stats = IngestStats(
            day=day.isoformat(),
            files=len(landed.files),
            skipped_files=len(landed.skipped),
            read=read,
            counted=counted,
            duplicates=kept.duplicates,
            conflicts=kept.conflicts,
            quarantined=landed.quarantine.height,
            seconds=round(time.perf_counter() - t0, 3),
            ungrouped=json.dumps(ungrouped, separators=(",", ":")),
        )
        if read != counted + kept.duplicates + landed.quarantine.height:
            raise AssertionError(f"{day}: read {read} != counted + duplicates + quarantined ({stats})")
        verdict = Verdict(checks.QUARANTINE_RATE, True)
        if max_quarantine_rate is not None:
            verdict = checks.quarantine_rate(read, stats.quarantined, max_quarantine_rate, landed.quarantine)
        faults.pause("ingest", str(day))
        if verdict.passed:
            live.drop(lake, day)  # a live day's events are this full read's from now on
            lake.install(staged_clean, lake.day_file("clean_events", day))
            lake.install(staged_scores, lake.day_file("daily_scores", day))  # after: newer than the events
    lake.write_parquet(landed.quarantine, lake.day_file("quarantine", day))
    (stores or Stores(lake)).save_ingest_stats({**asdict(stats), "run_id": run_id})
    if not verdict.passed:
        raise QuarantineRateExceeded(stats, verdict)
    return stats


def refresh_day(
    landing: Location,
    lake: Lake,
    boards: BoardSet,
    day: dt.date,
    run_id: str = "",
    stores: Stores | None = None,
    max_quarantine_rate: float | None = None,
) -> IngestStats:
    """`ingest_day` for the current day, reading only the files landed since its last refresh
    and merging them into what the day has (pipelines/live.py): same events, quarantine,
    stats and scores as a full read of the day, kept in the lake's work area (`day_events`).

    Past `max_quarantine_rate` the quarantine and stats are written, the state stays as it
    was (the files are read again next time) and QuarantineRateExceeded is raised. One refresh
    of a day at a time: a second waits (each would remove the files the other is writing).
    """
    if lake.bucket is not None or isinstance(landing, S3Location):
        # The state is kept on this host's disk, which run pods over a bucket do not share:
        # there each refresh reads the day whole.
        return ingest_day(landing, lake, boards, day, run_id, stores, max_quarantine_rate)
    with live.locked(lake.live_dir(day)):
        return _refresh_day(landing, lake, boards, day, run_id, stores, max_quarantine_rate)


def _refresh_day(
    landing: Location,
    lake: Lake,
    boards: BoardSet,
    day: dt.date,
    run_id: str,
    stores: Stores | None,
    max_quarantine_rate: float | None,
) -> IngestStats:
    t0 = time.perf_counter()
    start, end = period_of("daily", day).bounds(boards.tz)
    folder = lake.live_dir(day)
    files, skipped = list_files(landing, start, end)
    times = live.landed(files)
    fingerprint = live.fingerprint(boards, start, end)
    state = live.load(folder, fingerprint)
    if state is None or not state.unchanged(times):
        state = live.State(folder, fingerprint)  # start again from a full read
    known = {f["path"] for f in state.files}
    new = [f for f in files if str(f.path) not in known]
    if not new and state.scores is not None:  # nothing landed since: the day stays as it is
        merged = live.Merged(state, pl.read_parquet(state.path(state.quarantine or "")))
    else:
        with lake.workdir(f"refresh-{day}") as workdir:
            batch = read_files(new, skipped, start, end, workdir, ranges=value_ranges(boards.boards))
            merged = live.merge(state, batch, times, boards, workdir)
    totals = merged.state.totals
    stats = IngestStats(
        day=day.isoformat(),
        files=len(merged.state.files),
        skipped_files=len(skipped),
        read=totals.read,
        counted=totals.counted,
        duplicates=totals.duplicates,
        conflicts=totals.conflicts,
        quarantined=totals.quarantined,
        seconds=round(time.perf_counter() - t0, 3),
        ungrouped=json.dumps(totals.ungrouped, separators=(",", ":")),
    )
    if stats.read != stats.counted + stats.duplicates + stats.quarantined:
        raise AssertionError(f"{day}: read {stats.read} != counted + duplicates + quarantined ({stats})")
    verdict = Verdict(checks.QUARANTINE_RATE, True)
    if max_quarantine_rate is not None:
        verdict = checks.quarantine_rate(stats.read, stats.quarantined, max_quarantine_rate, merged.quarantine)
    faults.pause("ingest", str(day))
    if verdict.passed:
        merged.state.commit()
    lake.write_parquet(merged.quarantine, lake.day_file("quarantine", day))
    (stores or Stores(lake)).save_ingest_stats({**asdict(stats), "run_id": run_id})
    if not verdict.passed:
        raise QuarantineRateExceeded(stats, verdict)
    return stats


def day_events(lake: Lake, day: dt.date) -> pl.LazyFrame:
    """A day's clean events: the live state's while the day is refreshed live, else the lake's."""
    found = live.day_events(lake, day)
    return found if found is not None else pl.scan_parquet(lake.day_file("clean_events", day))


SCORED_WITH = "leaderboard.scored_with"  # Parquet metadata of daily_scores written by ingest_day


def scored_with(boards: BoardSet) -> str:
    """The boards a day's scores were computed with (another file or zone: score again)."""
    return json.dumps([boards.timezone, repr(boards.boards)])


def _scored_at_ingest(lake: Lake, path: Path, clean: Path, boards: BoardSet) -> bool:
    """Whether `daily_scores` are those ingest_day wrote with the day's current clean events
    (then pulled, to read)."""
    scored, events = lake.modified_ns(path), lake.modified_ns(clean)
    if scored is None or events is None or scored < events:
        return False
    try:
        return pl.read_parquet_metadata(lake.pull(path)).get(SCORED_WITH) == scored_with(boards)
    except OSError:
        return False


def score_day(lake: Lake, boards: BoardSet, day: dt.date) -> int:
    """`daily_scores` of one day from its clean events: scored by its ingest (or merged by its
    live refreshes) already, unless the boards changed since. Returns its count of rows, from
    the file's footer where the scores are not computed here (ranking reads them anyway)."""
    path, clean = lake.day_file("daily_scores", day), lake.day_file("clean_events", day)
    merged = live.scores_file(lake, day)
    if merged is not None:  # a live day's: in place as it is
        copy_atomic(merged, path)
        lake.push(path)
        return _rows(merged)
    if _scored_at_ingest(lake, path, clean, boards):
        return _rows(lake.pull(path))
    with lake.workdir(f"score-{day}") as workdir:
        scores = score_events(lake.pull(clean), boards.boards, workdir).collect()
    lake.write_parquet(scores, path)
    return scores.height


def _rows(path: Path) -> int:
    """A Parquet file's count of rows, from its footer: no column is read."""
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def scores_of(lake: Lake, boards: BoardSet, days: list[dt.date]) -> pl.LazyFrame:
    """Rolled-up scores over the given days that have `daily_scores` (missing days add nothing)."""
    files = [p for p in (lake.pull(lake.day_file("daily_scores", d)) for d in days) if p.is_file()]
    if not files:
        return pl.LazyFrame(schema=SCORES_SCHEMA)
    # Days scored before names and metadata existed lack their columns: read as nulls.
    daily = pl.scan_parquet(files, schema=SCORES_SCHEMA, missing_columns="insert")  # type: ignore[arg-type]
    if len(files) == 1:  # a day's scores hold one row per board and user already: nothing to roll up
        return daily.filter(pl.col("board_id").is_in([b.id for b in boards.boards]))
    return rollup_scores(daily, boards.boards)


class SeasonWindowError(RuntimeError):
    """A season starts or ends within a day whose clean events are gone: it cannot be exact."""


def season_scores(lake: Lake, boards: BoardSet, period: Period) -> pl.LazyFrame:
    """Scores over a season's exact window [start, end): the local days it covers whole come
    from their `daily_scores`; the days it starts or ends within are scored again from their
    clean events, only those with start <= occurred_at < end."""
    start, end = period.bounds(boards.tz)
    selected = boards.with_period(period.type)
    whole: list[dt.date] = []
    parts: list[pl.LazyFrame] = []
    for day in period.days():
        if start <= local_midnight(day, boards.tz) and local_midnight(day + dt.timedelta(days=1), boards.tz) <= end:
            whole.append(day)
            continue
        clean = lake.pull(lake.day_file("clean_events", day))
        if not clean.is_file():
            if lake.pull(lake.day_file("daily_scores", day)).is_file():
                raise SeasonWindowError(
                    f"season {period.key}: the clean events of {day} are gone (retention), so its part of the "
                    f"season ({start.isoformat()} to {end.isoformat()}) cannot be counted exactly; restore "
                    f"clean_events/{day} or raise RETENTION_DAYS"
                )
            continue  # no events that day yet
        at = pl.col("occurred_at")
        parts.append(score_events(pl.scan_parquet(clean).filter((at >= start) & (at < end)), selected))
    files = [p for p in (lake.pull(lake.day_file("daily_scores", d)) for d in whole) if p.is_file()]
    if files:
        # Days scored before names and metadata existed lack their columns: read as nulls.
        parts.append(pl.scan_parquet(files, schema=SCORES_SCHEMA, missing_columns="insert"))  # type: ignore[arg-type]
    if not parts:
        return pl.LazyFrame(schema=SCORES_SCHEMA)
    return rollup_scores(pl.concat(parts), selected)


def _scores(lake: Lake, boards: BoardSet, period: Period) -> pl.LazyFrame:
    if period.type == SEASON:
        return season_scores(lake, boards, period)
    return scores_of(lake, boards, period.days())


def period_scores(lake: Lake, boards: BoardSet, period: Period) -> pl.DataFrame:
    """Each user's score over `period` for the boards that have it (before `min_score`)."""
    return (
        _scores(lake, boards, period)
        .filter(pl.col("board_id").is_in([b.id for b in boards.with_period(period.type)]))
        .collect()
    )


def rank_period(
    lake: Lake,
    boards: BoardSet,
    period: Period,
    scores: pl.DataFrame | None = None,
    excluded: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Standings of every board of `period`, with previous ranks from the period before.

    `scores` are the period's scores when the caller has them already (`period_scores`);
    `excluded` the exclusions in force (`Stores.excluded`), dropped before ranking.
    """
    selected = boards.with_period(period.type)
    prev = period.previous(boards.start_date)
    current = scores.lazy() if scores is not None else _scores(lake, boards, period)
    previous = scores_of(lake, boards, prev.days()) if prev else None
    return standings(current, previous, selected, excluded).collect()


def expected_users(
    lake: Lake, boards: BoardSet, period: Period, scores: pl.DataFrame, excluded: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Who must be in a period's standings: for a day, counted from its clean events directly;
    for longer periods (whose clean events may be past retention), from the rolled-up scores;
    less the `excluded`."""
    selected = boards.with_period(period.type)
    clean = lake.day_file("clean_events", period.start)
    if period.type == "daily" and (events := live.day_events(lake, period.start)) is not None:
        users = checks.counted_users(events, selected)
    elif period.type == "daily" and lake.pull(clean).is_file():
        users = checks.counted_users(pl.scan_parquet(clean), selected)
    else:
        users = checks.eligible_users(scores, selected)
    return without_excluded(users.lazy(), excluded).collect()


def cache_verdicts(stores: Stores, boards: BoardSet, period: Period) -> list[Verdict]:
    """After publish: does Redis serve what Postgres holds, for each board of the period?"""
    verdicts = []
    record = stores.record
    with stores.redis() as client:
        if record is None or client is None:
            return []
        for board in boards.with_period(period.type):
            raw = client.get(stores.keys.rankings(board.id, period.type, period.key))
            cached = json.loads(raw)["entries"] if raw else None
            stored = record.snapshot(board.id, period.type, period.key, display_limit(board))
            rows = stored.frame if stored else pl.DataFrame(schema=ENTRY_SCHEMA)
            verdicts.append(checks.cache_matches_postgres(board.id, cached, rows))
    return verdicts


@dataclass(frozen=True)
class Published:
    entries: dict[str, int]  # entries per board
    identity: str | None = None  # what the identity service gave, when IDENTITY_SERVICE_URL is set


def publish_period(
    lake: Lake,
    boards: BoardSet,
    period: Period,
    table: pl.DataFrame,
    run_id: str,
    stores: Stores | None = None,
    now: dt.datetime | None = None,
    identity: IdentityService | None = None,
) -> Published:
    """Publish one period of every board: Postgres (system of record) and Redis when
    configured, then an atomic lake snapshot.

    With `identity`, users' display names come from the identity service first (within its
    time budget, whatever it does; docs/contracts.md#identity-service). A board whose period is
    settled is not republished: its late events are recorded instead (docs/contracts.md#settlement).
    If a board settles or is reopened meanwhile, the publish is planned again."""
    stores = stores or Stores(lake)
    now = now or dt.datetime.now(UTC)  # one instant for the names' freshness and the publish
    named = None
    if identity is not None:
        # names go to boards whose entries are users, not groups
        users = [b.id for b in boards.with_period(period.type) if b.group_by is None]
        named = name_standings(table, users, identity, identity_cache(stores.database_url, stores.lake), now)
        table = named.table
    table = with_name_columns(table)
    for _ in range(SETTLEMENT_RETRIES):
        try:
            entries = _publish_period(lake, boards, period, table, run_id, stores, now)
            return Published(entries, named.report if named else None)
        except SettlementChanged:
            continue
    raise RuntimeError(f"{period.type} {period.key}: settlement changed during each of {SETTLEMENT_RETRIES} publishes")


def _publish_period(
    lake: Lake,
    boards: BoardSet,
    period: Period,
    table: pl.DataFrame,
    run_id: str,
    stores: Stores,
    now: dt.datetime | None,
) -> dict[str, int]:
    start, end = period.bounds(boards.tz)
    now = now or dt.datetime.now(UTC)
    today = now.astimezone(boards.tz).date()
    status = status_at(end, now)
    frozen = refuse_settled(stores.record, period.type, period.key, table, now)
    current = period.type == "all_time" or start <= now < end
    published: list[tuple[dict, pl.DataFrame]] = []
    for board in boards.with_period(period.type):
        if board.id in frozen:
            continue
        rows = table.filter(pl.col("board_id") == board.id).sort("rank")
        header = snapshot_header(board.id, period.type, period.key, start, end, now, run_id, rows.height)
        snapshot = rows.select(
            pl.lit(board.id).alias("board_id"),
            pl.lit(period.type).alias("period_type"),
            pl.lit(period.key).alias("period_key"),
            pl.lit(start).alias("period_start"),
            pl.lit(end).alias("period_end"),
            "user_id", "rank", "score", "previous_rank", "rank_change", "event_count", "reached_at",
            "display_name", "metadata",
            pl.lit(now).alias("published_at"),
            pl.lit(run_id).alias("run_id"),
        )  # fmt: skip
        published.append((header, snapshot))
    if not published:
        return {}
    with stores.redis() as client:  # Redis unreachable: fail before Postgres changes

        def cache_and_lake(locked: bool) -> None:
            """`locked`: the period's lock is held, so what a killed publisher of it left can go."""
            listed = stores.period_ends(period.type, boards.tz) if client is not None else {}
            for header, snapshot in published:
                board = boards.get(header["board_id"])
                assert board is not None
                if client is not None:
                    if locked:
                        cache.drop_staging(client, stores.keys, board.id, period.type, period.key)
                    body = Snapshot(header, snapshot).body(boards.tz, display_limit(board), now=now)
                    hot = cache.hot_keys(period.type, today, board, boards.tz)
                    users = snapshot if period.key in hot else None
                    others = listed.get(board.id, {})
                    cache.publish(client, stores.keys, board.id, period.type, period.key, body, users, current, others)
                if locked:
                    drop_temp_files(lake.snapshot(board.id, period.type, period.key))
                lake.publish_snapshot(snapshot, board.id, period.type, period.key, header)

        if stores.database_url:
            # Redis and the lake under Postgres's lock on the period: a second publish of it waits
            # for all three, so they end up holding the same publish.
            rows = pl.concat([s for _, s in published])
            if frozen and stores.record is not None:  # the period's leaf holds the settled boards too, unchanged
                rows = pl.concat([rows, kept_rows(stores.record, period.type, period.key, sorted(frozen), rows)])
            publish_postgres(stores.database_url, rows, [h for h, _ in published], status,
                             after_commit=lambda: cache_and_lake(locked=True),
                             under_lock=lambda c: check_unchanged(c, period.type, period.key, set(frozen)))  # fmt: skip
        else:
            cache_and_lake(locked=False)
    return {h["board_id"]: h["total"] for h, _ in published}


def all_time_period(lake: Lake, boards: BoardSet) -> Period | None:
    """All-time covers every materialized day up to the latest one."""
    days = [d for d in lake.days("daily_scores") if d >= boards.start_date]
    return period_of("all_time", days[-1], boards.start_date) if days else None
