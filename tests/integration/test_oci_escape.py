"""cell-oci attacked the way runc has been broken (issue 15 hardening).

containerd's shim calls cell-oci as root with a spec from the trusted
orchestrator, but the root filesystem (the image) and the container's
processes are not trusted.  Each test runs one class of attack for real
against cell-oci; the CVE it comes from is named in its docstring.  Where
runc's behaviour helps to read the result it is shown (printed), never
asserted.  docs/security.md ("cell-oci") lists what each test guarantees.
"""
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import threading

import pytest

import oci

pytestmark = pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None,
                                reason=oci.runtime_missing("cell-oci") or "")


@pytest.fixture
def rt(tmp_path):
    yield from oci.runtime_fixture("cell-oci", tmp_path)


@pytest.fixture
def sub(rt, tmp_path):
    yield from oci.subreaper_fixture(rt, tmp_path)


def bundle(tmp_path, name, args, edit=None, env=None):
    return oci.make_bundle(tmp_path / name, args, edit=edit, env=env)


def rootfs(b):
    return os.path.join(b, "rootfs")


def started(rt, sub, cid, b):
    rt.create(cid, b, via=sub).check()
    rt.start(cid).check()


class HostPidns:
    """A host process (sleep, real root, the host's root and mount
    namespace) in a pid namespace of its own: what a pod sandbox's pid
    namespace looks like to a member that joins it by path.  Its pid 1 is
    the sleep, whose /proc/1/root is the host's /."""

    def __init__(self):
        self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "600"], start_new_session=True)
        self.path = None
        for _ in range(2000):
            kids = oci._children(self.proc.pid)
            if kids:
                self.path = "/proc/%d/ns/pid" % kids[0]
                break
            os.sched_yield()
        assert self.path, "unshare did not fork its child"

    def close(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def with_pidns(path):
    def ed(cfg):
        for n in cfg["linux"]["namespaces"]:
            if n["type"] == "pid":
                n["path"] = path
    return ed


# ---- descriptors and the working directory ---------------------------------------


def test_cwd_through_a_runtime_descriptor_stays_inside(rt, sub, tmp_path):
    """runc CVE-2024-21626: process.cwd /proc/self/fd/N, N a descriptor of
    the runtime's still open at the chdir (runc leaked a host cgroup
    directory), left the process a cwd outside its root.  cell-oci opens no
    directory it could leak and checks the cwd after the chdir: every N is
    refused (not a directory) or lands inside the root."""
    def in_root(r, where):
        assert r.rc != 0 or (r.out.startswith("/") and "(unreachable)" not in r.out), (where, r)
        if r.rc == 0:
            assert "hostmarker" not in r.out, (where, r)
    open(tmp_path / "hostmarker", "w").close()
    for n in range(3, 9):
        b = bundle(tmp_path, "i%d" % n, ["sh", "-c", "pwd; ls"],
                   edit=lambda c, n=n: c["process"].update(cwd="/proc/self/fd/%d" % n))
        in_root(rt.run("i%d" % n, b), "init fd %d" % n)
    b = bundle(tmp_path, "b", ["sleep", "60"])
    started(rt, sub, "c1", b)
    for n in range(3, 16):
        in_root(rt.call("exec", "--cwd", "/proc/self/fd/%d" % n, "c1", "sh", "-c", "pwd; ls"), "exec fd %d" % n)
    # The init's own cwd, through its /proc: the container's root, no more.
    r = rt.call("exec", "--cwd", "/proc/1/cwd", "c1", "sh", "-c", "cd ..; cd ..; pwd; ls")
    assert r.rc == 0 and "hostmarker" not in r.out, r


# ls's own descriptor of the directory it lists shows without a target.
FD_SCRIPT = "ls -l /proc/self/fd/ 2>/dev/null"


def fds_of(out):
    """{fd number: target} from FD_SCRIPT's lines."""
    got = {}
    for line in out.splitlines():
        left, arrow, target = line.partition(" -> ")
        if arrow:
            got[int(left.split()[-1])] = target
    return got


def test_no_runtime_descriptor_reaches_the_container(rt, sub, tmp_path):
    """runc CVE-2024-21626 (and CVE-2016-9962): a descriptor of the
    runtime's (the state directory, exec.fifo, the log, the console socket,
    a pidfd, a namespace) inherited by the container's process.  The init's
    process, with --console-socket and without, and an exec'd one hold
    stdio only."""
    b = bundle(tmp_path, "b", ["sh", "-c", FD_SCRIPT + "; sleep 60"])
    started(rt, sub, "c1", b)
    r = rt.call("exec", "c1", "sh", "-c", FD_SCRIPT)
    assert r.rc == 0, r
    assert sorted(fds_of(r.out)) == [0, 1, 2], r.out
    rt.delete("c1", force=True).check()
    with open(os.path.join(tmp_path, "sub-1.out")) as f:
        init = fds_of(f.read())
    assert sorted(init) == [0, 1, 2], init
    # With a terminal: the pty's other side, nothing of the socket's.
    tb = bundle(tmp_path, "t", ["sh", "-c", FD_SCRIPT], edit=lambda c: c["process"].update(terminal=True))
    cs = oci.ConsoleSocket(tmp_path / "console.sock")
    try:
        rt.create("t1", tb, via=sub, extra=["--console-socket", cs.path]).check()
        master, _ = cs.receive()
        try:
            rt.start("t1").check()
            out = oci.read_pty(master)
        finally:
            os.close(master)
    finally:
        cs.close()
    got = fds_of(out.replace("\r", ""))
    assert sorted(got) == [0, 1, 2] and got[0] == got[1] and got[0].startswith("/dev/pts/"), out


# ---- symlinks in the image ----------------------------------------------------------


@pytest.mark.parametrize("target", ["/", "/tmp/p", "../../../../../../.."])
def test_proc_as_a_symlink_is_refused(rt, tmp_path, target):
    """runc CVE-2019-16884 / CVE-2019-19921: an image whose /proc is a
    symlink (to /, or to a directory of its own) got proc mounted where
    the masks and the LSM label were not applied.  cell-oci mounts proc on
    what the symlink names inside the root, then opens it without
    following symlinks to mask it: create fails, no container runs with
    an unmasked proc."""
    b = bundle(tmp_path, "b", ["cat", "/proc/sysrq-trigger"])
    os.rmdir(os.path.join(rootfs(b), "proc"))
    os.makedirs(os.path.join(rootfs(b), "tmp", "p"))
    os.symlink(target, os.path.join(rootfs(b), "proc"))
    r = rt.run("c1", b)
    assert r.rc != 0 and "/proc" in r.err, r
    assert rt.status("c1") is None


def test_mount_destination_symlinks_stay_in_the_root(rt, tmp_path):
    """runc CVE-2021-30465 (and the bind-mount symlink class): a mount's
    destination that is, or goes through, a symlink to a host path.  It
    resolves inside the container's root (RESOLVE_IN_ROOT), so the host
    directory it names is never touched: no mount point is created there
    and the mount lands in the root or create fails.  Magic links (proc is
    mounted by then: /proc/self/cwd is the init's cwd on the host) are not
    followed either."""
    host = tmp_path / "hostdir"
    os.makedirs(host)
    open(host / "canary", "w").close()
    for name, link, dest in (("abs", str(host), "/mnt"), ("rel", "../../../../../.." + str(host), "/mnt/sub"),
                             ("mid", str(host), "/mnt/a/b"), ("cwd", "/proc/self/cwd", "/mnt/sub"),
                             ("root", "/proc/1/root" + str(host), "/mnt/sub")):
        b = bundle(tmp_path, name, ["sh", "-c", "grep ' /mnt' /proc/self/mountinfo; ls /mnt"],
                   edit=lambda c, d=dest: c["mounts"].append({"destination": d, "type": "tmpfs", "source": "tmpfs"}))
        os.symlink(link, os.path.join(rootfs(b), "mnt"))
        r = rt.run(name, b)
        assert r.rc != 0 or "canary" not in r.out, (name, r)
        assert os.listdir(host) == ["canary"], (name, os.listdir(host))


def test_mount_destination_raced_with_a_symlink(rt, tmp_path):
    """runc CVE-2021-30465: the destination checked, then swapped for a
    symlink to a host path before the mount (two containers sharing a
    volume).  cell-oci opens the mount point once, inside the root, and
    mounts on that descriptor: while a thread swaps rootfs/mnt between a
    directory and a symlink to a host directory, no create ever makes its
    mount point (sub) in the host directory."""
    host = tmp_path / "hostdir"
    os.makedirs(host)
    b = bundle(tmp_path, "b", ["true"], edit=lambda c: c["mounts"].append(
        {"destination": "/mnt/sub", "type": "tmpfs", "source": "tmpfs"}))
    mnt, alt = os.path.join(rootfs(b), "mnt"), os.path.join(rootfs(b), "mnt.alt")
    os.makedirs(mnt)
    os.symlink(str(host), alt)
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()
    swaps = [0]

    def swapper():
        # renameat2(RENAME_EXCHANGE): mnt is the directory or the symlink,
        # never missing, swapped as fast as this thread runs.
        while not stop.is_set():
            assert libc.renameat2(-100, mnt.encode(), -100, alt.encode(), 2) == 0, ctypes.get_errno()
            swaps[0] += 1
    t = threading.Thread(target=swapper)
    t.start()
    ok = 0
    try:
        for i in range(12):
            r = rt.run("r%d" % i, b)
            ok += r.rc == 0
            assert os.listdir(host) == [], (i, r)
    finally:
        stop.set()
        t.join()
    print("race: %d creates succeeded, %d swaps" % (ok, swaps[0]))
    assert os.listdir(host) == []


def test_dev_null_swapped_for_a_symlink_masks_hold(rt, tmp_path):
    """runc CVE-2025-31133 / CVE-2025-52565: maskedPaths are covered with
    the container's /dev/null, which the image may make a symlink to
    /proc/sys/kernel/core_pattern or sysrq-trigger (the mask then binds
    that, writable).  cell-oci masks with the host's /dev/null, opened
    before the image is entered: with no /dev tmpfs in the spec and the
    image's /dev/null a symlink, the masks still read empty and stay
    unwritable, and the host's core_pattern is unchanged."""
    with open("/proc/sys/kernel/core_pattern") as f:
        core = f.read()

    def ed(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        cfg["linux"]["maskedPaths"] = ["/proc/timer_list", "/proc/keys", "/proc/sched_debug"]
    b = bundle(tmp_path, "b", ["sh", "-c", "echo '|/tmp/x' > /proc/timer_list; echo c > /proc/sysrq-trigger; "
                               "for f in /proc/timer_list /proc/keys; do echo \"$f $(wc -c < $f)\"; done; "
                               "grep -c /tmp/x /proc/sys/kernel/core_pattern"], edit=ed)
    os.symlink("/proc/sys/kernel/core_pattern", os.path.join(rootfs(b), "dev", "null"))
    r = rt.run("c1", b)
    # Written or not, a write to the host's /dev/null goes nowhere.
    assert "/proc/timer_list 0" in r.out and "/proc/keys 0" in r.out, r
    assert r.out.split()[-1] == "0", r
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core


@pytest.mark.parametrize("dest, link", [
    ("/proc/1/oom_score_adj", None), ("/proc/self/oom_score_adj", None), ("/proc/self/attr/exec", None),
    ("/proc/sys", None), ("/proc/sys/kernel/core_pattern", None), ("/mnt/1/oom_score_adj", "/proc"),
])
def test_mounts_inside_proc_are_refused(rt, tmp_path, dest, link):
    """runc CVE-2025-52881 (and CVE-2019-19921): a mount over a /proc file
    the runtime writes after the proc mount (here process.oomScoreAdj into
    /proc/self/oom_score_adj, the init being pid 1) took the write: a pod's
    volume mounted at /proc/1/oom_score_adj got the 500 and the process
    kept 0.  A mount destination that is (or, through the image's
    symlinks, lands) inside a proc is refused but for lxcfs's files."""
    vol = tmp_path / "vol"
    vol.write_text("")

    def ed(cfg):
        cfg["process"]["oomScoreAdj"] = 500
        cfg["mounts"].append({"destination": dest, "type": "bind", "source": str(vol), "options": ["rbind", "rw"]})
    b = bundle(tmp_path, "b", ["cat", "/proc/self/oom_score_adj"], edit=ed)
    if link:
        os.symlink(link, os.path.join(rootfs(b), "mnt"))
    r = rt.run("c1", b)
    assert r.rc != 0 and "inside /proc" in r.err and "mounts" in r.err, r
    assert vol.read_text() == ""


def test_lxcfs_files_may_still_cover_proc(rt, tmp_path):
    """lxcfs's files (/proc/meminfo, /proc/uptime...) may be bound over
    /proc as with runc; the rest of proc and its masks stay."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1234 kB\n")
    b = bundle(tmp_path, "b", ["sh", "-c", "cat /proc/meminfo; wc -c < /proc/keys"],
               edit=lambda c: c["mounts"].append({"destination": "/proc/meminfo", "type": "bind",
                                                  "source": str(meminfo), "options": ["rbind", "ro"]}))
    r = rt.run("c1", b)
    assert r.rc == 0 and r.out.split() == ["MemTotal:", "1234", "kB", "0"], r


def test_masked_path_as_a_magic_link_is_refused(rt, tmp_path):
    """A maskedPaths entry the image made a symlink through /proc/self
    (a magic link: the init's own root or descriptors) is not followed:
    create fails naming it, rather than masking something else."""
    b = bundle(tmp_path, "b", ["true"], edit=lambda c: c["linux"]["maskedPaths"].append("/secret"))
    os.symlink("/proc/self/root/etc", os.path.join(rootfs(b), "secret"))
    r = rt.run("c1", b)
    assert r.rc != 0 and "/secret" in r.err, r


SECRET_LINE = "x:x:0:0:x:HOST-SECRET-HOME:/bin/sh\n"


def test_image_magic_links_are_not_followed_as_root(rt, sub, tmp_path):
    """The init (and an exec'd process) reads the image's /etc/passwd for
    HOME and looks process.args[0] up while still real root.  An image
    whose /etc/passwd is a symlink to /proc/1/root/<host file>, in a pid
    namespace whose pid 1 is a host process (a pod sandbox's, joined by
    path), had cell-oci read a root-only host file into the process's
    HOME.  Now every such open stays in the root without magic links:
    HOME is /, the container itself cannot read the file either, and an
    args[0] through /proc/1/root fails create."""
    secret = tmp_path / "secret"
    with open(secret, "w") as f:
        f.write(SECRET_LINE)
    os.chmod(secret, 0o600)
    ns = HostPidns()
    try:
        b = bundle(tmp_path, "b", ["sh", "-c", "echo HOME=$HOME; cat /proc/1/root%s; sleep 60" % secret],
                   edit=with_pidns(ns.path), env=["PATH=/bin"])
        passwd = os.path.join(rootfs(b), "etc", "passwd")
        os.unlink(passwd)
        os.symlink("/proc/1/root%s" % secret, passwd)
        started(rt, sub, "c1", b)
        r = rt.call("exec", "--env", "PATH=/bin", "c1", "sh", "-c", "echo HOME=$HOME")
        assert r.rc == 0 and "HOME=/" in r.out and "SECRET" not in r.out, r
        x = bundle(tmp_path, "x", ["/proc/1/root/bin/true"], edit=with_pidns(ns.path))
        r = rt.create("x1", x)
        assert r.rc != 0 and "process.args[0]" in r.err, r
        rt.delete("c1", force=True).check()
    finally:
        ns.close()
    with open(os.path.join(tmp_path, "sub-1.out")) as f:
        out = f.read()
    assert "HOME=/" in out and "SECRET" not in out, out


def test_image_ptmx_through_a_magic_link_is_refused(rt, tmp_path):
    """The same for a terminal: a spec without a devpts of its own uses the
    image's /dev/pts/ptmx, which the init opens as real root.  As a
    symlink to /proc/1/root/dev/ptmx (pid 1 a host process) it handed
    the host's devpts to the container; now create fails naming
    process.terminal."""
    ns = HostPidns()
    try:
        def ed(cfg):
            with_pidns(ns.path)(cfg)
            cfg["process"]["terminal"] = True
            cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        b = bundle(tmp_path, "b", ["true"], edit=ed)
        os.makedirs(os.path.join(rootfs(b), "dev", "pts"))
        os.symlink("/proc/1/root/dev/ptmx", os.path.join(rootfs(b), "dev", "pts", "ptmx"))
        os.symlink("/proc/1/root/dev/ptmx", os.path.join(rootfs(b), "dev", "ptmx"))
        cs = oci.ConsoleSocket(tmp_path / "console.sock")
        try:
            r = rt.create("c1", b, extra=["--console-socket", cs.path])
        finally:
            cs.close()
    finally:
        ns.close()
    assert r.rc != 0 and "process.terminal" in r.err, r
    assert rt.status("c1") is None


# ---- namespaces ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pid", "network", "ipc", "uts", "cgroup"])
def test_the_hosts_namespaces_by_path_are_refused(rt, tmp_path, kind):
    """A spec that leaves a namespace out gets a new one; a path to the
    host's (here the test's own, which is cell-oci's: /proc/PID/ns/X)
    would give back what leaving it out cannot.  Refused naming the field,
    nothing left; the container's root never sees the host's processes,
    network, IPC objects or hostname."""
    name = {"network": "net"}.get(kind, kind)

    def ed(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != kind]
        cfg["linux"]["namespaces"].append({"type": kind, "path": "/proc/%d/ns/%s" % (os.getpid(), name)})
    b = bundle(tmp_path, "b", ["true"], edit=ed)
    r = rt.run("c1", b)
    assert r.rc != 0 and "host's %s namespace" % name in r.err and "linux.namespaces" in r.err, r
    assert rt.status("c1") is None and os.listdir(rt.root) == []
    show_runc(tmp_path, b)


def show_runc(tmp_path, b):
    """What runc does with the same bundle: printed, never asserted."""
    if oci.runtime_missing("runc") is None:
        runc = oci.Runtime("runc", tmp_path)
        try:
            r = runc.run("runc-c1", b)
            print("runc: rc %s %s" % (r.rc, (r.err or r.out).strip()[-200:]))
        finally:
            runc.cleanup()


@pytest.mark.parametrize("what", ["fifo", "file", "wrongtype"])
def test_namespace_paths_that_are_not_namespaces(rt, tmp_path, what):
    """A namespace path that is a FIFO (opening it would hold create
    forever), a regular file, or a namespace of another type: refused
    naming the path, create returns."""
    path = str(tmp_path / what)
    if what == "fifo":
        os.mkfifo(path)
    elif what == "file":
        open(path, "w").close()
    ns = HostPidns()
    try:
        if what == "wrongtype":
            path = ns.path.replace("/pid", "/mnt")

        def ed(cfg):
            for n in cfg["linux"]["namespaces"]:
                if n["type"] == "pid":
                    n["path"] = path
        r = rt.run("c1", bundle(tmp_path, "b", ["true"], edit=ed))
    finally:
        ns.close()
    assert r.rc != 0 and path in r.err and "linux.namespaces pid" in r.err, r
    assert rt.status("c1") is None


# ---- uid ranges --------------------------------------------------------------------


def uid_base(rt, cid):
    with open(os.path.join(rt.root, cid, "state.json")) as f:
        return json.load(f)["uid_base"]


def test_a_range_stays_held_while_leftovers_of_its_container_live(rt, sub, tmp_path):
    """A pod member that joins its sandbox's pid namespace by path, but not
    its user namespace, has a uid range of its own, and its processes
    outlive its init (an orphan goes to the sandbox's pid 1).  Its range
    was free again once the init died: the next container got the same
    host ids as the leftover (signals, files).  A range is now taken only
    when no host process runs with an id in it; delete kills the
    leftovers, and the range is free again."""
    s = bundle(tmp_path, "s", ["sleep", "60"])
    rt.create("s", s, pid_file=str(tmp_path / "s.pid"), via=sub).check()
    rt.start("s").check()
    m = bundle(tmp_path, "m", ["sh", "-c", "setsid sleep 60 </dev/null >/dev/null 2>&1 & exit 0"],
               edit=with_pidns("/proc/%d/ns/pid" % oci.read_pid_file(str(tmp_path / "s.pid"))))
    rt.create("m", m, pid_file=str(tmp_path / "m.pid"), via=sub).check()
    rt.start("m").check()
    assert sub.reaped(oci.read_pid_file(str(tmp_path / "m.pid"))) == {"exit": 0}
    held = uid_base(rt, "m")
    left = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
            if os.path.exists("/proc/%d/status" % p) and owner_of(p) == held]
    assert left, "the member's orphan is gone: nothing to test"
    c = bundle(tmp_path, "c", ["sleep", "60"])
    rt.create("c", c, via=sub).check()
    assert uid_base(rt, "c") != held
    rt.delete("m").check()
    assert all(oci.proc_state(p) in (None, "Z") for p in left)


def owner_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return int(next(l for l in f if l.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        return None


def test_a_spec_without_namespaces_shares_none_of_the_hosts(rt, tmp_path):
    """A spec with no linux.namespaces at all (no user, no pid, no mount,
    network, ipc, uts or cgroup namespace): the container still gets a new
    one of each, and a uid range that is not host root."""
    kinds = ("user", "pid", "mnt", "net", "ipc", "uts", "cgroup")
    b = bundle(tmp_path, "b", ["sh", "-c", "for n in %s; do echo \"$n $(readlink /proc/self/ns/$n)\"; done; "
                               "cat /proc/self/uid_map" % " ".join(kinds)],
               edit=lambda c: c["linux"].pop("namespaces"))
    r = rt.run("c1", b)
    assert r.rc == 0, r
    lines = r.out.strip().splitlines()
    for line in lines[:len(kinds)]:
        kind, ns = line.split()
        assert ns != os.readlink("/proc/self/ns/%s" % kind), (kind, r.out)
    inside, host_base, count = map(int, lines[-1].split())
    assert inside == 0 and host_base >= 0x50000000 and count == 65536, r.out


def test_concurrent_creates_get_distinct_ranges(rt, sub, tmp_path):
    """Eight creates at once: eight uid ranges, none shared (the slot
    directory is locked host-wide while a range is taken)."""
    bs = [bundle(tmp_path, "b%d" % i, ["sleep", "60"]) for i in range(8)]
    results = [None] * 8

    def create(i):
        results[i] = rt.create("c%d" % i, bs[i], via=None)
    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r.rc == 0, r
    bases = [uid_base(rt, "c%d" % i) for i in range(8)]
    assert len(set(bases)) == 8, bases


# ---- exec joining a running container -------------------------------------------------


WATCHER = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
me, seen, got = os.getpid(), 0, []


def still_runtime(p):
    # execve is one way: a cmdline that still names cell-oci after an
    # access succeeded means the access reached the runtime, not its program.
    try:
        with open("/proc/%s/cmdline" % p, "rb") as f:
            return b"cell-oci" in f.read()
    except OSError:
        return False


for _ in range(int(sys.argv[1])):
    if os.path.exists("/tmp/stop"):
        break
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me or not still_runtime(p):
            continue
        seen += 1                              # an exec'd process before its execve
        for what in ("exe", "environ", "mem", "cwd", "root", "fd/0"):
            try:
                os.close(os.open("/proc/%s/%s" % (p, what), os.O_RDONLY))
                if still_runtime(p):
                    got.append(what)
            except OSError:
                pass
        for what in ("exe", "cwd", "root"):
            try:
                os.readlink("/proc/%s/%s" % (p, what))
                if still_runtime(p):
                    got.append("readlink " + what)
            except OSError:
                pass
        # ptrace's own check (PTRACE_MODE_ATTACH), without stopping the
        # process: steal its fd 0 (pidfd_getfd), read its memory
        # (process_vm_readv: EFAULT means the check passed).
        pidfd = libc.syscall(434, int(p), 0)
        if pidfd >= 0:
            fd = libc.syscall(438, pidfd, 0, 0)
            if fd >= 0:
                os.close(fd)
                if still_runtime(p):
                    got.append("pidfd_getfd")
            os.close(pidfd)
        buf = ctypes.create_string_buffer(8)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
        remote = (ctypes.c_void_p * 2)(0x400000, 8)
        r = libc.syscall(310, int(p), local, 1, remote, 1, 0)
        if (r >= 0 or ctypes.get_errno() == 14) and still_runtime(p):
            got.append("process_vm_readv")
print(json.dumps({"seen": seen, "got": got}), flush=True)
"""


def test_exec_cannot_be_inspected_before_its_execve(rt, sub, tmp_path):
    """runc CVE-2019-5736 / CVE-2016-9962: an exec'd process is cell-oci,
    real root, inside the container's pid namespace until its execve; a
    container process that opens its /proc/PID/exe (to overwrite the
    runtime), environ, mem, cwd, root or fds, steals its descriptors
    (pidfd_getfd) or reads its memory (process_vm_readv: ptrace's check),
    would get the host's.  A watcher in the container tries all of it
    against every exec'd process it sees while 40 execs run, and against
    the inits of 10 pod members that join its pid namespace (parked, then
    starting: the same window): nothing succeeds (how many it caught before their execve is printed; the
    kernel's scheduling decides that)."""
    def ed(cfg):
        cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
        cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "HOME=/root"]
        cfg["root"]["readonly"] = False
    b = bundle(tmp_path, "b", ["python3", "-c", WATCHER, "100000000"], edit=ed)
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, os.path.join(rootfs(b), link))
    started(rt, sub, "c1", b)
    for _ in range(40):
        rt.call("exec", "c1", "true").check()
    # Pod members joining the watcher's pid namespace: their inits, parked
    # (created) and then starting, are cell-oci in it too.
    init = int(rt.state("c1")["pid"])
    pidns = with_pidns("/proc/%d/ns/pid" % init)
    for i in range(10):
        rt.create("m%d" % i, bundle(tmp_path, "m%d" % i, ["true"], edit=pidns), via=sub).check()
        rt.start("m%d" % i).check()
    rt.call("exec", "c1", "touch", "/tmp/stop").check()
    assert sub.reaped(init, timeout=oci.STEP_TIMEOUT) == {"exit": 0}
    with open(os.path.join(tmp_path, "sub-1.out")) as f:
        out = json.loads(f.read().strip().splitlines()[-1])
    print("watcher caught %d exec'd processes before their execve" % out["seen"])
    assert out["got"] == [], out


OVERWRITE = r"""
import errno, json, os, sys
me, pid = os.getpid(), None
while pid is None:                       # bounded by the test's exec timeout
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != me:
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    if b"--log=/tmp/fifo" in f.read():
                        pid = p
            except OSError:
                pass
out = {"exe": os.readlink("/proc/%s/exe" % pid)}
held = os.open("/proc/%s/exe" % pid, os.O_PATH)
try:
    os.close(os.open("/proc/%s/exe" % pid, os.O_WRONLY))
    out["write_running"] = "ok"
except OSError as e:
    out["write_running"] = errno.errorcode[e.errno]
release = os.open("/tmp/fifo", os.O_RDONLY | os.O_NONBLOCK)
def running(pid):                        # reaped between two looks: gone
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
while running(pid):
    os.sched_yield()
# CVE-2019-5736: once every process running it has exited (the `exec`
# on the host side maps the same copy until its child is gone: ETXTBSY).
out["write_after"] = "ETXTBSY"
for _ in range(10 ** 7):
    try:
        fd = os.open("/proc/self/fd/%d" % held, os.O_WRONLY)
        os.write(fd, b"\x7fELF-overwritten")
        out["write_after"] = "ok"
    except OSError as e:
        out["write_after"] = errno.errorcode[e.errno]
    if out["write_after"] != "ETXTBSY":
        break
    os.sched_yield()
print(json.dumps(out), flush=True)
while not os.path.exists("/tmp/stop"):
    os.sched_yield()
"""


def test_proc_self_exe_cannot_reach_the_runtime_binary(rt, sub, tmp_path):
    """runc CVE-2019-5736: the image's /bin/evil is `#!/proc/self/exe`, so
    an `exec` of it makes the kernel run whatever /proc/self/exe is at the
    execve, the runtime's binary, inside the container, where the container
    opens it through /proc/PID/exe and, once it has exited, reopens it for
    writing.  cell-oci's create, run and exec run from a sealed memfd copy:
    what the container reaches is that copy (not the host's file), it
    cannot be written, and the host's binary is unchanged.  (Without the
    copy the user namespace still refused the write: host root owns it.)"""
    with open(rt.binary, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()

    def ed(cfg):
        cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
        cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "HOME=/root"]
        cfg["root"]["readonly"] = False
    b = bundle(tmp_path, "b", ["python3", "-c", OVERWRITE], edit=ed)
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, os.path.join(rootfs(b), link))
    with open(os.path.join(rootfs(b), "bin", "evil"), "w") as f:
        f.write("#!/proc/self/exe --log=/tmp/fifo\n")
    os.chmod(os.path.join(rootfs(b), "bin", "evil"), 0o755)
    # The evil run's --log: it blocks opening it until the watcher reads.
    os.mkfifo(os.path.join(rootfs(b), "tmp", "fifo"), 0o666)
    started(rt, sub, "c1", b)
    init = int(rt.state("c1")["pid"])
    r = rt.call("exec", "c1", "/bin/evil")
    assert "unknown command '/bin/evil'" in r.err, r     # cell-oci ran, inside
    rt.call("exec", "c1", "touch", "/tmp/stop").check()
    assert sub.reaped(init) == {"exit": 0}
    with open(os.path.join(tmp_path, "sub-1.out")) as f:
        out = json.loads(f.read().strip().splitlines()[-1])
    assert out["exe"].startswith("/memfd:cell-oci") and out["exe"] != rt.binary, out
    assert out["write_running"] != "ok" and out["write_after"] == "EPERM", out
    with open(rt.binary, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before


# ---- seccomp ------------------------------------------------------------------------


PROBE = r"""
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, nr, args in (("unshare", 272, (0x10000000,)), ("keyctl", 250, (0, 0, 0, 0)), ("add_key", 248, (0, 0, 0, 0, 0)),
                       ("bpf", 321, (0, 0, 0)), ("userfaultfd", 323, (0,)), ("perf_event_open", 298, (0, 0, -1, -1, 0)),
                       ("ptrace", 101, (16, 1, 0, 0)), ("io_uring_setup", 425, (1, 0)), ("mount", 165, (0, 0, 0, 0, 0)),
                       ("kexec_load", 246, (0, 0, 0, 0)), ("open_by_handle_at", 304, (0, 0, 0)), ("setns", 308, (0, 0))):
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    out[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())
print(json.dumps(out))
"""


def test_a_permissive_profile_cannot_loosen_cells(rt, tmp_path):
    """A linux.seccomp profile that allows by default and explicitly allows
    (or only logs, or traces) unshare, keyctl, add_key, bpf, userfaultfd,
    perf_event_open, ptrace, io_uring, mount, kexec_load, open_by_handle_at
    and setns: cell's filter, loaded first, still refuses every one (the
    kernel takes the strictest answer)."""
    names = ["unshare", "keyctl", "add_key", "bpf", "userfaultfd", "perf_event_open", "ptrace", "io_uring_setup",
             "mount", "kexec_load", "open_by_handle_at", "setns"]
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": names[:6], "action": "SCMP_ACT_ALLOW"},
                            {"names": names[6:9], "action": "SCMP_ACT_LOG"},
                            {"names": names[9:], "action": "SCMP_ACT_TRACE", "errnoRet": 1}]}

    def ed(cfg):
        cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
        cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "HOME=/root"]
        cfg["linux"]["seccomp"] = profile
        for k in ("bounding", "effective", "permitted"):
            cfg["process"]["capabilities"][k] = ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF", "CAP_PERFMON"]
    b = bundle(tmp_path, "b", ["python3", "-c", PROBE], edit=ed)
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, os.path.join(rootfs(b), link))
    r = rt.run("c1", b)
    assert r.rc == 0, r
    out = json.loads(r.out.strip().splitlines()[-1])
    assert sorted(out) == sorted(names)
    assert [n for n in names if out[n] == "ok"] == [], out


