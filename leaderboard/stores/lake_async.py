"""The lake for an async server (the API): the same reads, off the event loop."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from leaderboard.standings import Snapshot
from leaderboard.stores.lake import Lake, LakeStandings
from leaderboard.stores.lake_records import LakeBoardConfig
from leaderboard.stores.protocols import Override


@dataclass(frozen=True)
class AsyncLake:
    """The lake's standings and board config for an async server: file reads off the event loop."""

    lake: Lake

    async def snapshot(self, board_id: str, period_type: str, key: str, top: int | None = None) -> Snapshot | None:
        return await anyio.to_thread.run_sync(LakeStandings(self.lake).snapshot, board_id, period_type, key, top)

    async def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None:
        return await anyio.to_thread.run_sync(LakeStandings(self.lake).around, board_id, period_type, key, user_id, k)

    async def published_keys(self, board_id: str, period_type: str) -> list[str]:
        return self.lake.published_keys(board_id, period_type)

    async def load(self) -> dict[str, Override]:
        return await anyio.to_thread.run_sync(LakeBoardConfig(self.lake).load)

    async def ping(self) -> None:
        if not self.lake.root.is_dir():
            raise FileNotFoundError(f"LEADERBOARD_LAKE_DIR={self.lake.root} does not exist")
