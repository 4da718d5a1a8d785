"""`cell serve`: /cells/{id}/v1/agents and /v1/acp, the ACP proxy to the mock
agent running inside the cell (docs/compat/sandbox-agent-0.4.2-agents.md),
and the attacks: a daemon secret the agent must not see (CELL_TEST_CANARY
in the daemon's environment), another tenant's token on instances and
streams, agents that never answer, exit or print garbage, DELETE leaving
processes behind, malformed, mistyped, huge and unknown input.
"""
import json
import threading
import time
import uuid

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token

CANARY = "canary-%s" % uuid.uuid4().hex
LAUNCHER = "/root/.local/share/sandbox-agent/bin/agent_processes/mock-acp"
MOCK_BIN = "/root/.local/share/sandbox-agent/bin/cell-mock-agent"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    # A secret of the daemon's environment: no agent may ever see it.
    yield from dm.serve(tmp_path_factory.mktemp("agents"), env={"CELL_TEST_CANARY": CANARY})


@pytest.fixture(scope="module")
def admin(d):
    return d.client()


class Cell(dm.CellClient):
    def rpc(self, server, msg, agent=None, **query):
        q = dict(query)
        if agent:
            q["agent"] = agent
        return self.call("POST", "/acp/" + server, json_body=msg, query=q or None)


def new_cell(client, **spec):
    return Cell(client, dm.create_cell(client, "256M", **spec))


@pytest.fixture(scope="module")
def cell(admin):
    c = new_cell(admin, env={"CELL_ENV_MARK": "from-the-cell"}, cwd="/tmp")
    yield c
    admin.delete("/v1/cells/%s" % c.id)


def req(i, method, params=None):
    m = {"jsonrpc": "2.0", "id": i, "method": method}
    if params is not None:
        m["params"] = params
    return m


def prompt(i, sid, text):
    return req(i, "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": text}]})


def start(cell, server=None):
    """A new instance of the mock with an initialized session: (server, sessionId)."""
    server = server or "it-" + uuid.uuid4().hex[:8]
    r = cell.rpc(server, req(1, "initialize", {"protocolVersion": 1}), agent="mock")
    assert r.status == 200, r
    assert r.body["result"]["protocolVersion"] == 1
    r = cell.rpc(server, req(2, "session/new", {"cwd": "/", "mcpServers": []}))
    assert r.status == 200, r
    return server, r.body["result"]["sessionId"]


def events(cell, server, last=None, limit_s=3):
    """The SSE messages of an instance (the stream is read for limit_s)."""
    h = {"Accept": "text/event-stream"}
    if last is not None:
        h["Last-Event-ID"] = str(last)
    c, resp = cell.c.stream("GET", cell.base + "/acp/" + server, headers=h, timeout=limit_s)
    assert resp.status == 200, resp.read()
    out, cur = [], {}
    try:
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.decode().rstrip("\n")
            if line == "":
                if "data" in cur:
                    out.append((int(cur["id"]), json.loads(cur["data"])))
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(":")
                cur[k] = v.lstrip(" ")
    except (TimeoutError, OSError):
        pass
    finally:
        c.close()
    return out


