#!/usr/bin/env bash
# run.sh: the sandbox-agent SDK conformance suite (tests/sdk/*.test.mjs):
# installs the pinned npm dependencies (package-lock.json) and runs them with
# node's built-in test runner.  Exits with the runner's status; its TAP output
# ends with "# pass N" / "# fail N" lines.
#
#   CELL_BIN=$PWD/build/cell tests/sdk/run.sh      (default: build/cell)
#
# Works as root on a fresh machine: installs node and npm from apt only if
# `node` is missing.
set -euo pipefail
# A relative CELL_BIN is meant from the caller's directory.
if [ -n "${CELL_BIN:-}" ]; then CELL_BIN=$(realpath -- "$CELL_BIN"); export CELL_BIN; fi
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm
fi

npm ci --no-audit --no-fund --loglevel=error

# Without arguments the runner finds every *.test.mjs here (node_modules is
# skipped); the TAP reporter keeps the summary lines stable for scripts.
# Bounds: a test that hangs (a daemon that died under it, an SDK wait with
# no end) fails after 5 minutes instead of holding CI to its deadline; node
# older than 20.11 lacks --test-timeout, and `timeout` bounds each run whole.
bound=()
node --test-timeout=1 -e '' >/dev/null 2>&1 && bound=(--test-timeout=300000)
set +e
timeout -k 10 1200 node --test --test-reporter=tap "${bound[@]}"
status=$?
# The provider package's own tests (sdk/test) use these pinned modules.
[ -e ../../sdk/node_modules ] || ln -s ../tests/sdk/node_modules ../../sdk/node_modules
timeout -k 10 600 node --test --test-reporter=tap "${bound[@]}" ../../sdk/test/
sdk_status=$?
[ "$status" -ne 0 ] || status=$sdk_status
exit "$status"
