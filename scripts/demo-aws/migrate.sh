#!/usr/bin/env bash
# The demo's stand-in for `mvn flyway:migrate`: one idempotent migration applied with psql, reported
# in Flyway's words so the bot's history row names it.
set -euo pipefail
url=${DEMO_DATABASE_URL:?DEMO_DATABASE_URL is not set}
psql=${DEMO_PSQL:-psql}
exists=$("$psql" "$url" -Atqc "SELECT to_regclass('public.invoices') IS NOT NULL")
if [ "$exists" = t ]; then
  echo 'Schema "public" is up to date. No migration necessary.'
  exit 0
fi
echo 'Migrating schema "public" to version "2 - add invoices"'
"$psql" "$url" -v ON_ERROR_STOP=1 -qc 'CREATE TABLE IF NOT EXISTS invoices (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), amount_cents bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())'
echo 'Successfully applied 1 migration to schema "public", now at version v2'
