#!/usr/bin/env bash
# bench/image.sh: `cell lane commit` of a lane holding N files (issue 13's
# "commit time for a lane with 10k files"), beside a plain `cp -a` of the
# same lane tree as the anchor; prints a markdown table of medians.  The base
# image is busybox (busybox-static) in a scratch state directory, or the
# rootfs directory CELL_IMAGE_BENCH_BASE (e.g. a built debian-bookworm's),
# whose files the commit hard-links.  Nothing is asserted.
#
#   sudo bash bench/image.sh
#
# Environment: CELL_IMAGE_BENCH_FILES (default 10000), CELL_IMAGE_BENCH_REPS
# (default 5), CELL_IMAGE_BENCH_BASE, CELL_BENCH_BUILD (the make BUILD
# directory, default build).  Smoke setting (CI): CELL_IMAGE_BENCH_FILES=100
# CELL_IMAGE_BENCH_REPS=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=${CELL_BENCH_BUILD:-build}
files=${CELL_IMAGE_BENCH_FILES:-10000}
reps=${CELL_IMAGE_BENCH_REPS:-5}
base=${CELL_IMAGE_BENCH_BASE:-}
die() { echo "image.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
make -C "$top" -j"$(nproc)" BUILD="$build" "$build/cell" >&2 || die "make BUILD=$build $build/cell failed"
cell=$top/$build/cell

scratch=$(mktemp -d /tmp/cell-image-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM HUP
state=$scratch/state
root=$state/images/debian-bookworm/rootfs
mkdir -p "$root"
if [ -n "$base" ]; then
    cp -a "$base/." "$root/"
else
    bb=$(command -v busybox || echo /bin/busybox)
    [ -x "$bb" ] || die "needs busybox (busybox-static) or CELL_IMAGE_BENCH_BASE"
    mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/proc" "$root/dev" "$root/sys"
    cp "$bb" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
fi
echo bench >"$state/images/debian-bookworm/ready"
"$cell" --state "$state" lane create work --image debian-bookworm >/dev/null
# The lane's layer as a cell leaves it: N files of 1 KiB in 100 directories.
upper=$state/lanes/work/upper
python3 - "$upper" "$files" <<'PY'
import os, sys
top, n = sys.argv[1], int(sys.argv[2])
blob = os.urandom(1024)
for i in range(n):
    d = os.path.join(top, "root", "work", "d%03d" % (i % 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(blob)
PY

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
commit_ms=() cp_ms=()
for i in $(seq "$reps"); do
    sync
    t0=$(now_ms)
    "$cell" --state "$state" lane commit work "snap$i" >/dev/null
    t1=$(now_ms)
    cp -a "$upper" "$scratch/cp$i"
    sync -f "$scratch/cp$i"
    t2=$(now_ms)
    commit_ms+=($((t1 - t0)))
    cp_ms+=($((t2 - t1)))
    rm -rf "$state/images/snap$i" "$scratch/cp$i"
done
c=$(printf '%s\n' "${commit_ms[@]}" | median)
p=$(printf '%s\n' "${cp_ms[@]}" | median)
base_files=$(find "$root" | wc -l)

echo "### cell lane commit, $files files in the lane, base of $base_files entries ($reps runs, median)"
echo
bench_machine_lines
echo
echo "| step | ms | vs cp -a |"
echo "|---|---:|---:|"
echo "| cell lane commit (link the base, apply the lane, hash the lane, fsync) | $c | $(awk -v a="$c" -v b="$p" 'BEGIN {printf "%.2fx", b ? a / b : 0}') |"
echo "| cp -a of the lane's tree, then syncfs (anchor) | $p | 1.00x |"
