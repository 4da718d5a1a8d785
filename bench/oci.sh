#!/usr/bin/env bash
# bench/oci.sh: issue 15's `ctr run` figure: `ctr run --rm --runc-binary
# RUNTIME --rootfs DIR ID /bin/true` through a private containerd 1.6 (the
# tests' oci.Containerd: own root, state and sockets, started here, stopped
# after), runc against build/cell-oci, round-robin, each run a fresh ctr
# process timed from posix_spawn to waitpid (containerd, its runc shim, the
# runtime's create/start/delete and the container, all inside).  Prints a
# markdown table: median and p90 in ms per runtime and the ratio of the
# medians (cell-oci / runc; the issue's goal: cell no slower than runc).  The
# cell-oci row says "not built" until that binary exists.  Nothing is
# asserted; a run that does not exit 0 ends the script non-zero.
#
#   sudo bash bench/oci.sh
#
# Environment:
#   CELL_OCI_BENCH_N       timed runs of each runtime                      (40)
#   CELL_OCI_BENCH_WARMUP  untimed runs of each first                      (3)
#   CELL_OCI_BIN           the runtime under test          (BUILD/cell-oci)
#   CELL_BENCH_BUILD       the make BUILD directory holding cell-oci       (build)
#   CELL_BENCH_COMMIT      label for the commit line
# It does not run make: build cell-oci first (make BUILD=... all).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
n=${CELL_OCI_BENCH_N:-40}
warmup=${CELL_OCI_BENCH_WARMUP:-3}
export CELL_OCI_BIN=${CELL_OCI_BIN:-$top/$build/cell-oci}
export CELL_BIN=${CELL_BIN:-$top/$build/cell}

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/oci.sh: run as root (containerd and runc need it)" >&2
    exit 1
fi
for t in runc containerd ctr; do
    command -v "$t" >/dev/null || { echo "bench/oci.sh: $t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

echo "## ctr run of /bin/true: runc vs cell-oci (issue 15)"
echo
bench_machine_lines
echo "- containerd: $(containerd --version | cut -d' ' -f3), runc: $(runc --version | head -1 | cut -d' ' -f3)"
echo
top=$top /usr/bin/python3 - "$n" "$warmup" <<'EOF'
import os, shutil, statistics, sys, tempfile, time
sys.path.insert(0, os.path.join(os.environ.get("top", "."), "tests", "integration"))
import oci

n, warmup = int(sys.argv[1]), int(sys.argv[2])
names = ["runc"] + (["cell-oci"] if oci.runtime_missing("cell-oci") is None else [])
work = tempfile.mkdtemp(prefix="cell-oci-bench-")
ctd = oci.Containerd(os.path.join(work, "containerd")).start()
times = {name: [] for name in names}
seq = 0
try:
    roots = {name: oci.make_rootfs(os.path.join(work, "rootfs-" + name)) for name in names}

    def once(name):
        global seq
        seq += 1
        argv = ctd.ctr_argv("run", "--rm", *ctd.run_args(name), "--rootfs", roots[name], "b%d" % seq,
                            "/bin/true")
        fa = [(os.POSIX_SPAWN_OPEN, i, "/dev/null", os.O_RDWR, 0) for i in (0, 1)]
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)
        _, st = os.waitpid(pid, 0)
        dt = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(st) != 0:
            sys.exit("bench/oci.sh: %s exited %d" % (" ".join(argv), os.waitstatus_to_exitcode(st)))
        return dt

    for i in range(warmup + n):          # round-robin: drift hits both alike
        for name in names:
            dt = once(name)
            if i >= warmup:
                times[name].append(dt * 1000)
finally:
    problems = ctd.stop()
    if problems:
        print("bench/oci.sh: containerd left: %s" % problems, file=sys.stderr)
    else:
        shutil.rmtree(work)

def p90(v):
    return sorted(v)[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]

print("| runtime | median ms | p90 ms | runs |")
print("|---|---|---|---|")
for name in ("runc", "cell-oci"):
    if name in times:
        v = times[name]
        print("| %s | %.1f | %.1f | %d |" % (name, statistics.median(v), p90(v), len(v)))
    else:
        print("| %s | not built (%s) | | |" % (name, oci.CELL_OCI_BIN))
if "cell-oci" in times:
    print("\ncell-oci / runc (medians): %.2fx" % (statistics.median(times["cell-oci"]) /
                                                statistics.median(times["runc"])))
EOF
