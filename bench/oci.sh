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
# asserted; a run that does not exit 0 ends the script non-zero.  The timed
# loops are in bench/oci_bench.py.
#
#   sudo bash bench/oci.sh
#
# Then issue 15's pod start figure: through the CRI (a second private
# containerd with its CRI plugin, oci.Containerd(cri=True), driven by
# tests/integration/criclient.py as kubelet would), the time from
# RunPodSandbox with runtime_handler runc or cell to the first line of the
# container's log file (CreateContainer, StartContainer in between; the
# container runs `echo first`); the pod is stopped and removed untimed.
# Same table, same ratio.  A cell-oci failure there is printed in its row
# (step and error), a runc failure ends the script non-zero.
#
# Environment:
#   CELL_OCI_BENCH_N       timed runs of each runtime                      (40)
#   CELL_OCI_BENCH_POD_N   timed pod starts of each handler   (20, or N if less)
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
pod_n=${CELL_OCI_BENCH_POD_N:-$(( n < 20 ? n : 20 ))}
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
/usr/bin/python3 "$here/oci_bench.py" ctr "$n" "$warmup"

echo
echo "## Pod start through CRI: RunPodSandbox to the container's first output (issue 15)"
echo
/usr/bin/python3 "$here/oci_bench.py" pod "$pod_n" "$warmup"
