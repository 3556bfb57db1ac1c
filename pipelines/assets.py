"""Dagster assets: landing files to published standings (docs/contracts.md#flow).

Each asset loops over the partitions of its run (a backfill or `leaderboard materialize`
range runs as one run) and calls `pipelines.steps` for each; metadata reports per partition.
"""

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import asdict

import dagster as dg

from leaderboard.boards import BoardSet
from leaderboard.identity import IdentityService
from leaderboard.periods import Period, PeriodError, season_boards
from leaderboard.settings import Settings
from pipelines import checks
from pipelines.automation import follows_daily_scores
from pipelines.checks import Verdict
from pipelines.partitions import PeriodPartitions, period_for_key
from pipelines.resources import LakeResource, StoresResource
from pipelines.steps import (
    QuarantineRateExceeded,
    all_time_period,
    cache_verdicts,
    expected_users,
    ingest_day,
    period_scores,
    publish_period,
    rank_period,
    refresh_day,
    score_day,
)

INGEST, RANK = "ingest", "standings"
BEFORE_PUBLISH = (checks.RANKS_CONTIGUOUS, checks.ONE_ROW_PER_USER, checks.ENTRIES_MATCH_SCORES)


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def _table(rows: list[dict]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(nothing)")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _results(asset: str, names: tuple[str, ...], verdicts: list[tuple[str, Verdict]]) -> list[dg.AssetCheckResult]:
    """One result per check over all partitions of the run; problems name their partition."""
    results = []
    for name in names:
        mine = [(where, v) for where, v in verdicts if v.name == name]
        problems = [f"{where}: {p}" for where, v in mine for p in v.problems]
        results.append(
            dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=all(v.passed for _, v in mine),
                metadata={
                    "checked": len(mine),
                    "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
                },
            )
        )
    return results


def _blocked(
    asset: str, names: tuple[str, ...], verdicts: list[tuple[str, Verdict]], kept: str = "previous standings kept"
) -> Iterator[dg.AssetCheckResult]:
    """Report the checks, then fail the step: nothing of the failing partition was published."""
    evaluated = {v.name for _, v in verdicts}
    results = _results(asset, tuple(n for n in names if n in evaluated), verdicts)  # the rest never ran
    yield from results
    failed = [f"{where}: {p}" for where, v in verdicts if not v.passed for p in v.problems]
    raise dg.Failure(
        description=f"{asset}: checks failed, {kept}:\n" + "\n".join(failed[:20]),
        metadata={"failed_checks": [r.check_name for r in results if not r.passed]},
        allow_retries=False,
    )


