#!/usr/bin/env bash
# bench/fs_api.sh: throughput of the daemon's file API alone (no reference
# server): PUT and GET /cells/ID/v1/fs/file of one large file, REPS times,
# one request per fresh connection; prints each run and the medians (MB/s,
# MB = 10^6 bytes).  Nothing is asserted.
#
#   sudo bash bench/fs_api.sh [CELL_BIN]     # default: BUILD/cell, built
#
# Environment: CELL_FS_BENCH_SIZE (bytes, default 268435456 = 256 MiB),
# CELL_FS_BENCH_REPS (default 5), CELL_FS_BENCH_MEMORY (the cell's memory
# limit, default 1G; the cell's writes are charged to it), CELL_BENCH_BUILD
# (the make BUILD directory that builds bench/http_bench.c, default build).
# Smoke setting (CI): CELL_FS_BENCH_SIZE=1048576 CELL_FS_BENCH_REPS=1.  Exits
# non-zero if a transfer fails (http_bench compares every GET with the PUT).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
measured=${1:-$top/$build/cell}
size=${CELL_FS_BENCH_SIZE:-268435456}
reps=${CELL_FS_BENCH_REPS:-5}
memory=${CELL_FS_BENCH_MEMORY:-1G}
die() { echo "fs_api.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
# The Makefile builds the client with the build's flags (and cell, unless given).
[ $# -eq 0 ] || [ -x "$1" ] || die "$1 is not an executable"
bench_make "$build/bench/http_bench" || die "make BUILD=$build $build/bench/http_bench failed"
bench_cell_setup cell-fs-bench "${1:-}" || exit 1   # $scratch, $pid, $cell_bin (a copy)

cp "$top/$build/bench/http_bench" "$scratch/http_bench"   # a rebuild while this runs cannot swap it
bench_cell_serve --max-file-size $((size * 2)) || die "cell serve did not start"   # $pid, $port, $token, $log
id=$(curl -sSf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data "{\"resources\":{\"memory\":\"$memory\"}}" "http://127.0.0.1:$port/v1/cells" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
path="/cells/$id/v1/fs/file?path=/tmp/bench.bin"
export HTTP_BENCH_TOKEN=$token
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# fail WHY: the daemon's log tail, then exit 1
fail() { tail -20 "$log" >&2; die "$*"; }
puts=() gets=()
for r in $(seq "$reps"); do
    line=$("$scratch/http_bench" put "$port" "$path" "$size") || fail "PUT of rep $r failed"
    puts+=("$(kv put_mbs <<<"$line")")
    line=$("$scratch/http_bench" get "$port" "$path" "$size") || fail "GET of rep $r failed"
    gets+=("$(kv get_mbs <<<"$line")")
    echo "rep $r: put ${puts[-1]} MB/s, get ${gets[-1]} MB/s"
done
echo "$(basename "$measured") $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'): $((size / 1048576)) MiB," \
     "median of $reps: PUT $(median "${puts[@]}") MB/s, GET $(median "${gets[@]}") MB/s"
