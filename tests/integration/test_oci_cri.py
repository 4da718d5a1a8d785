"""The CRI path as kubelet uses it (issue 15): a private containerd 1.6 with
its CRI plugin (oci.Containerd(cri=True): in a network namespace of its own
with a CNI bridge on 198.18.213.0/24, a pre-imported sandbox image), driven
over gRPC by criclient (the CRI v1 subset in cri/api.proto).  For each
runtime handler, runc first (the reference) and then "cell" (build/cell-oci
through io.containerd.runc.v2 with BinaryName): RunPodSandbox with
runtime_handler, CreateContainer, StartContainer, the container's log in the
CRI format, ExecSync's output and exit code, UpdateContainerResources seen
in the container's memory cgroup, the pod's address on the bridge reaching a
listener on the bridge's host side, StopContainer (SIGTERM handled),
RemoveContainer, StopPodSandbox, RemovePodSandbox; then no shim, mount,
veth or cgroup of the pod is left.  Then test_oci_runtime.py's escape
attempts as a pod's container command and through ExecSync: all refused
with cell.  Kubelet's QoS resources (oom_score_adj -997 and 1000, CPU
quota and shares) in /proc and the cgroups.  A pod's cell.dev/* annotations
in the runtime's config.json.

The "cell" handler is skipped, naming the step and the error, while
cell-oci is not built or fails a step (CELL_OCI_CRI_STRICT=1 makes such a
failure fail instead); the runc path never skips.

Bad input: an unknown runtime handler, an image that is not there, unknown
sandbox and container ids for every call that takes one, a second sandbox of
the same name (also four at once), ExecSync past its timeout; twelve
Stop/Remove calls at once on a running container and its pod.
"""
import contextlib
import ipaddress
import json
import os
import re
import subprocess
import uuid
import warnings

import pytest

import criclient
import oci
from daemon import wait_for

pytestmark = [
    pytest.mark.skipif(criclient.missing() is not None, reason=criclient.missing() or ""),
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"),
                       reason="CNI plugins missing (scripts/install-deps.sh: containernetworking-plugins)"),
]

IMAGE = "ocitest.invalid/busybox:1"
STRICT = os.environ.get("CELL_OCI_CRI_STRICT") == "1"
# the CRI log format: RFC 3339 nano time, stream, P(artial)/F(ull), the text
CRI_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$")
MiB = 1 << 20


class Node:
    """One private containerd with its CRI client and images: a node."""

    def __init__(self, ctd):
        self.ctd, self.cri, self.images = ctd, criclient.CRI(ctd.sock), {}

    def image(self, ref, tar):
        if ref not in self.images:
            self.images[ref] = self.ctd.import_image(ref, tar(), namespace=oci.CRI_NAMESPACE)
        return self.images[ref]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """A containerd per handler, made when first asked for: what cell-oci
    leaves behind (a pod it cannot stop) cannot fail a runc test.  After the
    module, each is stopped and must leave nothing; for cell's, what is left
    is a warning (each cell test already reported its leftovers as a step
    it failed), unless CELL_OCI_CRI_STRICT=1."""
    made = {}

    def get(handler):
        if handler not in made:
            c = oci.Containerd(tmp_path_factory.mktemp("containerd-" + handler), cri=True)
            made[handler] = [c, None]       # stopped after the module even if its start fails
            c.start()
            made[handler][1] = Node(c)
        if made[handler][1] is None:
            pytest.fail("the containerd for %s did not start (see the first test that asked)" % handler)
        return made[handler][1]
    yield get
    failures = []
    for handler, (c, node) in made.items():
        if node:
            node.cri.close()
        problems = c.stop()
        if problems and handler == "cell" and not STRICT:
            warnings.warn("cell-oci's containerd left: %s" % problems)
        elif problems:
            failures.append((handler, problems))
    assert not failures, failures


@pytest.fixture
def node(request, nodes):
    """The node of the test's handler (runc for a test without one)."""
    return nodes(request.getfixturevalue("handler") if "handler" in request.fixturenames else "runc")


@pytest.fixture
def ctd(node):
    return node.ctd


@pytest.fixture
def cri(node):
    return node.cri


@pytest.fixture
def image(node):
    return node.image(IMAGE, oci.busybox_image_tar)


