"""cell-oci (issue 15) as cell sees it: a container is confined as a cell
is.  The runc contract (state, pid files, --log, exit codes, kill/delete)
is test_oci_contract.py's; here, on busybox bundles from oci.py: the
process's confinement (capabilities, seccomp, no_new_privs, its own uid
range), escape attempts run as the container command, hostile bundles
and ids, and two commands racing on one container."""
import json
import os
import subprocess
import threading
import time

import pytest

import oci

pytestmark = pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None,
                                reason=oci.runtime_missing("cell-oci") or "")

# cell's kept capabilities (src/isolate/caps.c); CAP_SETFCAP goes when the
# container can write a host directory (a writable root, a read-write bind).
KEPT = ["CAP_SETFCAP", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE"]
CAP_NUM = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
           "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10, "CAP_SYS_CHROOT": 18,
           "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31}


@pytest.fixture
def rt(tmp_path):
    yield from oci.runtime_fixture("cell-oci", tmp_path)


def with_host_usr(cfg):
    """The host's /usr bound read-only (python3 inside the container), and
    the merged-/usr links busybox's rootfs lacks."""
    cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
    cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "HOME=/root"]


def writable_root(cfg):
    cfg["root"]["readonly"] = False


def py_bundle(tmp_path, script, name="b", edit=None):
    def ed(cfg):
        with_host_usr(cfg)
        if edit:
            edit(cfg)
    b = oci.make_bundle(tmp_path / name, ["python3", "-c", script], edit=ed)
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, os.path.join(b, "rootfs", link))
    return b


def mask(names):
    return sum(1 << CAP_NUM[n] for n in names)


STATUS_SCRIPT = r"""
import json
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print(json.dumps({k: st[k].strip() for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs",
                                             "Seccomp", "Uid", "Gid")} |
                 {"uid_map": open("/proc/self/uid_map").read().split(),
                  "hostname": open("/proc/sys/kernel/hostname").read().strip(),
                  "links": [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]}))
"""


def run_json(rt, bundle, cid):
    r = rt.run(cid, bundle)
    assert r.rc == 0, r
    return json.loads(r.out.strip().splitlines()[-1])


def test_confinement_is_cells(rt, tmp_path):
    """The spec asks for all capabilities and no no_new_privs; the process
    gets cell's kept set at most, no_new_privs, cell's seccomp filter, and
    root of a user namespace mapped onto a range that is not host root."""
    every = ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SYS_MODULE",
             "CAP_SETFCAP"] + KEPT

    def ed(cfg):
        cfg["process"]["noNewPrivileges"] = False
        for k in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            cfg["process"]["capabilities"][k] = every
        cfg["hostname"] = "box1"
    st = run_json(rt, py_bundle(tmp_path, STATUS_SCRIPT, edit=ed), "conf")
    for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(st[k], 16) == mask(KEPT), (k, st[k])
    # A writable root: no file capabilities either (cell's rule for host writes).
    st = run_json(rt, py_bundle(tmp_path, STATUS_SCRIPT, name="w", edit=lambda c: (ed(c), writable_root(c))), "w")
    assert int(st["CapBnd"], 16) == mask(KEPT) & ~mask(["CAP_SETFCAP"]), st["CapBnd"]
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
    assert st["Uid"].split()[0] == "0"
    inside, host, count = map(int, st["uid_map"])
    assert inside == 0 and host >= 0x50000000 and count == 65536, st["uid_map"]
    assert st["hostname"] == "box1"
    assert st["links"] == ["lo"], st["links"]       # a network namespace of its own


def test_spec_capabilities_narrow_further(rt, tmp_path):
    """A spec that asks for less gets less: the sets are the spec's cut to cell's."""
    def ed(cfg):
        # A non-root process keeps capabilities across exec only as ambient ones.
        cfg["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_SYS_ADMIN", "CAP_CHOWN"],
                                          "effective": ["CAP_KILL", "CAP_SYS_ADMIN"],
                                          "permitted": ["CAP_KILL", "CAP_SYS_ADMIN"],
                                          "inheritable": ["CAP_KILL", "CAP_SYS_ADMIN"],
                                          "ambient": ["CAP_KILL", "CAP_SYS_ADMIN"]}
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    st = run_json(rt, py_bundle(tmp_path, STATUS_SCRIPT, edit=ed), "narrow")
    assert int(st["CapBnd"], 16) == mask(["CAP_KILL", "CAP_CHOWN"])
    for k in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(st[k], 16) == mask(["CAP_KILL"]), (k, st)
    assert st["Uid"].split()[0] == "1000" and st["Gid"].split()[0] == "1000"


