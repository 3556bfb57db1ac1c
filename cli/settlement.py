"""`leaderboard settlement ...`: an operator's view of settlement and the actions the pipeline
otherwise takes by itself (docs/contracts.md#settlement). Postgres only."""

from __future__ import annotations

import datetime as dt
import getpass

import click

from cli.options import local_when, utc_instant


def _store():  # type: ignore[no-untyped-def]
    from leaderboard.settings import get_settings
    from leaderboard.stores import Stores
    from leaderboard.stores.settlement import PostgresSettlement

    settings = get_settings()
    record = Stores.from_settings(settings).record
    if record is None:
        raise click.UsageError("settlement needs Postgres: set DATABASE_URL (without it no period is ever settled)")
    return settings, PostgresSettlement(record)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


@click.group()
def settlement() -> None:
    """Settled periods: status, settle now, reopen, history, webhook deliveries (Postgres)."""


@settlement.command("status")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def status(limit: int) -> None:
    """Reopened periods first, then the latest settled; and the webhooks not delivered yet."""
    _, store = _store()
    states = store.states(limit)
    click.echo(f"{'board':16} {'period':8} {'key':12} {'state':9} {'rev':>3}  {'settled at':20} {'late':>5}  hash")
    for r in states.iter_rows(named=True):
        click.echo(
            f"{r['board_id']:16} {r['period_type']:8} {r['period_key']:12} {r['state']:9} {r['revision']:>3}  "
            f"{_when(r['settled_at']):20} {r['late_after_settlement']:>5}  {r['content_hash'][:16]}"
        )
    waiting = store.undelivered()
    click.echo(f"webhooks not delivered: {waiting.pending} pending, {waiting.failing} failing"
               + (f" (oldest from {_when(waiting.oldest)})" if waiting.oldest else ""))  # fmt: skip
    for r in store.outbox(20, undelivered_only=True).iter_rows(named=True):
        click.echo(
            f"  {r['id']} {r['board_id']} {r['period_type']} {r['period_key']} revision {r['revision']}: "
            f"{r['attempts']} attempts, next {_when(r['next_attempt_at'])}, last: {r['last_error'] or '-'}"
        )


@settlement.command("settle")
@click.option("--now", callback=utc_instant, help="Evaluate at this ISO instant instead of now.")
def settle(now: dt.datetime | None) -> None:
    """Settle every period due now, as the `settle_periods` sensor does (with the webhook when set)."""
    from leaderboard.boards import current_boards, display_limit

    settings, store = _store()
    boards = current_boards()

    def limit(board_id: str) -> int:
        board = boards.get(board_id)
        return display_limit(board) if board else settings.DISPLAY_LIMIT_DEFAULT

    grace = dt.timedelta(minutes=settings.SETTLE_GRACE_MINUTES)
    top = limit if settings.SETTLEMENT_WEBHOOK_URL else None  # the webhook carries the top entries
    done = store.settle_due(now or dt.datetime.now(dt.UTC), grace, boards.tz, top)
    for s in done:
        click.echo(f"settled {s.board_id} {s.period_type} {s.period_key}: revision {s.revision}, {s.entries} entries, "
                   f"hash {s.content_hash}")  # fmt: skip
    click.echo(f"{len(done)} period(s) settled (SETTLE_GRACE_MINUTES={settings.SETTLE_GRACE_MINUTES})")


@settlement.command("reopen")
@click.argument("board")
@click.argument("period", type=click.Choice(["daily", "weekly", "monthly", "season"]))
@click.option("--at", callback=local_when, help="A local date inside the settled period (a season: or a date-time).")
@click.option("--season", "season_id", help="The season's id (period season), instead of --at.")
@click.option("--reason", required=True, help="Why (kept in the history and the admin audit).")
@click.option("--by", "actor", help="Who reopens it [cli:<login name>].")
def reopen(
    board: str, period: str, at: dt.date | dt.datetime | None, season_id: str | None, reason: str, actor: str | None
) -> None:
    """Reopen a settled period: it may change again, and settles again under the next revision."""
    from leaderboard.boards import current_boards
    from leaderboard.settlement import SettlementError
    from leaderboard.standings import check_board, check_key, resolve_key

    settings, store = _store()
    boards = current_boards()
    found = check_board(boards, board, period)
    if (at is None) == (season_id is None) or (season_id is not None and period != "season"):
        raise click.UsageError("give --at, or --season with the period season")
    key = check_key(boards, found, period, season_id) if season_id else resolve_key(boards, period, at, board)
    try:
        done = store.reopen(board, period, key, actor or f"cli:{getpass.getuser()}", reason, dt.datetime.now(dt.UTC))
    except SettlementError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"reopened {board} {period} {key} (revision {done.revision}); the pipeline recomputes it and settles it "
        f"again {settings.SETTLE_GRACE_MINUTES} minutes from now as revision {done.revision + 1}"
    )


@settlement.command("history")
@click.option("--board", help="Only this board.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def history(board: str | None, limit: int) -> None:
    """Every settlement and reopening, newest first: who, when, why, revision, content hash."""
    _, store = _store()
    for r in store.history(limit, board).iter_rows(named=True):
        click.echo(
            f"{_when(r['at'])} {r['action']:9} {r['board_id']} {r['period_type']} {r['period_key']} "
            f"revision {r['revision']} hash {r['content_hash'][:16]} by {r['actor']}: {r['reason']}"
        )


@settlement.command("deliver")
def deliver() -> None:
    """Attempt the webhook deliveries due now, as the `settlement_webhooks` sensor does."""
    from leaderboard.webhook import deliver_due

    settings, store = _store()
    if not settings.SETTLEMENT_WEBHOOK_URL or not settings.SETTLEMENT_WEBHOOK_SECRET:
        raise click.UsageError("SETTLEMENT_WEBHOOK_URL is not set: no webhook to deliver")
    report = deliver_due(store, settings.SETTLEMENT_WEBHOOK_URL, settings.SETTLEMENT_WEBHOOK_SECRET,
                         dt.timedelta(seconds=settings.SETTLEMENT_WEBHOOK_RETRY_SECONDS))  # fmt: skip
    for item, attempt in report.failed:
        click.echo(f"failed {item.id} ({item.board_id} {item.period_type} {item.period_key} r{item.revision}): "
                   f"{attempt.error}")  # fmt: skip
    click.echo(f"{len(report.delivered)} delivered, {len(report.failed)} failed")