class Pods:
    """The sandboxes a test made: stopped and removed after it, whatever
    happened (kubelet's StopPodSandbox + RemovePodSandbox)."""

    def __init__(self, cri, ctd, logs):
        self.cri, self.ctd, self.logs, self.ids, self.handlers = cri, ctd, str(logs), [], set()

    def config(self, name):
        return {"metadata": {"name": name, "uid": str(uuid.uuid4()), "namespace": "ocicri"},
                "hostname": name, "log_directory": os.path.join(self.logs, name),
                "linux": {"cgroup_parent": self.ctd.cgroup_parent}}

    def run(self, cfg, handler):
        self.handlers.add(handler)
        sid = self.cri.runtime("RunPodSandbox", {"config": cfg, "runtime_handler": handler}).pod_sandbox_id
        self.ids.append(sid)
        return sid

    def cleanup(self):
        """Remove the pods; then cgroups left under cgroup_parent fail a
        runc test (a cell one reports them in test_pod_lifecycle's step)."""
        for sid in self.ids:
            self.cri.remove_pod(sid)
        left = pod_cgroups(self.ctd)
        assert not left or "cell" in self.handlers, "cgroups left: %s" % left


@pytest.fixture
def pods(cri, ctd, tmp_path):
    p = Pods(cri, ctd, tmp_path / "logs")
    yield p
    p.cleanup()


@pytest.fixture(params=["runc", "cell"])
def handler(request):
    if request.param == "cell":
        why = oci.runtime_missing("cell-oci")
        if why:
            pytest.skip(why)
    return request.param


class Steps:
    """Names the step under way.  runc: a failing step fails the test.  The
    cell handler (unless CELL_OCI_CRI_STRICT=1): a failing step is noted
    and the test goes on to the next step (a fatal one, which later steps
    need, ends it at once); done() then skips the test naming every failed
    step and its error."""

    def __init__(self, handler):
        self.handler, self.failed = handler, []

    @contextlib.contextmanager
    def __call__(self, name, fatal=False):
        try:
            yield
        except (AssertionError, pytest.fail.Exception, OSError, subprocess.SubprocessError) as e:
            if self.handler != "cell" or STRICT:
                raise AssertionError("CRI step %s (%s): %s" % (name, self.handler, e)) from e
            # the message without pytest's rewritten "assert ..." explanation
            self.failed.append("%s: %s" % (name, " ".join(str(e).split("\nassert ")[0].split())[:500]))
            if fatal:
                self.done()

    def done(self):
        if self.failed:
            pytest.skip("cell-oci fails the CRI step(s) " + " | ".join(self.failed))


def status_of(cri, cid):
    return cri.runtime("ContainerStatus", {"container_id": cid, "verbose": True})


def container_pid(cri, cid):
    return json.loads(status_of(cri, cid).info["info"])["pid"]


def memory_cgroup(pid):
    """(cgroup path, limit file) of pid's memory cgroup, v1 or v2, as the
    host sees it."""
    with open("/proc/%d/cgroup" % pid) as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, ctrls, path in lines:
        if "memory" in ctrls.split(","):
            return path, os.path.join(oci.CGROUP_ROOT, "memory", path.lstrip("/"), "memory.limit_in_bytes")
    for hid, _, path in lines:
        if hid == "0":
            return path, os.path.join(oci.CGROUP_ROOT, path.lstrip("/"), "memory.max")
    raise AssertionError("no memory cgroup for %d: %s" % (pid, lines))


def read_log(path):
    """[(stream, tag, text)] of a CRI log file, every line checked."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            m = CRI_LOG_LINE.match(line.rstrip("\n"))
            assert m, "not a CRI log line: %r" % line
            out.append((m.group(2), m.group(3), m.group(4)))
    return out


def exec_sync(cri, cid, cmd, timeout=10):
    return cri.runtime("ExecSync", {"container_id": cid, "cmd": cmd, "timeout": timeout},
                       timeout=timeout + oci.STEP_TIMEOUT)


class Listener:
    """A TCP listener on the bridge's host side (containerd's network
    namespace, the gateway address): it answers one connection with a line
    and reports the peer's address."""

    SCRIPT = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1); s.settimeout(float(sys.argv[2]))
