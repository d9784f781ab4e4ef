#!/usr/bin/env bash
# A throwaway Docker registry (Debian's docker-registry, Distribution's registry v2) on a free
# 127.0.0.1 port with filesystem storage in a temp dir. Source this file, then `registry_start`
# exports DEPLOYBOT_TEST_REGISTRY (host:port) and `registry_stop` removes everything. The Docker
# Engine treats 127.0.0.0/8 registries as insecure-allowed, so tests push to it over plain HTTP.

registry_start() {
  REGISTRY_BIN=$(command -v docker-registry || true)
  if [ -z "$REGISTRY_BIN" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "docker-registry is not installed: installing it" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
      REGISTRY_BIN=$(command -v docker-registry)
    else
      echo "docker-registry not found and cannot install it (apt-get install docker-registry)" >&2
      return 1
    fi
  fi
  REGISTRY_DIR=$(mktemp -d /tmp/deploybot-registry.XXXXXX)
  REGISTRY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$REGISTRY_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
  "$REGISTRY_BIN" serve "$REGISTRY_DIR/config.yml" >"$REGISTRY_DIR/log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  if ! curl -fs "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null 2>&1; then
    echo "docker-registry did not start; its log:" >&2; cat "$REGISTRY_DIR/log" >&2; return 1
  fi
  export DEPLOYBOT_TEST_REGISTRY="127.0.0.1:$REGISTRY_PORT"
  echo "docker-registry running at $DEPLOYBOT_TEST_REGISTRY" >&2
}

registry_stop() {
  kill "$REGISTRY_PID" 2>/dev/null || true
  wait "$REGISTRY_PID" 2>/dev/null || true
  rm -rf "$REGISTRY_DIR"
}
