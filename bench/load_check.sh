#!/usr/bin/env bash
# bench/load_check.sh: the daemon's load test (issue 3).  Pass/fail.
#
#   sudo bash bench/load_check.sh
#
# Starts `cell serve` on a free loopback port with a fresh state directory,
# creates one cell, then runs three rounds of wrk (-t2 -c128), each round
#   GET  /cells/ID/v1/health                              for CELL_LOAD_TIME
#   POST /cells/ID/v1/processes/run {"command":"true"}    for CELL_LOAD_TIME
# and prints wrk's output.  After each round, once the connection threads
# have gone, it records the daemon's VmRSS, threads and open descriptors.
# It passes if:
#   - every wrk run has no socket errors (connect, read, write, timeout) and
#     no HTTP error (wrk's status count: responses >= 400), and every run
#     response is 200 with "exitCode":0;
#   - the daemon is still alive and answering;
#   - after round 3, VmRSS <= VmRSS after round 1 (the warm-up round)
#     + CELL_LOAD_RSS_SLACK_MIB, and the fd and thread counts are no higher.
# The last line is "load_check: ok" (exit 0) or "load_check: FAILED (...)" (exit 1).
#
# Environment:
#   CELL_LOAD_TIME           wrk duration of each run            (default 10s)
#   CELL_LOAD_CONNECTIONS    wrk connections                     (default 128)
#   CELL_LOAD_RSS_SLACK_MIB  allowed VmRSS growth, round 1 -> 3  (default 10)
#   CELL_LOAD_CELL           a prebuilt cell binary (skips `make all`)
#   CELL_BENCH_BUILD         the make BUILD directory to build and use (default build)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
dur=${CELL_LOAD_TIME:-10s}
conns=${CELL_LOAD_CONNECTIONS:-128}
slack_mib=${CELL_LOAD_RSS_SLACK_MIB:-10}

fail_early() { echo "load_check: FAILED ($*)"; exit 1; }
[ "$(id -u)" = 0 ] || fail_early "must run as root (cells need it)"
for t in curl python3 wrk; do command -v "$t" >/dev/null || fail_early "$t is not installed (scripts/install-deps.sh)"; done

build=${CELL_BENCH_BUILD:-build}
out="$top/$build/bench/load"
if [ -z "${CELL_LOAD_CELL:-}" ]; then
    make -C "$top" -j"$(nproc)" BUILD="$build" all >&2 || fail_early "make BUILD=$build all failed"
fi
# A copy (with cell-daemon beside it), so that a rebuild cannot swap it.
cell_bin=$(bench_snapshot "${CELL_LOAD_CELL:-$top/$build/cell}" "$out") || fail_early "no cell binary to test"

bench_scratch cell-load-check   # sets scratch and pid; stops and removes both on exit
state="$scratch/state" log="$scratch/daemon.log"

# ---- start the daemon and one cell ------------------------------------------------------
start_cell_serve "$cell_bin" "$state" "$log" || fail_early "cell serve did not start"   # its log on stderr
pid=$started_pid port=$started_port
token=$(tr -d '\n' <"$state/admin.token")
id=$(curl -sS -f -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' --data '{}' \
    "http://127.0.0.1:$port/v1/cells" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') ||
    fail_early "POST /v1/cells failed"
base="http://127.0.0.1:$port/cells/$id/v1"
echo "load_check: cell serve pid $pid on 127.0.0.1:$port, cell $id; wrk -t2 -c$conns -d$dur, 3 rounds"

# ---- wrk scripts -------------------------------------------------------------------------
common='
local token = os.getenv("WRK_TOKEN")
wrk.headers["Authorization"] = "Bearer " .. token
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
done = function(summary, latency, requests)
  local e, b = summary.errors, 0
  for _, t in ipairs(threads) do b = b + (t:get("bad") or 0) end
  io.write(string.format("WRK_RESULT requests=%d connect=%d read=%d write=%d timeout=%d status=%d bad=%d\n",
    summary.requests, e.connect, e.read, e.write, e.timeout, e.status, b))
end'
printf '%s\n' "$common" >"$scratch/health.lua"
printf '%s\n' "$common" '
wrk.method = "POST"
wrk.body = "{\"command\":\"true\"}"
wrk.headers["Content-Type"] = "application/json"
function response(status, headers, body)
  if status ~= 200 or not string.find(body, "\"exitCode\":0", 1, true) then bad = bad + 1 end
end' >"$scratch/run.lua"

stats() {   # "VmRSS_KiB threads fds"
    echo "$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status") $(awk '/^Threads:/ {print $2}' "/proc/$pid/status")" \
        "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
}
# Connection threads end when wrk's connections close; wait (up to 10 s) for
# the thread count to stop falling, then 1 s more.
settle() {
    local prev=-1 cur
    for _ in $(seq 20); do
        cur=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
        [ "$cur" = "$prev" ] && break
        prev=$cur
        sleep 0.5
    done
    sleep 1
}

failures=()
declare -A st
for round in 1 2 3; do
    for what in health run; do
        url="$base/health"
        [ "$what" = run ] && url="$base/processes/run"
        echo
        echo "== round $round: $what ($([ "$what" = run ] && echo "POST" || echo "GET") ${url#http://127.0.0.1:"$port"})"
        wout=$(WRK_TOKEN=$token wrk -t2 -c"$conns" -d"$dur" -s "$scratch/$what.lua" "$url" 2>&1) || true
        echo "$wout"
        line=$(grep '^WRK_RESULT' <<<"$wout" || true)
        if [ -z "$line" ]; then
            failures+=("round $round $what: wrk did not finish")
        else
            for k in connect read write timeout status bad; do
                v=$(sed -n "s/.*\\b$k=\\([0-9]*\\).*/\\1/p" <<<"$line")
                [ "$v" = 0 ] || failures+=("round $round $what: $k=$v")
            done
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "-- the daemon died; the end of its log:"
            tail -20 "$log"
            echo "load_check: FAILED (the daemon died during round $round $what; ${failures[*]:-})"
            exit 1
        fi
    done
    settle
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/health")" = 200 ] ||
        failures+=("after round $round: health does not answer 200")
    st[$round]=$(stats)
done

echo
echo "| after round | VmRSS (MiB) | threads | fds |"
echo "| ---: | ---: | ---: | ---: |"
for round in 1 2 3; do
    read -r r t f <<<"${st[$round]}"
    echo "| $round | $(awk -v k="$r" 'BEGIN {printf "%.1f", k/1024}') | $t | $f |"
done
echo

read -r r1 t1 f1 <<<"${st[1]}"
read -r r3 t3 f3 <<<"${st[3]}"
[ "$r3" -le $((r1 + slack_mib * 1024)) ] ||
    failures+=("VmRSS grew from $(awk -v k="$r1" 'BEGIN {printf "%.1f", k/1024}') MiB after round 1 to $(awk -v k="$r3" 'BEGIN {printf "%.1f", k/1024}') MiB after round 3 (allowed: +$slack_mib MiB)")
[ "$f3" -le "$f1" ] || failures+=("fds grew from $f1 after round 1 to $f3 after round 3")
[ "$t3" -le "$t1" ] || failures+=("threads grew from $t1 after round 1 to $t3 after round 3")
if grep -qiE 'abort|assert|sanitizer' "$log"; then
    failures+=("the daemon's log reports a problem: $(grep -iE 'abort|assert|sanitizer' "$log" | head -1)")
fi

if [ ${#failures[@]} -eq 0 ]; then
    echo "load_check: ok"
else
    msg=$(printf '%s; ' "${failures[@]}")
    echo "load_check: FAILED (${msg%; })"
    exit 1
fi
