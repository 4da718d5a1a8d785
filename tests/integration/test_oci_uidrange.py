"""A uid range is never shared while something of its holder still runs
(issue 15 hardening), for cell-oci containers and for cells.

Two containers on the same host ids are one: each may signal, ptrace and
read the other's processes and write its files.  A container's range
used to count as free once its init had exited; a pod member that joins
its sandbox's pid namespace by path but has a range of its own leaves
processes behind its init (an `exec --detach`ed one, or one its init
double-forked: both live on under the sandbox's pid 1), so the next
container got the leftovers' ids.  Each test here makes that happen for
real and then tries to use it: a new container in the same pid namespace
signals and reads the leftover.

cell-oci's rules (docs/oci.md "uid ranges"): a range is taken only when
no holder (/run/cell/oci-slots/N) lives and no host process runs with an
id in it; `exec` and a member joining a user namespace by path hold the
range through the container they join, which must still hold it.  Cells
(docs/security.md): a cell's processes die with its init (pid 1 of its
pid namespace); its range is taken again only once the lock on
/run/cell/slots/N.lock is free and the init named in it is gone.
"""
import contextlib
import fcntl
import json
import os
import random
import subprocess

import pytest

import oci
from conftest import CELL_BIN, CELL_UID_FIRST, run_cell
from daemon import wait_for

OCI_UID_FIRST = 0x50000000
OCI_SLOTS = "/run/cell/oci-slots"
CELL_SLOTS = "/run/cell/slots"
RANGE = 65536
DEAD_PID = 99999999            # above any pid_max: never a living process

needs_oci = pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None,
                               reason=oci.runtime_missing("cell-oci") or "")


@pytest.fixture
def rt(tmp_path):
    yield from oci.runtime_fixture("cell-oci", tmp_path)


@pytest.fixture
def sub(rt, tmp_path):
    """The shim's place; the containers go before it does."""
    yield from oci.subreaper_fixture(rt, tmp_path)


# ---- what the host sees ----------------------------------------------------------------


def status_of(pid):
    """/proc/PID/status as a dict (None when the process is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None


def alive(pid):
    st = status_of(pid)
    return st is not None and not st["State"].startswith("Z")


def pids_in_range(base):
    """Every living host process with a uid (real, effective, saved or fs)
    in [base, base + 65536)."""
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            st = status_of(int(e))
            if st and not st["State"].startswith("Z") and \
                    any(base <= int(u) < base + RANGE for u in st["Uid"].split()):
                out.append(int(e))
    return out


def host_base(pid):
    """The host id container root maps to (/proc/PID/uid_map's second field)."""
    with open("/proc/%d/uid_map" % pid) as f:
        return int(f.read().split()[1])


def ns_pid(pid):
    """pid's number in its innermost pid namespace."""
    return int(status_of(pid)["NSpid"].split()[-1])


def living_holders(slot):
    """The holders in /run/cell/oci-slots/SLOT that still run (pid, start)."""
    try:
        with open(os.path.join(OCI_SLOTS, str(slot))) as f:
            lines = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [(int(p), int(s)) for p, s in lines if start_time(int(p)) == int(s)]


def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def free_oci_slot():
    """The lowest range cell-oci would hand out now (no living holder, no
    process in it)."""
    busy = {(u - OCI_UID_FIRST) // RANGE for p in os.listdir("/proc") if p.isdigit()
            for u in uids(int(p)) if u >= OCI_UID_FIRST}
    for i in range(4096):
        if i not in busy and not living_holders(i):
            return i
    pytest.skip("every cell-oci range is in use")


def uids(pid):
    st = status_of(pid)
    return [int(u) for u in st["Uid"].split()] if st else []


def squatter(uid):
    """A host process running as uid (all four ids), reaped by the test."""
    return subprocess.Popen(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                             "sleep", "60"], start_new_session=True)


# ---- bundles --------------------------------------------------------------------------


def bundle(tmp_path, name, args, pidns=None, userns=None, pod=None):
    """A bundle; pidns/userns: a namespace path to join; pod: the CRI
    sandbox id annotation."""
    def edit(cfg):
        if pod:
            cfg["annotations"] = {"io.kubernetes.cri.sandbox-id": pod}
        for n in cfg["linux"]["namespaces"]:
            if n["type"] == "pid" and pidns:
                n["path"] = pidns
        if userns:
            cfg["linux"]["namespaces"].append({"type": "user", "path": userns})
    return oci.make_bundle(tmp_path / name, args, edit=edit)


def sandbox(rt, sub, tmp_path):
    """A running pod sandbox "s" (pod p1); its init's host pid."""
    rt.create("s", bundle(tmp_path, "s", ["sleep", "60"], pod="p1"),
              pid_file=str(tmp_path / "s.pid"), via=sub).check()
    rt.start("s").check()
    return oci.read_pid_file(str(tmp_path / "s.pid"))


