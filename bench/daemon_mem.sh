#!/usr/bin/env bash
# bench/daemon_mem.sh: the idle daemon's memory (issue 11: at most 5 MiB
# private) next to the reference server's, sandbox-agent 0.4.2
# (docs/performance.md, "Daemon memory").
#
#   sudo bash bench/daemon_mem.sh        # bench/faststart.sh calls it too
#
# Starts a fresh `cell serve` at its default settings (a new state directory,
# its unix socket, TCP on a free loopback port: the default port may be
# taken), waits until /v1/health answers and then CELL_MEM_SETTLE seconds,
# and reads /proc/PID/smaps_rollup (Private_Clean + Private_Dirty, Rss, Pss)
# and /proc/PID/smaps (per mapping); then the same for `sandbox-agent server`.
# CELL_MEM_RUNS fresh daemons of each, alternating; the tables give the
# median and every run, then the largest mappings of the median run.
#
# A file page counts as private only while no other process maps it: a
# library that another process on the host also uses shows in Rss but not
# in Private, so the figures depend on what else runs (on a quiet host they
# are the highest).  The per-mapping table gives Rss too, which does not.
#
# Environment:
#   CELL_BENCH_BUILD   the make BUILD directory to build and use (default build)
#   CELL_BENCH_NO_MAKE 1: use what BUILD has, do not run make
#   CELL_MEM_RUNS      fresh daemons measured per server         (default 3)
#   CELL_MEM_SETTLE    seconds idle after the first health answer (default 3)
#   CELL_MEM_TOP       mappings listed per server                 (default 10)
#   CELL_MEM_REF       0: no reference (nothing is fetched)       (default 1)
#   CELL_BENCH_COMMIT  label for the commit line
#
# Smoke setting (CI): CELL_MEM_RUNS=1 CELL_MEM_SETTLE=1.  Exits non-zero if a
# server fails to start or dies; nothing about memory is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
runs=${CELL_MEM_RUNS:-3}
settle=${CELL_MEM_SETTLE:-3}
ntop=${CELL_MEM_TOP:-10}
want_ref=${CELL_MEM_REF:-1}

die() { echo "bench/daemon_mem.sh: $*" >&2; exit 1; }
note() { echo "bench/daemon_mem.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (the daemon needs it)"
for t in curl python3; do command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"; done

bench_make all || die "make BUILD=$build all failed"
bench_scratch cell-daemon-mem   # sets scratch and pid; removes both on exit
# Copies, so that a rebuild while this runs cannot swap them.
cell_bin=$(bench_snapshot "$top/$build/cell" "$scratch/bin") || die "no cell binary in $build"
# Written back first: a mapped page that is dirty in the page cache counts
# as Private_Dirty, which a copy just made would add to the daemon's figure.
sync "$scratch/bin"/*
if [ "$want_ref" = 1 ]; then
    ref_fetch "$top/$build/bench-cache" || die "cannot fetch the reference ($ref_pkg)"
    sync "$ref_bin"
fi

# start_server WHO STATE: sets pid once its health endpoint answers (lib.sh's
# start_cell_serve and start_ref_serve).  The cell keeps its default unix
# socket, STATE/cell.sock, which start_cell_serve turns off (--socket ''):
# this measures the daemon as it is run (a later --socket wins).
start_server() {
    local who=$1 st=$2
    if [ "$who" = cell ]; then
        start_cell_serve "$cell_bin" "$st" "$st.log" --socket "$st/cell.sock" || die "$who did not start"
    else
        start_ref_serve "$st" "$st.log" || die "$who did not start"
    fi
    pid=$started_pid
}

# mappings PID: "private_kib clean_kib dirty_kib rss_kib name" per mapped
# file (or [heap], [stack], [anon]...), summed over its mappings.
mappings() {
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = (NF >= 6) ? $6 : "[anon]"; next}
         /^Rss:/ {rss[name] += $2}
         /^Private_Clean:/ {pc[name] += $2}
         /^Private_Dirty:/ {pd[name] += $2}
         END {for (n in rss) if (rss[n] > 0) print pc[n] + pd[n], pc[n] + 0, pd[n] + 0, rss[n], n}' "/proc/$1/smaps"
}

# measure WHO RUN: one fresh server, idle; appends "private clean dirty rss
# pss threads" to $scratch/WHO.runs and keeps its mappings as WHO.RUN.maps.
measure() {
    local who=$1 r=$2 st="$scratch/$1-$2"
    start_server "$who" "$st"
    sleep "$settle"
    kill -0 "$pid" 2>/dev/null || { tail -20 "$st.log" >&2; die "$who died while idle"; }
    local roll thr
    roll=$(awk '/^Private_Clean:/ {c=$2} /^Private_Dirty:/ {d=$2} /^Rss:/ {r=$2} /^Pss:/ {p=$2}
                END {print c + d, c + 0, d + 0, r + 0, p + 0}' "/proc/$pid/smaps_rollup")
    thr=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
    echo "$roll $thr" >>"$scratch/$who.runs"
    mappings "$pid" | sort -rn -k1,1 -k4,4 >"$scratch/$who.$r.maps"
    stop_pid "$pid"
    pid=""
    rm -rf "$st"
}

whos=(cell)
[ "$want_ref" = 1 ] && whos+=(ref)
for r in $(seq "$runs"); do
    order=("${whos[@]}")
    [ $((r % 2)) = 0 ] && [ "${#whos[@]}" = 2 ] && order=(ref cell)
    for who in "${order[@]}"; do
        measure "$who" "$r"
        note "run $r $who: $(tail -1 "$scratch/$who.runs") (private clean dirty rss pss KiB, threads)"
    done
done

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# median_run WHO: the run whose private total is the median (lower middle)
median_run() {
    awk '{print NR, $1}' "$scratch/$1.runs" | sort -n -k2,2 | sed -n "$(( (runs + 1) / 2 ))p" | cut -d' ' -f1
}
label() { if [ "$1" = cell ]; then echo "cell serve"; else echo "sandbox-agent $ref_version"; fi; }

echo "## Idle daemon memory (bench/daemon_mem.sh)"
echo
bench_machine_lines
echo "- cell: \`cell serve --listen 127.0.0.1:PORT\` (otherwise default settings), a fresh state directory, no cell;"
echo "  sandbox-agent $ref_version: \`server --no-token --no-telemetry\`; each measured ${settle} s after its health endpoint answered"
echo "- $runs fresh daemons of each, alternating; Private = smaps_rollup Private_Clean + Private_Dirty"
echo
echo "| server | Private (MiB), median | Private_Clean | Private_Dirty | Rss | Pss | threads | Private, every run |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for who in "${whos[@]}"; do
    m=$(median_run "$who")
    read -r p c d rss pss thr < <(sed -n "${m}p" "$scratch/$who.runs")
    all=$(awk '{printf "%s%.1f", (NR > 1 ? " " : ""), $1 / 1024}' "$scratch/$who.runs")
    echo "| $(label "$who") | $(mib "$p") | $(mib "$c") | $(mib "$d") | $(mib "$rss") | $(mib "$pss") | $thr | $all |"
done
echo
for who in "${whos[@]}"; do
    m=$(median_run "$who")
    echo "Largest $ntop mappings of $(label "$who") (its median run), by private memory (KiB):"
    echo
    echo "| mapping | Private | Private_Clean | Private_Dirty | Rss |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    head -n "$ntop" "$scratch/$who.$m.maps" | while read -r p c d rss name; do
        echo "| ${name##*/} | $p | $c | $d | $rss |"
    done
    echo
done