def test_two_containers_have_two_uid_ranges(rt, tmp_path):
    a = run_json(rt, py_bundle(tmp_path, STATUS_SCRIPT, name="a"), "ra")
    b = run_json(rt, py_bundle(tmp_path, STATUS_SCRIPT, name="b"), "rb")
    ha, hb = int(a["uid_map"][1]), int(b["uid_map"][1])
    assert abs(ha - hb) >= 65536 or ha == hb, (ha, hb)   # sequential runs may reuse a freed range
    # Two at once never share one.
    sub = oci.Subreaper(tmp_path)
    try:
        for cid, name in (("p1", "c"), ("p2", "d")):
            b2 = oci.make_bundle(tmp_path / name, ["sleep", "30"])
            rt.create(cid, b2, pid_file=str(tmp_path / (cid + ".pid")), via=sub).check()
        for cid in ("p1", "p2"):
            rt.start(cid).check()
        maps = [host_uid_base(oci.read_pid_file(str(tmp_path / (cid + ".pid")))) for cid in ("p1", "p2")]
        assert abs(maps[0] - maps[1]) >= 65536, maps
        for cid in ("p1", "p2"):
            rt.delete(cid, force=True).check()
    finally:
        sub.close()


def host_uid_base(pid, timeout=10.0):
    """The host uid the user namespace of pid maps 0 onto, once the started
    init has entered it (parked, it is still in the host's)."""
    end = time.monotonic() + timeout
    while True:
        with open("/proc/%d/uid_map" % pid) as f:
            base = int(f.read().split()[1])
        if base != 0:
            return base
        assert time.monotonic() < end, "init %d never entered its user namespace" % pid
        time.sleep(0.01)


ESCAPES = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def sc(name, *args):
    r = libc.syscall(*args)
    out[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())
def tryf(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, e.errno)
def w(path, data):
    with open(path, "w") as f:
        f.write(data)