# ---- sysctl -------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("kernel.core_pattern", "|/tmp/evil"), ("kernel.modprobe", "/tmp/evil"), ("vm.overcommit_memory", "1"),
    ("fs.protected_symlinks", "0"), ("kernel.ns_last_pid", "1"), ("net/ipv4/ip_forward", "1"),
    ("net.ipv4.../../kernel.core_pattern", "x"), ("kernel.shm_rmid_forced/../../core_pattern", "x"),
])
def test_host_wide_sysctls_are_refused(rt, tmp_path, name, value):
    """linux.sysctl outside what the container's own namespaces scope
    (core_pattern, modprobe: a host helper run as root), or a name that
    climbs out of its subtree: refused naming it, the host's value kept."""
    with open("/proc/sys/kernel/core_pattern") as f:
        core = f.read()
    b = bundle(tmp_path, "b", ["true"], edit=lambda c: c["linux"].update(sysctl={name: value}))
    r = rt.run("c1", b)
    assert r.rc != 0 and "linux.sysctl" in r.err, r
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core


def test_net_sysctls_without_a_network_namespace_stay_the_containers(rt, tmp_path):
    """A spec with no network namespace at all: cell-oci gives a new one,
    so net.* sysctls land there and the host's stay."""
    knobs = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2", "net.core.somaxconn": "77"}
    host = {}
    for k in knobs:
        with open("/proc/sys/" + k.replace(".", "/")) as f:
            host[k] = f.read()

    def ed(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
        cfg["linux"]["sysctl"] = knobs
    b = bundle(tmp_path, "b", ["sh", "-c", "cat " + " ".join("/proc/sys/" + k.replace(".", "/") for k in knobs)],
               edit=ed)
    r = rt.run("c1", b)
    assert r.rc == 0 and r.out.split() == list(knobs.values()), r
    for k in knobs:
        with open("/proc/sys/" + k.replace(".", "/")) as f:
            assert f.read() == host[k], k


# ---- the state directory ----------------------------------------------------------------


def start_time(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def test_state_directory_symlinks_are_not_followed(rt, tmp_path):
    """ROOT/ID, or ROOT/ID/state.json, made a symlink (by anything that can
    write --root, or a container the orchestrator bound it into) to a
    state naming a host process: state, start, kill, kill --all and delete
    never read it, signal that process or remove what the link names."""
    victim = tmp_path / "victim"
    os.makedirs(victim)
    host = subprocess.Popen(["sleep", "60"])
    try:
        forged = {"id": "c1", "pid": host.pid, "start_time": start_time(host.pid), "bundle": str(tmp_path),
                  "rootfs": str(tmp_path), "created": "2026-01-01T00:00:00Z", "cgroup": str(victim), "owner": 0,
                  "slot": -1, "uid_base": 0x50000000, "uid_count": 65536}
        with open(victim / "state.json", "w") as f:
            json.dump(forged, f)
        b = bundle(tmp_path, "b", ["true"])
        os.symlink(str(victim), os.path.join(rt.root, "c1"))
        os.makedirs(os.path.join(rt.root, "c2"), mode=0o700)
        os.symlink(str(victim / "state.json"), os.path.join(rt.root, "c2", "state.json"))
        for cid in ("c1", "c2"):
            for cmd in (["state", cid], ["start", cid], ["kill", cid, "KILL"], ["kill", "--all", cid, "KILL"],
                        ["pause", cid], ["delete", cid], ["delete", "--force", cid], ["exec", cid, "true"],
                        ["create", "--bundle", b, cid]):
                r = rt.call(*cmd)
                assert r.rc != 0 and str(host.pid) not in r.out, r
            assert host.poll() is None, "the host process was signalled"
        assert os.listdir(victim) == ["state.json"]
    finally:
        host.kill()
        host.wait()
