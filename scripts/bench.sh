#!/usr/bin/env bash
# Benchmarks repartitioning an event log, side by side on one throwaway
# cluster: the physical limit (one INSERT … SELECT), a plain batched id-range
# copy, the move's statement looped inside the server (its own cost, with no
# client), `migrate apply` with the move and sync methods at several batch
# sizes, the move with one worker (its default is two) and in the gentle
# mode, and pg_partman's partition_data_proc; then what an application sees
# during a move compared with a period without one and a period with only
# the view, what its statements waited on, and what it sees during the swap.
#
# Every contender gets its own copy of the table (a database created from a
# template), the same monthly partitions and indexes, and a CHECKPOINT first.
# The table is printed on stdout and the figures written as JSON.
#
#   scripts/bench.sh                    # 2,000,000 rows
#   scripts/bench.sh --large            # 10,000,000 rows
#   scripts/bench.sh --rows 200000      # a quick run
#   scripts/bench.sh --json PATH        # default: ./bench-results.json
#   scripts/bench.sh --sizes "5000 10000 20000 50000"   # batch sizes tried for "best"
#   scripts/bench.sh --rate 100         # the application's transactions/s (200)
#   scripts/bench.sh --connection-life 30   # seconds each of the application's
#                                       # connections lives (5); its first statements
#                                       # on a new connection load the catalog
#   scripts/bench.sh --budgets "2x"     # throttle.latency budgets run with traffic ("1.5x 2x 4x")
#   scripts/bench.sh --only REGEX       # only contenders whose label matches
#   scripts/bench.sh --gentle-variants "A=/path/bin B=/path/bin"
#                                       # the gentle move again with each binary
#   MIGRATE_BIN=/path/bin scripts/bench.sh   # that binary instead of a build
#
# --only always keeps the physical limit (run first and last), which every
# ratio needs, and, whenever a contender with traffic runs, two periods as
# long as the longest of those: the no-migration baseline, and the view
# alone (the table routed, no row moving), which tells the view's own cost
# from the moving's.
set -euo pipefail

ROWS=2000000
JSON=bench-results.json
SIZES="5000 10000 20000 50000"
ID_STEP=10000        # ids per transaction of the plain id-range copy
LOOP_ROWS=5000       # rows per batch of the server-side move loop
RATE=200             # the application's transactions per second
LIFE=5               # seconds each of the application's connections lives
BUDGETS="1.5x 2x 4x" # throttle.latency budgets measured with traffic
BUDGET_SECS=90       # a run with a budget is stopped after this long
ONLY=
VARIANTS=
while [ $# -gt 0 ]; do
    case $1 in
        --large) ROWS=10000000 ;;
        --rows) ROWS=${2:?--rows needs a number}; shift ;;
        --rows=*) ROWS=${1#*=} ;;
        --json) JSON=${2:?--json needs a path}; shift ;;
        --json=*) JSON=${1#*=} ;;
        --sizes) SIZES=${2:?--sizes needs a list}; shift ;;
        --rate) RATE=${2:?--rate needs a number}; shift ;;
        --connection-life) LIFE=${2:?--connection-life needs a number of seconds}; shift ;;
        --budgets) BUDGETS=${2?--budgets needs a list (may be empty)}; shift ;;
        --only) ONLY=${2:?--only needs a regular expression}; shift ;;
        --only=*) ONLY=${1#*=} ;;
        --gentle-variants) VARIANTS=${2:?--gentle-variants needs NAME=BIN pairs}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if ! [[ $ROWS =~ ^[0-9]+$ ]] || [ "$ROWS" -lt 10000 ]; then
    echo "--rows must be a number of at least 10000" >&2
    exit 2
fi
if ! [[ $RATE =~ ^[0-9]+$ ]] || [ "$RATE" -lt 1 ]; then
    echo "--rate must be a positive number" >&2
    exit 2
fi
if ! [[ $LIFE =~ ^[0-9]+$ ]] || [ "$LIFE" -lt 1 ]; then
    echo "--connection-life must be a positive number of seconds" >&2
    exit 2
fi
if [ -n "$ONLY" ]; then
    # Status 2 is an invalid expression; 1 just no match.
    [[ x =~ $ONLY ]] || [ $? -ne 2 ] || { echo "--only: invalid regular expression: $ONLY" >&2; exit 2; }
