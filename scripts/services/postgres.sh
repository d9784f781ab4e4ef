#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a free 127.0.0.1 port. Source this file, then
# `postgres_start` exports DEPLOYBOT_TEST_PG_URL and `postgres_stop` removes everything.

pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

postgres_start() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "PostgreSQL is not installed: installing it" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
      PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    else
      echo "PostgreSQL binaries not found under /usr/lib/postgresql and cannot install them" >&2
      return 1
    fi
  fi
  PG_DIR=$(mktemp -d /tmp/deploybot-pg.XXXXXX)
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
  pg_as_owner "'$PG_BIN/initdb' -D '$PG_DIR/data' -A trust -U postgres --no-sync -E UTF8 >/dev/null"
  pg_as_owner "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/log' -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c unix_socket_directories='$PG_DIR'\" start >/dev/null"
  export DEPLOYBOT_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') running at $DEPLOYBOT_TEST_PG_URL" >&2
}

postgres_stop() {
  pg_as_owner "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m immediate stop >/dev/null" || true
  rm -rf "$PG_DIR"
}
