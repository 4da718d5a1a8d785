"""End to end with a real agent: Codex (codex-acp) in a cell, through the
ACP proxy, against a fake OpenAI model server reached only through the
cell's egress policy, with the model key brokered on the host
(POST /v1/cells "agents", docs/api.md "Model keys").

The fake network (198.18.41.0/24 on the host's lo, see netfake.py):

    198.18.41.53:53  DNS: model.test and api.openai.com -> 198.18.41.10
    198.18.41.10:80  the fake model (fakemodel.py): the Responses API,
                     streamed, scripted per turn; records every request
    198.18.41.10:443 the same over HTTPS (a certificate for both names from
                     a CA of this module, trusted by the daemon through
                     --upstream-ca): the cell's Codex trusts the egress
                     engine's interception CA, the engine this CA

One daemon and one tenant for the module, one cell per way of reaching
the model (about 20 s in all), each the plain user path with no client
configuration in the cell: baseUrl http://model.test/v1 and
https://model.test/v1 through the agents switch only (codex-acp does not
read the OPENAI_BASE_URL the switch sets: the launcher turns it into a
model provider), and no baseUrl at all: Codex's own endpoint,
api.openai.com (resolved to the fake by the cell's DNS rule).  Every
command the fake model asks for is an ordinary one, sandboxed by Codex's
default: the launcher replaces Codex's sandbox (which cannot run in a
cell) by the cell's and keeps the permission request.  Codex is installed with POST /cells/{id}/v1/agents/codex/install
(npm from registry.npmjs.org into the daemon's cache, once per daemon: the
module skips when the registry cannot be reached).  Release stage only: a
real download and a 230 MB agent, once is enough.

The attacks: the real key must be nowhere the cell can read (its
environment, every cell process's /proc/PID/environ, the files under $HOME,
Codex's own state in ~/.codex included), while the upstream saw it; a
command the client refuses must not run; an OPENAI_BASE_URL that would
break out of the TOML string the launcher makes of it is refused; DELETE of the instance must leave
no codex process in the cell.
"""
import json
import os
import socket
import threading
import time
import uuid

import pytest

import daemon as dm
import fakemodel
import netfake
from conftest import cell_pids_of_state

pytestmark = pytest.mark.skipif(dm.ASAN or dm.TSAN, reason="release stage only: a real agent, slow under sanitizers")

NET = netfake.claim("198.18.41", __name__)
KEY = "sk-real-" + uuid.uuid4().hex           # must never show up in the cell
DNS_RULE = {"dns": {"upstreams": [NET + ".53"], "strict": True, "rebind": [NET + ".0/24"]}}   # = net.dns_rule
WORK = "/root/work"
MADE = WORK + "/made-by-codex.txt"
REFUSED = WORK + "/refused.txt"
LAUNCHER = "/root/.local/share/sandbox-agent/bin/agent_processes/codex-acp"
REGISTRY = dm.NPM_REGISTRY


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with fakemodel.network(NET, tmp_path_factory.mktemp("model-certs")) as n:
        yield n


@pytest.fixture(scope="module")
def d(tmp_path_factory, net):
    yield from dm.serve(tmp_path_factory.mktemp("agent-codex"),
                        ["--upstream-ca", net.ca, "--allow-tenant-dest", NET + ".0/24"])


@pytest.fixture(scope="module")
def alice(d):
    c = d.tenant(dm.uniq("alice"))
    r = c.post("/v1/secrets", {"name": "OPENAI_KEY", "value": KEY})
    assert r.status in (200, 201, 204), r
    return c


