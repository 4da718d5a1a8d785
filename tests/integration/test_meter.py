"""Token usage metered by the egress engine (docs/api.md "Model keys" and
"Runs"): a model key's rule (and any http rule with "meter") reads the
usage from the provider's responses on the host side, so neither the
figures of GET /v1/cells/{id} nor a run's egress usage can be faked by
what runs in the cell.

    198.18.45.53:53  DNS: model.test -> 198.18.45.10
    198.18.45.10:80  the fake model (fakemodel.py): Responses API SSE whose
                     response.completed reports USAGE
    198.18.45.10:8080  a slow model: a delta, then (once the test says the
                     cell has closed its connection) filler and the usage
    198.18.45.10:8081  a fake Anthropic Messages API: SSE (message_start,
                     message_delta) or a JSON message

The attacks: the cell asks for a gzip answer (the metered request asks for
identity), calls paths that answer without usage, closes its connection
once it has the answer but before the usage came (the engine reads the
rest for it), and a hostile agent (the mock) reports a usage of its own:
the metered figures stay the model's.
The parser's own attacks (huge lines, wrong types, huge numbers, split
reads): tests/unit/test_net_meter.c.
"""
import http.server
import json
import threading
import time

import pytest

import daemon as dm
import fakemodel
import netfake

NET = netfake.claim("198.18.45", __name__)
USAGE = (321, 45)
BASE = "http://model.test/v1"

# argv: base URL, how many /responses requests; each read to its end.  A
# GET of /models (a 404 without usage) and a request asking for gzip too.
PROBE = r'''
import json, sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    hdr = {"Authorization": "Bearer cell-placeholder", "Content-Type": "application/json"}
    if i == 0:
        hdr["Accept-Encoding"] = "gzip"
    req = urllib.request.Request(base + "/responses", method="POST", headers=hdr,
                                 data=json.dumps({"model": "m", "input": "hi", "stream": True}).encode())
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        assert r.headers.get("Content-Encoding") in (None, "identity"), r.headers
        assert b"response.completed" in body, body[-200:]
try:
    urllib.request.urlopen(base + "/models", timeout=60)
except urllib.error.HTTPError as e:
    assert e.code == 404
print("done", n)
'''


class _Slow(http.server.BaseHTTPRequestHandler):
    """One delta, then waits for the test's go (the cell has closed its
    connection), then filler events and response.completed with USAGE."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b'data: {"type":"response.output_text.delta","delta":"the answer"}\n\n')
        self.wfile.flush()
        self.server.go.wait(60)
        try:
            # Writes to the cell fail once its close is known: keep sending
            # for a while, so the usage comes after that.
            for _ in range(20):
                self.wfile.write(b'data: {"type":"response.output_text.delta","delta":"%s"}\n\n' % (b"x" * 8192))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b'data: {"type":"response.completed","response":{"usage":{"input_tokens":%d,'
                             b'"output_tokens":%d,"total_tokens":%d}}}\n\n' % (USAGE[0], USAGE[1], sum(USAGE)))
            self.wfile.flush()
        except OSError:
            pass
        self.server.finished.set()
        self.close_connection = True

    def log_message(self, *a):
        pass


class _Anthropic(http.server.BaseHTTPRequestHandler):
    """POST /v1/messages: the stream Claude's API sends (input and cache
    tokens in message_start, output in message_delta) or, without
    "stream", one JSON message; records the key it got."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.keys.append(self.headers.get("x-api-key"))
        usage = {"input_tokens": 7, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 3,
                 "output_tokens": 1}
        if body.get("stream"):
            events = [{"type": "message_start", "message": {"id": "m", "usage": usage}},
                      {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
                      {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}},
                      {"type": "message_stop"}]
            out = "".join("event: %s\ndata: %s\n\n" % (e["type"], json.dumps(e)) for e in events).encode()
            ctype = "text/event-stream"
        else:
            out = json.dumps({"type": "message", "content": [{"type": "text", "text": "hi"}],
                              "usage": dict(usage, output_tokens=20)}).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with fakemodel.network(NET, tmp_path_factory.mktemp("meter-certs")) as n:
        n.model = n.models["http"]
        n.model.usage = USAGE
        n.slow = n.serve(netfake.HTTPServer((n.model_ip, 8080), _Slow))
        n.slow.go, n.slow.finished = threading.Event(), threading.Event()
        n.anthropic = n.serve(netfake.HTTPServer((n.model_ip, 8081), _Anthropic))
        n.anthropic.keys = []
        yield n


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return tmp_path_factory.mktemp("meter-repos")


