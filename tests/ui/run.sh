#!/usr/bin/env bash
# run.sh: the Inspector UI in a real browser (tests/ui/*.test.mjs): installs
# the pinned playwright-core (package-lock.json; it downloads no browser)
# and runs the suite against Debian's chromium with node's test runner.
# Exits with the runner's status; its TAP output ends with "# pass N" /
# "# fail N".  A failing test prints where its screenshot is.
#
#   CELL_BIN=$PWD/build/cell tests/ui/run.sh      (default: build/cell)
set -euo pipefail
if [ -n "${CELL_BIN:-}" ]; then CELL_BIN=$(realpath -- "$CELL_BIN"); export CELL_BIN; fi
cd "$(dirname "$0")"
command -v chromium >/dev/null 2>&1 || { echo "tests/ui: no chromium: run scripts/install-deps.sh" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
# Bound: a hung browser fails the run instead of holding CI to its deadline.
# Each test has its own deadline (ui.test.mjs TEST_TIMEOUT_MS); this one is the
# whole file's, which node's runner also applies to the file as a test.
exec timeout -k 10 480 node --test --test-reporter=tap --test-timeout=420000 ui.test.mjs
