#!/usr/bin/env bash
# lint.sh: @redocly/cli lint of docs/openapi.json with tests/openapi/redocly.yaml
# (the pinned version in package-lock.json, installed here by npm ci).
# Exits non-zero on any error; accepted warnings are listed in redocly.yaml.
#
#   tests/openapi/lint.sh [FILE]      (default: docs/openapi.json)
set -euo pipefail
doc=$(realpath -- "${1:-$(dirname "$0")/../../docs/openapi.json}")
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm
fi
# npm ci starts node_modules afresh: only when the lock is newer than the install.
if ! [ -x node_modules/.bin/redocly ] || ! [ node_modules/.package-lock.json -nt package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# No telemetry and no update check: CI may be offline after npm ci.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec node_modules/.bin/redocly lint --config redocly.yaml --format=stylish "$doc"