def put_launcher(cell, script):
    """Replace the mock's launcher (installed first: it keeps the mode)."""
    assert cell.call("POST", "/agents/mock/install", json_body={}).status == 200
    r = cell.call("PUT", "/fs/file", query={"path": LAUNCHER}, body=script.encode(),
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r


def agent_pids(d, marker=b"cell-mock-agent"):
    """Host pids of this daemon's cells' processes running the mock (or
    whose command line has `marker`)."""
    found = []
    for pid in dm.cell_pids_of_state(d.state):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if marker in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


# ---- agents ------------------------------------------------------------------------------


def test_agents_list_get_install(cell):
    r = cell.call("GET", "/agents")
    assert r.status == 200, r
    assert [a["id"] for a in r.body["agents"]] == ["claude", "codex", "opencode", "amp", "pi", "cursor", "mock"]
    assert all("configOptions" not in a for a in r.body["agents"])
    r = cell.call("GET", "/agents", query={"config": "true", "no_cache": "true"})
    assert r.status == 200 and all("configOptions" in a for a in r.body["agents"]), r
    assert_problem(cell.call("GET", "/agents", query={"config": "maybe"}), 400, "invalid_request")
    b = assert_problem(cell.call("GET", "/agents/nope"), 400, "unsupported_agent")
    assert b["details"]["agent"] == "nope"
    r = cell.call("POST", "/agents/mock/install")
    assert r.status == 200, r
    assert r.body["artifacts"] == [{"kind": "agent_process", "path": LAUNCHER, "source": "builtin",
                                    "version": "builtin"}]
    assert cell.call("GET", "/agents/mock").body["installed"] is True
    assert cell.call("POST", "/agents/mock/install", json_body={}).body["already_installed"] is True
    assert cell.call("POST", "/agents/mock/install", json_body={"reinstall": True}).body["already_installed"] is False
    assert_problem(cell.call("POST", "/agents/mock/install", json_body={"reinstall": "yes"}), 422)
    # amp has no ACP adapter on npm; real installs: test_agent_install.py.
    assert_problem(cell.call("POST", "/agents/amp/install"), 501, "install_failed")
    assert_problem(cell.call("POST", "/agents/nope/install"), 400, "unsupported_agent")
    # The mock is a file of the cell, made by a process of the cell.
    out = cell.sh("ls -ln %s %s" % (MOCK_BIN, LAUNCHER))
    assert out["exitCode"] == 0, out


# ---- the ACP proxy ------------------------------------------------------------------------


def test_acp_session_prompt_stream_and_replay(cell):
    server, sid = start(cell)
    listed = cell.call("GET", "/acp").body["servers"]
    assert any(s["serverId"] == server and s["agent"] == "mock" and isinstance(s["createdAtMs"], int) for s in listed)
    r = cell.rpc(server, prompt(3, sid, "alpha beta gamma"))
    assert r.status == 200 and r.body == {"jsonrpc": "2.0", "id": 3, "result": {"stopReason": "end_turn"}}, r
    ev = events(cell, server)
    ids = [i for i, _ in ev]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    texts = [m["params"]["update"]["content"]["text"] for _, m in ev if m.get("method") == "session/update"]
    assert "".join(texts) == "mock:alpha beta gamma"
    # Responses go out on the stream too (as the reference sends them).
    assert any(m.get("id") == 3 and "result" in m for _, m in ev)
    # Replay after Last-Event-ID: exactly the later ones.
    cut = ids[2]
    assert [i for i, _ in events(cell, server, last=cut)] == [i for i in ids if i > cut]
    assert_problem(cell.call("GET", "/acp/" + server, headers={"Last-Event-ID": "x"}), 400)
    # Notifications and client responses: 202, nothing to wait for.
    r = cell.rpc(server, {"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": sid}})
    assert r.status == 202, r
    r = cell.rpc(server, {"jsonrpc": "2.0", "id": "perm-99", "result": {"outcome": {"outcome": "cancelled"}}})
    assert r.status == 202, r
    # A JSON-RPC error carries the agent's last stderr lines.
    cell.rpc(server, prompt(4, sid, "stderr please"))
    r = cell.rpc(server, req(5, "no/such/method"))
    assert r.status == 200 and r.body["error"]["code"] == -32601, r
    assert "mock: a line on stderr" in r.body["error"]["data"]["agentStderr"]
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_permission_round_trip(cell):
    server, sid = start(cell)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=cell.rpc(server, prompt(3, sid, "permission?"))))
    t.start()
    ask = None
    for _ in range(50):
        ask = next((m for _, m in events(cell, server, limit_s=0.5)
                    if m.get("method") == "session/request_permission"), None)
        if ask:
            break
    assert ask, "no permission request on the stream"
    r = cell.rpc(server, {"jsonrpc": "2.0", "id": ask["id"],
                          "result": {"outcome": {"outcome": "selected", "optionId": "reject-once"}}})
    assert r.status == 202, r
    t.join(30)
    assert out["r"].status == 200 and out["r"].body["result"]["stopReason"] == "end_turn", out
    texts = [m["params"]["update"]["content"]["text"] for _, m in events(cell, server)
             if m.get("method") == "session/update"]
    assert "permission: reject-once" in texts
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_statuses(cell):
    msg = req(1, "initialize", {"protocolVersion": 1})
    b = assert_problem(cell.rpc("s-" + uuid.uuid4().hex[:6], msg), 400, "invalid_request", "agent")
    assert_problem(cell.rpc("s-x", msg, agent="nope"), 400, "unsupported_agent")
    b = assert_problem(cell.rpc("s-" + uuid.uuid4().hex[:6], msg, agent="amp"), 501, "install_failed")
    assert b["details"]["agent"] == "amp"
    server, _ = start(cell)
    assert_problem(cell.rpc(server, req(9, "x"), agent="codex"), 409, "conflict")
    assert cell.rpc(server, req(10, "x"), agent="mock").status == 200
    assert_problem(cell.call("GET", "/acp/nosuch"), 404, "session_not_found")
    assert_problem(cell.call("DELETE", "/acp/nosuch"), 404, "session_not_found")
    assert cell.call("DELETE", "/acp/" + server).status == 204
    assert_problem(cell.call("DELETE", "/acp/" + server), 404, "session_not_found")
    assert all(s["serverId"] != server for s in cell.call("GET", "/acp").body["servers"])