def entered(pid):
    """Once the init runs in its own user namespace (after start)."""
    return wait_for(lambda: os.readlink("/proc/%d/ns/user" % pid) != os.readlink("/proc/self/ns/user"))


def leftover_of_member(rt, sub, tmp_path, spid, how):
    """A member "m" of the sandbox's pid namespace with a range of its own
    leaves a process behind its init; returns (its host pid, m's base)."""
    pidns = "/proc/%d/ns/pid" % spid
    mpid_file = str(tmp_path / "m.pid")
    if how == "exec":
        rt.create("m", bundle(tmp_path, "m", ["sleep", "60"], pidns=pidns), pid_file=mpid_file, via=sub).check()
        rt.start("m").check()
        mpid = oci.read_pid_file(mpid_file)
        entered(mpid)
        r = sub.run(rt.argv("exec", "--detach", "--pid-file", str(tmp_path / "x.pid"), "m", "sleep", "60"))
        assert r.rc == 0, r
        left = oci.read_pid_file(str(tmp_path / "x.pid"))
        rt.kill("m", "KILL").check()
    else:
        rt.create("m", bundle(tmp_path, "m", ["sh", "-c", "setsid sleep 60 </dev/null >/dev/null 2>&1 & "
                                               "echo $! > /tmp/left; exit 0"], pidns=pidns),
                  pid_file=mpid_file, via=sub).check()
        rt.start("m").check()
        mpid = oci.read_pid_file(mpid_file)
        left = None
    assert sub.reaped(mpid) in ({"exit": 0}, {"signal": 9})
    base = state_base(rt, "m")
    if left is None:
        found = pids_in_range(base)
        assert len(found) == 1, found
        left = found[0]
    assert alive(left), "the leftover died with the member's init: nothing to test"
    assert host_base(left) == base
    assert rt.status("m") == "stopped"
    return left, base


def state_base(rt, cid):
    with open(os.path.join(rt.root, cid, "state.json")) as f:
        return json.load(f)["uid_base"]


# ---- cell-oci ---------------------------------------------------------------------------


@needs_oci
@pytest.mark.parametrize("how", ["exec", "fork"])
def test_a_leftover_keeps_its_range_and_cannot_be_reached(rt, sub, tmp_path, how):
    """The member's init is gone, its leftover (exec --detach'ed, or
    double-forked by the init) runs on.  A new container "b", in the same
    pid namespace so that it can name the leftover, gets another range
    (its uid_map, read inside, against the leftover's, read on the host)
    and can neither signal the leftover nor read its /proc/PID/environ
    (ptrace's access check): kill=1, read=1.  On the leftover's range (a
    cell-oci without the fix) it got kill=0: it could kill it.  (ptrace
    and environ stay refused even then: the kernel refuses them across
    user namespaces to a tracer without CAP_SYS_PTRACE in the target's;
    signals and files go by host uid alone.)"""
    spid = sandbox(rt, sub, tmp_path)
    left, base = leftover_of_member(rt, sub, tmp_path, spid, how)
    inner = ns_pid(left)
    script = ("cat /proc/self/uid_map; kill -0 %d 2>/dev/null; echo kill=$?; "
              "cat /proc/%d/environ >/dev/null 2>&1; echo read=$?" % (inner, inner))
    b = bundle(tmp_path, "b", ["sh", "-c", script], pidns="/proc/%d/ns/pid" % spid)
    r = rt.run("b", b, via=sub)
    assert r.rc == 0, r
    lines = r.out.split("\n")
    assert int(lines[0].split()[1]) != base, (r.out, base)
    assert "kill=1" in lines and "read=1" in lines, r.out
    assert alive(left) and host_base(left) == base


@needs_oci
def test_delete_force_kills_the_leftover_and_frees_the_range(rt, sub, tmp_path):
    """`delete --force` of the stopped member kills what is left in its
    cgroup (the exec'd process joined it); then nothing runs in the range
    and no holder is left, so it is free again."""
    spid = sandbox(rt, sub, tmp_path)
    left, base = leftover_of_member(rt, sub, tmp_path, spid, "exec")
    slot = (base - OCI_UID_FIRST) // RANGE
    mpid = [p for p, _ in living_holders(slot)]
    rt.delete("m", force=True).check()
    assert sub.reaped(left) == {"signal": 9}
    # Free: nothing runs in it and no one holds it, or (tests running in
    # parallel) a new container of someone else's has taken it already.
    holders = living_holders(slot)
    assert (pids_in_range(base) == [] and holders == []) or (holders and not set(mpid) & {p for p, _ in holders})


