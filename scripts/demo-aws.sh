#!/usr/bin/env bash
# The runbook's production path against moto (ECS + S3) and a throwaway local PostgreSQL:
#   /deploy v1.0.0 production -> approval by carol -> pg_dump backup uploaded to moto's S3 ->
#   migration -> ECS: new task-definition revision (image only) + UpdateService -> rollout ->
#   health checks against local stand-ins -> record -> /history production ->
#   /rollback production --with-db approved by carol (database restored).
# Everything it starts (PostgreSQL, moto, the stand-ins, the bot) is stopped on exit.
#
# Usage: bash scripts/demo-aws.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
here=$root/scripts/demo-aws
venv="${DEPLOYBOT_CACHE:-$HOME/.cache/deploybot}/moto-venv"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deploybot/target}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building deploybot"
cargo build -q
bot=$CARGO_TARGET_DIR/debug/deploybot

work=$(mktemp -d /tmp/deploybot-demo-aws.XXXXXX)
pids=()
bot_pid=""
cleanup() {
  set +e
  exec 3>&- 2>/dev/null
  if [ -n "$bot_pid" ]; then kill "$bot_pid" 2>/dev/null; wait "$bot_pid" 2>/dev/null; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  declare -F moto_stop >/dev/null && [ -n "${MOTO_PID:-}" ] && moto_stop
  declare -F postgres_stop >/dev/null && [ -n "${PG_DIR:-}" ] && postgres_stop
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=services/postgres.sh
source scripts/services/postgres.sh
# shellcheck source=services/moto.sh
source scripts/services/moto.sh
say "starting PostgreSQL and moto"
postgres_start
MOTO_LAUNCHER=$here/moto_ecs_rollouts.py moto_start
psql=$PG_BIN/psql
export DEMO_PSQL=$psql
"$psql" "$DEPLOYBOT_TEST_PG_URL" -qc 'CREATE DATABASE invoiceme'
export DEMO_DATABASE_URL=${DEPLOYBOT_TEST_PG_URL%/*}/invoiceme
"$psql" "$DEMO_DATABASE_URL" -v ON_ERROR_STOP=1 -q <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL);
INSERT INTO customers (name, email) SELECT 'Customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 25) i;
SQL
count() { "$psql" "$DEMO_DATABASE_URL" -Atqc "$1"; }
echo "  database invoiceme seeded: $(count 'SELECT count(*) FROM customers') customers"

say "creating the AWS side in moto (currently running v0.9.0)"
"$venv/bin/python" "$here/setup_aws.py" "$DEPLOYBOT_TEST_MOTO_URL" v0.9.0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
be=$(free_port); fe=$(free_port); listen=$(free_port)
say "starting the stand-in app at v1.0.0 (backend :$be, frontend :$fe) for the health checks"
"$bot" standin serve --port "$be" --version v1.0.0 >"$work/standin-backend.log" 2>&1 & pids+=($!)
"$bot" standin serve --port "$fe" --version v1.0.0 >"$work/standin-frontend.log" 2>&1 & pids+=($!)
for port in "$be" "$fe"; do
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done

config=$work/deploybot.toml
cat >"$config" <<EOF
[bot]
database_url = "sqlite://$work/deploybot.db"
listen = "127.0.0.1:$listen"
timezone = "America/New_York"
history_file = "$work/history.md"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "invoiceme/invoice-me-backend"
order = 1

[services.frontend]
image = "invoiceme/invoice-me-frontend"
order = 2

[environments.production]
channel = "C0PROD"
aliases = ["prod"]
requires = []
skip_steps = ["monitor"]

[environments.production.target]
kind = "ecs"
cluster = "invoice-me-cluster"
region = "us-east-1"
endpoint_url = "$DEPLOYBOT_TEST_MOTO_URL"
services = { backend = "invoice-me-backend", frontend = "invoice-me-frontend" }
rollout_timeout = "30s"
poll_interval = "1s"

[environments.production.approvals]
required = 1
approvers = ["carol"]
self_approval = false
expires_after = "30m"

[environments.production.backup]
database_url = "\${DEMO_DATABASE_URL}"
s3 = "s3://backups/invoiceme/"
s3_endpoint_url = "$DEPLOYBOT_TEST_MOTO_URL"
dir = "$work/backups"
pg_dump = "$PG_BIN/pg_dump"

[environments.production.migrations]
# The database URL is a secret: it reaches migrate.sh through its environment, never its argv.
command = ["$here/migrate.sh"]
env = { DEMO_DATABASE_URL = "\${DEMO_DATABASE_URL}" }
timeout = "1m"

[environments.production.verify]
retries = 2
backoff = "200ms"
timeout = "3s"

[[environments.production.verify.health]]
name = "backend health"
url = "http://127.0.0.1:$be/api/actuator/health"
expect_json = { status = "UP" }

[[environments.production.verify.health]]
name = "database connection"
url = "http://127.0.0.1:$be/api/actuator/health/db"
expect_json = { status = "UP" }

[[environments.production.verify.health]]
name = "frontend"
url = "http://127.0.0.1:$fe/"
EOF
"$bot" --config "$config" check-config >/dev/null

say "the console chat (alice types; @carol approves)"
mkfifo "$work/stdin"; : >"$work/chat.log"
"$bot" --config "$config" run <"$work/stdin" > >(tee "$work/chat.log") 2>"$work/bot.log" & bot_pid=$!
exec 3>"$work/stdin"
type_line() { printf '> %s\n' "$1"; printf '%s\n' "$1" >&3; }

# Waits until the bot asks for approval of #$1 in the channel, at most $2 seconds.
wait_approval_request() {
  for _ in $(seq 1 $(($2 * 5))); do
    grep -q "Approval needed for #$1 " "$work/chat.log" && return 0
    sleep 0.2
  done
  echo "the bot did not ask for approval of #$1; its log:"; tail -n 30 "$work/bot.log"; exit 1
}
# The state of deployment #$1 once it has finished, read from the store (history lists finished ones).
state_of() {
  "$bot" --config "$config" history --env production --limit 20 --format json 2>/dev/null |
    python3 -c 'import json,sys; d=[e for e in json.load(sys.stdin) if str(e.get("id"))==sys.argv[1]]; print(d[0].get("state","") if d else "")' "$1"
}
# Waits until deployment #$1 is in one of the states $2 (a regex), at most $3 seconds.
wait_state() {
  local s=""
  for _ in $(seq 1 $(($3 * 5))); do
    s=$(state_of "$1")
    if [[ $s =~ ^($2)$ ]]; then echo "$s"; return 0; fi
    sleep 0.2
  done
  echo "${s:-unknown}"; return 1
}
terminal='succeeded|failed|rolled_back|rollback_failed|rejected|expired|cancelled|denied'

type_line "/deploy v1.0.0 production"
wait_approval_request 1 20
type_line "@carol :white_check_mark: #1"
deploy_state=$(wait_state 1 "$terminal" 120 || true)
sleep 0.5
type_line "/history production"
sleep 1

say "what moto holds now"
"$venv/bin/python" "$here/show_aws.py" "$DEPLOYBOT_TEST_MOTO_URL"

if [ "$deploy_state" != succeeded ]; then
  say "deployment #1 ended ${deploy_state:-unknown}: the pipeline stops here"
  if grep -q "was replaced: the service's primary deployment is now" "$work/chat.log"; then
    cat <<'EOF'
The rollout did not complete. With stock moto (without scripts/demo-aws/moto_ecs_rollouts.py) this is moto's limitation, not a bot bug. What did happen, for real: pg_dump of
the seeded database, uploaded to moto's S3 (listed above); the migration; for backend, a new
task-definition revision that differs from the previous one only in the image (listed above),
and UpdateService pointing the service at it (the driver only follows a rollout after
UpdateService succeeded). But moto's UpdateService changes only the service's taskDefinition: it
never adds a deployment for the new revision to deployments[] (the only PRIMARY deployment still
names the previous revision, COMPLETED) and running counts never move. The driver follows a
rollout through deployments[], as real ECS reports it, so on moto the rollout of a new revision
can never complete: it reads "the primary deployment is the previous revision" and fails, and the
bot rolled back to the exact previous revision (UpdateService again, which is why the service
above is on :1; moto reports that rollout as completed, since deployments[] never left it).
So verify-after-deploy, record of a success, and `/rollback production --with-db` (which restores
the backup of the last *successful* deployment) cannot be reached on moto. Rollout progress is
tested against the project's own ECS double instead (issue 5).
EOF
  else
    echo "It failed for a reason other than moto's rollout limitation: see the thread above."
    tail -n 20 "$work/bot.log"
  fi
  exit 1
fi

say "writes after the deployment (they are what --with-db will lose)"
"$psql" "$DEMO_DATABASE_URL" -qc "INSERT INTO customers (name, email) VALUES ('Late Customer', 'late@example.com'); INSERT INTO invoices (customer_id, amount_cents) VALUES (1, 4200)"
echo "  customers: $(count 'SELECT count(*) FROM customers'), invoices table: $(count "SELECT to_regclass('public.invoices') IS NOT NULL")"

say "/rollback production --with-db, approved by carol"
type_line "/rollback production --with-db"
wait_approval_request 2 20
type_line "@carol :white_check_mark: #2"
rb_state=$(wait_state 2 "$terminal" 120 || true)
sleep 0.5
type_line "/history production"
sleep 1
echo "  rollback #2 ended $rb_state; customers: $(count 'SELECT count(*) FROM customers'), invoices table exists: $(count "SELECT to_regclass('public.invoices') IS NOT NULL")"
[ "$rb_state" = rolled_back ] || [ "$rb_state" = succeeded ]
