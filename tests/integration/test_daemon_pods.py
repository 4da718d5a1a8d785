"""The node endpoint /v1/pods (cell serve --pods, issue 15; docs/kubernetes.md
"Egress: the node daemon"), without containerd: a "pod" here is a process
in a network namespace of its own (unshare -n), which is what cell-oci
registers for a pod sandbox.  The node token: made 0600, valid on /v1/pods
only, on the unix socket only.  Registration installs cell's rules in that
netns and starts one egress helper; DELETE, or the process's exit, stops it.
Bad input: malformed JSON, wrong types, unknown fields, a bad id, a pid that
is not running or whose start time differs, the daemon's own netns, a huge
or invalid policy, a duplicate (also concurrently), unknown ids.
The CRI path (cell-oci registering real pods) is test_oci_cri_egress.py."""
import concurrent.futures
import json
import os
import shutil
import stat
import subprocess

import pytest

import daemon as dm
import netfake
from daemon import Daemon, assert_problem, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
                                reason="needs root, nft and unshare")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    state = tmp_path_factory.mktemp("pods") / "state"
    # The echo server of the cgroup tests is on this host's lo: the operator allows it.
    dd = Daemon(state, extra_args=["--pods", "--warm", "0", "--allow-tenant-dest", "198.18.50.254/32"],
                unix_socket=True)
    dd.start()
    yield dd
    dd.stop()
    dd.check_sanitizer()


@pytest.fixture(scope="module")
def node_token(d):
    with open(os.path.join(d.state, "node.token")) as f:
        return f.read().strip()


@pytest.fixture
def node(d, node_token):
    """A client on the unix socket with the node token."""
    c = dm.Client(None, None, node_token, unix=os.path.join(d.state, "cell.sock"))
    yield c
    for p in c.get("/v1/pods").body["pods"]:
        c.delete("/v1/pods/" + p["id"])


def start_time(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


class NetnsProc:
    """A process in a new network namespace (the pod sandbox's init)."""

    def __init__(self):
        self.p = subprocess.Popen(["unshare", "--net", "sleep", "1000"], stdin=subprocess.DEVNULL)
        assert wait_for(lambda: os.readlink("/proc/%d/ns/net" % self.p.pid) != os.readlink("/proc/self/ns/net"), 5)
        self.pid = self.p.pid
        self.start = start_time(self.pid)

    def nft(self, *args):
        return subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % self.pid, "nft"] + list(args),
                              capture_output=True, text=True, timeout=20)

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


@pytest.fixture
def proc():
    p = NetnsProc()
    yield p
    p.close()


POLICY = json.dumps({"rules": [{"tcp": {"to": "192.0.2.1/32", "ports": [80]}}]})


def body(p, **kw):
    b = {"id": "sandbox" + os.urandom(6).hex(), "pid": p.pid, "startTime": p.start, "policy": POLICY,
         "pod": {"name": "web", "namespace": "team-a", "uid": "0000-1111"}}
    b.update(kw)
    return b


def helper_alive(pid):
    return os.path.exists("/proc/%d" % pid)


def test_node_token_file_and_scope(d, node_token, node):
    st = os.stat(os.path.join(d.state, "node.token"))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert node_token.startswith("cellnode_") and len(node_token) == 41
    assert node.get("/v1/pods").status == 200
    # nothing else takes it: not the cells, not the audit
    for path in ("/v1/cells", "/v1/audit", "/v1/tokens"):
        assert_problem(node.get(path), 401)
    # not on TCP, even for /v1/pods
    assert_problem(d.client(node_token, admin=False).get("/v1/pods"), 401)
    # admins may; a tenant may not
    assert d.client().get("/v1/pods").status == 200
    assert_problem(d.tenant("podpeeker").get("/v1/pods"), 403)
    # a wrong node token of the right shape
    bad = node.with_token("cellnode_" + "0" * 32)
    assert_problem(bad.get("/v1/pods"), 401)


