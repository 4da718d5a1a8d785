"""Egress under Kubernetes (issue 15; docs/kubernetes.md "Egress: the node
daemon"), through the CRI as kubelet drives it: a private containerd with
its CNI bridge on 198.18.213.0/24 in a network namespace of its own
(oci.Containerd(cri=True)), the node daemon (cell serve --pods) in that
namespace, and cell-oci finding the daemon through CELL_OCI_CONFIG, which
containerd passes on to its shims and they to cell-oci.

A pod whose cell.dev/egress-policy allows one port of the bridge's host side
reaches it (through the relay: the listener sees the host side's own
address), and nothing else: another port is refused and audited as denied
(tenant pods, cell pod-ID), UDP and DNS to the host side never arrive there.
From inside the pod, changing the rules or routes and opening a raw socket
fail, and the rules are still there.  A pod without the annotation has the
plain CNI network.  A bad annotation fails RunPodSandbox naming it; with the
daemon down, a pod that asks for a policy is refused.  Removing the pod
removes its registration and its egress helper."""
import json
import os
import subprocess
import uuid

import pytest

import criclient
import oci
from daemon import Daemon, make_tenant_token, wait_for
from test_oci_cri import IMAGE, Listener, Node, exec_sync, status_of

pytestmark = [
    pytest.mark.skipif(criclient.missing() is not None, reason=criclient.missing() or ""),
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"),
                       reason="CNI plugins missing (scripts/install-deps.sh: containernetworking-plugins)"),
    pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None, reason=oci.runtime_missing("cell-oci") or ""),
]

ANNOTATION = "cell.dev/egress-policy"
GW = oci.CRI_GATEWAY


class EgressNode:
    def __init__(self, ctd, d, conf):
        self.ctd, self.d, self.conf = ctd, d, conf
        self.node = Node(ctd)
        self.cri = self.node.cri
        self.admin = d.client()
        tok, _ = make_tenant_token(self.admin, "pods")
        self.audit = d.client(tok, admin=False)

    def image(self):
        return self.node.image(IMAGE, oci.busybox_image_tar)

    def pod_config(self, name, policy=None, annotations=None):
        cfg = {"metadata": {"name": name, "uid": str(uuid.uuid4()), "namespace": "egress"}, "hostname": name,
               "log_directory": os.path.join(self.ctd.dir, "logs", name),
               "linux": {"cgroup_parent": self.ctd.cgroup_parent}, "annotations": dict(annotations or {})}
        if policy is not None:
            cfg["annotations"][ANNOTATION] = policy if isinstance(policy, str) else json.dumps(policy)
        return cfg

    def run_pod(self, cfg):
        return self.cri.runtime("RunPodSandbox", {"config": cfg, "runtime_handler": "cell"}).pod_sandbox_id

    def remove_pod(self, sid):
        self.cri.remove_pod(sid)

    def container(self, sid, cfg, args, mounts=()):
        ccfg = {"metadata": {"name": "main"}, "image": {"image": self.image()}, "command": args,
                "log_path": "main.log", "mounts": list(mounts)}
        cid = self.cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": ccfg,
                                                   "sandbox_config": cfg}).container_id
        self.cri.runtime("StartContainer", {"container_id": cid})
        assert status_of(self.cri, cid).status.state == 1
        return cid

    def pods(self):
        return self.admin.get("/v1/pods").body["pods"]


@pytest.fixture(scope="module")
def en(tmp_path_factory):
    base = tmp_path_factory.mktemp("egress")
    conf = base / "oci.conf"
    ctd = oci.Containerd(base / "containerd", cri=True)
    ctd.env["CELL_OCI_CONFIG"] = str(conf)
    d = None
    node = None
    try:
        ctd.start()
        # the bridge CNI would make at the first pod, made now so that the
        # listeners (whose ports the policies name) can bind its address
        for argv in (["link", "add", "cri0", "type", "bridge"], ["addr", "add", GW + "/24", "dev", "cri0"],
                     ["link", "set", "cri0", "up"]):
            oci.run_bounded(["ip", "-n", ctd.netns] + argv).check()
        # the node daemon where the bridge's host side is; the host side's
        # address is its own, which a tenant's policy may name only with
        # --allow-tenant-dest
        d = Daemon(base / "state", netns=ctd.netns,
                   extra_args=["--pods", "--warm", "0", "--allow-tenant-dest", GW + "/32"])
        d.start()
        conf.write_text(json.dumps({"socket": d.sock_path, "tokenFile": os.path.join(d.state, "node.token")}))
        node = EgressNode(ctd, d, conf)
        yield node
    finally:
        if node:
            node.cri.close()
        if d:
            d.stop(check=False)
        problems = ctd.stop()
        assert not problems, problems
        if d:
            d.check_clean()
            d.check_sanitizer()


