#!/usr/bin/env bash
# Prometheus and Alertmanager (Debian's `prometheus` and `prometheus-alertmanager` packages) for the
# monitoring tests. Only the binaries are needed: the tests start both on free 127.0.0.1 ports with
# configs they generate, and kill them when they end. `prometheus_start` installs the packages when
# missing (without letting them start as system services) and exports
# DEPLOYBOT_TEST_PROMETHEUS_BIN and DEPLOYBOT_TEST_ALERTMANAGER_BIN.

prometheus_find() {
  PROMETHEUS_BIN=$(command -v prometheus || true)
  ALERTMANAGER_BIN=$(command -v prometheus-alertmanager || command -v alertmanager || true)
}

prometheus_start() {
  prometheus_find
  if [ -z "$PROMETHEUS_BIN" ] || [ -z "$ALERTMANAGER_BIN" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "Prometheus or Alertmanager is not installed: installing them" >&2
      # policy-rc.d 101: the packages' maintainer scripts must not start system services.
      local created_policy=""
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
      fi
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
      local rc=$?
      if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
      [ "$rc" = 0 ] || return "$rc"
      prometheus_find
    else
      echo "prometheus / prometheus-alertmanager not found and cannot install them (needs root and apt-get)" >&2
      return 1
    fi
  fi
  export DEPLOYBOT_TEST_PROMETHEUS_BIN="$PROMETHEUS_BIN"
  export DEPLOYBOT_TEST_ALERTMANAGER_BIN="$ALERTMANAGER_BIN"
  echo "Prometheus $("$PROMETHEUS_BIN" --version 2>&1 | awk 'NR==1{print $3}') and Alertmanager $("$ALERTMANAGER_BIN" --version 2>&1 | awk 'NR==1{print $3}') for the tests (started by the tests themselves)" >&2
}

prometheus_stop() {
  # The tests start and kill their own instances; nothing runs as a service. Make sure of it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then systemctl stop prometheus prometheus-alertmanager 2>/dev/null || true; fi
  return 0
}
