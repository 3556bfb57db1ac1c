"""Display names from the identity service (docs/contracts.md#identity-service).

A real HTTP server on 127.0.0.1 plays the service (answering, hanging, failing, talking
garbage) and counts what it is asked; the cache is a real Postgres database or the lake.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from leaderboard.boards import Board, current_boards
from leaderboard.identity import (
    IdentityError,
    IdentityService,
    apply_names,
    ask,
    name_standings,
    parse_answer,
    users_by_rank,
)
from leaderboard.periods import UTC, period_of
from leaderboard.settings import SettingsError, load_settings
from leaderboard.stores import Stores
from leaderboard.stores.errors import SchemaMissing
from leaderboard.stores.identity_cache import LakeIdentityCache, PostgresIdentityCache, identity_cache
from leaderboard.stores.lake import Lake
from pipelines import steps
from pipelines.definitions import build_defs
from pipelines.jobs import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from pipelines.steps import publish_period
from tests.conftest import event, free_port, land

NOW = dt.datetime(2026, 5, 1, 12, tzinfo=UTC)
PERIOD = period_of("daily", dt.date(2026, 5, 1))
HANG_LIMIT_SECONDS = 30  # a hanging handler gives up by itself after this (the test releases it sooner)


class IdentityServer:
    """The identity service as a test sets it: `mode` is ok, hang, trickle (a byte every 0.2 s,
    never the whole answer), 500 or garbage; `delay` slows each answer."""

    def __init__(self, names: dict[str, str], mode: str = "ok", delay: float = 0.0) -> None:
        self.names, self.mode, self.delay = names, mode, delay
        self.asked: list[list[str]] = []  # ids of each request, in arrival order
        self.release = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real service would
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                ids = json.loads(self.rfile.read(length))["ids"]
                deadline = time.monotonic() + HANG_LIMIT_SECONDS
                assert self.path == "/users/batch"
                server.asked.append(ids)
                if server.mode == "hang":
                    server.release.wait(HANG_LIMIT_SECONDS)
                    return
                if server.mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    while not server.release.wait(0.2) and time.monotonic() < deadline:
                        self.wfile.write(b" ")  # JSON whitespace, one byte at a time
                    return
                if server.mode == "500":
                    self._send(500, b'{"error": "boom"}')
                    return
                if server.mode == "garbage":
                    self._send(200, b"<html>not json")
                    return
                if server.delay:
                    time.sleep(server.delay)
                users = {
                    i: {"display_name": server.names[i], "avatar_url": f"https://img.test/{i}.png"}
                    for i in ids
                    if i in server.names
                }
                self._send(200, json.dumps({"users": users}).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True

    @property
    def ids_asked(self) -> list[str]:
        return [i for batch in self.asked for i in batch]

    def __enter__(self) -> IdentityServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _table(users: list[str], board: str = "points", event_names: bool = True) -> pl.DataFrame:
    """A standings frame of one board, ranked in list order, with the names events gave."""
    n = len(users)
    frame = pl.DataFrame(
        {
            "board_id": [board] * n,
            "user_id": users,
            "score": [float(n - i) for i in range(n)],
            "event_count": [1] * n,
            "reached_at": [NOW] * n,
            "rank": list(range(1, n + 1)),
            "previous_rank": [None] * n,
            "rank_change": [None] * n,
        },
        schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
    )
    if event_names:
        frame = frame.with_columns(("event-" + pl.col("user_id")).alias("display_name"))
    return frame


def _names(table: pl.DataFrame) -> dict[str, str | None]:
    return dict(zip(table["user_id"], table["display_name"], strict=True))


def _service(url: str, **kw: float) -> IdentityService:
    return IdentityService(url, **{"timeout_seconds": 3.0, "batch_size": 500, "cache_hours": 24.0, **kw})  # type: ignore[arg-type]


@contextmanager
def _spy_named(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """The standings `publish_period` goes on to publish, as its identity hook returned them."""
    seen: list = []
    real = steps.name_standings

    def spy(*args: object, **kw: object):
        named = real(*args, **kw)  # type: ignore[arg-type]
        seen.append(named)
        return named

    monkeypatch.setattr(steps, "name_standings", spy)
    yield seen


# -- the pure parts ---------------------------------------------------------------------------


def test_apply_names_adds_the_column_and_overrides_only_known_names_on_the_given_boards():
    users = _table(["a", "b", "c"], event_names=False)
    teams = _table(["a", "t2"], board="teams")
    names = pl.DataFrame({"user_id": ["a", "b", "t2"], "display_name": ["Ann", None, "Team Two"]})
    got = apply_names(pl.concat([users, teams.drop("display_name")], how="vertical"), names, ["points"])
    assert got.columns[-1] == "display_name" and got.height == 5
    assert got.select("board_id", "user_id", "display_name").rows() == [
        ("points", "a", "Ann"),
        ("points", "b", None),  # a null answer changes nothing
        ("points", "c", None),
        ("teams", "a", None),  # not a board of users: left as it was
        ("teams", "t2", None),
    ]
    evented = apply_names(_table(["a", "b"]), names, ["points"])
    assert _names(evented) == {"a": "Ann", "b": "event-b"}  # the service wins; else the event's name
    with_metadata = _table(["a"], event_names=False).with_columns(metadata=pl.lit('{"k": 1}'))
    assert apply_names(with_metadata, names, ["points"]).columns[-2:] == ["display_name", "metadata"]


def test_users_are_asked_best_rank_first_each_once():
    table = pl.concat([_table(["x", "y", "z"]), _table(["z", "w"], board="other"), _table(["q"], board="teams")])
    assert users_by_rank(table, ["points", "other"]).to_list() == ["x", "z", "w", "y"]


def test_parse_answer_keeps_what_the_contract_allows_and_refuses_the_rest():
    long = "n" * 300
    got = parse_answer(
        json.dumps(
            {
                "users": {
                    "a": {"display_name": "Ann", "avatar_url": "https://img/a.png"},
                    "b": {"display_name": long, "avatar_url": "https://x/" + "p" * 3000},
                    "c": {"display_name": "  "},
                    "not-asked": {"display_name": "Zed"},
                }
            }
        ).encode(),
        ["a", "b", "c", "d"],
    )
    assert got.rows() == [
        ("a", "Ann", "https://img/a.png"),
        ("b", "n" * 256, None),  # a name cut to 256 characters; an over-long URL dropped
        ("c", None, None),  # a blank name is no name
        ("d", None, None),  # unknown: simply missing from the answer
    ]
    for body, reason in [
        (b"<html>", "not JSON"),
        (b"[]", 'no "users" object'),
        (b'{"users": []}', 'no "users" object'),
        (b'{"users": {"a": "Ann"}}', "is not an object"),
        (b'{"users": {"a": {"display_name": 7}}}', "must be strings or null"),
    ]:
        with pytest.raises(IdentityError, match=reason):
            parse_answer(body, ["a"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("identity-service:3000", "must be an http:// or https:// URL with a host"),
        ("ftp://identity", "must be an http:// or https:// URL with a host"),
        ("http://", "must be an http:// or https:// URL with a host"),
        ("http://identity:99999", "the port is not a number in 1-65535"),
        ("http://identity/?v=1", "must have no ?query or #fragment"),
    ],
)
def test_a_bad_identity_url_stops_with_the_variable_named(url, message, settings):
    with pytest.raises(SettingsError, match=r"IDENTITY_SERVICE_URL=.*" + message.replace("?", r"\?")):
        load_settings(IDENTITY_SERVICE_URL=url)


def test_identity_settings_defaults_and_bounds(settings):
    assert IdentityService.from_settings(settings) is None  # unset: names from events only
    s = load_settings(IDENTITY_SERVICE_URL="https://identity.internal/base/")
    service = IdentityService.from_settings(s)
    assert service == IdentityService("https://identity.internal/base/", 5.0, 500, 24.0)
    assert service.endpoint == "https://identity.internal/base/users/batch"
    for name, value in [("IDENTITY_TIMEOUT_SECONDS", 0), ("IDENTITY_BATCH_SIZE", 0), ("IDENTITY_CACHE_HOURS", -1)]:
        with pytest.raises(SettingsError, match=name):
            load_settings(**{name: value})


# -- against the real service and Postgres -----------------------------------------------------


def test_names_from_the_service_win_and_only_missing_or_expired_ids_are_asked(migrated_url, tmp_path):
    cache = PostgresIdentityCache(migrated_url)
    with IdentityServer({"u1": "Ada", "u2": "Bob", "u4": "Dee"}) as server:
        service = _service(server.url, batch_size=2)
        first = name_standings(_table(["u1", "u2", "u3"]), ["points"], service, cache, NOW)
        assert _names(first.table) == {"u1": "Ada", "u2": "Bob", "u3": "event-u3"}  # u3 unknown: the event's
        assert server.asked == [["u1", "u2"], ["u3"]]  # in batches, best rank first
        assert first.report == "ok: 3 asked; 0 names from cache"

        # An hour later: all three are fresh in the cache (u3 as "no name"); only u4 is new.
        later = name_standings(
            _table(["u1", "u2", "u3", "u4"]), ["points"], service, cache, NOW + dt.timedelta(hours=1)
        )
        assert server.asked[2:] == [["u4"]]
        assert _names(later.table) == {"u1": "Ada", "u2": "Bob", "u3": "event-u3", "u4": "Dee"}
        assert later.report == "ok: 1 asked; 2 names from cache"

        # Past IDENTITY_CACHE_HOURS (24 h after u4 was asked too) every answer has expired and is
        # asked again; a changed name wins.
        server.names["u1"] = "Ada L."
        expired = name_standings(
            _table(["u1", "u2", "u3", "u4"]), ["points"], service, cache, NOW + dt.timedelta(hours=26)
        )
        assert sorted(server.ids_asked[4:]) == ["u1", "u2", "u3", "u4"]
        assert _names(expired.table)["u1"] == "Ada L."
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT user_id, display_name, avatar_url, fetched_at FROM leaderboard_identity_cache ORDER BY 1"
        ).fetchall()
    assert [r[:3] for r in rows] == [
        ("u1", "Ada L.", "https://img.test/u1.png"),
        ("u2", "Bob", "https://img.test/u2.png"),
        ("u3", None, None),
        ("u4", "Dee", "https://img.test/u4.png"),
    ]
    assert {r[3] for r in rows} == {NOW + dt.timedelta(hours=26)}


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("hang", "unavailable: no answer from 127.0.0.1:{port} within 5 s"),
        ("trickle", "unavailable: no answer from 127.0.0.1:{port} within 5 s"),
        ("500", "unavailable: HTTP 500 from 127.0.0.1:{port}"),
        ("garbage", "unavailable: answer is not JSON"),
    ],
)
def test_a_failing_service_never_fails_or_delays_the_publish_past_its_budget(
    mode, reason, settings, migrated_url, monkeypatch
):
    boards = current_boards()
    lake = Lake(settings.LEADERBOARD_LAKE_DIR)
    stores = Stores(lake, migrated_url)
    users = [f"u{i}" for i in range(1, 7)]
    with IdentityServer({u: f"Name {u}" for u in users[:4]}) as good:
        publish_period(lake, boards, PERIOD, _table(users[:4]), "fill", stores, NOW, _service(good.url))
    with IdentityServer({}, mode=mode) as bad, _spy_named(monkeypatch) as seen:
        service = _service(bad.url, timeout_seconds=5.0, batch_size=2)
        t0 = time.perf_counter()
        done = publish_period(lake, boards, PERIOD, _table(users), "r", stores, NOW + dt.timedelta(days=2), service)
        seconds = time.perf_counter() - t0
    assert seconds <= 5.0 * 1.1, f"the publish took {seconds:.2f} s with a {mode} service"
    assert done.entries["points"] == 6
    assert done.identity is not None and done.identity.startswith(reason.format(port=bad.port))
    assert done.identity.endswith("0 of 6 asked; 4 names from cache")
    assert bad.asked == [["u1", "u2"]]  # the first batch failed: the rest was not tried
    # the expired cache's names, else the events'
    published = seen[0].table.filter(pl.col("board_id") == "points")
    assert _names(published) == {
        **{u: f"Name {u}" for u in users[:4]},
        "u5": "event-u5",
        "u6": "event-u6",
    }


def test_a_slow_service_fills_the_cache_over_successive_publishes(migrated_url):
    """The budget ends the asking, best ranked users first; the next publishes ask for the rest."""
    cache = PostgresIdentityCache(migrated_url)
    users = [f"u{i:02}" for i in range(12)]
    # Budget and delay leave room for a loaded machine: about 4 of the 6 batches fit in it.
    with IdentityServer({u: u.upper() for u in users}, delay=0.5) as server:
        service = _service(server.url, timeout_seconds=2.0, batch_size=2)
        first = name_standings(_table(users), ["points"], service, cache, NOW)
        answered = [u for u, n in _names(first.table).items() if n == u.upper()]
        assert 2 <= len(answered) < 12 and answered == users[: len(answered)]  # the top of the board first
        assert first.report.startswith(f"partial: time budget of 2 s spent, {len(answered)} of 12 asked")
        publishes = 1
        named = first
        while not named.report.startswith("ok") and publishes < 8:
            named = name_standings(_table(users), ["points"], service, cache, NOW + dt.timedelta(hours=publishes))
            publishes += 1
    assert named.report.startswith("ok") and publishes > 1
    assert _names(named.table) == {u: u.upper() for u in users}
    # Answers kept are not asked again; at most the batch in flight at each deadline is asked twice.
    assert set(server.ids_asked) == set(users) and len(server.ids_asked) <= 12 + 2 * publishes


def test_without_postgres_the_cache_is_a_lake_file(settings):
    boards = current_boards()
    lake = Lake(settings.LEADERBOARD_LAKE_DIR)
    stores = Stores(lake)
    assert isinstance(identity_cache(None, lake), LakeIdentityCache)
    with IdentityServer({"a": "Ann", "b": "Ben"}) as server:
        done = publish_period(lake, boards, PERIOD, _table(["a", "b", "c"]), "r1", stores, NOW, _service(server.url))
        assert done.identity == "ok: 3 asked; 0 names from cache"
        again = publish_period(lake, boards, PERIOD, _table(["a", "b", "c"]), "r2", stores, NOW, _service(server.url))
        assert again.identity == "ok: 0 asked; 2 names from cache" and len(server.asked) == 1
    cached = pl.read_parquet(Path(settings.LEADERBOARD_LAKE_DIR) / "identity" / "cache.parquet").sort("user_id")
    assert cached.select("user_id", "display_name").rows() == [("a", "Ann"), ("b", "Ben"), ("c", None)]
    # the service gone (nothing listens on its port): the lake's names, even expired
    gone = _service(f"http://127.0.0.1:{free_port()}")
    later = NOW + dt.timedelta(days=3)
    name = name_standings(_table(["a", "b", "c"]), ["points"], gone, LakeIdentityCache(lake), later)
    assert name.report.startswith("unavailable: ConnectError from 127.0.0.1")
    assert _names(name.table) == {"a": "Ann", "b": "Ben", "c": "event-c"}


def test_boards_of_groups_are_neither_asked_about_nor_renamed(settings, monkeypatch):
    boards = current_boards()
    teams = Board(id="teams", event_types=("score.earned",), aggregate="sum", group_by="attributes.team_id")
    boards = dataclasses.replace(boards, boards=(*boards.boards, teams))
    lake = Lake(settings.LEADERBOARD_LAKE_DIR)
    table = pl.concat([_table(["a", "b"]), _table(["t1", "a"], board="teams")])
    with IdentityServer({"a": "Ann", "t1": "Team One"}) as server, _spy_named(monkeypatch) as seen:
        done = publish_period(lake, boards, PERIOD, table, "r", Stores(lake), NOW, _service(server.url))
    assert server.ids_asked == ["a", "b"] and done.entries["teams"] == 2
    assert seen[0].table.select("board_id", "user_id", "display_name").rows() == [
        ("points", "a", "Ann"),
        ("points", "b", "event-b"),
        ("teams", "t1", "event-t1"),
        ("teams", "a", "event-a"),  # a group's id that is also a user's keeps the group's name
    ]


def test_an_unmigrated_cache_table_says_to_run_migrations(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("DROP TABLE leaderboard_identity_cache")
    with pytest.raises(SchemaMissing, match="leaderboard migrate deploy"):
        PostgresIdentityCache(migrated_url).lookup(pl.Series(["a"]))


def test_ask_measures_ids_per_second_on_loopback(capsys):
    """Not a bound on speed (the machine is shared): the figure the docs quote, printed."""
    users = [f"user-{i:06}" for i in range(20_000)]
    with IdentityServer({u: f"Name {u}" for u in users}) as server:
        answers = ask(_service(server.url, timeout_seconds=20.0, batch_size=500), users)
    assert answers.error is None and not answers.spent and answers.rows.height == 20_000 and len(server.asked) == 40
    with capsys.disabled():
        print(f"\nidentity: {20_000 / answers.seconds:,.0f} ids/s, batches of 500, one connection")


def test_the_run_metadata_says_what_the_identity_service_did(settings, monkeypatch):
    day = dt.date(2026, 3, 3)
    land(
        settings.LEADERBOARD_LANDING_DIR,
        "events",
        dt.datetime(2026, 3, 3, 10, tzinfo=UTC),
        "events+0+0.json",
        [event(f"e{i}", f"u{i}", f"2026-03-03T10:0{i}:00Z", i + 1) for i in range(3)],
    )
    with IdentityServer({}, mode="500") as server:
        monkeypatch.setenv("IDENTITY_SERVICE_URL", server.url)
        s = load_settings()
        tags = {PARTITION_RANGE_START_TAG: str(day), PARTITION_RANGE_END_TAG: str(day)}
        with dg.DagsterInstance.ephemeral() as instance:
            result = build_defs(s).resolve_job_def("daily_job").execute_in_process(instance=instance, tags=tags)
    assert result.success
    [ranked] = [m for m in result.asset_materializations_for_node("daily_rankings")]
    assert (
        ranked.metadata["identity"].value
        == f"unavailable: HTTP 500 from 127.0.0.1:{server.port}; 0 of 3 asked; 0 names from cache"
    )