def test_acp_timeout_and_late_answer(cell):
    server, sid = start(cell)
    # A request the agent never answers: 504 at the bound.
    b = assert_problem(cell.rpc(server, prompt(3, sid, "no answer"), timeoutMs=300), 504, "timeout")
    # A request it answers late (it is still busy with nothing: the mock is
    # single-threaded, so id 4 waits behind nothing and is answered) ...
    r = cell.rpc(server, req(4, "initialize", {"protocolVersion": 1}), timeoutMs=10000)
    assert r.status == 200, r
    assert_problem(cell.rpc(server, req(5, "x"), timeoutMs=0), 400)
    assert_problem(cell.rpc(server, req(5, "x"), timeoutMs="abc"), 400)
    # The same id twice while the first waits: 409.
    out = {}
    t = threading.Thread(target=lambda: out.update(r=cell.rpc(server, prompt(6, sid, "no answer"), timeoutMs=2000)))
    t.start()
    time.sleep(0.3)
    assert_problem(cell.rpc(server, prompt(6, sid, "x")), 409, "conflict")
    t.join(10)
    assert out["r"].status == 504
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_agent_exits_and_garbage(cell):
    server, sid = start(cell)
    r = cell.rpc(server, prompt(3, sid, "garbage first"))
    assert r.status == 200, r
    b = assert_problem(cell.rpc(server, prompt(4, sid, "stderr then exit now")), 500, "agent_process_exited")
    assert b["details"]["exitCode"] == 3
    b = assert_problem(cell.rpc(server, req(5, "x")), 500, "agent_process_exited")
    assert b["details"]["exitCode"] == 3
    ev = [m for _, m in events(cell, server)]
    bad = [m for m in ev if m.get("method") == "_adapter/invalid_stdout"]
    assert bad and bad[0]["params"]["raw"] == "this is not json" and bad[0]["params"]["error"], ev
    exited = [m for m in ev if m.get("method") == "_adapter/agent_exited"]
    assert exited == [{"jsonrpc": "2.0", "method": "_adapter/agent_exited",
                       "params": {"success": False, "code": 3}}], ev
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_replaced_launcher(cell):
    """The launcher is executed on each spawn: a client's own script runs."""
    script = "#!/bin/sh\nread line\necho '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"mine\":true}}'\nsleep 60\n"
    put_launcher(cell, script)
    try:
        server = "own-" + uuid.uuid4().hex[:6]
        r = cell.rpc(server, req(1, "initialize"), agent="mock")
        assert r.status == 200 and r.body["result"] == {"mine": True}, r
        assert cell.call("DELETE", "/acp/" + server).status == 204
    finally:
        assert cell.call("POST", "/agents/mock/install", json_body={"reinstall": True}).status == 200


