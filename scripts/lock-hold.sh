#!/usr/bin/env bash
# Measures how long the tool's strong-lock sections hold their locks, and how
# long the application waits meanwhile, when the tool reaches the server over
# a network with a given round trip while the application connects directly.
#
#   scripts/lock-hold.sh                 # 200,000 rows, RTT 0 and 2 ms, move sync attach
#   scripts/lock-hold.sh 500000
#   RTTS="0 2 10" REPS=3 METHODS="move sync" OUT=lock-hold.json scripts/lock-hold.sh
#
# RTT 0 is a direct TCP connection to 127.0.0.1; any other RTT goes through
# scripts/bench/delay_proxy.py with half of it added in each direction. The
# application (pgbench, prepared statements, 4 clients at 200 transactions/s
# through the table's name) always uses the server's Unix socket. Every run
# gets a fresh database; the held sections come from repartition.events and
# the application's waits from pgbench's per-transaction logs.
#
# MIGRATE= picks the binary (default target/release/migrate, built if
# missing); KEEP=1 leaves the raw files in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-200000}
RTTS=${RTTS:-"0 2"}
METHODS=${METHODS:-"move sync attach"}
REPS=${REPS:-1}
OUT=${OUT:-}
KEEP=${KEEP:-0}
# Each command of the tool is bounded; the proxy outlives one run by a margin.
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
RATE=200

scripts/install-postgres.sh
MIGRATE=${MIGRATE:-$PWD/target/release/migrate}
if [ ! -x "$MIGRATE" ]; then
    cargo build --release --locked -q
fi
source scripts/pg-env.sh

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

DIR=$(mktemp -d /tmp/migrate-lockhold.XXXXXX)
PROXY_PID=
TRAFFIC_PID=
TOOL_PID=
stop_proxy() {
    if [ -n "$PROXY_PID" ]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=
    fi
}
cleanup() {
    touch "$DIR/stop"
    if [ -n "$TOOL_PID" ]; then kill "$TOOL_PID" 2>/dev/null || true; wait "$TOOL_PID" 2>/dev/null || true; fi
    if [ -n "$TRAFFIC_PID" ]; then wait "$TRAFFIC_PID" 2>/dev/null || true; fi
    stop_proxy
    pg_stop "$DIR"
    if [ "$KEEP" = 1 ]; then echo "raw files kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap still runs.
trap 'exit 130' INT TERM

# The server listens on loopback too: the tool's network path (direct or
# through the proxy) is TCP, and a private port keeps clear of other clusters.
PG_LISTEN=127.0.0.1 PG_PORT=$(free_port) pg_start "$DIR"
TCP_PORT=$PGPORT
# The throwaway server has no TLS: skip the refused offer at each connect.
export PGSSLMODE=disable

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

# The same event log as scripts/compare-methods.sh.
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

# Median of psql's own timing of SELECT 1 over a connection: the round trip
# the tool actually gets, proxy overhead and timer rounding included.
measure_rtt() {
    local url=$1
    { echo '\timing on'; for _ in $(seq 30); do echo 'SELECT 1;'; done; } |
        timeout 60 psql -X -q -At "$url" 2>&1 |
        awk '/^Time:/ {print $2}' | sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "nan"}'
}

start_proxy() {
    local rtt=$1 run=$2
    rm -f "$run/proxy.port"
    # The trace lets the report count the requests each locked section sent.
    python3 scripts/bench/delay_proxy.py --trace "$run/proxy.trace" 0 "$TCP_PORT" "$(awk "BEGIN {print $rtt / 2}")" \
        $((RUN_TIMEOUT * 3 + 120)) "$run/proxy.port" 2>"$run/proxy.log" &
    PROXY_PID=$!
    for _ in $(seq 100); do
        [ -s "$run/proxy.port" ] && return 0
        sleep 0.05
    done
    echo "the delay proxy did not start" >&2
    return 1
}

