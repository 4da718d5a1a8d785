"""The docs say what the binary does (issue 14).

- docs/cli.md is what scripts/gen-docs.py makes from this binary's help
  texts (`make docs` regenerates it), and `cell-daemon --help` is
  `cell help serve`.
- README's CLI reference gives each command only options its help has.
- Each claim the issue named is read from the help text or the doc and
  checked against behaviour: the memory and pids defaults of `cell create`
  (the API's answer and the cell's cgroup) and of `cell run` (no limit),
  the size defaults of the writable layer, --tmpfs and --overlay (df),
  what --ttl does (deletes a running cell idle that long: per-cell requests
  and running processes keep it, control-plane calls do not), hostnames
  with dots (refused, as documented), and the README's network policy
  example (taken from README.md, its resolver swapped for a fake one on
  198.18.46.0/24: it must let pip reach pypi.org and files.pythonhosted.org
  and nothing else).

(Man pages and completion for every command: test_install.py.)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

import daemon as dm
import netfake
from conftest import (CELL_BIN, CHECKOUT, assert_no_leftovers, cell_cgroup_dirs, cgroup_dirs_of, popen_cell,
                      run_cell, stop_proc, wait_for, wait_for_cell_id, wait_ready)

GEN_DOCS = os.path.join(CHECKOUT, "scripts", "gen-docs.py")
SIZES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def cell_help(*words):
    r = subprocess.run([CELL_BIN, "help", *words], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, LC_ALL="C"))
    assert r.returncode == 0, r
    return r.stdout


def read_doc(*path):
    with open(os.path.join(CHECKOUT, *path)) as f:
        return f.read()


def size(text):
    m = re.fullmatch(r"(\d+)([KMG])", text)
    assert m, text
    return int(m.group(1)) * SIZES[m.group(2)]


def option_text(help_text, option):
    """The description of `option` in a help text's options section, its
    continuation lines joined."""
    m = re.search(r"^  %s(?: \S+)?\s+(.*(?:\n {10,}\S.*)*)" % re.escape(option), help_text, re.M)
    assert m, (option, help_text)
    return " ".join(m.group(1).split())


# ---- docs/cli.md and the daemon's help ---------------------------------------------------------


def test_cli_md_is_the_binarys_help(tmp_path):
    out = tmp_path / "cli.md"
    r = subprocess.run([sys.executable, GEN_DOCS, "--markdown", CELL_BIN, str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    build = os.path.relpath(os.path.dirname(CELL_BIN), CHECKOUT)
    assert out.read_text() == read_doc("docs", "cli.md"), (
        "docs/cli.md does not match what %s prints: run `make BUILD=%s docs` and commit docs/cli.md" % (CELL_BIN, build))
    # Every command the global help lists has its section.
    md = out.read_text()
    for cmd in re.findall(r"^  ([a-z]+)\b", cell_help(), re.M):
        text = cell_help(cmd)
        assert text == cell_help() or "```text\n%s```" % text in md, cmd


def test_cell_daemon_help_is_cell_help_serve():
    daemon = os.path.join(os.path.dirname(CELL_BIN), "cell-daemon")
    r = subprocess.run([daemon, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == cell_help("serve"), r


def test_readme_cli_reference_names_only_options_the_help_has():
    """README's "CLI reference" is a summary: every option it gives a command
    is one that command's help (or the global help) has."""
    block = read_doc("README.md").split("\n## CLI reference\n", 1)[1].split("```\n", 2)[1]
    top, words, checked = cell_help(), None, 0
    for line in block.splitlines():
        m = re.match(r"^cell (?:\[[^\]]*\] )*([a-z]+)(?: ([a-z]+))?", line)
        if m:
            words = [w for w in m.groups() if w]
        if not words:
            continue
        text = top + cell_help(words[0])
        if len(words) > 1:      # a subcommand's own help, where it has one
            text += subprocess.run([CELL_BIN, "help", *words], capture_output=True, text=True, timeout=30).stdout
        for opt in re.findall(r"(?<![\w/$-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w])", line):
            assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), text), (words, opt, line)
            checked += 1
    assert checked > 40, checked