def netns_nft(pid, *args):
    return subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid, "nft"] + list(args), capture_output=True,
                          text=True, timeout=oci.STEP_TIMEOUT)


def audit(en, cell):
    return en.audit.get("/v1/audit", query={"kind": "net", "cell": cell, "limit": 1000}).body["records"]


class Sink:
    """A UDP or TCP socket on an address of the bridge's host side
    (containerd's netns): the peers that sent or connected to it before a
    marker the test sends last (so no wait is timed: whatever the pod sent
    earlier is in before the marker).  UDP's marker is its payload; TCP's
    is a connection from the sink's own address, so a TCP sink serves only
    where nothing is relayed (the relay connects from that address too)."""

    SCRIPT = r"""
import socket, sys
addr, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET,
                  socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
s.bind((addr, port)); s.settimeout(float(sys.argv[4]))
if kind == "tcp":
    s.listen(8)
print(s.getsockname()[1], flush=True)
got = []
while True:
    if kind == "udp":
        data, peer = s.recvfrom(4096)
        if data == b"MARKER":
            break
    else:
        c, peer = s.accept()
        c.close()
        if peer[0] == addr:
            break
    got.append(peer[0])
print(",".join(got), flush=True)
"""
    MARKER = r"""
import socket, sys
addr, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "udp":
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"MARKER", (addr, port))
else:
    socket.create_connection((addr, port), source_address=(addr, 0))
"""

    def __init__(self, ctd, addr, kind, port=0):
        self.ctd, self.addr, self.kind = ctd, addr, kind
        self.p = subprocess.Popen(ctd.netns_exec("/usr/bin/python3", "-c", self.SCRIPT, addr, str(port), kind,
                                                 str(oci.STEP_TIMEOUT)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.strip().isdigit(), (line, self.p.stderr.read())
        self.port = int(line)

    def received(self):
        """Send the marker; the peers that came before it."""
        subprocess.run(self.ctd.netns_exec("/usr/bin/python3", "-c", self.MARKER, self.addr, str(self.port),
                                           self.kind), check=True, timeout=oci.STEP_TIMEOUT)
        out, err = self.p.communicate(timeout=oci.STEP_TIMEOUT + 5)
        assert self.p.returncode == 0, err
        return [a for a in out.strip().split(",") if a]

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


# The host's nft and python3, run inside the pod by the host's dynamic
# loader from a read-only bind of /usr (busybox has neither).
LOADER = "/host/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
LIBS = "/host/usr/lib/x86_64-linux-gnu:/host/usr/lib"


def host_tool(*argv):
    return [LOADER, "--library-path", LIBS] + ["/host" + argv[0]] + list(argv[1:])


SEND_UDP = ("import socket, sys; a = sys.argv[1]; socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET, "
            "socket.SOCK_DGRAM).sendto(b'x', (a, int(sys.argv[2])))")


def send_udp(en, cid, addr, port):
    """One datagram from inside the pod (busybox's nc has no UDP): the
    host's python3; returns ExecSync's answer."""
    return exec_sync(en.cri, cid, ["env", "PYTHONHOME=/host/usr"] +
                     host_tool("/usr/bin/python3", "-c", SEND_UDP, addr, str(port)))


def test_a_policed_pod_reaches_what_its_policy_allows_and_nothing_else(en):
    allowed, denied = Listener(en.ctd, GW), Listener(en.ctd, GW)
    udp = Sink(en.ctd, GW, "udp")
    udp_ok = Sink(en.ctd, GW, "udp")
    dns = Sink(en.ctd, GW, "udp", 53)
    policy = {"rules": [{"tcp": {"to": GW + "/32", "ports": [allowed.port]}},
                        {"udp": {"to": GW + "/32", "ports": [udp_ok.port]}}]}
    cfg = en.pod_config("policed", policy)
    sid = None
    try:
        sid = en.run_pod(cfg)
        pods = en.pods()
        assert [p["id"] for p in pods] == [sid], pods
        pod = pods[0]
        assert pod["auditId"] == "pod-" + sid[:16] and pod["name"] == "policed" and pod["namespace"] == "egress"
        helper = pod["helperPid"]
        assert os.path.exists("/proc/%d" % helper)
        # the rules are in the pod's netns before any container of it exists
        rules = netns_nft(pod["pid"], "list", "table", "inet", "cell")
        assert rules.returncode == 0 and "redirect to :15001" in rules.stdout, rules
        ip = en.cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid}).status.network.ip
        mounts = [{"container_path": "/host/usr", "host_path": "/usr", "readonly": True}]
        # a server in the pod: connections made to it are answered (CNI's
        # eth0 and routes stay; only replies may leave by it)
        cid = en.container(sid, cfg, ["sh", "-c", "echo pong | nc -l -p 8080; sleep 100000"], mounts)
        got = subprocess.run(en.ctd.netns_exec(
            "/usr/bin/python3", "-c", "import socket,sys; s=socket.create_connection((sys.argv[1], 8080), 20); "
            "print(s.recv(100).decode().strip())", ip), capture_output=True, text=True, timeout=oci.STEP_TIMEOUT + 5)
        assert got.stdout.strip() == "pong", got

        # the allowed port: reached through the relay, which connects from
        # the host side (the pod's own address never reaches the listener)
        r = exec_sync(en.cri, cid, ["nc", GW, str(allowed.port)])
        assert b"hello from the host side" in r.stdout, r
        assert allowed.peer() == GW
        # another port of the same host: refused by the relay, never connected
        r = exec_sync(en.cri, cid, ["sh", "-c", "nc -w 5 %s %d </dev/null; echo rc=$?" % (GW, denied.port)])
        assert b"hello" not in r.stdout, r
        # UDP to another port of the host side and a DNS query to it:
        # neither arrives there (the sends themselves succeed)
        r = send_udp(en, cid, GW, udp.port)
        assert r.exit_code == 0, r
        exec_sync(en.cri, cid, ["sh", "-c", "nslookup -timeout=1 example.com %s; true" % GW])
        assert udp.received() == [] and dns.received() == []
        # the allowed UDP port: relayed from the pod's own address (pod mode
        # marks it for the transparent relay), arriving from the host side
        r = send_udp(en, cid, GW, udp_ok.port)
        assert r.exit_code == 0, r
        assert udp_ok.received() == [GW]

        # IPv6: given addresses on both sides (CNI gave none), the pod's
        # IPv6 TCP and UDP reach nothing; the host side can still talk to it
        v6h, v6p = "fd00:cafe::1", "fd00:cafe::2"
        oci.run_bounded(["ip", "-n", en.ctd.netns, "addr", "add", v6h + "/64", "dev", "cri0", "nodad"]).check()
        subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pod["pid"], "ip", "addr", "add", v6p + "/64", "dev",
                        "eth0", "nodad"], check=True, timeout=oci.STEP_TIMEOUT)
        sink6, usink6 = Sink(en.ctd, v6h, "tcp"), Sink(en.ctd, v6h, "udp")
        try:
            exec_sync(en.cri, cid, ["sh", "-c", "nc -w 1 %s %d </dev/null; true" % (v6h, sink6.port)])
            send_udp(en, cid, v6h, usink6.port)
            assert sink6.received() == [] and usink6.received() == []
        finally:
            sink6.close()
            usink6.close()

        # audited as the pod's: the allowed flow and the denied one
        def verdicts():
            return {(r.get("dst"), r.get("verdict")) for r in audit(en, pod["auditId"])}
        want = {("%s:%d" % (GW, allowed.port), "allow"), ("%s:%d" % (GW, denied.port), "deny")}
        assert wait_for(lambda: want <= verdicts(), 10), verdicts()
        recs = audit(en, pod["auditId"])
        assert all(r["tenant"] == "pods" and r["pod"]["id"] == sid for r in recs), recs
        assert not any(r.get("dst", "").startswith(ip + ":") for r in recs)

        # from inside: the rules, routes and raw sockets are out of reach
        # (cell's seccomp filter refuses netfilter's netlink outright; without
        # it, no CAP_NET_ADMIN over a netns of the initial user namespace)
        r = exec_sync(en.cri, cid, host_tool("/usr/sbin/nft", "flush", "ruleset"))
        assert r.exit_code != 0 and (b"Protocol not supported" in r.stderr or b"Operation not permitted" in r.stderr), r
        r = exec_sync(en.cri, cid, host_tool("/usr/sbin/nft", "delete", "table", "inet", "cell"))
        assert r.exit_code != 0, r
        r = exec_sync(en.cri, cid, ["ip", "route", "replace", "default", "via", GW, "dev", "eth0"])
        assert r.exit_code != 0, r
        r = exec_sync(en.cri, cid, ["sh", "-c", "PYTHONHOME=/host/usr " + " ".join(host_tool(
            "/usr/bin/python3", "-c",
            "'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'"))])
        assert r.exit_code != 0 and b"PermissionError" in r.stderr, r
        after = netns_nft(pod["pid"], "list", "table", "inet", "cell")
        assert after.returncode == 0 and after.stdout == rules.stdout
        # and the allowed port still is the only way out
        r = exec_sync(en.cri, cid, ["sh", "-c", "nc -w 5 %s %d </dev/null; true" % (GW, denied.port)])
        assert b"hello" not in r.stdout

        # removing the pod removes its registration and its helper
        en.remove_pod(sid)
        sid = None
        assert en.pods() == []
        assert wait_for(lambda: not os.path.exists("/proc/%d" % helper), 10)
    finally:
        for x in (allowed, denied, udp, udp_ok, dns):
            x.close()
        if sid:
            en.remove_pod(sid)


