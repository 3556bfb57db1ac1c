"""`docker compose up` of compose.yaml's default profile as local processes, for a test without Docker.

Our services' own commands, environment, `depends_on` conditions and healthchecks; only what a
container has differently is mapped: `postgres` and `redis` are the local servers (a scratch database
and key prefix), named volumes are folders, each role listens on a free port of 127.0.0.1. Any other
form fails, naming the service, rather than being skipped.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
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
CHECK_TIMEOUT = 60.0
SECRET = re.compile(r"\$\{(\w+):\?[^}]*\}")  # ${VAR:?message}, the one form our services use


def seconds(text: str) -> float:
    return float(text.removesuffix("s"))  # Compose's "<n>s"; another form ("1m30s") fails here


def interpolate(name: str, spec: dict, secrets: dict[str, str]) -> dict:
    """${VAR:?message} from `secrets` (hex, so JSON-safe); any other `$` fails rather than being read wrong."""
    text = SECRET.sub(lambda m: secrets.get(m[1], m[0]), json.dumps(spec))
    if bad := re.search(r'"[^"]*\$[^"]*"', text):
        raise AssertionError(f"{name}: {bad[0]} (only ${{VAR:?message}} of {sorted(secrets)} is handled)")
    return json.loads(text)


@dataclass
class Service:
    name: str
    spec: dict
    argv: list[str]
    env: dict[str, str]
    probe: list[str] | None  # the healthcheck's command
    one_shot: bool  # restart: "no" (migrate): run to its exit
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0  # monotonic; the test checks the order with these
    up_at: float = 0.0  # 0 until it exited 0 (a one-shot) or passed its healthcheck


def service(name: str, spec: dict, image_env: dict[str, str], local: dict[str, str], ports: dict[str, int],
            work: Path) -> Service:  # fmt: skip
    """Its argv, environment and healthcheck, a container's names mapped here (`local`: the local servers')."""
    if unknown := set(spec) - READ - IGNORED:
        raise AssertionError(f"{name}: keys {sorted(unknown)} are not handled here")
    mounts = {}
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not re.fullmatch(r"\w+", source):
            raise AssertionError(f"{name}: volume {volume!r} (only named volumes are handled)")
        mounts[target] = str(work / "volumes" / source)
    env = {**image_env, **{k: str(v) for k, v in (spec.get("environment") or {}).items()}, **local}
    env.pop("REDIS_PASSWORD", None)  # the local Redis has none, and refuses AUTH
    for key, value in env.items():
        for target, folder in mounts.items():
            value = folder + value[len(target) :] if f"{value}/".startswith(f"{target}/") else value
        if value.startswith("/data/"):  # the image's /data without a volume: the container's own
            value = str(work / "private" / name) + value[len("/data") :]
        for other, inside in PORTS.items():
            value = re.sub(rf"//(?:{other}|localhost):{inside}\b", f"//127.0.0.1:{ports[other]}", value)
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
            raise AssertionError(f"{name}: healthcheck {test} (only CMD is handled)")
        probe = list(test[1:])
        if name in PORTS:  # a check asks its own container's port
            inside, port = str(PORTS[name]), str(ports[name])
            probe = [port if a == inside else re.sub(rf"(?<=:){inside}\b", port, a) for a in probe]
    argv = [str(ENTRYPOINT), *command]
    return Service(name, spec, argv, env, probe, spec.get("restart") == "no", work / f"{name}.log")


class Stack:
    """The running services: the test reads their ports and start/up times."""

    def __init__(self, services: dict[str, Service], ports: dict[str, int], timeout: float) -> None:
        self.services, self.ports, self.errors = services, ports, list[str]()
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout

    def run(self, s: Service) -> None:
        """Start `s` once its depends_on conditions hold; up when it exits 0 (a one-shot) or its
        healthcheck passes before Compose would call it unhealthy (start_period + interval x retries)."""
        try:
            for dep, rule in (s.spec.get("depends_on") or {}).items():
                other = self.services.get(dep)
                wanted = "service_completed_successfully" if other and other.one_shot else "service_healthy"
                if dep not in STAND_INS and (
                    other is None or (rule or {}).get("condition") != wanted or not (other.one_shot or other.probe)
                ):
                    raise AssertionError(f"depends_on {dep}: {rule} (handled: {wanted} on a service run here)")
                while other and not other.up_at and not self.errors and time.monotonic() < self.deadline:
                    time.sleep(0.2)
                if other and not other.up_at:
                    return
            with s.log.open("w") as out:
                s.proc = subprocess.Popen(s.argv, cwd=ROOT, env=s.env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)  # fmt: skip
            s.started = time.monotonic()
            hc = s.spec.get("healthcheck") or {"interval": "0s", "retries": 0}
            limit = s.started + seconds(hc.get("start_period", "0s")) + seconds(hc["interval"]) * hc["retries"]
            while (code := s.proc.poll()) != 0 or not s.one_shot:
                if code is not None:
                    raise AssertionError(f"exited with {code}")
                if self.errors or time.monotonic() > (limit if s.probe else self.deadline):
                    raise AssertionError(f"not up in time (healthcheck {s.probe})")
                if not s.one_shot and (not s.probe or self.healthy(s, hc)):
                    break
                time.sleep(0.3)
            s.up_at = time.monotonic()
        except Exception as exc:
            tail = s.log.read_text(errors="replace")[-3000:] if s.log.exists() else ""
            self.errors.append(f"{s.name}: {exc}\n{tail}")

    def healthy(self, s: Service, hc: dict) -> bool:
        """The healthcheck, once the port accepts. Each check starts Python (and Dagster): on shared
        cores that can outlast the `timeout` Compose gives a container with CPUs of its own, so it
        gets at least CHECK_TIMEOUT, and failed checks are spaced out."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if s.name in self.ports:
                socket.create_connection(("127.0.0.1", self.ports[s.name]), timeout=0.5).close()
            timeout = max(seconds(hc["timeout"]), CHECK_TIMEOUT)
            if subprocess.run(s.probe or [], cwd=ROOT, env=s.env, capture_output=True, timeout=timeout).returncode == 0:
                return True
            time.sleep(2)
        return False

    def stop(self) -> None:
        """Each service's whole process group (granian's workers, Dagster's runs), last started first."""
        procs = [s.proc for s in sorted(self.services.values(), key=lambda s: -s.started) if s.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
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
                raise AssertionError(f"{name}: neither our image nor a local stand-in")
            read = interpolate(name, {k: v for k, v in spec.items() if k in READ}, secrets)  # `image` is never read
            services[name] = service(name, {**spec, **read}, image_env, local, ports, work)
        stack = Stack(services, ports, timeout)
        threads = [threading.Thread(target=stack.run, args=(s,), daemon=True) for s in services.values()]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(stack.deadline - time.monotonic(), 0) + 30)
            if stack.errors or not all(s.up_at for s in services.values()):
                down = [n for n, s in services.items() if not s.up_at]
                raise AssertionError("\n".join(stack.errors) or f"not up within {timeout:.0f} s: {down}")
            yield stack
        finally:
            stack.stop()
