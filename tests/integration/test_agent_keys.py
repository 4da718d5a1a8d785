"""Model credentials never enter the cell: POST /v1/cells {"agents": {...}}
(docs/api.md "Model keys") gives the cell a placeholder key and an egress
rule that puts the tenant's secret in the provider's auth header on the
host.

The fake network (198.18.40.0/24 on the host's lo, see netfake.py):

    198.18.40.53:53   DNS: model.test -> 198.18.40.10
    198.18.40.11:443  plain.test: a TCP listener that records the bytes it
                      gets (what a plain-HTTP request to a TLS port puts
                      on the network)
    198.18.40.10:443  a fake OpenAI-style model server over HTTPS (a
                      certificate for model.test from a CA of this module,
                      trusted by the daemon through --upstream-ca): records
                      each request's headers and answers a small chat
                      completion that echoes the headers it got

The daemon lets tenants' policies reach 198.18.40.0/24 (--allow-tenant-dest),
so the cells run as a tenant, as a client would.
"""
import json
import os
import shutil
import subprocess
import uuid

import pytest

import daemon as dm
import netfake
from conftest import cell_pids_of_state

NET = netfake.claim("198.18.40", __name__)
DNS_IP, MODEL_IP, PLAIN_IP = NET + ".53", NET + ".10", NET + ".11"
ZONE = {"model.test": {"A": [MODEL_IP]}, "plain.test": {"A": [PLAIN_IP]}}
KEY = "sk-real-" + uuid.uuid4().hex           # must never show up in the cell
OTHER_KEY = "sk-other-" + uuid.uuid4().hex
DNS_RULE = {"dns": {"upstreams": [DNS_IP], "strict": True, "rebind": [NET + ".0/24"]}}
BASE = "https://model.test/v1"

# argv: the key variable, the base-URL variable (or a URL), the header and
# its prefix; OpenAI's by default.
PROBE = r'''
import json, os, subprocess, sys, urllib.request
key_env, base_env, header, prefix = sys.argv[1:] or ["OPENAI_API_KEY", "OPENAI_BASE_URL", "Authorization", "Bearer "]
base = os.environ.get(base_env, base_env)
req = urllib.request.Request(base + "/chat/completions", method="POST",
                             data=b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
                             headers={header: prefix + os.environ[key_env], "X-Leak": "none",
                                      "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as resp:
    body = resp.read().decode()
    head = "\n".join("%s: %s" % kv for kv in resp.headers.items())
# Leave the answer in the cell's files too: a key in it would be found there.
os.makedirs("/root/agent", exist_ok=True)
with open("/root/agent/answer.json", "w") as f:
    f.write(head + "\n\n" + body)
print(json.dumps({"env": os.environ.get(key_env), "base": os.environ.get(base_env),
                  "head": head, "body": body}))
'''


class _Model(netfake.http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append({"path": self.path, "headers": hdrs})
        out = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "hello from the fake model"}}],
                          "echo": hdrs}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo-Authorization", hdrs.get("authorization", ""))
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