print(s.getsockname()[1], flush=True)
c, peer = s.accept()
c.sendall(b"hello from the host side\n"); c.close()
print(peer[0], flush=True)
"""

    def __init__(self, ctd, addr):
        self.p = subprocess.Popen(ctd.netns_exec("/usr/bin/python3", "-c", self.SCRIPT, addr, str(oci.STEP_TIMEOUT)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        import select
        ready, _, _ = select.select([self.p.stdout], [], [], oci.STEP_TIMEOUT)
        line = self.p.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.close()
            raise AssertionError("the listener in %s did not start: %r %s" % (ctd.netns, line, self.p.stderr.read()))
        self.port = int(line)

    def peer(self):
        out, err = self.p.communicate(timeout=oci.STEP_TIMEOUT + 5)
        assert self.p.returncode == 0, err
        return out.strip()

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def pod_cgroups(ctd):
    """Every cgroup left under the pods' cgroup_parent, in every hierarchy;
    those that are empty are removed (so that the module's containerd
    stops clean and the leftover is reported once, by the step)."""
    left = []
    # v1 and hybrid: one directory per hierarchy; v2: the root itself
    for h in [""] + os.listdir(oci.CGROUP_ROOT):
        top = os.path.join(oci.CGROUP_ROOT, h, ctd.cgroup_parent.lstrip("/"))
        for d, subdirs, _ in os.walk(top, topdown=False):
            if d != top:
                left.append(d)
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    return left


def netns_links(ctd):
    r = oci.run_bounded(["ip", "-n", ctd.netns, "-o", "link", "show"]).check()
    return [line.split(":")[1].strip().split("@")[0] for line in r.out.splitlines()]


def test_version_and_images(cri, image):
    v = cri.runtime("Version", {"version": "v1"})
    assert v.runtime_name == "containerd" and v.runtime_api_version == "v1", v
    for ref in (oci.SANDBOX_IMAGE, IMAGE):
        st = cri.image("ImageStatus", {"image": {"image": ref}})
        assert ref in st.image.repo_tags and st.image.id.startswith("sha256:"), st
    tags = [t for im in cri.image("ListImages").images for t in im.repo_tags]
    assert {oci.SANDBOX_IMAGE, IMAGE} <= set(tags), tags
    # an image that is not there: an empty answer, not an error
    assert not cri.image("ImageStatus", {"image": {"image": "ocitest.invalid/nosuch:1"}}).HasField("image")


def test_pod_lifecycle(cri, ctd, image, pods, handler):
    step = Steps(handler)
    cfg = pods.config("pod-" + handler)
    with step("RunPodSandbox", fatal=True):
        sid = pods.run(cfg, handler)
        st = cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid}).status
        assert st.state == 0 and st.runtime_handler == handler, st        # SANDBOX_READY
        pod_ip = st.network.ip
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(oci.CRI_SUBNET), st

    # sh as pid 1 handles SIGTERM (StopContainer's first signal) itself
    ccfg = {"metadata": {"name": "main"}, "image": {"image": image},
            "command": ["sh", "-c", 'trap "echo bye; exit 0" TERM; echo started; echo oops >&2; '
                                    'sleep 100000 & wait'],
            "envs": [{"key": "GREETING", "value": "hi there"}],
            "log_path": "main_0.log",
            "linux": {"resources": {"memory_limit_in_bytes": 64 * MiB}}}
    log = os.path.join(cfg["log_directory"], "main_0.log")
    with step("CreateContainer", fatal=True):
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg, "sandbox_config": cfg}).container_id
        assert status_of(cri, cid).status.state == 0, status_of(cri, cid)    # CONTAINER_CREATED
    with step("StartContainer", fatal=True):
        cri.runtime("StartContainer", {"container_id": cid})
        assert status_of(cri, cid).status.state == 1, status_of(cri, cid)    # CONTAINER_RUNNING
        pid = container_pid(cri, cid)
    with step("logs"):
        assert wait_for(lambda: len(read_log(log)) >= 2, timeout=10), read_log(log)
        assert sorted(read_log(log)) == [("stderr", "F", "oops"), ("stdout", "F", "started")], read_log(log)
        assert status_of(cri, cid).status.log_path == log
    with step("ExecSync"):
        r = exec_sync(cri, cid, ["sh", "-c", 'echo "$GREETING"; hostname; echo to-err >&2; exit 3'])
        assert (r.stdout, r.stderr, r.exit_code) == (b"hi there\n" + cfg["hostname"].encode() + b"\n",
                                                    b"to-err\n", 3), r
        r = exec_sync(cri, cid, ["cat", "/nosuch"])
        assert r.exit_code == 1 and b"nosuch" in r.stderr, r
    with step("ExecSync timeout"):
        # past its timeout the call fails and the process is killed
        with pytest.raises(criclient.CRIError, match="DEADLINE_EXCEEDED"):
            exec_sync(cri, cid, ["sleep", "31"], timeout=1)
        assert wait_for(lambda: b"sleep 31" not in exec_sync(cri, cid, ["ps", "-o", "args"]).stdout, timeout=10)
    with step("memory cgroup, UpdateContainerResources"):
        path, limit = memory_cgroup(pid)
        # the runtime put the container where the pod config says
        assert path.startswith(ctd.cgroup_parent + "/"), \
            "the container's memory cgroup is %s, not under the pod's cgroup_parent %s" % (path, ctd.cgroup_parent)
        with open(limit) as f:
            assert int(f.read()) == 64 * MiB, limit
        cri.runtime("UpdateContainerResources", {"container_id": cid,
                                                 "linux": {"memory_limit_in_bytes": 96 * MiB}})
        with open(limit) as f:
            assert int(f.read()) == 96 * MiB, limit
    with step("pod network"):
        r = exec_sync(cri, cid, ["ip", "-4", "-o", "addr", "show", "eth0"])
        assert r.exit_code == 0 and (" %s/24 " % pod_ip).encode() in r.stdout, r
        lst = Listener(ctd, oci.CRI_GATEWAY)
        try:
            r = exec_sync(cri, cid, ["nc", oci.CRI_GATEWAY, str(lst.port)])
            assert r.stdout == b"hello from the host side\n", r
            # no masquerade: the host side sees the pod's own address
            assert lst.peer() == pod_ip
        finally:
            lst.close()
    with step("StopContainer"):
        cri.runtime("StopContainer", {"container_id": cid, "timeout": 10})
        s = status_of(cri, cid).status
        assert s.state == 2 and s.exit_code == 0, s                         # CONTAINER_EXITED
        assert ("stdout", "F", "bye") in read_log(log), read_log(log)
        assert oci.proc_state(pid) is None
    with step("RemoveContainer"):
        cri.runtime("RemoveContainer", {"container_id": cid})
        with pytest.raises(criclient.CRIError, match="NOT_FOUND|not found|does not exist"):
            status_of(cri, cid)
    with step("StopPodSandbox"):
        cri.runtime("StopPodSandbox", {"pod_sandbox_id": sid})
        assert cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid}).status.state == 1   # NOTREADY
    with step("RemovePodSandbox"):
        cri.runtime("RemovePodSandbox", {"pod_sandbox_id": sid})
        with pytest.raises(criclient.CRIError):
            cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid})
    with step("nothing left"):
        assert wait_for(lambda: not ctd.shims(), timeout=10), ctd.shims()
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if line.split()[4].startswith(ctd.dir + "/")]
        assert not left, left
        assert set(netns_links(ctd)) <= {"lo", "cri0"}, netns_links(ctd)
        left = pod_cgroups(ctd)
        assert not left, "cgroups left: %s" % left
        # libcni's cache outside the private directory (containerd 1.6 has
        # no setting for it): the pod's entry goes at teardown
        cache = oci.CNI_CACHE
        assert not [n for n in (os.listdir(cache) if os.path.isdir(cache) else []) if sid in n], cache
    step.done()


def test_bad_input(cri, ctd, image, pods):
    cfg = pods.config("bad")
    # a handler containerd has no runtime for is refused, and nothing is made
    with pytest.raises(criclient.CRIError, match="no runtime for"):
        pods.run(pods.config("nohandler"), "nosuch")
    sid = pods.run(cfg, "runc")
    # a second sandbox of the same name (metadata) is refused
    with pytest.raises(criclient.CRIError, match="reserved"):
        cri.runtime("RunPodSandbox", {"config": dict(cfg), "runtime_handler": "runc"})
    # an image that is not there: no pull (the registry name cannot resolve)
    bad = {"metadata": {"name": "noimage"}, "image": {"image": "ocitest.invalid/nosuch:1"}, "command": ["true"]}
    with pytest.raises(criclient.CRIError):
        cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": bad, "sandbox_config": cfg})
    # unknown ids, for every call that takes one
    ok = {"metadata": {"name": "c"}, "image": {"image": image}, "command": ["true"]}
    with pytest.raises(criclient.CRIError, match="NOT_FOUND|not found|does not exist"):
        cri.runtime("CreateContainer", {"pod_sandbox_id": "0" * 64, "config": ok, "sandbox_config": cfg})
    for m in ("StartContainer", "ContainerStatus", "ExecSync", "UpdateContainerResources"):
        with pytest.raises(criclient.CRIError, match="NOT_FOUND|not found|does not exist"):
            cri.runtime(m, {"container_id": "nosuch"})
    with pytest.raises(criclient.CRIError, match="NOT_FOUND|not found|does not exist"):
        cri.runtime("PodSandboxStatus", {"pod_sandbox_id": "nosuch"})
    # containerd 1.6 answers NOT_FOUND to a Stop of an unknown id (kubelet
    # takes that as stopped); the Removes succeed, as the CRI asks of them
    for m, field in (("StopContainer", "container_id"), ("StopPodSandbox", "pod_sandbox_id")):
        with pytest.raises(criclient.CRIError, match="NOT_FOUND"):
            cri.runtime(m, {field: "nosuch"})
    cri.runtime("RemoveContainer", {"container_id": "nosuch"})
    cri.runtime("RemovePodSandbox", {"pod_sandbox_id": "nosuch"})


def test_concurrent_sandboxes_of_one_name(cri, ctd, pods):
    """Four RunPodSandbox of one pod name at once: one sandbox, the others
    refused, and the refused ones leave nothing (one shim, one address)."""
    import concurrent.futures
    cfg = pods.config("same")
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(pods.run, cfg, "runc") for _ in range(4)]
    ok = [f.result() for f in futs if f.exception() is None]
    errs = [f.exception() for f in futs if f.exception() is not None]
    assert len(ok) == 1 and len(errs) == 3, (ok, errs)
    assert all(isinstance(e, criclient.CRIError) and "reserved" in str(e) for e in errs), errs
    assert wait_for(lambda: len(ctd.shims()) == 1, timeout=10), ctd.shims()
    ipam = os.path.join(ctd.dir, "cni", "ipam", "cri-bridge")
    assert len([n for n in os.listdir(ipam) if n[0].isdigit()]) == 1, os.listdir(ipam)


@pytest.fixture
def py_image(node):
    """busybox with lib and lib64 linked into /usr: python3 runs from the
    host's /usr, bound read-only by the container config."""
    import ocibuild

    def tar():
        links = ocibuild.tar_bytes([("lib", "sym", "usr/lib"), ("lib64", "sym", "usr/lib64"), ("usr", "dir")])
        return ocibuild.oci_archive([oci.busybox_layer(), links],
                                    {"Env": ["PATH=/bin:/usr/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
                                    platform={"architecture": "amd64", "os": "linux"})[0]
    return node.image("ocitest.invalid/busybox-py:1", tar)


# Not ptrace_attach_1: here pid 1 is the container's own sh, not the
# script itself, and a cell may ptrace its own processes (docs/security.md);
# no host process is in its pid namespace to attach to (host_pids).
ESCAPE_KEYS = ("mount", "umount_mask", "unshare_user", "unshare_mount", "setns", "keyctl", "bpf",
               "kexec_load", "init_module", "reboot", "open_by_handle_at", "sethostname", "mknod", "sysrq",
               "sys_write", "usr_write", "chmod_suid")


def check_escapes(out):
    """test_oci_runtime.py's expectations of a cell-oci container."""
    allowed = [k for k in ESCAPE_KEYS if out[k] == "ok"]
    assert not allowed, "allowed: %s (%s)" % (allowed, out)
    assert out["sys_write"] == "EROFS" and out["usr_write"] == "EROFS", out
    assert out["chmod_suid"] == "EPERM", out
    assert out["kcore"] in (0, "absent"), out
    assert max(out["host_pids"]) < 100, out        # a pid namespace of its own


def test_escape_attempts_under_cri(cri, ctd, py_image, pods, handler):
    """The project's escape attempts (test_oci_runtime.ESCAPES: mount,
    unmounting a mask, new namespaces, setns, ptrace, keyrings, bpf,
    modules, reboot, file handles, hostname, mknod, sysrq, /sys, a
    read-only bind, set-uid) as the container command of a pod and through
    ExecSync, with the security context kubelet gives a plain pod (nothing
    asked: no seccomp profile, the default capabilities).  With cell every
    one is refused; runc (unconfined seccomp, as the CRI's default) is only
    run to check the harness, and what it allows is not asserted."""
    from test_oci_runtime import ESCAPES
    step = Steps(handler)
    cfg = pods.config("esc-" + handler)
    ccfg = {"metadata": {"name": "esc"}, "image": {"image": py_image},
            "command": ["sh", "-c", 'python3 -c "$ESC"; exec sleep 100000'],
            "envs": [{"key": "ESC", "value": ESCAPES}],
            "mounts": [{"container_path": "/usr", "host_path": "/usr", "readonly": True}],
            "log_path": "esc.log",
            # kubelet's choice for a v1 pod: a pid namespace per container
            "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}}
    log = os.path.join(cfg["log_directory"], "esc.log")
    with step("RunPodSandbox, CreateContainer, StartContainer", fatal=True):
        sid = pods.run(cfg, handler)
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg, "sandbox_config": cfg}).container_id
        cri.runtime("StartContainer", {"container_id": cid})
    with step("escapes as the container command"):
        assert wait_for(lambda: [t for s, _, t in read_log(log) if s == "stdout"], timeout=20), read_log(log)
        out = json.loads([t for s, _, t in read_log(log) if s == "stdout"][0])
        if handler == "cell":
            check_escapes(out)
    with step("escapes through ExecSync"):
        r = exec_sync(cri, cid, ["python3", "-c", ESCAPES], timeout=20)
        assert r.exit_code == 0, r
        out = json.loads(r.stdout)
        if handler == "cell":
            check_escapes(out)
    step.done()


def test_concurrent_teardown(cri, ctd, image, pods, handler):
    """Stop and Remove of a running container and of its pod, twelve calls
    at once (kubelet retries them, and a node drain overlaps): each call
    answers (success or a CRI error, within its deadline), and after a last
    StopPodSandbox + RemovePodSandbox nothing of the pod is left."""
    import concurrent.futures
    step = Steps(handler)
    cfg = pods.config("race-" + handler)
    ccfg = {"metadata": {"name": "r"}, "image": {"image": image}, "command": ["sleep", "100000"], "log_path": "r.log"}
    with step("RunPodSandbox, CreateContainer, StartContainer", fatal=True):
        sid = pods.run(cfg, handler)
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg, "sandbox_config": cfg}).container_id
        cri.runtime("StartContainer", {"container_id": cid})
        pid = container_pid(cri, cid)
    calls = [("StopContainer", {"container_id": cid, "timeout": 1}), ("RemoveContainer", {"container_id": cid}),
             ("StopPodSandbox", {"pod_sandbox_id": sid}), ("RemovePodSandbox", {"pod_sandbox_id": sid})] * 3
    with step("concurrent Stop/Remove"):
        with concurrent.futures.ThreadPoolExecutor(len(calls)) as ex:
            futs = [ex.submit(cri.runtime, m, f) for m, f in calls]
        errs = [f.exception() for f in futs if f.exception() is not None]
        assert all(isinstance(e, criclient.CRIError) for e in errs), errs
        assert "DEADLINE_EXCEEDED" not in " ".join(map(str, errs)), errs
    with step("last StopPodSandbox, RemovePodSandbox"):
        for m in ("StopPodSandbox", "RemovePodSandbox"):
            try:
                cri.runtime(m, {"pod_sandbox_id": sid})
            except criclient.CRIError as e:
                assert e.code.name == "NOT_FOUND", e
        with pytest.raises(criclient.CRIError, match="NOT_FOUND"):
            cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid})
    with step("nothing left"):
        assert wait_for(lambda: oci.proc_state(pid) is None, timeout=10), oci.proc_state(pid)
        assert wait_for(lambda: not ctd.shims(), timeout=10), ctd.shims()
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if line.split()[4].startswith(ctd.dir + "/")]
        assert not left, left
        assert set(netns_links(ctd)) <= {"lo", "cri0"}, netns_links(ctd)
        left = pod_cgroups(ctd)
        assert not left, "cgroups left: %s" % left
    step.done()