b = ctypes.c_char_p
sc("mount", 165, b(b"none"), b(b"/tmp"), b(b"tmpfs"), 0, None)
sc("umount_mask", 166, b(b"/proc/kcore"), 2)
sc("unshare_user", 272, 0x10000000)
sc("unshare_mount", 272, 0x00020000)
fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
sc("setns", 308, fd, 0)
sc("ptrace_attach_1", 101, 16, 1, 0, 0)
sc("keyctl", 250, 0, 0, 0, 0)
sc("bpf", 321, 0, 0, 0)
sc("kexec_load", 246, 0, 0, 0, 0)
sc("init_module", 175, 0, 0, b(b""))
sc("reboot", 169, 0xfee1dead, 672274793, 0x1234567, 0)
sc("open_by_handle_at", 304, 3, 0, 0)
sc("sethostname", 170, b(b"evil"), 4)
sc("mknod", 133, b(b"/tmp/sda"), 0o60600, (8 << 8) | 0)
tryf("sysrq", lambda: w("/proc/sysrq-trigger", "h"))
tryf("sys_write", lambda: w("/sys/kernel/uevent_helper", "/evil"))
tryf("usr_write", lambda: w("/usr/evil", "x"))
w("/tmp/suid", "x")
tryf("chmod_suid", lambda: os.chmod("/tmp/suid", 0o4755))
out["kcore"] = len(open("/proc/kcore", "rb").read(16)) if os.path.exists("/proc/kcore") else "absent"
out["pid"] = os.getpid()
out["host_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(out))
"""


def test_escape_attempts_are_refused(rt, tmp_path):
    """The container command tries what an escaping agent would: mount,
    unmount a mask, new namespaces, ptrace its pid 1, kernel keyrings, bpf,
    modules, reboot, file handles, hostname, device nodes, sysrq, /sys and
    the read-only /usr bind, a set-uid file in its writable root."""
    r = rt.run("esc", py_bundle(tmp_path, ESCAPES, edit=writable_root))
    assert r.rc == 0, r
    out = json.loads(r.out.strip().splitlines()[-1])
    for k in ("mount", "umount_mask", "unshare_user", "unshare_mount", "setns", "ptrace_attach_1", "keyctl", "bpf",
              "kexec_load", "init_module", "reboot", "open_by_handle_at", "sethostname", "mknod", "sysrq",
              "sys_write", "usr_write", "chmod_suid"):
        assert out[k] != "ok", (k, out)
    assert out["sys_write"] == "EROFS" and out["usr_write"] == "EROFS", out
    assert out["chmod_suid"] == "EPERM", out
    assert out["kcore"] in (0, "absent"), out
    # Its own pid namespace: python is a child of nothing but the container.
    assert max(out["host_pids"]) < 100, out
    assert not os.path.exists(os.path.join(tmp_path, "b", "rootfs", "tmp", "sda"))


def test_root_writes_land_as_container_root(rt, tmp_path):
    """Files the container's root writes in its root belong to root on disk
    (the root is id-mapped: nothing appears as a high host uid there)."""
    def ed(cfg):
        writable_root(cfg)
        for k in ("bounding", "effective", "permitted"):
            cfg["process"]["capabilities"][k].append("CAP_CHOWN")
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "echo hi > /root/f && chown 1000:1000 /root/f && touch /root/g"],
                        edit=ed)
    r = rt.run("own", b)
    assert r.rc == 0, r
    st_f, st_g = os.stat(os.path.join(b, "rootfs", "root", "f")), os.stat(os.path.join(b, "rootfs", "root", "g"))
    assert (st_f.st_uid, st_f.st_gid) == (1000, 1000)
    assert (st_g.st_uid, st_g.st_gid) == (0, 0)


@pytest.mark.parametrize("root", ["../outside", "rootfs/../../outside", "/srv/../etc"])
def test_root_path_outside_the_bundle_refused(rt, tmp_path, root):
    os.makedirs(tmp_path / "outside", exist_ok=True)
    b = oci.make_bundle(tmp_path / "b", ["true"], edit=lambda c: c["root"].update(path=root))
    r = rt.create("c1", b)
    assert r.rc != 0 and "root.path" in r.err, r
    assert rt.status("c1") is None


def test_missing_command_fails_create(rt, tmp_path):
    """process.args[0] is looked up in the container before create returns,
    so a typo fails create (and leaves nothing), not a later start."""
    b = oci.make_bundle(tmp_path / "b", ["nosuchcmd"])
    r = rt.create("c1", b)
    assert r.rc != 0 and "nosuchcmd" in r.err, r
    assert rt.status("c1") is None
    assert os.listdir(rt.root) == []


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["mounts"].append({"destination": "/x", "type": "ext4", "source": "/dev/vda"}), "mounts["),
    (lambda c: c["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"}), "user"),
    (lambda c: [n.update(path="/proc/1/ns/mnt") for n in c["linux"]["namespaces"] if n["type"] == "mount"],
     "mount with a path"),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "bind", "source": "relative"}), "source"),
    (lambda c: c["process"].update(args=["sh"] * 5000), "process.args"),
])
def test_hostile_specs_refused(rt, tmp_path, edit, field):
    """Joining the host's user or mount namespace, a block device mount, a
    relative bind source, 5000 arguments: refused by field, nothing left."""
    b = oci.make_bundle(tmp_path / "b", ["true"], edit=edit)
    r = rt.create("c1", b)
    assert r.rc != 0 and field in r.err, r
    assert rt.status("c1") is None and os.listdir(rt.root) == []
    assert any(field in line["msg"] for line in rt.log_lines() if line["level"] == "error"), rt.log_lines()


def test_concurrent_starts_start_once(rt, tmp_path):
    """Eight `start`s of one created container at once: exactly one starts
    it, the others are told it is no longer created."""
    sub = oci.Subreaper(tmp_path)
    try:
        b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "sleep 30"])
        rt.create("c1", b, pid_file=str(tmp_path / "pid"), via=sub).check()
        results = []

        def start():
            results.append(rt.start("c1"))
        ts = [threading.Thread(target=start) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(r.rc for r in results)[0] == 0 and sum(r.rc == 0 for r in results) == 1, results
        assert all("not created" in r.err for r in results if r.rc), results
        rt.wait_status("c1", "running")
        rt.kill("c1", "KILL").check()
        assert sub.reaped(oci.read_pid_file(str(tmp_path / "pid"))) == {"signal": 9}
        rt.delete("c1").check()
    finally:
        sub.close()


def test_delete_refuses_running_without_force(rt, tmp_path):
    sub = oci.Subreaper(tmp_path)
    try:
        b = oci.make_bundle(tmp_path / "b", ["sleep", "30"])
        rt.create("c1", b, via=sub).check()
        rt.start("c1").check()
        r = rt.delete("c1")
        assert r.rc != 0 and "running" in r.err, r
        assert rt.status("c1") == "running"
        rt.delete("c1", force=True).check()
        assert rt.status("c1") is None
    finally:
        sub.close()


def test_features_and_version(rt):
    f = json.loads(rt.call("features").check().out)
    assert set(f["linux"]["namespaces"]) >= {"pid", "mount", "network", "user"}
    assert "CAP_SYS_ADMIN" not in f["linux"]["capabilities"]
    v = subprocess.run([rt.binary, "--version"], capture_output=True, text=True, timeout=oci.STEP_TIMEOUT)
    assert v.returncode == 0 and "spec: 1.0" in v.stdout


def test_shim_flags_accepted(rt, tmp_path):
    """Flags containerd's shim, CRI-O and Podman pass that cell needs not."""
    b = oci.make_bundle(tmp_path / "b", ["true"])
    # --systemd-cgroup is no longer ignored: test_oci_fields.py tests it
    r = oci.run_bounded([rt.binary, "--root", rt.root, "--rootless", "false", "run",
                         "--no-new-keyring", "--no-pivot", "--preserve-fds", "0", "--bundle", b, "flags"])
    assert r.rc == 0, r
    r = oci.run_bounded([rt.binary, "--root", rt.root, "run", "--no-such-flag", "--bundle", b, "flags2"])
    assert r.rc != 0 and "no-such-flag" in r.err, r


def test_overlay_root_is_id_mapped_layer_by_layer(rt, tmp_path):
    """containerd's snapshot is an overlayfs, which cannot be id-mapped
    itself: cell-oci mounts the same overlay again from id-mapped layers,
    so the image's root-owned files are root's inside, the container's root
    can write them (copy-up), and what it writes lands as on-disk root in
    the upper layer, never in the lower one."""
    lower = oci.make_rootfs(tmp_path / "lower")
    snap = tmp_path / "snap"
    for d in (snap / "fs", snap / "work", tmp_path / "merged"):
        os.makedirs(d)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s" % (
        lower, snap / "fs", snap / "work"), str(tmp_path / "merged")], check=True, timeout=oci.STEP_TIMEOUT)
    try:
        b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "stat -c %u /bin/busybox; echo x >> /etc/passwd && "
                                             "touch /etc/new && echo rc=$?"], rootfs=tmp_path / "merged",
                            edit=writable_root)
        r = rt.run("ovl", b)
        assert r.rc == 0, r
        assert r.out.split() == ["0", "rc=0"], r
        for name in ("passwd", "new"):
            st = os.stat(snap / "fs" / "etc" / name)
            assert (st.st_uid, st.st_gid) == (0, 0), (name, st)
        with open(os.path.join(lower, "etc", "passwd")) as f:
            assert "x\n" not in f.read()       # the lower layer is untouched
        assert not os.path.exists(os.path.join(b, "ovl")) or not os.listdir(os.path.join(b, "ovl"))
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "merged")], timeout=oci.STEP_TIMEOUT)


