from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from leaderboard.boards import BoardSet, load_boards
from leaderboard.landing import hour_folder
from leaderboard.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at a fresh landing zone, lake and DAGSTER_HOME under tmp_path."""
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    monkeypatch.setenv("LEADERBOARD_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("LEADERBOARD_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("LEADERBOARD_TIMEZONE", raising=False)
    monkeypatch.delenv("LEADERBOARD_BOARDS", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def write_boards(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def boards() -> BoardSet:
    return load_boards(ROOT / "leaderboard" / "boards.yaml")


def land(landing: Path, topic: str, hour: dt.datetime, name: str, records: list[object]) -> Path:
    """Write a landing file; records are dicts (JSON-encoded) or raw strings (written as-is)."""
    folder = hour_folder(landing, topic, hour)
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    path = folder / name
    path.write_bytes(gzip.compress(lines.encode()) if name.endswith(".gz") else lines.encode())
    return path


def event(
    event_id: str, user: str, at: str | int, value: object = None, event_type: str = "score.earned", **extra: object
) -> dict:
    rec: dict = {"event_id": event_id, "event_type": event_type, "user_id": user, "occurred_at": at}
    if value is not None:
        rec["value"] = value
    rec.update(extra)
    return rec


def free_port() -> int:
    """A port no one listens on now, so a server started by a test never meets a shared one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ADMIN_URL = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def scratch_database(migrated: bool = False) -> Iterator[str]:
    """A fresh Postgres database of its own (schema applied when `migrated`), dropped afterwards."""
    import psycopg

    name = f"lb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        if migrated:
            from leaderboard.stores.migrations import deploy

            deploy(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_redis_prefix() -> Iterator[str]:
    """A key prefix of its own in the shared Redis; its keys are deleted afterwards."""
    import redis

    prefix = f"lbtest-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        from leaderboard.stores.redis import delete_matching

        client = redis.Redis.from_url(REDIS_URL)
        delete_matching(client, f"{prefix}:*")
        client.close()


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh, empty Postgres database for one test, dropped afterwards."""
    with scratch_database() as url:
        yield url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    from leaderboard.stores.migrations import deploy

    deploy(database_url)
    return database_url


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the shared Redis; its keys are deleted afterwards."""
    with scratch_redis_prefix() as prefix:
        yield prefix


S3_PORT = int(os.environ.get("S3_PORT", "9020"))  # scripts/services starts moto's S3 server here


@contextmanager
def scratch_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the local S3 server, with the AWS_* variables pointing at it; emptied
    and removed afterwards."""
    import boto3

    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(name, raising=False)
    name = f"lbtest-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket for one test (see `scratch_bucket`)."""
    with scratch_bucket(monkeypatch) as name:
        yield name
