#!/usr/bin/env bash
# bench/agents.sh: agents in cells (issue 10) against the reference server,
# sandbox-agent 0.4.2, side by side in one run (docs/performance.md, "Agents").
#
#   sudo bash bench/agents.sh          # or: make bench (the last script)
#
# Starts one `cell serve` (a temporary state dir, its admin token, one cell
# with the mock agent installed) and one `sandbox-agent server --no-token`
# on free loopback ports, and drives both with the sandbox-agent 0.4.2 SDK,
# unmodified (bench/agents.mjs), alternating between them:
#   session  a new SDK client per iteration: createSession({agent:"mock"}),
#            which spawns the agent (cell: inside the cell), then a first
#            prompt, timed until it resolves with its stopReason, and until
#            its chunks have arrived over the SSE stream too
#   sse      on one open session per server: a "ping" prompt, timed from the
#            call to the arrival of its first chunk over the SSE stream (POST
#            in, SSE out) and to the prompt's answer; and a burst, one prompt
#            answered with WORDS+1 chunks back to back, per message =
#            (last chunk's arrival - first chunk's arrival) / WORDS.  The time
#            from the agent writing a message to the client reading it cannot
#            be observed from outside; these are what a client sees.
#   mem      INSTANCES idle ACP instances (one session and one prompt each):
#            the PSS and RSS of the server's whole process tree (cell: daemon,
#            cell-init and the agents; the reference: server and agents), the
#            delta per instance
# medians, p90 and cell / reference ratios in markdown tables, then a summary.
# Each timed step starts after a 200 ms pause, so that the other server's
# teardown (the reference ends its agent after the SDK gave up on its DELETE)
# does not land in it.
#
# The same mock agent on both sides: the reference's own `mock` is an echo
# agent without sessions (createSession cannot work with it, see
# docs/compat/sandbox-agent-0.4.2-agents.md), so its mock launcher is
# replaced, as its install documents, by one that runs cell-mock-agent, read
# back from the cell it was installed into (the same bytes).  The reference
# runs it on the host, without isolation.  The SDK and the reference's CLI
# binary come from the npm registry, pinned by bench/node/package-lock.json
# (npm ci checks each tarball's integrity), installed once into
# BUILD/bench-cache/agents-node/; nothing is fetched while measuring.
#
# Environment:
#   CELL_AGENTS_BENCH_N          timed createSession iterations per server   (default 20)
#   CELL_AGENTS_BENCH_WARMUP     untimed iterations before them              (default 2)
#   CELL_AGENTS_BENCH_ROUNDS     sse rounds per server                       (default 10)
#   CELL_AGENTS_BENCH_PINGS      pings per sse round                         (default 20)
#   CELL_AGENTS_BENCH_WORDS      burst size (chunks - 1)                     (default 200)
#   CELL_AGENTS_BENCH_INSTANCES  idle instances per server (mem; cell's limit is 16)  (default 10)
#   CELL_AGENTS_BENCH_ONLY       space-separated subset of: session sse mem
#   CELL_AGENTS_BENCH_CELL       a prebuilt cell binary to measure (not built then)
#   CELL_BENCH_BUILD             the make BUILD directory to build and use   (default build)
#   CELL_BENCH_COMMIT            label for the commit line
#
# Smoke setting (CI, about 15 s): CELL_AGENTS_BENCH_N=1 CELL_AGENTS_BENCH_WARMUP=0
# CELL_AGENTS_BENCH_ROUNDS=1 CELL_AGENTS_BENCH_PINGS=3 CELL_AGENTS_BENCH_WORDS=20
# CELL_AGENTS_BENCH_INSTANCES=2.  Exits non-zero if a server fails to start or
# dies, the mock cannot be installed, or any SDK step fails, hangs (30 s) or
# gets a wrong answer (each prompt's chunks are checked).  Nothing about
# speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
ref_version=0.4.2