def test_acp_delete_leaves_no_agent(d, cell):
    """DELETE ends the agent's process group (SIGTERM, then SIGKILL): an
    agent that ignores SIGTERM and forks a child is gone too, and streams
    of the instance end."""
    marker = "stubborn-%s" % uuid.uuid4().hex[:8]
    script = ("#!/bin/sh\ntrap '' TERM\nsh -c 'trap \"\" TERM; while :; do sleep 1; done' %s &\nexec %s\n"
              % (marker, MOCK_BIN))
    put_launcher(cell, script)
    try:
        before = set(agent_pids(d))
        server, _ = start(cell)
        mine = set(agent_pids(d)) - before
        assert dm.wait_for(lambda: agent_pids(d, marker.encode()), timeout=10)
        mine |= set(agent_pids(d, marker.encode()))
        assert len(mine) >= 2, mine
        out = {}
        t = threading.Thread(target=lambda: out.update(ev=events(cell, server, limit_s=20)))
        t.start()
        time.sleep(0.3)
        r = cell.call("DELETE", "/acp/" + server)
        assert r.status == 204
        t.join(25)
        assert not t.is_alive() and "ev" in out, "the stream did not end with DELETE"
        assert dm.wait_for(lambda: not (set(agent_pids(d)) & mine), timeout=10), \
            "agent processes outlived DELETE: %s" % (set(agent_pids(d)) & mine)
    finally:
        assert cell.call("POST", "/agents/mock/install", json_body={"reinstall": True}).status == 200


