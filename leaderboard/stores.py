"""Which stores a process publishes to or reads from, from the settings.

With neither DATABASE_URL nor REDIS_URL/REDIS_HOST set, everything stays in the lake (the
embedded default); each configured store is added on top of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import redis

from leaderboard import cache, pg
from leaderboard.settings import Settings


@dataclass(frozen=True)
class Stores:
    database_url: str | None = None
    redis_url: str | None = None
    key_prefix: str = "leaderboard"
    redis_max_connections: int = 50

    @classmethod
    def from_settings(cls, s: Settings) -> Stores:
        return cls(s.DATABASE_URL, s.redis_url, s.REDIS_KEY_PREFIX, s.REDIS_MAX_CONNECTIONS)

    @property
    def keys(self) -> cache.CacheKeys:
        return cache.CacheKeys(self.key_prefix)

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection | None]:
        if not self.database_url:
            yield None
            return
        with pg.connect(self.database_url) as conn:
            yield conn

    @contextmanager
    def redis(self) -> Iterator[redis.Redis | None]:
        if not self.redis_url:
            yield None
            return
        client = cache.connect(self.redis_url, self.redis_max_connections)
        try:
            yield client
        finally:
            client.close()
