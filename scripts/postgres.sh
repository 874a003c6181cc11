#!/usr/bin/env bash
# Finds or installs the PostgreSQL server binaries the catalog's Postgres tests start a throwaway
# server from (tests/postgres.py): Debian's package, /usr/lib/postgresql/<major>/bin.
# Installs it with apt-get as root or through passwordless sudo, without starting the system's own
# cluster service. When neither is possible it says so loudly and exits 0, and the Postgres tests are
# skipped with that reason, unless LETL_REQUIRE_POSTGRES=1 (as in .ci/run), where it fails the run.
set -euo pipefail
found() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
found && exit 0
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        SUDO=(none)
    fi
fi
if [ "${SUDO[0]:-}" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's postgresql for the catalog's Postgres tests (apt-get install postgresql)"
    ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    found && exit 0
fi
cat >&2 <<MSG
************************************************************************************************
 PostgreSQL's initdb is missing and cannot be installed here (no root, no passwordless sudo, or no
 apt-get). The catalog's Postgres tests will be SKIPPED. Install it with: sudo apt-get install postgresql
************************************************************************************************
MSG
if [ "${LETL_REQUIRE_POSTGRES:-}" = 1 ]; then
    exit 1
fi
