"""The lake for an async server (the API): the same reads, off the event loop."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from leaderboard.objstore import ObjectStoreError, check_bucket
from leaderboard.standings import Snapshot
from leaderboard.stores.errors import StoreUnavailable
from leaderboard.stores.lake import Lake, LakeStandings
from leaderboard.stores.lake_records import LakeBoardConfig
from leaderboard.stores.protocols import Override, PeriodId

T = TypeVar("T")


@dataclass(frozen=True)
class AsyncLake:
    """The lake's standings and board config for an async server: file reads off the event loop.

    A lake folder that is not there (an API without the lake mounted) is a store that is down,
    not one that says "not published": reads then raise StoreUnavailable, never None.
    """

    lake: Lake

    @property
    def name(self) -> str:
        return "lake"

    def _check(self) -> None:
        if self.lake.bucket is None and not self.lake.folder.is_dir():
            raise StoreUnavailable(f"LEADERBOARD_LAKE_DIR={self.lake.root} does not exist")

    async def _read(self, read: Callable[..., T], *args: object) -> T:
        self._check()
        try:
            return await anyio.to_thread.run_sync(read, *args)
        except (OSError, ObjectStoreError) as exc:  # a bucket out of reach is a store that is down
            raise StoreUnavailable(f"lake read failed: {str(exc).splitlines()[0]}") from exc

    async def snapshot(
        self, board_id: str, period_type: str, key: str, top: int | None = None, after: int = 0
    ) -> Snapshot | None:
        return await self._read(LakeStandings(self.lake).snapshot, board_id, period_type, key, top, after)

    async def around(self, board_id: str, period_type: str, key: str, user_id: str, k: int) -> Snapshot | None:
        return await self._read(LakeStandings(self.lake).around, board_id, period_type, key, user_id, k)

    async def users(self, board_id: str, period_type: str, key: str, user_ids: list[str]) -> Snapshot | None:
        return await self._read(LakeStandings(self.lake).users, board_id, period_type, key, user_ids)

    async def published_keys(self, board_id: str, period_type: str) -> list[str]:
        return await self._read(self.lake.published_keys, board_id, period_type)

    async def published_at(self, periods: list[PeriodId]) -> dict[PeriodId, dt.datetime]:
        """When each period was last published, from the snapshot headers (footers only, no rows).

        A caller's timeout abandons the file reads rather than waiting for them to return."""
        return await anyio.to_thread.run_sync(LakeStandings(self.lake).published_at, periods, abandon_on_cancel=True)

    async def load(self) -> dict[str, Override]:
        return await anyio.to_thread.run_sync(LakeBoardConfig(self.lake).load)

    async def ping(self) -> None:
        if self.lake.bucket is not None:
            await anyio.to_thread.run_sync(check_bucket, self.lake.bucket, abandon_on_cancel=True)
        elif not self.lake.folder.is_dir():
            raise FileNotFoundError(f"LEADERBOARD_LAKE_DIR={self.lake.root} does not exist")
