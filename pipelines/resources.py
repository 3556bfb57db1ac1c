"""Dagster resources: where the landing zone and the lake are, and the stores to publish to.

Secrets (DATABASE_URL, REDIS_URL, REDIS_PASSWORD, SETTLEMENT_WEBHOOK_URL and _SECRET) reach
the resources as `dg.EnvVar`s: Dagster shows the variable's name in the UI and reads the value only when a run or a
sensor tick starts, from the environment of the process doing it. Dagster's own commands
(`dagster dev`, the daemon, `dagster api grpc`) load a `.env` file of their working
directory into that environment; runs that the CLI starts in its own process get the
secrets the settings read from `.env` through `secrets_in_environment`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from leaderboard.objstore import Location, location_of, location_text
from leaderboard.settings import Settings, redis_url_of
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake

SECRETS = ("DATABASE_URL", "REDIS_URL", "REDIS_PASSWORD", "SETTLEMENT_WEBHOOK_URL", "SETTLEMENT_WEBHOOK_SECRET")


class LakeResource(dg.ConfigurableResource):
    """The landing zone Kafka Connect writes to and the Parquet lake the pipeline owns."""

    landing_dir: str
    lake_dir: str

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeResource:
        return cls(
            landing_dir=location_text(settings.LEADERBOARD_LANDING_DIR),
            lake_dir=location_text(settings.LEADERBOARD_LAKE_DIR),
        )

    @property
    def landing(self) -> Location:
        return location_of(self.landing_dir)

    @property
    def lake(self) -> Lake:
        return Lake(location_of(self.lake_dir))


class StoresResource(dg.ConfigurableResource):
    """Postgres and Redis to publish to; none set is the embedded default (lake only).

    Redis is `redis_url`, or else `redis_host`/`redis_port`/`redis_password` (the seed
    service's variables), as in the settings.
    """

    lake_dir: str
    database_url: str | None = None
    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = 6379
    redis_password: str | None = None
    key_prefix: str = "leaderboard"
    redis_max_connections: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> StoresResource:
        """The stores the settings name, each secret as the environment variable it is read from."""
        redis_url: str | None = None
        redis_host: str | None = None
        redis_password: str | None = None
        if settings.REDIS_URL:
            redis_url = env_var("REDIS_URL", settings.REDIS_URL)
        elif settings.REDIS_HOST:
            redis_host = settings.REDIS_HOST
            redis_password = env_var("REDIS_PASSWORD", settings.REDIS_PASSWORD)
        return cls(
            lake_dir=location_text(settings.LEADERBOARD_LAKE_DIR),
            database_url=env_var("DATABASE_URL", settings.DATABASE_URL),
            redis_url=redis_url,
            redis_host=redis_host,
            redis_port=settings.REDIS_PORT,
            redis_password=redis_password,
            key_prefix=settings.REDIS_KEY_PREFIX,
            redis_max_connections=settings.REDIS_MAX_CONNECTIONS,
        )

    @property
    def redis_connection_url(self) -> str | None:
        """The URL Redis is reached at, built as `Settings.redis_url` builds it."""
        return redis_url_of(self.redis_url, self.redis_host, self.redis_port, self.redis_password)

    @property
    def stores(self) -> Stores:
        return Stores(
            Lake(location_of(self.lake_dir)),
            self.database_url,
            self.redis_connection_url,
            self.key_prefix,
            self.redis_max_connections,
        )


def env_var(name: str, value: str | None) -> dg.EnvVar | None:
    """`name` for Dagster to read when a run starts, if the setting is set at all.

    A value in the environment that differs from the settings' would be the one runs use:
    that only happens with settings built by hand, and is refused rather than followed.
    """
    if not value:
        return None
    if os.environ.get(name, value) != value:
        raise ValueError(f"{name}: the settings given differ from the environment, which Dagster reads it from")
    return dg.EnvVar(name)


@contextmanager
def secrets_in_environment(settings: Settings) -> Iterator[None]:
    """Put the secrets the settings read from `.env` into the environment while it lasts.

    `dg.EnvVar` reads only the environment; Dagster's commands load `.env` there, runs
    started in this process would not see it. A variable already set is left alone (it
    is also what the settings read), and the ones added are removed afterwards.
    """
    added = {name: value for name in SECRETS if name not in os.environ and (value := getattr(settings, name))}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
