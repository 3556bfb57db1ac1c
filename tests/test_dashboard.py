"""The Streamlit dashboard over a real pipeline run: Dagster runs (one of them failed for real),
standings published to the lake, Postgres and Redis, and the API served by granian.

Pages run in `streamlit.testing.v1.AppTest`; the last test loads the running dashboard in
headless Debian Chromium through Playwright and keeps a screenshot.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import streamlit as st
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from cli.main import main
from dashboard import views
from leaderboard.settings import get_settings
from leaderboard.stores.lake import Lake, read_snapshot
from tests.conftest import REDIS_URL, event, land, scratch_database, scratch_redis_prefix

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def start_api(environ: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`leaderboard api` (granian) on a free port, as the demo serves it."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "leaderboard"), "api", "--port", str(port)],
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cli(*args: str) -> CliRunner:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@dataclass(frozen=True)
class Env:
    root: Path
    database_url: str
    api_url: str
    dagster_url: str
    first: dt.date
    last: dt.date
    today: dt.date
    generated: str  # what `leaderboard generate` said it wrote
    failed_output: str  # what the failed `leaderboard materialize` said
    environ: dict[str, str]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Three days generated and materialized (publishing to Postgres and Redis too), then a run of
    today that fails on a corrupt landing file, then a late file for the first day; the API serves it."""
    root = tmp_path_factory.mktemp("dashboard")
    with scratch_database(migrated=True) as database_url, scratch_redis_prefix() as prefix:
        yield from _served(root, database_url, prefix)