@needs_oci
def test_a_container_cannot_leave_its_cgroup(rt, sub, tmp_path):
    """delete --force frees a range by killing the container's cgroup, so
    a process that left it would survive delete (the scan would still
    hold its range, never free it).  A container has no cgroupfs (cell-oci
    mounts none) and cannot mount one, v1 or v2: nowhere to move to."""
    script = ("mkdir -p /tmp/cg; mount -t cgroup2 none /tmp/cg 2>/dev/null; echo v2=$?; "
              "mount -t cgroup -o pids none /tmp/cg 2>/dev/null; echo v1=$?; "
              "ls /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs 2>/dev/null | wc -l")
    r = rt.run("c", bundle(tmp_path, "c", ["sh", "-c", script]), via=sub)
    assert r.rc == 0, r
    v2, v1, procs = r.out.split()
    assert v2 != "v2=0" and v1 != "v1=0" and procs == "0", r.out


@needs_oci
def test_a_process_in_a_range_without_holder_keeps_it(rt, sub, tmp_path):
    """A range whose holders are all gone (a crashed cell-oci, a deleted
    container) but where some host process still runs with one of its ids
    is not handed out."""
    slot = free_oci_slot()
    base = OCI_UID_FIRST + slot * RANGE
    p = squatter(base + 7)
    try:
        assert wait_for(lambda: uids(p.pid) == [base + 7] * 4)
        rt.create("c", bundle(tmp_path, "c", ["sleep", "60"]), via=sub).check()
        assert state_base(rt, "c") != base
    finally:
        p.kill()
        p.wait()


@needs_oci
def test_a_crashed_creators_range_is_taken_again(rt, sub, tmp_path):
    """A slot file whose only holder is dead (cell-oci killed between
    taking a range and its init's start) does not leak the range: the
    next create takes it (or, racing another test, someone else has)."""
    with slots_locked():
        slot = free_oci_slot()
        path = os.path.join(OCI_SLOTS, str(slot))
        with open(path + ".test", "w") as f:
            f.write("%d 1\n" % DEAD_PID)
        os.rename(path + ".test", path)
    rt.create("c", bundle(tmp_path, "c", ["sleep", "60"]), via=sub, pid_file=str(tmp_path / "c.pid")).check()
    cpid = oci.read_pid_file(str(tmp_path / "c.pid"))
    if state_base(rt, "c") == OCI_UID_FIRST + slot * RANGE:
        assert living_holders(slot) == [(cpid, start_time(cpid))]
    else:
        # Racing another create on this host (another test run): it took
        # the range, and it may already have let it go again; either way the
        # dead holder's line is gone, which is what "taken again" means.
        assert living_holders(slot) or not dead_holder_listed(slot), \
            "range %d still lists the dead creator and no one took it" % slot


def dead_holder_listed(slot):
    try:
        with open(os.path.join(OCI_SLOTS, str(slot))) as f:
            return any(line.split()[:1] == [str(DEAD_PID)] for line in f)
    except FileNotFoundError:
        return False


def drop_holder(slot, pid):
    """Rewrite a slot file without pid's line: what the file says once the
    range was freed and taken by another container (this test process
    stays a holder, so no one else takes the range meanwhile)."""
    path = os.path.join(OCI_SLOTS, str(slot))
    with slots_locked():
        with open(path) as f:
            lines = [line for line in f if line.strip() and int(line.split()[0]) != pid]
        lines.append("%d %d\n" % (os.getpid(), start_time(os.getpid())))
        with open(path + ".test", "w") as f:
            f.write("".join(lines))
        os.rename(path + ".test", path)


