#!/usr/bin/env bash
# moto (the AWS emulator, PyPI moto[server]) on a free 127.0.0.1 port, installed into a virtual
# environment under the cache directory. `moto_start` exports DEPLOYBOT_TEST_MOTO_URL; tests reset
# it with `POST /moto-api/reset`.

moto_start() {
  local venv="${DEPLOYBOT_CACHE:-$HOME/.cache/deploybot}/moto-venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto[server] into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' >&2
  fi
  MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  MOTO_LOG=$(mktemp /tmp/deploybot-moto.XXXXXX.log)
  # A completed initial rollout for services created in tests (moto never moves running counts).
  # MOTO_LAUNCHER (a Python file) replaces the stock server, e.g. scripts/demo-aws/moto_ecs_rollouts.py.
  if [ -n "${MOTO_LAUNCHER:-}" ]; then
    MOTO_ECS_SERVICE_RUNNING=2 "$venv/bin/python" "$MOTO_LAUNCHER" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
  else
    MOTO_ECS_SERVICE_RUNNING=2 "$venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
  fi
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  if ! curl -fs "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1; then
    echo "moto did not start; its log:" >&2; cat "$MOTO_LOG" >&2; return 1
  fi
  export DEPLOYBOT_TEST_MOTO_URL="http://127.0.0.1:$MOTO_PORT"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  echo "moto running at $DEPLOYBOT_TEST_MOTO_URL" >&2
}

moto_stop() {
  kill "$MOTO_PID" 2>/dev/null || true
  wait "$MOTO_PID" 2>/dev/null || true
  rm -f "$MOTO_LOG"
}