def _served(root: Path, database_url: str, prefix: str) -> Iterator[Env]:
    today = dt.datetime.now(dt.UTC).date()  # the default boards are in UTC
    first, last = today - dt.timedelta(days=3), today - dt.timedelta(days=1)
    settings = {"LEADERBOARD_LANDING_DIR": str(root / "landing"), "LEADERBOARD_LAKE_DIR": str(root / "lake"),
                "DAGSTER_HOME": str(root / "dagster"), "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
                "REDIS_KEY_PREFIX": prefix, "RATE_LIMIT_PER_MINUTE": "0",
                "DAGSTER_URL": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
    api = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            for key in ("LEADERBOARD_TIMEZONE", "LEADERBOARD_BOARDS", "API_URL"):
                mp.delenv(key, raising=False)
            for key, value in settings.items():
                mp.setenv(key, value)
            get_settings.cache_clear()
            generated = cli("generate", "--start", str(first), "--days", "3", "--users", "150", "--events-per-day",
                            "900", "--seed", "5", "--bad-rate", "0.003", "--dup-rate", "0.02").output  # fmt: skip
            cli("materialize", "--start", str(first), "--end", str(last))
            # A day whose run fails for real: DuckDB cannot read a .parquet file that is not Parquet.
            corrupt = land(root / "landing", "game-events", dt.datetime.combine(today, dt.time(0), dt.UTC),
                           "game-events+0+0.parquet", ["not parquet"])  # fmt: skip
            failed = CliRunner().invoke(main, ["materialize", "--start", str(today), "--end", str(today)])
            assert failed.exit_code != 0 and "cannot read landing files" in failed.output, failed.output
            # A file landing late for the first day makes its clean_events stale.
            land(root / "landing", "game-events", dt.datetime.combine(first, dt.time(12), dt.UTC),
                 "game-events+1+999999.json", [event("late-1", "late-user", f"{first}T12:30:00Z", 5)])  # fmt: skip
            assert corrupt.is_file()
            environ = {**os.environ}
            api, api_url = start_api(environ)
            mp.setenv("API_URL", api_url)
            environ["API_URL"] = api_url
            get_settings.cache_clear()
            yield Env(root, database_url, api_url, settings["DAGSTER_URL"], first, last, today, generated,
                      failed.output, environ)  # fmt: skip
    finally:
        if api is not None:
            stop(api)
        get_settings.cache_clear()


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Each test sees its own settings, not answers cached (in this process) by the one before."""
    st.cache_data.clear()
    st.cache_resource.clear()
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def page(name: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    if name:
        at.switch_page(f"app_pages/{name}.py").run()
        assert not at.exception, at.exception
    return at


def frame_with(at: AppTest, column: str):
    """The page's dataframe that has `column` (pages show several)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_leaderboard_shows_the_published_entries_in_order(env: Env) -> None:
    at = page()
    lake = Lake(env.root / "lake")
    for period, key in (("daily", str(env.last)), ("weekly", None)):
        if period != "daily":
            at.selectbox(key="period").set_value(period).run()
            assert not at.exception, at.exception
        body = httpx.get(f"{env.api_url}/leaderboard/points/{period}", params={"at": str(env.last)}).json()
        snapshot = read_snapshot(lake, "points", period, key or body["period_key"])
        assert snapshot is not None and 10 < len(body["entries"]) <= 30
        table = at.table[0].value
        published = snapshot.frame.head(len(body["entries"]))
        assert table["user"].tolist() == published["user_id"].to_list() == [e["user_id"] for e in body["entries"]]
        assert table["rank"].tolist() == list(range(1, len(body["entries"]) + 1))
        assert table["score"].tolist() == [int(s) for s in published["score"]]
        assert table["movement"].tolist() == [views.movement(p, c) for p, c in
                                              published.select("previous_rank", "rank_change").iter_rows()]  # fmt: skip
        assert [m.value for m in at.metric][:3] == [body["period_key"], body["status"], f"{body['total']:,}"]
        assert len(at.get("vega_lite_chart")) == 1  # the top scores
    assert {"▲", "▼", "new"} & {m.split(" ")[0] for m in table["movement"]}

    leader = at.table[0].value["user"][0]
    at.selectbox(key="period").set_value("daily").run()
    at.text_input(key="user").input(leader).run()
    assert not at.exception, at.exception
    history = frame_with(at, "period_key")
    days = [str(env.first + dt.timedelta(days=n)) for n in range(3)]
    assert history["period_key"].tolist() == days
    for day, rank in zip(days, history["rank"], strict=True):
        snap = read_snapshot(lake, "points", "daily", day)
        assert snap is not None
        ranks = dict(snap.frame.select("user_id", "rank").iter_rows())
        assert (None if rank != rank else rank) == ranks.get(leader)  # NaN where not ranked
    assert "Postgres at" in texts(at.caption)
    assert len(at.get("vega_lite_chart")) == 2  # top scores and the rank history


def test_health_page_shows_the_run_its_counts_and_the_failed_run(env: Env) -> None:
    at = page("health")
    boxes = texts(at.success)
    assert "**Postgres**: ok" in boxes and "**Redis**: ok" in boxes and "**API**: ok" in boxes
    assert "**Dagster UI**: not running" in texts(at.warning)

    grid = frame_with(at, f"{env.today:%m-%d}")
    for asset in ("clean_events", "daily_scores", "daily_rankings"):
        assert grid.loc[asset, f"{env.today:%m-%d}"] == "failed"
        assert grid.loc[asset, f"{env.last:%m-%d}"] == "materialized"
        assert grid.loc[asset, f"{env.first - dt.timedelta(days=1):%m-%d}"] == "missing"
    assert grid.loc["clean_events", f"{env.first:%m-%d}"] == "stale"  # the late file
    assert grid.loc["daily_scores", f"{env.first:%m-%d}"] == "materialized"

    runs = frame_with(at, "job")
    assert runs["status"].tolist() == ["failed", "success", "success", "success", "success"]
    assert runs["job"].tolist()[:2] == ["daily_job", "all_time_job"]
    assert runs["partitions"][0] == str(env.today)
    assert "cannot read landing files" in runs["error"][0]
    assert runs["partitions"].tolist()[-1] == f"{env.first}..{env.last}"
    assert all(link.startswith(f"{env.dagster_url}/runs/") for link in runs["run"])
    errors = texts(at.error)
    assert f"The latest run (daily_job {env.today}) failed" in errors
    assert f"clean_events {env.today}" in errors

    counts = frame_with(at, "counted")
    with psycopg.connect(env.database_url) as conn:
        stored = conn.execute("SELECT read, counted, duplicates, conflicts, quarantined FROM leaderboard_ingest_stats "
                              "ORDER BY day").fetchall()  # fmt: skip
    shown = counts[["read", "counted", "duplicates", "conflicts", "quarantined"]].itertuples(index=False)
    assert [tuple(int(v) for v in row) for row in shown] == stored and len(stored) == 3
    wrote = re.search(r"(\d+) events, (\d+) redeliveries, (\d+) broken records", env.generated)
    assert wrote, env.generated
    events, redeliveries, bad = (int(n) for n in wrote.groups())
    assert (counts["counted"].sum(), counts["duplicates"].sum(), counts["quarantined"].sum()) == (
        events, redeliveries, bad)  # fmt: skip
    assert bad > 0 and f"{bad:,} quarantined" in texts(at.caption)
    assert "Postgres at" in texts(at.caption)
    quarantined = frame_with(at, "reason")
    assert len(quarantined) == bad and quarantined["reason"].str.len().min() > 0

    fresh = frame_with(at, "fresh").set_index(["board", "period"])
    assert not fresh.loc[("points", "daily"), "fresh"] and fresh.loc[("points", "daily"), "age"] == "not published"
    assert fresh.loc[("points", "all_time"), "fresh"]
    assert f"points daily {env.today}" in errors


def test_postgres_down_falls_back_to_the_lake_and_says_so(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    at = page("health")
    assert "**Postgres**: down" in texts(at.error)
    assert "Postgres at 127.0.0.1:1 is unreachable" in texts(at.warning)
    assert "showing the lake's copy instead" in texts(at.warning)
    assert frame_with(at, "counted")["counted"].sum() == frame_with(at, "read")["read"].sum() - sum(
        frame_with(at, "read")[c].sum() for c in ("duplicates", "quarantined"))  # fmt: skip
    assert "From the lake at" in texts(at.caption)

    at = page()  # a user's history comes from the lake's snapshots too, and says so
    leader = at.table[0].value["user"][0]
    at.text_input(key="user").input(leader).run()
    assert "showing the lake's copy instead" in texts(at.warning)
    history = frame_with(at, "period_key")
    snap = read_snapshot(Lake(env.root / "lake"), "points", "daily", str(env.last))
    assert (
        snap is not None
        and history["rank"].tolist()[-1] == dict(snap.frame.select("user_id", "rank").iter_rows())[leader]
    )
    assert history["total"].tolist()[-1] == snap.frame.height


def test_the_dashboard_stays_up_and_says_the_api_is_down(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", dead)
    at = page()
    assert f"The API at {dead} is unreachable" in texts(at.error)
    assert "leaderboard api" in texts(at.error)
    at.switch_page("app_pages/health.py").run()
    assert not at.exception, at.exception
    assert f"**API**: down  \n{dead}" in texts(at.error)
    assert len(frame_with(at, "job")) == 5  # the rest of the page is still there


def test_nothing_run_yet_is_said_plainly_and_nothing_is_created(env: Env, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for key, value in {"DAGSTER_HOME": tmp_path / "dagster", "LEADERBOARD_LAKE_DIR": tmp_path / "lake",
                       "LEADERBOARD_LANDING_DIR": tmp_path / "landing"}.items():  # fmt: skip
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("DATABASE_URL")
    at = page("health")
    info = texts(at.info)
    assert "No Dagster instance under DAGSTER_HOME" in info and "No runs yet." in info
    assert "No ingest statistics" in info
    assert "No quarantined records" in texts(at.success)
    assert "unpublished or older than 60 min" in texts(at.error)
    assert list(tmp_path.iterdir()) == []  # reading created no instance, lake or landing folder


def test_movement_words() -> None:
    assert [views.movement(*a) for a in ((None, None), (4, 3), (2, -1), (5, 0))] == ["new", "▲ 3", "▼ 1", "="]


def test_the_standings_table_shows_names_beside_ids_and_blank_without() -> None:
    entry = {"rank": 1, "score": 5, "previous_rank": None, "rank_change": None, "metadata": None}
    body = {"entries": [{**entry, "user_id": "u1", "display_name": "Ann"}, {**entry, "user_id": "red", "rank": 2},
                        {**entry, "user_id": "u3", "rank": 3, "display_name": None}]}  # fmt: skip
    table = views.standings_table(body)
    assert table.select("user", "name").rows() == [("u1", "Ann"), ("red", ""), ("u3", "")]


def test_the_dashboard_command_runs_streamlit_on_8501(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, args: calls.append(args))
    CliRunner().invoke(main, ["dashboard"], catch_exceptions=False)
    args = calls[0]
    assert args[1:4] == ["-m", "streamlit", "run"] and args[4] == str(APP)
    assert args[args.index("--server.address") + 1] == "127.0.0.1"
    assert args[args.index("--server.port") + 1] == "8501"
    assert args[args.index("--browser.gatherUsageStats") + 1] == "false"


def test_a_real_browser_shows_the_leaderboard(env: Env, tmp_path: Path) -> None:
    """Headless Debian Chromium (scripts/browser installs it) loads `leaderboard dashboard`; then the
    API stops, and the open page says so by itself while the dashboard keeps serving."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "Debian chromium is missing: run scripts/browser (scripts/test does)"
    api, api_url = start_api(env.environ)  # its own API: this test stops it
    port = free_port()
    board = httpx.get(f"{api_url}/leaderboard/points/daily", params={"at": str(env.last)}).json()
    leader, tenth = board["entries"][0]["user_id"], board["entries"][9]["user_id"]
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "leaderboard"), "dashboard", "--port", str(port)],
        env={**env.environ, "API_URL": api_url, "DASHBOARD_REFRESH_SECONDS": "2"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/_stcore/health")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1400, "height": 1300})
            tab.goto(url)
            tab.get_by_role("cell", name=leader, exact=True).wait_for(timeout=45_000)
            assert tab.get_by_role("cell", name=tenth, exact=True).is_visible()
            assert tab.get_by_text("Top scores").is_visible()
            tab.screenshot(path=tmp_path / "leaderboard.png", full_page=True)

            # No reload: the standings fragment refreshes itself (every 2 s here) and, once the cached
            # answer is older than its TTL, says that the API is gone.
            stop(api)
            tab.get_by_text(f"The API at {api_url} is unreachable").wait_for(timeout=45_000)
            tab.screenshot(path=tmp_path / "api-down.png", full_page=True)
            browser.close()
        assert httpx.get(url + "/_stcore/health").text == "ok"  # still up
    finally:
        stop(api)
        os.killpg(dashboard.pid, signal.SIGTERM)
        dashboard.wait(timeout=15)
    for shot in ("leaderboard.png", "api-down.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
