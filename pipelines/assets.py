"""Dagster assets: landing files to published standings (DESIGN §1).

Each asset loops over the partitions of its run (a backfill or `leaderboard materialize`
range runs as one run) and calls `pipelines.steps` for each; metadata reports per partition.
"""

import datetime as dt
import time
from dataclasses import asdict

import dagster as dg

from leaderboard.boards import BoardSet
from pipelines.partitions import PeriodPartitions, period_for_key
from pipelines.resources import LakeResource, StoresResource
from pipelines.steps import (
    all_time_period,
    ingest_day,
    publish_period,
    rank_period,
    score_day,
)

INGEST, RANK = "ingest", "standings"


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def _table(rows: list[dict]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(nothing)")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def build_assets(boards: BoardSet, parts: PeriodPartitions) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    previous_too = dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True)
    single_run = dg.BackfillPolicy.single_run()

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
    )
    def clean_events(
        context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
    ) -> dg.MaterializeResult:
        """Valid, deduplicated events of each local day, read from the hour folders that overlap it.

        Broken records go to `quarantine/` with file, line and reason; redeliveries of an
        event_id count once (first in Kafka order wins). Per day, read = counted + duplicates
        + quarantined, or the run fails.
        """
        rows = []
        for day in _days(context):
            stats = ingest_day(lake.landing, lake.lake, boards, day, context.run_id, stores.stores)
            context.log.info(
                f"{day}: read {stats.read} from {stats.files} files, counted {stats.counted}, "
                f"duplicates {stats.duplicates} ({stats.conflicts} conflicting), quarantined {stats.quarantined}"
            )
            if stats.skipped_files:
                context.log.warning(f"{day}: {stats.skipped_files} files skipped (not landing file names)")
            rows.append(asdict(stats))
        totals = {k: sum(r[k] for r in rows) for k in ("read", "counted", "duplicates", "conflicts", "quarantined")}
        return dg.MaterializeResult(
            metadata={**totals, "files": sum(r["files"] for r in rows), "per_day": _table(rows)}
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
            scores = score_day(lake.lake, boards, day)
            rows.append({"day": day.isoformat(), "rows": scores.height, "seconds": round(time.perf_counter() - t0, 3)})
        return dg.MaterializeResult(metadata={"rows": sum(r["rows"] for r in rows), "per_day": _table(rows)})

    def _publish(
        context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource, period_type: str
    ) -> dg.MaterializeResult:
        rows = []
        for key in context.partition_keys:
            period = period_for_key(period_type, key)
            t0 = time.perf_counter()
            table = rank_period(lake.lake, boards, period)
            entries = publish_period(lake.lake, boards, period, table, context.run_id, stores.stores)
            seconds = round(time.perf_counter() - t0, 3)
            rows.append({"period": period.key, "users_ranked": sum(entries.values()), **entries, "seconds": seconds})
            context.log.info(f"published {period_type} {period.key}: {entries}")
        return dg.MaterializeResult(
            metadata={"users_ranked": sum(r["users_ranked"] for r in rows), "per_period": _table(rows)}
        )

    def ranking_asset(name: str, period_type: str, partitions_def: dg.PartitionsDefinition, doc: str):
        @dg.asset(
            name=name,
            partitions_def=partitions_def,
            backfill_policy=single_run,
            deps=[dg.AssetDep(daily_scores, partition_mapping=previous_too)],
            group_name=RANK,
            kinds={"polars", "parquet"},
            description=doc,
        )
        def _asset(
            context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
        ) -> dg.MaterializeResult:
            return _publish(context, lake, stores, period_type)

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

    @dg.asset(deps=[daily_scores], group_name=RANK, kinds={"polars", "parquet"})
    def all_time_rankings(
        context: dg.AssetExecutionContext, lake: LakeResource, stores: StoresResource
    ) -> dg.MaterializeResult:
        """All-time standings over every materialized day up to the latest one (key `all`);
        previous_rank is the standings one day earlier."""
        period = all_time_period(lake.lake, boards)
        if period is None:
            context.log.warning("no daily_scores yet: nothing to publish")
            return dg.MaterializeResult(metadata={"users_ranked": 0})
        t0 = time.perf_counter()
        table = rank_period(lake.lake, boards, period)
        entries = publish_period(lake.lake, boards, period, table, context.run_id, stores.stores)
        return dg.MaterializeResult(
            metadata={
                "through_day": (period.end - dt.timedelta(days=1)).isoformat(),
                "users_ranked": sum(entries.values()),
                "per_board": _table([entries]),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )

    return [
        landed_events,
        clean_events,
        daily_scores,
        daily_rankings,
        weekly_rankings,
        monthly_rankings,
        all_time_rankings,
    ]
