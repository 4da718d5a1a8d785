"""Tenant isolation of agents: two tenants, each with its own token and
cell.  Tenant B tries every agent endpoint on tenant A's cell (ACP list,
SSE stream, POST, DELETE, config mcp/skills, agent install, replacing A's
launcher) and gets exactly the 404 an unknown cell gets, so nothing says
A's cell or instance exists.  Unknown ids, and DELETE racing POSTs on one
instance.  Then an agent of A (the mock's launcher replaced by a probe,
as the SDK's tests do) tries to reach the daemon: its unix socket, its TCP
listener (bound to every address here) on loopback and on each of the
host's own addresses, the cells' range and the metadata address, under
the broadest policy a tenant may set.
"""
import json
import subprocess
import threading
import uuid

import pytest

import daemon as dm
from daemon import assert_problem
from test_agents import LAUNCHER, events, new_cell, put_launcher, req, start, agent_pids

SKILLS = {"sources": [{"type": "github", "source": "rivet-dev/skills", "skills": ["a"]}]}
MCP = {"type": "local", "command": "node", "args": ["x"]}
DIR = "/tmp/iso"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    port = dm.free_port()
    # Every address, so that "the host's own addresses" really serve the
    # daemon (the default is loopback only), and the unix socket; plain HTTP
    # off loopback needs --insecure-listen.
    yield from dm.serve(tmp_path_factory.mktemp("agent-iso"), ["--listen", "0.0.0.0:%d" % port, "--insecure-listen"],
                        port=port, unix_socket=True)


@pytest.fixture(scope="module")
def alice(d):
    return d.tenant(dm.uniq("iso-a"))


@pytest.fixture(scope="module")
def bob(d):
    return d.tenant(dm.uniq("iso-b"))


@pytest.fixture(scope="module")
def cell_a(alice):
    c = new_cell(alice)
    yield c
    alice.delete("/v1/cells/%s" % c.id)


@pytest.fixture(scope="module")
def cell_b(bob):
    c = new_cell(bob)
    yield c
    bob.delete("/v1/cells/%s" % c.id)


def cfg_query(kind, name):
    return {"directory": DIR, ("mcpName" if kind == "mcp" else "skillName"): name}


def attempts(server):
    """(method, path, kwargs) of every agent endpoint of a cell."""
    out = [("GET", "/agents", {}), ("GET", "/agents/mock", {}), ("POST", "/agents/mock/install", {"json_body": {}}),
           ("POST", "/agents/codex/install", {"json_body": {}}),
           ("POST", "/agents/mock/install", {"json_body": {}, "headers": {"Accept": "text/event-stream"}}),
           ("GET", "/acp", {}), ("GET", "/acp/" + server, {"headers": {"Accept": "text/event-stream"}}),
           ("POST", "/acp/" + server, {"json_body": req(9, "session/new", {"cwd": "/", "mcpServers": []})}),
           ("POST", "/acp/" + server, {"json_body": req(9, "x"), "query": {"agent": "mock"}}),
           ("DELETE", "/acp/" + server, {}),
           ("PUT", "/fs/file", {"query": {"path": LAUNCHER}, "body": b"#!/bin/sh\necho pwned\n",
                                "headers": {"Content-Type": "application/octet-stream"}})]
    for kind, body in (("mcp", MCP), ("skills", SKILLS)):
        q = cfg_query(kind, "a")
        out += [("GET", "/config/" + kind, {"query": q}), ("PUT", "/config/" + kind, {"query": q, "json_body": body}),
                ("DELETE", "/config/" + kind, {"query": q})]
    return out


