#!/usr/bin/env bash
# debian-package.sh PACKAGE WHAT PROBE...
# Finds or installs a Debian package some tests need (chromium, postgresql): PROBE (a command) says
# whether it is there. Installs it with apt-get as root or through passwordless sudo. When neither
# works it says how to install it and fails, so that make test stops before running tests that need it.
set -euo pipefail
package=$1 what=$2
shift 2
"$@" && exit 0
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        SUDO=(none)
    fi
fi
if [ "${SUDO[0]:-}" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $package for $what (apt-get install $package)"
    if ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq &&
        ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package"; then
        "$@" && exit 0
    fi
fi
cat >&2 <<MSG
************************************************************************************************
 $package is missing and could not be installed here (no root or passwordless sudo, no apt-get, or it failed).
 $what need it. Install it with: sudo apt-get install $package, then run make test again.
************************************************************************************************
MSG
exit 1