def test_exec_is_confined_as_the_init(rt, tmp_path):
    """An exec'd process joins the init's namespaces and gets the same
    confinement (capabilities cut to cell's, seccomp, no_new_privs, the
    container's uid range); a user outside the range is refused."""
    sub = oci.Subreaper(tmp_path)
    try:
        def ed(cfg):
            cfg["process"]["args"] = ["sleep", "60"]
            cfg["process"]["capabilities"]["bounding"] += ["CAP_SYS_ADMIN", "CAP_NET_RAW"]
        b = py_bundle(tmp_path, "", edit=ed)
        rt.create("c1", b, pid_file=str(tmp_path / "pid"), via=sub).check()
        rt.start("c1").check()
        init = oci.read_pid_file(str(tmp_path / "pid"))
        r = rt.call("exec", "c1", "python3", "-c", STATUS_SCRIPT)
        assert r.rc == 0, r
        st = json.loads(r.out.strip().splitlines()[-1])
        assert int(st["CapBnd"], 16) == mask(["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]), st
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        assert int(st["uid_map"][1]) == host_uid_base(init), st
        r = rt.call("exec", "--user", "4294967294", "c1", "true")
        assert r.rc != 0 and "4294967294" in r.err, r
        r = rt.call("exec", "--cwd", "/nonexistent", "c1", "true")
        assert r.rc != 0 and "/nonexistent" in r.err, r
        r = rt.call("exec", "c1", "mount", "-t", "tmpfs", "none", "/tmp")
        assert r.rc != 0, r
        rt.delete("c1", force=True).check()
    finally:
        sub.close()


def with_seccomp(profile):
    def ed(cfg):
        cfg["linux"]["seccomp"] = profile
        cfg["root"]["readonly"] = False
    return ed


def test_spec_seccomp_stacks_on_cells(rt, tmp_path):
    """linux.seccomp is applied on top of cell's filter: what it refuses is
    refused (mkdir here, with its errno, in the init and in exec'd
    processes); what it allows that cell refuses (mount, unshare) stays
    refused."""
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                            {"names": ["no_such_syscall"], "action": "SCMP_ACT_KILL"},
                            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}
    sub = oci.Subreaper(tmp_path)
    try:
        b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "mkdir /tmp/d; echo rc=$?; mount -t tmpfs none /tmp; "
                                             "echo mount=$?; unshare -m true; echo unshare=$?; sleep 30"],
                            edit=with_seccomp(profile))
        rt.create("c1", b, via=sub).check()
        rt.start("c1").check()
        r = rt.call("exec", "c1", "sh", "-c", "mkdir /tmp/e 2>&1; grep Seccomp: /proc/self/status")
        assert "Permission denied" in r.out and "Seccomp:\t2" in r.out, r
        rt.delete("c1", force=True).check()
    finally:
        sub.close()
    with open(os.path.join(tmp_path, "sub-1.out")) as f:
        out = f.read()
    assert "rc=1" in out and "mount=0" not in out and "unshare=0" not in out, out
    assert not os.path.exists(os.path.join(b, "rootfs", "tmp", "d"))


