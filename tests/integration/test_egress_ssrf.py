"""A tenant's network policy must not turn the daemon into a client of the
host's own services (issue 9, SSRF through policy): the daemon itself sends
a "decide" rule's webhook request and forwards the cell's DNS queries to the
"dns" rule's upstreams, so for non-admin tokens those destinations are
screened: loopback, link-local, unspecified, multicast/broadcast, this
host's own addresses and the cells' veth range are refused unless the
operator allows them (cell serve --allow-tenant-dest CIDR).  Addresses in
the policy are refused when it is set (403 naming the field); names in
webhook URLs are screened when the daemon connects."""
import json
import socket
import subprocess
import threading
import uuid

import pytest

import daemon as dm
import netfake

# test_an_address_the_host_adds_is_host_self_at_once: the host's own
# addresses on lo, this module's range.
NET = netfake.claim("198.18.47", __name__)
WARM_IP, NEW_IP, PORT = NET + ".10", NET + ".20", 7

BAD_UPSTREAMS = ["127.0.0.1", "127.0.0.53:53", "[::1]", "169.254.169.254", "0.0.0.0", "10.213.0.1", "224.0.0.251"]
BAD_URLS = ["http://127.0.0.1:8080/decide", "http://[::1]:9/x", "http://169.254.169.254/latest/meta-data",
            "http://localhost:9/x", "http://0.0.0.0:80/", "https://127.0.0.2/x", "http://10.213.0.5:80/"]


