#!/usr/bin/env bash
# bench/image.sh: issue 13's four "Measured" figures in one run, each beside
# its anchor (docs/performance.md: "Image import", "Lane commit", "Virtual
# filesystems").  Prints a summary table, then each part's own table, in
# markdown.  Nothing is asserted.
#
#   sudo bash bench/image.sh
#
#   import  `cell image import` of an OCI image layout tar (one uncompressed
#           layer: busybox and M files of 1 MiB of random bytes) into a fresh
#           state directory, in MB/s of layer data, beside a plain unpack of
#           the same tar (tar -x of the archive, sha256sum of its blobs, tar
#           -x of the layer): what cell adds on top (the confined parser, two
#           passes, the checks) is the ratio
#   run     `cell run --image IMG -- /bin/busybox true` with IMG a busybox
#           image imported here (config: Env, User by name) and IMG host,
#           round-robin, each a fresh process timed from posix_spawn to wait4
#           (bench_cell's cold row, bench/faststart.sh, times `cell run --
#           /bin/true` the same way; that row is here too); wall medians and
#           p90, and the CPU time of the whole process tree (rusage)
#   commit  `cell lane commit` of a lane holding N files (10k by default)
#           beside `cp -a` of the same lane tree plus syncfs.  The base image
#           is busybox (busybox-static), or the rootfs directory
#           CELL_IMAGE_BENCH_BASE (e.g. a built debian-bookworm's), whose
#           files the commit hard-links
#   vfs     bench/vfs_bench: `cat` of F files of S bytes in one cell from a
#           read-only vfs (the directory provider) and from a read-only bind
#           mount of the same files (vfs.sh runs the same program alone)
#
# Environment (defaults; CELL_IMAGE_BENCH_SMOKE=1, CI's, makes each tiny):
#   CELL_IMAGE_BENCH_REPS        import and commit repetitions       (5)
#   CELL_IMAGE_BENCH_IMPORT_MB   MiB of random files in the layer    (200)
#   CELL_IMAGE_BENCH_RUN_N       timed runs of each contender        (60)
#   CELL_IMAGE_BENCH_FILES       files in the committed lane         (10000)
#   CELL_IMAGE_BENCH_BASE        the commit's base rootfs            (busybox)
#   CELL_IMAGE_BENCH_VFS_FILES, CELL_IMAGE_BENCH_VFS_SIZE (bytes), CELL_IMAGE_BENCH_VFS_REPS
#                                                                    (16, 16777216, 5)
#   CELL_IMAGE_BENCH_ONLY        a subset of: import run commit vfs
#   CELL_IMAGE_BENCH_BASELINE    another build directory (its cell and
#                                bench/vfs_bench; e.g. an older commit's, built
#                                in a git worktree): its run rows join the run
#                                table, round-robin with this build's, and its
#                                vfs_bench runs alternate with this build's
#   CELL_BENCH_BUILD             the make BUILD directory            (build)
#   CELL_BENCH_NO_MAKE=1         use what BUILD has, do not run make
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
if [ "${CELL_IMAGE_BENCH_SMOKE:-0}" = 1 ]; then
    d_reps=1 d_mb=4 d_run_n=3 d_files=100 d_vfs_files=2 d_vfs_size=1048576 d_vfs_reps=1
else
    d_reps=5 d_mb=200 d_run_n=60 d_files=10000 d_vfs_files=16 d_vfs_size=16777216 d_vfs_reps=5
