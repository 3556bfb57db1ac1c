"""`leaderboard` command line: generate sample data, materialize ranges, show standings, serve, operate.

Library errors are ordinary exceptions; `ErrorsAsMessages` turns the ones a user can fix
into a one-line message and exit status 1, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from cli.moderation import moderation as moderation_group
from cli.options import local_date, local_when
from cli.settlement import settlement as settlement_group
from leaderboard.boards import BoardsFileError
from leaderboard.settings import Settings, SettingsError, duration_seconds, get_settings
from leaderboard.standings import StandingsError
from leaderboard.stores.errors import StoreUnavailable

# What a user can fix from the message alone: shown without a traceback.
USER_ERRORS = (SettingsError, BoardsFileError, StoreUnavailable, StandingsError)


class ErrorsAsMessages(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None


def _settings() -> Settings:
    return get_settings()


def _use_dagster_home(settings: Settings) -> Path:
    """Point Dagster at DAGSTER_HOME (created if missing) so CLI runs show in the UI."""
    home = settings.DAGSTER_HOME.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@click.group(cls=ErrorsAsMessages)
def main() -> None:
    """Batch leaderboard engine: Kafka-landed events to published period standings."""


@main.command()
@click.option("--landing", type=click.Path(path_type=Path), help="Landing zone [LEADERBOARD_LANDING_DIR].")
@click.option("--start", required=True, callback=local_date, help="First local day, YYYY-MM-DD.")
@click.option("--days", type=click.IntRange(1, 3660), default=7, show_default=True)
@click.option("--users", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--events-per-day", type=click.IntRange(0), default=20_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--bad-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of broken records."
)
@click.option("--dup-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of redeliveries.")
@click.option(
    "--formats", default="json,json.gz,parquet", show_default=True, help="File formats to mix, comma-separated."
)
def generate(
    landing: Path | None,
    start: dt.date,
    days: int,
    users: int,
    events_per_day: int,
    seed: int,
    bad_rate: float,
    dup_rate: float,
    formats: str,
) -> None:
    """Write synthetic Kafka-landed event files (skewed users, several topics and partitions)."""
    from tqdm import tqdm

    from leaderboard.boards import current_boards
    from pipelines.generate import FORMATS, GenerateSpec
    from pipelines.generate import generate as run

    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    if not chosen or set(chosen) - set(FORMATS):
        raise click.BadParameter(f"{formats!r}: use some of {', '.join(FORMATS)}", param_hint="--formats")
    settings = _settings()
    target = landing or settings.LEADERBOARD_LANDING_DIR
    spec = GenerateSpec(
        target, start, days, users, events_per_day, seed, bad_rate, dup_rate, chosen, current_boards().timezone
    )
    with tqdm(total=days, unit="day", desc="generate", file=sys.stderr) as bar:
        totals = run(spec, progress=bar.update)
    click.echo(
        f"wrote {totals['files']} files to {target}: {totals['events']} events, "
        f"{totals['redeliveries']} redeliveries, {totals['bad']} broken records"
    )


@main.command()
@click.option("--start", required=True, callback=local_date, help="First local day, YYYY-MM-DD.")
@click.option("--end", required=True, callback=local_date, help="Last local day (inclusive), YYYY-MM-DD.")
@click.option("--log-level", default="WARNING", show_default=True, help="Dagster console log level.")
def materialize(start: dt.date, end: dt.date, log_level: str) -> None:
    """Run the pipeline for days START..END and every week, month and all-time they touch."""
    import dagster as dg
    from tqdm import tqdm

    from leaderboard.boards import current_boards
    from leaderboard.stores.lake import Lake
    from pipelines.runner import RangeError, execute, plan_runs

    settings = _settings()
    _use_dagster_home(settings)
    boards = current_boards()
    try:
        runs = plan_runs(boards, start, end, dt.datetime.now(boards.tz).date(), Lake(settings.LEADERBOARD_LAKE_DIR))
    except RangeError as exc:
        raise click.UsageError(str(exc)) from None
    from pipelines.definitions import build_defs

    defs = build_defs(settings)
    with dg.DagsterInstance.get() as instance, tqdm(total=len(runs), unit="run", file=sys.stderr) as bar:

        def done(o):  # type: ignore[no-untyped-def]
            bar.update(1)
            state = "ok" if o.success else "FAILED"
            bar.write(f"{state:6} {o.planned.label:40} {o.seconds:7.2f}s  run {o.run_id}")

        outcomes = execute(defs, runs, instance, on_done=done, log_level=log_level.upper())
    failed = [o for o in outcomes if not o.success]
    if failed:
        raise click.ClickException(f"{failed[0].planned.label}: {failed[0].error}")
    click.echo(f"materialized {start}..{end} in {len(outcomes)} Dagster runs ({sum(o.seconds for o in outcomes):.1f}s)")


@main.command()
@click.argument("board")
@click.argument("period", type=click.Choice(["daily", "weekly", "monthly", "all_time", "season"]))
@click.option(
    "--at", callback=local_when, help="A local date inside the period (default: today); for a season also a date-time."
)
@click.option("--season", "season_id", help="The season's id (period season), instead of --at.")
@click.option("--limit", type=click.IntRange(1, 10_000), help="Entries to show (default: the board's display limit).")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's standings body.")
def show(
    board: str,
    period: str,
    at: dt.date | dt.datetime | None,
    season_id: str | None,
    limit: int | None,
    offset: int,
    as_json: bool,
) -> None:
    """Print the published standings of BOARD for PERIOD (daily, weekly, monthly, all_time, season)."""
    from leaderboard.boards import current_boards, display_limit
    from leaderboard.standings import find_snapshot
    from leaderboard.stores.lake import Lake, LakeStandings

    settings = _settings()
    boards = current_boards()
    if season_id is not None and period != "season":
        raise click.UsageError("--season goes with the period season")
    store = LakeStandings(Lake(settings.LEADERBOARD_LAKE_DIR))
    snapshot = find_snapshot(store, boards, board, period, at, season_id)
    b = boards.get(board)
    assert b is not None
    body = snapshot.body(boards.tz, limit or display_limit(b), offset)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(
        f"{b.title or b.id} - {body['period']} {body['period_key']} "
        f"({body['period_start']} .. {body['period_end']}, {body['status']}), "
        f"{body['total']} ranked, published {body['published_at']}"
    )
    click.echo(f"{'rank':>6}  {'user':<24} {'name':<24} {'score':>14}  {'prev':>5}  move")
    for e in body["entries"]:
        change = e["rank_change"]
        move = "new" if e["previous_rank"] is None else ("=" if change == 0 else f"{change:+d}")
        prev = "" if e["previous_rank"] is None else e["previous_rank"]
        name = _cell(e["display_name"] or "", 24)
        click.echo(f"{e['rank']:>6}  {e['user_id']:<24} {name:<24} {e['score']!s:>14}  {prev!s:>5}  {move}")


def _cell(text: str, width: int) -> str:
    """A table cell on one line: control characters (a newline in a name) as spaces, cut to `width`."""
    flat = "".join(" " if not c.isprintable() else c for c in text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Port [PORT, 3000].")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
def api(host: str, port: int | None, workers: int) -> None:
    """Serve the HTTP API with granian (a production ASGI server)."""
    settings = _settings()  # fail here, with the variable named, not in a worker
    from leaderboard.boards import current_boards

    current_boards()
    args = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", host,
        "--port", str(port or settings.PORT), "--workers", str(workers), "api.app:create_app",
    ]  # fmt: skip
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are processes: their metrics meet in files, fresh for each server start.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="leaderboard-metrics-")
    os.execv(args[0], args)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True)
def dashboard(host: str, port: int) -> None:
    """Serve the Streamlit dashboard: leaderboards (via API_URL) and pipeline health (DAGSTER_HOME)."""
    _settings()  # a bad setting stops here with the variable named, not inside the page
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    args = [
        sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    os.execv(args[0], args)


@main.command()
@click.option("--sub", required=True, help="User id the token speaks for.")
@click.option("--admin", is_flag=True, help="Add the admin role.")
@click.option("--ttl", default=None, help="Lifetime like 30m, 1h, 7d [JWT_EXPIRES_IN].")
def token(sub: str, admin: bool, ttl: str | None) -> None:
    """Mint a bearer JWT (HS256, JWT_SECRET) for development."""
    from api.auth import mint

    settings = _settings()
    if not settings.JWT_SECRET:
        raise click.UsageError("JWT_SECRET is not set")
    try:
        seconds = duration_seconds(ttl) if ttl else None
    except ValueError:
        raise click.BadParameter(f"{ttl!r}: use a number and s, m, h or d (e.g. 1h)", param_hint="--ttl") from None
    click.echo(mint(settings, sub, admin, seconds))


@main.group()
def migrate() -> None:
    """Postgres schema migrations (DATABASE_URL), as the seed's `migrate deploy/status`."""