fi
case $JSON in /*) ;; *) JSON=$PWD/$JSON ;; esac
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
if [ -n "${MIGRATE_BIN:-}" ]; then
    MIGRATE_BIN=$(abs "$MIGRATE_BIN")
    [ -x "$MIGRATE_BIN" ] || { echo "MIGRATE_BIN is not an executable: $MIGRATE_BIN" >&2; exit 2; }
fi
VARIANT_NAMES=()
VARIANT_BINS=()
for v in $VARIANTS; do
    name=${v%%=*} bin=${v#*=}
    if [ "$name" = "$v" ] || ! [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || [ -z "$bin" ]; then
        echo "--gentle-variants: expected NAME=BIN, got $v" >&2
        exit 2
    fi
    bin=$(abs "$bin")
    [ -x "$bin" ] || { echo "--gentle-variants: not an executable: $bin" >&2; exit 2; }
    VARIANT_NAMES+=("$name")
    VARIANT_BINS+=("$bin")
done
want() { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; }
cd "$(dirname "$0")/.."
HERE=$PWD
BENCH_START=$(date +%s)
log() { echo "== $*" >&2; }

scripts/install-postgres.sh
if [ -z "${PG_BIN:-}" ] && [ -x /usr/lib/postgresql/15/bin/initdb ]; then
    export PG_BIN=/usr/lib/postgresql/15/bin
fi
source scripts/pg-env.sh
MAJOR=$("$(pg_bin)/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')

if [ -n "${MIGRATE_BIN:-}" ]; then
    COMMIT=$MIGRATE_BIN
else
    log "building migrate"
    nice -n 10 cargo build --release --locked -q
    COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q .; then COMMIT=$COMMIT+changes; fi
fi
TIMED=$HERE/scripts/bench/timed.py

# pg_partman comes from Debian's packages; without it its row says n/a.
PARTMAN_NOTE=
if want "pg_partman partition_data_proc" && ! ls /usr/share/postgresql/"$MAJOR"/extension/pg_partman.control >/dev/null 2>&1; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing postgresql-$MAJOR-partman"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq "postgresql-$MAJOR-partman" >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq "postgresql-$MAJOR-partman" >/dev/null 2>&1; } \
        || PARTMAN_NOTE="postgresql-$MAJOR-partman could not be installed"
fi

DIR=$(mktemp -d /tmp/migrate-bench.XXXXXX)
TRAFFIC_PID=
SAMPLER_PID=
cleanup() {
    [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
    if [ -n "$TRAFFIC_PID" ]; then
        touch "$DIR/stop"
        kill "$TRAFFIC_PID" 2>/dev/null || true
        wait "$TRAFFIC_PID" 2>/dev/null || true
    fi
    pg_stop "$DIR"
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Every contender runs this copy, even if target/ is rebuilt meanwhile.
cp "${MIGRATE_BIN:-target/release/migrate}" "$DIR/migrate"
MIGRATE=$DIR/migrate
for i in "${!VARIANT_NAMES[@]}"; do
    cp "${VARIANT_BINS[$i]}" "$DIR/migrate-${VARIANT_NAMES[$i]}"
done
log "starting a throwaway PostgreSQL in $DIR"
pg_start "$DIR"
export PGTZ=UTC   # partition bounds in UTC, as the plan's time_zone says
mkdir -p "$DIR/c"

q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

log "seeding the template: $ROWS rows"
q -c "CREATE DATABASE bench_tmpl"
# Rows arrive in time order over five months, as in an event log, with a
# little lateness; payloads are about 200 bytes.
q -v rows="$ROWS" -d bench_tmpl <<'SQL'
SET maintenance_work_mem = '512MB';
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL,
    ts timestamptz NOT NULL,
    type text,
    payload jsonb
);
INSERT INTO events (uuid, ts, type, payload)
SELECT gen_random_uuid(),
       now() - interval '150 days' + (g::float8 / :rows) * interval '150 days' - ((g::bigint * 7919) % 600) * interval '1 second',
       (ARRAY['run.started', 'node.started', 'node.completed', 'run.completed', 'run.failed'])[1 + g % 5],
       jsonb_build_object('run', 'r' || (g / 40), 'node', 'n' || (g % 50), 'attempt', 1 + g % 3, 'detail', repeat('x', 120))
FROM generate_series(1, :rows) g;
CREATE INDEX events_uuid_idx ON events (uuid);
CREATE INDEX events_ts_idx ON events (ts);
CREATE INDEX events_type_ts_idx ON events (type, ts);
VACUUM (FREEZE, ANALYZE) events;
SQL
TABLE_BYTES=$(q -d bench_tmpl -c "SELECT pg_total_relation_size('events')")
HEAP_BYTES=$(q -d bench_tmpl -c "SELECT pg_table_size('events')")
# No autovacuum worker may sit in the template while databases are copied.
q -c "ALTER DATABASE bench_tmpl WITH ALLOW_CONNECTIONS false"
log "table: $(numfmt --to=iec "$TABLE_BYTES")B with indexes"

# The partitioned table every hand-made contender fills: the primary key
# with the partition key appended, the same three indexes.
parted_table() {   # name
    cat <<SQL
CREATE TABLE $1 (
    id bigint NOT NULL,
    uuid uuid NOT NULL,
    ts timestamptz NOT NULL,
    type text,
    payload jsonb,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX ON $1 (uuid);
CREATE INDEX ON $1 (ts);
CREATE INDEX ON $1 (type, ts);
SQL
}

# The hand-made partitioned table of rows 1 to 3, with the partitions the
# tool creates (months from the first row's to three past the current one).
PART_DDL="$(parted_table events_part)
$(cat <<'SQL'
DO $$
DECLARE m timestamptz;
BEGIN
    FOR m IN SELECT generate_series(date_trunc('month', min(ts)), date_trunc('month', now()) + interval '3 months', interval '1 month') FROM events LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF events_part FOR VALUES FROM (%L) TO (%L)',
                       'events_part_' || to_char(m, 'YYYY"m"MM'), m, m + interval '1 month');
    END LOOP;
END $$;
SQL
)"

# The application: a single-row insert, an update by id and a read by id,
# each its own transaction, through the table's name.
cat > "$DIR/ins.sql" <<'SQL'
\set mins random(0, 200000)
INSERT INTO events (uuid, ts, type, payload) VALUES (gen_random_uuid(), now() - :mins * interval '1 minute', 'live', '{"source": "pgbench", "detail": "an application event of modest size"}') RETURNING id;
SQL
cat > "$DIR/upd.sql" <<'SQL'
\set id random(1, :maxid)
UPDATE events SET payload = '{"touched": true}' WHERE id = :id;
SQL
cat > "$DIR/sel.sql" <<'SQL'
\set id random(1, :maxid)
SELECT id, uuid, ts, type, payload FROM events WHERE id = :id;
SQL

SEQ=0
C=
DB=
put() { printf '%s=%s\n' "$1" "$2" >>"$C/meta"; }
contender() {   # name label kind
    SEQ=$((SEQ + 1))
    C=$DIR/c/$(printf %02d "$SEQ")-$1
    DB=bench_$(printf %02d "$SEQ")
    mkdir -p "$C"
    put name "$1"
    put label "$2"
    put kind "$3"
    put load_start "$(cut -d' ' -f1 /proc/loadavg)"
    log "$2"
}
# Other work on the machine skews the figures: the load is kept with them.
measure() {
    "$@"
    put load_end "$(cut -d' ' -f1 /proc/loadavg)"
}
fresh_db() {
    local try
    for try in 1 2 3 4 5; do
        q -c "CREATE DATABASE $DB TEMPLATE bench_tmpl STRATEGY FILE_COPY" 2>"$C/createdb.err" && return 0
        sleep 2
    done
    cat "$C/createdb.err" >&2
    return 1
}
drop_db() { q -c "DROP DATABASE IF EXISTS $DB" || true; }
checkpoint() { q -c "CHECKPOINT"; }
lsn() { q -c "SELECT pg_current_wal_lsn()"; }
wal_since() { q -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$1')::bigint"; }
partitions() {   # parent [a partition not to count]
    q -d "$DB" -c "SELECT count(*) FROM pg_inherits WHERE inhparent = '$1'::regclass AND inhrelid::regclass::text <> '${2:-}'"
}
failed() {   # log file: the row says why
    put status failed
    put note "$(grep -v '^\s*$' "$1" | tail -n 1 | cut -c1-200)"
}

traffic_start() {
    local dir=$C/traffic
    mkdir -p "$dir"
    rm -f "$DIR/stop"
    put traffic yes
    # Chunks of $LIFE s (5 by default), so that every transaction's log
    # line is flushed: pgbench writes its log at exit. Each chunk connects
    # anew, and a connection's first statement of each kind loads the
    # catalog for the relations it touches (through the move's view, ten
    # of them here, and the routing's function).
    (
        n=0
        while [ ! -f "$DIR/stop" ]; do
            n=$((n + 1))
            pgbench -n -M prepared -c 4 -j 2 -R "$RATE" -T "$LIFE" -D maxid="$ROWS" -l --log-prefix="$dir/log$n" \
                -f "$DIR/ins.sql" -f "$DIR/upd.sql" -f "$DIR/sel.sql" "$DB" >>"$dir/pgbench.out" 2>&1 \
                || echo "pgbench exited with an error" >>"$dir/pgbench.out"
        done
    ) &
    TRAFFIC_PID=$!
    # What the application's statements wait on: pg_stat_activity every 10 ms.
    psql -XAtq -d postgres >"$dir/waits" 2>/dev/null <<SQL &
SELECT extract(epoch FROM clock_timestamp()), coalesce(wait_event_type, ''), coalesce(wait_event, ''), split_part(query, ' ', 1)
FROM pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active' AND datname = '$DB' \watch 0.01
SQL
    SAMPLER_PID=$!
    sleep 2   # connected and at rate before the period starts
}
traffic_stop() {
    touch "$DIR/stop"
    wait "$TRAFFIC_PID" || true
    TRAFFIC_PID=
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
}

# Rows 1 to 3: copies into the hand-made partitioned table.
run_copy() {   # single | singlemove | idrange | limitloop | serverloop
    local mode=$1 l0 maxid lo pages
    fresh_db
    q -d "$DB" <<<"$PART_DDL"
    if [ "$mode" = single ]; then
        echo "INSERT INTO events_part SELECT * FROM events;" > "$C/copy.sql"
    elif [ "$mode" = singlemove ]; then
        # The move method's own limit: a copy and a delete, the whole
        # table in one statement, with the batches' work_mem.
        cat > "$C/copy.sql" <<'SQL'
SET work_mem = '64MB';
WITH moved AS (DELETE FROM ONLY events RETURNING *) INSERT INTO events_part SELECT * FROM moved;
SQL
    elif [ "$mode" = limitloop ]; then
        # The naive loop of the write-ups: take the next rows with a LIMIT
        # until none are left; each statement reads past the dead rows the
        # ones before left at the head of the table.
        cat > "$C/copy.sql" <<SQL
CREATE PROCEDURE limit_loop(n int) LANGUAGE plpgsql AS \$\$
DECLARE
    moved bigint;
BEGIN
    LOOP
        WITH m AS (DELETE FROM ONLY events WHERE id IN (SELECT id FROM ONLY events LIMIT n) RETURNING *)
        INSERT INTO events_part SELECT * FROM m;
        GET DIAGNOSTICS moved = ROW_COUNT;
        COMMIT;
        EXIT WHEN moved = 0;
    END LOOP;
END
\$\$;
CALL limit_loop($LOOP_ROWS);
SQL
    elif [ "$mode" = serverloop ]; then
        # The move's own statement and settings, looped inside the server:
        # what the statement costs with no client, no bookkeeping, no
        # round trips.
        pages=$(q -d "$DB" -c "SELECT ceil($LOOP_ROWS / (reltuples / relpages))::int FROM pg_class WHERE oid = 'events'::regclass")
        cat > "$C/copy.sql" <<SQL
CREATE PROCEDURE move_loop(step int) LANGUAGE plpgsql AS \$\$
DECLARE
    p int := 0;
    n int := pg_relation_size('events') / current_setting('block_size')::int;
BEGIN
    SET synchronous_commit = off;
    SET work_mem = '64MB';
    BEGIN
        SET wal_compression = lz4;   -- as the tool's batches, where the server has it
    EXCEPTION WHEN others THEN
        NULL;
    END;
    WHILE p < n LOOP
        WITH moved AS (DELETE FROM ONLY events WHERE ctid >= ('(' || p || ',0)')::tid AND ctid < ('(' || (p + step) || ',0)')::tid RETURNING *)
        INSERT INTO events_part SELECT * FROM moved;
        p := p + step;
        COMMIT;
    END LOOP;
END
\$\$;
CALL move_loop($pages);
SQL
    else
        maxid=$(q -d "$DB" -c "SELECT max(id) FROM events")
        {
            # The tool's batches commit asynchronously; so does this copy.
            echo 'SET synchronous_commit = off;'
            echo '\timing on'
            for ((lo = 0; lo < maxid; lo += ID_STEP)); do
                echo "INSERT INTO events_part SELECT * FROM events WHERE id > $lo AND id <= $((lo + ID_STEP));"
            done
        } > "$C/copy.sql"
    fi
    checkpoint
    l0=$(lsn)
    # psql without -1: every statement is its own transaction.
    if "$TIMED" "$C/timed.json" -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$C/copy.sql" >"$C/out" 2>"$C/err"; then
        put wal_bytes "$(wal_since "$l0")"
        put status ok
        put rows "$(q -d "$DB" -c "SELECT count(*) FROM events_part")"
        put partitions "$(partitions events_part)"
        grep '^Time:' "$C/out" | awk '{print $2}' > "$C/batch_ms" || true
        # Each statement's rows, counted after the copy so as not to warm the cache before it.
        [ "$mode" != idrange ] || q -d "$DB" -c "SELECT (SELECT count(*) FROM events_part WHERE id > lo AND id <= lo + $ID_STEP)
                                               FROM generate_series(0, $maxid - 1, $ID_STEP) lo ORDER BY lo" > "$C/batch_rows"
    else
        failed "$C/err"
    fi
    drop_db
}

make_plan() {   # method, batch: lines (size left out means the default), [more top-level keys]
    awk -v m="$1" -v extra="$2" '
        /^table:/ { print "table: public.events"; next }
        /^method:/ { print "method: " m; next }
        /^  size:/ { next }
        /^  target_duration:/ { next }
        { print }
        /^batch:/ { printf "%s", extra }
    ' plans/workflow_events.yaml
    printf '%s' "${3:-}"
}

# Rows 3 to 5: the tool. $2 is the batch: section without its key, one
# "key: value" per line; with $3 = traffic, the application runs meanwhile;
# $4 is another binary to run.
run_tool() {
    local method=$1 batch=$2 traffic=${3:-} bin=${4:-$MIGRATE} budget=${5:-} l0 rc=0 url throttle=
    if [ -n "$budget" ]; then
        throttle="throttle:
  latency: $budget
"
        put latency_budget "$budget"
    fi
    make_plan "$method" "$(printf '%s' "$batch" | sed 's/^/  /')
" "$throttle" > "$C/plan.yaml"
    put method "$method"
    fresh_db
    url="host=$PGHOST port=$PGPORT user=postgres dbname=$DB"
    # An unknown plan key is refused before anything changes.
    if ! DATABASE_URL=$url "$bin" --quiet plan "$C/plan.yaml" >"$C/plan.out" 2>"$C/plan.err"; then
        if grep -q 'unknown field' "$C/plan.err"; then
            put status na
            put note "n/a (not supported by this build)"
        else
            failed "$C/plan.err"
        fi
        drop_db
        return 0
    fi
    checkpoint
    [ "$traffic" = traffic ] && traffic_start
    l0=$(lsn)
    # A budget the tool cannot hold keeps it at its slowest pace: such a
    # run is stopped (SIGINT, at a batch boundary) after BUDGET_SECS, and
    # its rows per second are those it moved meanwhile.
    local stop=()
    [ -n "$budget" ] && stop=(timeout --preserve-status -s INT "$BUDGET_SECS")
    DATABASE_URL=$url "$TIMED" "$C/timed.json" -- "${stop[@]}" "$bin" --quiet apply "$C/plan.yaml" 2>"$C/migrate.log" || rc=$?
    put wal_bytes "$(wal_since "$l0")"
    if [ "$traffic" = traffic ]; then
        sleep 2
        traffic_stop
    fi
    if [ -n "$budget" ] && [ "$rc" -eq 130 ]; then
        put status ok
        put partial yes
        put note "stopped after ${BUDGET_SECS} s"
        q -d "$DB" -F $'\t' -c "SELECT batch_no, rows, extract(epoch FROM started_at), extract(epoch FROM finished_at)
                                FROM repartition.batches WHERE direction = 'forward' ORDER BY batch_no" > "$C/batches.tsv"
        q -d "$DB" -F $'\t' -c "SELECT extract(epoch FROM at), kind, detail FROM repartition.events ORDER BY id" > "$C/events.tsv"
        put rows "$(q -d "$DB" -c "SELECT rows_moved FROM repartition.migrations")"
    elif [ "$rc" -ne 0 ]; then
        failed "$C/migrate.log"
    else
        put status ok
        q -d "$DB" -F $'\t' -c "SELECT batch_no, rows, extract(epoch FROM started_at), extract(epoch FROM finished_at)
                                FROM repartition.batches WHERE direction = 'forward' ORDER BY batch_no" > "$C/batches.tsv"
        q -d "$DB" -F $'\t' -c "SELECT extract(epoch FROM at), kind, detail FROM repartition.events ORDER BY id" > "$C/events.tsv"
        put partitioned "$(q -d "$DB" -c "SELECT relkind = 'p' FROM pg_class WHERE oid = 'public.events'::regclass")"
        put partitions "$(partitions events)"
        put rows "$(q -d "$DB" -c "SELECT count(*) FROM events")"
    fi
    drop_db
}

# Row 6: pg_partman owns the parent; every row waits in its default
# partition, and partition_data_proc moves them out month by month.
run_partman() {
    local l0 setup
    if [ -n "$PARTMAN_NOTE" ]; then
        put status na
        put note "n/a ($PARTMAN_NOTE)"
        return 0
    fi
    fresh_db
    setup="CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
ALTER TABLE events RENAME TO events_src;
$(parted_table events)
$(cat <<'SQL'
-- Partman's children start next month, so every existing row lands in
-- the default partition: the situation partition_data_proc is for.
SELECT partman.create_parent('public.events', 'ts', 'native', 'monthly', p_premake := 3,
       p_start_partition := to_char(date_trunc('month', now()) + interval '1 month', 'YYYY-MM-DD'));
INSERT INTO events SELECT * FROM events_src;
DROP TABLE events_src;
VACUUM ANALYZE events;
SQL
)"
    if ! q -d "$DB" >"$C/setup.out" 2>&1 <<<"$setup"; then
        failed "$C/setup.out"
        drop_db
        return 0
    fi
    put partman_version "$(q -d "$DB" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")"
    put default_rows "$(q -d "$DB" -c "SELECT count(*) FROM events_default")"
    checkpoint
    l0=$(lsn)
    # p_wait 0: no sleep between batches (its default is a second).
    if "$TIMED" "$C/timed.json" --stamp "$C/notices" -- \
        psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL partman.partition_data_proc('public.events', p_wait := 0)" \
        >"$C/out" 2>"$C/err"; then
        put wal_bytes "$(wal_since "$l0")"
        put status ok
        put rows "$(q -d "$DB" -c "SELECT count(*) FROM events WHERE tableoid <> 'events_default'::regclass")"
        put left_in_default "$(q -d "$DB" -c "SELECT count(*) FROM events_default")"
        put partitions "$(partitions events 'events_default')"
    else
        failed "$C/err"
    fi
    drop_db
}

# A period of traffic through the table's name, nothing else running.
traffic_period() {   # seconds
    checkpoint
    traffic_start
    put window_start "$(date +%s.%N)"
    sleep "$1"
    put window_end "$(date +%s.%N)"
    put status ok
    traffic_stop
}

# The view alone: the table routed (its name a view over both tables, as
# from route to swap) while no row moves: what the view itself costs.
run_view() {
    local secs=$1 url
    make_plan move "" > "$C/plan.yaml"
    fresh_db
    url="host=$PGHOST port=$PGPORT user=postgres dbname=$DB"
    if DATABASE_URL=$url "$MIGRATE" --quiet apply --until route "$C/plan.yaml" 2>"$C/migrate.log"; then
        traffic_period "$secs"
    else
        failed "$C/migrate.log"
    fi
    drop_db
}

# A period of the same length without a migration.
run_baseline() {
    fresh_db
    traffic_period "$1"
    drop_db
}

bench() {   # name label kind command...: only if --only lets the label through
    want "$2" || return 0
    contender "$1" "$2" "$3"
    shift 3
    measure "$@"
}

contender limit "physical limit: one INSERT … SELECT" single
measure run_copy single
bench singlemove "single-statement move: WITH m AS (DELETE … RETURNING *) INSERT …" singlemove run_copy singlemove
bench idrange "plain id-range copy, $ID_STEP ids per transaction" idrange run_copy idrange
bench limitloop "the naive LIMIT loop: DELETE … WHERE id IN (SELECT id … LIMIT $LOOP_ROWS) RETURNING, in the server" limitloop run_copy limitloop
bench serverloop "the move's statement looped in the server, $LOOP_ROWS rows a batch, no client" serverloop run_copy serverloop

# The move's default is two workers; one worker runs beside it.
bench move-default "move, default settings (2 workers)" tool run_tool move ""
for s in $SIZES; do
    bench "move-$s" "move, batch size $s" tool run_tool move "size: $s"
done
bench move-one "move, default settings, 1 worker" tool run_tool move "workers: 1"

bench sync-default "sync, default settings" tool run_tool sync ""
for s in $SIZES; do
    bench "sync-$s" "sync, batch size $s" tool run_tool sync "size: $s"
done

bench partman "pg_partman partition_data_proc" partman run_partman

bench move-traffic "move, default settings, with traffic" tool run_tool move "" traffic
bench gentle-traffic "move, gentle mode, with traffic" tool run_tool move "mode: gentle" traffic
# The latency budget: the application's p99 and the speed at each, per
# method, beside the same methods with no budget.
for b in $BUDGETS; do
    bench "move-latency-$b-traffic" "move, latency budget $b, with traffic" tool run_tool move "" traffic "$MIGRATE" "$b"
done
bench sync-traffic "sync, default settings, with traffic" tool run_tool sync "" traffic
for b in $BUDGETS; do
    bench "sync-latency-$b-traffic" "sync, latency budget $b, with traffic" tool run_tool sync "" traffic "$MIGRATE" "$b"
done
for i in "${!VARIANT_NAMES[@]}"; do
    n=${VARIANT_NAMES[$i]}
    want "gentle $n" || continue
    contender "gentle-$n-traffic" "gentle $n" tool
    put binary "${VARIANT_BINS[$i]}"
    measure run_tool move "mode: gentle" traffic "$DIR/migrate-$n"
done
# The limit once more: the machine's speed drifts, and every ratio uses the
# faster of the two runs, which favours the limit.
contender limit-again "physical limit, again at the end" single
measure run_copy single

# As long as the longest run with traffic, so that each has its counterpart.
BASE_SECS=$(python3 scripts/bench/report.py traffic-wall "$DIR")
if [ -n "$BASE_SECS" ]; then
    contender view-traffic "the view alone: routed, no row moving, with traffic" view
    measure run_view "$BASE_SECS"
    contender baseline "no migration, with traffic (baseline)" baseline
    measure run_baseline "$BASE_SECS"
fi

{
    echo "rows=$ROWS"
    echo "table_bytes=$TABLE_BYTES"
    echo "heap_bytes=$HEAP_BYTES"
    echo "postgres=$(q -c "SELECT version()")"
    echo "server_version=$(q -c "SHOW server_version")"
    echo "migrate_commit=$COMMIT"
    echo "migrate_version=$("$MIGRATE" --version 2>/dev/null || echo unknown)"
    echo "cpus=$(nproc)"
    echo "memory_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    echo "id_step=$ID_STEP"
    echo "rate=$RATE"
    echo "connection_life=$LIFE"
    echo "sizes=$SIZES"
    echo "only=$ONLY"
    echo "migrate_bin=${MIGRATE_BIN:-}"
    echo "bench_wall_s=$(( $(date +%s) - BENCH_START ))"
} > "$DIR/run.meta"
python3 scripts/bench/report.py report "$DIR" "$JSON"
