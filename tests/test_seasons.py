"""Seasons (docs/contracts.md#seasons): custom windows of a board, validated in the boards file,
ranked as period type `season` over exactly [start, end) in the boards' time zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from leaderboard.boards import BoardsFileError, load_boards
from leaderboard.periods import PeriodError, period_end, season_at, season_boards, season_period, status_at

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
# Clocks in Berlin go from 02:00 to 03:00 on 2026-03-29 (UTC+1 to UTC+2): inside the season.
BOARDS = """
timezone: Europe/Berlin
start_date: 2026-03-01
boards:
  - id: points
    event_types: [score.earned]
    aggregate: sum
    periods: [daily, weekly]
    seasons:
      - {id: spring, title: Spring cup, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
      - {id: winter, start: 2026-03-01, end: "2026-03-27T18:00"}
  - id: best
    event_types: [score.earned]
    aggregate: max
    seasons:
      - {id: spring, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
  - id: laps
    event_types: [lap.completed]
    aggregate: min
    order: asc
    seasons:
      - {id: sprint, start: 2026-03-28, end: 2026-04-01}
  - id: plain
    event_types: [score.earned]
    aggregate: count
"""
SPRING_START = dt.datetime(2026, 3, 27, 17, tzinfo=UTC)  # 18:00 CET
SPRING_END = dt.datetime(2026, 4, 2, 16, tzinfo=UTC)  # 18:00 CEST


def _boards(tmp_path: Path, text: str = BOARDS):
    path = tmp_path / "boards.yaml"
    path.write_text(text)
    return load_boards(path)


def test_a_season_is_its_local_window_in_utc_across_a_dst_change(tmp_path: Path):
    boards = _boards(tmp_path)
    points = boards.get("points")
    assert points is not None and points.periods == ("daily", "weekly", "season")
    assert boards.get("plain").periods == ("daily", "weekly", "monthly", "all_time")  # type: ignore[union-attr]
    spring = season_period(points, "spring", BERLIN)
    assert spring.bounds(BERLIN) == (SPRING_START, SPRING_END)
    assert (spring.end_at - spring.start_at) == dt.timedelta(days=5, hours=23)  # type: ignore[operator]
    assert spring.days()[0] == dt.date(2026, 3, 27) and spring.days()[-1] == dt.date(2026, 4, 2)
    assert spring.previous(boards.start_date) is None
    assert period_end(boards, "points", "season", "spring") == SPRING_END
    from pipelines.partitions import partition_key

    assert partition_key(spring) == "spring"  # what settle_periods asks season_job to rerun after a reopening
    # live until the instant it ends, then over (closing, then settled, is settlement's)
    assert spring.status(BERLIN, SPRING_END - dt.timedelta(microseconds=1)) == "live"
    assert status_at(SPRING_END, SPRING_END) == "final"
    winter = season_period(points, "winter", BERLIN)
    assert winter.bounds(BERLIN) == (dt.datetime(2026, 2, 28, 23, tzinfo=UTC), SPRING_START)  # back to back


def test_season_at_an_instant_or_a_date(tmp_path: Path):
    points = _boards(tmp_path).get("points")
    assert points is not None
    assert season_at(points, SPRING_START, BERLIN).key == "spring"  # type: ignore[union-attr]
    assert season_at(points, SPRING_START - dt.timedelta(microseconds=1), BERLIN).key == "winter"  # type: ignore[union-attr]
    assert season_at(points, SPRING_END, BERLIN) is None
    assert season_at(points, dt.date(2026, 3, 27), BERLIN).key == "winter"  # type: ignore[union-attr]  # at midnight
    assert season_at(points, dt.date(2026, 4, 2), BERLIN).key == "spring"  # type: ignore[union-attr]
    assert season_at(points, dt.date(2026, 4, 3), BERLIN) is None
    assert season_at(points, dt.datetime(1, 1, 1), BERLIN) is None and season_at(points, dt.date.max, BERLIN) is None
    with pytest.raises(PeriodError, match="no season 'summer'; its seasons: winter, spring"):
        season_period(points, "summer", BERLIN)


def test_a_season_id_is_one_window_on_every_board_that_lists_it(tmp_path: Path):
    boards = _boards(tmp_path)
    assert boards.season_ids() == ["winter", "spring", "sprint"]
    listing, spring = season_boards(boards, "spring")
    assert [b.id for b in listing.with_period("season")] == ["points", "best"]
    assert spring.bounds(BERLIN) == (SPRING_START, SPRING_END)
    sprint = season_boards(boards, "sprint")[1]
    assert sprint.bounds(BERLIN) == (dt.datetime(2026, 3, 27, 23, tzinfo=UTC), dt.datetime(2026, 3, 31, 22, tzinfo=UTC))
    with pytest.raises(PeriodError, match="no board has a season 'summer'; seasons: winter, spring, sprint"):
        season_boards(boards, "summer")
    with pytest.raises(BoardsFileError, match="board 'laps' season 'spring': 2026-03-28T00:00:00 to 2026-04-01"):
        _boards(tmp_path, BOARDS.replace("id: sprint", "id: spring"))


def _season_file(*seasons: str, tz: str = "Europe/Berlin") -> str:
    lines = "\n".join(f"      - {s}" for s in seasons)
    return f"timezone: {tz}\nboards:\n  - id: points\n    event_types: [s]\n    aggregate: sum\n    seasons:\n{lines}\n"


@pytest.mark.parametrize(
    ("seasons", "expected"),
    [
        (
            ['{id: a, start: "2026-03-02T00:00", end: "2026-03-01T00:00"}'],
            "board 'points' season 'a': Value error, end 2026-03-01T00:00:00 must be after start 2026-03-02T00:00:00",
        ),
        (
            ["{id: a, start: 2026-03-01, end: 2026-03-10}", '{id: b, start: "2026-03-09T12:00", end: 2026-03-20}'],
            "board 'points' field 'seasons': Value error, seasons 'a' (2026-03-01T00:00:00 to 2026-03-10T00:00:00) "
            "and 'b' (2026-03-09T12:00:00 to 2026-03-20T00:00:00) overlap",
        ),
        (
            ["{id: a, start: 2026-03-01, end: 2026-03-10}", "{id: a, start: 2026-04-01, end: 2026-04-10}"],
            "board 'points' field 'seasons': Value error, season ids must be unique on a board; repeated: a",
        ),
        (["{id: Spring!, start: 2026-03-01, end: 2026-03-10}"], "board 'points' season 'Spring!' field 'id'"),
        (["{id: results, start: 2026-03-01, end: 2026-03-10}"], "'results' names a route"),
        (["{id: a, start: soon, end: 2026-03-10}"], "board 'points' season 'a' field 'start': Value error, 'soon'"),
        (["{id: a, start: 2026-03-01T00:00:00Z, end: 2026-03-10}"], "has a UTC offset; write the local date-time"),
        (["{id: a, start: 2026-03-01}"], "board 'points' season 'a' field 'end': Field required"),
        (["{id: a, start: 2026-03-01, end: 2026-03-10, prize: 5}"], "season 'a' field 'prize': Extra inputs"),
        (
            ['{id: a, start: "2026-03-29T02:30", end: 2026-04-10}'],
            "board 'points' season 'a' field 'start': 2026-03-29T02:30:00 does not exist in Europe/Berlin",
        ),
        (
            ['{id: a, start: 2026-03-01, end: "2026-10-25T02:30"}'],
            "board 'points' season 'a' field 'end': 2026-10-25T02:30:00 happens twice in Europe/Berlin",
        ),
    ],
)
def test_bad_seasons_name_file_board_season_and_field(tmp_path: Path, seasons: list[str], expected: str):
    with pytest.raises(BoardsFileError) as err:
        _boards(tmp_path, _season_file(*seasons))
    assert str(tmp_path / "boards.yaml") in str(err.value)
    assert expected in str(err.value)


def test_season_in_periods_needs_seasons(tmp_path: Path):
    text = "boards:\n  - id: points\n    event_types: [s]\n    aggregate: sum\n    periods: [daily, season]\n"
    with pytest.raises(BoardsFileError, match="periods lists 'season' but the board lists no seasons"):
        _boards(tmp_path, text)


# --- ranking a season end to end, on the real Postgres and Redis ------------------------------

RANKED = """
timezone: Europe/Berlin
start_date: 2026-03-01
boards:
  - id: points
    event_types: [score.earned]
    aggregate: sum
    periods: [daily]
    seasons:
      - {id: spring, title: Spring cup, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
  - id: best
    event_types: [score.earned]
    aggregate: max
    seasons:
      - {id: spring, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
  - id: laps
    event_types: [lap.completed]
    aggregate: min
    order: asc
    seasons:
      - {id: spring, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}
  - id: daily_only
    event_types: [score.earned]
    aggregate: count
    periods: [daily]
"""
US = dt.timedelta(microseconds=1000)  # the landing contract keeps milliseconds
SEASON_EVENTS = [
    # (id, user, occurred_at UTC, value, type)
    ("early", "u5", dt.datetime(2026, 3, 27, 10, tzinfo=UTC), 20, "score.earned"),  # its first day, before 18:00
    ("before", "u1", SPRING_START - US, 100, "score.earned"),  # just before the start
    ("start", "u2", SPRING_START, 5, "score.earned"),  # at the start: counts
    ("inside", "u3", dt.datetime(2026, 3, 28, 12, tzinfo=UTC), 7, "score.earned"),
    ("pre-dst", "u2", dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC), 1, "score.earned"),  # 01:30 CET
    ("post-dst", "u3", dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC), 2, "score.earned"),  # 03:30 CEST
    ("lap1", "u1", dt.datetime(2026, 3, 30, 8, tzinfo=UTC), 61_000, "lap.completed"),
    ("last", "u1", SPRING_END - US, 3, "score.earned"),  # just before the end: counts
    ("end", "u4", SPRING_END, 50, "score.earned"),  # at the end: does not
    ("lap2", "u2", SPRING_END + dt.timedelta(minutes=30), 50_000, "lap.completed"),  # its last day, after 18:00
]


def _land_season(landing: Path) -> None:
    """Each event in the folder of its UTC hour; one as Parquet, the others as JSON lines."""
    from leaderboard.landing import hour_folder
    from tests.conftest import event, land

    for n, (event_id, user, at, value, event_type) in enumerate(SEASON_EVENTS):
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        hour = at.replace(minute=0, second=0, microsecond=0)
        if event_id != "inside":
            land(landing, "game", hour, f"game+0+{n}.json", [event(event_id, user, stamp, value, event_type)])
            continue
        folder = hour_folder(landing, "game", hour)
        folder.mkdir(parents=True, exist_ok=True)
        row = {"event_id": [event_id], "event_type": [event_type], "user_id": [user], "occurred_at": [at]}
        pl.DataFrame({**row, "value": [float(value)]}).write_parquet(folder / f"game+0+{n}.parquet")


def _rank_spring(boards, stores, now: dt.datetime) -> pl.DataFrame:
    from pipelines.steps import period_scores, publish_period, rank_period

    listing, period = season_boards(boards, "spring")
    table = rank_period(stores.lake, listing, period, period_scores(stores.lake, listing, period))
    publish_period(stores.lake, listing, period, table, "run", stores, now=now)
    return table


@pytest.fixture
def season_stores(settings, tmp_path: Path, migrated_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch):
    """The season's days ingested and scored, and spring ranked and published to every store
    after its end (the settings, and so the API, name this boards file and these stores)."""
    from leaderboard.settings import get_settings
    from leaderboard.stores import Stores
    from pipelines.steps import ingest_day, score_day
    from tests.conftest import REDIS_URL

    boards = _boards(tmp_path, RANKED)
    for name, value in {"LEADERBOARD_BOARDS": str(boards.source), "DATABASE_URL": migrated_url,
                        "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    landing = settings.LEADERBOARD_LANDING_DIR
    _land_season(landing)
    stores = Stores.from_settings(settings)
    for day in season_period(boards.boards[0], "spring", BERLIN).days():
        ingest_day(landing, stores.lake, boards, day, "run-1", stores)
        score_day(stores.lake, boards, day)
    table = _rank_spring(boards, stores, SPRING_END + dt.timedelta(minutes=5))
    return boards, stores, table, landing


def test_a_season_ranks_exactly_its_window_across_a_dst_change(season_stores):
    from tests.reference import Reference

    boards, _, table, landing = season_stores
    reference = Reference(landing, "Europe/Berlin")
    for board in boards.with_period("season"):
        mine = {r["user_id"]: (r["rank"], r["score"]) for r in table.filter(pl.col("board_id") == board.id).to_dicts()}
        assert mine == reference.window_ranking(board, SPRING_START, SPRING_END), board.id
    points = {r["user_id"]: r["score"] for r in table.filter(pl.col("board_id") == "points").to_dicts()}
    assert points == {"u2": 6.0, "u3": 9.0, "u1": 3.0}  # not u5 (before), u1's 100 (before) nor u4 (at the end)
    laps = table.filter(pl.col("board_id") == "laps")
    assert laps.select("user_id", "score").rows() == [("u1", 61_000.0)]  # u2's lap came after the end
    assert set(table.get_column("board_id")) == {"points", "best", "laps"}
    assert table.get_column("previous_rank").is_null().all()  # a season is a competition of its own


def test_a_published_season_reads_alike_from_each_store(season_stores):
    import json

    import redis

    from leaderboard.stores.lake import read_snapshot
    from tests.conftest import REDIS_URL

    boards, stores, _, _ = season_stores
    postgres = stores.record.snapshot("points", "season", "spring")
    lake = read_snapshot(stores.lake, "points", "season", "spring")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        cached = json.loads(client.get(stores.keys.rankings("points", "season", "spring")))
        assert client.get(stores.keys.current("points", "season")) is None  # published after its end
        assert client.zrange(stores.keys.periods("points", "season"), 0, -1) == [b"spring"]
    finally:
        client.close()
    for snapshot in (postgres, lake):
        assert snapshot is not None
        body = snapshot.body(boards.tz, 100)
        assert (body["period"], body["period_key"]) == ("season", "spring")
        window = (dt.datetime.fromisoformat(body["period_start"]), dt.datetime.fromisoformat(body["period_end"]))
        assert window == (SPRING_START, SPRING_END)
        assert [(e["user_id"], e["score"]) for e in body["entries"]] == [("u3", 9), ("u2", 6), ("u1", 3)]
        assert body["entries"] == cached["entries"]
    assert stores.record.published_keys("points", "season") == ["spring"]
    assert stores.lake_standings().published_keys("points", "season") == ["spring"]


@pytest.mark.parametrize("store", ["lake", "postgres", "redis"])
def test_the_api_serves_a_season_by_instant_date_and_id_from_each_store(season_stores, store: str):
    from litestar.testing import TestClient

    from api.app import create_app
    from leaderboard.settings import get_settings, load_settings

    s = get_settings()
    only = {"lake": {"DATABASE_URL": None, "REDIS_URL": None}, "postgres": {"REDIS_URL": None}, "redis": {}}[store]
    app = create_app(load_settings(**{"DATABASE_URL": s.DATABASE_URL, "REDIS_URL": s.REDIS_URL, **only}))
    with TestClient(app) as c:
        ranked = [("u3", 9), ("u2", 6), ("u1", 3)]
        for path in ("/leaderboard/points/season?at=2026-03-29T02:30",  # local, in the hour the clocks skip
                     "/leaderboard/points/season?at=2026-03-27T18:00", "/leaderboard/points/season?at=2026-04-02",
                     "/leaderboard/points/season?at=2026-04-02T15:59:59Z", "/leaderboard/points/season/spring"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
            body = r.json()
            assert (body["period"], body["period_key"], body["status"]) == ("season", "spring", "final"), path
            assert [(e["user_id"], e["score"]) for e in body["entries"]] == ranked, path
        assert c.get("/leaderboard/points/season/periods").json()["keys"] == ["spring"]
        for path, status, detail in [
            ("/leaderboard/points/season", 404, "no season of 'points' contains now; its seasons: spring "
             "(2026-03-27T18:00 to 2026-04-02T18:00 Europe/Berlin)"),
            ("/leaderboard/points/season?at=2026-04-02T18:00", 404, "no season of 'points' contains 2026-04-02T18:00"),
            ("/leaderboard/points/season?at=2026-03-27T17:59:59", 404, "no season of 'points' contains"),
            ("/leaderboard/points/season/summer", 404, "board 'points' has no season 'summer'; its seasons: spring"),
            ("/leaderboard/daily_only/season", 404, "board 'daily_only' has no season standings; it has daily"),
            ("/leaderboard/points/season?at=0001-01-01T00:00", 404, "no season of 'points' contains 0001-01-01T00:00"),
            ("/leaderboard/points/season?at=soon", 400, "at='soon' is not a date like 2026-11-26 (nor a date-time like 2026-11-26T12:00)"),
            ("/leaderboard/points/daily?at=2026-03-29T12:00", 400, "is not a date like 2026-11-26"),
            ("/leaderboard/points/daily/2026-13", 404, "no daily period has key '2026-13': bad daily period key"),
            ("/leaderboard/points/season/spring/results", 409,
             "settlement needs Postgres" if store == "lake" else "points season spring is closing"),
        ]:  # fmt: skip
            r = c.get(path)
            assert r.status_code == status and detail in r.json()["detail"], (path, r.text)
        day = c.get("/leaderboard/points/daily/2026-03-29")  # a calendar period by its key too (none published)
        assert day.status_code == 404 and "no published daily standings of 'points' for 2026-03-29" in day.text


def _recompute_reopened(settings) -> None:
    """What the daemon does after a reopening: `settle_periods` asks for a run of the season's
    partition, and `season_job` runs it."""
    import dagster as dg

    from pipelines.definitions import build_defs
    from pipelines.resources import StoresResource
    from pipelines.settlement import SettlementResource

    defs = build_defs(settings)
    resources = {"stores": StoresResource.from_settings(settings), "settlement": SettlementResource()}
    sensor = defs.get_repository_def().get_sensor_def("settle_periods")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        [request] = result.run_requests or []
        assert (request.job_name, request.partition_key) == ("season_job", "spring")
        instance.add_dynamic_partitions("seasons", ["spring"])  # the season_rankings sensor's doing
        run = defs.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert run.success


def test_a_season_settles_freezes_and_reopens_through_the_settlement(season_stores):
    """closing -> settled (revision 1, a webhook body) -> a late file is recorded, not applied
    -> reopened with a reason -> republished -> settled again as revision 2."""
    import json

    from litestar.testing import TestClient

    from api.app import create_app
    from leaderboard.settings import get_settings
    from leaderboard.stores.settlement import PostgresSettlement
    from pipelines.steps import ingest_day, score_day
    from tests.conftest import event, land

    boards, stores, _, landing = season_stores
    store, grace = PostgresSettlement(stores.record), dt.timedelta(minutes=60)
    assert store.settle_due(SPRING_END + dt.timedelta(minutes=59), grace, BERLIN, None) == []  # closing
    settled = store.settle_due(SPRING_END + dt.timedelta(minutes=66), grace, BERLIN, lambda board: 10)
    assert sorted((s.board_id, s.period_type, s.period_key, s.revision) for s in settled) == [
        ("best", "season", "spring", 1), ("laps", "season", "spring", 1), ("points", "season", "spring", 1)]  # fmt: skip
    sent = json.loads(store.bodies("points", "season", "spring")[0])
    assert (sent["data"]["period"], sent["data"]["period_key"], sent["data"]["revision"]) == ("season", "spring", 1)
    assert [e["user_id"] for e in sent["data"]["entries"]] == ["u3", "u2", "u1"]

    with TestClient(create_app(get_settings())) as api:
        first = api.get("/leaderboard/points/season/spring/results")
        assert first.status_code == 200, first.text
        assert (first.json()["revision"], first.json()["state"]) == (1, "settled")
        assert api.get("/leaderboard/points/season/results?at=2026-03-30T09:00").json() == first.json()

        # a late file inside the window: the settled season keeps its standings, the event is counted as late
        at = dt.datetime(2026, 4, 1, 10, tzinfo=UTC)
        land(landing, "game", at, "game+0+99.json", [event("late", "u4", "2026-04-01T10:00:00Z", 100)])
        ingest_day(landing, stores.lake, boards, dt.date(2026, 4, 1), "run-2", stores)
        score_day(stores.lake, boards, dt.date(2026, 4, 1))
        _rank_spring(boards, stores, SPRING_END + dt.timedelta(hours=2))
        assert api.get("/leaderboard/points/season/spring/results").json()["entries"] == first.json()["entries"]
        assert store.state("points", "season", "spring").late_after_settlement == 1  # type: ignore[union-attr]

        # a dispute: the operator reopens it, the next publish applies the late event, it settles again
        from click.testing import CliRunner

        from cli.main import main

        args = [
            "settlement",
            "reopen",
            "points",
            "season",
            "--season",
            "spring",
            "--reason",
            "dispute #12",
            "--by",
            "ops",
        ]
        said = CliRunner().invoke(main, args, catch_exceptions=False)
        assert said.exit_code == 0 and "reopened points season spring (revision 1)" in said.output, said.output
        reopened = store.state("points", "season", "spring").reopened_at  # type: ignore[union-attr]
        assert reopened is not None
        assert api.get("/leaderboard/points/season/spring/results").status_code == 409
        _recompute_reopened(get_settings())
        again = store.settle_due(reopened + dt.timedelta(minutes=61), grace, BERLIN, lambda board: 10)
        assert [(s.board_id, s.revision) for s in again] == [("points", 2)]
        second = api.get("/leaderboard/points/season/spring/results").json()
        assert second["revision"] == 2 and second["content_hash"] != first.json()["content_hash"]
        assert [(e["user_id"], e["score"]) for e in second["entries"]] == [("u4", 100), ("u3", 9), ("u2", 6), ("u1", 3)]
    shown = CliRunner().invoke(main, ["show", "points", "season", "--season", "spring"], catch_exceptions=False)
    assert shown.exit_code == 0 and "points - season spring" in shown.output and "u4" in shown.output, shown.output
    wrong = CliRunner().invoke(main, ["show", "points", "season", "--at", "2026-05-01T10:00"])
    assert wrong.exit_code == 1 and "no season of 'points' contains 2026-05-01T10:00" in wrong.output, wrong.output
    assert len(store.bodies("points", "season", "spring")) == 2
    history = store.history(10, "points").filter(pl.col("period_type") == "season")
    assert history.select("action", "revision").rows() == [("settled", 2), ("reopened", 1), ("settled", 1)]


def test_dagster_registers_seasons_from_the_file_and_ranks_one_when_its_days_change(
    settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No reload and no code change: a season added to the file is a partition at the next tick."""
    import os

    import dagster as dg

    from leaderboard.settings import get_settings
    from leaderboard.stores import Stores
    from leaderboard.stores.lake import read_snapshot
    from pipelines.definitions import build_defs
    from pipelines.resources import LakeResource
    from pipelines.seasons import season_requests
    from pipelines.steps import ingest_day, score_day

    boards = _boards(tmp_path, RANKED)
    monkeypatch.setenv("LEADERBOARD_BOARDS", str(boards.source))
    get_settings.cache_clear()
    settings = get_settings()
    defs = build_defs(settings)
    sensor = defs.get_repository_def().get_sensor_def("season_rankings")
    lake = LakeResource.from_settings(settings)

    def tick(instance: dg.DagsterInstance) -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}, definitions=defs) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys or []))
        return result

    with dg.instance_for_test() as instance:
        first = tick(instance)
        assert instance.get_dynamic_partitions("seasons") == ["spring"] and not first.run_requests  # nothing scored yet
        _land_season(settings.LEADERBOARD_LANDING_DIR)
        stores = Stores.from_settings(settings)
        for day in season_period(boards.boards[0], "spring", BERLIN).days():
            ingest_day(settings.LEADERBOARD_LANDING_DIR, stores.lake, boards, day, "run-1", stores)
            score_day(stores.lake, boards, day)
        (run,) = tick(instance).run_requests or []
        assert (run.job_name, run.partition_key) == ("season_job", "spring") and run.run_key.startswith(
            "season:spring:ended:"
        )
        assert [r.run_key for r in tick(instance).run_requests or []] == [run.run_key]  # the same inputs: the same key
        result = defs.resolve_job_def("season_job").execute_in_process(
            instance=instance, partition_key="spring", tags=run.tags
        )
        assert result.success
        snapshot = read_snapshot(stores.lake, "points", "season", "spring")
        assert snapshot is not None and snapshot.frame.select("user_id", "score").rows() == [
            ("u3", 9.0), ("u2", 6.0), ("u1", 3.0)]  # fmt: skip

        # a late file rescored one of its days: ranked again
        day_file = stores.lake.day_file("daily_scores", dt.date(2026, 3, 30))
        os.utime(day_file, ns=(day_file.stat().st_atime_ns, day_file.stat().st_mtime_ns + 1_000_000))
        assert [r.run_key for r in tick(instance).run_requests or []] != [run.run_key]

        # while live, the same inputs are asked for as live; before it starts, not at all
        live, _ = season_requests(boards, lake, {"spring"}, SPRING_START + dt.timedelta(days=1))
        assert live == [] and season_requests(boards, lake, {"spring"}, SPRING_START - US)[1] == []
        during = season_requests(boards, lake, {"spring"}, SPRING_START + dt.timedelta(days=1))[1]
        assert during[0].run_key.startswith("season:spring:live:")

        # a season added to the file: a partition at the next tick, with the definitions as loaded
        text = RANKED.replace(
            '      - {id: spring, title: Spring cup, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}',
            '      - {id: spring, title: Spring cup, start: "2026-03-27T18:00", end: "2026-04-02T18:00"}\n'
            "      - {id: summer, start: 2026-06-01, end: 2026-09-01}",
        )
        boards.source.write_text(text)
        tick(instance)
        assert instance.get_dynamic_partitions("seasons") == ["spring", "summer"]