def _database_url() -> str:
    url = _settings().DATABASE_URL
    if not url:
        raise click.UsageError("DATABASE_URL is not set: migrations need a Postgres database")
    return url


@migrate.command("deploy")
def migrate_deploy() -> None:
    """Apply pending migrations."""
    from leaderboard.stores.migrations import deploy

    applied = deploy(_database_url())
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "schema is up to date")


@migrate.command("status")
def migrate_status() -> None:
    """List applied and pending migrations; exits 1 when some are pending."""
    from leaderboard.stores.migrations import status

    states = status(_database_url())
    for state in states:
        click.echo(f"{'applied' if state.applied else 'pending':8} {state.id}")
    if any(not s.applied for s in states):
        sys.exit(1)


@main.group()
def cache() -> None:
    """The Redis cache of published standings."""


@cache.command("rebuild")
@click.option("--board", help="Only this board (default: every board).")
def cache_rebuild(board: str | None) -> None:
    """Clear and rebuild the Redis keys from Postgres."""
    from leaderboard.boards import current_boards
    from leaderboard.stores import Stores
    from leaderboard.stores.redis import rebuild

    settings = _settings()
    stores = Stores.from_settings(settings)
    if stores.record is None or not stores.redis_url:
        raise click.UsageError("cache rebuild needs both DATABASE_URL and REDIS_URL (or REDIS_HOST)")
    boards = current_boards()
    if board and boards.get(board) is None:
        raise click.UsageError(f"unknown board {board!r}; boards: {', '.join(b.id for b in boards.boards)}")
    with stores.redis() as client:
        assert client is not None
        written = rebuild(stores.record, client, stores.keys, boards, board)
    click.echo(f"rebuilt {written} period(s) in Redis under {stores.key_prefix}:{board or '*'}")


