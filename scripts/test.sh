#!/usr/bin/env bash
# The project's test command: installs PostgreSQL if it is missing, then
# runs every test (each test starts its own throwaway cluster) and closes
# with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-postgres.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
