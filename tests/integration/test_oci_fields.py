"""cell-oci's handling of spec fields beyond the first slice (issue 15;
docs/oci.md): systemd's cgroupsPath form (--systemd-cgroup), seccomp
flags, a user namespace joined by path, and the pure cgroup v2 code path
on this host's controller-less cgroup2 mount.  Hooks have their own file
(test_oci_hooks.py)."""
import os
import shutil

import pytest

import oci
from daemon import wait_for

pytestmark = pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None,
                                reason=oci.runtime_missing("cell-oci") or "")


@pytest.fixture
def cell(tmp_path):
    yield from oci.runtime_fixture("cell-oci", tmp_path)


def systemd_run(rt, *args):
    return oci.run_bounded([rt.binary, "--root", rt.root, "--log", rt.log, "--log-format", "json",
                            "--systemd-cgroup"] + [str(a) for a in args])


def test_systemd_cgroup_path_maps_to_the_scope_systemd_would_make(cell, tmp_path):
    """--systemd-cgroup with slice:prefix:name (containerd's SystemdCgroup =
    true): the container's cgroup is where systemd would put the scope,
    /SLICE-expanded/prefix-name.scope, in every v1 hierarchy cell-oci uses;
    delete removes it.  No systemd runs here: cell-oci never asks it."""
    prefix = "cellocitest" + os.urandom(4).hex()
    slice_ = prefix + "-pod.slice"
    b = oci.make_bundle(tmp_path / "b", ["sleep", "30"],
                        edit=lambda c: c["linux"].update(cgroupsPath="%s:cri-containerd:c1" % slice_))
    cell.ids.append("c1")
    sub = oci.Subreaper(tmp_path)
    rel = "%s.slice/%s/cri-containerd-c1.scope" % (prefix, slice_)
    try:
        r = sub.run([cell.binary, "--root", cell.root, "--systemd-cgroup", "create", "--bundle", b, "c1"])
        assert r.rc == 0, r
        pid = cell.state("c1")["pid"]
        for h in ("freezer", "pids", "memory"):
            with open("/sys/fs/cgroup/%s/%s/cgroup.procs" % (h, rel)) as f:
                assert str(pid) in f.read().split(), h
        cell.delete("c1", force=True).check()
        assert not os.path.exists("/sys/fs/cgroup/freezer/" + rel)
    finally:
        sub.close()
        for h in os.listdir("/sys/fs/cgroup"):
            for d in (rel, os.path.dirname(rel), "%s.slice" % prefix):
                if os.path.isdir("/sys/fs/cgroup/%s/%s" % (h, d)):
                    os.rmdir("/sys/fs/cgroup/%s/%s" % (h, d))


@pytest.mark.parametrize("path,why", [
    ("/plain/cgroupfs", "must be slice:prefix:name with --systemd-cgroup"),
    ("../../x.slice:p:n", "must be NAME.slice"),
    ("a--b.slice:p:n", "empty part between dashes"),
    ("system.slice:p:../../etc", "may hold only letters"),
    ("system.slice:p", "must be slice:prefix:name"),
])
def test_bad_systemd_cgroup_paths_refused(cell, tmp_path, path, why):
    b = oci.make_bundle(tmp_path / "b", ["true"], edit=lambda c: c["linux"].update(cgroupsPath=path))
    r = systemd_run(cell, "run", "--bundle", b, "c1")
    assert r.rc != 0 and "cgroupsPath" in r.err and why in r.err, r
    assert cell.status("c1") is None


def test_runc_systemd_cgroup_needs_systemd(tmp_path):
    """The reference: runc's systemd driver asks systemd over D-Bus and so
    fails on this host (systemd is not running); cell-oci's mapping is the
    only one tested here."""
    if oci.runtime_missing("runc"):
        pytest.skip(oci.runtime_missing("runc"))
    if shutil.which("systemctl") and oci.run_bounded(["systemctl", "is-system-running"]).out.strip() in (
            "running", "degraded"):
        pytest.skip("systemd runs here")
    rt = oci.Runtime("runc", tmp_path)
    b = oci.make_bundle(tmp_path / "b", ["true"], edit=lambda c: c["linux"].update(cgroupsPath="system.slice:x:c1"))
    r = systemd_run(rt, "run", "--bundle", b, "c1")
    assert r.rc != 0 and "systemd" in r.err, r


def seccomp_profile(flags, errno_ret=None):
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "flags": flags,
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
    if errno_ret is not None:
        prof["syscalls"][0]["errnoRet"] = errno_ret
    return prof


