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
