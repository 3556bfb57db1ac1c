"""deploy/: what can be checked without a Docker engine or a cluster (issue 7).

The image's build steps are replayed into a scratch environment and every role's command is run
from it; manifests are validated offline against the Kubernetes schemas (kubernetes-validate) and
the compose-spec schema; the settings, routes, ports, metric names and landing layout they name
are compared with the code's; and the Compose services' own commands are run on this machine
against the local Postgres and Redis (tests/compose_stack.py).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml

from leaderboard.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("staging", "production")
K8S_VERSION = "1.30"  # the oldest cluster we claim: the preStop sleep action is on by default from 1.30
BIN = Path(sys.executable).parent
SETTINGS = set(Settings.model_fields)
# Variables the image sets that are not settings: the interpreter's and the entrypoint's own.
IMAGE_ONLY_ENV = {"PATH", "APP_DIR", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr, args in dockerfile():
        if instr == "FROM":
            result.append([])
        if result:
            result[-1].append((instr, args))
    return result


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in stages()[-1]:
        if instr == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


# ---------------------------------------------------------------- Dockerfile and image ----------


def test_dockerfile_passes_hadolint():
    files = [ROOT / "Dockerfile", DEPLOY / "kafka-connect" / "Dockerfile"]
    res = subprocess.run([str(BIN / "hadolint"), *map(str, files)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_contract():
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2, "multi-stage: the runtime image has no uv and no build cache"
    syncs = [a for i, a in build if i == "RUN" and "uv sync" in a]
    assert syncs and all("--frozen" in a and "--no-dev" in a for a in syncs), "locked (uv.lock), no dev tools"
    instr = dict((i, a) for i, a in runtime)
    assert instr["USER"].split(":")[0] == "1001"
    assert instr["EXPOSE"] == "3000" == image_env()["PORT"] == str(Settings.model_fields["PORT"].default)
    assert "/health" in instr["HEALTHCHECK"]
    # the HEALTHCHECK's Python is valid and asks the route the API serves
    probe = json.loads(instr["HEALTHCHECK"].split("CMD", 1)[1])
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], "HEALTHCHECK", "exec")
    assert json.loads(instr["ENTRYPOINT"]) == ["/app/deploy/docker-entrypoint.sh"]
    assert json.loads(instr["CMD"]) == ["api"]
    for key in image_env():
        assert key in SETTINGS | IMAGE_ONLY_ENV, f"Dockerfile ENV {key} is not a setting"


def test_dockerignore_keeps_what_the_image_copies():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignored = [p for p in ignored if p and not p.startswith("#")]
    for line in (".git", ".venv", "**/.env", "data", "tests"):
        assert line in ignored
    for instr, args in stages()[0]:
        if instr == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such path"
                top = src.split("/")[0]
                assert top not in ignored and src not in ignored, f"COPY {src} is excluded by .dockerignore"


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv: scripts/bootstrap installs it into .tools/"
    return found


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's build stage replayed in a folder: its COPY lines, then its `uv sync`s
    (from uv's cache, as the image's cache mount), giving /app with its .venv."""
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(app / ".venv"), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    for instr, args in stages()[0]:
        if instr == "COPY" and not args.startswith("--from"):
            *sources, dest = shlex.split(args)
            target = app / dest.removeprefix("./")
            for src in sources:
                path = ROOT / src
                if path.is_dir():
                    shutil.copytree(path, target / path.name if dest.endswith("/") and dest != "./" else target,
                                    dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
                else:
                    (target if dest.endswith("/") else target.parent).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name if dest.endswith("/") else target)
        elif instr == "RUN" and "uv sync" in args:
            cmd = [_uv(), *shlex.split(args.split("uv sync", 1)[1])]
            res = subprocess.run([cmd[0], "sync", "-q", *cmd[1:]], cwd=app, env=env, capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
    return app


def _role(image: Path, *argv: str, **extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{image / '.venv' / 'bin'}:/usr/bin:/bin",
        "APP_DIR": str(image),
        "HOME": str(image.parent),
        **{k: v.replace("/data/", f"{image.parent}/data/") for k, v in image_env().items() if k != "PATH"},
        **extra,
    }
    env["APP_DIR"] = str(image)
    return subprocess.run([str(image / "deploy" / "docker-entrypoint.sh"), *argv], cwd=image, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_every_role_of_the_image_has_its_command(image: Path):
    """Each role starts the program it names (its --help answers) from the image's environment."""
    assert not (image / ".venv" / "bin" / "pytest").exists(), "dev tools stay out of the image"
    expected = {
        "api": "Serve the HTTP API",
        "code-server": "Serve the Dagster inter-process API over GRPC",
        "webserver": "dagster-webserver",
        "daemon": "Run any daemons configured on the DagsterInstance",
        "dashboard": "Serve the Streamlit dashboard",
    }
    for role, text in expected.items():
        res = _role(image, role, "--help")
        assert res.returncode == 0 and text in res.stdout, f"{role}: {res.stdout[-500:]}{res.stderr[-2000:]}"
    # migrate runs two commands; both exist
    for argv in (["leaderboard", "migrate", "deploy", "--help"], ["dagster", "instance", "migrate", "--help"]):
        res = _role(image, *argv)
        assert res.returncode == 0, res.stderr
    # any other command passes through (the Helm chart's `dagster api grpc`, a run pod's execute_run)
    res = _role(image, "python", "-c", "import dagster_k8s, dagster_postgres, psycopg2; print('ok')")
    assert res.stdout.strip() == "ok", res.stderr


def test_entrypoint_writes_the_instance_config(image: Path, tmp_path: Path):
    home = tmp_path / "dagster"
    _role(image, "dashboard", "--help", DAGSTER_HOME=str(home), DATABASE_URL="postgresql://u@h:5432/d")
    assert (home / "dagster.yaml").read_text() == (DEPLOY / "dagster.yaml").read_text()
    _role(image, "dashboard", "--help", DAGSTER_HOME=str(home))  # no Postgres: Dagster's SQLite defaults
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == {"telemetry": {"enabled": False}}


# ---------------------------------------------------------------- Dagster files ------------------


def test_workspaces_and_instance_config_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.workspace.config_schema import ensure_workspace_config

    for path in (ROOT / "workspace.yaml", DEPLOY / "compose" / "workspace.yaml"):
        ensure_workspace_config(yaml.safe_load(path.read_text()), str(path.parent))
    grpc = yaml.safe_load((DEPLOY / "compose" / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    module = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert grpc["location_name"] == module["location_name"], "one code location, whichever way it is loaded"
    assert (grpc["host"], grpc["port"]) == ("code-server", 4000)
    entrypoint = (DEPLOY / "docker-entrypoint.sh").read_text()
    assert f"--port {grpc['port']} --module-name {module['module_name']}" in entrypoint
    assert f"--location-name {module['location_name']}" in entrypoint

    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DATABASE_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


# ---------------------------------------------------------------- Compose ------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


def kafka_overlay() -> dict:
    """deploy/compose/kafka.yaml, laid over compose.yaml: Kafka, the S3 sink, MinIO, and the
    pipeline pointed at the sink's bucket."""
    return yaml.safe_load((DEPLOY / "compose" / "kafka.yaml").read_text())


def our_services() -> dict[str, dict]:
    return {n: s for n, s in compose()["services"].items() if "build" in s and s["build"]["context"] == "../.."}


def test_compose_validates_against_the_compose_spec():
    files = [str(DEPLOY / "compose" / name) for name in ("compose.yaml", "kafka.yaml")]
    res = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_stack_shape():
    services = compose()["services"]
    assert set(our_services()) == {"migrate", "code-server", "webserver", "daemon", "api", "dashboard"}
    for name, svc in services.items():
        assert svc["logging"]["options"] == {"max-size": "10m", "max-file": "3"}, name
        assert svc["deploy"]["resources"]["limits"], name
        if svc.get("restart") != "no":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    migrate = services["migrate"]
    assert migrate["restart"] == "no" and migrate["command"] == ["migrate"]
    for name in ("code-server", "api"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert all(not s.get("profiles") for s in services.values())
    # kafka.yaml adds the sink's path; the pipeline reads MinIO in place (no copy into a volume)
    overlay = kafka_overlay()["services"]
    assert {"kafka", "kafka-connect", "minio", "minio-init"} <= set(overlay)
    for name, svc in overlay.items():
        if name in services:  # only pointed at the bucket, after the bucket exists
            assert set(svc) == {"environment", "depends_on"}, name
            assert svc["environment"]["LEADERBOARD_LANDING_DIR"] == "s3://landing", name
            assert svc["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000", name
            assert svc["depends_on"] == {"minio-init": {"condition": "service_completed_successfully"}}, name
        else:
            assert svc["logging"]["options"] == {"max-size": "10m", "max-file": "3"}, name
            assert svc["deploy"]["resources"]["limits"], name
    assert {"code-server", "daemon"} <= set(overlay)  # the runs and the landing sensor
    assert "s3/landing" in overlay["minio-init"]["command"][0]
    assert connector()["s3.bucket.name"] == "landing"
    # the commands name roles of the entrypoint and the gRPC workspace file
    for name, svc in our_services().items():
        assert svc["command"][0] in {"migrate", "code-server", "webserver", "daemon", "api", "dashboard"}, name
    assert services["webserver"]["command"][1:] == ["-w", "deploy/compose/workspace.yaml"]
    assert services["api"]["ports"] == ["3000:3000"]


def test_compose_secrets_come_from_dot_env():
    text = (DEPLOY / "compose" / "compose.yaml").read_text() + (DEPLOY / "compose" / "kafka.yaml").read_text()
    example = (DEPLOY / "compose" / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    referenced = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert referenced == documented, f"in compose.yaml, not in .env.example: {referenced - documented}"
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET"):
        assert re.search(rf"\$\{{{secret}:\?", text), f"{secret} must be required, not defaulted"
        assert re.search(rf"^{secret}=$", example, re.M), f".env.example must not hold a {secret}"
    res = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/.env"], cwd=ROOT)
    assert res.returncode == 0, "deploy/compose/.env must be git-ignored"


# ---------------------------------------------------------------- settings named everywhere ------


def helm() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def test_every_environment_variable_is_a_setting():
    names: dict[str, str] = {}
    for svc_name, svc in our_services().items():
        for key in svc.get("environment") or {}:
            names[key] = f"compose {svc_name}"
    for kind, doc in ((d["kind"], d) for d in yaml_docs(K8S / "base" / "configmap.yaml")):
        names.update({k: f"ConfigMap ({kind})" for k in doc["data"]})
    names.update({k: "example Secret" for k in yaml_docs(K8S / "secret.example.yaml")[0]["stringData"]})
    for dep in helm()["dagster-user-deployments"]["deployments"]:
        names.update({e["name"]: "Helm user deployment env" for e in dep.get("env", [])})
    names.update({v: "Helm run launcher envVars" for v in helm()["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]})
    for doc in kustomize(K8S / "base"):
        for c in pod_spec(doc).get("containers", []) if pod_spec(doc) else []:
            names.update({e["name"]: f"{doc['kind']} {doc['metadata']['name']}" for e in c.get("env", [])})
    unknown = {k: where for k, where in names.items() if k not in SETTINGS}
    assert not unknown, f"not variables of leaderboard/settings.py: {unknown}"
    assert {"DATABASE_URL", "REDIS_PASSWORD", "JWT_SECRET"} <= set(names)


def test_configured_values_are_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The values themselves pass the settings' validation (a bad one would stop every pod)."""
    import leaderboard.settings

    monkeypatch.chdir(tmp_path)
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    buckets: list[str] = []  # the real buckets are not reachable from here: their URLs must parse
    monkeypatch.setattr(leaderboard.settings, "check_bucket", lambda location: buckets.append(location.url()))
    data = yaml_docs(K8S / "base" / "configmap.yaml")[0]["data"]
    secret = yaml_docs(K8S / "secret.example.yaml")[0]["stringData"]
    for overlay in OVERLAYS:
        cm = next(d for d in kustomize(K8S / "overlays" / overlay) if d["kind"] == "ConfigMap")
        load_settings(**{**cm["data"], **secret})
    load_settings(**{**data, **secret})
    env = compose_env_for("api")
    load_settings(**{k: v for k, v in env.items() if "${" not in v})
    assert {data["LEADERBOARD_LANDING_DIR"], data["LEADERBOARD_LAKE_DIR"]} <= set(buckets)


def compose_env_for(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (our_services()[service].get("environment") or {}).items()}


# ---------------------------------------------------------------- routes, probes, ports ----------


@cache
def api_routes() -> set[str]:
    from api.app import create_app

    app = create_app(load_settings(LEADERBOARD_LAKE_DIR=ROOT / "data" / "lake", RATE_LIMIT_PER_MINUTE=0))
    return {route.path for route in app.routes}


def pod_spec(doc: dict) -> dict | None:
    return doc["spec"]["template"]["spec"] if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet"} else None


def test_probe_paths_and_ports_match_the_api():
    routes = api_routes()
    assert {"/health", "/health/ready", "/metrics"} <= routes
    docs = {(d["kind"], d["metadata"]["name"]): d for d in kustomize(K8S / "base")}
    api = pod_spec(docs["Deployment", "leaderboard-api"])["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": Settings.model_fields["PORT"].default}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    service = docs["Service", "leaderboard-api"]
    assert service["spec"]["ports"][0]["targetPort"] in ports
    monitor = docs["ServiceMonitor", "leaderboard-api"]["spec"]
    assert monitor["endpoints"][0]["path"] in routes
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # every public path leads to routes, and neither /metrics nor /health is public
    ingress = docs["Ingress", "leaderboard-api"]["spec"]["rules"][0]["http"]["paths"]
    for path in ingress:
        assert any(r == path["path"] or r.startswith(path["path"] + "/") for r in routes), path
        assert path["backend"]["service"]["name"] == "leaderboard-api"
    assert not any(r.startswith(p["path"]) for p in ingress for r in ("/metrics", "/health"))
    # Compose's API healthcheck and published port
    test = our_services()["api"]["healthcheck"]["test"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(test))
    assert url and url[1] == "3000" and url[2] in routes
    # the API's Deployment and the dashboard's run roles of our image
    assert api["args"][0] == "api"
    dash = pod_spec(docs["Deployment", "leaderboard-dashboard"])["containers"][0]
    assert dash["args"][0] == "dashboard" and dash["ports"][0]["containerPort"] == 8501


# ---------------------------------------------------------------- Kubernetes manifests -----------


def _pointer(doc: object, path: str) -> tuple[object, str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]  # type: ignore[index]
    last = parts[-1]
    return doc, (int(last) if isinstance(doc, list) and last != "-" else last)


def kustomize(folder: Path) -> list[dict]:
    """Our overlays' Kustomize subset: resources, namespace, images and JSON 6902 patches."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    allowed = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    assert set(k) <= allowed, f"{folder}: the test resolver knows only {allowed}"
    docs: list[dict] = []
    for res in k.get("resources", []):
        path = folder / res
        docs += kustomize(path) if path.is_dir() else yaml_docs(path)
    for patch in k.get("patches", []):
        target = patch["target"]
        matched = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert matched, f"patch target {target} matches nothing"
        for doc in matched:
            for op in yaml.safe_load(patch["patch"]):
                parent, key = _pointer(doc, op["path"])
                assert op["op"] in {"replace", "add", "remove"}, op
                if op["op"] == "remove":
                    del parent[key]  # type: ignore[index,arg-type]
                elif op["op"] == "add" and isinstance(parent, list):
                    parent.insert(len(parent) if key == "-" else key, op["value"])  # type: ignore[arg-type]
                else:
                    if op["op"] == "replace":
                        assert (key in parent) if isinstance(parent, dict) else key < len(parent), op
                    parent[key] = copy.deepcopy(op["value"])  # type: ignore[index]
    if "namespace" in k:
        for doc in docs:
            doc["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for doc in docs:
            for c in (pod_spec(doc) or {}).get("containers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return docs


def kubectl_kustomize(folder: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    res = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@cache
def k8s_definitions() -> referencing.Registry:
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    defs = json.loads((base / "_definitions.json").read_text())
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


def validate_k8s_object(value: object, definition: str) -> None:
    """A fragment (a Volume, a ResourceRequirements...) against the Kubernetes definition."""
    schema = {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{definition}"}
    jsonschema.Draft202012Validator(schema, registry=k8s_definitions()).validate(value)


# The parts of the Prometheus Operator CRDs (monitoring.coreos.com/v1) that our objects use, closed
# to unknown keys, so a misspelt field fails here rather than being dropped by the API server.
_META = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
         "labels": {"type": "object", "additionalProperties": {"type": "string"}}}, "additionalProperties": False}  # fmt: skip
CRD_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
                       "metadata": _META,
                       "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                                "properties": {"selector": {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},
                                               "endpoints": {"type": "array", "minItems": 1, "items": {
                                                   "type": "object", "additionalProperties": False,
                                                   "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                                                  "interval": {"type": "string", "pattern": r"^\d+[smh]$"}}}}}}},
    },
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
                       "metadata": _META,
                       "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
                           "groups": {"type": "array", "items": {
                               "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                               "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": {
                                   "type": "object", "required": ["alert", "expr"], "additionalProperties": False,
                                   "properties": {"alert": {"type": "string"}, "expr": {"type": "string"},
                                                  "for": {"type": "string", "pattern": r"^\d+[smh]$"},
                                                  "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                                  "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}}}},
    },
}  # fmt: skip


def validate_manifest(doc: dict) -> None:
    import kubernetes_validate

    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]], registry=k8s_definitions()).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_kustomize_builds_valid_manifests(target: str):
    docs = kubectl_kustomize(K8S / target) or kustomize(K8S / target)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "Deployment", "Service", "Service", "Ingress",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor",
                            "PrometheusRule"])  # fmt: skip
    for doc in docs:
        validate_manifest(doc)


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed; the test resolver builds alone")
@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_test_resolver_agrees_with_kubectl(target: str):
    def keyed(docs: list[dict]) -> dict:
        return {(d["kind"], d["metadata"]["name"]): d for d in docs}

    assert keyed(kustomize(K8S / target)) == keyed(kubectl_kustomize(K8S / target))


def test_other_manifests_validate():
    for path in (K8S / "secret.example.yaml", K8S / "migrate-job.yaml", DEPLOY / "helm" / "data.yaml"):
        for doc in yaml_docs(path):
            validate_manifest(doc)


def test_overlays_differ_where_they_should():
    built = {o: {(d["kind"], d["metadata"]["name"]): d for d in kustomize(K8S / "overlays" / o)} for o in OVERLAYS}
    for overlay, namespace in zip(OVERLAYS, ("leaderboard-staging", "leaderboard"), strict=True):
        docs = built[overlay]
        assert {d["metadata"]["namespace"] for d in docs.values()} == {namespace}
        for key in (("Deployment", "leaderboard-api"), ("Deployment", "leaderboard-dashboard")):
            image = pod_spec(docs[key])["containers"][0]["image"]
            assert re.fullmatch(r"registry\.example\.com/leaderboard-engine:\d+\.\d+\.\d+(-[\w.]+)?", image), image
        hpa = docs["HorizontalPodAutoscaler", "leaderboard-api"]["spec"]
        targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
        assert targets == {"cpu": 70, "memory": 80}
        assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    hosts = {o: built[o]["Ingress", "leaderboard-api"]["spec"]["rules"][0]["host"] for o in OVERLAYS}
    assert hosts == {"staging": "staging-leaderboard.example.com", "production": "leaderboard.example.com"}
    tls = {o: built[o]["Ingress", "leaderboard-api"]["spec"]["tls"][0]["hosts"] for o in OVERLAYS}
    assert all(tls[o] == [hosts[o]] for o in OVERLAYS)
    assert built["staging"]["ConfigMap", "leaderboard-config"]["data"]["REDIS_KEY_PREFIX"] != "leaderboard"


def test_api_pod_hardening_and_network_policy():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in kustomize(K8S / "base")}
    spec = pod_spec(docs["Deployment", "leaderboard-api"])
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 1001
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] and container["resources"]["requests"]
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert "replicas" not in docs["Deployment", "leaderboard-api"]["spec"], "the HPA owns the replica count"
    policy = docs["NetworkPolicy", "leaderboard-api"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    sources = [next(iter(f.values()))["matchLabels"] for f in policy["ingress"][0]["from"]]
    assert {"kubernetes.io/metadata.name": "ingress-nginx"} in sources
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [3000]
    out = sorted(p["port"] for rule in policy["egress"] for p in rule["ports"])
    assert out == [53, 53, 5432, 6379], "only DNS, Postgres and Redis out"
    assert "nginx.ingress.kubernetes.io/limit-rpm" in docs["Ingress", "leaderboard-api"]["metadata"]["annotations"]
    assert docs["ConfigMap", "leaderboard-config"]["data"]["RATE_LIMIT_PER_MINUTE"] == "0"


def test_alerts_use_our_metric_names():
    import promql_parser

    from api.observability import REGISTRY

    labels: dict[str, set[str]] = {"up": {"job", "instance", "namespace"}}
    for metric in REGISTRY.collect():
        names = {metric.name + "_total"} if metric.type == "counter" else {metric.name}
        if metric.type == "histogram":
            names = {f"{metric.name}_{s}" for s in ("bucket", "sum", "count")}
        label_names = {"job", "instance", "namespace", *{k for s in metric.samples for k in s.labels}}
        for name in names:
            labels[name] = label_names | ({"le"} if name.endswith("_bucket") else set())
    labels["http_requests_total"] |= {"method", "route", "status"}
    labels["http_request_duration_seconds_bucket"] |= {"method", "route", "status"}
    labels["leaderboard_cache_requests_total"] |= {"result"}
    # the freshness gauges have series only while an app runs (api/freshness.py)
    for name in ("leaderboard_published_timestamp_seconds", "leaderboard_period_start_timestamp_seconds"):
        labels[name] |= {"board", "period"}
    labels["leaderboard_store_up"] |= {"store"}
    labels["leaderboard_settlement_webhooks_undelivered"] |= {"state"}  # series only with Postgres

    rule_doc = next(d for d in kustomize(K8S / "base") if d["kind"] == "PrometheusRule")
    rules = {r["alert"]: r for g in rule_doc["spec"]["groups"] for r in g["rules"]}
    # the seed's three alerts, on our names, and the two that page for "rankings not updating"
    assert {"LeaderboardApiDown", "LeaderboardApiHighLatency", "LeaderboardApiHighErrorRate"} <= set(rules)
    assert {"LeaderboardStandingsStale", "LeaderboardStoreDown"} <= set(rules)
    used: set[str] = set()
    for name, rule in rules.items():
        expr = promql_parser.parse(rule["expr"])
        selectors: list = []
        promql_parser.walk(
            expr,
            lambda node, acc=selectors: acc.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
        )
        assert selectors, name
        for sel in selectors:
            assert sel.name in labels, f"{name}: {sel.name} is not a metric the API exports"
            used.add(sel.name)
            for m in sel.matchers.matchers:
                assert m.name in labels[sel.name], f"{name}: {sel.name} has no label {m.name}"
                if m.name == "job":
                    assert m.value == "leaderboard-api", "the ServiceMonitor's job is the Service's name"
        assert rule["labels"]["severity"] in {"critical", "warning"}
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "leaderboard_cache_requests_total",
            "leaderboard_published_timestamp_seconds", "leaderboard_period_start_timestamp_seconds",
            "leaderboard_store_up"} <= used  # fmt: skip


def _number(node: object) -> float:
    """A PromQL expression of number literals (`3 * 5 * 60`), evaluated."""
    import operator

    import promql_parser

    if isinstance(node, promql_parser.NumberLiteral):
        return node.val
    if isinstance(node, promql_parser.ParenExpr):
        return _number(node.expr)
    assert isinstance(node, promql_parser.BinaryExpr), f"not a number: {node}"
    ops = {"*": operator.mul, "/": operator.truediv, "+": operator.add, "-": operator.sub}
    return ops[str(node.op)](_number(node.lhs), _number(node.rhs))


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_stale_alert_waits_three_refresh_intervals_of_the_configmap(target: str):
    """LeaderboardStandingsStale's threshold is 3 x REFRESH_INTERVAL_MINUTES of the ConfigMap that
    the Dagster daemon and code location read, in every environment: a changed setting needs the
    rule changed with it."""
    import promql_parser

    docs = kustomize(K8S / target)
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    config = config_map["data"]
    minutes = int(config.get("REFRESH_INTERVAL_MINUTES", Settings.model_fields["REFRESH_INTERVAL_MINUTES"].default))
    rule_doc = next(d for d in docs if d["kind"] == "PrometheusRule")
    stale = next(r for g in rule_doc["spec"]["groups"] for r in g["rules"] if r["alert"] == "LeaderboardStandingsStale")
    expr = promql_parser.parse(stale["expr"])
    assert isinstance(expr, promql_parser.BinaryExpr) and str(expr.op) == ">", stale["expr"]
    assert _number(expr.rhs) == 3 * minutes * 60
    # the Helm chart's Dagster processes read the same ConfigMap, and set no interval of their own
    (dep,) = helm()["dagster-user-deployments"]["deployments"]
    assert config_map["metadata"]["name"] in {m["name"] for m in dep["envConfigMaps"]}
    (storage,) = yaml_docs(DEPLOY / "helm" / "data.yaml")  # the other: the object store client's only
    assert "REFRESH_INTERVAL_MINUTES" not in storage["data"]
    assert "REFRESH_INTERVAL_MINUTES" not in {e["name"] for e in dep.get("env", [])}


# ---------------------------------------------------------------- Helm values --------------------


def test_helm_values_run_our_image_with_the_kubernetes_run_launcher():
    from dagster._config import process_config, resolve_to_config_type
    from dagster_k8s import K8sRunLauncher

    values = helm()
    users = values["dagster-user-deployments"]
    assert users["enabled"] and users["enableSubchart"]
    (dep,) = users["deployments"]
    assert dep["image"]["repository"].endswith("/leaderboard-engine") and dep["image"]["tag"]
    args = dep["dagsterApiGrpcArgs"]
    assert dict(zip(args[::2], args[1::2], strict=True)) == {
        "--module-name": "pipelines.definitions", "--location-name": "leaderboard", "--working-directory": "/app",
    }  # fmt: skip
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True
    assert {e["name"] for e in dep["envSecrets"]} == {"leaderboard-secrets"}
    # Kubernetes objects inside the values
    for vol in dep["volumes"]:
        validate_k8s_object(vol, "io.k8s.api.core.v1.Volume")
    for mount in dep["volumeMounts"]:
        validate_k8s_object(mount, "io.k8s.api.core.v1.VolumeMount")
    # No shared volume: run pods get the deployment's volumes, so none may be a claim; landing and
    # lake are buckets named in the ConfigMap every pod loads.
    assert all("persistentVolumeClaim" not in v for v in dep["volumes"]) and "env" not in dep
    assert [m["mountPath"] for m in dep["volumeMounts"]] == ["/tmp"]
    assert {e["name"] for e in dep["envConfigMaps"]} == {"leaderboard-config", "leaderboard-storage"}
    config = yaml_docs(K8S / "base" / "configmap.yaml")[0]["data"]
    assert config["LEADERBOARD_LANDING_DIR"].startswith("s3://") and config["LEADERBOARD_LAKE_DIR"].startswith("s3://")
    (storage,) = yaml_docs(DEPLOY / "helm" / "data.yaml")
    assert storage["kind"] == "ConfigMap" and all(k.startswith("AWS_") for k in storage["data"])
    validate_k8s_object(dep["podSecurityContext"], "io.k8s.api.core.v1.PodSecurityContext")
    validate_k8s_object(dep["securityContext"], "io.k8s.api.core.v1.SecurityContext")
    assert dep["podSecurityContext"]["runAsUser"] == 1001
    for part in (dep, values["dagsterWebserver"], values["dagsterDaemon"]):
        validate_k8s_object(part["resources"], "io.k8s.api.core.v1.ResourceRequirements")
    # Postgres: external, password from our Secret
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"] and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    # The run launcher's config as the chart writes it into dagster.yaml, against K8sRunLauncher's schema
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    run = k8s["runK8sConfig"]
    validate_k8s_object(run["containerConfig"]["resources"], "io.k8s.api.core.v1.ResourceRequirements")
    validate_k8s_object({"template": {}, **run["jobSpecConfig"]}, "io.k8s.api.batch.v1.JobSpec")
    rendered = {
        "load_incluster_config": k8s["loadInclusterConfig"], "job_namespace": "leaderboard",
        "image_pull_policy": k8s["imagePullPolicy"], "service_account_name": "dagster",
        "dagster_home": "/opt/dagster/dagster_home", "instance_config_map": "dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": [m["name"] for m in k8s["envConfigMaps"]], "env_secrets": [s["name"] for s in k8s["envSecrets"]],
        "env_vars": k8s["envVars"], "volumes": k8s["volumes"], "volume_mounts": k8s["volumeMounts"],
        "fail_pod_on_run_failure": k8s["failPodOnRunFailure"],
        "run_k8s_config": {"container_config": run["containerConfig"], "job_spec_config": run["jobSpecConfig"]},
    }  # fmt: skip
    result = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), rendered)
    assert result.success, [e.message for e in result.errors]
    # schedules and sensors run in the daemon
    assert values["dagsterDaemon"]["enabled"] is True and values["scheduler"]["type"] == "DagsterDaemonScheduler"


def test_helm_run_queue_and_retries_equal_deploy_dagster_yaml():
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    daemon = helm()["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert daemon["runCoordinator"]["type"] == instance["run_coordinator"]["class"]
    assert queued["maxConcurrentRuns"] == instance["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    retries = instance["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": True,
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }


# ---------------------------------------------------------------- Kafka Connect ------------------


def connector() -> dict[str, str]:
    """The properties file as Connect reads it, and as the runbook's one-liner turns it into JSON."""
    lines = (DEPLOY / "kafka-connect" / "landing-s3-sink.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in map(str.strip, lines) if line and not line.startswith("#"))


def joda(pattern: str, at: dt.datetime) -> str:
    """The Joda-Time patterns path.format uses: 'quoted' literals, YYYY, MM, dd, HH."""
    out = []
    for quoted, token, other in re.findall(r"'([^']*)'|(YYYY|MM|dd|HH)|(.)", pattern):
        out.append(quoted or other or {"YYYY": f"{at:%Y}", "MM": f"{at:%m}", "dd": f"{at:%d}", "HH": f"{at:%H}"}[token])
    return "".join(out)


def test_kafka_connect_sink_writes_the_layout_the_reader_expects(tmp_path: Path):
    from leaderboard.landing import list_files
    from pipelines.generate import EVENT_TYPES
    from pipelines.landing_watch import WatchCursor, scan
    from tests.conftest import event

    c = connector()
    assert c["connector.class"] == "io.confluent.connect.s3.S3SinkConnector"
    assert c["partitioner.class"] == "io.confluent.connect.storage.partitioner.TimeBasedPartitioner"
    assert (c["timestamp.extractor"], c["timestamp.field"]) == ("RecordField", "occurred_at")
    assert c["timezone"] == "UTC" and c["partition.duration.ms"] == "3600000"
    assert c["value.converter.schemas.enable"] == "false"
    assert set(c["topics"].split(",")) == {topic for topic, _ in EVENT_TYPES.values()}
    ext = {("io.confluent.connect.s3.format.json.JsonFormat", "gzip"): "json.gz",
           ("io.confluent.connect.s3.format.json.JsonFormat", "none"): "json"}[c["format.class"], c["s3.compression.type"]]  # fmt: skip

    # An object key as the sink names it, for an event at 23:30 UTC, under the landing dir.
    at = dt.datetime(2026, 11, 26, 23, 30, tzinfo=dt.UTC)
    hour = at.replace(minute=0)
    offset = str(1234).zfill(int(c["filename.offset.zero.pad.width"]))
    topic = "game-events"
    key = f"{c['topics.dir']}/{topic}/{joda(c['path.format'], at)}/{topic}+2+{offset}.{ext}"
    landed = tmp_path / key
    landed.parent.mkdir(parents=True)
    import gzip

    record = event("e1", "alice", at.isoformat().replace("+00:00", "Z"), 5)
    landed.write_bytes(gzip.compress((json.dumps(record) + "\n").encode()))
    # a copy in progress by another tool, <name>.<8 random>.tmp, is invisible to both readers
    (landed.parent / f"{topic}+2+{str(2000).zfill(10)}.{ext}.Ab3dEf9h.tmp").write_bytes(b"partial")

    files, skipped = list_files(tmp_path, hour, hour + dt.timedelta(hours=1))
    assert skipped == []
    assert [(f.path, f.topic, f.partition, f.offset) for f in files] == [(landed, topic, 2, 1234)]
    changes, _ = scan(tmp_path, WatchCursor())
    assert [ch.path for ch in changes] == [key]


def test_connect_worker_and_compose_use_the_connector_file():
    worker = dict(
        line.split("=", 1)
        for line in (DEPLOY / "kafka-connect" / "worker.properties").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert worker["value.converter"] == connector()["value.converter"]
    svc = kafka_overlay()["services"]["kafka-connect"]
    assert svc["command"][0] == "connect-standalone"
    mounted = {v.split(":")[0] for v in svc["volumes"]}
    assert {"../kafka-connect/worker.properties", "../kafka-connect/landing-s3-sink.properties"} <= mounted
    assert f"/connectors/{connector()['name']}/status" in " ".join(svc["healthcheck"]["test"])


def test_no_copy_loop_and_no_shared_claim_remain_in_deploy():
    """The pipeline reads the sink's bucket itself: no rclone loop, no ReadWriteMany volume."""
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace").lower()
            assert "rclone" not in text and "readwritemany" not in text and "landing-sync" not in text, path


# ---------------------------------------------------------------- runbook ------------------------


def test_runbook_names_every_setting_and_is_linked():
    runbook = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in sorted(SETTINGS) if f"`{name}`" not in runbook]
    assert not missing, f"docs/operations.md does not list {missing}"
    assert "{prefix}:{board}:{PERIOD}:{key}:rankings" in runbook
    rule_doc = next(d for d in kustomize(K8S / "base") if d["kind"] == "PrometheusRule")
    for alert in (r["alert"] for g in rule_doc["spec"]["groups"] for r in g["rules"]):
        assert alert in runbook
    assert "docs/operations.md" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- the stack, run here ------------


def test_compose_stack_refuses_what_it_does_not_handle(tmp_path: Path):
    """The runner maps only the forms compose.yaml uses; another fails, naming the service and the text."""
    from tests.compose_stack import PORTS, interpolate, service

    secrets = {"JWT_SECRET": "ab12"}
    spec = {"environment": {"JWT_SECRET": "${JWT_SECRET:?set it}"}}
    assert interpolate("api", spec, secrets) == {"environment": {"JWT_SECRET": "ab12"}}
    for text in ("${LOG_LEVEL:-INFO}", "$$HOME", "$JWT_SECRET", "${OTHER:?set it}"):
        with pytest.raises(AssertionError, match="^api: " + re.escape(json.dumps(text))):
            interpolate("api", {"command": ["api", text]}, secrets)
    api, ports = our_services()["api"], dict.fromkeys(PORTS, 1)
    for bad, what in (({"env_file": ".env"}, "keys"), ({"volumes": ["./data:/data/lake"]}, "volume"),
                      ({"healthcheck": {"test": ["CMD-SHELL", "true"]}}, "healthcheck")):  # fmt: skip
        with pytest.raises(AssertionError, match=f"^api: {what} "):
            service("api", {**api, **bad}, image_env(), {}, ports, tmp_path)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def test_compose_commands_bring_up_a_working_stack(tmp_path: Path):
    """compose.yaml's own commands, run here by tests/compose_stack.py: migrations, code server,
    webserver, daemon, API and dashboard start in depends_on order and pass their healthchecks;
    two sample days materialized as `docker compose run code-server` would; standings from the API."""
    from leaderboard.boards import load_boards
    from tests.compose_stack import compose_up

    today = dt.datetime.now(load_boards(ROOT / "leaderboard" / "boards.yaml").tz).date()
    start = today - dt.timedelta(days=1)
    spec = compose()
    code_server = {k: v for k, v in spec["services"]["code-server"].items() if k != "healthcheck"}

    def run(after: str, *command: str) -> dict:
        """`docker compose run --rm code-server <command>`, once `after` has exited 0."""
        return {**code_server, "command": list(command), "restart": "no",
                "depends_on": {after: {"condition": "service_completed_successfully"}}}  # fmt: skip

    spec["services"]["generate"] = run("migrate", "leaderboard", "generate", "--start", str(start), "--days", "2",
                                       "--users", "200", "--events-per-day", "2000", "--formats", "json,parquet")  # fmt: skip
    spec["services"]["materialize"] = run(
        "generate", "leaderboard", "materialize", "--start", str(start), "--end", str(today)
    )
    secrets = {k: os.urandom(32).hex() for k in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET")}
    with compose_up(spec, image_env(), secrets, tmp_path, timeout=300) as stack:
        services = stack.services
        print(
            {
                n: f"started at {s.started - stack.t0:.1f} s, up after {s.up_at - s.started:.1f} s"
                for n, s in services.items()
            }
        )
        assert set(our_services()) | {"generate", "materialize"} == set(services)
        for name, svc in services.items():
            for dep in svc.spec.get("depends_on", {}):
                assert dep in {"postgres", "redis"} or svc.started >= services[dep].up_at, f"{name} before {dep}"
        api = f"http://127.0.0.1:{stack.ports['api']}"
        assert get_json(f"{api}/health/ready") == {"status": "ok", "details": {"postgres": "ok", "redis": "ok"}}
        daily = get_json(f"{api}/leaderboard/points/daily?at={start}")
        assert daily["total"] > 0 and daily["entries"][0]["rank"] == 1
        assert get_json(f"{api}/leaderboard/points/weekly")["total"] >= daily["total"]
        with urllib.request.urlopen(f"{api}/metrics", timeout=10) as resp:
            hits = re.search(r'^leaderboard_cache_requests_total\{result="hit"\} (\S+)', resp.read().decode(), re.M)
        assert hits and float(hits[1]) >= 1, "standings were served from Redis"
        query = {
            "query": "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }"
        }
        req = urllib.request.Request(f"http://127.0.0.1:{stack.ports['webserver']}/graphql", json.dumps(query).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
        locations = {e["name"]: e["locationOrLoadError"]["__typename"] for e in entries}
        assert locations == {"leaderboard": "RepositoryLocation"}, "the webserver loaded the gRPC code server"
