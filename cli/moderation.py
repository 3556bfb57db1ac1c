"""`leaderboard moderation ...`: exclude a user or group from a board (or every board), lift it,
list the exclusions and read the admin audit (docs/contracts.md#moderation). Postgres only."""

from __future__ import annotations

import datetime as dt
import getpass
import json

import click

from cli.options import utc_instant


def _store():  # type: ignore[no-untyped-def]
    from leaderboard.moderation import NO_POSTGRES
    from leaderboard.settings import get_settings
    from leaderboard.stores import Stores
    from leaderboard.stores.moderation import PostgresModeration

    record = Stores.from_settings(get_settings()).record
    if record is None:
        raise click.UsageError(NO_POSTGRES)
    return PostgresModeration(record)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def _by(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


@click.group()
def moderation() -> None:
    """Exclusions from boards and the admin audit (Postgres)."""


@moderation.command("exclude")
@click.argument("subject")
@click.option("--board", help="The board; without it, every board.")
@click.option("--reason", required=True, help="Why (kept in the audit), 1-500 characters.")
@click.option(
    "--until", callback=utc_instant, help="ISO instant with offset when it ends by itself; default: until lifted."
)
@click.option("--by", "actor", help="Who excludes [cli:<login name>].")
def exclude(subject: str, board: str | None, reason: str, until: dt.datetime | None, actor: str | None) -> None:
    """Exclude SUBJECT (a user id, or a group id) from rankings; the pipeline republishes the
    current periods without it at its next sensor tick."""
    from leaderboard.boards import current_boards
    from leaderboard.moderation import ModerationError

    if board is not None and current_boards().get(board) is None:
        raise click.BadParameter(f"unknown board {board!r}", param_hint="--board")
    store = _store()
    try:
        done = store.exclude(board, subject, reason, _by(actor), dt.datetime.now(dt.UTC), until)
    except ModerationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exclusion {done.id}: {subject} excluded from {board or 'every board'} until "
               f"{_when(done.until) if done.until else 'lifted'}")  # fmt: skip


@moderation.command("lift")
@click.argument("exclusion_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit), 1-500 characters.")
@click.option("--by", "actor", help="Who lifts it [cli:<login name>].")
def lift(exclusion_id: int, reason: str, actor: str | None) -> None:
    """Lift exclusion EXCLUSION_ID: the subject is ranked again from the next republish."""
    from leaderboard.moderation import ModerationError

    try:
        done = _store().lift(exclusion_id, _by(actor), reason, dt.datetime.now(dt.UTC))
    except ModerationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exclusion {done.id} lifted: {done.subject_id} ranked again on {done.board_id or 'every board'}")


@moderation.command("list")
@click.option("--in-force", is_flag=True, help="Only those neither lifted nor expired.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def listed(in_force: bool, limit: int) -> None:
    """Exclusions, newest first."""
    now = dt.datetime.now(dt.UTC)
    click.echo(f"{'id':>5} {'board':16} {'subject':20} {'state':8} {'created':20} {'until':20} by: reason")
    for e in _store().listed(now, in_force, limit):
        state = "in force" if e.in_force(now) else ("lifted" if e.lifted_at else "expired")
        click.echo(f"{e.id:>5} {e.board_id or '*':16} {e.subject_id:20} {state:8} {_when(e.created_at):20} "
                   f"{_when(e.until):20} {e.created_by}: {e.reason}")  # fmt: skip


@moderation.command("audit")
@click.option("--action", help="Only actions starting with this (board.config, exclusion., period.reopen).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def audit(action: str | None, limit: int) -> None:
    """Every admin change, newest first: who, when, what, why."""
    for r in _store().audit(limit, action).iter_rows(named=True):
        details = json.loads(r["details"])
        click.echo(f"{_when(r['at'])} {r['actor']} {r['action']} {r['target']}: {r['reason'] or '-'} "
                   f"{json.dumps(details, separators=(',', ':'))}")  # fmt: skip
