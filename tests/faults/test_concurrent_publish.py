"""Two publishes at once, in threads calling `publish_period` against the real Postgres, Redis and lake.

Of the same period, one waits for the other (the period's advisory lock), and the stores end
up exactly as after a single publish of the one that went last. Of two different periods,
neither waits for the other. `leaderboard.faults` pauses the first publisher at each step of
its publish, so the second one meets it there and not only wherever timing puts it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import psycopg
import pytest
import redis

from leaderboard import faults
from leaderboard.boards import BoardSet, load_boards
from leaderboard.periods import Period, period_of
from leaderboard.stores import Stores
from leaderboard.stores.lake import Lake
from leaderboard.stores.postgres_publish import RANKING_COLUMNS
from pipelines.steps import publish_period
from tests.conftest import REDIS_URL, scratch_database, scratch_redis_prefix
from tests.faults.publish_stores import Published, assert_consistent

BOARDS = """\
timezone: UTC
start_date: 2026-01-01
boards:
  - {id: points, title: Points, event_types: [score.earned], aggregate: sum}
  - {id: high_score, title: Best game, event_types: [game.finished], aggregate: max, display_limit: 20}
"""
PERIOD = period_of("daily", dt.date(2026, 5, 1))
NEIGHBOUR = period_of("daily", dt.date(2026, 4, 30))  # in PERIOD's month partition (a leaf goes by its end's month)
OTHER_MONTH = period_of("daily", dt.date(2026, 4, 28))  # in April's
NOW = dt.datetime(2026, 5, 2, 0, 30, tzinfo=dt.UTC)  # all final; PERIOD and NEIGHBOUR hot (users hashes)
POINTS = ("copy", "swap", "redis", "lake")
PAUSE_SECONDS = 30  # the first publisher's pause, unless released once the test has seen the second
WAIT_SECONDS = 10  # for what the test waits to see; bounds a hang
JOIN_SECONDS = 60


class Publisher(threading.Thread):
    """One `publish_period` in a thread; its error, if any, is raised by `finish`."""

    def __init__(self, publish: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._publish, self.error, self.seconds = publish, None, 0.0

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self._publish()
        except BaseException as exc:
            self.error = exc
        self.seconds = time.perf_counter() - t0

    def finish(self, timeout: float = JOIN_SECONDS) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"publish still running after {timeout}s"
        if self.error is not None:
            raise self.error


def _table(boards: BoardSet, users: int, salt: int) -> pl.DataFrame:
    """Standings of every board: `users` ranked users, scores varied by `salt`."""
    at = dt.datetime(2026, 4, 30, 12, tzinfo=dt.UTC)
    frames = []
    for b, board in enumerate(boards.boards):
        scores = [float((i * 7919 + salt * 31 + b) % 100_003) for i in range(users)]
        frame = pl.DataFrame(
            {"board_id": board.id, "user_id": [f"u{i:05d}" for i in range(users)], "score": scores,
             "event_count": [1 + i % 9 for i in range(users)], "reached_at": at},
        ).sort("score", "user_id", descending=[True, False])  # fmt: skip
        frames.append(frame.with_columns(
            rank=pl.int_range(1, users + 1, dtype=pl.Int64),
            previous_rank=pl.lit(None, pl.Int64),
            rank_change=pl.lit(None, pl.Int64),
        ))  # fmt: skip
    return pl.concat(frames)


@pytest.fixture
def boards(tmp_path: Path) -> BoardSet:
    path = tmp_path / "boards.yaml"
    path.write_text(BOARDS)
    return load_boards(path)


@pytest.fixture
def target(tmp_path: Path, boards: BoardSet) -> Iterator[Published]:
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix:
        yield Published(url, REDIS_URL, prefix, Lake(tmp_path / "lake"), boards)


@pytest.fixture
def reference(tmp_path: Path, boards: BoardSet) -> Iterator[Published]:
    """Stores of their own, where a single publish shows what the two must amount to."""
    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix:
        yield Published(url, REDIS_URL, prefix, Lake(tmp_path / "reference-lake"), boards)


def _stores(p: Published) -> Stores:
    return Stores(p.lake, p.database_url, p.redis_url, p.prefix)


def _publish(p: Published, period: Period, table: pl.DataFrame, run_id: str, now: dt.datetime) -> Callable[[], object]:
    return lambda: publish_period(p.lake, p.boards, period, table, run_id, _stores(p), now)


def _contents(p: Published, period: Period) -> dict[str, object]:
    """Everything the stores hold of `period`, but the Redis prefix and the lake's folder."""
    with psycopg.connect(p.database_url) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(RANKING_COLUMNS)} FROM leaderboard_rankings WHERE period_type = %s "
            "AND period_key = %s ORDER BY board_id, rank",
            (period.type, period.key),
        ).fetchall()
        registry = conn.execute(
            "SELECT * FROM leaderboard_periods WHERE period_type = %s AND period_key = %s ORDER BY board_id",
            (period.type, period.key),
        ).fetchall()
    client = redis.Redis.from_url(p.redis_url)
    try:
        cached = {}
        for board in p.boards.with_period(period.type):
            keys = p.keys()
            name = keys.rankings(board.id, period.type, period.key)
            cached[board.id] = (client.get(name), client.hgetall(keys.users(board.id, period.type, period.key)),
                                client.get(keys.current(board.id, period.type)))  # fmt: skip
    finally:
        client.close()
    files = {
        b.id: p.lake.snapshot(b.id, period.type, period.key).read_bytes() for b in p.boards.with_period(period.type)
    }
    return {"postgres rows": rows, "registry": registry, "redis": cached, "lake files": files}


