"""A fork server for `leaderboard` commands: the CLI and Dagster are imported once, each command runs forked.

A fresh `leaderboard materialize` imports Dagster and Polars before any work, and the kill
test starts forty of them. Here one server process imports them, then forks a
child per command; the child runs `cli.main.main(argv)`, what the `leaderboard` script runs,
in a process of its own that a test can SIGKILL. The server reads no setting and opens no
store before forking, and Polars starts its thread pool on first use, in the child: each child
starts as a new process would, only without the imports.

Protocol, one JSON object per line: the test writes `{"argv", "env", "cwd", "log"}` to the
server's stdin; the server answers `{"started": pid}` and, when the child ends, `{"exited": pid,
"code": n | null, "signal": n | null}`. One child at a time. Closing stdin stops the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def serve(dagster_home: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    # What `leaderboard materialize` imports on its way, so the children need not (where
    # bytecode is not cached, PYTHONDONTWRITEBYTECODE, each import compiles its sources).
    import dagster
    import duckdb  # noqa: F401
    import tqdm  # noqa: F401

    import cli.main
    import pipelines.definitions
    import pipelines.runner  # noqa: F401

    # The instance the children will open (its storage classes get imported), or a default one.
    with tempfile.TemporaryDirectory() as home, dagster.DagsterInstance.from_config(dagster_home or home):
        pass

    out = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=out, flush=True)
    while line := sys.stdin.readline():
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(cli.main.main, request)
        print(json.dumps({"started": pid}), file=out, flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"exited": pid, "code": code if code >= 0 else None, "signal": -code if code < 0 else None}),
              file=out, flush=True)  # fmt: skip


def _child(main: Callable[..., object], request: dict) -> None:
    """Become the command: its own working folder, environment and output; never return."""
    code = 70
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        try:
            main(request["argv"], prog_name="leaderboard")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkServer:
    """The test's end: start commands, wait for them, every wait bounded."""

    def __init__(self, dagster_home: Path | None = None, ready_timeout: float = 120) -> None:
        """Start the server; its imports go on while the test sets up, until the first `start`.
        `dagster_home`: the instance the commands will use (the server imports what it needs)."""
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *([str(dagster_home)] if dagster_home else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self._buffer = b""  # read from the pipe, not yet a whole line
        self._pending: list[dict] = []
        self._running: int | None = None  # the child started and not yet seen to end
        self._ready_timeout: float | None = ready_timeout  # None once the server said it is ready

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> int:
        if self._ready_timeout is not None:
            self._message("ready", self._ready_timeout)
            self._ready_timeout = None
        request = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        self._running = self._message("started", 30)["started"]
        return self._running

    def exited(self, timeout: float) -> dict | None:
        """The current child's end, or None if it still runs after `timeout` seconds."""
        try:
            ended = self._message("exited", timeout)
        except TimeoutError:
            return None
        self._running = None
        return ended

    def _message(self, kind: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self._pending):
                if kind in message:
                    return self._pending.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise TimeoutError(f"no {kind!r} from the fork server within {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                raise RuntimeError(f"fork server ended (exit {self.proc.wait(5)}) while waiting for {kind!r}")
            *lines, self._buffer = (self._buffer + chunk).split(b"\n")
            self._pending.extend(json.loads(line) for line in lines)

    def close(self) -> None:
        """Stop the server, and the child it runs if the test left one (a pause would let it go on)."""
        if self._running is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._running, signal.SIGKILL)
        self._selector.close()
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else None)
