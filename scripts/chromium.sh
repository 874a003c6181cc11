#!/usr/bin/env bash
# Finds or installs the Chromium the browser tests drive: Debian's package at /usr/bin/chromium,
# never `playwright install` (it downloads from outside the package registries).
# Installs it with apt-get as root or through passwordless sudo. When neither is possible it says so
# loudly and exits 0, and the browser tests are skipped with that reason, unless
# LETL_REQUIRE_BROWSER=1 (as in .ci/run), where a missing browser fails the run.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        SUDO=(none)
    fi
fi
if [ "${SUDO[0]:-}" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests (apt-get install chromium)"
    ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
    exit 0
fi
cat >&2 <<MSG
************************************************************************************************
 $CHROMIUM is missing and cannot be installed here (no root, no passwordless sudo, or no apt-get).
 The explorer's browser tests will be SKIPPED. Install it with: sudo apt-get install chromium
************************************************************************************************
MSG
if [ "${LETL_REQUIRE_BROWSER:-}" = 1 ]; then
    exit 1
fi
