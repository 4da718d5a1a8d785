#!/usr/bin/env bash
# bench/desktop.sh: the desktop's latencies (docs/desktop.md, issue 16):
# desktop start to the first screenshot, screenshot latency (png, jpeg), an
# input round trip and input to pixels, for a cell's desktop (`cell serve`,
# the host image: the host's Xvfb, openbox, xdotool, ImageMagick, xterm) and,
# side by side, the reference server's (sandbox-agent 0.4.2's binary from
# npm, bench/lib.sh's ref_fetch, running on the host) when it can run here
# (it needs xrandr: x11-xserver-utils).  bench/desktop.py says what each
# figure spans.  Medians and p90 in a markdown table.
#
#   sudo bash bench/desktop.sh
#
# Environment:
#   CELL_DESKTOP_BENCH_N     desktop starts (twice each) per server (default 5)
#   CELL_DESKTOP_BENCH_M     each other measurement per server (default 20)
#   CELL_DESKTOP_BENCH_REF   0: no reference server            (default 1)
#   CELL_BENCH_BUILD         the make BUILD directory          (default build)
#   CELL_BENCH_NO_MAKE       1: use what BUILD has, do not run make
#
# Smoke setting (CI, ~10 s): CELL_DESKTOP_BENCH_N=1 CELL_DESKTOP_BENCH_M=2.
# Exits non-zero if a server fails to start or a request fails; nothing
# about speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
n=${CELL_DESKTOP_BENCH_N:-5}
m=${CELL_DESKTOP_BENCH_M:-20}
use_ref=${CELL_DESKTOP_BENCH_REF:-1}

die() { echo "bench/desktop.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in curl python3 Xvfb openbox xdotool convert xterm; do
    command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"
done
bench_make "$build/cell" "$build/cell-daemon" || die "make BUILD=$build $build/cell $build/cell-daemon failed"
bench_scratch cell-desktop-bench   # sets scratch and pid; removes both on exit
cell_bin=$(bench_snapshot "$top/$build/cell" "$scratch/bin") || die "no cell binary to measure"

log=$scratch/daemon.log
start_cell_serve "$cell_bin" "$scratch/state" "$log" || die "cell serve did not start"
pid=$started_pid
url="http://127.0.0.1:$started_port"
token=$(tr -d '\n' <"$scratch/state/admin.token")

ref_url="" ref_pid="" ref_note="not run (CELL_DESKTOP_BENCH_REF=0)"
# The reference goes first, then bench_scratch's cleanup (the daemon, the
# scratch directory) with the script's exit status.
_desktop_cleanup() {
    local rc=$?
    stop_pid "$ref_pid"
    (exit "$rc")
    _bench_scratch_cleanup
}
trap _desktop_cleanup EXIT
if [ "$use_ref" = 1 ]; then
    if ! command -v xrandr >/dev/null; then
        ref_note="not run: it needs xrandr (apt-get install x11-xserver-utils)"
    elif ! ref_fetch "$top/$build/bench-cache"; then
        ref_note="not run: its binary could not be fetched"
    else
        start_ref_serve "$scratch/ref-home" "$scratch/ref.log" || die "the reference did not start"
        ref_pid=$started_pid
        ref_url="http://127.0.0.1:$started_port"
        ref_note="$ref_pkg ($("$ref_bin" --version 2>/dev/null | head -1)), on the host (its desktop runs as root there)"
    fi
fi

echo "bench/desktop.sh: $n starts and $m of each measurement per server" >&2
python3 "$here/desktop.py" "$url" "$token" "$ref_url" "$n" "$m" >"$scratch/table.md" ||
    { tail -20 "$log" >&2; [ -z "$ref_pid" ] || tail -20 "$scratch/ref.log" >&2; die "desktop.py failed"; }
kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "cell serve died"; }

echo "### Desktop: start, screenshots, input"
echo
bench_machine_lines
echo "- cell: a fresh cell of the host image (1G) per start; the desktop's tools are the host's"
echo "- reference: $ref_note"
echo
cat "$scratch/table.md"
