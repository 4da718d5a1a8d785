#!/usr/bin/env bash
# bench/daemon.sh: the daemon (`cell serve`) against the reference server it is
# compatible with, sandbox-agent 0.4.2 (docs/performance.md, "Daemon").
#
#   sudo bash bench/daemon.sh          # or: make bench (after bench/run.sh)
#
# Starts one `cell serve` and one `sandbox-agent server` on free loopback
# ports and prints one markdown table per benchmark, each with cell, the
# reference and their ratio:
#   run   POST .../v1/processes/run {"command":"true"}: p50/p90 on one
#         keep-alive connection, rounds alternating between the servers
#   fs    PUT and GET of a 64 MiB file (and of 2 MiB, the reference's limit)
#   wrk   requests/s on the health endpoint, wrk -t2 -c128
#   rss   the daemon's memory, threads and fds with 0 and with 100 idle cells
# Nothing is asserted: it measures (bench/load_check.sh is the pass/fail test).
#
# The reference comes from the npm registry (npm pack, or the same tarball by
# curl when npm is absent), checked against a pinned SHA-512 and cached in
# BUILD/bench-cache/.  It runs processes on the host, without isolation.
#
# Environment:
#   CELL_DAEMON_BENCH_N         timed requests per round (run)             (default 500)
#   CELL_DAEMON_BENCH_WARMUP    untimed requests before each round (run)    (default 20)
#   CELL_DAEMON_BENCH_ROUNDS    rounds per server (run, wrk)                (default 3)
#   CELL_DAEMON_BENCH_FS_REPS   transfers per server and size (fs)          (default 5)
#   CELL_DAEMON_BENCH_FS_SIZE   large file size in bytes (fs)               (default 67108864)
#   CELL_DAEMON_BENCH_WRK_TIME  wrk duration per round (wrk)                (default 10s)
#   CELL_DAEMON_BENCH_CELLS     idle cells for the memory table (rss)       (default 100)
#   CELL_DAEMON_BENCH_ONLY      space-separated subset of: run fs wrk rss
#   CELL_DAEMON_BENCH_CELL      a prebuilt cell binary to measure (not built then)
#   CELL_DAEMON_BENCH_SUMMARY   append key=value result lines to this file (faststart.sh)
#   CELL_BENCH_BUILD            the make BUILD directory to build and use   (default build)
#   CELL_BENCH_NO_MAKE          1: use what BUILD has, do not run make (faststart.sh)
#   CELL_BENCH_COMMIT           label for the commit line
#
# Smoke setting (CI): CELL_DAEMON_BENCH_N=20 CELL_DAEMON_BENCH_WARMUP=2
# CELL_DAEMON_BENCH_ROUNDS=1 CELL_DAEMON_BENCH_FS_REPS=1
# CELL_DAEMON_BENCH_FS_SIZE=1048576 CELL_DAEMON_BENCH_WRK_TIME=1s
# CELL_DAEMON_BENCH_CELLS=3.  Exits non-zero if a server fails to start, dies,
# or a request fails (an error status, a body that differs); wrk's socket
# errors are reported, not failed on.  Nothing about speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
n=${CELL_DAEMON_BENCH_N:-500}
warmup=${CELL_DAEMON_BENCH_WARMUP:-20}
rounds=${CELL_DAEMON_BENCH_ROUNDS:-3}
fs_reps=${CELL_DAEMON_BENCH_FS_REPS:-5}
fs_size=${CELL_DAEMON_BENCH_FS_SIZE:-67108864}
small_size=2097152          # sandbox-agent 0.4.2 refuses PUT bodies above 2 MiB (413)
wrk_time=${CELL_DAEMON_BENCH_WRK_TIME:-10s}
ncells=${CELL_DAEMON_BENCH_CELLS:-100}
only=${CELL_DAEMON_BENCH_ONLY:-run fs wrk rss}
build=${CELL_BENCH_BUILD:-build}

