"""Run the Compose stack's own commands on this machine, without Docker, in Compose's order.

    .venv/bin/python deploy/compose/run_local.py [--keep]

Reads deploy/compose/compose.yaml and, for each service built from our image, runs its `command`
through deploy/docker-entrypoint.sh with its `environment` and the Dockerfile's ENV, in the order
its `depends_on` conditions give (one-shot services to completion, the others until their own
`healthcheck` passes). What a container would have differently is mapped, and only that:

- `postgres` and `redis` are the local servers (127.0.0.1:5432 trusted user postgres, :6379): a
  fresh database and a Redis key prefix of this run's own, removed at the end unless --keep;
- volumes are folders under a temporary directory (a service without the volume gets its own);
- ports are free local ports, appended to the command (`--port N`: the last one wins) and replaced
  in the healthchecks, the gRPC workspace file and API_URL/DAGSTER_URL.

Once the code server is healthy it generates two days of sample events and materializes them in
the code server's environment (what `docker compose exec code-server leaderboard ...` does), then
checks that the webserver loaded the gRPC code location and that the API answers standings from
Redis. The last line printed is a JSON summary; the exit status is 0 when everything worked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
ADMIN_URL = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The ports our roles listen on in their containers (docker-entrypoint.sh, PORT in the Dockerfile).
CONTAINER_PORTS = {"api": 3000, "code-server": 4000, "webserver": 3070, "dashboard": 8501}
INFRA = {"postgres", "redis"}  # the local servers stand in for these
SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET", "MINIO_ROOT_PASSWORD"}


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        current = env.get(name, "")
        if op == ":-":
            return current or arg
        if op == ":?" and not current:
            raise SystemExit(f"compose.yaml needs {name}: {arg}")
        return current

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}", sub, value)


def dockerfile_env() -> dict[str, str]:
    """ENV of the Dockerfile's last stage (the runtime image)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.upper().startswith("FROM "):
            env = {}
        elif line.upper().startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, val = pair.partition("=")
                env[key] = val
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def order(services: dict[str, dict]) -> list[str]:
    """Services in an order that satisfies every depends_on (Compose starts them so)."""
    done: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in done:
            return
        if name in stack:
            raise SystemExit(f"depends_on cycle through {name}")
        for dep in services[name].get("depends_on", {}):
            visit(dep, (*stack, name))
        done.append(name)

    for name in services:
        visit(name)
    return done


