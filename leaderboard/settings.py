"""Process settings from the environment (and an optional `.env`), validated once at start.

Names are those of the service this replaces, so existing deployments keep their variables
(docs/contracts.md#settings).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from leaderboard.objstore import S3Location, check_bucket, is_s3, parse_s3_url

DEFAULT_BOARDS_FILE = Path(__file__).with_name("boards.yaml")


_DURATION = re.compile(r"^(\d+)([smhd])$")


def duration_seconds(text: str) -> int:
    """`30s`, `15m`, `1h`, `7d` (the seed's JWT_EXPIRES_IN form) in seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h or 7d")
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def redis_url_of(url: str | None, host: str | None, port: int, password: str | None) -> str | None:
    """REDIS_URL, or one built from REDIS_HOST/REDIS_PORT/REDIS_PASSWORD (the seed's names)."""
    if url:
        return url
    if host:
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{host}:{port}/0"
    return None


SECRETS = ("JWT_SECRET", "SETTLEMENT_WEBHOOK_SECRET")  # shown by their length only


class SettingsError(ValueError):
    """A bad setting; the message names each variable, its value and what is wrong."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True, arbitrary_types_allowed=True
    )

    PORT: int = Field(3000, ge=1, le=65535)
    DATABASE_URL: str | None = None  # postgresql://user:pass@host:5432/db?sslmode=require (passed as is)
    DATABASE_POOL_MIN_SIZE: int = Field(1, ge=0, le=100)
    DATABASE_POOL_MAX_SIZE: int = Field(10, ge=1, le=500)
    REDIS_URL: str | None = None
    REDIS_HOST: str | None = None
    REDIS_PORT: int = Field(6379, ge=1, le=65535)
    REDIS_PASSWORD: str | None = None
    REDIS_KEY_PREFIX: str = Field("leaderboard", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    REDIS_MAX_CONNECTIONS: int = Field(50, ge=1, le=10_000)
    NODE_ENV: Literal["development", "test", "production"] = "production"  # the seed's name
    JWT_SECRET: str | None = None
    JWT_EXPIRES_IN: str = Field("1h", pattern=r"^\d+[smhd]$")
    JWT_ISSUER: str | None = None
    JWT_AUDIENCE: str | None = None
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "text"
    DISPLAY_LIMIT_DEFAULT: int = Field(30, ge=1, le=10_000)
    REFRESH_INTERVAL_MINUTES: int = Field(5, ge=1, le=1440)
    CACHE_TTL_SECONDS: int = Field(300, ge=0)
    RATE_LIMIT_PER_MINUTE: int = Field(600, ge=0)  # per client address (Redis-backed when Redis is set); 0: off
    RETENTION_DAYS: int = Field(90, ge=1)
    # pipeline automation (Dagster daemon)
    QUARANTINE_MAX_RATE: float = Field(0.01, gt=0, le=1)  # a day with this share of broken records fails
    DAILY_CLOSE_MINUTE: int = Field(15, ge=0, le=59)  # minutes after local midnight that yesterday is finalized
    LANDING_SENSOR_INTERVAL_SECONDS: int = Field(30, ge=1, le=3600)
    AUTOMATION_INTERVAL_SECONDS: int = Field(30, ge=1, le=3600)  # how often weekly/monthly/all-time follow days
    # a folder, or s3://bucket/prefix (docs/contracts.md#object-storage)
    LEADERBOARD_LANDING_DIR: Path | S3Location = Path("data/landing")
    LEADERBOARD_LAKE_DIR: Path | S3Location = Path("data/lake")
    LEADERBOARD_BOARDS: Path = DEFAULT_BOARDS_FILE
    LEADERBOARD_TIMEZONE: str | None = None
    DAGSTER_HOME: Path = Path("data/dagster")
    # dashboard
    API_URL: str = Field("http://127.0.0.1:3000", pattern=r"^https?://[^/\s]+(/\S*)?$")  # standings are read here
    DAGSTER_URL: str = Field("http://127.0.0.1:3070", pattern=r"^https?://[^/\s]+(/\S*)?$")  # run links point here
    DASHBOARD_REFRESH_SECONDS: int = Field(30, ge=0, le=3600)  # pages re-read their data this often; 0: off
    DASHBOARD_DAYS: int = Field(14, ge=1, le=366)  # days shown by the pipeline health page
    DASHBOARD_STALE_MINUTES: int = Field(60, ge=1)  # a current period published longer ago than this shows red
    # identity service: display names of published users (docs/contracts.md#identity-service)
    IDENTITY_SERVICE_URL: str | None = None  # POST {url}/users/batch; unset: names from events only
    IDENTITY_TIMEOUT_SECONDS: float = Field(5, gt=0, le=600)  # over all batches of one publish
    IDENTITY_BATCH_SIZE: int = Field(500, ge=1, le=10_000)  # ids per request
    IDENTITY_CACHE_HOURS: float = Field(24, ge=0)  # an answer older than this is asked again; 0: always
    # settlement (docs/contracts.md#settlement)
    SETTLE_GRACE_MINUTES: int = Field(60, ge=0, le=10_080)  # an ended period stays `closing` this long at least
    SETTLEMENT_WEBHOOK_URL: str | None = Field(None, pattern=r"^https?://[^/\s]+(/\S*)?$")  # period.settled POSTs
    SETTLEMENT_WEBHOOK_SECRET: str | None = None  # HMAC-SHA256 key of X-Leaderboard-Signature
    SETTLEMENT_WEBHOOK_RETRY_SECONDS: int = Field(30, ge=1, le=3600)  # first retry delay, doubled per failure

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("REFRESH_INTERVAL_MINUTES")
    @classmethod
    def _even_ticks(cls, value: int) -> int:
        # cron restarts */N every hour (or day): N must divide it or the refreshes come unevenly
        if (value < 60 and 60 % value) or (value >= 60 and (value % 60 or 1440 % value)):
            raise ValueError(
                "must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) "
                "or be whole hours dividing a day (60, 120, 180, 240, 360, 480, 720, 1440)"
            )
        return value

    @field_validator("LEADERBOARD_LANDING_DIR", "LEADERBOARD_LAKE_DIR", mode="before")
    @classmethod
    def _folder_or_bucket(cls, value: object) -> object:
        if isinstance(value, str) and (is_s3(value) or value.lower().startswith("s3:")):
            location = parse_s3_url(value)
            check_bucket(location)  # a missing or unreachable bucket stops the process here, named
            return location
        return value

    @field_validator("LEADERBOARD_TIMEZONE")
    @classmethod
    def _iana(cls, value: str | None) -> str | None:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError("not an IANA time zone name (e.g. Europe/Paris)") from exc
        return value or None

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (e.g. postgresql://user@host:5432/db?sslmode=require)")
        return value or None

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("IDENTITY_SERVICE_URL")
    @classmethod
    def _identity_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        hint = "e.g. http://identity-service:3000 (the pipeline posts to {url}/users/batch)"
        parts = urlsplit(value)
        try:
            port = parts.port  # raises on a port that is not a number in 0-65535
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(f"the port is not a number in 1-65535; {hint}")
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError(f"must be an http:// or https:// URL with a host; {hint}")
        if parts.query or parts.fragment:
            raise ValueError(f"must have no ?query or #fragment; {hint}")
        return value

    @model_validator(mode="after")
    def _strong_secret(self) -> Settings:
        if self.JWT_SECRET and len(self.JWT_SECRET.encode()) < 32 and self.NODE_ENV != "development":
            raise ValueError("JWT_SECRET must be at least 32 bytes outside NODE_ENV=development")
        return self

    @model_validator(mode="after")
    def _signed_webhook(self) -> Settings:
        if self.SETTLEMENT_WEBHOOK_URL and not self.SETTLEMENT_WEBHOOK_SECRET:
            raise ValueError("SETTLEMENT_WEBHOOK_SECRET must be set with SETTLEMENT_WEBHOOK_URL: deliveries are signed")
        secret = (self.SETTLEMENT_WEBHOOK_SECRET or "").encode()
        if secret and len(secret) < 32 and self.NODE_ENV != "development":
            raise ValueError("SETTLEMENT_WEBHOOK_SECRET must be at least 32 bytes outside NODE_ENV=development")
        return self

    @property
    def jwt_ttl_seconds(self) -> int:
        return duration_seconds(self.JWT_EXPIRES_IN)

    @property
    def redis_url(self) -> str | None:
        """REDIS_URL, or one built from REDIS_HOST/REDIS_PORT/REDIS_PASSWORD (the seed's names)."""
        return redis_url_of(self.REDIS_URL, self.REDIS_HOST, self.REDIS_PORT, self.REDIS_PASSWORD)

    @field_validator("LEADERBOARD_BOARDS")
    @classmethod
    def _boards_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError("no such file")
        return value


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; a bad value stops with the variable and value named."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"])
            value = os.environ.get(name, err.get("input"))
            if not name:  # a whole-model rule: its message starts with the variable to fix
                name = err["msg"].removeprefix("Value error, ").split(" ", 1)[0]
                value = os.environ.get(name, overrides.get(name))
            if name in SECRETS:
                value = f"<{len(str(value or '').encode())} bytes>"  # never print a secret
            lines.append(f"  {name}={value!r}: {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return load_settings()