die() { echo "bench/daemon.sh: $*" >&2; exit 1; }
note() { echo "bench/daemon.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in curl python3 wrk; do command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"; done

# ---- build, and fetch the reference ---------------------------------------------
# The Makefile builds the client (bench/http_bench.c) with the build's flags.
out="$top/$build/bench/daemon"
mkdir -p "$out"
targets=("$build/bench/http_bench")
[ -n "${CELL_DAEMON_BENCH_CELL:-}" ] || targets+=("$build/cell" "$build/cell-daemon")    # serve execs cell-daemon
bench_make "${targets[@]}" || die "make BUILD=$build ${targets[*]} failed"
# Copies, so that a rebuild while this runs cannot swap them.
cell_bin=$(bench_snapshot "${CELL_DAEMON_BENCH_CELL:-$top/$build/cell}" "$out") || die "no cell binary to measure"
cp "$top/$build/bench/http_bench" "$out/http_bench"
hb="$out/http_bench"
ref_fetch "$top/$build/bench-cache" || die "cannot fetch the reference $ref_pkg"

# ---- scratch, servers, cleanup -----------------------------------------------------------
scratch=$(mktemp -d /tmp/cell-daemon-bench.XXXXXX)
cell_pid="" ref_pid="" fresh_pid=""
ref_file="/tmp/cell-daemon-bench-$$.bin"       # the reference writes on the host's /tmp
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_pid "$cell_pid"; stop_pid "$fresh_pid"; stop_pid "$ref_pid"
    rm -rf "$scratch" "$ref_file"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# start_cell STATE -> sets started_pid, started_port (retries a port taken meanwhile)
start_cell() { start_cell_serve "$cell_bin" "$1" "$1.log" || die "cell serve did not start"; }
start_ref() {
    start_ref_serve "$scratch/ref-home" "$scratch/ref.log" || die "sandbox-agent server did not start"
}
alive() {   # alive PID NAME LOG: die with the log if the server is gone
    kill -0 "$1" 2>/dev/null && return 0
    tail -20 "$3" >&2
    die "$2 (pid $1) died; its log is above"
}

# api PORT TOKEN METHOD PATH [BODY]: JSON request, prints the body, fails on non-2xx
api() {
    local args=(-sS -f -X "$3" -H "Authorization: Bearer $2")
    [ $# -ge 5 ] && args+=(-H 'Content-Type: application/json' --data "$5")
    curl "${args[@]}" "http://127.0.0.1:$1$4"
}

# proc_stats PID -> "VmRSS_KiB Pss_KiB threads fds"
proc_stats() {
    local rss pss thr fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status")
    thr=$(awk '/^Threads:/ {print $2}' "/proc/$1/status")
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup")
    fds=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$rss $pss $thr $fds"
}

# median of the arguments (the mean of the two middle ones for an even count)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a/b; else print "n/a"}'; }
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p"; }        # kv KEY < "k=v k=v"
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }

# ---- start ---------------------------------------------------------------------------------
cell_state="$scratch/cell"
start_cell "$cell_state"; cell_pid=$started_pid cell_port=$started_port
token=$(tr -d '\n' <"$cell_state/admin.token")
start_ref; ref_pid=$started_pid ref_port=$started_port
sleep 1
cell_idle_stats=$(proc_stats "$cell_pid")
ref_idle_stats=$(proc_stats "$ref_pid")
# summary KEY=VALUE...: machine-readable results for bench/faststart.sh
summary() { [ -z "${CELL_DAEMON_BENCH_SUMMARY:-}" ] || echo "$*" >>"$CELL_DAEMON_BENCH_SUMMARY"; }
summary "idle_cell=$(proc_mem "$cell_pid" | tr ' ' ,) idle_ref=$(proc_mem "$ref_pid" | tr ' ' ,)"
cell_id=$(api "$cell_port" "$token" POST /v1/cells '{}' | json_field id)
cbase="/cells/$cell_id/v1"
# Every contender must work before it is timed.
api "$cell_port" "$token" POST "$cbase/processes/run" '{"command":"true"}' | grep -q '"exitCode":0' ||
    die "cell: POST $cbase/processes/run does not run true"
api "$ref_port" x POST /v1/processes/run '{"command":"true"}' | grep -q '"exitCode":0' ||
    die "reference: POST /v1/processes/run does not run true"

# ---- header --------------------------------------------------------------------------------
echo "## cell daemon benchmarks (cell serve vs sandbox-agent $ref_version)"
echo
bench_machine_lines
echo "- reference: $ref_pkg ($("$ref_bin" --version 2>/dev/null | head -1)), \`server --no-token --no-telemetry\`, on the host"
echo "- cell: \`cell serve\` with a bearer token, one cell (image host, defaults); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "- client: bench/http_bench.c (one keep-alive HTTP/1.1 connection, TCP_NODELAY), loopback"
echo

# ---- 1. POST processes/run latency ---------------------------------------------------------
bench_run() {
    note "run: $rounds rounds x 2 servers x ($warmup + $n) requests..."
    local cell_p50=() cell_p90=() ref_p50=() ref_p90=() r line
    local body='{"command":"true"}'
    for r in $(seq "$rounds"); do
        local order="cell ref"
        [ $((r % 2)) = 0 ] && order="ref cell"
        for who in $order; do
            if [ "$who" = cell ]; then
                line=$(HTTP_BENCH_TOKEN=$token "$hb" lat "$cell_port" "$cbase/processes/run" "$body" "$n" "$warmup") ||
                    { alive "$cell_pid" "cell serve" "$cell_state.log"; die "run: cell round $r failed"; }
                cell_p50+=("$(kv p50_us <<<"$line")") cell_p90+=("$(kv p90_us <<<"$line")")
            else
                line=$("$hb" lat "$ref_port" /v1/processes/run "$body" "$n" "$warmup") ||
                    { alive "$ref_pid" "sandbox-agent" "$scratch/ref.log"; die "run: reference round $r failed"; }
                ref_p50+=("$(kv p50_us <<<"$line")") ref_p90+=("$(kv p90_us <<<"$line")")
            fi
            note "  round $r $who: $line"
        done
    done
    local c50 c90 r50 r90
    c50=$(median "${cell_p50[@]}") c90=$(median "${cell_p90[@]}")
    r50=$(median "${ref_p50[@]}") r90=$(median "${ref_p90[@]}")
    summary "run_cell_p50=$c50 run_cell_p90=$c90 run_ref_p50=$r50 run_ref_p90=$r90"
    echo "### POST /v1/processes/run {\"command\":\"true\"}: latency on one keep-alive connection"
    echo
    echo "$rounds rounds per server, alternating which goes first; each round is $warmup untimed then $n timed requests."
    echo
    echo "| server | p50 per round (µs) | p90 per round (µs) | median p50 (µs) | median p90 (µs) | p50 / reference p50 | p90 / reference p90 |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: |"
    echo "| cell (/cells/ID/v1/processes/run, token) | ${cell_p50[*]} | ${cell_p90[*]} | $c50 | $c90 | $(ratio "$c50" "$r50") | $(ratio "$c90" "$r90") |"
    echo "| sandbox-agent $ref_version (/v1/processes/run) | ${ref_p50[*]} | ${ref_p90[*]} | $r50 | $r90 | 1.00x | 1.00x |"
    echo
}

# ---- 2. file write and read throughput -----------------------------------------------------
# xfer ARGS...: one http_bench transfer; a failure (an error status, a GET
# that differs from what was written) ends the script.
xfer() { "$hb" "$@" || die "fs: http_bench $* failed"; }
bench_fs() {
    note "fs: $fs_reps x (PUT + GET) of $fs_size and $small_size bytes per server..."
    "$hb" pattern "$fs_size" >"$ref_file"      # the 64 MiB file the reference cannot receive, for its GET
    local c_put=() c_get=() r_get=() cs_put=() cs_get=() rs_put=() rs_get=() r line big_put_status
    local cpath="$cbase/fs/file?path=/tmp/bench.bin" rpath="/v1/fs/file?path=$ref_file"
    local rsmall="/v1/fs/file?path=$ref_file.small"
    # Confirm the reference's limit rather than assume it.
    big_put_status=$(head -c "$fs_size" /dev/zero | curl -s -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/octet-stream' --data-binary @- "http://127.0.0.1:$ref_port/v1/fs/file?path=$ref_file.big")
    rm -f "$ref_file.big"
    for r in $(seq "$fs_reps"); do
        local order="cell ref"
        [ $((r % 2)) = 0 ] && order="ref cell"
        for who in $order; do
            if [ "$who" = cell ]; then
                export HTTP_BENCH_TOKEN=$token
                c_put+=("$(xfer put "$cell_port" "$cpath" "$fs_size" | kv put_mbs)")
                c_get+=("$(xfer get "$cell_port" "$cpath" "$fs_size" | kv get_mbs)")
                cs_put+=("$(xfer put "$cell_port" "$cpath.small" "$small_size" | kv put_mbs)")
                cs_get+=("$(xfer get "$cell_port" "$cpath.small" "$small_size" | kv get_mbs)")
                unset HTTP_BENCH_TOKEN
            else
                r_get+=("$(xfer get "$ref_port" "$rpath" "$fs_size" | kv get_mbs)")
                rs_put+=("$(xfer put "$ref_port" "$rsmall" "$small_size" | kv put_mbs)")
                rs_get+=("$(xfer get "$ref_port" "$rsmall" "$small_size" | kv get_mbs)")
            fi
        done
        note "  rep $r: cell put ${c_put[-1]} get ${c_get[-1]}; reference get ${r_get[-1]} MB/s ($((fs_size / 1048576)) MiB)"
    done
    rm -f "$ref_file.small"
    alive "$cell_pid" "cell serve" "$cell_state.log"
    local mb=$((fs_size / 1048576)) sm=$((small_size / 1048576))
    local m1 m2 m3 m4 m5 m6 m7
    m1=$(median "${c_put[@]}") m2=$(median "${c_get[@]}") m3=$(median "${r_get[@]}")
    m4=$(median "${cs_put[@]}") m5=$(median "${cs_get[@]}") m6=$(median "${rs_put[@]}") m7=$(median "${rs_get[@]}")
    echo "### File write (PUT /v1/fs/file) and read (GET): throughput"
    echo
    echo "Median of $fs_reps, alternating which server goes first; MB = 10^6 bytes; one request per fresh connection,"
    echo "timed to the end of the response; every GET is compared with what was written."
    echo "cell writes /tmp/bench.bin inside its cell; the reference writes $ref_file on the host."
    echo "sandbox-agent $ref_version answers a PUT of $mb MiB with HTTP $big_put_status (its request body limit is 2 MiB),"
    echo "so its $mb MiB read uses a file the script wrote on the host, and the $sm MiB rows compare both ways."
    echo
    echo "| transfer | cell (MB/s) | sandbox-agent $ref_version (MB/s) | cell / reference | cell, all runs |"
    echo "| --- | ---: | ---: | ---: | --- |"
    echo "| write $mb MiB | $m1 | HTTP $big_put_status | n/a | ${c_put[*]} |"
    echo "| read $mb MiB | $m2 | $m3 | $(ratio "$m2" "$m3") | ${c_get[*]} |"
    echo "| write $sm MiB | $m4 | $m6 | $(ratio "$m4" "$m6") | ${cs_put[*]} |"
    echo "| read $sm MiB | $m5 | $m7 | $(ratio "$m5" "$m7") | ${cs_get[*]} |"
    echo
    echo "sandbox-agent $ref_version, all runs: read $mb MiB ${r_get[*]}; write $sm MiB ${rs_put[*]}; read $sm MiB ${rs_get[*]}"
    echo
}

# ---- 3. wrk on health ----------------------------------------------------------------------
cat >"$scratch/wrk.lua" <<'EOF'
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT rps=%.0f requests=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
EOF
bench_wrk() {
    note "wrk: $rounds rounds x 2 servers x $wrk_time..."
    local r who url tok line
    local c_rps=() r_rps=() c_sock=0 r_sock=0 c_stat=0 r_stat=0 c_lines=() r_lines=()
    for r in $(seq "$rounds"); do
        local order="cell ref"
        [ $((r % 2)) = 0 ] && order="ref cell"
        for who in $order; do
            if [ "$who" = cell ]; then url="http://127.0.0.1:$cell_port$cbase/health" tok=$token
            else url="http://127.0.0.1:$ref_port/v1/health" tok=""; fi
            line=$(WRK_TOKEN=$tok wrk -t2 -c128 -d"$wrk_time" -s "$scratch/wrk.lua" "$url" | grep '^WRK_RESULT') ||
                die "wrk failed against $who"
            note "  round $r $who: $line"
            local sock=$(( $(kv connect <<<"$line") + $(kv read <<<"$line") + $(kv write <<<"$line") + $(kv timeout <<<"$line") ))
            if [ "$who" = cell ]; then
                c_rps+=("$(kv rps <<<"$line")") c_sock=$((c_sock + sock)) c_stat=$((c_stat + $(kv status <<<"$line"))) c_lines+=("$line")
            else
                r_rps+=("$(kv rps <<<"$line")") r_sock=$((r_sock + sock)) r_stat=$((r_stat + $(kv status <<<"$line"))) r_lines+=("$line")
            fi
        done
    done
    alive "$cell_pid" "cell serve" "$cell_state.log"
    # Error statuses mean a request failed (a contender that errors), not a slow one.
    [ "$c_stat" = 0 ] || die "wrk: cell answered $c_stat requests with an error status"
    [ "$r_stat" = 0 ] || die "wrk: sandbox-agent answered $r_stat requests with an error status"
    local cm rm_ cl rl
    cm=$(median "${c_rps[@]}") rm_=$(median "${r_rps[@]}")
    # latency of the median round
    cl=$(for l in "${c_lines[@]}"; do echo "$(kv rps <<<"$l") $(kv p50_us <<<"$l") $(kv p99_us <<<"$l")"; done | sort -g | sed -n "$(( (rounds + 1) / 2 ))p")
    rl=$(for l in "${r_lines[@]}"; do echo "$(kv rps <<<"$l") $(kv p50_us <<<"$l") $(kv p99_us <<<"$l")"; done | sort -g | sed -n "$(( (rounds + 1) / 2 ))p")
    echo "### Health endpoint under wrk -t2 -c128 -d$wrk_time"
    echo
    echo "Median of $rounds rounds, alternating which server goes first. Socket errors are wrk's connect + read + write +"
    echo "timeout counts; \"HTTP errors\" is wrk's status count (responses with a status >= 400); both summed over all rounds."
    echo "wrk runs on the same 2 CPUs as the server."
    echo
    echo "| server | req/s (median) | req/s per round | socket errors | HTTP errors | latency p50 / p99 of the median round (ms) | req/s / reference |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: |"
    echo "| cell (GET /cells/ID/v1/health, token) | $cm | ${c_rps[*]} | $c_sock | $c_stat | $(awk -v a="$cl" 'BEGIN {split(a, x, " "); printf "%.2f / %.2f", x[2]/1000, x[3]/1000}') | $(ratio "$cm" "$rm_") |"
    echo "| sandbox-agent $ref_version (GET /v1/health) | $rm_ | ${r_rps[*]} | $r_sock | $r_stat | $(awk -v a="$rl" 'BEGIN {split(a, x, " "); printf "%.2f / %.2f", x[2]/1000, x[3]/1000}') | 1.00x |"
    echo
}

# ---- 4. daemon memory ----------------------------------------------------------------------
stats_row() {   # stats_row LABEL "rss pss thr fds"
    local s
    read -r -a s <<<"$2"
    echo "| $1 | $(mib "${s[0]}") | $(mib "${s[1]}") | ${s[2]} | ${s[3]} |"
}
bench_rss() {
    note "rss: a fresh daemon, $ncells idle cells..."
    local st="$scratch/fresh" p tok i t0 t1 ids=() s0 s1 s2
    start_cell "$st"; fresh_pid=$started_pid p=$started_port
    tok=$(tr -d '\n' <"$st/admin.token")
    api "$p" "$tok" PUT /v1/tenants/default '{"maxCells":'"$((ncells + 100))"',"maxMemory":"1T"}' >/dev/null
    sleep 1
    s0=$(proc_stats "$fresh_pid")
    t0=$(date +%s.%N)
    local resp mem=""
    for i in $(seq "$ncells"); do
        resp=$(api "$p" "$tok" POST /v1/cells '{}') ||
            { alive "$fresh_pid" "cell serve" "$st.log"; die "rss: creating cell $i failed"; }
        ids+=("$(json_field id <<<"$resp")")
        [ -n "$mem" ] || mem=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"]["memory"] // 1048576)' <<<"$resp")
    done
    t1=$(date +%s.%N)
    sleep 2
    s1=$(proc_stats "$fresh_pid")
    local n_init
    n_init=$(pgrep -c -P "$fresh_pid" || true)
    for i in "${ids[@]}"; do api "$p" "$tok" DELETE "/v1/cells/$i" >/dev/null; done
    sleep 2
    s2=$(proc_stats "$fresh_pid")
    alive "$fresh_pid" "cell serve" "$st.log"
    stop_pid "$fresh_pid"; fresh_pid=""
    local a b
    read -r -a a <<<"$s0"
    read -r -a b <<<"$s1"
    echo "### Daemon memory, threads and descriptors"
    echo
    echo "VmRSS from /proc/PID/status, Pss from /proc/PID/smaps_rollup, of the daemon process only (not of its cells)."
    echo "The first three rows are a fresh \`cell serve\`: idle, with $ncells idle cells created by POST /v1/cells {} (default"
    echo "image and limits: $mem MiB memory each; tenant quota raised first), and after deleting them. The others are the"
    echo "two servers benchmarked above, right after they started and after the benchmarks."
    echo
    echo "| daemon | VmRSS (MiB) | Pss (MiB) | threads | fds |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    stats_row "cell serve, 0 cells" "$s0"
    stats_row "cell serve, $ncells idle cells" "$s1"
    stats_row "cell serve, after deleting the $ncells cells" "$s2"
    stats_row "cell serve (benchmarked), idle at start, 0 cells" "$cell_idle_stats"
    stats_row "cell serve (benchmarked), 1 cell, after the benchmarks above" "$(proc_stats "$cell_pid")"
    stats_row "sandbox-agent $ref_version, idle at start" "$ref_idle_stats"
    stats_row "sandbox-agent $ref_version, after the benchmarks above" "$(proc_stats "$ref_pid")"
    echo
    awk -v a="${a[0]}" -v b="${b[0]}" -v pa="${a[1]}" -v pb="${b[1]}" -v fa="${a[3]}" -v fb="${b[3]}" -v n="$ncells" \
        -v t="$(awk -v x="$t0" -v y="$t1" 'BEGIN {print y - x}')" -v kids="$n_init" 'BEGIN {
        printf "Per idle cell: %.1f KiB VmRSS, %.1f KiB Pss and %.2f fds in the daemon; %d direct children of the daemon with %d cells; ", (b-a)/n, (pb-pa)/n, (fb-fa)/n, kids, n
        printf "creating the %d cells one after another took %.2f s (%.1f ms each).\n", n, t, t*1000/n }'
    echo
}

for b in $only; do
    case $b in
    run) bench_run ;;
    fs) bench_fs ;;
    wrk) bench_wrk ;;
    rss) bench_rss ;;
    *) die "unknown benchmark '$b' in CELL_DAEMON_BENCH_ONLY (run fs wrk rss)" ;;
    esac
done
alive "$cell_pid" "cell serve" "$cell_state.log"
if grep -qiE 'error|warn|abort|assert' "$cell_state.log"; then
    note "the daemon's log has warnings or errors:"
    grep -iE 'error|warn|abort|assert' "$cell_state.log" | head -20 >&2
fi