class _Recorder(netfake.socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        data = b""
        try:
            while len(data) < 65536:
                d = self.request.recv(65536)
                if not d:
                    break
                data += d
        except OSError:
            pass
        self.server.got.append(data)


@pytest.fixture(scope="module")
def net(cell, tmp_path_factory):
    if netfake.require_dns() is None:
        pytest.skip("dnspython (python3-dnspython) is needed for the fake DNS server")
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is needed to make the test CA")
    ca, leaf, key = netfake.make_ca(str(tmp_path_factory.mktemp("model-certs")), "model.test")
    n = netfake.Net((DNS_IP, MODEL_IP, PLAIN_IP))
    try:
        n.up()
        n.plain = netfake.TCPServer((PLAIN_IP, 443), _Recorder)
        n.plain.got = []
        n.serve(n.plain)
        n.model = netfake.HTTPServer((MODEL_IP, 443), _Model, tls=(leaf, key))
        n.serve(*netfake.FakeDNS(ZONE).servers(DNS_IP), n.model)
        n.ca = ca
        yield n
    finally:
        n.down()


@pytest.fixture(scope="module")
def d(tmp_path_factory, net):
    # No warm pool: the checks below read every cell process of the state
    # as the tested cell's (cells with agent keys have a policy and never
    # take a pooled cell anyway).
    yield from dm.serve(tmp_path_factory.mktemp("agent-keys"),
                        ["--upstream-ca", net.ca, "--allow-tenant-dest", NET + ".0/24", "--warm", "0"])


@pytest.fixture(scope="module")
def alice(d):
    c = d.tenant(dm.uniq("alice"))
    for name, value in (("OPENAI_KEY", KEY), ("SECOND_KEY", "sk-second-" + uuid.uuid4().hex)):
        r = c.post("/v1/secrets", {"name": name, "value": value})
        assert r.status in (200, 201, 204), r
    return c


@pytest.fixture(scope="module")
def bob(d):
    c = d.tenant(dm.uniq("bob"))
    r = c.post("/v1/secrets", {"name": "BOB_KEY", "value": OTHER_KEY})
    assert r.status in (200, 201, 204), r
    return c


@pytest.fixture
def made(alice, bob):
    out = []
    yield out
    for client, cid in out:
        client.delete("/v1/cells/%s" % cid)


def create(client, made, agents, rules=(DNS_RULE,), **extra):
    body = {"resources": {"memory": "256M"}, "agents": agents}
    if rules is not None:
        body["policy"] = {"rules": list(rules)}
    body.update(extra)
    r = client.post("/v1/cells", body)
    if r.status == 201:
        made.append((client, r.body["id"]))
    return r


def test_model_key_is_injected_on_the_host_and_never_enters_the_cell(d, alice, made, net):
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}})
    assert r.status == 201, r
    cid = r.body["id"]
    # GET shows the switch's rules (agentPolicy) apart from the client's
    # policy, which stays as sent.
    got = alice.get("/v1/cells/%s" % cid).body
    assert got["agents"] == {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}
    assert got["env"]["OPENAI_API_KEY"] == "cell-placeholder" and got["env"]["OPENAI_BASE_URL"] == BASE
    rule = got["agentPolicy"]["rules"][0]["http"]
    assert rule["host"] == "model.test" and rule["redact_response"] is True and rule["ports"] == [443]
    assert rule["tls"] is True
    assert rule["set_headers"] == {"Authorization": "Bearer ${secret:OPENAI_KEY}"}
    assert got["policy"] == {"rules": [DNS_RULE]}
    assert KEY not in json.dumps(got)

    before = len(net.model.seen)
    r = alice.post("/cells/%s/v1/processes/run" % cid,
                   {"command": "/usr/bin/python3", "args": ["-c", PROBE], "timeoutMs": 120000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    out = json.loads(r.body["stdout"].strip().splitlines()[-1])
    # The upstream saw the real key, sent by the host, not the placeholder.
    seen = net.model.seen[before:]
    assert seen and seen[-1]["headers"]["authorization"] == "Bearer " + KEY
    assert json.loads(out["body"])["choices"][0]["message"]["content"] == "hello from the fake model"
    # The cell: a placeholder in its env, and the echoed key redacted.
    assert out["env"] == "cell-placeholder"
    assert KEY not in out["body"] and KEY not in out["head"]

    # Nowhere in the cell's processes (from the host) ...
    pids = cell_pids_of_state(d.state)
    assert pids
    for pid in pids:
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                assert KEY.encode() not in f.read(), pid
        except (FileNotFoundError, ProcessLookupError):
            pass
    # ... nor in its files (the answer it saved included; read from the host
    # through a cell process's root) ...
    root = "/proc/%d/root" % pids[0]
    assert os.path.exists(root + "/root/agent/answer.json")
    for sub in ("root", "tmp", "etc", "var", "home"):
        assert dm.files_with(os.path.join(root, sub), KEY.encode()) == []
    # ... nor anywhere in the daemon's state: the spec, the audit log, the
    # cells' layers, the database (sealed at rest).
    assert dm.files_with(d.state, KEY.encode()) == []


def test_claude_rule_uses_x_api_key_and_host_dns(d, alice, made):
    alice.post("/v1/secrets", {"name": "ANTHROPIC_KEY", "value": "sk-ant-" + uuid.uuid4().hex})
    r = create(alice, made, {"claude": {"secret": "ANTHROPIC_KEY"}}, rules=[DNS_RULE])
    assert r.status == 201, r
    pol = r.body["agentPolicy"]["rules"]
    assert pol[0]["http"]["host"] == "api.anthropic.com" and pol[0]["http"]["ports"] == [443]
    assert pol[0]["http"]["set_headers"] == {"x-api-key": "${secret:ANTHROPIC_KEY}"}
    assert r.body["env"]["ANTHROPIC_API_KEY"] == "cell-placeholder"
    assert "ANTHROPIC_BASE_URL" not in r.body["env"]


def test_no_dns_rule_needs_a_usable_upstream(d, alice, made):
    """Without a dns rule the daemon takes the host's resolvers the tenant
    may use; when none is left, the error says to give one."""
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}, rules=None)
    if r.status == 201:
        kinds = [list(x)[0] for x in r.body["agentPolicy"]["rules"]]
        assert kinds == ["http", "dns"] and "policy" not in r.body
    else:
        assert r.status == 400 and "dns" in r.body["detail"] and "agents" in r.body["detail"], r


