"""Pause points for the fault tests (tests/faults); nothing happens unless LEADERBOARD_FAULT_PAUSE is set.

A kill at a random wall-clock moment mostly lands wherever the process spends its time. To
kill a publish in each of its steps, the steps call `pause(point)`, and a test sets
`LEADERBOARD_FAULT_PAUSE=<point>:<n>[:<seconds>]`: every pass through a point then prints
`fault-point <point> <count> <detail>` to stderr, and the n-th pass through <point> prints
`fault-pause ...` instead and waits (default 60 s, or until `release()`) before going on, so
the test can SIGKILL the process right there, or watch who waits for whom. Points: `ingest` (a day read, not yet
installed), `copy` (a COPY under way), `swap` (the swap transaction before its COMMIT),
`redis` (staging keys written, not yet renamed), `lake` (a snapshot's temp file written, not
yet renamed).
"""

from __future__ import annotations

import os
import sys
import threading

ENV = "LEADERBOARD_FAULT_PAUSE"
_lock = threading.Lock()
_passes: dict[tuple[str, str], int] = {}  # (spec, point) -> passes while that spec was set
_released = threading.Event()


def pause(point: str, detail: str = "") -> None:
    """Report a pass through `point`, and pause at the one the environment names."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, rest = spec.partition(":")
    nth, _, seconds = rest.partition(":")
    with _lock:
        count = _passes[(spec, point)] = _passes.get((spec, point), 0) + 1
    hit = point == target and str(count) == nth
    print(f"fault-{'pause' if hit else 'point'} {point} {count} {detail}".rstrip(), file=sys.stderr, flush=True)
    if hit:
        _released.wait(float(seconds or 60))


def release() -> None:
    """End the pause under way (a test in the same process has seen what it waited for)."""
    _released.set()


def reset() -> None:
    """Forget the passes counted and any release (a test running several scenarios in one process)."""
    with _lock:
        _passes.clear()
        _released.clear()
