#!/usr/bin/env bash
# bench/vfs.sh: read throughput of a read-only virtual filesystem (the
# directory provider the daemon's lane mounts use) against a read-only bind
# mount of the same files, in one cell (bench/vfs_bench.c); prints a markdown
# table of MB/s medians.  Nothing is asserted.
#
#   sudo bash bench/vfs.sh
#
# Environment: CELL_VFS_BENCH_FILES (default 16), CELL_VFS_BENCH_FILE_SIZE
# (bytes, default 16777216), CELL_VFS_BENCH_REPS (default 5), CELL_BENCH_BUILD
# (the make BUILD directory, default build).  Smoke setting (CI):
# CELL_VFS_BENCH_FILES=2 CELL_VFS_BENCH_FILE_SIZE=1048576 CELL_VFS_BENCH_REPS=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=${CELL_BENCH_BUILD:-build}
files=${CELL_VFS_BENCH_FILES:-16}
size=${CELL_VFS_BENCH_FILE_SIZE:-16777216}
reps=${CELL_VFS_BENCH_REPS:-5}
die() { echo "vfs.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
make -C "$top" -j"$(nproc)" BUILD="$build" "$build/bench/vfs_bench" >&2 || die "make BUILD=$build $build/bench/vfs_bench failed"

scratch=$(mktemp -d /tmp/cell-vfs-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM HUP
mkdir "$scratch/data"
for i in $(seq "$files"); do
    head -c "$size" /dev/urandom >"$scratch/data/f$i"
done
"$top/$build/bench/vfs_bench" --state "$scratch/state" --dir "$scratch/data" --reps "$reps"