def test_a_tenant_cannot_name_another_tenants_secret(d, alice, bob, made):
    r = create(bob, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}})
    assert r.status == 400 and "agents.codex.secret" in r.body["detail"], r
    # Nor by writing the rule by hand: the engine reads the cell's tenant's.
    r = create(alice, made, {"codex": {"secret": "BOB_KEY"}})
    assert r.status == 400 and "agents.codex.secret" in r.body["detail"], r


@pytest.mark.parametrize("agents,field,status", [
    ({"nosuch": {"secret": "OPENAI_KEY"}}, "agents.nosuch", 400),
    ({"mock": {"secret": "OPENAI_KEY"}}, "agents.mock", 400),
    ({"cursor": {"secret": "OPENAI_KEY"}}, "agents.cursor", 400),
    ({"opencode": {"secret": "OPENAI_KEY"}}, "agents.opencode.provider", 400),
    ({"pi": {"secret": "OPENAI_KEY"}}, "agents.pi.provider", 400),
    ({"opencode": {"secret": "OPENAI_KEY", "provider": "gemini"}}, "agents.opencode.provider", 400),
    ({"opencode": {"secret": "OPENAI_KEY", "provider": 1}}, "agents.opencode.provider", 400),
    ({"codex": {"secret": "OPENAI_KEY", "provider": "anthropic"}}, "agents.codex.provider", 400),
    ({"opencode": {"secret": "OPENAI_KEY", "provider": "x" * 5000}}, "agents.opencode.provider", 400),
    # Two agents sharing OPENAI_API_KEY must name one secret and one baseUrl.
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE},
      "opencode": {"secret": "OPENAI_KEY", "provider": "openai"}}, "agents.opencode", 400),
    ({"codex": {"secret": "OPENAI_KEY"}, "pi": {"secret": "SECOND_KEY", "provider": "openai"}}, "agents.pi", 400),
    ({"codex": {}}, "agents.codex.secret", 400),
    ({"codex": {"secret": 7}}, "agents.codex.secret", 400),
    ({"codex": {"secret": "MISSING_KEY"}}, "agents.codex.secret", 400),
    ({"codex": {"secret": "../x"}}, "agents.codex.secret", 400),
    ({"codex": {"secret": "OPENAI_KEY", "extra": 1}}, "agents.codex.extra", 400),
    ({"codex": "OPENAI_KEY"}, "agents.codex", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "ftp://model.test/"}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "model.test"}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://u:p@model.test/"}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://model.test/\r\nX: y"}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://" + "a" * 3000}}, "agents.codex.baseUrl", 400),
    # Launchers put baseUrl into a config string (codex: TOML): no way out of it.
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": 'https://model.test/v1",env_key="X'}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://model.test/v1\\"}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://model.test/v1'$(id)"}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": 5}}, "agents.codex.baseUrl", 400),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "http://localhost:8080/v1"}}, "agents.codex.baseUrl", 400),
    # SSRF: the daemon itself would send the key to the host's own services.
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "http://127.0.0.1:8080/v1"}}, "agents.codex.baseUrl", 403),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "http://[::1]:8080/v1"}}, "agents.codex.baseUrl", 403),
    ({"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://169.254.169.254/v1"}}, "agents.codex.baseUrl", 403),
    ([], "agents", 400),
    ({}, "agents", 400),
    ({"a%d" % i: {} for i in range(20)}, "agents", 400),
])
def test_bad_agents_input_is_refused_naming_the_field(d, alice, made, agents, field, status):
    r = create(alice, made, agents)
    assert r.status == status and field in r.body["detail"], r