@pytest.mark.parametrize("profile, what", [
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"}, "listenerPath"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "args"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]},
     "SCMP_CMP_XX"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]}, "SCMP_ARCH_PDP11"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "read"}, "linux.seccomp.syscalls"),
])
def test_bad_seccomp_profiles_refused(rt, tmp_path, profile, what):
    """A profile cell-oci cannot apply fails create naming the field: never
    a container that runs without the filter its spec asked for."""
    b = oci.make_bundle(tmp_path / "b", ["true"], edit=with_seccomp(profile))
    r = rt.create("c1", b)
    assert r.rc != 0 and what in r.err, r
    assert rt.status("c1") is None


def test_pod_namespaces_joined_by_path(rt, tmp_path):
    """A pod: the second container joins the first's network, ipc, uts and
    pid namespaces by path (what the CRI does with the sandbox's), and still
    gets a user namespace and mount namespace of its own."""
    sub = oci.Subreaper(tmp_path)
    try:
        def sandbox(cfg):
            cfg["hostname"] = "pod1"
        rt.create("sb", oci.make_bundle(tmp_path / "sb", ["sleep", "60"], edit=sandbox),
                  pid_file=str(tmp_path / "sb.pid"), via=sub).check()
        rt.start("sb").check()
        sb = oci.read_pid_file(str(tmp_path / "sb.pid"))

        def member(cfg):
            for n in cfg["linux"]["namespaces"]:
                if n["type"] in ("network", "ipc", "uts", "pid"):
                    n["path"] = "/proc/%d/ns/%s" % (sb, {"network": "net"}.get(n["type"], n["type"]))
        b = oci.make_bundle(tmp_path / "m", ["sleep", "60"], edit=member)
        rt.create("m1", b, pid_file=str(tmp_path / "m.pid"), via=sub).check()
        rt.start("m1").check()
        m = oci.read_pid_file(str(tmp_path / "m.pid"))
        host_uid_base(m)   # started: in its user namespace
        for ns in ("net", "ipc", "uts", "pid"):
            assert os.readlink("/proc/%d/ns/%s" % (m, ns)) == os.readlink("/proc/%d/ns/%s" % (sb, ns)), ns
        for ns in ("mnt", "user"):
            assert os.readlink("/proc/%d/ns/%s" % (m, ns)) != os.readlink("/proc/%d/ns/%s" % (sb, ns)), ns
        r = rt.call("exec", "m1", "sh", "-c", "hostname; ps -o pid,args")
        assert r.rc == 0 and r.out.splitlines()[0] == "pod1", r
        assert "sleep 60" in r.out and r.out.count("sleep 60") == 2, r   # both containers' sleeps
        # The member's kill --all and delete --force reach its own processes only.
        rt.kill("m1", "KILL", all=True).check()
        rt.wait_status("m1", "stopped")
        rt.delete("m1", force=True).check()
        assert rt.status("sb") == "running"
        rt.delete("sb", force=True).check()
    finally:
        sub.close()


