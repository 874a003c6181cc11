#!/usr/bin/env bash
# The Chromium the browser tests drive: Debian's package at /usr/bin/chromium, never
# `playwright install` (it downloads from outside the package registries).
exec bash "$(dirname "$0")/debian-package.sh" chromium "the explorer's browser tests" \
    test -x /usr/bin/chromium
