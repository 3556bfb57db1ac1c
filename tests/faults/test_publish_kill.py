"""`leaderboard materialize` killed with SIGKILL while it publishes, then run again.

Two versions of the landed events (A and B) are published once each, in full, to take the
reference fingerprints of every period in every store. Then each round points the landing
zone at the other version, starts `leaderboard materialize` with a pause point armed
(`leaderboard.faults`: phase and which pass through it, both drawn from a seeded random
generator) and SIGKILLs it there. Every period in every store must then be wholly the old or
wholly the new standings; the next run must complete, leave nothing behind and make the three
stores agree row for row on the new version. The commands run forked from one process that
has imported the CLI and Dagster once (`cli_forkserver`); each is `leaderboard materialize` in a
process of its own, killed by pid.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leaderboard.boards import load_boards
from leaderboard.faults import ENV as PAUSE_ENV
from leaderboard.periods import Period, period_of
from leaderboard.stores.lake import Lake
from tests.conftest import REDIS_URL, event, land, scratch_database, scratch_redis_prefix
from tests.faults.cli_forkserver import ForkServer
from tests.faults.publish_stores import STORES, Published, assert_consistent, fingerprints, leftovers

SEED = 16
KILLS = 20
PHASES = ("ingest", "copy", "swap", "redis", "lake")
# Leaves in two month partitions (a day's goes by the month of its end: March 31st's is April's).
FIRST, DAYS = dt.date(2026, 3, 30), 3
LAST = FIRST + dt.timedelta(days=DAYS - 1)
# Daily and all-time only: each period type is one more Dagster run per materialize, forty times over.
# All-time is the hot period here (a users hash in Redis, the `current` key).
BOARDS = """\
timezone: UTC
start_date: 2026-03-01
boards:
  - {id: points, title: Points, event_types: [score.earned], aggregate: sum, periods: [daily, all_time]}
  - {id: high_score, title: Best game, event_types: [game.finished], aggregate: max, display_limit: 20,
     periods: [daily, all_time]}
"""
HOURS, EVENTS_PER_HOUR, USERS = (3, 9, 15, 21), 250, 60  # a few thousand events in a dozen files
RUN_SECONDS = 120  # bounds a hang only


# The instance keeps its event log in memory and captures no step output (no log-tailing
# processes per step): forty runs' bookkeeping is kept small, and the instance is not what is
# tested here. (Both classes are Dagster's own, as its instance settings name them.)
DAGSTER_YAML = """\
event_log_storage:
  module: dagster._core.storage.event_log
  class: InMemoryEventLogStorage
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
telemetry:
  enabled: false
"""


@pytest.fixture
def dagster_home() -> Iterator[Path]:
    """DAGSTER_HOME on tmpfs when there is one: the run records' SQLite would wait on the disk."""
    shm = Path("/dev/shm")
    home = Path(tempfile.mkdtemp(prefix="lb-kill-dagster-", dir=shm if shm.is_dir() else None))
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def forkserver(dagster_home: Path) -> Iterator[ForkServer]:
    server = ForkServer(dagster_home)
    try:
        yield server
    finally:
        server.close()


def land_version(landing: Path, seed: int) -> None:
    """One version of the landed events: the same days and files, other users and values."""
    rng = random.Random(seed)
    for day in (FIRST + dt.timedelta(days=i) for i in range(DAYS)):
        for h in HOURS:
            hour = dt.datetime.combine(day, dt.time(h), dt.UTC)
            records = [
                event(f"{seed}-{day}-{h}-{j}", f"u{rng.randrange(USERS):02d}",
                      (hour + dt.timedelta(seconds=rng.randrange(3600))).isoformat().replace("+00:00", "Z"),
                      value=rng.randint(1, 500), event_type=rng.choice(("score.earned", "game.finished")))
                for j in range(EVENTS_PER_HOUR)
            ]  # fmt: skip
            land(landing, "game-events", hour, f"game-events+0+{day:%m%d}{h:02d}.json", records)


# What `leaderboard.faults.pause` prints; progress bars share the line, so it is found anywhere in one.
MARKER = re.compile(r"fault-(point|pause) (\w+) (\d+) ?(.*)")