def test_a_pod_without_the_annotation_has_the_plain_cni_network(en):
    lis = Listener(en.ctd, GW)
    cfg = en.pod_config("plain")
    sid = None
    try:
        sid = en.run_pod(cfg)
        assert en.pods() == []
        ip = en.cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid}).status.network.ip
        cid = en.container(sid, cfg, ["sleep", "100000"])
        r = exec_sync(en.cri, cid, ["nc", GW, str(lis.port)])
        assert b"hello from the host side" in r.stdout, r
        assert lis.peer() == ip        # straight over the bridge, from the pod's address
        pid = json.loads(status_of(en.cri, cid).info["info"])["pid"]
        assert netns_nft(pid, "list", "table", "inet", "cell").returncode != 0
        # the policed test's IPv6 check, here reaching its listener (a control)
        v6h, v6p = "fd00:cafe:1::1", "fd00:cafe:1::2"
        oci.run_bounded(["ip", "-n", en.ctd.netns, "addr", "add", v6h + "/64", "dev", "cri0", "nodad"]).check()
        subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid, "ip", "addr", "add", v6p + "/64", "dev", "eth0",
                        "nodad"], check=True, timeout=oci.STEP_TIMEOUT)
        sink6 = Sink(en.ctd, v6h, "tcp")
        try:
            exec_sync(en.cri, cid, ["sh", "-c", "nc -w 3 %s %d </dev/null; true" % (v6h, sink6.port)])
            assert sink6.received() == [v6p]
        finally:
            sink6.close()
    finally:
        lis.close()
        if sid:
            en.remove_pod(sid)