def test_acp_agent_env_is_the_cells(d, cell):
    """The agent runs in the cell with the cell's environment and working
    directory; the daemon's environment (CELL_TEST_CANARY) never reaches it."""
    before = set(agent_pids(d))
    server, sid = start(cell)
    cell.rpc(server, prompt(3, sid, "env"))
    names = [m["params"]["update"]["content"]["text"] for _, m in events(cell, server)
             if m.get("method") == "session/update"]
    assert "CELL_ENV_MARK" in names and "CELL_TEST_CANARY" not in names, names
    cell.rpc(server, prompt(4, sid, "pwd"))
    texts = [m["params"]["update"]["content"]["text"] for _, m in events(cell, server)
             if m.get("method") == "session/update"]
    assert texts[-1] == "/tmp"
    # From the host: the agent is a cell process (a cell uid) without the canary.
    mine = set(agent_pids(d)) - before
    assert mine
    for pid in mine:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read()
        assert CANARY.encode() not in env and b"CELL_TEST_CANARY" not in env
        assert b"CELL_ENV_MARK=from-the-cell" in env
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_tenants_isolated(d, admin, cell):
    server, _ = start(cell)
    tok, _ = make_tenant_token(admin, "agents-intruder")
    other = d.client(token=tok)
    base = cell.base
    assert_problem(other.get(base + "/agents"), 404)
    assert_problem(other.get(base + "/acp"), 404)
    assert_problem(other.get(base + "/acp/" + server), 404)
    assert_problem(other.post(base + "/acp/" + server, req(7, "x")), 404)
    assert_problem(other.post(base + "/acp/" + server, req(7, "x"), query={"agent": "mock"}), 404)
    assert_problem(other.delete(base + "/acp/" + server), 404)
    # The intruder's own cell with the same server id is another instance.
    mine = new_cell(other)
    try:
        start(mine, server)
        assert [s["serverId"] for s in mine.call("GET", "/acp").body["servers"]] == [server]
        assert mine.rpc(server, req(3, "x")).status == 200
        theirs = [m for _, m in events(mine, server)]
        ours = [m for _, m in events(cell, server)]
        assert not any(m.get("id") == 3 for m in ours)
        assert any(m.get("id") == 3 for m in theirs)
    finally:
        other.delete("/v1/cells/%s" % mine.id)
    assert server in [s["serverId"] for s in cell.call("GET", "/acp").body["servers"]]
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_bad_input(d, cell):
    server, _ = start(cell)
    post = lambda body, **kw: cell.call("POST", "/acp/" + server, body=body,
                                        headers={"Content-Type": "application/json"}, **kw)
    assert_problem(post(b'{"jsonrpc":"2.0"'), 400, "invalid_request")
    assert_problem(post(b"[1,2]"), 400, "invalid_request", "JSON-RPC object")
    assert_problem(post(b"42"), 400)
    assert_problem(post(b""), 400)
    assert_problem(post(b'{"jsonrpc":"2.0","id":1}'), 400)
    assert_problem(post(b'{"jsonrpc":"2.0","id":1,"method":7}'), 400)
    assert_problem(post(b'{"jsonrpc":"2.0","id":{"a":1},"method":"x"}'), 400)
    assert_problem(post(b'{"jsonrpc":"2.0","id":[1],"result":{}}'), 400)
    assert_problem(cell.rpc("bad/../id", req(1, "x"), agent="mock"), 404)
    assert_problem(cell.rpc("a" * 200, req(1, "x"), agent="mock"), 400)
    assert_problem(cell.rpc("bad%20id!", req(1, "x"), agent="mock"), 400)
    # Bodies above the daemon's JSON limit are refused before the agent sees them.
    huge = json.dumps(req(1, "x", {"pad": "y" * (2 << 20)})).encode()
    r = post(huge)
    assert r.status == 413, r
    # The instance still works.
    assert cell.rpc(server, req(50, "initialize")).status == 200
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_acp_instances_bounded(cell):
    made = []
    try:
        for i in range(16):
            s = "many-%d-%s" % (i, uuid.uuid4().hex[:4])
            r = cell.rpc(s, req(1, "initialize"), agent="mock")
            if r.status != 200:
                break
            made.append(s)
        r = cell.rpc("one-too-many", req(1, "initialize"), agent="mock")
        assert_problem(r, 409, "conflict")
    finally:
        for s in made:
            cell.call("DELETE", "/acp/" + s)


