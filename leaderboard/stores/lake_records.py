"""Board overrides and refresh requests as JSON files under the lake's `config/`.

The embedded default keeps them here so it supports the same admin routes and sensor as a
deployment with Postgres.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from leaderboard.stores.lake import Lake
from leaderboard.stores.protocols import Override


@dataclass(frozen=True)
class LakeBoardConfig:
    """BoardConfigStore as one JSON file."""

    lake: Lake

    @property
    def path(self) -> Path:
        return self.lake.folder / "config" / "boards.json"

    def load(self) -> dict[str, Override]:
        if not self.lake.pull(self.path).is_file():
            return {}
        return {b: Override(**v) for b, v in json.loads(self.path.read_text()).items()}

    def save(self, changes: dict[str, Override], by: str, reason: str = "") -> None:
        """Without Postgres there is no audit: only the file's latest state."""
        current = self.load() | changes
        self.lake.write_json(self.path, {b: asdict(o) for b, o in current.items()})


@dataclass(frozen=True)
class LakeRefreshRequests:
    """RefreshRequestStore as one JSON file per request."""

    lake: Lake

    @property
    def folder(self) -> Path:
        return self.lake.folder / "config" / "refresh_requests"

    def _all(self) -> list[tuple[Path, dict]]:
        return [(p, json.loads(p.read_text())) for p in self.lake.json_files(self.folder)]

    def request(self, by: str) -> str:
        rid = uuid.uuid4().hex
        now = dt.datetime.now(dt.UTC).isoformat()
        self.lake.write_json(
            self.folder / f"{rid}.json", {"id": rid, "requested_by": by, "requested_at": now, "status": "pending"}
        )
        return rid

    def take(self, batch: str, limit: int = 1000) -> list[str]:
        pending = [(p, r) for p, r in self._all() if r["status"] == "pending"]
        taken = sorted(pending, key=lambda p_r: p_r[1]["requested_at"])[:limit]
        for path, record in taken:
            self.lake.write_json(path, record | {"status": "running", "run_id": batch})
        return [record["id"] for _, record in taken]

    def finish(self, batch: str, run_id: str, ok: bool) -> int:
        now = dt.datetime.now(dt.UTC).isoformat()
        status, new_id = ("done", run_id) if ok else ("failed", batch)
        ended = [(p, r) for p, r in self._all() if r["status"] in ("running", "failed") and r.get("run_id") == batch]
        for path, record in ended:
            self.lake.write_json(path, record | {"status": status, "done_at": now, "run_id": new_id})
        return len(ended)

    def status(self, request_id: str) -> str | None:
        path = self.folder / f"{request_id}.json"
        return json.loads(path.read_text())["status"] if self.lake.pull(path).is_file() else None
