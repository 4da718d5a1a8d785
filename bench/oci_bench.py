"""oci_bench.py: the timed loops of bench/oci.sh (issue 15), one module so
the two figures share their containerd set-up and teardown, the percentile
and the table.

    python3 bench/oci_bench.py ctr N WARMUP    # ctr run --rm of /bin/true
    python3 bench/oci_bench.py pod N WARMUP    # RunPodSandbox to first output

Each prints a markdown table (median and p90 in ms, the count) and the ratio
of the medians, cell-oci / runc.  Runtimes are timed round-robin so drift
hits both alike.  Nothing is asserted; a runc failure exits non-zero."""
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import oci  # noqa: E402


def p90(v):
    return sorted(v)[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]


def print_table(kind, count, times, failed):
    """times: name -> [ms]; failed: name -> why.  A runtime in neither was
    not built."""
    print("| %s | median ms | p90 ms | %s |" % (kind, count))
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


@contextlib.contextmanager
def private_containerd(prefix, **kw):
    """A started oci.Containerd in a fresh directory; stopped after, and the
    directory removed unless it left something behind (then it is named)."""
    work = tempfile.mkdtemp(prefix=prefix)
    ctd = oci.Containerd(os.path.join(work, "containerd"), **kw)
    try:
        ctd.start()
        yield work, ctd
    finally:
        problems = ctd.stop()
        if problems:
            print("bench/oci.sh: containerd left: %s" % problems, file=sys.stderr)
        else:
            shutil.rmtree(work)


def round_robin(names, n, warmup, once):
    """once(name) -> seconds, or raises AssertionError (that runtime is then
    dropped, and reported; runc's failure ends the run)."""
    times, failed = {name: [] for name in names}, {}
    for i in range(warmup + n):
        for name in names:
            if name in failed:
                continue
            try:
                dt = once(name)
            except AssertionError as e:
                if name == "runc":
                    sys.exit("bench/oci.sh: runc failed: %s" % e)
                failed[name] = str(e).replace("\n", " ")[:300]
                continue
            if i >= warmup:
                times[name].append(dt * 1000)
    return times, failed


def bench_ctr(n, warmup):
    names = ["runc"] + (["cell-oci"] if oci.runtime_missing("cell-oci") is None else [])
    seq = 0
    with private_containerd("cell-oci-bench-") as (work, ctd):
        roots = {name: oci.make_rootfs(os.path.join(work, "rootfs-" + name)) for name in names}

        def once(name):
            nonlocal seq
            seq += 1
            argv = ctd.ctr_argv("run", "--rm", *ctd.run_args(name), "--rootfs", roots[name], "b%d" % seq,
                                "/bin/true")
            fa = [(os.POSIX_SPAWN_OPEN, i, "/dev/null", os.O_RDWR, 0) for i in (0, 1)]
            t0 = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)
            _, st = os.waitpid(pid, 0)
            dt = time.perf_counter() - t0
            if os.waitstatus_to_exitcode(st) != 0:
                # Either runtime failing ends the run: the CI smoke run is
                # what keeps this figure from rotting.
                sys.exit("bench/oci.sh: %s exited %d" % (" ".join(argv), os.waitstatus_to_exitcode(st)))
            return dt

        times, failed = round_robin(names, n, warmup, once)
    print_table("runtime", "runs", times, failed)


def bench_pod(n, warmup):
    import criclient
    if criclient.missing() or not os.path.exists("/usr/lib/cni/bridge"):
        print("not measured: %s" % (criclient.missing() or "CNI plugins missing (scripts/install-deps.sh)"))
        return
    handlers = {"runc": "runc"}
    if oci.runtime_missing("cell-oci") is None:
        handlers["cell-oci"] = "cell"
    seq = 0
    with private_containerd("cell-oci-podbench-", cri=True) as (work, ctd):
        cri = criclient.CRI(ctd.sock)
        image = ctd.import_image("ocitest.invalid/busybox:1", oci.busybox_image_tar(), namespace=oci.CRI_NAMESPACE)

        def once(name):
            """Seconds from RunPodSandbox to the first line of the
            container's log; the pod is removed after, untimed."""
            nonlocal seq
            seq += 1
            pod = "bench-%d" % seq
            cfg = {"metadata": {"name": pod, "uid": str(uuid.uuid4()), "namespace": "bench"}, "hostname": pod,
                   "log_directory": os.path.join(work, "logs", pod), "linux": {"cgroup_parent": ctd.cgroup_parent}}
            ccfg = {"metadata": {"name": "c"}, "image": {"image": image}, "command": ["echo", "first"],
                    "log_path": "c.log"}
            log = os.path.join(cfg["log_directory"], "c.log")
            sid, step = None, "RunPodSandbox"
            try:
                t0 = time.perf_counter()
                sid = cri.runtime("RunPodSandbox", {"config": cfg, "runtime_handler": handlers[name]}).pod_sandbox_id
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

        times, failed = round_robin(list(handlers), n, warmup, once)
    print_table("handler", "pods", times, failed)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("ctr", "pod"):
        sys.exit("usage: oci_bench.py ctr|pod N WARMUP")
    {"ctr": bench_ctr, "pod": bench_pod}[sys.argv[1]](int(sys.argv[2]), int(sys.argv[3]))
