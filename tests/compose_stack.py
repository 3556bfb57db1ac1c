"""`docker compose up` of compose.yaml's default profile as local processes, for a test without Docker.

Each service built from our image runs its `command` through deploy/docker-entrypoint.sh with its
`environment` over the Dockerfile's ENV, once its `depends_on` conditions hold, and is up when it
exits 0 (a one-shot) or its own `healthcheck` passes within what Compose allows before calling it
unhealthy. Only what a container has differently is mapped: `postgres` and `redis` are the local
servers (a scratch database and key prefix), named volumes are folders, and each role listens on a
free port of 127.0.0.1. Any other form fails, naming the service, rather than being skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from tests.conftest import REDIS_URL, free_port, scratch_database, scratch_redis_prefix

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
STAND_INS = {"postgres", "redis"}  # the local servers
PORTS = {"api": 3000, "code-server": 4000, "webserver": 3070, "dashboard": 8501}  # as docker-entrypoint.sh
READ = {"command", "environment", "volumes", "depends_on", "healthcheck", "restart"}
IGNORED = {"image", "build", "logging", "deploy", "ports"}  # what only a Docker engine acts on
SECRET = re.compile(r"\$\{(\w+):\?[^}]*\}")  # ${VAR:?message}, the one form our services use


class ComposeError(AssertionError):
    """The stack did not come up, or compose.yaml has a form this runner would get wrong."""


def seconds(name: str, text: str) -> float:
    if not re.fullmatch(r"\d+s", text):
        raise ComposeError(f"{name}: duration {text!r} (only '<n>s' is handled)")
    return float(text[:-1])


def interpolate(name: str, spec: dict, secrets: dict[str, str]) -> dict:
    """${VAR:?message} from `secrets` (hex, so JSON-safe); any other `$` fails rather than being read wrong."""
    text = SECRET.sub(lambda m: secrets.get(m[1], m[0]), json.dumps(spec))
    if bad := re.search(r'"[^"]*\$[^"]*"', text):
        raise ComposeError(f"{name}: {bad[0]} (only ${{VAR:?message}} of {sorted(secrets)} is handled)")
    return json.loads(text)


@dataclass
class Service:
    name: str
    spec: dict
    argv: list[str]
    env: dict[str, str]
    probe: list[str] | None
    port: int | None
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0  # monotonic times, for the test's order checks
    up_at: float = 0.0
    up: threading.Event = field(default_factory=threading.Event)

    @property
    def one_shot(self) -> bool:
        return self.spec.get("restart") == "no"

    def fail(self, why: str) -> ComposeError:
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return ComposeError(f"{self.name}: {why}\n{tail}")


def service(name: str, spec: dict, image_env: dict[str, str], local: dict[str, str], ports: dict[str, int],
            work: Path) -> Service:  # fmt: skip
    """The service's argv, environment and healthcheck, with a container's names mapped here;
    `local` holds the variables that point at the local servers instead of `postgres` and `redis`."""
    if unknown := set(spec) - READ - IGNORED:
        raise ComposeError(f"{name}: keys {sorted(unknown)} are not handled here")
    mounts = {}
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not re.fullmatch(r"\w+", source):
            raise ComposeError(f"{name}: volume {volume!r} (only named volumes are handled)")
        mounts[target] = str(work / "volumes" / source)
    env = {**image_env, **{k: str(v) for k, v in (spec.get("environment") or {}).items()}, **local}
    env.pop("REDIS_PASSWORD")  # the local Redis has none, and refuses AUTH
    for key, value in env.items():
        for target, folder in mounts.items():
            value = folder + value[len(target) :] if f"{value}/".startswith(f"{target}/") else value
        if value.startswith("/data/"):  # the image's /data without a volume: the container's own
            value = str(work / "private" / name) + value[len("/data") :]
        for other, inside in PORTS.items():
            value = re.sub(rf"//(?:{other}|localhost):{inside}\b", f"//127.0.0.1:{ports[other]}", value)
        if re.search(r"//(?!127\.0\.0\.1:)[\w.-]+:\d", value) and key not in local:
            raise ComposeError(f"{name}: {key}={value!r} names a host not mapped here")
        env[key] = value
        if value.startswith(str(work)):
            Path(value).mkdir(parents=True, exist_ok=True)
    env.update(APP_DIR=str(ROOT), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.update({k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ})

    command = [str(a) for a in spec["command"]]
    if "-w" in command:  # the gRPC workspace, pointed at the local code server
        i = command.index("-w") + 1
        workspace = yaml.safe_load((ROOT / command[i]).read_text())
        for entry in workspace["load_from"]:
            entry["grpc_server"].update(host="127.0.0.1", port=ports["code-server"])
        command[i] = str(work / f"workspace-{name}.yaml")
        Path(command[i]).write_text(yaml.safe_dump(workspace))
    if name in PORTS:  # after the entrypoint's own --host and --port: the last one wins
        command += ["--host", "127.0.0.1", "--port", str(ports[name])]

    probe = None
    if test := (spec.get("healthcheck") or {}).get("test"):
        if test[0] != "CMD":
            raise ComposeError(f"{name}: healthcheck {test} (only CMD is handled)")
        probe = list(test[1:])
        for other, inside in PORTS.items():
            probe = [str(ports[other]) if a == str(inside) else re.sub(rf"(?<=:){inside}\b", str(ports[other]), a)
                     for a in probe]  # fmt: skip
    return Service(name, spec, [str(ENTRYPOINT), *command], env, probe, ports.get(name), work / f"{name}.log")


class Stack:
    """The running services: the test reads their ports and start/up times."""

    def __init__(self, services: dict[str, Service], ports: dict[str, int], timeout: float) -> None:
        self.services, self.ports = services, ports
        self.deadline = time.monotonic() + timeout
        self.errors: list[str] = []

    def stopping(self) -> bool:
        return bool(self.errors) or time.monotonic() > self.deadline

    def run(self, s: Service) -> None:
        """Start `s` once its depends_on conditions hold; then wait for its exit 0 or its healthcheck."""
        try:
            self.bring_up(s)
        except BaseException as exc:
            self.errors.append(str(exc))

    def bring_up(self, s: Service) -> None:
        for dep, rule in (s.spec.get("depends_on") or {}).items():
            other = self.services.get(dep)
            if dep in STAND_INS:
                continue
            wanted = "service_completed_successfully" if other and other.one_shot else "service_healthy"
            if other is None or (rule or {}).get("condition") != wanted or not (other.one_shot or other.probe):
                raise s.fail(f"depends_on {dep}: {rule} (this runner handles {wanted} on a service it runs)")
            while not other.up.wait(0.2):
                if self.stopping():
                    return
        with s.log.open("w") as out:
            s.proc = subprocess.Popen(s.argv, cwd=ROOT, env=s.env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        s.started = time.monotonic()
        if s.one_shot:
            while s.proc.poll() is None and not self.stopping():
                time.sleep(0.3)
            if s.proc.returncode != 0:
                raise s.fail(f"exited with {s.proc.returncode}" if s.proc.returncode is not None else "still running")
        elif s.probe:
            self.wait_healthy(s, s.spec["healthcheck"], s.probe)
        s.up_at = time.monotonic()
        s.up.set()

    def wait_healthy(self, s: Service, hc: dict, probe: list[str]) -> None:
        """Until Compose would call `s` unhealthy: start_period, then `retries` failures `interval` apart."""
        limit = s.started + seconds(s.name, hc.get("start_period", "0s"))
        limit += seconds(s.name, hc["interval"]) * hc["retries"]
        pause = 0.3
        while True:
            if s.proc is None or s.proc.poll() is not None:
                raise s.fail(f"exited with {s.proc and s.proc.returncode}")
            if self.stopping() or time.monotonic() > limit:
                raise s.fail(f"healthcheck {probe} not passing in time")
            try:  # the checks start Python and Dagster: first wait, cheaply, for the port
                if s.port is not None:
                    socket.create_connection(("127.0.0.1", s.port), timeout=0.5).close()
                timeout = seconds(s.name, hc["timeout"])
                if subprocess.run(probe, cwd=ROOT, env=s.env, capture_output=True, timeout=timeout).returncode == 0:
                    return
                pause = min(pause * 2, 3.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(pause)

    def stop(self) -> None:
        procs = [s.proc for s in reversed(self.services.values()) if s.proc is not None and s.proc.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextmanager
def compose_up(compose: dict, image_env: dict[str, str], secrets: dict[str, str], work: Path,
               timeout: float = 300) -> Iterator[Stack]:  # fmt: skip
    """Every service built from our image up (or, a one-shot, exited 0) inside the block; all
    stopped, their database and Redis keys dropped, on leaving."""
    ports = {name: free_port() for name in PORTS}
    with scratch_database() as database_url, scratch_redis_prefix() as prefix:
        redis = urlsplit(REDIS_URL)
        local = {"DATABASE_URL": database_url, "REDIS_HOST": redis.hostname or "127.0.0.1",
                 "REDIS_PORT": str(redis.port or 6379), "REDIS_KEY_PREFIX": prefix}  # fmt: skip
        services = {}
        for name, spec in compose["services"].items():
            if spec.get("profiles") or name in STAND_INS:
                continue
            if (spec.get("build") or {}).get("context") != "../..":
                raise ComposeError(f"{name}: neither our image nor a local stand-in")
            read = interpolate(name, {k: v for k, v in spec.items() if k in READ}, secrets)
            services[name] = service(name, {**spec, **read}, image_env, local, ports, work)  # `image` is never read
        stack = Stack(services, ports, timeout)
        threads = [threading.Thread(target=stack.run, args=(s,), daemon=True) for s in services.values()]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(stack.deadline - time.monotonic(), 0) + 30)
            if stack.errors or not all(s.up.is_set() for s in services.values()):
                down = [n for n, s in services.items() if not s.up.is_set()]
                raise ComposeError("\n".join(stack.errors) or f"not up within {timeout:.0f} s: {down}")
            yield stack
        finally:
            stack.stop()