def test_the_dashboard_picks_a_season_of_the_board(season_stores, monkeypatch: pytest.MonkeyPatch):
    import os

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from leaderboard.settings import get_settings
    from tests.test_dashboard import APP, start_api, stop

    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "0")
    api, url = start_api({**os.environ})
    try:
        monkeypatch.setenv("API_URL", url)
        get_settings.cache_clear()
        st.cache_data.clear()
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        assert not at.exception, at.exception
        at.selectbox(key="period").set_value("season").run()
        assert not at.exception, at.exception
        picker = at.selectbox(key="season-points")
        assert picker.options == ["Spring cup (spring) · 2026-03-27 18:00 → 2026-04-02 18:00"]
        assert at.table[0].value["user"].tolist() == ["u3", "u2", "u1"]
        assert [m.value for m in at.metric][:2] == ["spring", "final"]
    finally:
        stop(api)
        st.cache_data.clear()


def test_leaderboard_materialize_ranks_the_seasons_its_days_touch(settings, tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from cli.main import main
    from leaderboard.settings import get_settings
    from leaderboard.stores.lake import Lake, read_snapshot
    from pipelines.runner import plan_runs

    boards = _boards(tmp_path, RANKED)
    lake = Lake(settings.LEADERBOARD_LAKE_DIR)
    today = dt.date(2026, 12, 5)
    labels = [r.label for r in plan_runs(boards, dt.date(2026, 4, 2), dt.date(2026, 4, 3), today, lake)]
    assert labels[-1] == "season spring"
    assert "season spring" not in [
        r.label for r in plan_runs(boards, dt.date(2026, 4, 3), dt.date(2026, 4, 4), today, lake)
    ]
    monkeypatch.setenv("LEADERBOARD_BOARDS", str(boards.source))
    get_settings.cache_clear()
    _land_season(settings.LEADERBOARD_LANDING_DIR)
    said = CliRunner().invoke(
        main, ["materialize", "--start", "2026-03-27", "--end", "2026-04-02"], catch_exceptions=False
    )
    assert said.exit_code == 0 and "season spring" in said.output, said.output
    snapshot = read_snapshot(lake, "points", "season", "spring")
    assert snapshot is not None and snapshot.frame.select("user_id", "score").rows() == [
        ("u3", 9.0), ("u2", 6.0), ("u1", 3.0)]  # fmt: skip