def bundle_annotations(ctd, cid):
    """The annotations of the config.json containerd wrote for cid."""
    path = os.path.join(ctd.state, "io.containerd.runtime.v2.task", oci.CRI_NAMESPACE, cid, "config.json")
    with open(path) as f:
        return json.load(f).get("annotations", {})


def test_cell_annotations_reach_the_runtime(cri, ctd, image, pods, handler):
    """The pod's cell.dev/* annotations (issue 15's egress policy) reach the
    config.json of the sandbox and of its containers for the cell handler
    (containerd's pod_annotations / container_annotations), and no other
    annotation does; runc's entry lists none, so its bundles carry neither
    (only containerd's own io.kubernetes.cri.* ones)."""
    step = Steps(handler)
    policy = json.dumps({"allow": ["%s:80" % oci.CRI_GATEWAY]})
    cfg = pods.config("ann-" + handler)
    cfg["annotations"] = {"cell.dev/egress-policy": policy, "example.com/other": "x"}
    ccfg = {"metadata": {"name": "a"}, "image": {"image": image}, "command": ["sleep", "100000"],
            "annotations": {"cell.dev/probe": "c", "example.com/c": "y"}, "log_path": "a.log"}
    with step("RunPodSandbox, CreateContainer, StartContainer", fatal=True):
        sid = pods.run(cfg, handler)
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg, "sandbox_config": cfg}).container_id
        cri.runtime("StartContainer", {"container_id": cid})
    with step("annotations in the runtime's config.json"):
        for bid in (sid, cid):
            ann = bundle_annotations(ctd, bid)
            mine = {k: v for k, v in ann.items() if not k.startswith("io.kubernetes.cri.")}
            want = {"cell.dev/egress-policy": policy} if handler == "cell" else {}
            if bid == cid and handler == "cell":
                want["cell.dev/probe"] = "c"
            assert mine == want, (bid == sid and "sandbox" or "container", ann)
        # what the CRI reports is the pod's config, unchanged
        st = cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid}).status
        assert dict(st.annotations) == cfg["annotations"], st
    step.done()