def test_register_polices_the_netns_and_delete_stops_it(node, proc):
    r = node.post("/v1/pods", body(proc))
    assert r.status == 201, r
    pod = r.body
    assert pod["policed"] and pod["policy"] == "annotation" and pod["auditId"] == "pod-" + pod["id"][:16]
    assert pod["name"] == "web" and pod["namespace"] == "team-a" and pod["pid"] == proc.pid
    helper = pod["helperPid"]
    assert helper > 0 and helper_alive(helper)
    rules = proc.nft("list", "table", "inet", "cell")
    assert rules.returncode == 0 and "redirect to :15001" in rules.stdout and "ct direction reply" in rules.stdout
    assert node.get("/v1/pods/" + pod["id"]).body["helperPid"] == helper
    assert [p["id"] for p in node.get("/v1/pods").body["pods"]] == [pod["id"]]
    assert node.delete("/v1/pods/" + pod["id"]).status == 204
    assert wait_for(lambda: not helper_alive(helper), 10), "the egress helper outlived its pod's registration"
    assert_problem(node.get("/v1/pods/" + pod["id"]), 404)
    assert_problem(node.delete("/v1/pods/" + pod["id"]), 404)


def test_the_init_exiting_unregisters(node, proc):
    r = node.post("/v1/pods", body(proc))
    assert r.status == 201, r
    helper = r.body["helperPid"]
    proc.close()
    assert wait_for(lambda: node.get("/v1/pods").body["pods"] == [], 10)
    assert wait_for(lambda: not helper_alive(helper), 10)


def test_a_dead_helper_cuts_the_pod_off(node, proc):
    """The helper killed: the daemon deletes the pod's eth0 (CNI's, here a
    veth the test gives the netns), as it cuts a cell off."""
    host_end = "k8st" + os.urandom(3).hex()
    subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns",
                    "/proc/%d/ns/net" % proc.pid], check=True, timeout=20)
    try:
        r = node.post("/v1/pods", body(proc))
        assert r.status == 201, r
        os.kill(r.body["helperPid"], 9)

        def has_eth0():
            return subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % proc.pid, "ip", "link", "show", "eth0"],
                                  capture_output=True, timeout=20).returncode == 0
        assert wait_for(lambda: not has_eth0(), 10), "the pod kept its eth0 after its egress helper died"
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=20)


def test_without_a_policy_nothing_is_registered(node, proc):
    r = node.post("/v1/pods", body(proc, policy=None))
    assert r.status == 200 and r.body == {"id": r.body["id"], "policed": False}, r
    assert node.get("/v1/pods").body["pods"] == []
    assert proc.nft("list", "table", "inet", "cell").returncode != 0


@pytest.mark.parametrize("change, status, detail", [
    ({"id": ""}, 400, "field \"id\""),
    ({"id": "../x"}, 400, "field \"id\""),
    ({"id": "a" * 65}, 400, "field \"id\""),
    ({"id": 7}, 422, "id"),
    ({"pid": "1"}, 422, "pid"),
    ({"pid": 0}, 400, "pid"),
    ({"startTime": 1}, 400, "start time"),
    ({"policy": {"rules": []}}, 400, "must be a string"),
    ({"policy": "{not json"}, 400, "annotation cell.dev/egress-policy): not JSON"),
    ({"policy": "[1]"}, 400, "must be a JSON object"),
    ({"policy": json.dumps({"rules": [{"tcp": {"ports": "x"}}]})}, 400, "rules[0]"),
    ({"policy": json.dumps({"rules": [], "pad": "x" * (70 << 10)})}, 400, "too large"),
    ({"policy": json.dumps({"rules": [{"tcp": {"to": "link-local"}}]})}, 403, "rules[0]"),
    # Pods have no secrets on the node: a rule naming one is refused, by its index.
    ({"policy": json.dumps({"rules": [{"tcp": {"to": "192.0.2.1/32", "ports": [80]}}, {"http": {
        "host": "api.test", "ports": [443], "set_headers": {"Authorization": "Bearer ${secret:API_TOKEN}"}}}]})},
     400, "rules[1] names a ${secret:NAME}: pods have no secrets"),
    ({"pod": "web"}, 400, "field \"pod\""),
    ({"pod": {"name": 1}}, 400, "pod.name"),
    ({"pod": {"name": "x" * 300}}, 400, "pod.name"),
    ({"pod": {"labels": {}}}, 400, "labels"),
    ({"extra": 1}, 400, "extra"),
])
def test_bad_registrations(node, proc, change, status, detail):
    r = node.post("/v1/pods", body(proc, **change))
    assert_problem(r, status, detail_has=detail)
    assert node.get("/v1/pods").body["pods"] == []
    assert proc.nft("list", "table", "inet", "cell").returncode != 0