def _waiting_for_advisory_lock(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()[0]  # type: ignore[index]


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.01)


def _paused(capsys: pytest.CaptureFixture[str], point: str, publisher: Publisher) -> Callable[[], bool]:
    """Has the publisher printed its pause at `point` yet? (It must still run.)"""
    seen: list[str] = []

    def check() -> bool:
        seen.append(capsys.readouterr().err)
        if f"fault-pause {point} 1" in "".join(seen):
            return True
        if not publisher.is_alive():
            raise AssertionError(f"the publish ended without pausing at {point}") from publisher.error
        return False

    return check


def _pause_first(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """The first pass through `point` from now on waits for `faults.release()` (or PAUSE_SECONDS)."""
    faults.reset()
    monkeypatch.setenv(faults.ENV, f"{point}:1:{PAUSE_SECONDS}")


def test_two_publishes_of_a_period_started_together_equal_a_single_publish(target, reference, boards):
    table = _table(boards, 3000, salt=1)
    publish_period(target.lake, boards, PERIOD, _table(boards, 2000, salt=0), "before", _stores(target), NOW)
    barrier = threading.Barrier(2)
    first, second = (
        Publisher(lambda run_id=run_id, now=now: (barrier.wait(10), _publish(target, PERIOD, table, run_id, now)()))
        for run_id, now in (("one", NOW), ("two", NOW + dt.timedelta(seconds=1)))
    )
    for publisher in (first, second):
        publisher.start()
    for publisher in (first, second):
        publisher.finish()
    assert_consistent(target, [PERIOD], NOW.date())
    with psycopg.connect(target.database_url) as conn:
        winners = conn.execute("SELECT DISTINCT run_id FROM leaderboard_periods").fetchall()
    assert winners in ([("one",)], [("two",)]), winners
    winner = winners[0][0]
    _publish(reference, PERIOD, table, winner, NOW if winner == "one" else NOW + dt.timedelta(seconds=1))()
    assert _contents(target, PERIOD) == _contents(reference, PERIOD)
    print(f"\nstarted together: {first.seconds:.2f}s and {second.seconds:.2f}s, {winner!r} published last")


def test_a_second_publish_of_the_period_waits_for_the_first(target, reference, boards, monkeypatch, capsys):
    publish_period(target.lake, boards, PERIOD, _table(boards, 2000, salt=0), "before", _stores(target), NOW)
    report = []  # printed at the end: capsys, read for the pause markers, would swallow it
    for i, point in enumerate(POINTS):
        table = _table(boards, 3000, salt=10 + i)
        first_at, second_at = NOW + dt.timedelta(seconds=2 * i), NOW + dt.timedelta(seconds=2 * i + 1)
        _pause_first(monkeypatch, point)
        first = Publisher(_publish(target, PERIOD, table, f"first-{point}", first_at))
        first.start()
        _wait_until(_paused(capsys, point, first), WAIT_SECONDS, f"the first publish pauses at {point}")
        second = Publisher(_publish(target, PERIOD, table, f"second-{point}", second_at))
        second.start()
        try:  # while the first is held at `point`, the second waits for the period's lock
            _wait_until(lambda: _waiting_for_advisory_lock(target.database_url) == 1, WAIT_SECONDS,
                        f"the second publish waits for the lock while the first is paused at {point}")  # fmt: skip
            assert first.is_alive() and second.is_alive()
        finally:
            faults.release()
        first.finish()
        second.finish()
        assert_consistent(target, [PERIOD], NOW.date())
        _publish(reference, PERIOD, table, f"second-{point}", second_at)()
        assert _contents(target, PERIOD) == _contents(reference, PERIOD), f"paused at {point}"
        report.append(f"paused at {point}: first {first.seconds:.2f}s, second {second.seconds:.2f}s (waited)")
    print("\n" + "\n".join(report))


def test_publishes_of_two_periods_do_not_wait_for_each_other(target, boards, monkeypatch, capsys):
    """Paused in its swap transaction, a publish holds its month partition (DETACH locks it), so
    there the other period is of another month; swaps within a month take turns, for as long as
    a swap transaction lasts."""
    for period in (PERIOD, NEIGHBOUR, OTHER_MONTH):  # all published before, so the swaps replace a leaf
        publish_period(target.lake, boards, period, _table(boards, 2000, salt=0), "before", _stores(target), NOW)
    report = []
    for i, point in enumerate(POINTS):
        other = OTHER_MONTH if point == "swap" else NEIGHBOUR
        _pause_first(monkeypatch, point)
        first = Publisher(_publish(target, PERIOD, _table(boards, 3000, salt=20 + i), f"first-{point}", NOW))
        first.start()
        _wait_until(_paused(capsys, point, first), WAIT_SECONDS, f"the first publish pauses at {point}")
        second = Publisher(_publish(target, other, _table(boards, 3000, salt=30 + i), f"second-{point}", NOW))
        second.start()
        try:
            second.finish(timeout=WAIT_SECONDS)  # done while the first is still paused
            assert first.is_alive(), "the first publish ended before the second: the pause did not hold it"
        finally:
            faults.release()
        first.finish()
        assert_consistent(target, [PERIOD, other], NOW.date())
        report.append(f"{other.key} published in {second.seconds:.2f}s while {PERIOD.key} was paused at {point}")
    print("\n" + "\n".join(report))