@pytest.mark.parametrize("name", ["runc", "cell-oci"])
def test_seccomp_flags_applied(tmp_path, name):
    """linux.seccomp.flags LOG, SPEC_ALLOW and TSYNC: cell-oci runs the
    container with the profile (sethostname gets its errnoRet).  The
    reference, Debian 12's runc 1.1.5, refuses any flag ("seccomp flags are
    not yet supported by runc"): checked so that a runc that learns them
    shows up here."""
    if oci.runtime_missing(name):
        pytest.skip(oci.runtime_missing(name))
    rt = oci.Runtime(name, tmp_path)
    try:
        flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
        b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "hostname x 2>&1; echo rc=$?"],
                            edit=lambda c: c["linux"].update(seccomp=seccomp_profile(flags)))
        r = rt.run("c1", b)
        if name == "runc":
            assert r.rc != 0 and "seccomp flags are not yet supported" in r.err, r
            return
        assert r.rc == 0 and "rc=1" in r.out and "not implemented" in r.out.lower(), r
    finally:
        rt.cleanup()


@pytest.mark.parametrize("profile,field", [
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}, "flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}, "flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/seccomp-agent.sock"}, "listenerPath"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "EPERM"}, "defaultErrnoRet"),
])
def test_seccomp_unsupported_refused_at_create(cell, tmp_path, profile, field):
    """A container never runs without the filter its spec asked for:
    what cell-oci cannot apply fails create, naming the field."""
    b = oci.make_bundle(tmp_path / "b", ["true"], edit=lambda c: c["linux"].update(seccomp=profile))
    r = cell.create("c1", b)
    assert r.rc != 0 and "linux.seccomp." + field in r.err, r
    assert cell.status("c1") is None


# ---- a user namespace joined by path --------------------------------------------------

SANDBOX_ID_KEY = "io.kubernetes.cri.sandbox-id"


def pod_bundle(tmp_path, name, args, pod, userns_path=None, extra=None):
    def edit(c):
        c["annotations"] = {SANDBOX_ID_KEY: pod} if pod else {}
        if userns_path:
            c["linux"]["namespaces"].append({"type": "user", "path": userns_path})
        if extra:
            extra(c)
    return oci.make_bundle(tmp_path / name, args, edit=edit)


def uid_map(pid):
    with open("/proc/%d/uid_map" % pid) as f:
        return f.read().split()


@pytest.fixture
def pod(cell, tmp_path):
    """A running sandbox container "s1" of pod s1 (its init started, so in
    its user namespace), run through a subreaper; yields (sub, pid)."""
    sub = oci.Subreaper(tmp_path)
    try:
        b = pod_bundle(tmp_path, "sb", ["sleep", "60"], "s1")
        cell.run("s1", b, detach=True, via=sub).check()
        pid = cell.state("s1")["pid"]
        # started: the init is in its user namespace once it execs
        assert wait_for(lambda: os.readlink("/proc/%d/ns/user" % pid) != os.readlink("/proc/self/ns/user"))
        yield sub, pid
    finally:
        cell.cleanup()
        sub.close()


def test_pod_member_joins_its_sandboxs_user_namespace(cell, tmp_path, pod):
    """A member of the pod with {"type": "user", "path":
    "/proc/SANDBOX/ns/user"} runs in that namespace, on the sandbox's uid
    range; its root is the sandbox's root (the same host id)."""
    sub, spid = pod
    b = pod_bundle(tmp_path, "m", ["sh", "-c", "readlink /proc/self/ns/user; cat /proc/self/uid_map; id -u"], "s1",
                   "/proc/%d/ns/user" % spid)
    r = cell.run("m1", b)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0] == os.readlink("/proc/%d/ns/user" % spid)
    assert lines[1].split() == uid_map(spid)
    assert lines[2] == "0"


def test_the_range_stays_held_while_a_member_runs(cell, tmp_path, pod):
    """The sandbox deleted first (delete --force) while a member runs: the
    member still holds the uid range, so the next container gets another
    one, never the member's ids."""
    sub, spid = pod
    shared = uid_map(spid)
    b = pod_bundle(tmp_path, "m", ["sleep", "60"], "s1", "/proc/%d/ns/user" % spid)
    cell.run("m1", b, detach=True, via=sub).check()
    mpid = cell.state("m1")["pid"]
    cell.delete("s1", force=True).check()
    assert cell.status("m1") == "running"
    b2 = oci.make_bundle(tmp_path / "other", ["sleep", "60"])
    cell.run("c2", b2, detach=True, via=sub).check()
    other = uid_map(cell.state("c2")["pid"])
    assert other[1] != shared[1], (other, shared)
    assert wait_for(lambda: os.readlink("/proc/%d/ns/user" % mpid) != os.readlink("/proc/self/ns/user"))
    assert uid_map(mpid) == shared