def test_bad_bodies(node):
    for raw in (b"{", b"[]", b"null", b"x" * 100):
        r = node.call("POST", "/v1/pods", body=raw, headers={"Content-Type": "application/json"})
        assert r.status in (400, 422) and r.ctype == "application/problem+json", r


def test_never_the_daemons_own_netns(node, d):
    r = node.post("/v1/pods", {"id": "host", "pid": d.proc.pid, "startTime": start_time(d.proc.pid),
                               "policy": POLICY})
    assert_problem(r, 400, detail_has="own network namespace")
    # and a process of the host's netns that is not the daemon
    r = node.post("/v1/pods", {"id": "host2", "pid": os.getpid(), "startTime": start_time(os.getpid()),
                               "policy": POLICY})
    assert_problem(r, 400, detail_has="own network namespace")


def test_duplicates_refused_also_at_once(node, proc):
    b = body(proc)
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        codes = sorted(ex.map(lambda _: node.post("/v1/pods", b).status, range(6)))
    assert codes.count(201) == 1 and set(codes) <= {201, 409}, codes
    # the same netns under another id: refused too
    assert_problem(node.post("/v1/pods", body(proc)), 409, detail_has="network namespace")
    assert len(node.get("/v1/pods").body["pods"]) == 1


def test_off_without_pods(tmp_path):
    dd = Daemon(tmp_path / "state", extra_args=["--warm", "0"], unix_socket=True)
    dd.start()
    try:
        assert_problem(dd.client().get("/v1/pods"), 404, detail_has="--pods")
        assert not os.path.exists(os.path.join(dd.state, "node.token"))
    finally:
        dd.stop()


