"""The API under schemathesis with every check it has, for each kind of caller.

The app runs in process over schemathesis' ASGI transport, with real stores: a scratch
Postgres database and Redis prefix (and the lake) holding one published period of each type
for today, so the standings, `/me` and user routes answer 200 as well as their errors. Each
caller kind (no token, a user's, an admin's, and malformed ones: garbage, truncated, other
schemes, `sub` not a string, `roles` not a list) sends every operation it can reach the cases
of schemathesis' coverage phase (boundaries, missing or mistyped parameters, methods the route
lacks) and drawn positive and negative cases, half of those on a real board and period. Every
answer goes through all of schemathesis' checks (status codes, content types, headers and
bodies as the OpenAPI documents them, not only "no 5xx"), and through this module's own: a
refused token is 401 with `WWW-Authenticate: Bearer` on every guarded route, an admin route is
403 for a user.

Failures of a check are collected, not raised at the first, and each is reported with the request
that gave it; any fails the test. Budgets are fixed and the
generation derandomized; the cases run per caller kind are asserted and printed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import jwt
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.parameters import ParameterLocation

from api.app import create_app
from api.auth import mint
from leaderboard.boards import load_boards
from leaderboard.periods import period_of
from leaderboard.settings import Settings, load_settings
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from pipelines.steps import publish_period
from tests.conftest import REDIS_URL, ROOT, scratch_database, scratch_redis_prefix

SECRET = "z" * 40
USER = "user-001"  # ranked on every board and period published
USERS = 60
BOARDS = ["points", "referrals", "high_score", "fastest_lap"]
PERIODS = ["daily", "weekly", "monthly", "all_time"]
GUARDED = ("/me", "/users/", "/leaderboard/config")  # routes that need a token
ADMIN = ("/leaderboard/config", "/leaderboard/exclusions", "/leaderboard/audit")  # routes for admins only


def _published(root: Path, url: str, prefix: str) -> Settings:
    """Today's daily, weekly, monthly and all-time standings of every board, in every store."""
    boards = load_boards(ROOT / "leaderboard" / "boards.yaml")
    settings = load_settings(
        DATABASE_URL=url, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix, LEADERBOARD_LAKE_DIR=root / "lake",
        JWT_SECRET=SECRET, RATE_LIMIT_PER_MINUTE=10_000_000, LOG_LEVEL="CRITICAL",
    )  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    today = now.astimezone(boards.tz).date()
    table = pl.concat(
        pl.DataFrame(
            {"board_id": [b.id] * USERS, "user_id": [f"user-{i:03}" for i in range(1, USERS + 1)],
             "score": [float(USERS - i) for i in range(USERS)], "event_count": [1] * USERS,
             "reached_at": [now - dt.timedelta(minutes=5)] * USERS, "rank": list(range(1, USERS + 1)),
             "previous_rank": [None] * USERS, "rank_change": [None] * USERS},
            schema_overrides={"previous_rank": pl.Int64, "rank_change": pl.Int64},
        )
        for b in boards.boards
    )  # fmt: skip
    stores = Stores.from_settings(settings)
    for period in (period_of(p, today, boards.start_date) for p in PERIODS):
        publish_period(Lake(root / "lake"), boards, period, table, "api-fuzz", stores, now=now)
    return settings


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Settings]]:
    """The app's OpenAPI schema, bound to the app over real stores, and its settings."""
    root = tmp_path_factory.mktemp("api-fuzz")
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix, pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        settings = _published(root, url, prefix)
        schema = schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(settings))
        try:
            yield schema, settings
        finally:
            from schemathesis.python import asgi  # the app's lifespan (its pools) ends before the database goes

            with suppress(Exception):
                asgi.shutdown_lifespans()


def _forged(**claims: object) -> str:
    """A token signed with the right key whose claims break the contract."""
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    return jwt.encode({"exp": exp, **claims}, SECRET, algorithm="HS256")


def authorizations(settings: Settings) -> dict[str, str | None]:
    """The Authorization header of each kind of caller (None: no header)."""
    user = mint(settings, USER)
    return {
        "no token": None,
        "user": f"Bearer {user}",
        "admin": f"Bearer {mint(settings, 'boss', admin=True)}",
        "garbage": "Bearer 0xDEADBEEF.not.a-jwt",
        "truncated": f"Bearer {user[: len(user) * 2 // 3]}",
        "basic scheme": "Basic dXNlci0wMDE6cGFzcw==",
        "token scheme": f"Token {user}",
        "no scheme": user,
        "sub not a string": f"Bearer {_forged(sub=1, roles=[])}",
        "roles not a list": f"Bearer {_forged(sub=USER, roles='admin')}",
    }