def wait_for_pause(log: Path, server: ForkServer, timeout: float) -> tuple[str, int, str]:
    """(point, pass, detail) of the pause the command reached; fails if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = next(
            (m for m in MARKER.finditer(text) if m[1] == "pause" and text[m.end() : m.end() + 1] == "\n"), None
        )
        if found:
            return found[2], int(found[3]), found[4].strip()
        ended = server.exited(0.01)
        if ended:
            raise AssertionError(f"the command ended ({ended}) before its pause:\n{text[-3000:]}")
    raise AssertionError(f"no pause within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def test_kill_9_during_publish_leaves_old_or_new_and_the_next_run_repairs(tmp_path, dagster_home, forkserver):
    t_start = time.perf_counter()
    boards_file = tmp_path / "boards.yaml"
    boards_file.write_text(BOARDS)
    boards = load_boards(boards_file)
    landings = {v: tmp_path / f"landing-{v}" for v in "AB"}
    for seed, version in enumerate("AB", start=1):
        land_version(landings[version], seed)
    periods: list[Period] = [period_of("daily", FIRST + dt.timedelta(days=i)) for i in range(DAYS)]
    periods.append(period_of("all_time", LAST, boards.start_date))
    today = dt.datetime.now(boards.tz).date()

    with scratch_database(migrated=True) as url, scratch_redis_prefix() as prefix:
        target = Published(url, REDIS_URL, prefix, Lake(tmp_path / "lake"), boards)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LEADERBOARD_", "DATABASE_", "REDIS_"))}
        base |= {"DATABASE_URL": url, "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, "DAGSTER_HOME": str(dagster_home),
                 "LEADERBOARD_BOARDS": str(boards_file), "LEADERBOARD_LAKE_DIR": str(target.lake.root)}  # fmt: skip
        argv = ["materialize", "--start", str(FIRST), "--end", str(LAST)]
        runs = iter(range(1_000))

        def start(version: str, pause: str | None) -> tuple[int, Path]:
            env = base | {"LEADERBOARD_LANDING_DIR": str(landings[version])} | ({PAUSE_ENV: pause} if pause else {})
            log = tmp_path / f"run-{next(runs):03d}.log"
            return forkserver.start(argv, env, tmp_path, log), log

        def complete(version: str, pause: str | None = None) -> tuple[float, Path]:
            t0 = time.perf_counter()
            _, log = start(version, pause)
            ended = forkserver.exited(RUN_SECONDS)
            assert ended and ended["code"] == 0, f"{ended}:\n{log.read_text(errors='replace')[-3000:]}"
            return time.perf_counter() - t0, log

        # The reference standings of each version, published in full; B's run counts the pause points.
        seconds_a, _ = complete("A")
        assert_consistent(target, periods, today)
        reference = {"A": fingerprints(target, periods)}
        seconds_b, traced = complete("B", pause="none:0")
        assert_consistent(target, periods, today)
        reference["B"] = fingerprints(target, periods)
        assert None not in reference["A"].values() and None not in reference["B"].values()
        same = [k for k in reference["A"] if reference["A"][k] == reference["B"][k]]
        assert not same, f"versions A and B must differ in every period of every store: {same}"
        passes = collections.Counter(m[2] for m in MARKER.finditer(traced.read_text()))
        assert set(PHASES) <= set(passes), passes
        print(f"\nreference runs: A {seconds_a:.1f}s, B {seconds_b:.1f}s; pause points per run: {dict(passes)}")

        lake_prefix = f"{target.lake.root}/"
        rng = random.Random(SEED)
        plan = [phase for phase in PHASES for _ in range(KILLS // len(PHASES))]
        rng.shuffle(plan)
        landed: collections.Counter[str] = collections.Counter()
        current = "B"
        for i, phase in enumerate(plan, start=1):
            old, new = current, "A" if current == "B" else "B"
            nth = rng.randint(1, passes[phase])
            t0 = time.perf_counter()
            pid, log = start(new, f"{phase}:{nth}")
            point, count, detail = wait_for_pause(log, forkserver, RUN_SECONDS)
            assert (point, count) == (phase, nth)
            os.kill(pid, signal.SIGKILL)
            ended = forkserver.exited(30)
            assert ended and ended["signal"] == signal.SIGKILL, ended
            kill_seconds = time.perf_counter() - t0
            landed[phase] += 1

            now = fingerprints(target, periods)
            mixed = {k: v for k, v in now.items() if v not in (reference[old][k], reference[new][k])}
            assert not mixed, f"kill {i} at {phase} {nth} {detail}: neither old nor new standings in {sorted(mixed)}"
            already = collections.Counter(k[0] for k, v in now.items() if v == reference[new][k])
            left = {k: len(v) for k, v in leftovers(target).items() if v}

            recovery_seconds, _ = complete(new)
            assert fingerprints(target, periods) == reference[new], f"kill {i}: the next run did not publish {new}"
            assert_consistent(target, periods, today)
            current = new
            print(f"kill {i:2d} {phase:6} pass {nth:2d}/{passes[phase]:<2d} at {detail.removeprefix(lake_prefix):45} "
                  f"killed after {kill_seconds:4.1f}s; new then: " + ", ".join(f"{s} {already[s]}/{len(now) // 3}" for s in STORES)
                  + f"; left behind: {left or 'nothing'}; next run {recovery_seconds:4.1f}s")  # fmt: skip
        print(
            f"kills per phase: {dict(landed)}; {time.perf_counter() - t_start:.0f}s in all, "
            f"load average {os.getloadavg()[0]:.1f} (2 cores)"
        )
        assert set(landed) == set(PHASES) and min(landed.values()) >= 1