fi
build=${CELL_BENCH_BUILD:-build}
reps=${CELL_IMAGE_BENCH_REPS:-$d_reps}
import_mb=${CELL_IMAGE_BENCH_IMPORT_MB:-$d_mb}
run_n=${CELL_IMAGE_BENCH_RUN_N:-$d_run_n}
files=${CELL_IMAGE_BENCH_FILES:-$d_files}
base=${CELL_IMAGE_BENCH_BASE:-}
vfs_files=${CELL_IMAGE_BENCH_VFS_FILES:-$d_vfs_files}
vfs_size=${CELL_IMAGE_BENCH_VFS_SIZE:-$d_vfs_size}
vfs_reps=${CELL_IMAGE_BENCH_VFS_REPS:-$d_vfs_reps}
only=${CELL_IMAGE_BENCH_ONLY:-import run commit vfs}
baseline=${CELL_IMAGE_BENCH_BASELINE:-}
die() { echo "image.sh: $*" >&2; exit 1; }
wants() { [[ " $only " == *" $1 "* ]]; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
bb=$(command -v busybox || echo /bin/busybox)
[ -x "$bb" ] || die "needs busybox (busybox-static)"
bench_make "$build/cell" "$build/bench/vfs_bench" || die "make BUILD=$build failed"
bench_scratch cell-image-bench
# A copy, so that a rebuild of BUILD while this runs cannot swap the binary.
cell=$(bench_snapshot "$top/$build/cell" "$scratch/bin") || die "cannot copy $build/cell"
cp "$top/$build/bench/vfs_bench" "$scratch/bin/" || die "cannot copy vfs_bench"
old_cell=""
if [ -n "$baseline" ]; then
    old_cell=$(bench_snapshot "$baseline/cell" "$scratch/baseline") || die "cannot copy $baseline/cell"
    cp "$baseline/bench/vfs_bench" "$scratch/baseline/" || die "cannot copy $baseline/bench/vfs_bench"
fi

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", b ? a / b : 0}'; }
summary=()
details=()

# ---- import -------------------------------------------------------------------
bench_import() {
    local tar=$scratch/import.tar layer_bytes layer_hex info i t0 t1 t2 imp=() anc=() hasher=(sha256sum)
    # OpenSSL's SHA-256 uses the CPU's SHA instructions, as nettle's in cell
    # does; coreutils' sha256sum does not (5x slower here).
    if command -v openssl >/dev/null; then hasher=(openssl dgst -sha256); fi
    # The OCI layout is written by tests/integration/ocibuild.py (the tests'
    # image builder); its blobs are uncompressed, so layer bytes are bytes
    # written into the rootfs plus tar headers.
    info=$(python3 - "$top/tests/integration" "$tar" "$import_mb" <<'PY'
import os, sys
sys.path.insert(0, sys.argv[1])
import ocibuild
out, mb = sys.argv[2], int(sys.argv[3])
with open(ocibuild.BUSYBOX, "rb") as f:
    bb = f.read()
ents = [("bin", "dir"), ("bin/busybox", "file", bb, 0o755), ("bin/sh", "sym", "busybox"), ("data", "dir")]
ents += [("data/f%04d" % i, "file", os.urandom(1 << 20), 0o644) for i in range(mb)]
layer = ocibuild.tar_bytes(ents)
data, _ = ocibuild.oci_archive([layer], {"Env": ["PATH=/bin"]})
with open(out, "wb") as f:
    f.write(data)
print(len(layer), ocibuild.sha(layer))
PY
)
    read -r layer_bytes layer_hex <<<"$info"
    for i in $(seq "$reps"); do
        sync
        t0=$(now_ms)
        "$cell" --state "$scratch/imp$i" image import imp "$tar" >/dev/null 2>&1 || die "cell image import failed"
        t1=$(now_ms)
        mkdir -p "$scratch/anc$i/oci" "$scratch/anc$i/root"
        tar -xf "$tar" -C "$scratch/anc$i/oci"
        "${hasher[@]}" "$scratch/anc$i/oci/blobs/sha256/"* >/dev/null
        tar -xf "$scratch/anc$i/oci/blobs/sha256/$layer_hex" -C "$scratch/anc$i/root"
        t2=$(now_ms)
        imp+=($((t1 - t0)))
        anc+=($((t2 - t1)))
        rm -rf "$scratch/imp$i" "$scratch/anc$i"
    done
    local mi ma mbi mba
    mi=$(printf '%s\n' "${imp[@]}" | median)
    ma=$(printf '%s\n' "${anc[@]}" | median)
    mbi=$(awk -v b="$layer_bytes" -v t="$mi" 'BEGIN {printf "%.0f", t ? b / 1e3 / t : 0}')
    mba=$(awk -v b="$layer_bytes" -v t="$ma" 'BEGIN {printf "%.0f", t ? b / 1e3 / t : 0}')
    summary+=("| import throughput, $((layer_bytes / 1000000)) MB of layer data | $mbi MB/s | plain unpack (tar -x, ${hasher[0]} sha256, tar -x) $mba MB/s | $(ratio "$mbi" "$mba") |")
    details+=("### cell image import: OCI layout, one uncompressed layer of $layer_bytes bytes ($reps runs, median)" ""
        "| step | ms | MB/s of layer data | vs anchor |" "|---|---:|---:|---:|"
        "| cell image import (cell-untar: archive to hashed temp files, then the layer into the rootfs) | $mi | $mbi | $(ratio "$mbi" "$mba") |"
        "| tar -x of the archive, ${hasher[*]} of its blobs, tar -x of the layer (anchor, no checks) | $ma | $mba | 1.00x |" "")
}

# ---- run ----------------------------------------------------------------------
bench_run() {
    local st=$scratch/run-state out
    python3 - "$top/tests/integration" "$scratch/bb.tar" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import ocibuild
data, _ = ocibuild.oci_archive([ocibuild.busybox_base()], {"Env": ["PATH=/bin"], "User": "app"})
open(sys.argv[2], "wb").write(data)
PY
    "$cell" --state "$st" image import bb "$scratch/bb.tar" >/dev/null 2>&1 || die "cannot import the busybox image"
    if [ -n "$old_cell" ]; then
        "$old_cell" --state "$st-baseline" image import bb "$scratch/bb.tar" >/dev/null 2>&1 ||
            die "the baseline cannot import the busybox image"
    fi
    sync
    # The first `host` run generates that image; it and a few more are untimed.
    out=$(python3 - "$run_n" "$cell" "$st" "$old_cell" "$st-baseline" <<'PY'
import os, statistics, sys, time
n, cell, st, old, old_st = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
img = ["run", "--image", "bb", "--", "/bin/busybox", "true"]
host_img = ["run", "--image", "host", "--", "/bin/busybox", "true"]
rows = [("imported busybox image (config: Env, User by name)", cell, st, img),
        ("host image, the same command", cell, st, host_img),
        ("host image, `cell run -- /bin/true` (bench/faststart.sh's cli row)", cell, st, ["run", "--", "/bin/true"])]
if old:
    rows += [("baseline build: imported busybox image", old, old_st, img),
             ("baseline build: host image, the same command", old, old_st, host_img)]
wall = [[] for _ in rows]
cpu = [[] for _ in rows]
faults = [[] for _ in rows]
null = os.open("/dev/null", os.O_RDWR)
for i in range(n + 3):
    for k, (_, binary, state, args) in enumerate(rows):
        argv = [binary, "--state", state] + args
        t = time.perf_counter_ns()
        pid = os.posix_spawn(binary, argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
        _, status, ru = os.wait4(pid, 0)
        d = (time.perf_counter_ns() - t) / 1e6
        if status != 0:
            sys.exit("image.sh: %s exited with status %d" % (" ".join(argv), status))
        if i >= 3:
            wall[k].append(d)
            cpu[k].append((ru.ru_utime + ru.ru_stime) * 1e3)
            faults[k].append(ru.ru_minflt)
def q(v, p):
    v = sorted(v)
    x = (len(v) - 1) * p
    i = int(x)
    return v[i] + (v[min(i + 1, len(v) - 1)] - v[i]) * (x - i)
host = statistics.median(wall[1])
host_cpu = statistics.median(cpu[1])
for (name, *_), w, c, f in zip(rows, wall, cpu, faults):
    m, mc = statistics.median(w), statistics.median(c)
    print("| %s | %.2f | %.2f | %.2fx | %.2f | %.2fx | %.0f |" % (name, m, q(w, 0.9), m / host, mc, mc / host_cpu,
                                                               statistics.median(f)))
PY
) || die "the run benchmark failed"
    local img host
    img=$(sed -n 1p <<<"$out" | cut -d'|' -f3 | tr -d ' ')
    host=$(sed -n 2p <<<"$out" | cut -d'|' -f3 | tr -d ' ')
    summary+=("| \`cell run --image IMG -- /bin/busybox true\`, IMG imported (busybox) | $img ms | IMG host $host ms | $(ratio "$img" "$host") |")
    details+=("### cell run on an imported image vs host ($run_n runs each, round-robin, posix_spawn to wait4)" ""
        "| image | wall median ms | p90 ms | vs host | CPU ms (median, whole tree) | vs host | minor faults (median, whole tree) |"
        "|---|---:|---:|---:|---:|---:|---:|" "$out" "")
}

# ---- commit -------------------------------------------------------------------
bench_commit() {
    local state=$scratch/commit-state root upper i t0 t1 t2 commit_ms=() cp_ms=() c p base_files
    root=$state/images/debian-bookworm/rootfs
    mkdir -p "$root"
    if [ -n "$base" ]; then
        cp -a "$base/." "$root/"
    else
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
    summary+=("| commit of a lane with $files files (base: $base_files entries) | $c ms | cp -a of the lane + syncfs $p ms | $(ratio "$c" "$p") |")
    details+=("### cell lane commit, $files files in the lane, base of $base_files entries ($reps runs, median)" ""
        "| step | ms | vs cp -a |" "|---|---:|---:|"
        "| cell lane commit (link the base, apply the lane, hash the lane, fsync) | $c | $(ratio "$c" "$p") |"
        "| cp -a of the lane's tree, then syncfs (anchor) | $p | 1.00x |" "")
}

# ---- vfs ----------------------------------------------------------------------
bench_vfs() {
    local out i first cached bind
    mkdir "$scratch/vfs-data"
    for i in $(seq "$vfs_files"); do
        head -c "$vfs_size" /dev/urandom >"$scratch/vfs-data/f$i"
    done
    out=$("$scratch/bin/vfs_bench" --state "$scratch/vfs-state" --dir "$scratch/vfs-data" --reps "$vfs_reps") ||
        die "vfs_bench failed"
    details+=("### read-only vfs vs bind mount ($vfs_reps reps, a fresh cell each, medians)" "" "$out" "")
    if [ -n "$old_cell" ]; then
        # Alternated: baseline, this build again, baseline again.
        local b1 c2 b2
        b1=$("$scratch/baseline/vfs_bench" --state "$scratch/vfs-state" --dir "$scratch/vfs-data" --reps "$vfs_reps") &&
            c2=$("$scratch/bin/vfs_bench" --state "$scratch/vfs-state" --dir "$scratch/vfs-data" --reps "$vfs_reps") &&
            b2=$("$scratch/baseline/vfs_bench" --state "$scratch/vfs-state" --dir "$scratch/vfs-data" --reps "$vfs_reps") ||
            die "vfs_bench (baseline) failed"
        details+=("### baseline build and this one alternated: baseline, this build, baseline (the run above was this build's first)"
            "" "$b1" "" "$c2" "" "$b2" "")
    fi
    bind=$(sed -n 3p <<<"$out" | cut -d'|' -f3 | tr -d ' ')
    first=$(sed -n 4p <<<"$out" | cut -d'|' -f3 | tr -d ' ')
    cached=$(sed -n 5p <<<"$out" | cut -d'|' -f3 | tr -d ' ')
    summary+=("| read-only vfs, first read ($vfs_files files of $vfs_size bytes) | $first MB/s | read-only bind mount $bind MB/s | $(ratio "$first" "$bind") |"
        "| read-only vfs, second read (page cache) | $cached MB/s | read-only bind mount $bind MB/s | $(ratio "$cached" "$bind") |")
}

machine=$(bench_machine_lines)
# The run part first: the others write hundreds of MB, whose writeback
# slows every directory operation on the state's disk (a cell's run dir)
# for a while after.
for part in run import commit vfs; do
    if wants "$part"; then "bench_$part"; fi
done

echo "## Issue 13, measured (bench/image.sh)"
echo
echo "$machine"
echo
echo "| figure | cell | anchor | ratio |"
echo "|---|---:|---:|---:|"
printf '%s\n' "${summary[@]}"
echo
printf '%s\n' "${details[@]}"