# apply, then what completes the method: sync's cleanup drops the retired
# original, attach's split breaks up the partition that took the old rows.
tool() {
    local method=$1 url=$2 plan=$3 log=$4 cmd
    : >"$log"
    for cmd in apply $(case $method in sync) echo cleanup ;; attach) echo split ;; esac); do
        # In the background and waited for: a signal then interrupts the
        # wait at once, and the EXIT trap stops the tool.
        DATABASE_URL=$url timeout "$RUN_TIMEOUT" "$MIGRATE" --quiet "$cmd" "$plan" 2>>"$log" &
        TOOL_PID=$!
        wait "$TOOL_PID" || { TOOL_PID=; return 1; }
        TOOL_PID=
    done
}

run_one() {
    local method=$1 rtt=$2 rep=$3 n=$4
    local db="l_${method}_${rtt//./_}_$rep" run
    run=$DIR/runs/$(printf '%02d' "$n")-$method-$rtt-$rep
    mkdir -p "$run"
    local plan=$run/plan.yaml
    sed "s/^method: move/method: $method/" plans/workflow_events.yaml > "$plan"
    seed "$db"

    local url
    if [ "$rtt" = 0 ]; then
        url="host=127.0.0.1 port=$TCP_PORT user=postgres dbname=$db sslmode=disable"
    else
        start_proxy "$rtt" "$run"
        url="host=127.0.0.1 port=$(cat "$run/proxy.port") user=postgres dbname=$db sslmode=disable"
    fi
    local measured
    measured=$(measure_rtt "$url")

    # Short pgbench runs back to back, so the traffic stops soon after the
    # tool does and each run's log is complete when its process exits.
    rm -f "$DIR/stop"
    (
        i=0
        while [ ! -f "$DIR/stop" ]; do
            i=$((i + 1))
            pgbench -n -M prepared -c 4 -j 2 -R "$RATE" -T 5 -D maxid="$ROWS" \
                -l --log-prefix="$run/tx.$i" -f "$DIR/traffic.sql" "$db" >>"$run/pgbench.out" 2>&1 \
                || echo "pgbench exited with an error" >>"$run/pgbench.out"
        done
    ) &
    TRAFFIC_PID=$!
    sleep 2

    local start end status=ok
    start=$(date +%s.%N)
    tool "$method" "$url" "$plan" "$run/migrate.log" || status=failed
    end=$(date +%s.%N)
    sleep 1
    touch "$DIR/stop"
    wait "$TRAFFIC_PID" || true
    TRAFFIC_PID=
    stop_proxy

    psql -X -At -F $'\t' -d "$db" \
        -c "SELECT id, extract(epoch FROM at), detail FROM repartition.events WHERE kind = 'held' ORDER BY id" \
        > "$run/events.tsv" 2>>"$run/migrate.log" || status=failed
    cat > "$run/meta" <<EOF
method=$method
rtt_ms=$rtt
rep=$rep
rows=$ROWS
rate=$RATE
rtt_measured_ms=$measured
start=$start
end=$end
status=$status
load=$(cut -d' ' -f1-3 /proc/loadavg)
EOF
    echo "  $method rtt $rtt ms (measured $measured ms) rep $rep: $status, $(awk "BEGIN {printf \"%.1f\", $end - $start}") s" >&2
    if [ "$status" != ok ]; then tail -n 5 "$run/migrate.log" >&2; fi
    dropdb "$db"
}

echo "== $ROWS rows; the application: 4 clients at $RATE transactions/s over the socket; the tool over TCP" >&2
n=0
for rep in $(seq "$REPS"); do
    for rtt in $RTTS; do
        for m in $METHODS; do
            n=$((n + 1))
            run_one "$m" "$rtt" "$rep" "$n"
        done
    done
done
python3 scripts/bench/lock_hold_report.py "$DIR/runs" "${OUT:-}"
