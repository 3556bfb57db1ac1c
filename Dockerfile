# syntax=docker/dockerfile:1.7
# One image for every role of the leaderboard engine; deploy/docker-entrypoint.sh picks it from the
# command: api (default) | code-server | webserver | daemon | dashboard | migrate | any command.
#   docker build -t leaderboard-engine:1.0.0 .
#   docker run --rm -p 3000:3000 leaderboard-engine:1.0.0            # API on the embedded default
#   docker run --rm leaderboard-engine:1.0.0 leaderboard --help

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the locked environment (uv.lock), then our code as an editable install in /app -----
FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes. The k8s group adds
# dagster-k8s, which run pods of the Kubernetes run launcher import (deploy/helm/).
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --group k8s --no-install-project
COPY leaderboard ./leaderboard
COPY pipelines ./pipelines
COPY api ./api
COPY dashboard ./dashboard
COPY cli ./cli
COPY sql ./sql
COPY workspace.yaml ./
COPY deploy/docker-entrypoint.sh deploy/dagster.yaml ./deploy/
COPY deploy/compose/workspace.yaml ./deploy/compose/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --group k8s

# ---- runtime: no compiler, no uv; code owned by root, only /data writable by the app user -------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 1001 leaderboard \
    && useradd --uid 1001 --gid 1001 --create-home --shell /usr/sbin/nologin leaderboard \
    && mkdir -p /data/landing /data/lake /data/dagster \
    && chown -R 1001:1001 /data
COPY --from=build /app /app
# Settings defaults for a container: the three data folders live under /data (volumes).
ENV PATH=/app/.venv/bin:$PATH \
    APP_DIR=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 \
    LEADERBOARD_LANDING_DIR=/data/landing \
    LEADERBOARD_LAKE_DIR=/data/lake \
    DAGSTER_HOME=/data/dagster
WORKDIR /app
USER 1001:1001
EXPOSE 3000
# Liveness of the API role (other roles get their own check in Compose and Kubernetes).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=2)"]
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["api"]