def test_concurrent_members_join(cell, tmp_path, pod):
    """Four members created at once all join (the range's holder list is
    changed under its lock), and each holds it."""
    import threading
    sub, spid = pod
    results = {}
    def one(i):
        b = pod_bundle(tmp_path, "m%d" % i, ["sleep", "60"], "s1", "/proc/%d/ns/user" % spid)
        results[i] = cell.create("m%d" % i, b)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in results.items():
        assert r.rc == 0, r
    # every member named in the range's holder file, beside the sandbox
    slot = (int(uid_map(spid)[1]) - 0x50000000) // 65536
    with open("/run/cell/oci-slots/%d" % slot) as f:
        holders = {int(line.split()[0]) for line in f if line.strip()}
    assert {cell.state("m%d" % i)["pid"] for i in range(4)} | {spid} <= holders


def test_hostile_user_namespace_paths_refused(cell, tmp_path, pod):
    """A spec may name any path: only the pod's sandbox's namespace is
    joined.  The host's (through /proc/1 or the runtime's own /proc/self),
    a file, a FIFO (never opened for real: create does not hang), another
    kind of namespace, one an unprivileged process made, the sandbox's
    from another pod's container or without a pod, and mappings that
    differ from the sandbox's are each refused, naming the field."""
    import subprocess
    sub, spid = pod
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    outsider = subprocess.Popen(["unshare", "--user", "--map-root-user", "sleep", "60"])
    try:
        assert wait_for(lambda: os.readlink("/proc/%d/ns/user" % outsider.pid) != os.readlink("/proc/self/ns/user"))
        own = "/proc/%d/ns/user" % spid
        cases = [
            # pid 1 here may be a process root cannot inspect: refused either way
            ("/proc/1/ns/user", "s1", None, "linux.namespaces user: "),
            ("/proc/%d/ns/user" % os.getpid(), "s1", None, "the host's user namespace"),
            ("/proc/self/ns/user", "s1", None, "the host's user namespace"),
            ("/etc/passwd", "s1", None, "is not a namespace"),
            (fifo, "s1", None, "is not a namespace"),
            ("/proc/%d/ns/net" % spid, "s1", None, "is not a user namespace"),
            ("/proc/%d/ns/user" % outsider.pid, "s1", None, "is not the user namespace of a cell-oci container"),
            (own, "other-pod", None, "of another pod"),
            (own, None, None, "of another pod"),
            (own, "s1", lambda c: c["linux"].update(
                uidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}],
                gidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}]), "linux.uidMappings"),
            ("/no/such/ns", "s1", None, "cannot open"),
        ]
        for i, (path, pod_id, extra, why) in enumerate(cases):
            b = pod_bundle(tmp_path, "h%d" % i, ["true"], pod_id, path, extra)
            r = cell.create("h%d" % i, b)
            assert r.rc != 0 and why in r.err, (path, r)
            assert "linux." in r.err, r
            assert cell.status("h%d" % i) is None
    finally:
        outsider.kill()
        outsider.wait()


def test_created_sandbox_cannot_be_joined_yet(cell, tmp_path):
    """Before start the sandbox's init is still in the host's user
    namespace: /proc/PID/ns/user is the host's, and refused as such."""
    sub = oci.Subreaper(tmp_path)
    try:
        cell.create("s2", pod_bundle(tmp_path, "sb", ["sleep", "60"], "s2"), via=sub).check()
        pid = cell.state("s2")["pid"]
        r = cell.create("m2", pod_bundle(tmp_path, "m", ["true"], "s2", "/proc/%d/ns/user" % pid))
        assert r.rc != 0 and "host's user namespace" in r.err, r
    finally:
        cell.cleanup()
        sub.close()


# ---- cgroup v2 ----------------------------------------------------------------------

V2_ROOT = "/sys/fs/cgroup/unified"