def test_cli_flag(d, alice, made, tmp_path):
    tok = alice.token
    env = dict(os.environ, CELL_URL="http://127.0.0.1:%d" % d.port, CELL_TOKEN=tok)
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps({"rules": [DNS_RULE]}))
    p = subprocess.run([os.environ.get("CELL_BIN", "cell"), "--json", "create", "--policy", str(pol),
                        "--agent-key", "codex=OPENAI_KEY,base=" + BASE], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    made.append((alice, got["id"]))
    assert got["agents"] == {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}
    p = subprocess.run([os.environ.get("CELL_BIN", "cell"), "create", "--agent-key", "codex"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--agent-key" in p.stderr


def test_restart_keeps_the_agent_rules(d, alice, made, net):
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}})
    assert r.status == 201, r
    cid, before = r.body["id"], r.body
    assert alice.post("/v1/cells/%s/stop" % cid).status == 200
    r = alice.post("/v1/cells/%s/start" % cid)
    assert r.status == 200, r
    assert r.body["policy"] == before["policy"] and r.body["env"] == before["env"]
    assert r.body["agentPolicy"] == before["agentPolicy"]
    n = len(net.model.seen)
    r = alice.post("/cells/%s/v1/processes/run" % cid,
                   {"command": "/usr/bin/python3", "args": ["-c", PROBE], "timeoutMs": 120000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    assert net.model.seen[n:][-1]["headers"]["authorization"] == "Bearer " + KEY
    assert KEY not in r.body["stdout"]


def run_probe(client, cid, *argv):
    r = client.post("/cells/%s/v1/processes/run" % cid,
                    {"command": "/usr/bin/python3", "args": ["-c", PROBE] + list(argv), "timeoutMs": 120000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    return json.loads(r.body["stdout"].strip().splitlines()[-1])


@pytest.mark.parametrize("agents,key_env,base_env,host,header,value", [
    ({"opencode": {"secret": "OPENAI_KEY", "provider": "openai"}}, "OPENAI_API_KEY", "OPENAI_BASE_URL",
     "api.openai.com", "Authorization", "Bearer ${secret:OPENAI_KEY}"),
    ({"opencode": {"secret": "OPENAI_KEY", "provider": "anthropic"}}, "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
     "api.anthropic.com", "x-api-key", "${secret:OPENAI_KEY}"),
    ({"amp": {"secret": "OPENAI_KEY"}}, "AMP_API_KEY", "AMP_URL", "ampcode.com", "Authorization",
     "Bearer ${secret:OPENAI_KEY}"),
    ({"amp": {"secret": "OPENAI_KEY", "provider": "amp"}}, "AMP_API_KEY", "AMP_URL", "ampcode.com", "Authorization",
     "Bearer ${secret:OPENAI_KEY}"),
    ({"pi": {"secret": "OPENAI_KEY", "provider": "anthropic"}}, "ANTHROPIC_API_KEY", None, "api.anthropic.com",
     "x-api-key", "${secret:OPENAI_KEY}"),
    ({"pi": {"secret": "OPENAI_KEY", "provider": "openai"}}, "OPENAI_API_KEY", None, "api.openai.com",
     "Authorization", "Bearer ${secret:OPENAI_KEY}"),
])
def test_each_agents_provider(d, alice, made, agents, key_env, base_env, host, header, value):
    """docs/api.md's table, row by row: the default endpoint, header and
    variables of every agent that can be brokered."""
    r = create(alice, made, agents)
    assert r.status == 201, r
    rules = r.body["agentPolicy"]["rules"]
    # The model API's responses are metered (amp's API is not one the meter knows).
    meter = {"api.openai.com": {"meter": "openai"}, "api.anthropic.com": {"meter": "anthropic"}}.get(host, {})
    assert rules[0] == {"http": dict({"host": host, "ports": [443], "set_headers": {header: value},
                                      "redact_response": True, "tls": True}, **meter)}
    assert r.body["env"][key_env] == "cell-placeholder"
    assert not base_env or base_env not in r.body["env"]


@pytest.mark.parametrize("agent,want,argv", [
    ("amp", {"secret": "OPENAI_KEY", "baseUrl": BASE}, ["AMP_API_KEY", "AMP_URL", "Authorization", "Bearer "]),
    ("opencode", {"secret": "OPENAI_KEY", "provider": "anthropic", "baseUrl": BASE},
     ["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "x-api-key", ""]),
    # pi takes its endpoint from its model registry: no variable is set,
    # the rule is for baseUrl's host all the same.
    ("pi", {"secret": "OPENAI_KEY", "provider": "openai", "baseUrl": BASE},
     ["OPENAI_API_KEY", BASE, "Authorization", "Bearer "]),
])
def test_other_agents_keys_reach_the_upstream(d, alice, made, net, agent, want, argv):
    r = create(alice, made, {agent: want})
    assert r.status == 201, r
    n = len(net.model.seen)
    out = run_probe(alice, r.body["id"], *argv)
    hdr = argv[2].lower()
    assert net.model.seen[n:][-1]["headers"][hdr] == argv[3] + KEY
    assert out["env"] == "cell-placeholder" and KEY not in json.dumps(out)


def test_agents_sharing_a_key_share_one_rule(d, alice, made):
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY"}, "opencode": {"secret": "OPENAI_KEY",
                                                                           "provider": "openai"}})
    assert r.status == 201, r
    http = [x for x in r.body["agentPolicy"]["rules"] if "http" in x]
    assert len(http) == 1 and http[0]["http"]["host"] == "api.openai.com"
    # The same endpoint by baseUrl from another key variable, another secret.
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE},
                             "amp": {"secret": "SECOND_KEY", "baseUrl": BASE}})
    assert r.status == 400 and "agents.amp" in r.body["detail"] and "endpoint" in r.body["detail"], r