def test_another_tenant_gets_what_an_unknown_cell_gets(d, alice, bob, cell_a, cell_b):
    server, _ = start(cell_a)
    for kind, body in (("mcp", MCP), ("skills", SKILLS)):
        assert cell_a.call("PUT", "/config/" + kind, query=cfg_query(kind, "a"), json_body=body).status == 204
    launcher = cell_a.sh("cat " + LAUNCHER)["stdout"]
    ghost = "c-" + uuid.uuid4().hex[:16]
    for method, path, kw in attempts(server):
        theirs = bob.call(method, cell_a.base + path, timeout=10, **kw)
        unknown = bob.call(method, "/cells/%s/v1%s" % (ghost, path), timeout=10, **kw)
        assert_problem(theirs, 404)
        # The same answer but for the id: no 403, no other detail.
        assert theirs.status == unknown.status and theirs.headers.get("content-type") == unknown.headers.get(
            "content-type"), (method, path)
        assert json.dumps(theirs.body).replace(cell_a.id, "ID") == json.dumps(unknown.body).replace(ghost, "ID"), \
            (method, path, theirs.body, unknown.body)
        # Without a token at all: 401 for both.
        anon = d.client(admin=False)
        assert anon.call(method, cell_a.base + path, timeout=10, **kw).status == 401
        assert anon.call(method, "/cells/%s/v1%s" % (ghost, path), timeout=10, **kw).status == 401
    # Nothing of A's changed: its instance answers, its config and launcher
    # are as A left them; B's own cell lists nothing of A's.
    assert cell_a.rpc(server, req(5, "x")).status == 200
    assert [s["serverId"] for s in cell_a.call("GET", "/acp").body["servers"]] == [server]
    for kind, body in (("mcp", MCP), ("skills", SKILLS)):
        r = cell_a.call("GET", "/config/" + kind, query=cfg_query(kind, "a"))
        assert r.status == 200, r
    assert cell_a.sh("cat " + LAUNCHER)["stdout"] == launcher
    assert cell_b.call("GET", "/acp").body["servers"] == []
    # B's instance of the same id is its own: A's stream never shows it.
    start(cell_b, server)
    assert cell_b.rpc(server, req(77, "x")).status == 200
    assert not any(m.get("id") == 77 for _, m in events(cell_a, server, limit_s=2))
    assert cell_b.call("DELETE", "/acp/" + server).status == 204
    assert cell_a.call("DELETE", "/acp/" + server).status == 204


def test_unknown_ids(alice, cell_a):
    for server in ("nosuch", "x" * 200):
        assert_problem(cell_a.call("GET", "/acp/" + server), 404, "session_not_found")
        assert_problem(cell_a.call("DELETE", "/acp/" + server), 404, "session_not_found")
        # A first POST needs ?agent=.
        assert cell_a.rpc(server, req(1, "initialize", {"protocolVersion": 1})).status == 400
    assert_problem(cell_a.rpc("s-" + uuid.uuid4().hex[:6], req(1, "initialize"), agent="nosuch"), 400)
    ghost = "c-" + uuid.uuid4().hex[:16]
    assert_problem(alice.get("/cells/%s/v1/acp" % ghost), 404)
    assert_problem(alice.post("/cells/%s/v1/acp/s1" % ghost, req(1, "x"), query={"agent": "mock"}), 404)