def test_the_node_default_policy(tmp_path):
    """--pod-policy: a pod that registers without a policy (cell-oci's
    oci.conf "pods": "all") gets the node's; a policy a tenant could not set
    stops the daemon at start, naming the option."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"tcp": {"to": "link-local"}}]}))
    dd = Daemon(tmp_path / "bad-state", extra_args=["--pods", "--warm", "0", "--pod-policy", str(bad)],
                unix_socket=True)
    with pytest.raises(RuntimeError) as e:
        dd.start(timeout=10)
    assert "--pod-policy" in str(e.value) and "rules[0]" in str(e.value)

    good = tmp_path / "policy.json"
    good.write_text(POLICY)
    dd = Daemon(tmp_path / "state", extra_args=["--pods", "--warm", "0", "--pod-policy", str(good)],
                unix_socket=True)
    dd.start()
    p = NetnsProc()
    try:
        with open(os.path.join(dd.state, "node.token")) as f:
            c = dm.Client(None, None, f.read().strip(), unix=os.path.join(dd.state, "cell.sock"))
        r = c.post("/v1/pods", body(p, policy=None))
        assert r.status == 201 and r.body["policy"] == "node", r
        assert "redirect to :15001" in p.nft("list", "table", "inet", "cell").stdout
        assert c.delete("/v1/pods/" + r.body["id"]).status == 204
    finally:
        p.close()
        dd.stop()
        dd.check_sanitizer()


def test_a_restarted_daemon_polices_its_pods_again(tmp_path):
    """A DaemonSet's update: while the daemon is down a pod keeps cell's
    rules with nothing behind them (no egress); the restarted daemon
    polices it again from STATE/pods (one copy of the rules), and drops
    the record of a pod whose init exited meanwhile."""
    dd = Daemon(tmp_path / "state", extra_args=["--pods", "--warm", "0"], unix_socket=True)
    dd.start()
    live, gone = NetnsProc(), NetnsProc()
    try:
        def client():
            with open(os.path.join(dd.state, "node.token")) as f:
                return dm.Client(None, None, f.read().strip(), unix=os.path.join(dd.state, "cell.sock"))
        regs = [client().post("/v1/pods", body(p)) for p in (live, gone)]
        assert [r.status for r in regs] == [201, 201], regs
        live_id, gone_id = regs[0].body["id"], regs[1].body["id"]
        dd.stop()
        assert wait_for(lambda: not helper_alive(regs[0].body["helperPid"]), 10)
        rules = live.nft("list", "table", "inet", "cell")
        assert rules.returncode == 0 and "redirect to :15001" in rules.stdout, "the rules went with the daemon"
        gone.close()
        dd.start()
        pods = client().get("/v1/pods").body["pods"]
        assert [p["id"] for p in pods] == [live_id], pods
        assert pods[0]["helperPid"] != regs[0].body["helperPid"] and helper_alive(pods[0]["helperPid"])
        again = live.nft("list", "table", "inet", "cell").stdout
        assert again.count("redirect to :15001") == 1, again
        assert not os.path.exists(os.path.join(dd.state, "pods", gone_id + ".json"))
        assert client().delete("/v1/pods/" + live_id).status == 204
        assert not os.path.exists(os.path.join(dd.state, "pods", live_id + ".json"))
    finally:
        live.close()
        gone.close()
        dd.stop()
        dd.check_sanitizer()


# ---- what a pod's egress costs is the pod's (its helper in the pod's cgroups) ----------------
NET = netfake.claim("198.18.50", "test_daemon_pods")


class PodCgroup:
    """A cgroup of its own for a fake sandbox init (what cell-oci makes at
    the spec's cgroupsPath): on v2 one directory, on v1 one in each of the
    memory, pids, cpu and freezer hierarchies."""

    def __init__(self):
        self.rel = "/cell-test-pod-" + os.urandom(4).hex()
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self.dirs = {"v2": "/sys/fs/cgroup" + self.rel}
        else:
            self.dirs = {c: "/sys/fs/cgroup/%s%s" % (c, self.rel) for c in ("memory", "pids", "cpu", "freezer")
                         if os.path.isdir("/sys/fs/cgroup/" + c)}
        for d in self.dirs.values():
            os.mkdir(d)
        if not os.path.exists(os.path.join(self.pids_dir(), "pids.max")):
            self.close()
            pytest.skip("no pids controller in %s (cgroup v2 with pids not enabled in the root's "
                        "cgroup.subtree_control)" % self.pids_dir())

    def pids_dir(self):
        return self.dirs.get("pids") or self.dirs.get("v2", "/nonexistent")

    def add(self, pid):
        for d in self.dirs.values():
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def read(self, name):
        with open(os.path.join(self.pids_dir(), name)) as f:
            return f.read()

    def set_pids_max(self, n):
        with open(os.path.join(self.pids_dir(), "pids.max"), "w") as f:
            f.write(str(n))

    def close(self):
        for d in self.dirs.values():
            # Whatever is left (a helper the daemon has not yet reaped) dies first.
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), 9)
            except OSError:
                pass
            wait_for(lambda: _rmdir(d), 10)


def _rmdir(d):
    try:
        os.rmdir(d)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def cgroups_of(pid):
    """{"pids": "/x", "memory": "/x", "v2": "/x", ...} of a process."""
    out = {}
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else ["v2"]):
                out[c] = path
    return out


class WiredPod:
    """A fake pod with CNI's network: eth0 (a veth) with an address and a
    default route to the host end, in a cgroup of its own."""

    def __init__(self, n):
        self.cg = PodCgroup()           # first: it may skip the test, with nothing to undo
        self.proc = NetnsProc()
        self.cg.add(self.proc.pid)
        self.host_end = "k8sc" + os.urandom(3).hex()
        self.host_ip, self.ip = "%s.%d" % (NET, 4 * n + 1), "%s.%d" % (NET, 4 * n + 2)
        netfake.ip("link", "add", self.host_end, "type", "veth", "peer", "name", "eth0", "netns",
                   "/proc/%d/ns/net" % self.proc.pid)
        netfake.ip("addr", "add", self.host_ip + "/30", "dev", self.host_end)
        netfake.ip("link", "set", self.host_end, "up")
        for args in (["addr", "add", self.ip + "/30", "dev", "eth0"], ["link", "set", "eth0", "up"],
                     ["link", "set", "lo", "up"], ["route", "add", "default", "via", self.host_ip]):
            subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % self.proc.pid, "ip"] + args, check=True, timeout=20)

    def connect(self, addr, port, n):
        """n connections from the pod, held open; each sends a byte and
        reads its echo.  Prints how many were echoed, then holds them all
        until its stdin closes."""
        script = r"""
import socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, ok = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(20)
    try:
        s.connect((addr, port)); s.sendall(b"x")
        ok += s.recv(1) == b"x"
    except OSError:
        pass
    held.append(s)
print(ok, flush=True)
sys.stdin.read()
"""
        p = subprocess.Popen(["nsenter", "--net=/proc/%d/ns/net" % self.proc.pid, "python3", "-c", script, addr,
                              str(port), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return p, int(p.stdout.readline())

    def close(self):
        self.proc.close()
        netfake.ip("link", "del", self.host_end, check=False)
        self.cg.close()


@pytest.fixture
def echo_server():
    """An echo server on the host (on lo, reached through a pod's veth)."""
    addr = "%s.254" % NET
    netfake.ip("addr", "add", addr + "/32", "dev", "lo")
    srv = netfake.TCPServer((addr, 0), netfake.Echo)
    netfake.start(srv)
    yield srv.server_address
    netfake.stop(srv)
    netfake.ip("addr", "del", addr + "/32", "dev", "lo", check=False)


@pytest.fixture
def wired():
    made = []

    def make():
        made.append(WiredPod(len(made)))
        return made[-1]
    yield make
    for p in made:
        p.close()


def test_the_pods_egress_helper_is_charged_to_the_pods_cgroup(node, d, wired, echo_server):
    """The helper runs in the sandbox init's cgroups (what the kernel says,
    not what the caller said), not the daemon's: a pod whose flows hold many
    connections spends its own cgroup's pids (threads) and memory."""
    pod = wired()
    addr, port = echo_server
    policy = json.dumps({"rules": [{"tcp": {"to": addr + "/32", "ports": [port]}}]})
    r = node.post("/v1/pods", body(pod.proc, policy=policy))
    assert r.status == 201, r
    helper = r.body["helperPid"]
    assert r.body["helperCgroup"] == pod.cg.rel, r.body
    mine, daemons = cgroups_of(helper), cgroups_of(d.proc.pid)
    for c in pod.cg.dirs:
        assert mine[c] == pod.cg.rel, (c, mine)
        assert daemons[c] != pod.cg.rel
    before = int(pod.cg.read("pids.current"))
    client, ok = pod.connect(addr, port, 20)
    try:
        assert ok == 20
        # Each relayed flow holds two of the helper's threads: in the pod's count.
        after = int(pod.cg.read("pids.current"))
        assert after >= before + 20, (before, after)
        assert len(os.listdir("/proc/%d/task" % helper)) >= 20
    finally:
        client.stdin.close()
        client.wait(timeout=30)


def test_a_pods_pids_limit_limits_its_own_egress_only(node, wired, echo_server):
    """A pod whose cgroup allows few tasks: its helper cannot take more
    threads than the pod may (its flows beyond that fail), while another
    pod's egress on the same node still works."""
    small, other = wired(), wired()
    addr, port = echo_server
    policy = json.dumps({"rules": [{"tcp": {"to": addr + "/32", "ports": [port]}}]})
    for p in (small, other):
        r = node.post("/v1/pods", body(p.proc, policy=policy))
        assert r.status == 201, r
    small.cg.set_pids_max(int(small.cg.read("pids.current")) + 4)
    client, ok = small.connect(addr, port, 10)
    client.stdin.close()
    client.wait(timeout=60)
    assert ok < 10, "the pod's helper made more threads than the pod's pids.max allows"
    events = os.path.join(small.cg.pids_dir(), "pids.events")
    if os.path.exists(events):
        assert "max 0" not in small.cg.read("pids.events"), "the pod's limit was never what stopped its helper"
    client, ok = other.connect(addr, port, 3)
    client.stdin.close()
    client.wait(timeout=30)
    assert ok == 3, "another pod's egress suffered from the first pod's limit"


# ---- an operator's policy change: PUT /v1/pods/{id}/policy ------------------------------------
def test_an_operator_changes_a_running_pods_policy(node, d, wired, echo_server):
    """The pod first may not reach the echo server; after the operator's
    PUT its new flows may; the change is kept (GET, the record), audited,
    and the node's default is no longer what applies."""
    pod = wired()
    addr, port = echo_server
    r = node.post("/v1/pods", body(pod.proc))
    assert r.status == 201, r
    pid = r.body["id"]
    client, ok = pod.connect(addr, port, 1)
    client.stdin.close()
    client.wait(timeout=30)
    assert ok == 0, "the registered policy (192.0.2.1:80 only) let the pod reach the echo server"
    allow = {"rules": [{"tcp": {"to": addr + "/32", "ports": [port]}}]}
    r = node.put("/v1/pods/%s/policy" % pid, allow)
    assert r.status == 200 and r.body["policy"] == "operator" and r.body["id"] == pid, r
    assert node.get("/v1/pods/" + pid).body["policy"] == "operator"
    with open(os.path.join(d.state, "pods", pid + ".json")) as f:
        rec = json.load(f)
    assert json.loads(rec["policy"]) == allow and rec["byOperator"] is True
    client, ok = pod.connect(addr, port, 1)
    client.stdin.close()
    client.wait(timeout=30)
    assert ok == 1, "the operator's policy did not apply to a new flow"
    # The node token's requests are tenant "pods"'s, which a token of that tenant reads.
    recs = d.tenant("pods").get("/v1/audit?kind=request&limit=1000").body["records"]
    assert any(a.get("method") == "PUT" and a.get("pod") == {"id": pid} and a.get("status") == 200
               and a.get("token") == "node" for a in recs), "the change is not in the audit"


@pytest.mark.parametrize("raw, status, detail", [
    (b"{", 400, None),
    (b"[]", None, None),
    (b"null", None, None),
    (json.dumps({"rules": "x"}).encode(), 400, "request's body"),
    (json.dumps({"rules": [{"tcp": {"to": "link-local"}}]}).encode(), 403, "rules[0]"),
    (json.dumps({"rules": [{"http": {"host": "a.test", "ports": [443],
                                     "set_headers": {"X-Key": "${secret:K}"}}}]}).encode(), 400, "rules[0] names"),
    (json.dumps({"rules": [], "pad": "x" * (70 << 10)}).encode(), None, None),
])
def test_bad_policy_changes(node, proc, raw, status, detail):
    r = node.post("/v1/pods", body(proc))
    assert r.status == 201, r
    pid = r.body["id"]
    bad = node.call("PUT", "/v1/pods/%s/policy" % pid, body=raw, headers={"Content-Type": "application/json"})
    assert bad.ctype == "application/problem+json", bad
    assert bad.status == status if status else bad.status in (400, 413, 422), bad
    if detail:
        assert detail in bad.body["detail"], bad
    # the pod keeps its policy
    got = node.get("/v1/pods/" + pid).body
    assert got["policy"] == "annotation" and got["helperPid"] == r.body["helperPid"]


def test_policy_changes_unknown_or_not_allowed(node, d, node_token):
    allow = {"rules": []}
    assert_problem(node.put("/v1/pods/nosuchpod/policy", allow), 404)
    assert_problem(node.put("/v1/pods/..%2F..%2Fetc/policy", allow), 404)
    assert_problem(d.tenant("podpusher").put("/v1/pods/x/policy", allow), 403)
    assert_problem(d.client(node_token, admin=False).put("/v1/pods/x/policy", allow), 401)


def test_concurrent_policy_changes_and_a_change_racing_delete(node, d):
    """Eight PUTs at once all apply, one at a time (the record holds one of
    them whole); PUTs racing the pod's DELETE answer 200 or 404, and
    nothing of the pod is left after."""
    p = NetnsProc()
    try:
        r = node.post("/v1/pods", body(p))
        assert r.status == 201, r
        pid, helper = r.body["id"], r.body["helperPid"]
        policies = [{"rules": [{"tcp": {"to": "192.0.2.1/32", "ports": [80 + i]}}]} for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            got = list(ex.map(lambda pol: node.put("/v1/pods/%s/policy" % pid, pol).status, policies))
        assert got == [200] * 8, got
        with open(os.path.join(d.state, "pods", pid + ".json")) as f:
            assert json.loads(json.load(f)["policy"]) in policies
        assert helper_alive(helper)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            puts = [ex.submit(node.put, "/v1/pods/%s/policy" % pid, policies[i]) for i in range(6)]
            dele = ex.submit(node.delete, "/v1/pods/" + pid)
            statuses = [f.result().status for f in puts]
        assert dele.result().status == 204
        assert set(statuses) <= {200, 404}, statuses
        assert node.get("/v1/pods/" + pid).status == 404
        assert not os.path.exists(os.path.join(d.state, "pods", pid + ".json")), "a PUT wrote the record back"
        assert wait_for(lambda: not helper_alive(helper), 10)
    finally:
        p.close()