def egress_helpers():
    """Pids of cell-egress processes (the helpers run as an exec'd memfd)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/comm" % p) as f:
                    if "egress" in f.read():
                        out.append(int(p))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("policy, needle", [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"rules": 5}', "\"rules\" must be an array"),
    (json.dumps({"rules": [], "pad": "x" * (70 << 10)}), "KiB"),
    (json.dumps({"rules": [{"tcp": {"to": GW, "ports": "70000"}}]}), "rules[0]"),
    # a pod's policy is a tenant's: the node's metadata address is refused
    (json.dumps({"rules": [{"tcp": {"to": "link-local"}}]}), "rules[0]"),
])
def test_a_bad_annotation_fails_run_pod_sandbox(en, policy, needle):
    before = egress_helpers()
    with pytest.raises(criclient.CRIError) as e:
        sid = en.run_pod(en.pod_config("bad", policy))
        en.remove_pod(sid)
    assert ANNOTATION in e.value.details and needle in e.value.details, e.value.details
    assert en.pods() == []
    assert set(egress_helpers()) <= set(before)


def test_with_the_daemon_down_a_pod_that_asks_for_a_policy_is_refused(en):
    en.d.stop(check=False)
    with pytest.raises(criclient.CRIError) as e:
        sid = en.run_pod(en.pod_config("nodaemon", {"rules": []}))
        en.remove_pod(sid)
    assert ANNOTATION in e.value.details and "cannot connect to the node daemon" in e.value.details, e.value.details
    # a pod without one still runs
    sid = en.run_pod(en.pod_config("nodaemon-plain"))
    en.remove_pod(sid)