def test_session_new_gets_the_configured_mcp_servers(cell):
    """Beyond the reference: a session/new without mcpServers gets the ones
    configured for its cwd (/config/mcp); the client's own list wins."""
    d = "/proj-" + uuid.uuid4().hex[:6]
    r = cell.call("PUT", "/config/mcp", query={"directory": d, "mcpName": "files"},
                  json_body={"type": "local", "command": "mcp-files", "args": ["--root", d]})
    assert r.status == 204, r
    server = "mcp-" + uuid.uuid4().hex[:6]
    assert cell.rpc(server, req(1, "initialize", {"protocolVersion": 1}), agent="mock").status == 200
    r = cell.rpc(server, req(2, "session/new", {"cwd": d, "mcpServers": []}))
    assert r.status == 200, r
    got = r.body["result"]["_meta"]["mcpServers"]
    assert [(m["name"], m["command"], m["args"]) for m in got] == [("files", "mcp-files", ["--root", d])], got
    mine = [{"name": "own", "command": "x", "args": [], "env": []}]
    r = cell.rpc(server, req(3, "session/new", {"cwd": d, "mcpServers": mine}))
    assert r.body["result"]["_meta"]["mcpServers"] == mine, r
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_concurrent_first_posts_make_one_instance(d, cell):
    server = "race-" + uuid.uuid4().hex[:6]
    before = set(agent_pids(d))
    out = []
    ts = [threading.Thread(target=lambda i=i: out.append(
        cell.rpc(server, req(i, "initialize", {"protocolVersion": 1}), agent="mock"))) for i in range(1, 7)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(r.status for r in out) == [200] * 6, out
    assert [s["serverId"] for s in cell.call("GET", "/acp").body["servers"]].count(server) == 1
    assert len(set(agent_pids(d)) - before) == 1
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_replay_ring_keeps_the_last_1024(cell):
    """An agent printing 1500 messages: a stream opened afterwards replays
    the last 1024 (ids 477..1500), in order, each once."""
    script = ("#!/bin/sh\nread line\ni=0\nwhile [ $i -lt 1500 ]; do "
              "echo '{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":{\"i\":'$i'}}'; i=$((i+1)); done\nsleep 60\n")
    put_launcher(cell, script)
    server = "ring-" + uuid.uuid4().hex[:6]
    try:
        assert cell.rpc(server, {"jsonrpc": "2.0", "method": "go"}, agent="mock").status == 202
        ev = []
        for _ in range(40):
            ev = events(cell, server, limit_s=1)
            if ev and ev[-1][0] == 1500:
                break
        # A stream that was open got all 1500 as they came; a new one, the ring.
        ev = events(cell, server, limit_s=1)
        assert [i for i, _ in ev] == list(range(477, 1501)), (ev[:2], ev[-2:], len(ev))
        assert [m["params"]["i"] for _, m in ev] == list(range(476, 1500))
    finally:
        cell.call("DELETE", "/acp/" + server)
        assert cell.call("POST", "/agents/mock/install", json_body={"reinstall": True}).status == 200


@pytest.mark.slow
def test_sse_heartbeat(cell):
    """A quiet stream gets ': heartbeat' comments (every 15 s)."""
    server, _ = start(cell)
    c, resp = cell.c.stream("GET", cell.base + "/acp/" + server, headers={"Last-Event-ID": "1000"}, timeout=25)
    try:
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        assert resp.readline().rstrip(b"\n") == b": heartbeat"
    finally:
        c.close()
    assert cell.call("DELETE", "/acp/" + server).status == 204


def test_agent_that_never_reads_its_input(cell):
    """A request that does not fit the pipe of an agent that never reads:
    504 at the bound (not a wait for an answer to a message never sent),
    and the instance is still usable for DELETE."""
    put_launcher(cell, "#!/bin/sh\nexec sleep 600\n")
    server = "deaf-" + uuid.uuid4().hex[:6]
    try:
        big = req(1, "initialize", {"pad": "z" * (900 << 10)})
        b = assert_problem(cell.rpc(server, big, agent="mock", timeoutMs=500), 504, "timeout")
        assert "does not read" in b["detail"]
        # Half of that line is in the pipe: the agent's input is closed
        # rather than have the next message glued to it.
        assert_problem(cell.rpc(server, {"jsonrpc": "2.0", "method": "n"}, timeoutMs=300), 502, "stream_error")
        assert cell.call("DELETE", "/acp/" + server).status == 204
    finally:
        assert cell.call("POST", "/agents/mock/install", json_body={"reinstall": True}).status == 200


def test_cell_delete_ends_streams_and_agents(d, admin):
    """Deleting a cell ends its instances' streams and leaves no agent."""
    c = new_cell(admin)
    before = set(agent_pids(d))
    server, _ = start(c)
    mine = set(agent_pids(d)) - before
    assert mine
    out = {}
    t = threading.Thread(target=lambda: out.update(ev=events(c, server, limit_s=30)))
    t.start()
    time.sleep(0.3)
    assert admin.delete("/v1/cells/%s" % c.id).status in (200, 204)
    t.join(35)
    assert not t.is_alive() and "ev" in out, "the stream outlived its cell"
    assert any(m.get("method") == "_adapter/agent_exited" for _, m in out["ev"]), out["ev"][-3:]
    assert not (set(agent_pids(d)) & mine)
