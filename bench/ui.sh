#!/usr/bin/env bash
# bench/ui.sh: the Inspector's first paint (docs/ui.md, issue 16): headless
# chromium (Debian's, driven by tests/ui's pinned playwright-core) loads
# /ui/ of a `cell serve`, each time in a fresh browser context (no cache),
# and reports the page's first-contentful-paint and load-event times, the
# bytes it fetched, and, side by side, the same for the reference server's
# inspector (sandbox-agent 0.4.2's binary from npm, bench/lib.sh's
# ref_fetch) when it can run here.  Medians and p90 in a markdown table.
#
#   sudo bash bench/ui.sh
#
# Environment:
#   CELL_UI_BENCH_N       page loads per server        (default 20)
#   CELL_UI_BENCH_REF     0: no reference server        (default 1)
#   CELL_BENCH_BUILD      the make BUILD directory      (default build)
#   CELL_BENCH_NO_MAKE    1: use what BUILD has, do not run make
#
# Smoke setting (CI, ~5 s): CELL_UI_BENCH_N=2 CELL_UI_BENCH_REF=0.  Exits
# non-zero if a server or the browser fails; nothing about speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
n=${CELL_UI_BENCH_N:-20}
use_ref=${CELL_UI_BENCH_REF:-1}

die() { echo "bench/ui.sh: $*" >&2; exit 1; }
command -v chromium >/dev/null || die "chromium is not installed (scripts/install-deps.sh)"
(cd "$top/tests/ui" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in tests/ui failed"
bench_cell_setup cell-ui-bench || exit 1   # $scratch, $pid, $cell_bin

bench_cell_serve || die "cell serve did not start"   # $pid, $url, $log
url="$url/ui/"

ref_url="" ref_pid="" ref_note="not run (CELL_UI_BENCH_REF=0)"
stop_ref() { stop_pid "$ref_pid"; }
# The script's status survives stop_ref for _bench_scratch_cleanup's exit.
trap 'rc=$?; stop_ref; (exit "$rc"); _bench_scratch_cleanup' EXIT
if [ "$use_ref" = 1 ]; then
    if ! ref_fetch "$top/$build/bench-cache"; then
        ref_note="not run: its binary could not be fetched"
    else
        start_ref_serve "$scratch/ref-home" "$scratch/ref.log" || die "the reference did not start"
        ref_pid=$started_pid
        ref_url="http://127.0.0.1:$started_port/ui/"
        ref_note="$ref_pkg ($("$ref_bin" --version 2>/dev/null | head -1)): its /ui/"
    fi
fi

echo "bench/ui.sh: $n page loads per server" >&2
node "$here/ui_paint.mjs" "$n" "cell=$url" ${ref_url:+"reference=$ref_url"} >"$scratch/table.md" ||
    { tail -20 "$log" >&2; die "ui_paint.mjs failed"; }
kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "cell serve died"; }

echo "### Inspector UI: first paint"
echo
bench_machine_lines
echo "- browser: $(chromium --version 2>/dev/null | head -1), headless, a fresh context (empty cache) per load, loopback"
echo "- reference: $ref_note"
echo
cat "$scratch/table.md"
