"""Settlement in Dagster (docs/contracts.md#settlement): the sensor that settles periods whose
grace has passed (and asks for reopened ones to be recomputed), and the sensor that delivers
the `period.settled` webhooks from the outbox.

Both are thin: the rules are `leaderboard.settlement`'s, the queries
`leaderboard.stores.settlement`'s, the delivery `leaderboard.webhook`'s. Without Postgres
both skip, saying so: settlement needs its transactions.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from leaderboard.boards import SEASON, BoardSet, display_limit
from leaderboard.periods import UTC, parse_period_key
from leaderboard.settings import Settings
from leaderboard.stores.settlement import PostgresSettlement
from leaderboard.webhook import deliver_due
from pipelines.automation import TRIGGER_TAG
from pipelines.partitions import partition_key
from pipelines.resources import StoresResource, env_var

NO_POSTGRES = "settlement needs Postgres: DATABASE_URL is not set, so no period is ever settled"
REOPENED_TAG = "leaderboard/reopened"  # board/type/key of the reopened period a run recomputes


class SettlementResource(dg.ConfigurableResource):
    """The grace before a period settles and where its webhook goes; the URL and the signing
    secret are read from the environment (`dg.EnvVar`) when a tick starts."""

    grace_minutes: int = 60
    webhook_url: str | None = None
    webhook_secret: str | None = None
    retry_seconds: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> SettlementResource:
        return cls(
            grace_minutes=settings.SETTLE_GRACE_MINUTES,
            webhook_url=env_var("SETTLEMENT_WEBHOOK_URL", settings.SETTLEMENT_WEBHOOK_URL),
            webhook_secret=env_var("SETTLEMENT_WEBHOOK_SECRET", settings.SETTLEMENT_WEBHOOK_SECRET),
            retry_seconds=settings.SETTLEMENT_WEBHOOK_RETRY_SECONDS,
        )

    @property
    def grace(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.grace_minutes)


def build_settlement(
    boards: BoardSet, settings: Settings, rerank_jobs: dict[str, dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """`rerank_jobs`: the job that ranks and publishes each period type without re-reading events."""

    def webhook_limit(board_id: str) -> int:
        board = boards.get(board_id)
        return display_limit(board) if board is not None else settings.DISPLAY_LIMIT_DEFAULT

    @dg.sensor(
        name="settle_periods",
        jobs=list(rerank_jobs.values()),
        minimum_interval_seconds=settings.AUTOMATION_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Settle periods SETTLE_GRACE_MINUTES after they ended (and were published since); "
        "ask for a recompute of the periods an operator reopened.",
    )
    def settle_periods(
        context: dg.SensorEvaluationContext, stores: StoresResource, settlement: SettlementResource
    ) -> dg.SensorResult | dg.SkipReason:
        record = stores.stores.record
        if record is None:
            return dg.SkipReason(NO_POSTGRES)
        store = PostgresSettlement(record)
        limits = webhook_limit if settlement.webhook_url else None
        settled = store.settle_due(dt.datetime.now(UTC), settlement.grace, boards.tz, limits)
        for s in settled:
            context.log.info(
                f"settled {s.board_id} {s.period_type} {s.period_key}: revision {s.revision}, "
                f"{s.entries} entries, hash {s.content_hash[:12]}"
            )
        latest: dict[tuple[str, str], tuple[str, dt.datetime]] = {}
        for due, at in store.awaiting_republish():
            if (due.period_type, due.period_key) not in latest or latest[due.period_type, due.period_key][1] < at:
                latest[due.period_type, due.period_key] = (due.board_id, at)
        requests = []
        for (period_type, key), (board_id, at) in sorted(latest.items()):
            job = rerank_jobs.get(period_type)
            if job is None:
                continue
            requests.append(
                dg.RunRequest(
                    job_name=job.name,
                    partition_key=key if period_type == SEASON else partition_key(parse_period_key(period_type, key)),
                    # One run per reopening: a failed one is rerun by hand (`leaderboard materialize`).
                    run_key=f"reopened:{period_type}:{key}:{at.isoformat()}",
                    tags={TRIGGER_TAG: "reopened", REOPENED_TAG: f"{board_id}/{period_type}/{key}"},
                )
            )
        if requests:
            context.log.info(f"reopened periods to recompute: {', '.join(f'{t} {k}' for t, k in sorted(latest))}")
        if not requests and not settled:
            return dg.SkipReason("no period to settle or recompute")
        return dg.SensorResult(run_requests=requests)

    @dg.sensor(
        name="settlement_webhooks",
        minimum_interval_seconds=min(30, settings.SETTLEMENT_WEBHOOK_RETRY_SECONDS),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="POST each period.settled event of the outbox to SETTLEMENT_WEBHOOK_URL, signed, "
        "until a 2xx (exponential backoff from SETTLEMENT_WEBHOOK_RETRY_SECONDS).",
    )
    def settlement_webhooks(
        context: dg.SensorEvaluationContext, stores: StoresResource, settlement: SettlementResource
    ) -> dg.SkipReason:
        record = stores.stores.record
        if record is None:
            return dg.SkipReason(NO_POSTGRES)
        if not settlement.webhook_url or not settlement.webhook_secret:
            return dg.SkipReason("SETTLEMENT_WEBHOOK_URL is not set: no webhook to deliver")
        report = deliver_due(
            PostgresSettlement(record),
            settlement.webhook_url,
            settlement.webhook_secret,
            dt.timedelta(seconds=settlement.retry_seconds),
        )
        for item, attempt in report.failed:
            context.log.warning(
                f"{item.board_id} {item.period_type} {item.period_key} revision {item.revision} "
                f"(delivery {item.id}) attempt {item.attempts + 1} failed: {attempt.error}"
            )
        # Sensors without runs report through the skip reason: it is the tick's line in the UI.
        return dg.SkipReason(f"{len(report.delivered)} delivered, {len(report.failed)} failed")

    return [settle_periods, settlement_webhooks]
