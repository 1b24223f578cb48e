#!/usr/bin/env bash
# WAL written by each method per byte of the table with its indexes
# (300,000 rows, full_page_writes on), for the estimate `plan` prints.
# MIGRATE= picks the binary (default: the debug build).
#   scripts/bench/wal-per-byte.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/scripts/pg-env.sh"
BIN=${MIGRATE:-$here/target/debug/migrate}
d=$(mktemp -d); rm -rf "$d"
PG_PORT=5991 pg_start "$d" >/dev/null
trap 'pg_stop "$d"; rm -rf "$d"' EXIT
for method in move sync attach; do
  psql -Xq -c "CREATE DATABASE w_$method"
  export PGDATABASE=w_$method
  psql -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE events (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, kind text NOT NULL, payload jsonb NOT NULL);
CREATE INDEX events_ts ON events (ts);
INSERT INTO events (ts, kind, payload)
SELECT now() - (g % 90) * interval '1 day', 'k' || (g % 5), jsonb_build_object('g', g, 'pad', repeat('x', 120))
FROM generate_series(1, 300000) g;
VACUUM ANALYZE events;
CHECKPOINT;
SQL
  size=$(psql -XAtc "SELECT pg_total_relation_size('events')")
  printf 'table: public.events\npartition:\n  by: range\n  column: ts\n  interval: month\nmethod: %s\n' "$method" > "$d/$method.yaml"
  before=$(psql -XAtc "SELECT pg_current_wal_lsn()")
  DATABASE_URL="host=$PGHOST port=$PGPORT user=postgres dbname=w_$method" "$BIN" apply "$d/$method.yaml" >/dev/null 2>&1
  wal=$(psql -XAtc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$before')::bigint")
  echo "$method: table with indexes $size bytes, WAL $wal bytes, $(python3 -c "print(round($wal / $size, 2))") per byte"
done