def cgroup_file(pid, controller, v1_name, v2_name):
    """The path of a controller's file in pid's cgroup (v1 or v2)."""
    with open("/proc/%d/cgroup" % pid) as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, ctrls, path in lines:
        if controller in ctrls.split(","):
            return os.path.join(oci.CGROUP_ROOT, ctrls, path.lstrip("/"), v1_name)
    for hid, _, path in lines:
        if hid == "0":
            return os.path.join(oci.CGROUP_ROOT, path.lstrip("/"), v2_name)
    raise AssertionError("no %s cgroup for %d: %s" % (controller, pid, lines))


def read(path):
    with open(path) as f:
        return f.read().strip()


def test_qos_resources(cri, ctd, image, pods, handler):
    """What kubelet asks for by QoS class: a Guaranteed container's
    oom_score_adj -997 (clamped by restrict_oom_score_adj to containerd's
    own: root here cannot lower it) with a CPU quota and shares, a
    BestEffort one's 1000 with shares 2; both run, and the values are in
    /proc and the containers' cgroups."""
    step = Steps(handler)
    cfg = pods.config("qos-" + handler)
    own = int(read("/proc/%d/oom_score_adj" % ctd.proc.pid))
    classes = {"guaranteed": {"oom_score_adj": -997, "cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512,
                              "memory_limit_in_bytes": 64 * MiB},
               "besteffort": {"oom_score_adj": 1000, "cpu_shares": 2}}
    with step("RunPodSandbox", fatal=True):
        sid = pods.run(cfg, handler)
    for name, res in classes.items():
        ccfg = {"metadata": {"name": name}, "image": {"image": image}, "command": ["sleep", "100000"],
                "log_path": name + ".log", "linux": {"resources": res}}
        with step("%s: CreateContainer, StartContainer" % name, fatal=True):
            cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg,
                                                  "sandbox_config": cfg}).container_id
            cri.runtime("StartContainer", {"container_id": cid})
            pid = container_pid(cri, cid)
        with step("%s: oom_score_adj" % name):
            assert int(read("/proc/%d/oom_score_adj" % pid)) == max(res["oom_score_adj"], own), \
                (read("/proc/%d/oom_score_adj" % pid), own)
        with step("%s: cpu cgroup" % name):
            if os.path.exists(os.path.join(oci.CGROUP_ROOT, "cpu")):         # v1, hybrid
                assert int(read(cgroup_file(pid, "cpu", "cpu.shares", "cpu.weight"))) == res["cpu_shares"]
                quota = read(cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max"))
                assert int(quota) == res.get("cpu_quota", -1), quota
            else:                                                           # v2
                quota = read(cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max"))
                assert quota.split()[0] == str(res.get("cpu_quota", "max")), quota
    step.done()
