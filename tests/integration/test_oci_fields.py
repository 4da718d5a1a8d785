"""cell-oci's handling of spec fields beyond the first slice (issue 15;
docs/oci.md): systemd's cgroupsPath form (--systemd-cgroup), seccomp
flags, a user namespace joined by path, and the pure cgroup v2 code path
on this host's controller-less cgroup2 mount.  Hooks have their own file
(test_oci_hooks.py)."""
import os
import shutil

import pytest

import oci

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