die() { echo "bench/agents.sh: $*" >&2; exit 1; }
note() { echo "bench/agents.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in curl python3 node npm; do command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"; done

# ---- build, and install the SDK and the reference ----------------------------------
out="$top/$build/bench/agents"
mkdir -p "$out"
if [ -z "${CELL_AGENTS_BENCH_CELL:-}" ]; then
    # cell serve execs cell-daemon
    bench_make "$build/cell" "$build/cell-daemon" || die "make BUILD=$build $build/cell $build/cell-daemon failed"
fi
# A copy, so that a rebuild while this runs cannot swap it.
cell_bin=$(bench_snapshot "${CELL_AGENTS_BENCH_CELL:-$top/$build/cell}" "$out") || die "no cell binary to measure"

node_dir="$top/$build/bench-cache/agents-node"
mkdir -p "$node_dir"
if ! cmp -s "$here/node/package-lock.json" "$node_dir/package-lock.json" || [ ! -d "$node_dir/node_modules" ]; then
    note "installing bench/node's packages (npm ci) into $node_dir"
    cp "$here/node/package.json" "$here/node/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in $node_dir failed"
fi
# The driver beside its node_modules (ES modules resolve imports from the file's directory).
cp "$here/agents.mjs" "$node_dir/agents.mjs"
ref_bin="$node_dir/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent"
[ -x "$ref_bin" ] || die "$ref_bin is missing after npm ci"

# ---- scratch, servers, cleanup -----------------------------------------------------------
scratch=$(mktemp -d /tmp/cell-agents-bench.XXXXXX)
cell_pid="" ref_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_pid "$cell_pid"; stop_pid "$ref_pid"
    rm -rf "$scratch"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

alive() {   # alive PID NAME LOG: die with the log if the server is gone
    kill -0 "$1" 2>/dev/null && return 0
    tail -20 "$3" >&2
    die "$2 (pid $1) died; its log is above"
}
# api PORT TOKEN METHOD PATH [BODY]: JSON request, prints the body, fails on non-2xx
api() {
    local body='{}'
    [ $# -ge 4 ] && body=$4
    local args=(-sS -f -X "$1" -H 'Content-Type: application/json' --data "$body")
    [ -n "$2" ] && args+=(-H "Authorization: Bearer $2")
    curl "${args[@]}" "$3"
}

cell_log="$scratch/cell.log" ref_log="$scratch/ref.log"
start_cell_serve "$cell_bin" "$scratch/cell" "$cell_log" || die "cell serve did not start"
cell_pid=$started_pid cell_port=$started_port
start_ref_serve "$scratch/ref-home" "$ref_log" || die "sandbox-agent server did not start"
ref_pid=$started_pid ref_port=$started_port

token=$(tr -d '\n' <"$scratch/cell/admin.token")
cell_url="http://127.0.0.1:$cell_port"
cell_id=$(api POST "$token" "$cell_url/v1/cells" | json_field id) || die "cell: POST /v1/cells failed"
cbase="$cell_url/cells/$cell_id"
api POST "$token" "$cbase/v1/agents/mock/install" >/dev/null || die "cell: installing the mock failed"
# The cell's mock binary, read back through the fs API, for the reference.
mock_in_cell=/root/.local/share/sandbox-agent/bin/cell-mock-agent
curl -sSf -H "Authorization: Bearer $token" -o "$scratch/cell-mock-agent" \
    "$cbase/v1/fs/file?path=$mock_in_cell" || die "cell: reading $mock_in_cell back failed"
chmod 0755 "$scratch/cell-mock-agent"
ref_url="http://127.0.0.1:$ref_port"
launcher=$(api POST "" "$ref_url/v1/agents/mock/install" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["artifacts"][0]["path"])') ||
    die "reference: installing the mock failed"
case $launcher in "$scratch/ref-home/"*) ;; *) die "reference: the mock's launcher is at $launcher, not under its HOME";; esac
printf '#!/bin/sh\nexec %s "$@"\n' "$scratch/cell-mock-agent" >"$launcher.new"
chmod 0755 "$launcher.new" && mv "$launcher.new" "$launcher"

# ---- header --------------------------------------------------------------------------------
echo "## Agents: cell serve vs sandbox-agent $ref_version, the SDK's agent API on the mock"
echo
bench_machine_lines
echo "- reference: @sandbox-agent/cli-linux-x64@$ref_version ($("$ref_bin" --version 2>/dev/null | head -1)), \`server --no-token --no-telemetry\`, on the host, its mock launcher running cell-mock-agent"
echo "- cell: \`cell serve\` with a bearer token, one cell (image host, defaults), \`mock\` installed (cell-mock-agent in the cell)"
echo "- client: sandbox-agent@$ref_version (the SDK, unmodified) on node $(node --version), loopback"
echo

AGB_CELL_URL=$cbase AGB_CELL_TOKEN=$token AGB_CELL_PID=$cell_pid AGB_REF_URL=$ref_url AGB_REF_PID=$ref_pid \
AGB_N=${CELL_AGENTS_BENCH_N:-20} AGB_WARMUP=${CELL_AGENTS_BENCH_WARMUP:-2} \
AGB_ROUNDS=${CELL_AGENTS_BENCH_ROUNDS:-10} AGB_PINGS=${CELL_AGENTS_BENCH_PINGS:-20} \
AGB_WORDS=${CELL_AGENTS_BENCH_WORDS:-200} AGB_INSTANCES=${CELL_AGENTS_BENCH_INSTANCES:-10} \
AGB_ONLY=${CELL_AGENTS_BENCH_ONLY:-session sse mem} \
    node "$node_dir/agents.mjs" || {
        alive "$cell_pid" "cell serve" "$cell_log"; alive "$ref_pid" "sandbox-agent server" "$ref_log"
        tail -20 "$cell_log" >&2
        die "the driver failed (the daemon's log tail is above)"
    }
alive "$cell_pid" "cell serve" "$cell_log"
alive "$ref_pid" "sandbox-agent server" "$ref_log"
if grep -qiE 'error|warn|abort|assert' "$cell_log"; then
    note "the daemon's log has warnings or errors:"
    grep -iE 'error|warn|abort|assert' "$cell_log" | head -20 >&2
fi
