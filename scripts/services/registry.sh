#!/usr/bin/env bash
# Throwaway Docker registries (Debian's docker-registry, Distribution's registry v2) on free
# 127.0.0.1 ports with filesystem storage in a temp dir: one anonymous, one that wants htpasswd
# basic auth. Source this file, then `registry_start` exports DEPLOYBOT_TEST_REGISTRY (host:port,
# anonymous), DEPLOYBOT_TEST_REGISTRY_AUTH (host:port, basic auth) with DEPLOYBOT_TEST_REGISTRY_USER
# and DEPLOYBOT_TEST_REGISTRY_PASSWORD (a throwaway password made here), and `registry_stop` removes
# everything. The Docker Engine treats 127.0.0.0/8 registries as insecure-allowed, so tests push to
# them over plain HTTP.

_registry_install() {
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
}

# _registry_instance DIR [AUTH-YAML]: starts one registry in DIR and prints its port; its pid goes
# to DIR/pid.
_registry_instance() {
  local dir=$1 auth=${2:-} port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  {
    echo "version: 0.1"
    echo "log:"
    echo "  level: warn"
    echo "storage:"
    echo "  filesystem:"
    echo "    rootdirectory: $dir/data"
    echo "  delete:"
    echo "    enabled: true"
    echo "http:"
    echo "  addr: 127.0.0.1:$port"
    [ -n "$auth" ] && echo "$auth"
  } >"$dir/config.yml"
  "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    # 200 anonymous, 401 when it wants credentials: either way it answers.
    case $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null) in
      200|401) echo "$port"; return 0 ;;
    esac
    sleep 0.1
  done
  echo "docker-registry did not start; its log:" >&2
  cat "$dir/log" >&2
  return 1
}

# One bcrypt htpasswd line (the only hash docker-registry accepts): htpasswd -B from apache2-utils,
# installed when missing, else Python's crypt.
_registry_htpasswd() {
  local user=$1 password=$2
  if ! command -v htpasswd >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "htpasswd is not installed: installing apache2-utils" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null 2>&1 || true
  fi
  if command -v htpasswd >/dev/null; then
    htpasswd -Bbn "$user" "$password" | head -1
  else
    python3 -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))' "$user" "$password"
  fi
}

registry_start() {
  _registry_install || return 1
  REGISTRY_DIR=$(mktemp -d /tmp/deploybot-registry.XXXXXX)
  mkdir -p "$REGISTRY_DIR/anon" "$REGISTRY_DIR/auth"
  local port auth_port password
  port=$(_registry_instance "$REGISTRY_DIR/anon") || return 1
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
  _registry_htpasswd deploybot "$password" >"$REGISTRY_DIR/auth/htpasswd"
  auth_port=$(_registry_instance "$REGISTRY_DIR/auth" "auth:
  htpasswd:
    realm: deploybot-test
    path: $REGISTRY_DIR/auth/htpasswd") || return 1
  export DEPLOYBOT_TEST_REGISTRY="127.0.0.1:$port"
  export DEPLOYBOT_TEST_REGISTRY_AUTH="127.0.0.1:$auth_port"
  export DEPLOYBOT_TEST_REGISTRY_USER=deploybot
  export DEPLOYBOT_TEST_REGISTRY_PASSWORD="$password"
  echo "docker-registry running at $DEPLOYBOT_TEST_REGISTRY (anonymous) and $DEPLOYBOT_TEST_REGISTRY_AUTH (basic auth)" >&2
}

registry_stop() {
  local d pid
  for d in "$REGISTRY_DIR/anon" "$REGISTRY_DIR/auth"; do
    pid=$(cat "$d/pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$REGISTRY_DIR"
}