# ---- the daemon these claims are checked against -------------------------------------------------


@pytest.fixture(scope="module")
def d(cell):
    """The default daemon (warm pool and limits as shipped), unix socket."""
    state = tempfile.mkdtemp(prefix="cell-it-clidocs-")
    before = cell_cgroup_dirs()
    try:
        yield from dm.serve(state, unix_socket=True, after_stop=lambda dd: assert_no_leftovers(state, before))
    finally:
        shutil.rmtree(state, ignore_errors=True)


def cli(d, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("CELL_TOKEN", "CELL_URL")}
    return run_cell(d.state, list(args), env=env)


def cli_create(d, cells, *args):
    r = cli(d, "create", *args)
    assert r.returncode == 0, r
    cid = r.stdout.strip()
    cells.append(cid)
    return cid


def run_in(admin, cid, command, *args):
    r = admin.post("/cells/%s/v1/processes/run" % cid, {"command": command, "args": list(args)})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    return r.body["stdout"]


def cgroup_limits(hostname):
    """{file: value} of the memory and pids limits of the daemon cell whose
    default hostname is cell-PREFIX (PREFIX: its libcell id's start)."""
    assert re.fullmatch(r"cell-[0-9a-f]{8}", hostname), hostname
    out = {}
    for p in cell_cgroup_dirs():
        if os.path.basename(p).startswith(hostname[len("cell-"):]):
            for f in ("memory.max", "memory.limit_in_bytes", "pids.max"):
                v = dm._read(os.path.join(p, f)).strip()
                if v:
                    out[f] = v
    return out


# ---- resource defaults -------------------------------------------------------------------------


def test_create_defaults_are_the_documented_ones(d, admin, cells):
    text = cell_help("create")
    memory = size(re.search(r"\(default (\d+[KMG])\b", option_text(text, "--memory")).group(1))
    pids = int(re.search(r"\(default (\d+)\b", option_text(text, "--pids")).group(1))
    # docs/api.md's table and the README say the same.
    api = read_doc("docs", "api.md")
    assert size(re.search(r"^\| `resources\.memory` \| (\S+) \|", api, re.M).group(1)) == memory
    assert int(re.search(r"^\| `resources\.pids` \| (\d+) \|", api, re.M).group(1)) == pids
    readme = read_doc("README.md")
    m = re.search(r"default memory (\S+), pids (\d+)", readme)
    assert m and size(m.group(1)) == memory and int(m.group(2)) == pids, "README's cell create line"

    cid = cli_create(d, cells)
    res = admin.get("/v1/cells/%s" % cid).body["resources"]
    assert res["memory"] == memory and res["pids"] == pids, res
    # The cell's cgroup holds that limit (a warm-pool cell's too).
    got = cgroup_limits(run_in(admin, cid, "hostname").strip())
    assert int(got.get("memory.max") or got.get("memory.limit_in_bytes")) == memory, got
    assert int(got["pids.max"]) == pids, got


def test_run_has_no_limit_unless_asked(state):
    text = cell_help("run")
    for opt in ("--memory", "--pids", "--cpus"):
        assert "(default: none)" in option_text(text, opt), opt
    p = popen_cell(state, ["run", "--", "sh", "-c", "echo ready; exec sleep 60"])
    try:
        wait_ready(p)
        dirs = cgroup_dirs_of(wait_for_cell_id(state))
        if "memory" in dirs:
            assert int(dm._read(os.path.join(dirs["memory"], "memory.limit_in_bytes"))) >= 1 << 60, dirs
        if "pids" in dirs:
            assert dm._read(os.path.join(dirs["pids"], "pids.max")).strip() == "max", dirs
        if "v2" in dirs:
            for f in ("memory.max", "pids.max"):
                assert dm._read(os.path.join(dirs["v2"], f)).strip() in ("", "max"), (f, dirs)
    finally:
        stop_proc(p)


def df_kib(out, mount):
    """Size in KiB of `mount` in `df -k` output."""
    for line in out.splitlines()[1:]:
        f = line.split()
        if f[-1] == mount:
            return int(f[1])
    raise AssertionError((mount, out))