def cgroup2_root():
    """This host's cgroup2 hierarchy without controllers (hybrid), or the
    pure v2 root; None when there is none."""
    for root in (V2_ROOT, "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(root, "cgroup.controllers")) and \
                not os.path.exists(os.path.join(root, "cgroup.freeze")):
            return root
    return None


@pytest.fixture
def v2(cell, tmp_path):
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 hierarchy here")
    sub = oci.Subreaper(tmp_path)
    try:
        yield root, sub
    finally:
        cell.cleanup()
        sub.close()


def v2_create(cell, sub, root, cid, bundle):
    """create with CELL_OCI_CGROUP2_ROOT (the one command that chooses the
    hierarchy; the others read it from the state's cgroup path)."""
    cell.ids.append(cid)
    r = sub.run(["/usr/bin/env", "CELL_OCI_CGROUP2_ROOT=" + root] + cell.argv("create", "--bundle", bundle, cid))
    assert r.rc == 0, r
    return r


def test_cgroup_v2_pause_resume_kill_all_delete(cell, tmp_path, v2):
    """The pure cgroup v2 code path on a cgroup2 hierarchy (on a hybrid
    host, its controller-less unified one: cgroup.freeze and cgroup.kill
    need no controller): the container's cgroup is made there, pause
    freezes it (cgroup.events frozen 1, state paused), resume thaws it,
    exec joins it, kill --all reaches an exec'd process left after the
    init, delete removes the cgroup."""
    root, sub = v2
    b = oci.make_bundle(tmp_path / "b", ["sleep", "60"])
    cg = root + oci.read_config(b)["linux"]["cgroupsPath"]
    v2_create(cell, sub, root, "c1", b)
    pid = cell.state("c1")["pid"]
    with open(cg + "/cgroup.procs") as f:
        assert str(pid) in f.read().split()
    cell.start("c1").check()
    cell.call("pause", "c1").check()
    assert cell.status("c1") == "paused"
    with open(cg + "/cgroup.events") as f:
        assert "frozen 1" in f.read()
    assert oci.proc_state(pid) in ("S", "D")
    r = cell.call("exec", "c1", "true")
    assert r.rc != 0 and "paused" in r.err, r
    cell.call("resume", "c1").check()
    assert cell.status("c1") == "running"
    with open(cg + "/cgroup.events") as f:
        assert "frozen 0" in f.read()
    cell.call("exec", "--detach", "c1", "sleep", "60", via=sub).check()
    pids = cell.ps("c1")
    assert pid in pids and len(pids) == 2, pids
    # the init first, then what it left: kill --all as the shim does
    cell.kill("c1", "KILL").check()
    assert sub.reaped(pid) == {"signal": 9}
    cell.kill("c1", "KILL", all=True).check()
    assert wait_for(lambda: open(cg + "/cgroup.procs").read().split() == [])
    cell.delete("c1").check()
    assert not os.path.exists(cg)


def test_cgroup_v2_paused_container_deleted_with_force(cell, tmp_path, v2):
    root, sub = v2
    b = oci.make_bundle(tmp_path / "b", ["sleep", "60"])
    cg = root + oci.read_config(b)["linux"]["cgroupsPath"]
    v2_create(cell, sub, root, "c1", b)
    pid = cell.state("c1")["pid"]
    cell.start("c1").check()
    cell.call("pause", "c1").check()
    r = cell.delete("c1")
    assert r.rc != 0 and "paused" in r.err, r
    cell.delete("c1", force=True).check()
    assert sub.reaped(pid) == {"signal": 9}
    assert not os.path.exists(cg) and cell.status("c1") is None


def test_cgroup_v2_limits_without_controllers_fail_naming_them(cell, tmp_path, v2):
    """On a hierarchy without the memory controller a memory limit cannot
    be enforced: create fails naming the limit, never runs unlimited."""
    root, sub = v2
    if os.path.exists(os.path.join(root, "cgroup.controllers")) and \
            "memory" in open(os.path.join(root, "cgroup.controllers")).read():
        pytest.skip("this cgroup2 hierarchy has the memory controller")
    b = oci.make_bundle(tmp_path / "b", ["true"],
                        edit=lambda c: c["linux"].update(resources={"memory": {"limit": 64 << 20}}))
    cell.ids.append("c1")
    r = sub.run(["/usr/bin/env", "CELL_OCI_CGROUP2_ROOT=" + root] + cell.argv("create", "--bundle", b, "c1"))
    assert r.rc != 0 and "linux.resources.memory.limit" in r.err and "memory.max" in r.err, r
    assert cell.status("c1") is None


@pytest.mark.parametrize("bad", ["relative/path", "/sys/fs/cgroup/freezer", "/tmp", "/sys/fs/cgroup/unified/../x"])
def test_cgroup2_root_must_be_cgroup2(cell, tmp_path, bad):
    b = oci.make_bundle(tmp_path / "b", ["true"])
    r = oci.run_bounded(["/usr/bin/env", "CELL_OCI_CGROUP2_ROOT=" + bad] + cell.argv("run", "--bundle", b, "c1"))
    assert r.rc != 0 and "CELL_OCI_CGROUP2_ROOT" in r.err, r
