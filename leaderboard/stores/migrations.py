"""Schema migrations with yoyo-migrations over the plain SQL files in `sql/migrations/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "sql" / "migrations"


def yoyo_url(database_url: str) -> str:
    """yoyo names the driver in the scheme: postgresql+psycopg:// for psycopg 3."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {scheme or database_url!r}")
    return f"postgresql+psycopg://{rest}"


@dataclass(frozen=True)
class MigrationState:
    id: str
    applied: bool


def status(database_url: str) -> list[MigrationState]:
    backend = get_backend(yoyo_url(database_url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        applied = {m.id for m in migrations if backend.is_applied(m)}
    return [MigrationState(m.id, m.id in applied) for m in migrations]


def deploy(database_url: str) -> list[str]:
    """Apply pending migrations in order; returns the ids applied (none when up to date)."""
    backend = get_backend(yoyo_url(database_url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]