@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; change nothing.")
@click.option("--now", "now_text", help="Evaluate at this ISO instant instead of now (e.g. 2026-11-27T03:30Z).")
def retention(dry_run: bool, now_text: str | None) -> None:
    """Remove published periods that ended more than RETENTION_DAYS ago (all-time stays)."""
    from leaderboard.boards import current_boards
    from leaderboard.stores import Stores
    from pipelines import retention as ops

    settings = _settings()
    try:
        now = dt.datetime.fromisoformat(now_text.replace("Z", "+00:00")) if now_text else dt.datetime.now(dt.UTC)
    except ValueError:
        raise click.BadParameter(f"{now_text!r} is not an ISO instant", param_hint="--now") from None
    if now.tzinfo is None:
        raise click.BadParameter(f"{now_text!r} has no UTC offset", param_hint="--now")
    stores = Stores.from_settings(settings)
    with stores.postgres() as conn, stores.redis() as client:
        plan = ops.plan(stores.lake, current_boards(), now, settings.RETENTION_DAYS, conn)
        if not dry_run:
            ops.apply(plan, conn, client, stores.keys)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"cutoff {plan.cutoff.isoformat()} (RETENTION_DAYS={settings.RETENTION_DAYS}): {verb}")
    for e in plan.periods:
        click.echo(f"  {e.board_id:16} {e.period_type:8} {e.period_key:12} ended {e.period_end.isoformat()}")
    for name in plan.drop_partitions:
        click.echo(f"  drop partition {name}")
    for name in plan.trim_partitions:
        click.echo(f"  trim partition {name}")
    click.echo(f"  {len(plan.snapshots)} lake snapshots, {len(plan.clean_event_files)} clean-event files")
    click.echo(f"  {len(plan.abandoned_workdirs)} scratch folders of killed runs")


main.add_command(settlement_group)
main.add_command(moderation_group)


if __name__ == "__main__":
    main()
