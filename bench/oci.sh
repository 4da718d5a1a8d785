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

echo
echo "## Pod start through CRI: RunPodSandbox to the container's first output (issue 15)"
echo
top=$top /usr/bin/python3 - "$pod_n" "$warmup" <<'EOF'
import os, shutil, statistics, sys, tempfile, time, uuid
sys.path.insert(0, os.path.join(os.environ.get("top", "."), "tests", "integration"))
import criclient, oci

n, warmup = int(sys.argv[1]), int(sys.argv[2])
if criclient.missing() or not os.path.exists("/usr/lib/cni/bridge"):
    print("not measured: %s" % (criclient.missing() or "CNI plugins missing (scripts/install-deps.sh)"))
    sys.exit(0)
handlers = {"runc": "runc"}
if oci.runtime_missing("cell-oci") is None:
    handlers["cell-oci"] = "cell"
work = tempfile.mkdtemp(prefix="cell-oci-podbench-")
ctd = oci.Containerd(os.path.join(work, "containerd"), cri=True)
times = {name: [] for name in handlers}
failed = {}
seq = 0


def pod_start(handler):
    """Seconds from RunPodSandbox to the first line of the container's
    log; the pod is removed after, untimed."""
    global seq
    seq += 1
    name = "bench-%d" % seq
    cfg = {"metadata": {"name": name, "uid": str(uuid.uuid4()), "namespace": "bench"}, "hostname": name,
           "log_directory": os.path.join(work, "logs", name), "linux": {"cgroup_parent": ctd.cgroup_parent}}
    ccfg = {"metadata": {"name": "c"}, "image": {"image": image}, "command": ["echo", "first"], "log_path": "c.log"}
    log = os.path.join(cfg["log_directory"], "c.log")
    sid, step = None, "RunPodSandbox"
    try:
        t0 = time.perf_counter()
        sid = cri.runtime("RunPodSandbox", {"config": cfg, "runtime_handler": handler}).pod_sandbox_id
        step = "CreateContainer"
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg,
                                              "sandbox_config": cfg}).container_id
        step = "StartContainer"
        cri.runtime("StartContainer", {"container_id": cid})
        step = "first output"
        end = time.monotonic() + oci.STEP_TIMEOUT
        while not (os.path.exists(log) and os.path.getsize(log) > 0):
            if time.monotonic() > end:
                raise AssertionError("no output in %s after %ss" % (log, oci.STEP_TIMEOUT))
            time.sleep(0.001)
        return time.perf_counter() - t0
    except AssertionError as e:
        raise AssertionError("%s: %s" % (step, e)) from None
    finally:
        if sid:
            cri.runtime("StopPodSandbox", {"pod_sandbox_id": sid})
            cri.runtime("RemovePodSandbox", {"pod_sandbox_id": sid})


try:
    ctd.start()
    cri = criclient.CRI(ctd.sock)
    image = ctd.import_image("ocitest.invalid/busybox:1", oci.busybox_image_tar(), namespace=oci.CRI_NAMESPACE)
    for i in range(warmup + n):          # round-robin: drift hits both alike
        for name, handler in handlers.items():
            if name in failed:
                continue
            try:
                dt = pod_start(handler)
            except AssertionError as e:
                if name == "runc":
                    sys.exit("bench/oci.sh: the runc pod failed at %s" % e)
                failed[name] = str(e).replace("\n", " ")[:300]
                continue
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


print("| handler | median ms | p90 ms | pods |")
print("|---|---|---|---|")
for name in ("runc", "cell-oci"):
    if name in failed:
        print("| %s | fails (%s) | | |" % (name, failed[name].replace("|", "/")))
    elif name in times:
        v = times[name]
        print("| %s | %.1f | %.1f | %d |" % (name, statistics.median(v), p90(v), len(v)))
    else:
        print("| %s | not built (%s) | | |" % (name, oci.CELL_OCI_BIN))
if times.get("cell-oci") and "cell-oci" not in failed:
    print("\ncell-oci / runc (medians): %.2fx" % (statistics.median(times["cell-oci"]) /
                                                statistics.median(times["runc"])))
EOF
