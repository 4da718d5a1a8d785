"""Model credentials never enter the cell: POST /v1/cells {"agents": {...}}
(docs/api.md "Model keys") gives the cell a placeholder key and an egress
rule that puts the tenant's secret in the provider's auth header on the
host.

The fake network (198.18.40.0/24 on the host's lo, see netfake.py):

    198.18.40.53:53   DNS: model.test -> 198.18.40.10
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
DNS_IP, MODEL_IP = NET + ".53", NET + ".10"
ZONE = {"model.test": {"A": [MODEL_IP]}}
KEY = "sk-real-" + uuid.uuid4().hex           # must never show up in the cell
OTHER_KEY = "sk-other-" + uuid.uuid4().hex
DNS_RULE = {"dns": {"upstreams": [DNS_IP], "strict": True, "rebind": [NET + ".0/24"]}}
BASE = "https://model.test/v1"

PROBE = r'''
import json, os, subprocess, sys, urllib.request
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", method="POST",
                             data=b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
                             headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
                                      "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as resp:
    body = resp.read().decode()
    head = "\n".join("%s: %s" % kv for kv in resp.headers.items())
# Leave the answer in the cell's files too: a key in it would be found there.
os.makedirs("/root/agent", exist_ok=True)
with open("/root/agent/answer.json", "w") as f:
    f.write(head + "\n\n" + body)
print(json.dumps({"env": os.environ.get("OPENAI_API_KEY"), "base": os.environ.get("OPENAI_BASE_URL"),
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


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def _make_ca(d):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=cell test model CA", cwd=d)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key",
             "-out", "leaf.csr", "-subj", "/CN=model.test", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:model.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "leaf.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


@pytest.fixture(scope="module")
def net(cell, tmp_path_factory):
    if netfake.require_dns() is None:
        pytest.skip("dnspython (python3-dnspython) is needed for the fake DNS server")
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is needed to make the test CA")
    certs = str(tmp_path_factory.mktemp("model-certs"))
    _make_ca(certs)
    n = netfake.Net((DNS_IP, MODEL_IP))
    try:
        n.up()
        n.model = netfake.HTTPServer((MODEL_IP, 443), _Model, tls=(os.path.join(certs, "leaf.pem"),
                                                                    os.path.join(certs, "leaf.key")))
        n.serve(*netfake.FakeDNS(ZONE).servers(DNS_IP), n.model)
        n.ca = os.path.join(certs, "ca.pem")
        yield n
    finally:
        n.down()


@pytest.fixture(scope="module")
def d(tmp_path_factory, net):
    yield from dm.serve(tmp_path_factory.mktemp("agent-keys"),
                        ["--upstream-ca", net.ca, "--allow-tenant-dest", NET + ".0/24"])


@pytest.fixture(scope="module")
def alice(d):
    c = d.tenant(dm.uniq("alice"))
    r = c.post("/v1/secrets", {"name": "OPENAI_KEY", "value": KEY})
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


def files_with(root, needle):
    """Files under root holding needle (bytes)."""
    hits = []
    for top, _, files in os.walk(root):
        for f in files:
            p = os.path.join(top, f)
            try:
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


def test_model_key_is_injected_on_the_host_and_never_enters_the_cell(d, alice, made, net):
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}})
    assert r.status == 201, r
    cid = r.body["id"]
    # The rules are in the policy GET shows: ours first, the client's after.
    got = alice.get("/v1/cells/%s" % cid).body
    assert got["agents"] == {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}
    assert got["env"]["OPENAI_API_KEY"] == "cell-placeholder" and got["env"]["OPENAI_BASE_URL"] == BASE
    rule = got["policy"]["rules"][0]["http"]
    assert rule["host"] == "model.test" and rule["redact_response"] is True
    assert rule["set_headers"] == {"Authorization": "Bearer ${secret:OPENAI_KEY}"}
    assert got["policy"]["rules"][1] == DNS_RULE
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
        assert files_with(os.path.join(root, sub), KEY.encode()) == []
    # ... nor anywhere in the daemon's state: the spec, the audit log, the
    # cells' layers, the database (sealed at rest).
    assert files_with(d.state, KEY.encode()) == []


def test_claude_rule_uses_x_api_key_and_host_dns(d, alice, made):
    alice.post("/v1/secrets", {"name": "ANTHROPIC_KEY", "value": "sk-ant-" + uuid.uuid4().hex})
    r = create(alice, made, {"claude": {"secret": "ANTHROPIC_KEY"}}, rules=[DNS_RULE])
    assert r.status == 201, r
    pol = r.body["policy"]["rules"]
    assert pol[0]["http"]["host"] == "api.anthropic.com"
    assert pol[0]["http"]["set_headers"] == {"x-api-key": "${secret:ANTHROPIC_KEY}"}
    assert r.body["env"]["ANTHROPIC_API_KEY"] == "cell-placeholder"
    assert "ANTHROPIC_BASE_URL" not in r.body["env"]


def test_no_dns_rule_needs_a_usable_upstream(d, alice, made):
    """Without a dns rule the daemon takes the host's resolvers the tenant
    may use; when none is left, the error says to give one."""
    r = create(alice, made, {"codex": {"secret": "OPENAI_KEY", "baseUrl": BASE}}, rules=None)
    if r.status == 201:
        kinds = [list(x)[0] for x in r.body["policy"]["rules"]]
        assert kinds[0] == "dns" and "http" in kinds
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
    n = len(net.model.seen)
    r = alice.post("/cells/%s/v1/processes/run" % cid,
                   {"command": "/usr/bin/python3", "args": ["-c", PROBE], "timeoutMs": 120000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    assert net.model.seen[n:][-1]["headers"]["authorization"] == "Bearer " + KEY
    assert KEY not in r.body["stdout"]