class Cell(dm.CellClient):
    def rpc_async(self, server, msg):
        """POST msg on a thread (a prompt that waits for a permission
        answer); join() it and read .r."""
        t = threading.Thread(target=lambda: setattr(t, "r", self.rpc(server, msg, timeout=180)))
        t.start()
        return t

    def rpc(self, server, msg, agent=None, timeout=None):
        return self.call("POST", "/acp/" + server, json_body=msg, query={"agent": agent} if agent else None,
                         timeout=timeout)

    def put(self, path, data):
        r = self.call("PUT", "/fs/file", query={"path": path}, body=data,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200, r


@pytest.fixture(scope="module", params=["http", "https", "default"])
def cell(alice, request):
    """A cell whose Codex reaches the fake by baseUrl over http or https,
    or ("default") by its own endpoint, with no client configuration."""
    base = request.param + "://model.test/v1"
    want = {"secret": "OPENAI_KEY"} if request.param == "default" else {"secret": "OPENAI_KEY", "baseUrl": base}
    r = alice.post("/v1/cells", {"resources": {"memory": "1G"}, "agents": {"codex": want},
                                 "policy": {"rules": [DNS_RULE]}})
    assert r.status == 201, r
    c = Cell(alice, r.body["id"])
    c.scheme = "https" if request.param == "default" else request.param
    c.param = request.param
    try:
        install(c)
        c.sh("mkdir -p " + WORK)
        yield c
    finally:
        alice.delete("/v1/cells/%s" % c.id)


def install(c):
    if not dm.npm_reachable():
        pytest.skip("the npm registry %s is not reachable from this host: codex cannot be installed" % REGISTRY)
    r = c.call("POST", "/agents/codex/install", json_body={}, timeout=900)
    assert r.status == 200, r
    assert c.call("GET", "/agents/codex").body["installed"] is True


def req(i, method, params):
    return {"jsonrpc": "2.0", "id": i, "method": method, "params": params}


class Stream:
    """The instance's SSE stream, read on a thread into `msgs` ((id, msg))."""

    def __init__(self, cell, server):
        self.msgs, self.cond = [], threading.Condition()
        self.conn, resp = cell.c.stream("GET", cell.base + "/acp/" + server,
                                        headers={"Accept": "text/event-stream"}, timeout=180)
        assert resp.status == 200, resp.read()
        self.t = threading.Thread(target=self._read, args=(resp,), daemon=True)
        self.t.start()

    def _read(self, resp):
        cur = {}
        try:
            for line in resp:
                line = line.decode().rstrip("\r\n")
                if line == "" and "data" in cur:
                    with self.cond:
                        self.msgs.append((int(cur["id"]), json.loads(cur["data"])))
                        self.cond.notify_all()
                    cur = {}
                elif line and not line.startswith(":"):
                    k, _, v = line.partition(":")
                    cur[k] = v.lstrip(" ")
        except (OSError, ValueError, AttributeError):   # closed under us
            pass

    def wait(self, pred, timeout=120):
        """The first message matching pred (bounded wait)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = next((m for _, m in self.msgs if pred(m)), None)
                if hit is not None or time.monotonic() > end:
                    return hit
                self.cond.wait(1)

    def updates(self, sid, kind):
        return [m["params"]["update"] for _, m in list(self.msgs)
                if m.get("method") == "session/update" and m["params"].get("sessionId") == sid
                and m["params"]["update"].get("sessionUpdate") == kind]

    def close(self):
        # Shut the socket down first: it wakes the reader, whose buffered
        # read would otherwise hold close() until the next heartbeat.
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.t.join(10)
        self.conn.close()


def codex_pids(d):
    out = []
    for pid in cell_pids_of_state(d.state):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"codex" in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


def answer(cell, server, st, path, kind):
    """Wait for the permission request naming path; answer with the option
    of this kind (allow_once, reject_once): 202."""
    ask = st.wait(lambda x: x.get("method") == "session/request_permission" and path in json.dumps(x))
    assert ask, st.msgs
    pick = next(o["optionId"] for o in ask["params"]["options"] if o["kind"] == kind)
    r = cell.rpc(server, {"jsonrpc": "2.0", "id": ask["id"],
                          "result": {"outcome": {"outcome": "selected", "optionId": pick}}})
    assert r.status == 202, r
    return ask


def test_codex_turns_tool_call_and_the_key_stays_on_the_host(d, cell, net):
    m = net.models[cell.scheme]
    seen0, calls0 = len(m.seen), len(m.responses())
    m.script([fakemodel.text("Hello", " from", " the fake", " model.")],
             # Ordinary commands: Codex's default would run them in its own
             # sandbox (which fails in a cell) without asking.
             [fakemodel.call("exec_command", {"cmd": "echo written-by-codex > " + MADE, "workdir": WORK,
                                              "justification": "write the file the test asked for"})],
             [fakemodel.text("The file", " is written.")],
             [fakemodel.call("exec_command", {"cmd": "touch " + REFUSED, "workdir": WORK,
                                              "justification": "a command the client refuses"})])
    server = "codex-" + uuid.uuid4().hex[:6]
    r = cell.rpc(server, req(1, "initialize", {"protocolVersion": 1, "clientCapabilities": {}}), agent="codex")
    assert r.status == 200 and r.body["result"]["agentInfo"]["name"] == "codex-acp", r
    st = Stream(cell, server)
    try:
        # The SDK's autoAuthenticate: the first env-based method listed
        # (codex-api-key, CODEX_API_KEY: the placeholder too).
        methods = [a["id"] for a in r.body["result"]["authMethods"] if a.get("type") == "env_var"]
        assert methods[0] == "codex-api-key", methods
        r = cell.rpc(server, req(9, "authenticate", {"methodId": methods[0]}))
        assert r.status == 200 and r.body.get("result") == {}, r
        r = cell.rpc(server, req(2, "session/new", {"cwd": WORK, "mcpServers": []}))
        assert r.status == 200 and "sessionId" in r.body.get("result", {}), r
        sid = r.body["result"]["sessionId"]

        # Turn 1: the fake's deltas arrive as message chunks, in order.
        r = cell.rpc(server, req(3, "session/prompt", {"sessionId": sid,
                                                       "prompt": [{"type": "text", "text": "say hello"}]}))
        assert r.status == 200 and r.body["result"]["stopReason"] == "end_turn", r
        # The answer goes out on the stream too, after the turn's updates.
        assert st.wait(lambda x: x.get("id") == 3 and "result" in x), st.msgs
        # (Codex's own endpoint is tried over a WebSocket first; it says
        # so in a chunk when it falls back to HTTPS, as the fake wants.)
        chunks = [u["content"]["text"] for u in st.updates(sid, "agent_message_chunk")
                  if not u["content"]["text"].startswith("Falling back from WebSockets")]
        assert chunks == ["Hello", " from", " the fake", " model."], chunks

        # Turn 2: a command asks permission; allowed, it runs in the cell.
        t = cell.rpc_async(server, req(4, "session/prompt", {"sessionId": sid,
                                                             "prompt": [{"type": "text", "text": "write the file"}]}))
        ask = answer(cell, server, st, MADE, "allow_once")
        assert ask["params"]["toolCall"]["kind"] == "execute"
        t.join(180)
        assert t.r.status == 200 and t.r.body["result"]["stopReason"] == "end_turn", t.r
        assert st.wait(lambda x: x.get("id") == 4 and "result" in x), st.msgs
        done = [u for u in st.updates(sid, "tool_call_update") if u.get("status") == "completed"]
        assert done and done[-1]["rawOutput"]["exit_code"] == 0, st.updates(sid, "tool_call_update")
        tail = [u["content"]["text"] for u in st.updates(sid, "agent_message_chunk")][-2:]
        assert tail == ["The file", " is written."]
        r = cell.call("GET", "/fs/file", query={"path": MADE})
        assert r.status == 200 and r.raw == b"written-by-codex\n", r
        assert not os.path.exists(MADE), "the command ran on the host"

        # Turn 3: a command the client refuses does not run; the turn ends.
        t = cell.rpc_async(server, req(5, "session/prompt", {"sessionId": sid,
                                                             "prompt": [{"type": "text", "text": "once more"}]}))
        answer(cell, server, st, REFUSED, "reject_once")
        t.join(180)
        assert t.r.status == 200 and t.r.body["result"]["stopReason"] == "cancelled", t.r
        dm.assert_problem(cell.call("GET", "/fs/stat", query={"path": REFUSED}), 400, detail_has="not found")
        # The model saw the tool's result in its third request.
        calls = m.responses()[calls0:]
        assert len(calls) == 4
        assert any(i.get("type") == "function_call_output" for i in calls[2]["body"]["input"])

        # The upstream got the real key, put in on the host ...
        assert {c["headers"].get("authorization") for c in m.seen[seen0:]} == {"Bearer " + KEY}
        # ... while the cell holds only the placeholder: its spec, its
        # processes' environments (codex's included), its files.
        env = cell.c.get("/v1/cells/" + cell.id).body["env"]
        assert env["OPENAI_API_KEY"] == env["CODEX_API_KEY"] == "cell-placeholder", env
        pids = cell_pids_of_state(d.state)
        assert codex_pids(d), "no codex process in the cell"
        for pid in pids:
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    env = f.read()
            except OSError:
                continue
            assert KEY.encode() not in env, pid
            if pid in codex_pids(d):
                assert b"OPENAI_API_KEY=cell-placeholder" in env
        # codex's own cell: the state's first cell process may be a pooled cell's init.
        root = "/proc/%d/root" % codex_pids(d)[0]
        # Codex keeps the shell's exported environment on disk
        # (shell_snapshots): the search below would see a key there.
        assert dm.files_with(root + "/root/.codex", b"OPENAI_API_KEY"), "codex wrote nothing to search"
        for sub in ("root", "tmp", "etc", "var", "home"):
            assert dm.files_with(os.path.join(root, sub), KEY.encode()) == [], sub
        # The same from inside: nothing the cell can read holds it.
        out = cell.sh("grep -rlF %s /root /tmp /etc /var /home /run 2>/dev/null; echo end" % KEY)
        assert out["stdout"].strip() == "end", out
    finally:
        st.close()

    # DELETE ends the instance and leaves no codex process in the cell.
    assert codex_pids(d)
    t0 = time.monotonic()
    r = cell.call("DELETE", "/acp/" + server)
    assert r.status == 204, r
    print("DELETE of the codex instance: %.2f s" % (time.monotonic() - t0))
    assert dm.wait_for(lambda: not codex_pids(d), 10), codex_pids(d)
    assert all(s["serverId"] != server for s in cell.call("GET", "/acp").body["servers"])


# Each breaks out of the TOML string the launcher makes of OPENAI_BASE_URL
# (a quote ends it: the rest would set the provider's other keys), or is
# not a URL the switch would give.
BAD_URLS = ['http://model.test/v1",env_key="OTHER_KEY', 'http://model.test/v1\\', "http://model.test/v1\nx=1",
            "http://model.test/v1\x01", "http://mod\u00e8l.test/v1", "http://model.test/v1\x7f"]


def test_a_base_url_that_breaks_out_of_its_toml_string_is_refused(alice, cell):
    if cell.param != "http":
        pytest.skip("the launcher is the same in every cell: one is enough")
    for bad in BAD_URLS:
        r = cell.call("POST", "/processes/run", json_body={"command": LAUNCHER, "env": {"OPENAI_BASE_URL": bad}})
        assert r.status == 200, (bad, r)
        assert r.body["exitCode"] == 2, (bad, r.body)
        assert "OPENAI_BASE_URL may hold only printable ASCII, no quote or backslash" in r.body["stderr"], r.body
    # The switch refuses such a baseUrl before a cell exists: the client is
    # told which field and why (the launcher's refusal is for a cell's own env).
    for bad in BAD_URLS[:2]:
        r = alice.post("/v1/cells", {"agents": {"codex": {"secret": "OPENAI_KEY", "baseUrl": bad}},
                                     "policy": {"rules": [DNS_RULE]}})
        dm.assert_problem(r, 400, detail_has="agents.codex.baseUrl")
        assert "quotes or backslashes" in r.body["detail"], r.body
