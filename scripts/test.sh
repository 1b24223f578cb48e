#!/usr/bin/env bash
# The project's test command: installs PostgreSQL if it is missing, then
# runs every test. Each test starts its own throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-postgres.sh
exec cargo test --locked "$@"
