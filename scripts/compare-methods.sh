#!/usr/bin/env bash
# Runs the three methods on the same event-log table, each in its own
# database of one throwaway cluster, under the same live traffic, and
# prints wall time, the strong-lock transactions and how long each held its
# locks, and what the traffic saw.
#
#   scripts/compare-methods.sh            # 300,000 rows
#   scripts/compare-methods.sh 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-300000}

scripts/install-postgres.sh
cargo build --release --locked -q
MIGRATE=$PWD/target/release/migrate
source scripts/pg-env.sh
DIR=$(mktemp -d /tmp/migrate-compare.XXXXXX)
cleanup() { touch "$DIR/stop"; wait 2>/dev/null || true; pg_stop "$DIR"; rm -rf "$DIR"; }
trap cleanup EXIT
pg_start "$DIR"

cat > "$DIR/traffic.sql" <<'SQL'
\set id random(1, :maxid)
\set run random(1, 10000)
\set mins random(0, 20000)
BEGIN;
INSERT INTO workflow_events (run_id, ts, type, payload) VALUES (:run, now() - :mins * interval '1 minute', 'live', '{}') RETURNING id;
UPDATE workflow_events SET payload = '{"touched": true}' WHERE id = :id;
SELECT id, ts, type FROM workflow_events WHERE id = :id;
END;
SQL

seed() {
    createdb "$1"
    psql -q -v ON_ERROR_STOP=1 -v rows="$ROWS" -d "$1" <<'SQL'
CREATE TABLE workflow_runs (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO workflow_runs (name) SELECT 'run ' || g FROM generate_series(1, 10000) g;
CREATE TABLE workflow_events (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    ts timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL,
    payload jsonb NOT NULL
);
CREATE INDEX workflow_events_run_id_idx ON workflow_events (run_id);
CREATE INDEX workflow_events_type_idx ON workflow_events (type);
INSERT INTO workflow_events (run_id, ts, type, payload)
SELECT 1 + g % 10000, now() - (g % 150) * interval '1 day' - (g % 86400) * interval '1 second',
       (ARRAY['started', 'completed', 'failed'])[1 + g % 3], jsonb_build_object('g', g, 'detail', repeat('x', 120))
FROM generate_series(1, :rows) g;
VACUUM ANALYZE;
SQL
}

run_method() {
    local method=$1 db=m_$1 plan="$DIR/$1.yaml"
    sed "s/^method: move/method: $method/" plans/workflow_events.yaml > "$plan"
    seed "$db"
    rm -f "$DIR/stop" "$DIR/traffic.log"
    (
        while [ ! -f "$DIR/stop" ]; do
            pgbench -n -M prepared -c 4 -j 2 -R 200 -T 3 -D maxid="$ROWS" -f "$DIR/traffic.sql" "$db" >>"$DIR/traffic.log" 2>&1 \
                || echo "pgbench error" >>"$DIR/traffic.log"
        done
    ) &
    sleep 2
    local start end
    start=$(date +%s.%N)
    DATABASE_URL="host=$PGHOST port=$PGPORT user=postgres dbname=$db" "$MIGRATE" --quiet apply "$plan" 2>"$DIR/$method.log"
    if [ "$method" = sync ]; then
        DATABASE_URL="host=$PGHOST port=$PGPORT user=postgres dbname=$db" "$MIGRATE" --quiet cleanup "$plan" 2>>"$DIR/$method.log"
    fi
    end=$(date +%s.%N)
    local split_secs="-"
    if [ "$method" = attach ]; then
        local s0 s1
        s0=$(date +%s.%N)
        DATABASE_URL="host=$PGHOST port=$PGPORT user=postgres dbname=$db" "$MIGRATE" --quiet split "$plan" 2>>"$DIR/$method.log"
        s1=$(date +%s.%N)
        split_secs=$(awk "BEGIN {printf \"%.1f\", $s1 - $s0}")
    fi
    sleep 2
    touch "$DIR/stop"
    wait
    local committed failed errors held
    committed=$(awk '/number of transactions actually processed/ {n += $NF} END {print n + 0}' "$DIR/traffic.log")
    failed=$(awk '/number of failed transactions/ {f += $5} END {print f + 0}' "$DIR/traffic.log")
    errors=$(grep -ciE "aborted|error" "$DIR/traffic.log" || true)
    held=$(psql -At -d "$db" -c "SELECT string_agg(detail, '; ' ORDER BY id) FROM repartition.events WHERE kind = 'held'")
    printf '%-7s | %8.1f s | split %6s s | traffic: %6d committed, %d failed, %d errors\n' \
        "$method" "$(awk "BEGIN {print $end - $start}")" "$split_secs" "$committed" "$failed" "$errors"
    printf '        | transactions that held locks: %s\n' "$held"
}

echo "== $ROWS rows, 4 clients at 200 transactions/s through the table's name"
for m in move sync attach; do
    run_method "$m"
done