@pytest.fixture(scope="module")
def d(tmp_path_factory, net, repos):
    yield from dm.serve(tmp_path_factory.mktemp("meter"),
                        ["--upstream-ca", net.ca, "--allow-tenant-dest", NET + ".0/24",
                         "--run-repo-root", str(repos), "--warm", "0"])


@pytest.fixture(scope="module")
def alice(d):
    c = d.tenant(dm.uniq("alice"))
    r = c.post("/v1/secrets", {"name": "OPENAI_KEY", "value": "sk-meter-test"})
    assert r.status in (200, 201, 204), r
    return c


@pytest.fixture(scope="module")
def repo(repos):
    r = repos / "proj"
    r.mkdir()
    (r / "probe.py").write_text(PROBE)
    return r


def times(k):
    return {"inputTokens": USAGE[0] * k, "outputTokens": USAGE[1] * k, "totalTokens": sum(USAGE) * k}


def responses(net):
    return len(net.model.responses())


def test_a_cells_model_responses_are_metered(alice, net, repo):
    r = alice.post("/v1/cells", {"resources": {"memory": "256M"}, "policy": {"rules": [net.dns_rule]},
                                 "agents": {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}})
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        assert r.body["agentPolicy"]["rules"][0]["http"]["meter"] == "openai", r.body["agentPolicy"]
        assert "usage" not in alice.get("/v1/cells/" + cid).body     # nothing metered yet
        before = responses(net)
        r = alice.post("/cells/%s/v1/processes/run" % cid,
                       {"command": "/usr/bin/python3", "args": ["-c", PROBE, BASE, "2"], "timeoutMs": 120000})
        assert r.status == 200 and r.body["exitCode"] == 0, r
        assert responses(net) - before == 2
        # The gzip the cell asked for went upstream as identity.
        assert {s["headers"].get("accept-encoding") for s in net.model.seen[-3:-1]} == {"identity"}
        assert alice.get("/v1/cells/" + cid).body["usage"] == times(2)
        r = alice.post("/cells/%s/v1/processes/run" % cid,
                       {"command": "/usr/bin/python3", "args": ["-c", PROBE, BASE, "1"], "timeoutMs": 120000})
        assert r.status == 200 and r.body["exitCode"] == 0, r
        assert alice.get("/v1/cells/" + cid).body["usage"] == times(3)
        # Each metered response's net record carries its usage.
        recs = alice.get("/v1/audit?kind=net&cell=%s&limit=1000" % cid).body["records"]
        used = [x["usage"] for x in recs if x.get("event") == "http" and "usage" in x]
        assert used == [times(1)] * 3, recs
    finally:
        alice.delete("/v1/cells/" + cid)


# Reads the response until the answer shows, then closes: the usage is
# still to come.
HANG_UP = r'''
import socket
s = socket.create_connection(("model.test", 8080), timeout=60)
s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: model.test:8080\r\nContent-Type: application/json\r\n"
          b"Content-Length: 16\r\n\r\n{\"stream\": true}")
got = b""
while b"the answer" not in got:
    d = s.recv(4096)
    assert d, got
    got += d
s.close()
print("closed")
'''


def test_a_cell_that_hangs_up_before_the_usage_is_metered_all_the_same(alice, net):
    r = alice.post("/v1/cells", {"resources": {"memory": "256M"}, "policy": meter_policy(net, 8080)})
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        r = alice.post("/cells/%s/v1/processes/run" % cid,
                       {"command": "/usr/bin/python3", "args": ["-c", HANG_UP], "timeoutMs": 120000})
        assert r.status == 200 and r.body["exitCode"] == 0 and "closed" in r.body["stdout"], r
        net.slow.go.set()
        assert net.slow.finished.wait(60)
        assert dm.wait_for(lambda: "usage" in alice.get("/v1/cells/" + cid).body, 30), "not metered"
        assert alice.get("/v1/cells/" + cid).body["usage"] == times(1)
    finally:
        alice.delete("/v1/cells/" + cid)


def meter_policy(net, port=80):
    return {"rules": [net.dns_rule, {"http": {"host": "model.test", "ports": [port], "meter": "openai"}}]}