def host_addresses():
    """This host's own non-loopback IPv4 addresses (ip -4 -o addr)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not addr.startswith("127."):
                found.append(addr)
    return found


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("ssrf"))


@pytest.fixture(scope="module")
def tenant(d, admin):
    return d.tenant("ssrf-" + uuid.uuid4().hex[:6])


def create(client, cells, policy, expect=201):
    r = client.post("/v1/cells", {"resources": {"memory": "128M"}, "policy": policy})
    if r.status == 201:
        cells.append(r.body["id"])
    assert r.status == expect, r
    return r


def dns_policy(upstream):
    return {"rules": [{"dns": {"upstreams": [upstream]}}]}


def decide_policy(url, to="192.0.2.1"):
    return {"rules": [{"decide": {"url": url, "to": to, "ports": 80}}]}


@pytest.mark.parametrize("upstream", BAD_UPSTREAMS)
def test_tenant_dns_upstream_at_the_host_refused(tenant, admin, cells, upstream):
    r = create(tenant, cells, dns_policy(upstream), expect=403)
    dm.assert_problem(r, 403, detail_has=["rules[0].dns.upstreams[0]", "--allow-tenant-dest"])
    # The admin is the operator: its policies may name the host.
    create(admin, cells, dns_policy(upstream))


@pytest.mark.parametrize("url", BAD_URLS)
def test_tenant_webhook_at_the_host_refused(tenant, admin, cells, url):
    r = create(tenant, cells, decide_policy(url), expect=403)
    dm.assert_problem(r, 403, detail_has="rules[0].decide.url")
    create(admin, cells, decide_policy(url))


def test_tenant_policy_at_the_hosts_own_addresses_refused(tenant, cells):
    addrs = host_addresses()
    if not addrs:
        pytest.skip("this host has no non-loopback IPv4 address")
    for a in addrs:
        dm.assert_problem(create(tenant, cells, dns_policy(a), expect=403), 403, detail_has="this host")
        dm.assert_problem(create(tenant, cells, decide_policy("http://%s:8080/d" % a), expect=403), 403)


def test_put_policy_screened_too(tenant, cells):
    cid = create(tenant, cells, None).body["id"]
    r = tenant.put("/v1/cells/%s/policy" % cid, decide_policy("http://127.0.0.1:1/x"))
    dm.assert_problem(r, 403, detail_has="rules[0].decide.url")
    r = tenant.put("/v1/cells/%s/policy" % cid, dns_policy("169.254.169.254"))
    dm.assert_problem(r, 403, detail_has="link-local")
    # Other destinations are the tenant's business.
    r = tenant.put("/v1/cells/%s/policy" % cid, dns_policy("192.0.2.53"))
    assert r.status == 200, r


def test_https_webhooks_accepted(tenant, cells):
    create(tenant, cells, decide_policy("https://hooks.example.test/decide"))
    r = create(tenant, cells, decide_policy("ftp://hooks.example.test/decide"), expect=400)
    dm.assert_problem(r, 400, detail_has="https://")


def probe_connect(client, cid, dst="192.0.2.1", port=80):
    code = ("import socket\ns=socket.socket(); s.settimeout(3)\n"
            "try: s.connect((%r, %d))\nexcept OSError as e: print(e)\n") % (dst, port)
    r = client.post("/cells/%s/v1/processes/run" % cid,
                    {"command": "/usr/bin/python3", "args": ["-c", code], "timeoutMs": 20000})
    assert r.status == 200, r


def test_webhook_name_resolving_to_the_host_screened_at_connect(tenant, admin, cells):
    # A name passes validation; the address it resolves to is checked when
    # the daemon connects, so a name for this host gets no request.
    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
    except OSError:
        pytest.skip("this host's name does not resolve")
    if not (addr.startswith("127.") or addr in host_addresses()):
        pytest.skip("this host's name resolves to %s, not one of its own addresses" % addr)
    # Bound to every address: the host's name may resolve to any of them.
    hook = netfake.DecideHook(bind="0.0.0.0")
    try:
        url = "http://%s:%d/allow/%s" % (name, hook.port, uuid.uuid4().hex[:8])
        cid = create(tenant, cells, decide_policy(url)).body["id"]
        probe_connect(tenant, cid)
        assert hook.requests == [] and hook.connections == 0, hook.requests
        # The same policy from the admin reaches the webhook: the test can fail.
        cid = create(admin, cells, decide_policy(url)).body["id"]
        probe_connect(admin, cid)
        assert dm.wait_for(lambda: hook.requests, 10), "the admin's webhook was never called"
    finally:
        hook.close()


def test_operator_allows_a_destination(tmp_path):
    with dm.served(tmp_path / "allow", ["--allow-tenant-dest", "127.0.0.1/32"]) as dd:
        made = []
        try:
            tenant = dd.tenant("ssrf-allowed")
            create(tenant, made, decide_policy("http://127.0.0.1:8080/decide"))
            create(tenant, made, dns_policy("127.0.0.1"))
            # Only what the operator named: link-local stays refused.
            dm.assert_problem(create(tenant, made, dns_policy("169.254.169.254"), expect=403), 403)
        finally:
            for cid in made:
                dd.client().delete("/v1/cells/%s" % cid)


@pytest.mark.parametrize("bad", ["", "nonsense", "127.0.0.1/33", "::1/129", "10.0.0.0/"])
def test_bad_allow_tenant_dest_is_a_usage_error(tmp_path, bad):
    p = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "s"), "serve", "--listen", "", "--socket", "",
                        "--allow-tenant-dest", bad], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2, p
    assert "--allow-tenant-dest" in p.stderr, p.stderr


# The cell's side: a decision (which reads the host's address list when it
# is stale) just before the host adds NEW_IP, then, once told, one attempt.
HOTPLUG_PROBE = r'''
import json, os, socket, sys, time

def attempt(ip, port):
    try:
        s = socket.create_connection((ip, port), timeout=5)
    except OSError as e:
        return "connect " + type(e).__name__
    try:
        s.settimeout(5)
        s.sendall(b"ping")
        return "answer" if s.recv(16) else "eof"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()

warm, new, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"warm": attempt(warm, port)}
open("/tmp/hotplug-ready", "w").close()
for _ in range(4000):                       # 20 s at most
    if os.path.exists("/tmp/hotplug-go"):
        break
    time.sleep(0.005)
else:
    out["go"] = "never came"
out["first"] = attempt(new, port)
print(json.dumps(out))
'''


def test_an_address_the_host_adds_is_host_self_at_once(tenant, cells):
    """A catch-all never reaches the host (host-self), and the engine's list
    of the host's addresses has no window: the cell's very first attempt to
    an address the host has just added is refused.  The list was re-read
    about once a second, so right after an `ip addr add` a catch-all
    reached the new address for up to that long; the engine now re-reads it
    on the kernel's RTM_NEWADDR (test_net_policy.c:
    host_self_follows_address_changes)."""
    net = netfake.Net((WARM_IP,)).up()
    server = None
    try:
        net.serve(netfake.TCPServer((WARM_IP, PORT), netfake.Echo))
        cid = create(tenant, cells, {"rules": [{"tcp": {}}]}).body["id"]
        done = {}

        def run_probe():
            done["r"] = tenant.post("/cells/%s/v1/processes/run" % cid,
                                    {"command": "/usr/bin/python3",
                                     "args": ["-c", HOTPLUG_PROBE, WARM_IP, NEW_IP, str(PORT)], "timeoutMs": 60000},
                                    timeout=90)

        t = threading.Thread(target=run_probe)
        t.start()
        try:
            ready = dm.wait_for(lambda: tenant.get("/cells/%s/v1/fs/stat" % cid,
                                                   query={"path": "/tmp/hotplug-ready"}).status == 200, 30)
            assert ready, "the probe never got ready"
            netfake.ip("addr", "replace", NEW_IP + "/32", "dev", "lo")
            server = netfake.start(netfake.TCPServer((NEW_IP, PORT), _Counted))
            server.connections = 0
            # The host could reach it now: the test can fail.
            with socket.create_connection((NEW_IP, PORT), timeout=5) as c:
                c.sendall(b"x")
                assert c.recv(1) == b"x"
            before = server.connections
            r = tenant.call("PUT", "/cells/%s/v1/fs/file" % cid, query={"path": "/tmp/hotplug-go"}, body=b"go")
            assert r.status in (200, 201, 204), r
        finally:
            t.join(120)
        r = done.get("r")
        assert r is not None and r.status == 200 and r.body["exitCode"] == 0, r
        out = json.loads(r.body["stdout"].strip().splitlines()[-1])
        assert "go" not in out, out
        assert out["first"] != "answer" and server.connections == before, (out, server.connections, before)

        def denied():
            recs = tenant.get("/v1/audit", query={"kind": "net", "limit": 10000}).body["records"]
            return [x for x in recs if x.get("cell") == cid and x.get("dst") == "%s:%d" % (NEW_IP, PORT)]

        recs = dm.wait_for(denied, 10)
        assert recs and all(x["verdict"] == "deny" and x["reason"] == "no rule matched" for x in recs), recs
    finally:
        if server:
            netfake.stop(server)
        netfake.ip("addr", "del", NEW_IP + "/32", "dev", "lo", check=False)
        net.down()


class _Counted(netfake.Echo):
    def handle(self):
        self.server.connections += 1
        super().handle()