class Stack:
    def __init__(self, work: Path, keep: bool) -> None:
        self.work = work
        self.keep = keep
        self.run_id = uuid.uuid4().hex[:10]
        self.database = f"lb_compose_{self.run_id}"
        self.prefix = f"lbcompose-{self.run_id}"
        self.ports = {role: free_port() for role in CONTAINER_PORTS}
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()

    # -- environment ------------------------------------------------------------------------------
    def database_url(self) -> str:
        return ADMIN_URL.rsplit("/", 1)[0] + f"/{self.database}"

    def paths(self, name: str, service: dict) -> dict[str, str]:
        """Container path -> local folder: the named volumes mounted there, or private folders."""
        mounts = {}
        for spec in service.get("volumes", []):
            source, target = spec.split(":")[:2]
            if "/" not in source:  # a named volume, not a bind mount
                mounts[target] = str(self.work / "volumes" / source)
        for target in ("/data/landing", "/data/lake", "/data/dagster"):
            mounts.setdefault(target, str(self.work / "private" / name / Path(target).name))
        for folder in mounts.values():
            Path(folder).mkdir(parents=True, exist_ok=True)
        return mounts

    def environment(self, name: str, service: dict, image_env: dict[str, str]) -> dict[str, str]:
        env = {**image_env, **{k: str(v) for k, v in (service.get("environment") or {}).items()}}
        for target, local in self.paths(name, service).items():
            env = {k: v.replace(target, local) if v.startswith(target) else v for k, v in env.items()}
        env["APP_DIR"] = str(ROOT)
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        # the local servers instead of the postgres and redis services
        env["DATABASE_URL"] = self.database_url()
        env["REDIS_HOST"] = "127.0.0.1"
        env.pop("REDIS_PASSWORD", None)  # the local Redis has none; AUTH would be refused
        env["REDIS_KEY_PREFIX"] = self.prefix
        for role, port in self.ports.items():
            for key in ("API_URL", "DAGSTER_URL"):
                if key in env:
                    env[key] = re.sub(
                        rf"//(?:{role}|localhost):{CONTAINER_PORTS[role]}\b", f"//127.0.0.1:{port}", env[key]
                    )
        env["PORT"] = str(self.ports["api"])
        for key in ("HOME", "LANG", "LC_ALL", "TMPDIR"):
            if key in os.environ:
                env.setdefault(key, os.environ[key])
        return env

    def command(self, name: str, service: dict) -> list[str]:
        cmd = list(service.get("command") or ["api"])
        if "-w" in cmd:  # the gRPC workspace, pointed at the local code server
            i = cmd.index("-w") + 1
            workspace = yaml.safe_load((ROOT / cmd[i]).read_text())
            for entry in workspace["load_from"]:
                entry["grpc_server"]["host"] = "127.0.0.1"
                entry["grpc_server"]["port"] = self.ports["code-server"]
            local = self.work / f"workspace-{name}.yaml"
            local.write_text(yaml.safe_dump(workspace))
            cmd[i] = str(local)
        if cmd[0] in self.ports:
            cmd += ["--port", str(self.ports[cmd[0]])]
        return cmd

    def healthcheck(self, service: dict) -> list[str] | None:
        test = (service.get("healthcheck") or {}).get("test")
        if not test:
            return None
        assert test[0] == "CMD", test
        args = list(test[1:])
        for role, port in self.ports.items():
            inside = str(CONTAINER_PORTS[role])
            args = [str(port) if a == inside else re.sub(rf"(?<=:){inside}\b", str(port), a) for a in args]
        return args

    # -- running ----------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        sys.stdout.write(f"[{time.monotonic() - self.t0:6.1f}s] {message}\n")  # one write: threads log too
        sys.stdout.flush()

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = (self.work / f"{name}.log").open("w")
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def tail(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def wait_healthy(self, name: str, check: list[str], env: dict[str, str], timeout: float) -> None:
        """Run the service's healthcheck until it passes. Two cores are shared by every service
        starting at once, so a check that starts Python and Dagster (seconds of CPU) waits first
        for the service's port to accept connections, and then backs off."""
        deadline = time.monotonic() + timeout
        port = self.ports.get(name)
        pause = 0.3
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            if port is not None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    time.sleep(0.3)
                    continue
            if subprocess.run(check, cwd=ROOT, env=env, capture_output=True, timeout=60).returncode == 0:
                return
            time.sleep(pause)
            pause = min(pause * 2, 3.0)
        raise SystemExit(f"{name} not healthy within {timeout:.0f} s ({shlex.join(check)}):\n{self.tail(name)}")

    def exec(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 300) -> str:
        started = time.monotonic()
        res = subprocess.run(
            [str(ENTRYPOINT), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            raise SystemExit(
                f"{name}: {shlex.join(argv)} failed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
            )
        self.timings[name] = round(time.monotonic() - started, 2)
        return res.stdout

    def up(self, services: dict[str, dict], only: set[str] | None, after_migrate=None) -> dict[str, dict[str, str]]:
        """Start every service once its depends_on conditions hold, as `docker compose up` does:
        independent services start side by side. `after_migrate(envs)` runs beside them once the
        one-shot services are done. Returns each service's environment."""
        import psycopg
        import redis

        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        redis.Redis.from_url(REDIS_URL).ping()
        self.log(f"database {self.database}, Redis prefix {self.prefix}, folders under {self.work}")
        image_env = dockerfile_env()
        names = [n for n in order(services) if n not in INFRA and (not only or n in only)]
        envs = {n: self.environment(n, services[n], image_env) for n in names}
        ready = {n: threading.Event() for n in names}  # completed (one-shot) or healthy
        errors: list[str] = []

        def run(name: str) -> None:
            service = services[name]
            try:
                for dep in service.get("depends_on") or {}:
                    if dep in INFRA:
                        continue
                    if dep not in ready:
                        raise SystemExit(f"{name} depends on {dep}, which this run skipped")
                    while not ready[dep].wait(0.2):
                        if errors:
                            return
                argv = self.command(name, service)
                started = time.monotonic()
                if service.get("restart") == "no":
                    self.log(f"{name}: {shlex.join(argv)} (one-shot)")
                    self.exec(name, argv, envs[name])
                else:
                    self.log(f"{name}: {shlex.join(argv)}")
                    self.start(name, [str(ENTRYPOINT), *argv], envs[name])
                    check = self.healthcheck(service)
                    if check:
                        self.wait_healthy(name, check, envs[name], timeout=180)
                self.timings[name] = round(time.monotonic() - started, 2)
                self.log(f"{name}: {'done' if service.get('restart') == 'no' else 'healthy'}")
                ready[name].set()
            except BaseException as exc:  # SystemExit carries the message
                errors.append(f"{name}: {exc}")

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        one_shots = [n for n in names if services[n].get("restart") == "no"]
        if after_migrate is not None:
            while not all(ready[n].is_set() for n in one_shots) and not errors:
                time.sleep(0.2)
            if not errors:
                try:
                    after_migrate(envs)
                except BaseException as exc:
                    errors.append(f"after migrations: {exc}")
        for t in threads:
            t.join()
        if errors:
            raise SystemExit("\n".join(errors))
        return envs

    def down(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            _ = name
        if self.keep:
            return
        import psycopg
        import redis

        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the database, Redis keys and folders")
    parser.add_argument("--services", help="comma-separated subset of our services (default: all)")
    args = parser.parse_args()
    # SIGTERM (a test's timeout, Ctrl-C's sibling) still stops every service and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    compose_env = {**os.environ, **{k: os.environ.get(k) or uuid.uuid4().hex * 2 for k in SECRETS}}
    compose = interpolate(yaml.safe_load(COMPOSE.read_text()), compose_env)
    services = {n: s for n, s in compose["services"].items() if not s.get("profiles")}  # default profile
    only = set(args.services.split(",")) if args.services else None

    work = Path(tempfile.mkdtemp(prefix="lb-compose-"))
    stack = Stack(work, args.keep)
    summary: dict[str, object] = {"ok": False, "work": str(work), "database": stack.database, "prefix": stack.prefix}
    from leaderboard.boards import load_boards

    tz = load_boards(ROOT / "leaderboard" / "boards.yaml").tz
    today = dt.datetime.now(tz).date()
    start = today - dt.timedelta(days=1)

    def materialize(envs: dict[str, dict[str, str]]) -> None:
        # `docker compose run --rm code-server leaderboard ...`: the code server's environment
        code_env = envs["code-server"]
        stack.log("code-server env: leaderboard generate, then leaderboard materialize")
        stack.exec("generate", ["leaderboard", "generate", "--start", str(start), "--days", "2", "--users", "200",
                                "--events-per-day", "2000", "--formats", "json,parquet"], code_env)  # fmt: skip
        out = stack.exec(
            "materialize", ["leaderboard", "materialize", "--start", str(start), "--end", str(today)], code_env
        )
        stack.log(out.strip().splitlines()[-1])

    try:
        stack.up(services, only, after_migrate=materialize)
        api = f"http://127.0.0.1:{stack.ports['api']}"
        ready = get_json(f"{api}/health/ready")
        standings = get_json(f"{api}/leaderboard/points/daily?at={start}")
        weekly = get_json(f"{api}/leaderboard/points/weekly")
        metrics = urllib.request.urlopen(f"{api}/metrics", timeout=10).read().decode()
        hits = re.search(r'^leaderboard_cache_requests_total\{result="hit"\} (\S+)', metrics, re.M)
        summary.update(ready=ready, daily_total=standings["total"], daily_top=standings["entries"][:3],
                       weekly_key=weekly["period_key"], weekly_total=weekly["total"],
                       cache_hits=float(hits[1]) if hits else 0.0)  # fmt: skip
        if "webserver" in stack.procs:
            query = {"query": "{ workspaceOrError { ... on Workspace { locationEntries { name "
                     "locationOrLoadError { __typename } } } } }"}  # fmt: skip
            req = urllib.request.Request(
                f"http://127.0.0.1:{stack.ports['webserver']}/graphql", json.dumps(query).encode(),
                {"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=30) as resp:
                entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
            summary["locations"] = {e["name"]: e["locationOrLoadError"]["__typename"] for e in entries}
        summary["timings"] = stack.timings
        locations = summary.get("locations", {"leaderboard": "RepositoryLocation"})
        loaded = locations.get("leaderboard") == "RepositoryLocation"  # type: ignore[union-attr]
        summary["ok"] = bool(ready.get("status") == "ok" and standings["total"] > 0 and loaded)
    finally:
        stack.down()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        summary["seconds"] = round(time.monotonic() - stack.t0, 1)
        print(json.dumps(summary, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
