"""The Litestar API run with its lifespan, over standings published by a real pipeline run
to the lake, Postgres and Redis of this machine."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from unittest.mock import ANY

import httpx
import jwt
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner
from litestar.testing import TestClient

import api.guards
import api.reader
from api.app import create_app
from api.reader import Reader
from cli.main import main
from leaderboard.boards import current_boards, load_boards
from leaderboard.settings import get_settings, load_settings
from leaderboard.standings import StandingsError
from leaderboard.stores.lake import Lake
from leaderboard.stores.lake_async import AsyncLake
from leaderboard.stores.redis import AsyncBodies, CacheKeys
from tests.conftest import REDIS_URL, ROOT, scratch_database, scratch_redis_prefix

FIRST, LAST = dt.date(2026, 4, 20), dt.date(2026, 4, 22)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix, pytest.MonkeyPatch.context() as mp:
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
    assert {b["id"] for b in boards} == {"points", "referrals", "high_score", "fastest_lap", "teams", "referrers"}
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
        ("/leaderboard/points/daily", {"at": "20260421"}, 400, "not a date like 2026-11-26"),
        ("/leaderboard/points/weekly", {"at": "9999-12-31"}, 404, "no weekly period contains 9999-12-31"),
        (
            "/leaderboard/points/daily",
            {"limt": 5},
            400,
            "unknown query parameter limt; this route takes: at, limit, offset",
        ),
        ("/leaderboard/points/daily/periods", {"at": str(LAST)}, 400, "this route takes: none"),
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


def test_the_all_time_period_contains_every_date(client):
    assert client.get("/leaderboard/points/all_time", params={"at": "2026-04-21"}).json() == (
        client.get("/leaderboard/points/all_time").json()
    )


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
    # neither, but the lake behind Postgres: degraded, it serves
    with TestClient(app_for(env, "postgresql://postgres@127.0.0.1:1/x", "redis://127.0.0.1:1/0")) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["details"] == {
            "postgres": "down: PoolTimeout",
            "lake": "ok",
            "redis": "down: ConnectionError",
        }
    # no store at all: 503
    dead = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "REDIS_URL": "redis://127.0.0.1:1/0",
            "REDIS_KEY_PREFIX": env["prefix"], "LEADERBOARD_LAKE_DIR": env["root"] / "no-lake"}  # fmt: skip
    with TestClient(create_app(load_settings(**dead))) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"


def test_openapi_schema_is_served(env):
    with TestClient(app_for(env, None, None)) as c:
        schema = c.get("/schema/openapi.json").json()
    paths = schema["paths"]
    assert "/leaderboard/{board}/{period}" in paths
    assert schema["components"]["securitySchemes"]["BearerToken"] == {"type": "http", "scheme": "bearer",
                                                                      "bearerFormat": "JWT", "description": ANY}  # fmt: skip
    guarded = {("get", "/leaderboard/{board}/{period}/me"), ("get", "/leaderboard/{board}/{period}/users/{user_id}"),
               ("post", "/leaderboard/{board}/{period}/users"), ("get", "/leaderboard/config"),
               ("put", "/leaderboard/config"), ("post", "/leaderboard/config/refresh"),
               ("post", "/leaderboard/{board}/{period}/reopen"), ("post", "/leaderboard/exclusions"),
               ("get", "/leaderboard/exclusions"), ("post", "/leaderboard/exclusions/{exclusion_id}/lift"),
               ("get", "/leaderboard/audit")}  # fmt: skip
    for path, operations in paths.items():
        for method, operation in operations.items():
            expected = [{"BearerToken": []}] if (method, path) in guarded else None
            assert operation.get("security") == expected, (method, path)
    patch = schema["components"]["schemas"]["BoardConfigPatch"]["properties"]["display_limit"]
    assert (patch["minimum"], patch["maximum"]) == (1, 1000)
    # the values a client may send, where the handlers' types cannot say them
    standings = {p["name"]: p["schema"] for p in paths["/leaderboard/{board}/{period}"]["get"]["parameters"]}
    assert standings["board"]["enum"] == [b.id for b in load_boards(ROOT / "leaderboard" / "boards.yaml").boards]
    assert standings["period"]["enum"] == ["daily", "weekly", "monthly", "all_time", "season"]
    assert standings["at"]["format"] == "date" and "for a season also a date-time" in standings["at"]["description"]
    update = schema["components"]["schemas"]["ConfigUpdate"]
    assert update["additionalProperties"] is False and update["properties"]["boards"]["additionalProperties"] is False
    assert set(update["properties"]["boards"]["properties"]) == set(standings["board"]["enum"])
    # the friends board's request as validated, and entries' names and metadata as sent
    components = schema["components"]["schemas"]
    assert components["UserIds"]["properties"]["user_ids"] == {
        "type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 200
    }  # fmt: skip
    assert components["UserIds"]["required"] == ["user_ids"]
    entry = components["Entry"]
    assert entry["properties"]["display_name"] == {"oneOf": [{"type": "string"}, {"type": "null"}]}
    assert entry["properties"]["metadata"] == {"oneOf": [{"type": "object", "additionalProperties": {}},
                                                         {"type": "null"}]}  # fmt: skip
    assert {"display_name", "metadata"} <= set(entry["required"]) and set(components["Selected"]["required"]) >= {
        "entries", "absent", "published_at", "total"
    }  # fmt: skip
    # the dependencies are not request parameters
    names = {p["name"] for ops in paths.values() for op in ops.values() for p in op.get("parameters", [])}
    assert not names & {"reader", "settings", "caller", "state", "request"}


SECRET = "s" * 40


def auth_app(env, **extra):
    return create_app(load_settings(
        DATABASE_URL=env["url"], REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=env["prefix"],
        LEADERBOARD_LAKE_DIR=env["root"] / "lake", JWT_SECRET=SECRET, **extra,
    ))  # fmt: skip


def token(sub: object, secret: str = SECRET, alg: str = "HS256", **claims) -> str:
    now = dt.datetime.now(dt.UTC)
    body = {"sub": sub, "exp": now + dt.timedelta(hours=1), "roles": [], **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, secret, algorithm=alg)


def bearer(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


@pytest.fixture(params=["lake", "postgres"])
def secured(request, env):
    settings = dict(DATABASE_URL=None, REDIS_URL=None) if request.param == "lake" else {}
    app = create_app(load_settings(**{
        "DATABASE_URL": env["url"], "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": env["prefix"],
        "LEADERBOARD_LAKE_DIR": env["root"] / "lake", "JWT_SECRET": SECRET, **settings,
    }))  # fmt: skip
    with TestClient(app) as c:
        yield c


def test_me_and_users_return_the_entry_with_percentile_and_neighbours(secured):
    top = secured.get("/leaderboard/points/daily", params={"at": str(LAST), "limit": 10}).json()
    fifth = top["entries"][4]
    me = secured.get("/leaderboard/points/daily/me", params={"at": str(LAST), "around": 2},
                     headers=bearer(token(fifth["user_id"])))  # fmt: skip
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["entry"]["rank"] == 5 and body["entry"]["user_id"] == fifth["user_id"]
    assert body["entry"]["percentile"] == round(100 * (body["total"] - 4) / body["total"], 2)
    assert [e["rank"] for e in body["neighbors"]] == [3, 4, 5, 6, 7]
    first = secured.get(f"/leaderboard/points/daily/users/{top['entries'][0]['user_id']}",
                        params={"at": str(LAST), "around": 3}, headers=bearer(token("boss", roles=["admin"]))).json()  # fmt: skip
    assert [e["rank"] for e in first["neighbors"]] == [1, 2, 3, 4]  # clipped at the top


@pytest.mark.parametrize(
    "make",
    [
        lambda: None,  # no token
        lambda: token("u", alg="HS384"),  # another algorithm
        lambda: token("u", secret="w" * 40),  # wrong key
        lambda: token("u", exp=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)),  # expired
        lambda: token("u", nbf=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),  # not yet valid
        lambda: token("u", exp=None),  # no exp
        lambda: token(None),  # no sub
        lambda: token(5),  # sub not a string
        lambda: token("u", roles="admin"),  # roles not a list
        lambda: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.",  # alg none
    ],
)
def test_refused_tokens_get_401(secured, make):
    t = make()
    response = secured.get("/leaderboard/points/daily/me", params={"at": str(LAST)}, headers=bearer(t) if t else {})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"


def test_issuer_and_audience_are_checked_when_configured(env):
    with TestClient(auth_app(env, JWT_ISSUER="lb", JWT_AUDIENCE="players")) as c:
        url, params = "/leaderboard/points/daily/me", {"at": str(LAST)}
        user = c.get("/leaderboard/points/daily", params=params).json()["entries"][0]["user_id"]
        assert c.get(url, params=params, headers=bearer(token(user, iss="lb", aud="players"))).status_code == 200
        assert c.get(url, params=params, headers=bearer(token(user, iss="other", aud="players"))).status_code == 401
        assert c.get(url, params=params, headers=bearer(token(user, iss="lb", aud="others"))).status_code == 401


def test_reading_another_users_entry_is_403_and_errors(secured):
    params = {"at": str(LAST)}
    other = secured.get("/leaderboard/points/daily/users/user-000001", params=params, headers=bearer(token("me")))
    assert other.status_code == 403
    assert secured.get("/leaderboard/points/daily/me", params={**params, "around": 51},
                       headers=bearer(token("me"))).status_code == 400  # fmt: skip
    missing = secured.get("/leaderboard/points/daily/me", params=params, headers=bearer(token("nobody-here")))
    assert missing.status_code == 404 and "has no entry" in missing.json()["detail"]


@pytest.fixture
def guarded(tmp_path):
    """The app over an empty lake of its own: guards and body validation need no standings."""
    (tmp_path / "lake").mkdir()  # there, with nothing published (a missing lake is a store that is down)
    app = create_app(load_settings(DATABASE_URL=None, REDIS_URL=None, LEADERBOARD_LAKE_DIR=tmp_path / "lake",
                                   JWT_SECRET=SECRET, RATE_LIMIT_PER_MINUTE=0))  # fmt: skip
    with TestClient(app) as c:
        yield c


GUARDED = [("GET", "/leaderboard/points/daily/me"), ("GET", "/leaderboard/points/daily/users/u1"),
           ("POST", "/leaderboard/points/daily/users"), ("GET", "/leaderboard/config"), ("PUT", "/leaderboard/config"),
           ("POST", "/leaderboard/config/refresh")]  # fmt: skip
ADMIN_ONLY = [route for route in GUARDED if "config" in route[1]]


def call(c: TestClient, method: str, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    if method == "PUT":
        kwargs.setdefault("json", {"boards": {}})
    elif path.endswith("/users"):
        kwargs.setdefault("json", {"user_ids": ["u1"]})
    return c.request(method, path, headers=headers or {}, **kwargs)


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dTpw", "Token {t}", "{t}", "Bearer not.a.jwt", "Bearer {t} {t}", "Bearer {t},"],
)
def test_malformed_authorization_is_401_on_every_guarded_route(guarded, authorization):
    admin = token("u1", roles=["admin"])
    headers = {"Authorization": authorization.format(t=admin)}
    for method, path in GUARDED:
        response = call(guarded, method, path, headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"].startswith("application/problem+json")
    assert call(guarded, "GET", "/leaderboard/config", {}).status_code == 401  # no header at all
    # the scheme is case-insensitive (RFC 7235)
    assert call(guarded, "GET", "/leaderboard/config", {"Authorization": f"bearer {admin}"}).status_code == 200


def test_admin_routes_refuse_a_user_token_with_403_before_reading_the_request(guarded):
    user = bearer(token("u1", roles=["player"]))
    for method, path in ADMIN_ONLY:
        response = call(guarded, method, path, user)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"status": 403, "title": "admin role required", "detail": "Forbidden"}
        assert "www-authenticate" not in response.headers
    # the guards answer before the body or the query is validated
    bad = {"boards": {"points": {"display_limit": 0}}}
    assert guarded.put("/leaderboard/config", json=bad, headers=user).status_code == 403
    assert guarded.get("/leaderboard/points/daily/me", params={"around": 51}).status_code == 401
    assert guarded.get("/leaderboard/config", headers=bearer(token("boss", roles=["admin"]))).status_code == 200


def test_a_user_entry_is_for_that_user_or_an_admin(guarded):
    path = "/leaderboard/points/daily/users/u1"
    other = guarded.get(path, headers=bearer(token("u2")))
    assert other.status_code == 403 and other.json()["title"] == "you may read your own entry only (or be admin)"
    # past the guard: nothing is published in this lake
    assert guarded.get(path, headers=bearer(token("u1"))).status_code == 404
    assert guarded.get(path, headers=bearer(token("u2", roles=["admin"]))).status_code == 404


def test_the_guard_and_the_caller_dependency_decode_the_token_once(guarded, monkeypatch):
    calls = []
    original = api.guards.authenticate

    def counted(connection, settings):
        calls.append(connection.url.path)
        return original(connection, settings)

    monkeypatch.setattr(api.guards, "authenticate", counted)
    admin = bearer(token("boss", roles=["admin"]))
    assert guarded.get("/leaderboard/points/daily/me", headers=bearer(token("u1"))).status_code == 404
    assert guarded.post("/leaderboard/config/refresh", headers=admin).status_code == 202
    assert calls == ["/leaderboard/points/daily/me", "/leaderboard/config/refresh"]


@pytest.mark.parametrize("limit", [0, 1001, -5])
def test_display_limit_out_of_range_is_400_naming_the_field(guarded, limit):
    admin = bearer(token("boss", roles=["admin"]))
    response = guarded.put("/leaderboard/config", json={"boards": {"points": {"display_limit": limit}}}, headers=admin)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["extra"]
    assert error["key"].endswith("display_limit") and error["source"] == "body"
    assert error["message"] == ("Expected `int` <= 1000" if limit > 1000 else "Expected `int` >= 1")
    assert guarded.get("/leaderboard/config", headers=admin).json()["boards"]["points"]["display_limit"] != limit


def test_display_limit_bounds_are_accepted_and_unknown_boards_refused(guarded):
    admin = bearer(token("boss", roles=["admin"]))
    for limit in (1, 1000):
        response = guarded.put("/leaderboard/config", json={"boards": {"points": {"display_limit": limit}}},
                               headers=admin)  # fmt: skip
        assert response.status_code == 200 and response.json()["boards"]["points"]["display_limit"] == limit
    unknown = guarded.put("/leaderboard/config", json={"boards": {"nope": {"enabled": False}}}, headers=admin)
    assert unknown.status_code == 400 and unknown.json()["detail"] == "unknown board 'nope'"


def test_config_body_is_checked_as_documented_and_options_lists_every_method(guarded):
    admin = bearer(token("boss", roles=["admin"]))
    lax = guarded.put("/leaderboard/config", json={"boards": {"points": {"enabled": "false"}}}, headers=admin)
    assert lax.status_code == 400 and "Expected `bool | null`, got `str`" in lax.json()["detail"]
    assert guarded.get("/leaderboard/config", headers=admin).json()["boards"]["points"]["enabled"] is True
    # an integral number is an integer to JSON Schema
    whole = guarded.put("/leaderboard/config", json={"boards": {"points": {"display_limit": 7.0}}}, headers=admin)
    assert whole.status_code == 200 and whole.json()["boards"]["points"]["display_limit"] == 7
    options = guarded.options("/leaderboard/config", headers=admin)
    assert options.status_code == 204 and options.headers["allow"] == "GET, OPTIONS, PUT"


def test_short_secret_is_refused_outside_development():
    from leaderboard.settings import SettingsError

    with pytest.raises(SettingsError, match="JWT_SECRET"):
        load_settings(JWT_SECRET="short", NODE_ENV="production")
    assert load_settings(JWT_SECRET="short", NODE_ENV="development").JWT_SECRET == "short"


def test_token_command_mints_a_token_the_api_accepts(env, monkeypatch):
    monkeypatch.setenv("JWT_SECRET", SECRET)
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["token", "--sub", "boss", "--admin", "--ttl", "5m"])
    assert result.exit_code == 0, result.output
    with TestClient(auth_app(env)) as c:
        user = c.get("/leaderboard/points/daily", params={"at": str(LAST)}).json()["entries"][0]["user_id"]
        response = c.get(f"/leaderboard/points/daily/users/{user}", params={"at": str(LAST)},
                         headers=bearer(result.output.strip()))  # fmt: skip
    assert response.status_code == 200
    bad = CliRunner().invoke(main, ["token", "--sub", "x", "--ttl", "soon"])
    assert bad.exit_code != 0 and "use a number" in bad.output
    get_settings.cache_clear()


def test_metrics_request_ids_and_cache_counters(env):
    with TestClient(app_for(env)) as c:
        c.get("/leaderboard/points/daily", params={"at": str(LAST)})
        c.get("/leaderboard/nope/daily")
        r = c.get("/health", headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert len(c.get("/health").headers["x-request-id"]) == 32
        text = c.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/leaderboard/{board}/{period}",status="200"}' in text
    assert 'route="/leaderboard/{board}/{period}",status="404"' in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'leaderboard_cache_requests_total{result="hit"}' in text


def test_a_hot_standings_response_carries_its_own_request_id_and_the_current_body(env, monkeypatch):
    """The hot route reuses one prepared response per cached body: each answer still has its own
    request id, and a body republished in Redis is what the answers after a refresh send."""
    monkeypatch.setattr(api.reader, "LOCAL_CACHE_SECONDS", 0.1)
    name = CacheKeys(env["prefix"]).rankings("points", "daily", str(LAST))
    sync = redis.Redis.from_url(REDIS_URL)
    original = sync.get(name)
    with TestClient(app_for(env)) as c:

        def read(**headers: str) -> httpx.Response:
            return c.get("/leaderboard/points/daily", params={"at": str(LAST)}, headers=headers)

        published = read().json()
        bodies = [{**published, "published_at": f"2030-01-0{i}T00:00:00+00:00"} for i in (1, 2)]
        try:
            answers = []
            for body in bodies:
                sync.set(name, json.dumps(body, separators=(",", ":")))  # as the publisher writes it
                time.sleep(0.2)  # past the remembered page's expiry
                answers.append([read(**{"X-Request-ID": f"r{i}"}) for i in range(3)])
        finally:
            sync.set(name, original) if original is not None else sync.delete(name)
    for body, sent in zip(bodies, answers, strict=True):
        assert [r.headers["x-request-id"] for r in sent] == ["r0", "r1", "r2"]
        assert all(r.status_code == 200 and r.json() == body for r in sent)


def test_rate_limit_answers_429_with_retry_after(env):
    app = create_app(load_settings(DATABASE_URL=None, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=env["prefix"] + "-rl",
                                   LEADERBOARD_LAKE_DIR=env["root"] / "lake", RATE_LIMIT_PER_MINUTE=3))  # fmt: skip
    with TestClient(app) as c:
        codes = [c.get("/leaderboard/boards").status_code for _ in range(5)]
        limited = c.get("/leaderboard/boards")
        assert c.get("/health").status_code == 200  # probes are never limited
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert limited.headers["content-type"].startswith("application/problem+json")


def test_json_logs_carry_the_request_id(env, capsys):
    app = create_app(load_settings(DATABASE_URL="postgresql://postgres@127.0.0.1:1/x", REDIS_URL=None,
                                   LEADERBOARD_LAKE_DIR=env["root"] / "lake", LOG_FORMAT="json"))  # fmt: skip
    with TestClient(app) as c:
        c.get("/leaderboard/points/daily", params={"at": str(LAST)}, headers={"X-Request-ID": "req-42"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert any(entry["request_id"] == "req-42" and entry["level"] == "WARNING" for entry in lines), lines


@pytest.mark.parametrize("mode", ["lake", "postgres"])
def test_admin_config_and_refresh(env, mode):
    extra = {"DATABASE_URL": None, "REDIS_URL": None} if mode == "lake" else {}
    settings = {"DATABASE_URL": env["url"], "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": env["prefix"],
                "LEADERBOARD_LAKE_DIR": env["root"] / "lake", "JWT_SECRET": SECRET, **extra}  # fmt: skip
    admin, user = bearer(token("boss", roles=["admin"])), bearer(token("someone"))
    try:
        with TestClient(create_app(load_settings(**settings))) as c:
            assert c.get("/leaderboard/config").status_code == 401
            assert c.get("/leaderboard/config", headers=user).status_code == 403
            config = c.get("/leaderboard/config", headers=admin).json()
            assert config["boards"]["high_score"] == {"display_limit": 50, "enabled": True}
            for bad in ({"boards": {"nope": {"enabled": False}}}, {"boards": {"points": {"display_limit": 0}}},
                        {"boards": {"points": {"colour": "red"}}}):  # fmt: skip
                assert c.put("/leaderboard/config", json=bad, headers=admin).status_code == 400
            # a hot read first: the page this process remembers must not outlive the change
            assert c.get("/leaderboard/referrals/daily", params={"at": str(LAST)}).status_code == 200
            changed = c.put("/leaderboard/config", headers=admin,
                            json={"boards": {"points": {"display_limit": 5}, "referrals": {"enabled": False}}})  # fmt: skip
            assert changed.status_code == 200
            assert changed.json()["boards"]["points"] == {"display_limit": 5, "enabled": True}
            assert len(c.get("/leaderboard/points/daily", params={"at": str(LAST)}).json()["entries"]) == 5
            assert c.get("/leaderboard/referrals/daily", params={"at": str(LAST)}).status_code == 404
            assert "referrals" not in {b["id"] for b in c.get("/leaderboard/boards").json()}
            refresh = c.post("/leaderboard/config/refresh", headers=admin)
            assert refresh.status_code == 202 and refresh.json()["id"]
        # stored, not in memory: a new app (another replica) sees the change
        with TestClient(create_app(load_settings(**settings))) as c:
            assert c.get("/leaderboard/config", headers=admin).json()["boards"]["referrals"]["enabled"] is False
        if mode == "postgres":
            assert refresh.json()["cache_periods_rebuilt"] > 0
            with psycopg.connect(env["url"]) as conn:
                assert conn.execute("SELECT status, requested_by FROM leaderboard_refresh_requests").fetchall() == [
                    ("pending", "boss")
                ]
        else:
            assert (env["root"] / "lake" / "config" / "refresh_requests" / f"{refresh.json()['id']}.json").is_file()
    finally:  # the other tests of this module share the published data
        (env["root"] / "lake" / "config" / "boards.json").unlink(missing_ok=True)
        with psycopg.connect(env["url"]) as conn:
            conn.execute("DELETE FROM leaderboard_board_config")


CONFORMANCE = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_schema_conformance")  # fmt: skip


@contextmanager
def served(environ: dict[str, str], *args: str) -> Iterator[str]:
    """`leaderboard api` (granian) on a free port until the block ends; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    leaderboard = Path(sys.executable).with_name("leaderboard")
    server = subprocess.Popen([str(leaderboard), "api", "--port", str(port), *args], env=environ,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        try:  # a worker still starting (its imports take seconds on a loaded machine) stops once started
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise


def test_schemathesis_finds_no_server_errors_and_answers_as_documented(env, tmp_path):
    """The production server (granian) under schemathesis, driven by the app's own OpenAPI: no
    5xx, and every status, content type and body one the schema documents for its operation."""
    environ = {**os.environ, "LEADERBOARD_LAKE_DIR": str(env["root"] / "lake"), "DATABASE_URL": env["url"],
               "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": env["prefix"], "JWT_SECRET": SECRET,
               "RATE_LIMIT_PER_MINUTE": "100000"}  # fmt: skip
    with served(environ) as base:
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/schema/openapi.json",
             "--checks", ",".join(CONFORMANCE), "--max-examples", "25", "--generation-deterministic",
             "--header", f"Authorization: Bearer {token('boss', roles=['admin'])}"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    # Its admin token changed the boards' config at random (a board may be disabled now): the
    # tests after this one read the boards as published.
    with psycopg.connect(env["url"]) as conn:
        conn.execute("DELETE FROM leaderboard_board_config")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 100, run.stdout[-2000:]


def test_metrics_add_up_over_granian_workers(env):
    """With --workers 2 every scrape reports the whole server, whichever worker answers it."""
    environ = {**os.environ, "LEADERBOARD_LAKE_DIR": str(env["root"] / "lake"), "RATE_LIMIT_PER_MINUTE": "0"}
    for name in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        environ.pop(name, None)
    with served(environ, "--workers", "2") as base:
        time.sleep(1)  # both workers up
        with httpx.Client(base_url=base, headers={"Connection": "close"}) as client:
            for _ in range(40):
                assert client.get("/leaderboard/boards").status_code == 200
            pattern = r'http_requests_total\{method="GET",route="/leaderboard/boards",status="200"\} ([\d.]+)'
            seen = {float(re.search(pattern, client.get("/metrics").text)[1]) for _ in range(6)}
    assert seen == {40.0}


@asynccontextmanager
async def redis_reader(tmp_path, day: dt.date) -> AsyncIterator[tuple[Reader, aioredis.Redis, redis.Redis, str]]:
    """A Reader over Redis alone (nothing in the lake), its async client, a sync client and the
    rankings key of `day` on the points board, under a key prefix of its own (deleted after)."""
    (tmp_path / "lake").mkdir(exist_ok=True)  # an empty lake: up, with nothing published
    with scratch_redis_prefix() as prefix:
        keys = CacheKeys(prefix)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            yield (Reader(current_boards(), AsyncLake(Lake(tmp_path / "lake")), AsyncBodies(client, keys)), client,
                   redis.Redis.from_url(REDIS_URL), keys.rankings("points", "daily", day.isoformat()))  # fmt: skip
        finally:
            await client.aclose()


def test_a_hot_page_is_refreshed_by_one_request_and_never_outlives_its_body(tmp_path, monkeypatch):
    """Once a remembered page expires, one request reads Redis again while the others keep the
    old page (no stampede); a new body shows after the refresh; a body gone from Redis is not
    served from memory again."""
    monkeypatch.setattr(api.reader, "LOCAL_CACHE_SECONDS", 0.2)
    day = dt.date(2026, 4, 20)

    async def scenario() -> None:
        async with redis_reader(tmp_path, day) as (reader, client, sync, name):
            reads = 0
            get = client.get

            async def counted_get(key: str) -> bytes | None:
                nonlocal reads
                reads += 1
                await asyncio.sleep(0.01)  # a Redis round trip long enough for the others to arrive
                return await get(key)

            client.get = counted_get  # type: ignore[method-assign]
            sync.set(name, b'{"status":"final","v":1}')
            assert (await reader.standings("points", "daily", day, None, 0)).raw == b'{"status":"final","v":1}'
            sync.set(name, b'{"status":"final","v":2}')
            await asyncio.sleep(0.25)
            reads = 0
            pages = [p.raw for p in await asyncio.gather(*(reader.standings("points", "daily", day, None, 0)
                                                            for _ in range(20)))]  # fmt: skip
            assert reads == 1
            assert pages[0] == b'{"status":"final","v":2}' and set(pages[1:]) == {b'{"status":"final","v":1}'}
            assert (await reader.standings("points", "daily", day, None, 0)).raw == b'{"status":"final","v":2}'
            sync.delete(name)
            await asyncio.sleep(0.25)
            for _ in range(2):  # nothing published in the lake either: 404, not the page remembered
                with pytest.raises(StandingsError):
                    await reader.standings("points", "daily", day, None, 0)

    asyncio.run(scenario())


def test_a_remembered_live_page_ends_with_its_period(tmp_path, monkeypatch):
    """A page saying "live" is not served from memory past the period's end (its status flips,
    and a request without ?at= then means the next period)."""
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
    monkeypatch.setattr(api.reader, "_period_end", lambda *_: ends)
    day = dt.date(2026, 4, 21)

    async def scenario() -> None:
        async with redis_reader(tmp_path, day) as (reader, _, sync, name):
            sync.set(name, b'{"status":"live","v":1}')
            assert (await reader.standings("points", "daily", day, None, 0)).raw == b'{"status":"live","v":1}'
            sync.set(name, b'{"status":"final","v":2}')  # the closing publish
            await asyncio.sleep(0.4)  # past the end, well inside LOCAL_CACHE_SECONDS
            assert (await reader.standings("points", "daily", day, None, 0)).raw == b'{"status":"final","v":2}'

    asyncio.run(scenario())


FRIENDS = "/leaderboard/{board}/{period}/users"


@pytest.fixture(params=["lake", "postgres", "redis"])
def friendly(request, env):
    """The app over one store (Redis: with Postgres behind it), tokens accepted."""
    stores = {"lake": {"DATABASE_URL": None, "REDIS_URL": None}, "postgres": {"REDIS_URL": None}, "redis": {}}
    settings = {"DATABASE_URL": env["url"], "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": env["prefix"],
                "LEADERBOARD_LAKE_DIR": env["root"] / "lake", "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": 0}  # fmt: skip
    with TestClient(create_app(load_settings(**{**settings, **stores[request.param]}))) as c:
        yield c


@pytest.mark.parametrize(("period", "params"), [("daily", {"at": str(LAST)}), ("all_time", {})])
def test_the_friends_board_answers_those_users_in_rank_order_and_the_absent(friendly, period, params):
    """All-time is a hot period (Redis answers from `:users`); April's days are not (Postgres, the lake)."""
    url = FRIENDS.format(board="points", period=period)
    page = friendly.get(f"/leaderboard/points/{period}", params={**params, "limit": 40}).json()
    ranked = {e["rank"]: e for e in page["entries"]}
    asked = [ranked[30]["user_id"], "ghost", ranked[1]["user_id"], ranked[7]["user_id"], ranked[30]["user_id"]]
    response = friendly.post(url, params=params, json={"user_ids": asked}, headers=bearer(token("someone")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["entries"] == [ranked[1], ranked[7], ranked[30]]  # the board's order; a duplicate once
    assert body["absent"] == ["ghost"]
    assert {k: v for k, v in body.items() if k not in ("entries", "absent")} == {
        k: v for k, v in page.items() if k != "entries"
    }
    one = friendly.post(url, params=params, json={"user_ids": [ranked[2]["user_id"]]}, headers=bearer(token("x")))
    assert one.status_code == 200 and (one.json()["entries"], one.json()["absent"]) == ([ranked[2]], [])
    many = [f"nobody-{i}" for i in range(199)] + [ranked[3]["user_id"]]
    full = friendly.post(url, params=params, json={"user_ids": many}, headers=bearer(token("x")))
    assert full.status_code == 200 and full.json()["entries"] == [ranked[3]] and full.json()["absent"] == many[:199]
    # Postgres text cannot hold a NUL character: such an id is not ranked, not an error
    nul = friendly.post(
        url, params=params, json={"user_ids": ["a\x00b", ranked[4]["user_id"]]}, headers=bearer(token("x"))
    )
    assert nul.status_code == 200 and (nul.json()["entries"], nul.json()["absent"]) == ([ranked[4]], ["a\x00b"])
    alone = friendly.get(f"/leaderboard/points/{period}/users/a%00b", params=params,
                         headers=bearer(token("boss", roles=["admin"])))  # fmt: skip
    assert alone.status_code == 404 and "has no entry" in alone.json()["detail"]


@pytest.mark.parametrize(
    ("body", "params", "status", "says"),
    [
        ({"user_ids": []}, {}, 400, "Expected `array` of length >= 1"),
        ({"user_ids": [f"u{i}" for i in range(201)]}, {}, 400, "Expected `array` of length <= 200"),
        ({"user_ids": [""]}, {}, 400, "Expected `str` of length >= 1"),
        ({"user_ids": [7]}, {}, 400, "Expected `str`, got `int`"),
        ({"user_ids": "u1"}, {}, 400, "Expected `array`, got `str`"),
        ({}, {}, 400, "missing required field `user_ids`"),
        (["u1"], {}, 400, "Expected `object`, got `array`"),
        ({"user_ids": ["u1"]}, {"at": "2026-02-30"}, 400, "not a date"),
        ({"user_ids": ["u1"]}, {"at": "2025-01-01"}, 404, "no published daily standings"),
    ],
)
def test_the_friends_board_refuses_what_it_cannot_answer(friendly, body, params, status, says):
    response = friendly.post(FRIENDS.format(board="points", period="daily"), params=params, json=body,
                             headers=bearer(token("someone")))  # fmt: skip
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.text


def test_the_friends_board_needs_a_token(env):
    with TestClient(auth_app(env)) as c:
        url = FRIENDS.format(board="points", period="all_time")
        response = c.post(url, json={"user_ids": ["u1"]})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert c.post(url, json={"user_ids": []}).status_code == 401  # the guard answers before the body is read
        assert c.post(url, json={"user_ids": ["u1"]}, headers=bearer(token("u", secret="w" * 40))).status_code == 401
        assert c.get(url, headers=bearer(token("u"))).status_code == 405


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """Today's daily standings of `points` with names and metadata (a hot period: Redis holds its
    `:users`), and a day of last month (not hot), in Postgres, Redis and the lake."""
    from leaderboard.periods import period_of
    from leaderboard.stores import Stores
    from tests.named_entries import named_table, publish_named

    root = tmp_path_factory.mktemp("named")
    boards = current_boards()
    now = dt.datetime.now(dt.UTC)
    today = now.astimezone(boards.tz).date()
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix:
        stores = Stores(Lake(root / "lake"), url, REDIS_URL, prefix)
        for day in (today, today - dt.timedelta(days=35)):
            publish_named(stores, boards, period_of("daily", day), named_table("points", 45, now), now)
        yield {"url": url, "prefix": prefix, "root": root, "today": today, "old": today - dt.timedelta(days=35)}


def test_names_and_metadata_are_served_alike_from_redis_postgres_and_the_lake(named):
    """Every route's entries carry the published names and metadata, whichever store answers."""
    answers: dict[str, list] = {}
    for store, (database, cache) in {"lake": (None, None), "postgres": ("env", None), "redis": ("env", "env")}.items():
        with TestClient(create_app(load_settings(
            DATABASE_URL=named["url"] if database else None, REDIS_URL=REDIS_URL if cache else None,
            REDIS_KEY_PREFIX=named["prefix"], LEADERBOARD_LAKE_DIR=named["root"] / "lake", JWT_SECRET=SECRET,
            RATE_LIMIT_PER_MINUTE=0,
        ))) as c:  # fmt: skip
            got = []
            for day in (named["today"], named["old"]):
                at = {"at": str(day)}
                got.append(c.get("/leaderboard/points/daily", params={**at, "limit": 45}).json())
                got.append(c.get("/leaderboard/points/daily", params={**at, "limit": 5, "offset": 38}).json())
                got.append(c.get("/leaderboard/points/daily/me", params={**at, "around": 2},
                                 headers=bearer(token("u002"))).json())  # fmt: skip
                got.append(c.post("/leaderboard/points/daily/users", params=at, headers=bearer(token("u009")),
                                  json={"user_ids": ["u044", "u001", "nobody", "u015"]}).json())  # fmt: skip
            got.append(c.get("/leaderboard/points/daily").content)  # today's first page as published
            answers[store] = got
    assert answers["lake"] == answers["postgres"]
    assert answers["redis"][:-1] == answers["lake"][:-1]
    assert json.loads(answers["redis"][-1]) == json.loads(answers["lake"][-1])
    top, _, me, friends = answers["redis"][:4]
    assert [e["display_name"] for e in top["entries"][:5]] == ["", "Robert'); DROP TABLE students;--", "a" * 64,
                                                                 "Zoë 👾", None]  # fmt: skip
    assert top["entries"][0]["metadata"] == {"z": 1, "a": {"nested": [1, 2.5, None, True]}, "emoji": "👾"}
    assert top["entries"][2]["metadata"] is None  # every third has none
    assert me["entry"]["display_name"] == "Robert'); DROP TABLE students;--" and me["entry"]["rank"] == 2
    assert [e["user_id"] for e in friends["entries"]] == ["u001", "u015", "u044"] and friends["absent"] == ["nobody"]
    assert friends["entries"][1] == top["entries"][14]


def test_a_body_cached_before_entries_had_names_is_served_with_nulls(tmp_path):
    """A `:rankings` body written by the code before names (its entries without the two keys) is
    still served as documented: each entry with `display_name` and `metadata` null."""
    day = dt.date(2026, 4, 20)
    old = {"board": "points", "period": "daily", "period_key": str(day), "period_start": "2026-04-20T00:00:00-04:00",
           "period_end": "2026-04-21T00:00:00-04:00", "status": "final", "published_at": "2026-04-21T04:05:00+00:00",
           "total": 2, "entries": [{"rank": 1, "user_id": "a", "score": 5, "previous_rank": None, "rank_change": None},
                                   {"rank": 2, "user_id": "b", "score": 4, "previous_rank": 1, "rank_change": -1}]}  # fmt: skip

    async def scenario() -> None:
        async with redis_reader(tmp_path, day) as (reader, _, sync, name):
            sync.set(name, json.dumps(old))
            page = await reader.standings("points", "daily", day, None, 0)
            assert page.raw is not None  # still the whole body, sent as bytes
            for body in (json.loads(page.raw), page.body):
                assert body["entries"] == [{**e, "display_name": None, "metadata": None} for e in old["entries"]]
            deeper = await reader.standings("points", "daily", day, 1, 1)
            assert deeper.body["entries"] == [{**old["entries"][1], "display_name": None, "metadata": None}]

    asyncio.run(scenario())
