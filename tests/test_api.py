"""The Litestar API run with its lifespan, over standings published by a real pipeline run
to the lake, Postgres and Redis of this machine."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
import redis
from click.testing import CliRunner
from litestar.testing import TestClient

from api.app import create_app
from leaderboard.cli import main
from leaderboard.migrations import deploy
from leaderboard.settings import get_settings, load_settings
from tests.conftest import ADMIN_URL, REDIS_URL

FIRST, LAST = dt.date(2026, 4, 20), dt.date(2026, 4, 22)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    name = f"lb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    deploy(url)
    prefix = f"lbtest-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for k, v in {"LEADERBOARD_LANDING_DIR": root / "landing", "LEADERBOARD_LAKE_DIR": root / "lake",
                     "DAGSTER_HOME": root / "dagster", "DATABASE_URL": url, "REDIS_URL": REDIS_URL,
                     "REDIS_KEY_PREFIX": prefix}.items():  # fmt: skip
            mp.setenv(k, str(v))
        get_settings.cache_clear()
        runner = CliRunner()
        for args in (["generate", "--start", str(FIRST), "--days", "3", "--users", "150", "--events-per-day", "900"],
                     ["materialize", "--start", str(FIRST), "--end", str(LAST)]):  # fmt: skip
            result = runner.invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
        yield {"url": url, "prefix": prefix, "root": root}
        get_settings.cache_clear()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def app_for(env, database: str | None = "env", cache: str | None = "env"):
    return create_app(
        load_settings(
            DATABASE_URL=env["url"] if database == "env" else database,
            REDIS_URL=REDIS_URL if cache == "env" else cache,
            REDIS_KEY_PREFIX=env["prefix"],
            LEADERBOARD_LAKE_DIR=env["root"] / "lake",
        )
    )


@pytest.fixture(params=["lake", "postgres", "redis"])
def client(request, env):
    app = {"lake": lambda: app_for(env, None, None), "postgres": lambda: app_for(env, "env", None),
           "redis": lambda: app_for(env)}[request.param]()  # fmt: skip
    with TestClient(app) as c:
        yield c


def test_boards_and_periods(client):
    boards = client.get("/leaderboard/boards").json()
    assert {b["id"] for b in boards} == {"points", "referrals", "high_score", "fastest_lap"}
    assert next(b for b in boards if b["id"] == "high_score")["display_limit"] == 50
    keys = client.get("/leaderboard/points/daily/periods").json()["keys"]
    assert keys == ["2026-04-22", "2026-04-21", "2026-04-20"]


def test_paging_returns_every_user_once_in_rank_order(client):
    first = client.get("/leaderboard/points/weekly", params={"at": str(LAST), "limit": 7})
    assert first.status_code == 200
    body = first.json()
    total, seen = body["total"], []
    for offset in range(0, total, 7):
        page = client.get("/leaderboard/points/weekly", params={"at": str(LAST), "limit": 7, "offset": offset}).json()
        assert page["published_at"] == body["published_at"]
        seen += page["entries"]
    assert [e["rank"] for e in seen] == list(range(1, total + 1))
    assert len({e["user_id"] for e in seen}) == total > 30


@pytest.mark.parametrize(
    ("path", "params", "status", "detail"),
    [
        ("/leaderboard/nope/daily", {}, 404, "unknown board"),
        ("/leaderboard/points/yearly", {}, 400, "unknown period"),
        ("/leaderboard/points/daily", {"at": "2026-02-30"}, 400, "not a date"),
        ("/leaderboard/points/daily", {"at": "2025-01-01"}, 404, "no published daily standings"),
        ("/leaderboard/points/daily", {"limit": 0}, 400, None),
        ("/leaderboard/points/daily", {"limit": 101}, 400, None),
        ("/leaderboard/points/daily", {"offset": -1}, 400, None),
        ("/leaderboard/points/all_time", {"at": "2026-04-21"}, 400, "single period"),
    ],
)
def test_errors_are_problem_details(client, path, params, status, detail):
    response = client.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and "Traceback" not in response.text
    if detail:
        assert detail in body["detail"]


def test_the_same_body_from_redis_postgres_and_the_lake(env):
    bodies = {}
    for name, (database, cache) in {"lake": (None, None), "postgres": ("env", None), "redis": ("env", "env")}.items():
        with TestClient(app_for(env, database, cache)) as c:
            bodies[name] = c.get("/leaderboard/high_score/daily", params={"at": str(LAST)}).json()
    assert bodies["lake"]["total"] > 0
    assert bodies["lake"] == bodies["postgres"] == bodies["redis"]


def test_health_and_readiness_under_faults(env):
    with TestClient(app_for(env)) as c:
        assert c.get("/health").json() == {"status": "ok", "details": {}}
        ready = c.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["details"] == {"postgres": "ok", "redis": "ok"}
    # Redis down: standings from Postgres, readiness degraded but 200
    with TestClient(app_for(env, "env", "redis://127.0.0.1:1/0")) as c:
        assert c.get("/leaderboard/points/daily", params={"at": str(LAST)}).status_code == 200
        ready = c.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    # Postgres down but the period cached in Redis: still served
    with TestClient(app_for(env, "postgresql://postgres@127.0.0.1:1/x", "env")) as c:
        response = c.get("/leaderboard/points/all_time")
        assert response.status_code == 200 and response.json()["entries"]
        assert c.get("/health/ready").json()["status"] == "degraded"
    # neither: 503
    with TestClient(app_for(env, "postgresql://postgres@127.0.0.1:1/x", "redis://127.0.0.1:1/0")) as c:
        assert c.get("/health/ready").status_code == 503


def test_openapi_schema_is_served(env):
    with TestClient(app_for(env, None, None)) as c:
        schema = c.get("/schema/openapi.json").json()
    assert "/leaderboard/{board}/{period}" in schema["paths"]
