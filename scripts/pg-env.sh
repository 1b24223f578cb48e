# Sourced by the scripts: finds the server binaries and starts or stops a
# throwaway cluster in a directory of its own, on a private socket.
#   pg_start DIR   sets PGHOST, PGPORT, PGUSER, PGDATABASE, DATABASE_URL
#   pg_stop DIR
# By default the server listens on no TCP address. PG_LISTEN (e.g.
# 127.0.0.1) and PG_PORT make it listen there too, for clients that need a
# network path such as a delay proxy; the socket then uses PG_PORT as well.

pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
    local dir=$1 bin port=${PG_PORT:-5432}
    bin=$(pg_bin)
    [ -x "$bin/initdb" ] || { echo "PostgreSQL not found: run scripts/install-postgres.sh" >&2; return 1; }
    mkdir -p "$dir/sock"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$dir"; fi
    as_postgres "$bin/initdb" -A trust -U postgres -E UTF8 --locale C --no-sync -D "$dir/data" >/dev/null
    as_postgres "$bin/pg_ctl" -w -D "$dir/data" -l "$dir/server.log" \
        -o "-k $dir/sock -p $port -c listen_addresses='${PG_LISTEN:-}' -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=15min" \
        start >/dev/null
    export PGHOST=$dir/sock PGPORT=$port PGUSER=postgres PGDATABASE=postgres
    export DATABASE_URL="host=$dir/sock port=$port user=postgres dbname=postgres"
    export PATH="$bin:$PATH"
}

pg_stop() {
    local dir=$1
    as_postgres "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
}
