#!/usr/bin/env bash
# bench/desktop_live.sh: the desktop live view's frame rate and input to
# frame latency (GET /cells/{id}/v1/desktop/live, docs/desktop.md; issue 16)
# for a cell's desktop on the host image (the host's Xvfb, openbox, xdotool,
# xterm, ffmpeg).  bench/desktop_live.py says what each figure spans.  The
# reference server has no counterpart to run: its live view is WebRTC.
#
#   sudo bash bench/desktop_live.sh
#
# Environment:
#   CELL_LIVE_BENCH_M        measurements of each kind (default 20)
#   CELL_BENCH_BUILD         the make BUILD directory  (default build)
#   CELL_BENCH_NO_MAKE       1: use what BUILD has, do not run make
#
# Smoke setting (CI, ~10 s): CELL_LIVE_BENCH_M=2.  Exits non-zero if the
# server fails to start or a request fails; nothing about speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
m=${CELL_LIVE_BENCH_M:-20}

die() { echo "bench/desktop_live.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in python3 Xvfb openbox xdotool xterm ffmpeg; do
    command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"
done
bench_cell_setup cell-desktop-live-bench || exit 1   # $scratch, $pid, $cell_bin

bench_cell_serve || die "cell serve did not start"   # $pid, $url, $token, $log

echo "bench/desktop_live.sh: $m of each measurement" >&2
python3 "$here/desktop_live.py" "$url" "$token" "$m" >"$scratch/table.md" ||
    { tail -20 "$log" >&2; die "desktop_live.py failed"; }
kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "cell serve died"; }

echo "### Desktop live view: frames per second, input to frame"
echo
bench_machine_lines
echo "- a fresh cell of the host image (1G), a 1280x720 desktop, one viewer over loopback"
echo
cat "$scratch/table.md"
