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
from daemon import Daemon, assert_problem, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
                                reason="needs root, nft and unshare")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    state = tmp_path_factory.mktemp("pods") / "state"
    dd = Daemon(state, extra_args=["--pods", "--warm", "0"], unix_socket=True)
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