def test_disk_defaults_are_the_documented_ones(d, admin, cells, state):
    """--disk, --tmpfs and --overlay sizes without a SIZE: what df shows."""
    run_text, create_text = cell_help("run"), cell_help("create")
    disk = size(re.search(r"\(default (\d+[KMG])\)", option_text(run_text, "--disk")).group(1))
    tmpfs = size(re.search(r"\(default (\d+[KMG])\)", option_text(run_text, "--tmpfs")).group(1))
    overlay = size(re.search(r"layer of SIZE \(default (\d+[KMG])\)", option_text(run_text, "--overlay")).group(1))
    create_disk = size(re.search(r"(\d+[KMG]) by default\)", option_text(create_text, "--disk")).group(1))
    src = os.path.join(CHECKOUT, "docs")
    r = run_cell(state, ["run", "--tmpfs", "/scratch", "--overlay", src + ":/ov", "--", "df", "-k", "/", "/scratch", "/ov"])
    assert r.returncode == 0, r
    assert [df_kib(r.stdout, m) * 1024 for m in ("/", "/scratch", "/ov")] == [disk, tmpfs, overlay], r.stdout
    cid = cli_create(d, cells)
    assert df_kib(run_in(admin, cid, "df", "-k", "/"), "/") * 1024 == create_disk


# ---- --ttl ---------------------------------------------------------------------------------------


TTL = 4


def gone(admin, cid):
    return admin.get("/v1/cells/%s" % cid).status == 404


def test_ttl_deletes_a_running_cell_idle_that_long(d, admin, cells):
    """Ordering, not timing: cells made before the idle one and kept busy
    outlive it; the ones no longer kept busy follow it."""
    ttl_text = option_text(cell_help("create"), "--ttl")
    assert "delete" in ttl_text and "running process" in ttl_text and "/cells/ID/" in ttl_text, ttl_text
    # 4 s: the polled cell's requests, 0.2 s apart, stay far inside it even
    # on a loaded machine.
    busy = cli_create(d, cells, "--ttl", str(TTL))                   # a process runs
    proc = dm.spawn(admin, busy, "sleep", ["600"])
    polled = cli_create(d, cells, "--ttl", str(TTL))                 # its per-cell API is used
    stopped = cli_create(d, cells, "--ttl", str(TTL))                # not running
    assert cli(d, "stop", stopped).returncode == 0
    idle = cli_create(d, cells, "--ttl", str(TTL))

    def idle_reaped():
        assert admin.get("/cells/%s/v1/health" % polled).status == 200
        return gone(admin, idle)        # a GET /v1/cells/ID every round does not keep it

    assert wait_for(idle_reaped, timeout=60, interval=0.2), "a cell idle past its ttl was not deleted"
    for cid in (busy, polled, stopped):
        r = admin.get("/v1/cells/%s" % cid)
        assert r.status == 200, (cid, r)
    assert admin.get("/v1/cells/%s" % stopped).body["state"] == "stopped"
    recs = admin.get("/v1/audit", query={"limit": "1000"}).body["records"]
    assert any(rec.get("cell") == idle and rec.get("event") == "reaped" and rec.get("ttl") == TTL for rec in recs)
    # Its process ended, the busy cell is idle from then on; so is the polled one.
    assert admin.post("/cells/%s/v1/processes/%s/kill" % (busy, proc)).status in (200, 204)
    assert wait_for(lambda: gone(admin, busy) and gone(admin, polled), timeout=60, interval=0.2)


# ---- hostnames -------------------------------------------------------------------------------


