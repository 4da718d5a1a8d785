"""The egress helper (docs/security.md, "The egress helper"): each policed
cell's engine runs in a process of its own, cell-egress, not in the daemon
or the CLI.  These tests inspect the running helper from the host the way an
attacker who owns it would find it: its ids, capabilities (per thread),
seccomp and no_new_privs, its root, and every descriptor it holds (no
cell.db, no admin token, nothing of the state directory, no socket of the
daemon's or of another cell's helper); then they kill it and check that the
cell's network is cut (fail closed), that the daemon records why and keeps
serving, and that nothing is left behind.

The one peer is a TCP echo server on 198.18.3.10:7, an address this module
adds to the host's lo (and removes at its end).
"""
import ipaddress
import json
import os
import signal
import subprocess

import pytest

import daemon as dm
import netfake
from conftest import popen_cell, stop_proc, wait_for
from daemon import children, proc_status as status

PEER = netfake.claim("198.18.3", __name__) + ".10"
HELPER_EXE = "memfd:cell-egress"
CAP_NET_ADMIN, CAP_NET_RAW = 1 << 12, 1 << 13
POLICY = {"rules": [{"tcp": {"to": PEER, "ports": 7}}]}

# Inside the cell: connect to each address and say whether the echo came back.
PROBE = r"""
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"ping")
        out.append(s.recv(4) == b"ping")
        s.close()
    except OSError as e:
        out.append(False)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def peer():
    net = netfake.Net([PEER]).up()
    try:
        net.serve(netfake.TCPServer((PEER, 7), netfake.Echo))
        yield PEER
    finally:
        net.down()


@pytest.fixture(scope="module")
def d(tmp_path_factory, peer):
    yield from dm.serve(tmp_path_factory.mktemp("egress-helper"))


# ---- looking at processes from the host ------------------------------------------------


def is_helper(pid):
    try:
        return HELPER_EXE in os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return False


def helpers_of(pid):
    return {p for p in children(pid) if is_helper(p)}


def fd_targets(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out


def socket_inodes(pid):
    return {t for t in fd_targets(pid).values() if t.startswith("socket:")}


def new_policed_cell(d, admin, cells):
    """Create a policed cell; returns (id, its helper's pid)."""
    before = helpers_of(d.proc.pid)
    r = admin.post("/v1/cells", {"resources": {"memory": "128M"}, "policy": POLICY})
    assert r.status == 201, r
    cells.append(r.body["id"])
    new = helpers_of(d.proc.pid) - before
    assert len(new) == 1, new
    return r.body["id"], new.pop()


def probe(admin, cid, targets):
    r = admin.post("/cells/%s/v1/processes/run" % cid,
                   {"command": "/usr/bin/python3", "args": ["-c", PROBE, json.dumps(targets)], "timeoutMs": 30000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    return json.loads(r.body["stdout"].strip().splitlines()[-1])


def assert_confined(pid, parent):
    st = status(pid)
    assert st["PPid"] == str(parent), st
    assert st["Uid"].split() == ["65534"] * 4 and st["Gid"].split() == ["65534"] * 4, st
    assert st["Groups"].strip() == "", st
    assert st["NoNewPrivs"].strip() == "1" and st["Seccomp"].strip() == "2", st
    # The bounding set is what the engine's threads use: CAP_NET_RAW, and
    # CAP_NET_ADMIN only with the fast path (a host without it has none).
    assert int(st["CapBnd"], 16) in (CAP_NET_RAW, CAP_NET_ADMIN | CAP_NET_RAW), st
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0, st
    # Per thread: the fast path's thread alone may have CAP_NET_ADMIN (with
    # CAP_NET_RAW: capabilities are inherited, and only dropped), the UDP
    # thread CAP_NET_RAW; every other thread (the control loop, the
    # accepting thread, the workers that parse HTTP, TLS and DNS) none.
    with_caps = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        t = status(pid, int(tid))
        assert t["Uid"].split() == ["65534"] * 4, t
        assert t["NoNewPrivs"].strip() == "1" and t["Seccomp"].strip() == "2", t
        eff, prm = int(t["CapEff"], 16), int(t["CapPrm"], 16)
        assert eff & ~(CAP_NET_ADMIN | CAP_NET_RAW) == 0 and prm == eff, t
        if eff:
            with_caps[int(tid)] = eff
        # The thread with CAP_NET_ADMIN has a second filter: no new sockets,
        # so none it could write to in the host's netns was opened with it.
        if eff & CAP_NET_ADMIN and "Seccomp_filters" in t:
            assert int(t["Seccomp_filters"]) >= 2, t
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
    assert sum(1 for v in with_caps.values() if v & CAP_NET_ADMIN) <= 1, with_caps
    assert sorted(with_caps.values()) in ([CAP_NET_RAW], [CAP_NET_RAW, CAP_NET_ADMIN | CAP_NET_RAW]), with_caps
    # An empty root of its own.
    assert os.listdir("/proc/%d/root" % pid) == []


# ---- tests ----------------------------------------------------------------------------------


def test_helper_is_unprivileged_confined_and_holds_nothing_of_the_daemon(d, admin, cells):
    a, ha = new_policed_cell(d, admin, cells)
    b, hb = new_policed_cell(d, admin, cells)
    assert probe(admin, a, [[PEER, 7], [PEER, 8]]) == [True, False]
    for h in (ha, hb):
        assert_confined(h, d.proc.pid)
        targets = fd_targets(h)
        # stderr is the daemon's (sanitizer reports); nothing else of its.
        assert targets.pop(2) == os.readlink("/proc/%d/fd/2" % d.proc.pid)
        for fd, t in targets.items():
            assert d.state not in t and "cell.db" not in t and "admin.token" not in t, (fd, t)
            # Sockets, eventfds, the cell's netns, and (fast path) the host's
            # ip_forward sysctl, opened read-only before the root changed.
            assert t.startswith(("socket:", "anon_inode:", "pipe:", "/dev/null", "net:[",
                                 "/proc/sys/net/ipv4/ip_forward")), (fd, t)
        # stdin/stdout are /dev/null.
        assert targets[0] == "/dev/null" and targets[1] == "/dev/null", targets
    # No socket of the daemon's (its listeners, the cells' control sockets,
    # the store) and none of the other cell's helper.
    mine_a, mine_b, daemon = socket_inodes(ha), socket_inodes(hb), socket_inodes(d.proc.pid)
    assert not (mine_a & daemon) and not (mine_b & daemon) and not (mine_a & mine_b)
    # A helper cannot signal another (seccomp: signals to itself only) nor
    # trace it (not dumpable): checked from the kernel's side by the ids and
    # status above; the daemon's own status is untouched.
    assert status(d.proc.pid)["Uid"].split()[0] == "0"


SOURCE_ADDRESS = "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); " \
                 "s.connect((sys.argv[1], 7)); print(s.getsockname()[0])"


def host_veth_of(admin, cid):
    """The host end of a cell's fast-path veth, or None (no fast path): the
    host interface holding the address below the one the cell sends from
    (netns.c gives each veth a /30: host .1, cell .2)."""
    r = admin.post("/cells/%s/v1/processes/run" % cid,
                   {"command": "/usr/bin/python3", "args": ["-c", SOURCE_ADDRESS, PEER], "timeoutMs": 30000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    host_ip = str(ipaddress.ip_address(r.body["stdout"].strip()) - 1)
    for line in subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == host_ip and fields[1].startswith("cellv"):
            return fields[1]
    return None


def test_killing_the_helper_cuts_the_cell_off_and_the_daemon_keeps_serving(d, admin, cells):
    a, ha = new_policed_cell(d, admin, cells)
    b, hb = new_policed_cell(d, admin, cells)
    assert probe(admin, a, [[PEER, 7]]) == [True]
    # Cells of other tests (pytest-xdist's other worker, other sessions)
    # add and remove veths meanwhile: only this daemon's two count.
    host_veth_of_a = host_veth_of(admin, a)
    mine = {v for v in (host_veth_of_a, host_veth_of(admin, b)) if v}
    before = set(os.listdir("/sys/class/net"))
    veths = {n for n in before if not n.startswith("cellv")} | (before & mine)
    os.kill(ha, signal.SIGKILL)
    # Reaped by the daemon: no zombie is left.
    assert wait_for(lambda: not os.path.exists("/proc/%d" % ha), 10)
    # The cell has no network any more (fail closed): nothing answers it.
    assert probe(admin, a, [[PEER, 7]]) == [False]
    # The fast path's veth (if the cell had one) went with it; nothing else changed.
    gone = veths - set(os.listdir("/sys/class/net"))
    assert gone <= {host_veth_of_a} - {None}, (gone, host_veth_of_a)
    # The daemon keeps serving, the other cell keeps its network.
    assert admin.get("/v1/health").status == 200
    assert probe(admin, b, [[PEER, 7]]) == [True]
    assert is_helper(hb)
    # The cut is audited; a policy change is refused, not silently lost.
    def engine_records():
        r = admin.get("/v1/audit", query={"kind": "net", "limit": 10000})
        return [x for x in r.body["records"] if x.get("cell") == a and x.get("event") == "engine"]
    recs = wait_for(engine_records, 10)
    assert recs and recs[-1]["verdict"] == "deny" and "cut" in recs[-1]["reason"], recs
    # The record is written after the cut: its RTM_DELLINK of the cell's
    # eth0 (when it had one) succeeded, and the host's end went with it.
    assert "cutError" not in recs[-1], recs[-1]
    assert not (host_veth_of_a and os.path.exists("/sys/class/net/" + host_veth_of_a)), host_veth_of_a
    r = admin.put("/v1/cells/%s/policy" % a, POLICY)
    assert r.status >= 400, r
    # Deleting the cell leaves no helper and no veth of its behind.
    assert admin.delete("/v1/cells/%s" % a).status in (200, 204)
    cells.remove(a)
    assert ha not in helpers_of(d.proc.pid)


def cgroups(pid):
    """controller(s) -> path, from /proc/PID/cgroup (v1 lines and v2's "")."""
    with open("/proc/%d/cgroup" % pid) as f:
        return {parts[1]: parts[2] for parts in (line.rstrip("\n").split(":", 2) for line in f)}


def test_the_helper_is_charged_to_its_cell(d, admin, cells):
    # The threads, memory and sockets a cell's traffic costs are the cell's:
    # its helper sits in the cell's cgroups, so a cell that opens many slow
    # flows spends its own pids and memory limits, not the host's.
    a, ha = new_policed_cell(d, admin, cells)
    marker = "cg-%d" % ha
    r = admin.post("/cells/%s/v1/processes" % a, {"command": "sleep", "args": ["600"], "env": {"MARK": marker}})
    assert r.status in (200, 201), r
    def cell_proc():
        for p in os.listdir("/proc"):
            try:
                with open("/proc/%s/environ" % p, "rb") as f:
                    if ("MARK=" + marker).encode() in f.read().split(b"\0"):
                        return int(p)
            except (OSError, ValueError):
                pass
        return None
    pid = wait_for(cell_proc, 10)
    assert pid, "the cell's sleep was not found"
    theirs, mine = cgroups(pid), cgroups(ha)
    # The cell's own groups: memory and pids on v1, the unified one on v2.
    checked = [k for k in theirs if theirs[k] not in ("/", "")
               and (k == "" or any(c in k.split(",") for c in ("memory", "pids")))]
    assert checked, theirs
    for k in checked:
        assert mine.get(k) == theirs[k], (k, mine, theirs)
    assert mine != cgroups(d.proc.pid)


def test_stopping_a_cell_ends_its_helper(d, admin, cells):
    a, ha = new_policed_cell(d, admin, cells)
    assert admin.post("/v1/cells/%s/stop" % a).status == 200
    assert wait_for(lambda: not os.path.exists("/proc/%d" % ha), 10)
    assert admin.post("/v1/cells/%s/start" % a).status == 200
    hs = helpers_of(d.proc.pid)
    assert probe(admin, a, [[PEER, 7]]) == [True]
    assert ha not in hs and hs


def test_cell_run_has_a_confined_helper_too(state, peer, tmp_path):
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(POLICY))
    p = popen_cell(state, ["run", "--policy", str(pol), "--", "/bin/sh", "-c", "echo ready; sleep 30"])
    try:
        assert p.stdout.readline().strip() == "ready"
        hs = helpers_of(p.pid)
        assert len(hs) == 1, hs
        h = hs.pop()
        assert_confined(h, p.pid)
        # Its own session: ^C at the terminal is for the CLI, not for it.
        assert os.getsid(h) == h
    finally:
        stop_proc(p)
    assert wait_for(lambda: not any(is_helper(x) for x in children(p.pid)), 10)


def test_a_helper_gets_no_secret_its_policy_does_not_name(tmp_path, peer, monkeypatch):
    """A compromised helper asking for another of the tenant's secrets: the
    test hook CELL_EGRESS_TEST_ASK_SECRET (docs/egress.md) makes every helper
    of this daemon ask for OTHER, which no rule of its policy names."""
    monkeypatch.setenv("CELL_EGRESS_TEST_ASK_SECRET", "OTHER")
    with dm.served(tmp_path / "d") as dd:
        admin = dd.client()
        for name in ("API_KEY", "OTHER"):
            r = admin.post("/v1/secrets", {"name": name, "value": "value-of-" + name})
            assert r.status in (200, 201), r
        policy = {"rules": [{"dns": {"upstreams": [PEER]}},
                            {"http": {"host": "api.test", "set_headers": {"Authorization": "Bearer ${secret:API_KEY}"}}}]}
        r = admin.post("/v1/cells", {"resources": {"memory": "128M"}, "policy": policy})
        assert r.status == 201, r
        cid = r.body["id"]

        def records():
            r = admin.get("/v1/audit", query={"kind": "net", "limit": 10000})
            assert r.status == 200, r
            return [x for x in r.body["records"] if x.get("cell") == cid]

        assert wait_for(lambda: any(x.get("event") == "test-secret" for x in records()), 15)
        recs = records()
        asked = [x for x in recs if x.get("event") == "test-secret"]
        assert asked == [dict(asked[0], name="OTHER", got=False)], recs
        refused = [x for x in recs if x.get("event") == "secret"]
        assert refused and refused[0]["name"] == "OTHER" and refused[0]["verdict"] == "deny", recs
        assert "value-of-" not in json.dumps(recs)
        admin.delete("/v1/cells/%s" % cid)
