#!/usr/bin/env bash
# The locked sections (route, swap) with and without three of the
# table's own row triggers, for each method, on 200,000 rows in 16 (attach:
# 4) partitions: the triggers are created on the partitioned table inside
# the swap. Needs a release build (MIGRATE= to use another binary).
#   scripts/bench/trigger-holds.sh
set -e
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/scripts/pg-env.sh"
BIN=${MIGRATE:-$here/target/release/migrate}
for trig in 0 3; do for method in move sync attach; do
  d=$(mktemp -d); rm -rf $d; PG_PORT=5977 pg_start $d
  psql -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE runs (id bigserial PRIMARY KEY);
INSERT INTO runs SELECT FROM generate_series(1,100);
CREATE TABLE ev (id bigserial PRIMARY KEY, run_id bigint NOT NULL REFERENCES runs(id), ts timestamptz NOT NULL, payload text);
INSERT INTO ev (run_id, ts, payload) SELECT 1 + g % 100, now() - (g % 360) * interval '1 day', 'x' FROM generate_series(1, 200000) g;
CREATE TABLE audit (op text, id bigint);
CREATE FUNCTION a() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN INSERT INTO audit VALUES (TG_OP, 0); RETURN NULL; END';
SQL
  if [ $trig = 3 ]; then psql -Xq -c "CREATE TRIGGER t1 AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION a(); CREATE TRIGGER t2 AFTER UPDATE ON ev FOR EACH ROW EXECUTE FUNCTION a(); CREATE TRIGGER t3 AFTER DELETE ON ev FOR EACH ROW EXECUTE FUNCTION a();"; fi
  cat > $d/p.yaml <<Y
table: public.ev
partition:
  by: range
  column: ts
  interval: month
method: $method
batch:
  size: 20000
Y
  $BIN --quiet apply $d/p.yaml >/dev/null 2>&1 || $BIN apply $d/p.yaml
  echo "triggers=$trig method=$method partitions=$(psql -XAtc "select count(*) from pg_inherits where inhparent='ev'::regclass"): $(psql -XAtc "select string_agg(detail, '; ' order by at) from repartition.events where kind='held'")"
  pg_stop $d; rm -rf $d
done; done