@contextlib.contextmanager
def slots_locked():
    """cell-oci's own lock on the slot directory: a file the test writes
    is never half of a change some create is making."""
    os.makedirs(OCI_SLOTS, exist_ok=True)
    fd = os.open(OCI_SLOTS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@needs_oci
def test_exec_holds_the_range_through_the_init(rt, sub, tmp_path):
    """exec holds the range while its process is on its way in (real
    root, no id of the range yet): through the init, which must still be
    a holder.  Once the range is no longer the init's (the init died and
    the range went to a new container, emulated by rewriting the slot
    file), exec is refused, and a successful exec leaves no line of its
    own behind."""
    rt.create("c", bundle(tmp_path, "c", ["sleep", "60"]), via=sub, pid_file=str(tmp_path / "c.pid")).check()
    rt.start("c").check()
    cpid = oci.read_pid_file(str(tmp_path / "c.pid"))
    entered(cpid)
    slot = (state_base(rt, "c") - OCI_UID_FIRST) // RANGE
    r = rt.call("exec", "c", "true")
    assert r.rc == 0, r
    assert living_holders(slot) == [(cpid, start_time(cpid))]
    drop_holder(slot, cpid)
    r = rt.call("exec", "c", "true")
    assert r.rc != 0 and "no longer held by the container" in r.err, r


@needs_oci
def test_exec_into_a_member_holds_through_the_member(rt, sub, tmp_path):
    """A pod member in the sandbox's user namespace is a holder of the
    sandbox's range itself: exec into it works, before and after the
    sandbox is deleted, and runs on the shared range."""
    spid = sandbox(rt, sub, tmp_path)
    entered(spid)
    shared = host_base(spid)
    rt.create("m", bundle(tmp_path, "m", ["sleep", "60"], userns="/proc/%d/ns/user" % spid, pod="p1"),
              via=sub).check()
    rt.start("m").check()
    for sandbox_deleted in (False, True):
        r = rt.call("exec", "m", "cat", "/proc/self/uid_map")
        assert r.rc == 0 and int(r.out.split()[1]) == shared, (sandbox_deleted, r)
        if not sandbox_deleted:
            rt.delete("s", force=True).check()


@needs_oci
def test_a_member_joins_a_user_namespace_only_through_a_holder(rt, sub, tmp_path):
    """A pod member joining the sandbox's user namespace by path holds the
    range through the sandbox; when the sandbox no longer holds it (its
    range freed and retaken meanwhile, emulated), create is refused: the
    member would share ids with the range's new owner."""
    spid = sandbox(rt, sub, tmp_path)
    entered(spid)
    slot = (state_base(rt, "s") - OCI_UID_FIRST) // RANGE
    drop_holder(slot, spid)
    r = rt.create("m", bundle(tmp_path, "m", ["sleep", "60"], userns="/proc/%d/ns/user" % spid, pod="p1"),
                  via=sub)
    assert r.rc != 0 and "no longer held by the container" in r.err, r
    assert rt.status("m") is None


# ---- cells -----------------------------------------------------------------------------


@pytest.fixture
def cstate(tmp_path):
    d = tmp_path / "cellstate"
    d.mkdir()
    return str(d)


def test_a_cells_leftovers_die_with_its_init(cstate):
    """A cell's command double-forks a sleeper and exits: the cell's init
    is pid 1 of its pid namespace, whose end kills the sleeper before the
    range is released, so nothing runs in the range after `cell run`."""
    marker = str(random.randrange(100000, 999999))
    r = run_cell(cstate, ["run", "--", "sh", "-c",
                          "cat /proc/self/uid_map; setsid sleep %s </dev/null >/dev/null 2>&1 & exit 0" % marker],
                 timeout=30)
    assert r.returncode == 0 and not any(m in r.stderr for m in oci.SANITIZER_MARKERS), r
    base = int(r.stdout.split()[1])
    assert base >= CELL_UID_FIRST
    # The sleeper by its argv (another test's cell may have the range by now).
    assert [p for p in pids_in_range(base) if cmdline(p) == ["sleep", marker]] == []


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None


def free_cell_slot():
    """The lowest cell range whose lock is free (checked by taking it)."""
    for i in range(4096):
        path = os.path.join(CELL_SLOTS, "%d.lock" % i)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return i, fd
    pytest.skip("every cell range is in use")


def test_a_cells_range_is_not_taken_while_its_init_lives(cstate):
    """The lock on a cell's slot file is released when its owner dies,
    before the cell's init gets its parent-death signal: for that moment
    the lock calls the range free while the cell runs.  The owner names
    its init in the file, and a range whose named init lives is skipped.
    Emulated: a free slot naming a living process is not handed out."""
    os.makedirs(CELL_SLOTS, exist_ok=True)
    slot, fd = free_cell_slot()
    p = subprocess.Popen(["sleep", "60"])
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d %d\n" % (p.pid, start_time(p.pid)), 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        r = run_cell(cstate, ["run", "--", "cat", "/proc/self/uid_map"], timeout=30)
        assert r.returncode == 0 and not any(m in r.stderr for m in oci.SANITIZER_MARKERS), r
        assert int(r.stdout.split()[1]) != CELL_UID_FIRST + slot * RANGE
    finally:
        p.kill()
        p.wait()


def test_a_cell_names_its_init_in_its_slot_file(cstate):
    """While a cell runs, its slot file names its init (pid and start
    time), the record the next taker reads."""
    p = subprocess.Popen([CELL_BIN, "--state", cstate, "run", "--", "sh", "-c",
                          "cat /proc/self/uid_map; read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        base = int(p.stdout.readline().split()[1])
        slot = (base - CELL_UID_FIRST) // RANGE
        with open(os.path.join(CELL_SLOTS, "%d.lock" % slot)) as f:
            pid, start = map(int, f.read().split())
        assert uids(pid)[0] == base and start_time(pid) == start
        assert status_of(pid)["NSpid"].split()[-1] == "1"
    finally:
        p.stdin.close()
        p.wait(timeout=30)
        p.stdout.close()
