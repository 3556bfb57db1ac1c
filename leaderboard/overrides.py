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


QUERY = "SELECT board_id, display_limit, enabled FROM leaderboard_board_config"


def from_rows(rows: list[tuple]) -> dict[str, Override]:
    return {b: Override(limit, enabled) for b, limit, enabled in rows}


def load(lake: Lake, database_url: str | None) -> dict[str, Override]:
    if database_url:
        with pg.connect(database_url) as conn:
            return from_rows(conn.execute(QUERY).fetchall())
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
    _write_json(path, {b: asdict(o) for b, o in current.items()})


def request_refresh(lake: Lake, database_url: str | None, by: str) -> str:
    """Record a request for the pipeline to recompute current periods; returns its id."""
    if database_url:
        with pg.connect(database_url) as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO leaderboard_refresh_requests (requested_by) VALUES (%s) RETURNING id", (by,)
            ).fetchone()
        return str(row[0])  # type: ignore[index]
    rid = uuid.uuid4().hex
    folder = _requests_folder(lake)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat()
    _write_json(folder / f"{rid}.json", {"id": rid, "requested_by": by, "requested_at": now, "status": "pending"})
    return rid


def _write_json(path: Path, data: object) -> None:
    """Temp file + rename: the pipeline's sensor never reads half a request."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _requests_folder(lake: Lake) -> Path:
    return lake.root / "config" / "refresh_requests"


def _lake_requests(lake: Lake) -> list[tuple[Path, dict]]:
    """The refresh requests of the embedded default, one JSON file each."""
    folder = _requests_folder(lake)
    return [(p, json.loads(p.read_text())) for p in folder.glob("*.json")] if folder.is_dir() else []


def take_refresh_requests(lake: Lake, database_url: str | None, batch: str, limit: int = 1000) -> list[str]:
    """Mark pending refresh requests `running` under `batch` and return their ids, oldest first.

    The pipeline's sensor calls this when it asks for the run that serves them (tagged with
    the batch), so each request is answered by exactly one run; `finish_refresh_requests`
    records how that run ended.
    """
    if database_url:
        with pg.connect(database_url) as conn, conn.transaction():
            rows = conn.execute(
                "UPDATE leaderboard_refresh_requests SET status = 'running', run_id = %s WHERE id IN ("
                "  SELECT id FROM leaderboard_refresh_requests WHERE status = 'pending'"
                "  ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, requested_at",
                (batch, limit),
            ).fetchall()
        return [str(i) for i, _ in sorted(rows, key=lambda r: r[1])]
    pending = [(p, r) for p, r in _lake_requests(lake) if r["status"] == "pending"]
    taken = sorted(pending, key=lambda p_r: p_r[1]["requested_at"])[:limit]
    for path, record in taken:
        _write_json(path, record | {"status": "running", "run_id": batch})
    return [record["id"] for _, record in taken]


def finish_refresh_requests(lake: Lake, database_url: str | None, batch: str, run_id: str, ok: bool) -> int:
    """The run serving `batch` ended: its requests become `done` (with its run id) or `failed`.

    A failed batch keeps its name, so a retry of the run that succeeds still marks it done.
    """
    status = "done" if ok else "failed"
    new_id = run_id if ok else batch
    if database_url:
        with pg.connect(database_url) as conn, conn.transaction():
            cur = conn.execute(
                "UPDATE leaderboard_refresh_requests SET status = %s, done_at = now(), run_id = %s "
                "WHERE run_id = %s AND status IN ('running', 'failed')",
                (status, new_id, batch),
            )
            return cur.rowcount
    now = dt.datetime.now(dt.UTC).isoformat()
    ended = [
        (p, r) for p, r in _lake_requests(lake) if r["status"] in ("running", "failed") and r.get("run_id") == batch
    ]
    for path, record in ended:
        _write_json(path, record | {"status": status, "done_at": now, "run_id": new_id})
    return len(ended)


def refresh_request_status(lake: Lake, database_url: str | None, rid: str) -> str | None:
    if database_url:
        with pg.connect(database_url) as conn:
            row = conn.execute("SELECT status FROM leaderboard_refresh_requests WHERE id = %s", (int(rid),)).fetchone()
        return row[0] if row else None
    path = _requests_folder(lake) / f"{rid}.json"
    return json.loads(path.read_text())["status"] if path.is_file() else None