def test_hostnames_are_one_label_as_documented(d, admin, cells, state):
    for cmd in ("run", "create"):
        assert "no dots" in option_text(cell_help(cmd), "--hostname"), cmd
    assert "one label: no `.`" in read_doc("docs", "api.md")
    for bad in ("a.b", "pypi.org", "-x", "x" * 64, "a_b"):
        r = cli(d, "create", "--hostname", bad)
        assert r.returncode == 1 and "hostname" in r.stderr, (bad, r)
        r = run_cell(state, ["run", "--hostname", bad, "--", "true"])
        assert r.returncode != 0 and "hostname" in r.stderr, (bad, r)
        assert admin.post("/v1/cells", {"hostname": bad}).status == 400, bad
    cid = cli_create(d, cells, "--hostname", "web-1")
    assert run_in(admin, cid, "hostname") == "web-1\n"
    r = run_cell(state, ["run", "--hostname", "x" * 63, "--", "hostname"])
    assert r.returncode == 0 and r.stdout == "x" * 63 + "\n", r
    # The default: cell-<8 hex digits>.
    r = run_cell(state, ["run", "--", "hostname"])
    assert r.returncode == 0 and re.fullmatch(r"cell-[0-9a-f]{8}\n", r.stdout), r
    assert re.fullmatch(r"cell-[0-9a-f]{8}\n", run_in(admin, cli_create(d, cells), "hostname"))


# ---- the README's network policy example -------------------------------------------------------

NET = netfake.claim("198.18.46", __name__)
DNS_IP, PYPI_IP, OTHER_IP = NET + ".53", NET + ".10", NET + ".11"
ZONE = {
    "pypi.org": {"A": [PYPI_IP]},
    "files.pythonhosted.org": {"A": [PYPI_IP]},
    "upload.pypi.org": {"A": [PYPI_IP]},
    "other.example": {"A": [OTHER_IP]},
}

# Run in the cell: argv[1] is a JSON list of [host, port]; prints
# {"host:port": "ok" | the error}.  "ok" only when the echo came back.
PROBE = r'''
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"ping")
            out["%s:%d" % (host, port)] = "ok" if s.recv(4) == b"ping" else "no echo"
    except Exception as e:
        out["%s:%d" % (host, port)] = repr(e)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def net(cell):
    if netfake.require_dns() is None:
        pytest.skip("dnspython (python3-dnspython) is needed for the fake DNS server")
    n = netfake.Net([DNS_IP, PYPI_IP, OTHER_IP])
    try:
        n.up()
        zone = netfake.FakeDNS(ZONE)
        n.serve(*zone.servers(DNS_IP), *[netfake.TCPServer((a, p), netfake.Echo)
                                         for a in (PYPI_IP, OTHER_IP) for p in (80, 443)])
        yield zone
    finally:
        n.down()


def readme_policy():
    """The policy of README.md's "Network policy" example, and the command it
    is for."""
    readme = read_doc("README.md")
    section = readme.split("\n## Network policy\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"^echo '(\{.*?\})' > policy\.json\n(.*)$", section, re.M | re.S)
    assert m, "no `echo '{...}' > policy.json` in README's Network policy section"
    return json.loads(m.group(1)), m.group(2).split("\n", 1)[0]


def test_readme_network_example_allows_what_pip_needs_and_nothing_else(run, tmp_path, net):
    policy, command = readme_policy()
    assert "pip download" in command, command
    # Its resolver stands for the reader's: ours is fake.  The peers are on
    # this host's lo (host-self), whose DNS answers the resolver refuses
    # unless "rebind" names them.
    dns = [r["dns"] for r in policy["rules"] if "dns" in r]
    assert len(dns) == 1 and dns[0].get("strict") is True, policy
    dns[0]["upstreams"] = [DNS_IP]
    dns[0]["rebind"] = [NET + ".0/24"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    probes = [["pypi.org", 443], ["files.pythonhosted.org", 443], ["pypi.org", 80], ["upload.pypi.org", 443],
              ["other.example", 443], [OTHER_IP, 443]]
    r = run(["run", "--policy", str(path), "--", "/usr/bin/python3", "-c", PROBE, json.dumps(probes)], timeout=120)
    assert r.returncode == 0, r
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # pip's index and its downloads.
    assert got["pypi.org:443"] == "ok" and got["files.pythonhosted.org:443"] == "ok", got
    # Another port, another name (even one under pypi.org), an address no
    # DNS answer of the cell's gave for an allowed name: denied.
    for k in ("pypi.org:80", "upload.pypi.org:443", "other.example:443", OTHER_IP + ":443"):
        assert got[k] != "ok", (k, got)
    # strict: the other names never left the cell.
    assert "other.example" not in net.names() and "upload.pypi.org" not in net.names(), net.queries()