def test_cgroup_of_others_refused(rt, tmp_path):
    """A cgroupsPath that already holds processes (another container's, or
    the host's) is refused: kill --all and delete signal the whole cgroup."""
    sub = oci.Subreaper(tmp_path)
    try:
        def cg(cfg):
            cfg["linux"]["cgroupsPath"] = "/cell-oci-test/%s" % os.path.basename(str(tmp_path))
        rt.create("a", oci.make_bundle(tmp_path / "a", ["sleep", "60"], edit=cg), via=sub).check()
        r = rt.create("b", oci.make_bundle(tmp_path / "b", ["sleep", "60"], edit=cg), via=sub)
        assert r.rc != 0 and "already holds processes" in r.err, r
        assert rt.status("a") == "created" and rt.status("b") is None
        rt.delete("a", force=True).check()
    finally:
        sub.close()
    for root in ("/sys/fs/cgroup/freezer", "/sys/fs/cgroup"):
        try:
            os.rmdir(os.path.join(root, "cell-oci-test"))
        except OSError:
            pass


def test_namespaced_sysctls_and_oom_score_adj(rt, tmp_path):
    """linux.sysctl of the container's own namespaces is set there, the
    host's values stay; process.oomScoreAdj is the process's."""
    def ed(cfg):
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
        cfg["process"]["oomScoreAdj"] = 500
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host_fwd = f.read()
    with open("/proc/sys/kernel/shmmni") as f:
        host_shm = f.read()
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni "
                                         "/proc/self/oom_score_adj"], edit=ed)
    r = rt.run("sc", b)
    assert r.rc == 0 and r.out.split() == ["1", "1234", "500"], r
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read() == host_fwd
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read() == host_shm


def cgroup_file(ctrl, rel, name):
    for path in ("/sys/fs/cgroup/%s%s/%s" % (ctrl, rel, name), "/sys/fs/cgroup%s/%s" % (rel, name)):
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
    return None


