#!/usr/bin/env bash
# The demo: a throwaway PostgreSQL, an event log of about a million rows,
# live application traffic through the table's name (pgbench, prepared
# statements), and the migration to monthly partitions with a progress bar.
# Everything lives in a temporary directory that is removed at the end.
#
#   scripts/demo.sh              # 1,000,000 rows
#   DEMO_ROWS=200000 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${DEMO_ROWS:-1000000}
PLAN=plans/workflow_events.yaml

scripts/install-postgres.sh
echo "== building migrate"
cargo build --release --locked -q
MIGRATE=$PWD/target/release/migrate

source scripts/pg-env.sh
DIR=$(mktemp -d /tmp/migrate-demo.XXXXXX)
cleanup() {
    touch "$DIR/stop" 2>/dev/null || true
    wait 2>/dev/null || true
    pg_stop "$DIR"
    rm -rf "$DIR"
}
trap cleanup EXIT
echo "== starting a throwaway PostgreSQL in $DIR"
pg_start "$DIR"

echo "== seeding public.workflow_events with $ROWS rows"
psql -q -v ON_ERROR_STOP=1 -v rows="$ROWS" <<'SQL'
CREATE TABLE workflow_runs (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO workflow_runs (name) SELECT 'run ' || g FROM generate_series(1, 10000) g;
CREATE TABLE workflow_events (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    ts timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_events_run_id_idx ON workflow_events (run_id);
CREATE INDEX workflow_events_run_ts_idx ON workflow_events (run_id, ts);
CREATE INDEX workflow_events_type_idx ON workflow_events (type);
INSERT INTO workflow_events (run_id, ts, type, payload)
SELECT 1 + g % 10000,
       now() - (g % 150) * interval '1 day' - (g % 86400) * interval '1 second',
       (ARRAY['started', 'node_started', 'node_completed', 'completed', 'failed'])[1 + g % 5],
       jsonb_build_object('g', g, 'node', 'n' || (g % 50), 'detail', repeat('x', 120))
FROM generate_series(1, :rows) g;
VACUUM ANALYZE;
SQL
psql -qAt -c "SELECT 'table size: ' || pg_size_pretty(pg_total_relation_size('workflow_events'))"

echo "== what the migration will do (migrate plan, abridged)"
"$MIGRATE" plan "$PLAN" | sed -n '1,/^== Phase 1/p' | head -n -1

cat > "$DIR/traffic.sql" <<'SQL'
\set id random(1, :maxid)
\set run random(1, 10000)
\set days random(0, 140)
BEGIN;
INSERT INTO workflow_events (run_id, ts, type, payload) VALUES (:run, now() - :days * interval '1 day', 'demo', '{"source": "pgbench"}') RETURNING id;
UPDATE workflow_events SET payload = '{"touched": true}' WHERE id = :id;
SELECT id, ts, type FROM workflow_events WHERE id = :id;
\if :id % 10 = 0
DELETE FROM workflow_events WHERE id = :id + 1;
\endif
END;
SQL
echo "== live traffic: 4 clients through the table's name, 250 transactions/s, prepared statements"
(
    while [ ! -f "$DIR/stop" ]; do
        pgbench -n -M prepared -c 4 -j 2 -R 250 -T 5 -D maxid="$ROWS" -f "$DIR/traffic.sql" >>"$DIR/traffic.log" 2>&1 \
            || echo "pgbench exited with an error" >>"$DIR/traffic.log"
    done
) &
sleep 3

echo "== migrate apply $PLAN"
"$MIGRATE" apply "$PLAN"
sleep 3
touch "$DIR/stop"
wait

echo "== the application's view during the migration"
awk '/number of transactions actually processed/ {n += $NF} /number of failed transactions/ {f += $5}
     /aborted|error/ {e++} END {printf "transactions committed: %d, failed: %d, errors: %d\n", n, f, e}' "$DIR/traffic.log"
grep -iE "aborted|error" "$DIR/traffic.log" | head -5 || true

echo "== the result"
psql -c '\d workflow_events'
psql -c "SELECT c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bounds, (SELECT count(*) FROM workflow_events e WHERE e.tableoid = c.oid) AS rows
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'workflow_events'::regclass ORDER BY 1"
"$MIGRATE" status "$PLAN"