MALFORMED = [
    "garbage",
    "truncated",
    "basic scheme",
    "token scheme",
    "no scheme",
    "sub not a string",
    "roles not a list",
]
EXAMPLES = {"no token": 30, "user": 30, "admin": 30}  # per operation and generation mode; malformed: 10


def _cases(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Any]:
    """Cases of an operation: as generated, or (half of them) on a real board and period."""
    free = operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    if not {"board", "period"} <= names:
        return free
    pinned = st.fixed_dictionaries(
        {"board": st.sampled_from(BOARDS), "period": st.sampled_from(PERIODS)}
        | ({"user_id": st.sampled_from([USER, "boss", "user-060"])} if "user_id" in names else {})
    ).flatmap(lambda path: operation.as_strategy(generation_mode=mode, path_parameters=path))
    return free | pinned


def _guarded(label: str) -> bool:
    path = label.split(" ", 1)[1]
    return path.startswith(ADMIN) or path.endswith(("/me", "/users/{user_id}", "/users"))


def _failures(exc: BaseException) -> list[Failure]:
    return list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc]  # type: ignore[list-item]


class Tally:
    """What one caller kind's run saw: cases, statuses, and check failures by (operation, title)."""

    def __init__(self) -> None:
        self.cases = 0
        self.statuses: Counter[int] = Counter()
        self.found: dict[tuple[str, str], str] = {}  # (operation, failure title) -> an example


def run_case(case: Any, kind: str, headers: dict[str, str], tally: Tally) -> None:
    """Send one case as the caller and put its answer through every check and this module's own."""
    label = case.operation.label
    tally.cases += 1
    sent = headers
    header_info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if header_info is not None and header_info.mode is GenerationMode.NEGATIVE:
        sent = {}  # the case breaks the headers (drops Authorization, say): the caller's token would mend them
    response = case.call(headers=sent)
    tally.statuses[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS.get_all(), headers=sent, transport_kwargs={"headers": sent})
    except (Failure, FailureGroup) as exc:
        for failure in _failures(exc):
            message = (
                f"{case.method} {response.status_code} {failure.message}\n  sent path={case.path_parameters} "
                f"query={case.query} body={case.body!r:.300}; answered {response.text[:300]}"
            )
            tally.found.setdefault((label, failure.title), message)
    assert response.status_code < 500, (label, case.method, response.status_code, response.text[:300])
    if case.method != case.operation.method.upper():
        return  # a method the route does not have (the coverage phase tries them): 405 before any guard
    # beyond the schema: what each caller must get from a guarded route
    if _guarded(label) and (kind in (*MALFORMED, "no token") or not sent):
        assert response.status_code == 401, (label, response.status_code, response.text[:200])
        assert response.headers.get("www-authenticate") == ["Bearer"], response.headers
    elif label.split(" ", 1)[1].startswith(ADMIN) and kind == "user":
        assert response.status_code == 403, (label, response.status_code, response.text[:200])


def fuzz_operation(operation: Any, mode: GenerationMode, kind: str, headers: dict[str, str], tally: Tally) -> None:
    """Hypothesis-generated cases of one operation in one generation mode."""

    @settings(max_examples=EXAMPLES.get(kind, 10), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=_cases(operation, mode))
    def check(case: Any) -> None:
        run_case(case, kind, headers, tally)

    try:
        check()
    except Unsatisfiable:  # negative mode, for an operation with nothing to make invalid (no parameter)
        assert mode is GenerationMode.NEGATIVE, operation.label


def cover_operation(schema: Any, operation: Any, kind: str, headers: dict[str, str], tally: Tally) -> None:
    """The cases of schemathesis' coverage phase: boundary values, each parameter missing or of
    another type, and methods the route does not have (a fixed list, not drawn)."""
    schema.coverage_unexpected_methods_seen.clear()  # every caller kind tries them again
    config = schema.config.generation_for(operation=operation)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    for case in schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=config):
        run_case(case, kind, headers, tally)


@pytest.mark.parametrize("kind", ["no token", *MALFORMED, "user", "admin"])  # admin last: it changes the config
def test_every_answer_is_as_documented_for_every_kind_of_caller(api, kind):
    schema, app_settings = api
    header = authorizations(app_settings)[kind]
    headers = {"Authorization": header} if header else {}
    load_all_checks()
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        if kind in MALFORMED and not _guarded(operation.label):
            continue  # a public route ignores the header
        cover_operation(schema, operation, kind, headers, tally)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, kind, headers, tally)
    CASES[kind] = tally.cases
    print(f"\napi fuzz [{kind}]: {tally.cases} cases, by status {dict(sorted(tally.statuses.items()))}")
    for (label, title), example in sorted(tally.found.items()):
        print(f"  {label}: {title}: {example[:600]}")
    assert not tally.found, tally.found
    assert tally.cases >= (200 if kind in MALFORMED else 550)


CASES: dict[str, int] = {}  # cases run per caller kind, for the report
