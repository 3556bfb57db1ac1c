"""Board overrides set by admins (display limit, enabled) and refresh requests.

Stored in Postgres when DATABASE_URL is set, else as files under the lake (`config/`), so
the embedded default supports the same admin routes. Both sides of the API and the
pipeline read them here.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from leaderboard import pg
from leaderboard.lake import Lake


@dataclass(frozen=True)
class Override:
    display_limit: int | None = None
    enabled: bool = True


def _file(lake: Lake) -> Path:
    return lake.root / "config" / "boards.json"


def load(lake: Lake, database_url: str | None) -> dict[str, Override]:
    if database_url:
        with pg.connect(database_url) as conn:
            rows = conn.execute("SELECT board_id, display_limit, enabled FROM leaderboard_board_config").fetchall()
        return {b: Override(limit, enabled) for b, limit, enabled in rows}
    path = _file(lake)
    if not path.is_file():
        return {}
    return {b: Override(**v) for b, v in json.loads(path.read_text()).items()}


def save(lake: Lake, database_url: str | None, changes: dict[str, Override], by: str) -> None:
    if database_url:
        with pg.connect(database_url) as conn, conn.transaction():
            for board_id, o in changes.items():
                conn.execute(
                    "INSERT INTO leaderboard_board_config (board_id, display_limit, enabled, updated_at, updated_by) "
                    "VALUES (%s, %s, %s, now(), %s) ON CONFLICT (board_id) DO UPDATE SET "
                    "display_limit = EXCLUDED.display_limit, enabled = EXCLUDED.enabled, updated_at = now(), "
                    "updated_by = EXCLUDED.updated_by",
                    (board_id, o.display_limit, o.enabled, by),
                )
        return
    current = load(lake, None) | changes
    path = _file(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps({b: asdict(o) for b, o in current.items()}, indent=2))
    tmp.replace(path)


def request_refresh(lake: Lake, database_url: str | None, by: str) -> str:
    """Record a request for the pipeline to recompute current periods; returns its id."""
    if database_url:
        with pg.connect(database_url) as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO leaderboard_refresh_requests (requested_by) VALUES (%s) RETURNING id", (by,)
            ).fetchone()
        return str(row[0])  # type: ignore[index]
    rid = uuid.uuid4().hex
    folder = lake.root / "config" / "refresh_requests"
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat()
    (folder / f"{rid}.json").write_text(
        json.dumps({"id": rid, "requested_by": by, "requested_at": now, "status": "pending"})
    )
    return rid