def build_assets(
    boards: BoardSet, parts: PeriodPartitions, settings: Settings
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    previous_too = dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True)
    single_run = dg.BackfillPolicy.single_run()
    # Redis against Postgres is only checkable where both are published to.
    after_publish = (checks.CACHE_MATCHES_POSTGRES,) if settings.DATABASE_URL and settings.redis_url else ()
    # Current periods are recomputed every REFRESH_INTERVAL_MINUTES: three missed refreshes warn, six fail.
    interval = dt.timedelta(minutes=settings.REFRESH_INTERVAL_MINUTES)
    fresh = dg.FreshnessPolicy.time_window(fail_window=6 * interval, warn_window=3 * interval)
    identity = IdentityService.from_settings(settings)  # None: display names from events only

    landed_events = dg.AssetSpec(
        "landed_events",
        description="Files the Kafka Connect sink lands under LEADERBOARD_LANDING_DIR, by UTC event hour.",
        group_name=INGEST,
        partitions_def=parts.daily,
        kinds={"kafka", "json", "parquet"},
    )

    @dg.asset(
        partitions_def=parts.daily,
        backfill_policy=single_run,
        deps=[landed_events],
        group_name=INGEST,
        kinds={"duckdb", "polars", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                checks.QUARANTINE_RATE,
                asset="clean_events",
                blocking=True,
                description=f"Under {settings.QUARANTINE_MAX_RATE:.2%} of the day's records quarantined "
                "(QUARANTINE_MAX_RATE); else the day's clean events are not replaced.",
            )
        ],
    )
    def clean_events(
        context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Valid, deduplicated events of each local day, read from the hour folders that overlap it.

        Broken records go to `quarantine/` with file, line and reason; redeliveries of an
        event_id count once (first in Kafka order wins). Per day, read = counted + duplicates
        + quarantined, or the run fails. The current day reads only the files landed since its
        last run and merges them in (its clean events then live in the lake's `.live/` area).
        """
        rows, verdicts = [], []
        for day in _days(context):
            # The current day is refreshed live: only the files landed since its last refresh are
            # read. A closed day (its close, late files) is read whole.
            live = day == dt.datetime.now(boards.tz).date()
            try:
                stats = (refresh_day if live else ingest_day)(
                    lake.landing, lake.lake, boards, day, context.run_id, stores.stores, settings.QUARANTINE_MAX_RATE
                )
            except QuarantineRateExceeded as exc:
                for r in rows:  # the days before it were installed
                    yield dg.AssetMaterialization("clean_events", partition=r["day"], metadata=r)
                failed = [*verdicts, (str(day), exc.verdict)]
                yield from _blocked("clean_events", (checks.QUARANTINE_RATE,), failed, "the day's clean events kept")
                return
            verdicts.append((str(day), Verdict(checks.QUARANTINE_RATE, True)))
            context.log.info(
                f"{day}: read {stats.read} from {stats.files} files, counted {stats.counted}, "
                f"duplicates {stats.duplicates} ({stats.conflicts} conflicting), quarantined {stats.quarantined}"
            )
            if stats.skipped_files:
                context.log.warning(f"{day}: {stats.skipped_files} files skipped (not landing file names)")
            rows.append(asdict(stats))
        totals = {k: sum(r[k] for r in rows) for k in ("read", "counted", "duplicates", "conflicts", "quarantined")}
        yield dg.MaterializeResult(
            metadata={**totals, "files": sum(r["files"] for r in rows), "per_day": _table(rows)},
            check_results=_results("clean_events", (checks.QUARANTINE_RATE,), verdicts),
        )

    @dg.asset(
        partitions_def=parts.daily,
        backfill_policy=single_run,
        deps=[clean_events],
        group_name=INGEST,
        kinds={"polars", "parquet"},
    )
    def daily_scores(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        """Each user's score per board and day: the only input of every period's standings."""
        rows = []
        for day in _days(context):
            t0 = time.perf_counter()
            scored = score_day(lake.lake, boards, day)
            rows.append({"day": day.isoformat(), "rows": scored, "seconds": round(time.perf_counter() - t0, 3)})
        return dg.MaterializeResult(metadata={"rows": sum(r["rows"] for r in rows), "per_day": _table(rows)})

    def _publish(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        stores: StoresResource,
        asset: str,
        periods: list[tuple[str | None, Period]],
        boards: BoardSet = boards,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetMaterialization]:
        """Rank, check, and only then publish each period; a failed check stops the run there.

        `periods` pairs each Dagster partition key with its period. When a check stops a
        ranged run, the periods published before it are recorded as materialized. `boards`:
        a season's are those that list it.
        """
        # The exclusions in force as the run ranks, the same for each of its periods.
        excluded = stores.stores.excluded(dt.datetime.now(dt.UTC))
        rows: list[dict] = []  # metadata of each published period
        published: list[str | None] = []  # and its partition key
        verdicts: list[tuple[str, Verdict]] = []
        for partition, period in periods:
            if not any(lake.lake.has(lake.lake.day_file("daily_scores", d)) for d in period.days()):
                # Asked for as the period after a changed one, before any of its own days ran:
                # standings of no day would read as "nobody scored", so there is nothing to publish.
                context.log.info(f"{period.type} {period.key}: none of its days has daily_scores yet, not published")
                continue
            t0 = time.perf_counter()
            scores = period_scores(lake.lake, boards, period)
            table = rank_period(lake.lake, boards, period, scores, excluded)
            users = expected_users(lake.lake, boards, period, scores, excluded)
            found = [(period.key, v) for v in checks.standings_verdicts(table, users, boards.with_period(period.type))]
            verdicts += found
            if not all(v.passed for _, v in found):
                for key, r in zip(published, rows, strict=True):
                    yield dg.AssetMaterialization(asset, partition=key, metadata=r)
                yield from _blocked(asset, BEFORE_PUBLISH + after_publish, verdicts)
                return
            done = publish_period(lake.lake, boards, period, table, context.run_id, stores.stores, identity=identity)
            entries = done.entries
            if kept := [b.id for b in boards.with_period(period.type) if b.id not in entries]:
                context.log.warning(f"{period.type} {period.key}: {', '.join(kept)} settled, kept as settled "
                                    "(late events recorded; docs/contracts.md#settlement)")  # fmt: skip
            if after_publish:
                verdicts += [(period.key, v) for v in cache_verdicts(stores.stores, boards, period)]
            seconds = round(time.perf_counter() - t0, 3)
            row = {"period": period.key, "users_ranked": sum(entries.values()), **entries, "seconds": seconds}
            if done.identity is not None:
                row["identity"] = done.identity
                if not done.identity.startswith("ok"):
                    context.log.warning(f"{period.type} {period.key}: identity service {done.identity}")
            rows.append(row)
            published.append(partition)
            context.log.info(f"published {period.type} {period.key}: {entries}")
        metadata: dict[str, object] = {"users_ranked": sum(r["users_ranked"] for r in rows), "per_period": _table(rows)}
        if identity is not None and rows:
            # One period (the usual run): its report as is; a range: each period's, by key.
            each = [f"{r['period']}: {r['identity']}" for r in rows]
            metadata["identity"] = rows[0]["identity"] if len(rows) == 1 else "\n".join(each)
        yield dg.MaterializeResult(
            metadata=metadata,
            check_results=_results(asset, BEFORE_PUBLISH + after_publish, verdicts),
        )

    def _check_specs(asset: str) -> list[dg.AssetCheckSpec]:
        what = {
            checks.RANKS_CONTIGUOUS: "Ranks of each board are 1..N, no gap or repeat.",
            checks.ONE_ROW_PER_USER: "One row per user and board.",
            checks.ENTRIES_MATCH_SCORES: "Entries equal the users with counted events (after min_score).",
            checks.CACHE_MATCHES_POSTGRES: "After publish: Redis top N equals Postgres top N "
            "(if not: `leaderboard cache rebuild --board B`).",
        }
        return [
            # The Redis check runs after publishing; blocking, it still fails the run loudly.
            dg.AssetCheckSpec(name, asset=asset, blocking=True, description=what[name])
            for name in BEFORE_PUBLISH + after_publish
        ]

    def ranking_asset(name: str, period_type: str, partitions_def: dg.PartitionsDefinition, doc: str):
        @dg.asset(
            name=name,
            partitions_def=partitions_def,
            backfill_policy=single_run,
            deps=[dg.AssetDep(daily_scores, partition_mapping=previous_too)],
            group_name=RANK,
            kinds={"polars", "parquet"},
            description=doc,
            check_specs=_check_specs(name),
            automation_condition=follows_daily_scores(existing_only=period_type == "daily"),
            freshness_policy=fresh,
        )
        def _asset(
            context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
        ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
            periods = [(key, period_for_key(period_type, key)) for key in context.partition_keys]
            yield from _publish(context, lake, stores, name, periods)

        return _asset

    daily_rankings = ranking_asset(
        "daily_rankings",
        "daily",
        parts.daily,
        "Standings of each local day, ranked and published as one atomic snapshot per board; "
        "previous_rank is the day before.",
    )
    weekly_rankings = ranking_asset(
        "weekly_rankings",
        "weekly",
        parts.weekly,
        "ISO-week standings (Monday 00:00 local), rolled up from daily_scores; previous_rank is the week before.",
    )
    monthly_rankings = ranking_asset(
        "monthly_rankings",
        "monthly",
        parts.monthly,
        "Calendar-month standings rolled up from daily_scores; previous_rank is the month before.",
    )

    @dg.asset(
        deps=[daily_scores],
        group_name=RANK,
        kinds={"polars", "parquet"},
        check_specs=_check_specs("all_time_rankings"),
        automation_condition=follows_daily_scores(),
        freshness_policy=fresh,
    )
    def all_time_rankings(
        context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """All-time standings over every materialized day up to the latest one (key `all`);
        previous_rank is the standings one day earlier."""
        period = all_time_period(lake.lake, boards)
        if period is None:
            context.log.warning("no daily_scores yet: nothing to publish")
            yield dg.MaterializeResult(
                metadata={"users_ranked": 0},
                check_results=_results("all_time_rankings", BEFORE_PUBLISH + after_publish, []),
            )
            return
        context.log.info(f"all-time through {period.end - dt.timedelta(days=1)}")
        yield from _publish(context, lake, stores, "all_time_rankings", [(None, period)])

    @dg.asset(
        partitions_def=parts.season,
        group_name=RANK,
        kinds={"polars", "parquet"},
        check_specs=_check_specs("season_rankings"),
    )
    def season_rankings(
        context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetMaterialization]:
        """Standings of each season of the boards file (partition = season id) over exactly its
        window: the days it covers whole from daily_scores, the days it starts or ends within
        from their clean events. Requested by the `season_rankings` sensor while the season is
        live, when it ends, and after a late file; no previous_rank (docs/contracts.md#seasons)."""
        try:
            listing, period = season_boards(boards, context.partition_key)
        except PeriodError as exc:
            raise dg.Failure(description=f"{exc} (in {boards.source})", allow_retries=False) from None
        start, end = period.bounds(boards.tz)
        names = ", ".join(b.id for b in listing.boards)
        context.log.info(f"season {period.key}: {start.isoformat()} to {end.isoformat()}, boards {names}")
        yield from _publish(context, lake, stores, "season_rankings", [(context.partition_key, period)], listing)

    return [
        landed_events,
        clean_events,
        daily_scores,
        daily_rankings,
        weekly_rankings,
        monthly_rankings,
        all_time_rankings,
        season_rankings,
    ]