def test_put_policy_keeps_the_agent_rules(d, alice, made, net):
    """PUT .../policy replaces the client's policy only: the switch's rules
    are composed with it each time, so the key still reaches the model."""
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}, rules=[DNS_RULE])
    assert r.status == 201, r
    cid, agent_policy = r.body["id"], r.body["agentPolicy"]
    mine = {"rules": [DNS_RULE, {"action": "deny", "ip": {"to": "198.18.40.99"}}]}
    r = alice.put("/v1/cells/%s/policy" % cid, mine)
    assert r.status == 200 and r.body["policyLive"] is True, r
    assert r.body["policy"] == mine and r.body["agentPolicy"] == agent_policy
    got = alice.get("/v1/cells/%s" % cid).body
    assert got["policy"] == mine and got["agentPolicy"] == agent_policy
    n = len(net.model.seen)
    out = run_probe(alice, cid)
    assert net.model.seen[n:][-1]["headers"]["authorization"] == "Bearer " + KEY
    assert out["env"] == "cell-placeholder" and KEY not in json.dumps(out)
    # A policy without a dns rule: the agents' (the host's resolvers) would
    # apply; with none usable the PUT says what is missing, naming nothing
    # of the client's that is not there.
    r = alice.put("/v1/cells/%s/policy" % cid, {"rules": [{"host": {"name": "x.test"}}]})
    assert r.status in (200, 400), r
    if r.status == 400:
        assert "dns" in r.body["detail"], r
    # Errors name the client's own rules as sent.
    r = alice.put("/v1/cells/%s/policy" % cid, {"rules": [DNS_RULE, {"http": {"host": "a.test", "bogus": 1}}]})
    assert r.status == 400 and "rules[1]" in r.body["detail"], r
    # And a stop and start after the PUT boots with both again.
    assert alice.put("/v1/cells/%s/policy" % cid, mine).status == 200
    assert alice.post("/v1/cells/%s/stop" % cid).status == 200
    r = alice.post("/v1/cells/%s/start" % cid)
    assert r.status == 200 and r.body["policy"] == mine, r
    n = len(net.model.seen)
    run_probe(alice, cid)
    assert net.model.seen[n:][-1]["headers"]["authorization"] == "Bearer " + KEY


