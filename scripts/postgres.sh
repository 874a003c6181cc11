#!/usr/bin/env bash
# The PostgreSQL server binaries the catalog's Postgres tests start a throwaway server from
# (tests/postgres.py): Debian's package, /usr/lib/postgresql/<major>/bin.
exec bash "$(dirname "$0")/debian-package.sh" postgresql "the catalog's Postgres tests" \
    sh -c 'ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1'
