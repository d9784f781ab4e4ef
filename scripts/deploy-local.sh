#!/bin/sh
# deploy-local.sh SERVICE VERSION — the development environment's deploy (and rollback) command.
#
# Runs SERVICE at VERSION with Docker Compose on this machine: the compose file (default
# ./docker-compose.yml, or $DEPLOY_LOCAL_COMPOSE_FILE) is expected to tag the service's image
# with ${<SERVICE>_VERSION} (e.g. image: your-registry/invoice-me-backend:${BACKEND_VERSION}).
# Without a compose file, or with DEPLOY_LOCAL_DRY_RUN=1, it only records the version.
# Either way the version is written to $DEPLOY_LOCAL_STATE_DIR/SERVICE.version
# (default ./.deploybot-local), which is what "runs now" for the development environment.
set -eu

if [ "$#" -ne 2 ] || [ -z "$1" ] || [ -z "$2" ]; then
    echo "usage: $0 SERVICE VERSION" >&2
    exit 2
fi
service=$1
version=$2
compose_file=${DEPLOY_LOCAL_COMPOSE_FILE:-docker-compose.yml}
state_dir=${DEPLOY_LOCAL_STATE_DIR:-.deploybot-local}

if [ "${DEPLOY_LOCAL_DRY_RUN:-0}" != 1 ] && [ -f "$compose_file" ]; then
    # BACKEND_VERSION for "backend": the variable the compose file interpolates.
    var=$(printf '%s_VERSION' "$service" | tr 'a-z-' 'A-Z_')
    echo "docker compose -f $compose_file up -d --no-deps $service with $var=$version"
    env "$var=$version" docker compose -f "$compose_file" up -d --no-deps --wait "$service"
else
    echo "no compose file at $compose_file (or DEPLOY_LOCAL_DRY_RUN=1): recording $service $version only"
fi

mkdir -p "$state_dir"
printf '%s\n' "$version" > "$state_dir/$service.version.tmp"
mv "$state_dir/$service.version.tmp" "$state_dir/$service.version"
echo "$service is at $version"
