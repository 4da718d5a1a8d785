#!/usr/bin/env bash
# bench/run.sh: cell's performance benchmarks (docs/performance.md).
#
#   sudo bash bench/run.sh            # or: make bench
#
# Builds cell and the benchmark driver, then prints one markdown table per
# benchmark: cold start (cell vs bwrap vs unshare), warm start (a process in
# a running cell vs on the host), density (memory per idle cell), and where a
# cold start spends its time.  Nothing is asserted: it measures.
#
# Environment:
#   CELL_BENCH_N        cold-start iterations per contender       (default 200)
#   CELL_BENCH_WARM_N   warm-start iterations per contender       (default 1000)
#   CELL_BENCH_DENSITY  idle cells alive at once                  (default 500)
#   CELL_BENCH_PHASES_N iterations of the phase breakdown         (default 200, 0 = skip)
#   CELL_BENCH_WARMUP   untimed iterations before each benchmark  (default 5)
#   CELL_BENCH_RAW      directory to keep raw samples as CSV      (default: none)
#   CELL_BENCH_ONLY     space-separated subset of: cold warm density phases
#   CELL_BENCH_COMMIT   label for the commit line (default: git rev-parse --short HEAD)
#   CELL_BENCH_BUILD    the make BUILD directory to build and use (default build)
#   CELL_BENCH_NO_MAKE  1: use what BUILD has, do not run make (bench/faststart.sh)
#
# Smoke setting (CI, scripts/test.sh): CELL_BENCH_N=3 CELL_BENCH_WARM_N=10
# CELL_BENCH_DENSITY=3 CELL_BENCH_PHASES_N=3 CELL_BENCH_WARMUP=1.  Exits
# non-zero if a contender or the driver fails; asserts nothing about speed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
n=${CELL_BENCH_N:-200}
warm_n=${CELL_BENCH_WARM_N:-1000}
density=${CELL_BENCH_DENSITY:-500}
phases_n=${CELL_BENCH_PHASES_N:-200}
warmup=${CELL_BENCH_WARMUP:-5}
only=${CELL_BENCH_ONLY:-cold warm density phases}
build=${CELL_BENCH_BUILD:-build}

die() { echo "bench/run.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
bwrap_bin=$(command -v bwrap) || die "bwrap (bubblewrap) is not installed"
unshare_bin=$(command -v unshare) || die "unshare (util-linux) is not installed"

# ---- build -------------------------------------------------------------------
# The Makefile builds the drivers with the build's own flags and libraries.
bench_make all bench-bin || die "make BUILD=$build all bench-bin failed"
# Snapshot what is measured, so a rebuild while the benchmark runs (someone
# working in the same tree) cannot swap binaries under it.
snap="$top/$build/bench/run"
mkdir -p "$snap"
for b in bench/bench_cell bench/bench_phases; do
    cp "$top/$build/$b" "$snap/$(basename "$b")" || die "$build/$b is missing"
done
cell_bin=$(bench_snapshot "$top/$build/cell" "$snap") || die "$build/cell is missing"

# ---- scratch state, and cleanup that holds even on failure --------------------
state=$(mktemp -d /tmp/cell-bench.XXXXXX)
ids="$state.ids"
: >"$ids"
raw_args=()
if [ -n "${CELL_BENCH_RAW:-}" ]; then
    mkdir -p "$CELL_BENCH_RAW"
    raw_args=(--raw "$CELL_BENCH_RAW")
fi
child=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        # bench_cell destroys its cells when told to stop; give it a moment.
        for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    # A killed driver leaves no process (each cell-init dies with its control
    # socket) but may leave the empty cgroup directories of its own cells.
    # After a clean run there should be none: say so if there were.
    local left=0
    if [ -s "$ids" ]; then
        while read -r id; do
            for d in /sys/fs/cgroup/*/cell/"$id" /sys/fs/cgroup/cell/"$id"; do
                [ -d "$d" ] || continue
                left=$((left + 1))
                # Busy for a moment while a dying cell's tasks exit.
                for _ in $(seq 20); do
                    if [ ! -d "$d" ] || rmdir "$d" 2>/dev/null; then break; fi
                    sleep 0.1
                done
            done
        done <"$ids"
    fi
    if [ "$left" -gt 0 ]; then
        echo "bench/run.sh: removed $left cgroup directories left behind by cells of this run" >&2
    fi
    rm -rf "$state" "$ids"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Run the driver in the background so a signal to this script reaches the
# trap promptly, and the trap can stop the driver by its pid.
drive() {
    "$@" --state "$state" --ids "$ids" --warmup "$warmup" "${raw_args[@]}" &
    child=$!
    wait "$child"
    child=""
}

# ---- sanity: every contender must actually work before it is timed -------------
"$bwrap_bin" "${bench_bwrap_args[@]}" /bin/true ||
    die "bwrap cannot start a sandbox on this host"
"$unshare_bin" --user --map-root-user --pid --fork --mount --net --uts --ipc /bin/true ||
    die "unshare cannot create the namespaces on this host"
"$cell_bin" --state "$state" run -- /bin/true || die "cell run does not work on this host"

# ---- header ---------------------------------------------------------------------
cg=$(awk '$9 == "cgroup2" {v2=1} $9 == "cgroup" {v1=1} END {print (v1 && v2) ? "hybrid (v1 controllers + v2)" : v1 ? "v1" : v2 ? "v2" : "none"}' /proc/self/mountinfo)
echo "## cell benchmarks"
echo
bench_machine_lines
echo "- cgroups: $cg"
echo "- tools: $("$bwrap_bin" --version), $("$unshare_bin" --version | head -1)"
echo "- iterations: cold $n, warm $warm_n, density $density cells, phases $phases_n (each after $warmup untimed)"
echo

for b in $only; do
    case $b in
    cold)
        echo "running cold start ($n iterations x 5 contenders)..." >&2
        drive "$snap/bench_cell" cold --n "$n" --cell "$cell_bin" --bwrap "$bwrap_bin" --unshare "$unshare_bin"
        ;;
    warm)
        echo "running warm start ($warm_n iterations x 3 contenders)..." >&2
        drive "$snap/bench_cell" warm --n "$warm_n"
        ;;
    density)
        echo "running density ($density cells)..." >&2
        drive "$snap/bench_cell" density --n "$density" --bwrap "$bwrap_bin"
        ;;
    phases)
        if [ "$phases_n" -gt 0 ]; then
            echo "running the phase breakdown ($phases_n iterations)..." >&2
            drive "$snap/bench_phases" phases --n "$phases_n"
        fi
        ;;
    *) die "unknown benchmark '$b' in CELL_BENCH_ONLY (cold warm density phases)" ;;
    esac
done
