#!/usr/bin/env bash
# A real SMTP server for the email notification tests: Debian's python3-aiosmtpd (or aiosmtpd in a
# virtual environment under the cache directory when apt-get cannot be used). Only the library is
# needed: each test starts tests/support/smtp_server.py on a free 127.0.0.1 port with STARTTLS (a
# certificate it makes with openssl), AUTH, and a switch that makes it refuse, and stops it when it
# ends. `smtp_start` exports DEPLOYBOT_TEST_SMTP_PYTHON, a Python that imports aiosmtpd.

smtp_find() {
  SMTP_PYTHON=""
  local venv="${DEPLOYBOT_CACHE:-$HOME/.cache/deploybot}/smtp-venv"
  for py in /usr/bin/python3 "$venv/bin/python"; do
    if [ -x "$py" ] && "$py" -c 'import aiosmtpd' 2>/dev/null; then SMTP_PYTHON="$py"; return; fi
  done
}

smtp_start() {
  smtp_find
  if [ -z "$SMTP_PYTHON" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "aiosmtpd is not installed: installing python3-aiosmtpd" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-aiosmtpd >/dev/null || true
    fi
    smtp_find
  fi
  if [ -z "$SMTP_PYTHON" ]; then
    local venv="${DEPLOYBOT_CACHE:-$HOME/.cache/deploybot}/smtp-venv"
    echo "installing aiosmtpd into $venv" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2' >&2
    smtp_find
  fi
  if [ -z "$SMTP_PYTHON" ]; then echo "cannot install aiosmtpd" >&2; return 1; fi
  command -v openssl >/dev/null || { echo "openssl is needed to make the SMTP server's certificate" >&2; return 1; }
  export DEPLOYBOT_TEST_SMTP_PYTHON="$SMTP_PYTHON"
  echo "aiosmtpd available through $SMTP_PYTHON" >&2
}

smtp_stop() {
  : # the tests stop the servers they start
}