def test_delete_racing_posts_on_one_instance(d, alice, bob, cell_a):
    """DELETE, POSTs (with and without ?agent=, which may make the instance
    anew) and another tenant's DELETE at once, on one instance: each answer
    is one the API documents, the daemon stays up, and once the last
    instance is deleted no agent process is left."""
    server = "race-" + uuid.uuid4().hex[:6]
    seen = []
    for rnd in range(6):
        if not any(s["serverId"] == server for s in cell_a.call("GET", "/acp").body["servers"]):
            start(cell_a, server)
        out = {}

        def go(name, fn):
            r = fn()
            out[name] = (r.status, r.body.get("type", "") if isinstance(r.body, dict) else "")

        jobs = [("delete", lambda: cell_a.call("DELETE", "/acp/" + server, timeout=30)),
                ("post", lambda: cell_a.call("POST", "/acp/" + server, json_body=req(100 + rnd, "x"), timeout=30)),
                ("post-agent", lambda: cell_a.call("POST", "/acp/" + server, json_body=req(200 + rnd, "x"),
                                                   query={"agent": "mock"}, timeout=30)),
                ("other", lambda: bob.call("DELETE", cell_a.base + "/acp/" + server, timeout=30))]
        threads = [threading.Thread(target=go, args=j) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        seen.append(out)
        assert out["delete"][0] in (204, 404), out
        assert out["other"][0] == 404, out
        for k in ("post", "post-agent"):
            st, typ = out[k]
            # 200 answered; 404 gone; 500 agent_process_exited when the
            # DELETE ended the agent under a request in flight.
            ok = st in (200, 404) or (st == 500 and typ.endswith("agent_process_exited"))
            # 410 when the DELETE came while the request waited for its answer.
            ok = ok or (st == 410 and typ.endswith("session_not_found"))
            # Without ?agent= a POST that finds the instance gone is a
            # first POST to a new id: 400 asking for the agent.
            ok = ok or (k == "post" and st == 400 and typ.endswith("invalid_request"))
            assert ok, (k, out)
    assert alice.get("/v1/cells").status == 200
    for s in cell_a.call("GET", "/acp").body["servers"]:
        assert cell_a.call("DELETE", "/acp/" + s["serverId"]).status == 204
    assert dm.wait_for(lambda: agent_pids(d) == [], timeout=10), agent_pids(d)


# ---- an agent trying to reach the daemon --------------------------------------------

PROBE = r'''
import json, os, socket, sys, threading
targets, paths = json.load(open("/tmp/iso-targets.json"))
out = {}
def tcp(host, port):
    key = "%s:%d" % (host, port)
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect((host, port))
        s.sendall(b"GET /v1/cells HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while len(data) < 2048:
            b = s.recv(2048)
            if not b:
                break
            data += b
        out[key] = "answer: " + data[:120].decode("latin-1")
    except Exception as e:
        out[key] = "error: %s %s" % (type(e).__name__, e)
threads = [threading.Thread(target=tcp, args=(h, p)) for h, p in targets]
for t in threads:
    t.start()
for p in paths:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(p)
        out[p] = "connected"
    except Exception as e:
        out[p] = "error: %s exists=%s" % (type(e).__name__, os.path.exists(p))
for t in threads:
    t.join()
msg = json.loads(sys.stdin.readline())
print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": out}), flush=True)
for line in sys.stdin:
    pass
'''


def host_addresses():
    """Every address of this host's interfaces (ip -o addr), v4 and v6."""
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        for kind in ("inet", "inet6"):
            if kind in parts:
                addr = parts[parts.index(kind) + 1].split("/")[0]
                if not addr.startswith("fe80:"):
                    found.append(addr)
    return found


def broadest_policy(client, cid, addrs):
    """PUT the widest allow-all a tenant may set; returns what was refused."""
    classes = ["public", "private", "loopback", "multicast", "broadcast", "documentation", "reserved",
               "0.0.0.0/0", "::/0"]
    refused = []
    own = ["%s/%d" % (a, 128 if ":" in a else 32) for a in addrs if a not in ("127.0.0.1", "::1")]
    for extra in (["host-self"], own, ["10.213.0.1/32"], ["link-local"], ["169.254.169.254/32"], ["fe80::/10"]):
        r = client.put("/v1/cells/%s/policy" % cid, {"rules": [{"ip": {"to": classes + extra}}]})
        if r.status == 200:
            classes += extra
        else:
            refused.append((extra, r.status, r.body.get("detail")))
    # Nor through a dns rule's rebind, which would let names resolve there.
    r = client.put("/v1/cells/%s/policy" % cid, {"rules": [{"dns": {"upstreams": ["1.1.1.1"],
                                                                    "rebind": ["host-self"]}}]})
    refused.append((["rebind host-self"], r.status, r.body.get("detail")))
    r = client.put("/v1/cells/%s/policy" % cid, {"rules": [{"ip": {"to": classes}}]})
    assert r.status == 200, r
    return refused


def test_an_agent_cannot_reach_the_daemon(d, alice):
    addrs = host_addresses()
    cell = new_cell(alice, policy={"rules": [{"ip": {"to": "public"}}]})
    try:
        refused = broadest_policy(alice, cell.id, addrs)
        # The host itself is not the tenant's to open (docs/egress.md,
        # "host-self"): naming it, or one of its addresses, is refused.
        assert all(st == 403 and "may not open" in detail for _, st, detail in refused) and len(refused) == 7, \
            refused
        targets = [[a, d.port] for a in sorted(set(addrs) | {"127.0.0.1", "::1", "0.0.0.0", "10.213.0.1"})]
        targets += [["169.254.169.254", 80], ["169.254.169.254", d.port]]
        paths = [d.state + "/cell.sock", "/run/cell.sock", "/var/run/cell.sock"]
        r = cell.call("PUT", "/fs/file", query={"path": "/tmp/iso-targets.json"},
                      body=json.dumps([targets, paths]).encode(), headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200, r
        r = cell.call("PUT", "/fs/file", query={"path": "/tmp/iso-probe.py"}, body=PROBE.encode(),
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200, r
        put_launcher(cell, "#!/bin/sh\nexec /usr/bin/python3 /tmp/iso-probe.py\n")
        r = cell.call("POST", "/acp/probe", json_body=req(1, "initialize", {"protocolVersion": 1}),
                      query={"agent": "mock"}, timeout=60)
        assert r.status == 200, r
        got = r.body["result"]
        assert len(got) == len(targets) + len(paths), got
        reached = {k: v for k, v in got.items() if v.startswith("answer: HTTP/") and "cell egress" not in v}
        assert reached == {}, reached
        assert all(got[p].startswith("error: ") and got[p].endswith("exists=False") for p in paths), got
        assert cell.call("DELETE", "/acp/probe").status == 204
    finally:
        alice.delete("/v1/cells/%s" % cell.id)
