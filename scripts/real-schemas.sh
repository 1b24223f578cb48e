#!/usr/bin/env bash
# Which tables of real applications each method accepts: every schema dump
# in a directory (default ../shared/data/real-schemas, or REAL_SCHEMAS) is
# loaded into a database of its own on a throwaway cluster; its large
# append-mostly tables (by name: events, logs, audits, notifications,
# versions, activities, histories, messages, jobs, builds...) with a
# NOT NULL or nullable time column get a monthly plan by that column, and
# `migrate plan` runs for move, sync and attach. Prints, per table and
# method, `ok` or the first sentence of the refusal, then the counts.
#
#   scripts/real-schemas.sh
#   MIGRATE=/path/to/an/older/migrate scripts/real-schemas.sh   # before/after
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMAS=${REAL_SCHEMAS:-../shared/data/real-schemas}

scripts/install-postgres.sh
if [ -z "${MIGRATE:-}" ]; then
    cargo build --locked -q
    MIGRATE=$PWD/target/debug/migrate
fi
source scripts/pg-env.sh
DIR=$(mktemp -d /tmp/migrate-schemas.XXXXXX)
cleanup() { pg_stop "$DIR"; rm -rf "$DIR"; }
trap cleanup EXIT
pg_start "$DIR"
chmod 755 "$DIR"

declare -A total ok
for m in move sync attach; do total[$m]=0; ok[$m]=0; done
for dump in "$SCHEMAS"/*.sql; do
    app=$(basename "$dump" .sql)
    db="s_${app//[^a-z0-9]/_}"
    createdb "$db"
    # A dump names roles and extensions this cluster may lack; what loads is
    # what is planned.
    grep -v '^\\\(un\)\?restrict' "$dump" | psql -X -q -d "$db" -v ON_ERROR_STOP=0 >/dev/null 2>&1 || true
    psql -X -q -d "$db" -c "ANALYZE" >/dev/null 2>&1 || true
    # Candidate tables and their time column: the first of the usual names.
    psql -X -At -F '|' -d "$db" >"$DIR/$app.tables" <<'SQL'
SELECT format('%I.%I', n.nspname, c.relname), (
         SELECT a.attname FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           AND format_type(a.atttypid, NULL) IN ('timestamp with time zone', 'timestamp without time zone', 'date')
         ORDER BY array_position(ARRAY['created_at', 'inserted_at', 'created', 'timestamp', 'action_time',
                                       'created_on', 'date_created', 'time', 'event_time', 'updated_at']::name[], a.attname)
                  NULLS LAST, a.attnum
         LIMIT 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND c.relname ~* '(event|log|audit|notification|version|activit|histor|message|job|build|action|change|session|token|request|execution)'
ORDER BY 1
SQL
    echo "== $app"
    while IFS='|' read -r table column; do
        [ -n "$column" ] || { printf '  %-55s no time column\n' "$table"; continue; }
        line="  $(printf '%-55s %-14s' "$table" "$column")"
        for m in move sync attach; do
            cat >"$DIR/plan.yaml" <<YAML
table: $table
partition:
  by: range
  column: $column
  interval: month
method: $m
YAML
            total[$m]=$((total[$m] + 1))
            if out=$(DATABASE_URL="host=$PGHOST port=$PGPORT user=postgres dbname=$db" \
                "$MIGRATE" --quiet plan "$DIR/plan.yaml" 2>&1 >/dev/null); then
                ok[$m]=$((ok[$m] + 1))
                line+=" $m: ok;"
            else
                why=$(printf '%s' "$out" | grep -v '^[0-9T:.-]* *INFO' | head -n 1 | sed 's/^migrate: //' | cut -c1-160)
                line+=" $m: $why;"
            fi
        done
        echo "$line"
    done <"$DIR/$app.tables"
done
echo "== accepted: move ${ok[move]}/${total[move]}, sync ${ok[sync]}/${total[sync]}, attach ${ok[attach]}/${total[attach]}"
