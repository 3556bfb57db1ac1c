#!/bin/sh
# One image, every role: the first argument picks what the container runs (Dockerfile, Compose,
# Kubernetes). Any other command runs as given, e.g. `leaderboard retention --dry-run`, or the
# `dagster api grpc ...` / `dagster api execute_run ...` that the Dagster Helm chart and its run
# launcher pass to this image.
set -eu

# Dagster reads $DAGSTER_HOME/dagster.yaml. A read-only one (a ConfigMap or a `:ro` mount) is the
# operator's and stays; otherwise the image's: deploy/dagster.yaml (runs, events, schedules and the
# run queue in DATABASE_URL) when Postgres is set, else Dagster's SQLite defaults.
dagster_home() {
  home="${DAGSTER_HOME:-/data/dagster}"
  mkdir -p "$home"
  config="$home/dagster.yaml"
  if [ -e "$config" ] && [ ! -w "$config" ]; then
    return 0
  fi
  tmp="$home/.dagster.yaml.$$"
  if [ -n "${DATABASE_URL:-}" ]; then
    cp "${APP_DIR:-/app}/deploy/dagster.yaml" "$tmp"
  else
    printf 'telemetry:\n  enabled: false\n' >"$tmp"
  fi
  mv -f "$tmp" "$config"  # atomic: several roles may start at once on a shared volume
}

role="${1:-api}"
[ "$#" -gt 0 ] && shift
case "$role" in
  api)
    # granian workers; PORT (default 3000) is read from the settings
    exec leaderboard api --host 0.0.0.0 "$@" ;;
  code-server)
    # the gRPC code location that the webserver and daemon load (deploy/compose/workspace.yaml)
    dagster_home
    exec dagster api grpc --host 0.0.0.0 --port 4000 --module-name pipelines.definitions \
      --location-name leaderboard --working-directory "${APP_DIR:-/app}" "$@" ;;
  webserver)
    dagster_home
    exec dagster-webserver --host 0.0.0.0 --port 3070 "$@" ;;
  daemon)
    # schedules, sensors, declarative automation, the run queue and run retries
    dagster_home
    exec dagster-daemon run "$@" ;;
  dashboard)
    dagster_home
    exec leaderboard dashboard --host 0.0.0.0 --port 8501 "$@" ;;
  migrate)
    # our tables (yoyo, sql/migrations), then Dagster's own schema: one-shot, before any other role
    dagster_home
    leaderboard migrate deploy
    exec dagster instance migrate ;;
  *)
    exec "$role" "$@" ;;
esac