def test_resources_limit_the_container(rt, tmp_path):
    """linux.resources' pids and memory limits hold (a fork loop stops at
    the pids limit), exec'd processes share them, and update changes them."""
    rel = "/cell-oci-test/%s" % os.path.basename(str(tmp_path))

    def ed(cfg):
        cfg["linux"]["cgroupsPath"] = rel
        cfg["linux"]["resources"] = {"pids": {"limit": 16}, "memory": {"limit": 64 << 20},
                                     "cpu": {"shares": 512, "quota": 50000, "period": 100000}}
    sub = oci.Subreaper(tmp_path)
    try:
        b = oci.make_bundle(tmp_path / "b", ["sleep", "60"], edit=ed)
        rt.create("c1", b, via=sub).check()
        rt.start("c1").check()
        assert cgroup_file("pids", rel, "pids.max") == "16"
        assert cgroup_file("memory", rel, "memory.limit_in_bytes") in (str(64 << 20), None)
        r = rt.call("exec", "c1", "sh", "-c", "n=0; while [ $n -lt 40 ]; do sleep 5 & n=$((n+1)); done 2>&1; "
                    "echo started")
        assert "can't fork" in r.out or "Resource temporarily unavailable" in r.out, r
        with open(tmp_path / "res.json", "w") as f:
            json.dump({"pids": {"limit": 64}}, f)
        rt.call("update", "--resources", str(tmp_path / "res.json"), "c1").check()
        assert cgroup_file("pids", rel, "pids.max") == "64"
        r = rt.call("update", "--resources", str(tmp_path / "nosuch.json"), "c1")
        assert r.rc != 0, r
        rt.delete("c1", force=True).check()
        assert cgroup_file("pids", rel, "pids.max") is None    # removed with the container
    finally:
        sub.close()
        for ctrl in ("freezer", "memory", "pids", "cpu", ""):
            try:
                os.rmdir(os.path.join("/sys/fs/cgroup", ctrl, "cell-oci-test"))
            except OSError:
                pass


def test_bad_resources_refused(rt, tmp_path):
    b = oci.make_bundle(tmp_path / "b", ["true"],
                        edit=lambda c: c["linux"].update(resources={"pids": {"limit": "many"}}))
    r = rt.create("c1", b)
    assert r.rc != 0 and "linux.resources.pids.limit" in r.err, r
    assert rt.status("c1") is None


def test_leftovers_go_with_the_init(rt, tmp_path):
    """An exec'd process outliving the init: kill --all still reaches it
    (containerd's shim does that after the init's exit) and delete removes
    what is left, cgroup included."""
    sub = oci.Subreaper(tmp_path)
    try:
        rt.create("c1", oci.make_bundle(tmp_path / "b", ["sleep", "60"]), pid_file=str(tmp_path / "pid"),
                  via=sub).check()
        rt.start("c1").check()
        init = oci.read_pid_file(str(tmp_path / "pid"))
        with open(tmp_path / "p.json", "w") as f:
            json.dump({"args": ["sleep", "60"], "cwd": "/", "env": ["PATH=/bin"]}, f)
        rt.call("exec", "--detach", "--process", str(tmp_path / "p.json"), "--pid-file", str(tmp_path / "e.pid"),
                "c1", via=sub).check()
        e = oci.read_pid_file(str(tmp_path / "e.pid"))
        # the exec'd process is its own pid namespace's member: the init's
        # death kills it; an exec'd process of a pod member would survive.
        rt.kill("c1", "KILL").check()
        assert sub.reaped(init) == {"signal": 9}
        r = rt.kill("c1", "KILL", all=True)
        assert r.rc == 0, r          # stopped, yet kill --all is fine
        rt.delete("c1").check()
        assert oci.proc_state(e) in (None, "Z")
    finally:
        sub.close()


@pytest.mark.parametrize("kind", ["fifo", "dir", "devzero"])
def test_hostile_passwd_does_not_hold_create(rt, tmp_path, kind):
    """The image's /etc/passwd (read for HOME) as a FIFO, a directory or a
    link to /dev/zero: create neither blocks nor reads without end."""
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "echo $HOME"], env=["PATH=/bin"])
    p = os.path.join(b, "rootfs", "etc", "passwd")
    os.unlink(p)
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        os.mkdir(p)
    else:
        os.symlink("/dev/zero", p)
    r = rt.run("pw", b)
    assert r.rc == 0 and r.out == "/\n", r