def test_put_policy_cannot_take_the_key_elsewhere(d, alice, made, net):
    """The attack: a client rule for the model host putting the agent's
    secret into another header, or a Bearer of its own.  The agents' rule
    comes first and the first matching rule decides the flow, so the
    client's rule never applies to it: the upstream gets the key in the
    agent's header only."""
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}, rules=[DNS_RULE])
    assert r.status == 201, r
    cid = r.body["id"]
    evil = {"rules": [DNS_RULE, {"http": {"host": "model.test", "ports": [443],
                                          "set_headers": {"X-Leak": "${secret:OPENAI_KEY}",
                                                          "Authorization": "Bearer attacker"},
                                          "remove_headers": ["X-Api-Key"]}},
                      {"http": {"host": "*.test", "set_headers": {"X-Leak": "${secret:OPENAI_KEY}"}}}]}
    r = alice.put("/v1/cells/%s/policy" % cid, evil)
    assert r.status == 200, r
    n = len(net.model.seen)
    out = run_probe(alice, cid)
    seen = net.model.seen[n:][-1]["headers"]
    assert seen["authorization"] == "Bearer " + KEY and seen["x-leak"] == "none", seen
    assert KEY not in json.dumps(out)
    # Nor can a client's rule name another tenant's secret: the engine reads
    # the cell's own tenant's (a missing secret refuses the request).
    assert KEY not in json.dumps(alice.get("/v1/cells/%s" % cid).body)


def test_cli_provider_option(d, alice, made, tmp_path):
    env = dict(os.environ, CELL_URL="http://127.0.0.1:%d" % d.port, CELL_TOKEN=alice.token)
    cell = os.environ.get("CELL_BIN", "cell")
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps({"rules": [DNS_RULE]}))
    p = subprocess.run([cell, "--json", "create", "--policy", str(pol), "--agent-key", "opencode=OPENAI_KEY,base=" + BASE + ",provider=openai",
                        "--agent-key", "pi=OPENAI_KEY,provider=openai,base=" + BASE],
                       env=env, capture_output=True, text=True, timeout=60)
    if p.returncode == 0:
        made.append((alice, json.loads(p.stdout)["id"]))
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["agents"] == {"opencode": {"secret": "OPENAI_KEY", "baseUrl": BASE, "provider": "openai"},
                             "pi": {"secret": "OPENAI_KEY", "provider": "openai", "baseUrl": BASE}}
    p = subprocess.run([cell, "create", "--agent-key", "opencode=OPENAI_KEY,model=x"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "provider=NAME" in p.stderr


def test_the_key_never_goes_out_in_clear(d, alice, made, net):
    """The attack: the cell speaks plain HTTP to the provider's TLS port.
    The engine follows the cell's choice upstream, so without more the key
    would cross the network in clear; the agents' rule has "tls": true and
    the request is refused before anything leaves.  (An http:// baseUrl
    is plain by the client's choice and says "tls": false: a rule with a
    secret refuses plain HTTP unless it opts out by name.)"""
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": "https://plain.test/v1"}})
    assert r.status == 201, r
    before = len(net.plain.got)
    r = alice.post("/cells/%s/v1/processes/run" % r.body["id"],
                   {"command": "/usr/bin/python3", "args": ["-c", PROBE, "OPENAI_API_KEY", "http://plain.test:443/v1",
                                                            "Authorization", "Bearer "], "timeoutMs": 60000})
    assert r.status == 200 and r.body["exitCode"] != 0 and "403" in r.body["stderr"], r
    assert all(KEY.encode() not in got for got in net.plain.got[before:])
    assert all(b"cell-placeholder" not in got for got in net.plain.got[before:])
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": "http://plain.test:443/v1"}})
    assert r.status == 201 and r.body["agentPolicy"]["rules"][0]["http"]["tls"] is False, r
