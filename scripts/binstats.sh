#!/bin/bash
# binstats.sh: what each binary of a build costs to start (issue 11).
# Per binary: size, the shared libraries it loads (ldd: count and names),
# the dynamic loader's LD_DEBUG=statistics (relocations, startup time in
# cycles) and the median wall time of a trivial run over N runs.
#
#   scripts/binstats.sh [BUILD_DIR]      (default: build)
#   BINSTATS_N=5 scripts/binstats.sh     (runs per timing, default 50)
#
# The trivial run is one that starts the program and exits at once:
# `cell help`, `cell-daemon --help`, cell-egress without its socket (exits
# 2), cell-untar and cell-mock-agent with an empty stdin.  Static binaries
# (cell-init, cell-mock-agent) have no dynamic loader statistics; cell-init
# is not run (it is a cell's pid 1).  The plugins are shared objects the
# lean `cell` loads only for a policy or a lane export/import: size and
# ldd only.  Output is plain text for docs/performance.md.
set -euo pipefail

BUILD=${1:-build}
N=${BINSTATS_N:-50}
cd "$(dirname "$0")/.."
[ -x "$BUILD/cell" ] || { echo "binstats: no $BUILD/cell (make BUILD=$BUILD first)" >&2; exit 1; }

# The command line of a trivial run of $1, or nothing if it is not run.
trivial() {
    case "$1" in
        cell) echo "$BUILD/cell help" ;;
        cell-daemon) echo "$BUILD/cell-daemon --help" ;;
        cell-egress|cell-untar|cell-mock-agent) echo "$BUILD/$1" ;;
        *) ;;
    esac
}

# Median wall time (ms) of N runs of "$@", stdin, stdout and stderr on
# /dev/null; a run over 5 s is killed and counted as such.
median_ms() {
    /usr/bin/python3 - "$N" "$@" <<'EOF'
import os, subprocess, sys, time
n, argv = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(n):
    t = time.perf_counter_ns()
    try:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=5)
    except subprocess.TimeoutExpired:
        pass
    times.append((time.perf_counter_ns() - t) / 1e6)
times.sort()
print("%.2f" % times[len(times) // 2])
EOF
}

# "relocations N, startup cycles N" from the dynamic loader of "$@".
ld_stats() {
    local out
    # Through env: LD_DEBUG must reach the program, not timeout(1).
    out=$(timeout -s KILL 5 env LD_DEBUG=statistics "$@" </dev/null 2>&1 >/dev/null || true)
    local rel cyc
    rel=$(echo "$out" | sed -n 's/.*number of relocations: *\([0-9]*\).*/\1/p' | head -1)
    cyc=$(echo "$out" | sed -n 's/.*total startup time in dynamic loader: *\([0-9]*\) cycles.*/\1/p' | head -1)
    echo "relocations ${rel:--}, loader startup cycles ${cyc:--}"
}

echo "# binstats $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?') $BUILD, N=$N"
for name in cell cell-daemon cell-egress cell-untar cell-init cell-mock-agent libcell-net.so libcell-archive.so; do
    bin="$BUILD/$name"
    [ -e "$bin" ] || { echo "$name: missing"; continue; }
    size=$(stat -c %s "$bin")
    # Captured first: grep -q on the pipe could end ldd with SIGPIPE (pipefail).
    out=$(ldd "$bin" 2>&1 || true)
    if ! echo "$out" | grep -q 'statically linked\|not a dynamic'; then
        libs=$(echo "$out" | awk '$1 !~ /^linux-vdso|^\/lib64\/ld-linux/ {print $1}' | sed 's/\.so.*//' | sort)
        count=$(echo "$libs" | grep -c . || true)
        names=$(echo "$libs" | tr '\n' ' ' | sed 's/ $//')
    else
        count=0 names="(static)"
    fi
    echo "$name: $size bytes, $count shared libraries: $names"
    cmd=$(trivial "$name")
    if [ -n "$cmd" ]; then
        # shellcheck disable=SC2086  # cmd is a program and its words
        [ "$names" = "(static)" ] || echo "  $(ld_stats $cmd)"
        # shellcheck disable=SC2086
        echo "  median wall time of '${cmd#"$BUILD"/}': $(median_ms $cmd) ms"
    fi
done