def test_a_runs_usage_is_the_metered_one_when_the_agent_reports_none(alice, net, repo):
    run = dm.run_start(alice, {"agent": "mock", "repo": {"path": str(repo)}, "keep": "cell",
                               "policy": meter_policy(net),
                               "prompt": "run /usr/bin/python3 /workspace/probe.py %s 2" % BASE})
    done, ev = dm.run_wait(alice, run["id"], limit_s=120)
    res = done["result"]
    try:
        assert done["status"] == "succeeded", (done, ev[-5:])
        assert res["usage"] == times(2) and res["usageSource"] == "egress", res
        assert alice.get("/v1/cells/" + res["cellId"]).body["usage"] == times(2)
    finally:
        alice.delete("/v1/cells/" + res["cellId"])


def test_an_agents_own_usage_does_not_change_the_metered_figures(alice, net, repo):
    """The mock reports a usage_update and a turn usage of its own (a
    hostile agent's bogus figures): the run says they are the agent's, the
    cell's metered usage is the model's."""
    run = dm.run_start(alice, {"agent": "mock", "repo": {"path": str(repo)}, "keep": "cell",
                               "policy": meter_policy(net),
                               "prompt": "usage 999999 888888\nrun /usr/bin/python3 /workspace/probe.py %s 1" % BASE})
    done, ev = dm.run_wait(alice, run["id"], limit_s=120)
    res = done["result"]
    try:
        assert done["status"] == "succeeded", (done, ev[-5:])
        assert res["usageSource"] == "agent" and res["usage"]["inputTokens"] == 999999, res
        assert alice.get("/v1/cells/" + res["cellId"]).body["usage"] == times(1)
    finally:
        alice.delete("/v1/cells/" + res["cellId"])


def test_a_run_without_metered_responses_has_no_usage(alice, repo):
    run = dm.run_start(alice, {"agent": "mock", "repo": {"path": str(repo)}, "prompt": "say hi"})
    done, _ = dm.run_wait(alice, run["id"], limit_s=120)
    assert done["status"] == "succeeded", done
    assert done["result"]["usage"] is None and done["result"]["usageSource"] is None, done["result"]


@pytest.mark.parametrize("meter,why", [
    (True, 'expected "openai" or "anthropic", got true'),
    ("gemini", 'expected "openai" or "anthropic"'),
    (None, "got null"),
])
def test_a_bad_meter_is_refused_naming_the_field(alice, net, meter, why):
    r = alice.post("/v1/cells", {"policy": {"rules": [{"http": {"host": "model.test", "meter": meter}}]}})
    assert r.status == 400 and "rules[0].http.meter" in r.body["detail"] and why in r.body["detail"], r


ANTHROPIC_PROBE = r'''
import json, os, sys, urllib.request
for stream in (True, False):
    req = urllib.request.Request(os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", method="POST",
                                 data=json.dumps({"model": "m", "max_tokens": 9, "stream": stream}).encode(),
                                 headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
print("ok")
'''


def test_a_claude_cells_anthropic_responses_are_metered(alice, net):
    """claude's key rule meters "anthropic": input = input + cache tokens
    (7 + 100 + 3), output = message_delta's (20), for a stream and a JSON
    message alike."""
    r = alice.post("/v1/secrets", {"name": "ANTHROPIC_KEY", "value": "sk-ant-meter"})
    assert r.status in (200, 201, 204), r
    r = alice.post("/v1/cells", {"resources": {"memory": "256M"}, "policy": {"rules": [net.dns_rule]},
                                 "agents": {"claude": {"secret": "ANTHROPIC_KEY",
                                                       "baseUrl": "http://model.test:8081"}}})
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        assert r.body["agentPolicy"]["rules"][0]["http"]["meter"] == "anthropic", r.body["agentPolicy"]
        r = alice.post("/cells/%s/v1/processes/run" % cid,
                       {"command": "/usr/bin/python3", "args": ["-c", ANTHROPIC_PROBE], "timeoutMs": 120000})
        assert r.status == 200 and r.body["exitCode"] == 0, r
        assert net.anthropic.keys[-2:] == ["sk-ant-meter"] * 2
        assert alice.get("/v1/cells/" + cid).body["usage"] == \
            {"inputTokens": 220, "outputTokens": 40, "totalTokens": 260}
    finally:
        alice.delete("/v1/cells/" + cid)
