"""`cell serve`'s command line and config file (src/daemon/options.c,
docs/config.md): the file's keys are the options without --, flags win over
it, and every bad line, value or option is exit 2 naming the file, line and
key (or the flag) before the daemon touches its state.  A state directory
without a store is refused unless --init, so a mistyped --state cannot
start an empty daemon.

One daemon per test that needs one (three in all); the rest only parse."""
import json
import os
import re
import socket
import subprocess

import pytest

import daemon as dm

EXAMPLE = os.path.join(dm.CHECKOUT, "etc", "cell.conf")


def serve(state, *args, config=None, timeout=30):
    """`cell --state STATE serve ARGS...` that is expected to exit (an error):
    no listener unless ARGS give one.  config: the text of a --config file."""
    argv = [dm.CELL_BIN, "--state", str(state), "serve"]
    if config is not None:
        path = os.path.join(os.path.dirname(str(state)), "cell.conf")
        write_conf(path, config)
        argv += ["--config", path]
    argv += ["--listen", "", "--socket", ""] + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def write_conf(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return str(path)


def assert_usage(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def assert_serving(proc, client, timeout=30):
    """proc, a `cell serve` started by the test, comes to answer client's
    GET /v1/cells with 200 (bounded wait); it must not exit meanwhile."""
    def up():
        assert proc.poll() is None, proc.stderr.read()
        try:
            return client.get("/v1/cells").status == 200
        except OSError:
            return False
    assert dm.wait_for(up, timeout)


def refused(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ---- the config file: a daemon --------------------------------------------------------------


def test_the_file_sets_options_and_flags_win(tmp_path):
    file_port, allow_dir = dm.free_port(), tmp_path / "repos"
    allow_dir.mkdir()
    conf = write_conf(tmp_path / "cell.conf", (
        "# a comment, then an empty line\n"
        "\n"
        "listen = 127.0.0.1:%d    # the flag's --listen wins\n"
        "max-json-size = 2K\n"
        "; semicolon comments too\n"
        "warm = 0\n"
        "limit = cell.pids=300\n"
        "limit = procs.kept=5\n"
        "run-repo-root = %s\n"
        "tenant-max-cells = 3\n"
        "tenant-max-memory = 2G\n" % (file_port, allow_dir)))
    with dm.served(tmp_path / "st", ["--config", conf, "--limit", "cell.pids=200"]) as d:
        admin = d.client()
        assert admin.get("/v1/health").status == 200
        assert refused(file_port), "the file's listen was used although --listen was given"
        # max-json-size from the file: a 3K body is too large.
        r = admin.post("/v1/cells", body=json.dumps({"env": {"A": "x" * 3000}}).encode(),
                       headers={"Content-Type": "application/json"})
        dm.assert_problem(r, 413)
        # --limit cell.pids=200 on the command line over the file's 300.
        dm.assert_problem(admin.post("/v1/cells", {"resources": {"pids": 250}}), 400, detail_has="cell.pids")
        # New tenants get the file's quotas.
        quota = admin.put("/v1/tenants/%s" % dm.uniq("q"), {}).body["quota"]
        assert quota["maxCells"] == 3 and quota["maxMemory"] == 2 << 30 and quota["maxLanes"] == 64, quota


def test_the_example_config_names_real_keys_with_their_defaults(tmp_path):
    """etc/cell.conf (installed as /etc/cell/cell.conf) sets nothing: every
    key in it is commented out, each is an option of cell serve --help, and
    uncommented, its lines parse."""
    lines = open(EXAMPLE).read().splitlines()
    assert not [l for l in lines if l.strip() and not l.startswith("#")], "an uncommented line"
    keyed = [m for m in (re.match(r"^#([a-z][a-z0-9-]*) = (.*)$", l) for l in lines) if m]
    keys = {m.group(1) for m in keyed}
    out = subprocess.run([dm.CELL_BIN, "serve", "--help"], capture_output=True, text=True).stdout
    for k in keys:
        assert "  --" + k + " " in out or "  --" + k + "\n" in out, k
    # Every option of --help but the command-line ones is in the example.
    options = set(re.findall(r"^  --([a-z][a-z0-9-]*)", out, re.M)) - {"help", "config", "no-config", "init"}
    assert options and options <= keys, sorted(options - keys)
    # Uncommented (but the paths, which need not exist here), every line parses.
    skip = ("state", "log", "run-repo-root", "upstream-ca", "pod-policy")
    plain = "".join("%s = %s\n" % m.groups() for m in keyed if m.group(1) not in skip)
    r = serve(tmp_path / "st", "--max-connections", "3", config=plain)
    # The whole file was read; the flag's bad value is what stops it.
    assert_usage(r, "--max-connections must be")


# ---- the config file: errors ----------------------------------------------------------------


@pytest.mark.parametrize("text,line,needle", [
    ("listen = 127.0.0.1:1\nnosuch = 1\n", 2, "unknown key 'nosuch'"),
    ("# ok\n\nlisten = 127.0.0.1:99999\n", 3, "65535"),
    ("max-connections = 3\n", 1, "from 4 to 100000"),
    ("max-connections = lots\n", 1, "max-connections"),
    ("no-token = maybe\n", 1, "true or false"),
    ("listen = 127.0.0.1:1\nsocket = /tmp/x\nlisten = 127.0.0.1:2\n", 3, "set twice (first on line 1); only the "
     "repeatable keys (allow-tenant-dest, limit, warm, run-repo-root"),
    ("[daemon]\nlisten = 127.0.0.1:1\n", 2, "no sections"),
    ("init = true\n", 1, "only on the command line"),
    ("config = /etc/other.conf\n", 1, "only on the command line"),
    ("just words\n", 1, "expected KEY = VALUE"),
    ("--listen = 127.0.0.1:1\n", 1, "unknown key '--listen'"),
    ("allow-tenant-dest = 10.0.0.0/33\n", 1, "allow-tenant-dest 10.0.0.0/33"),
    ("warm = ../x=1\n", 1, "warm"),
    ("limit = cell.pids=-1\n", 1, "limit"),
    ("run-repo-root = relative\n", 1, "absolute path"),
    ("tenant-max-cells = 1000001\n", 1, "tenant-max-cells must be a whole number from 0 to 1000000"),
    ("agent-registry = https://%s/\n" % ("x" * 5000), 1, "longer than"),
])
def test_bad_lines_name_the_file_line_and_key(tmp_path, text, line, needle):
    r = serve(tmp_path / "st", config=text)
    assert_usage(r, "%s:%d:" % (tmp_path / "cell.conf", line), needle)
    assert not (tmp_path / "st").exists(), "the state was touched"


def test_a_config_file_others_can_write_is_refused(tmp_path):
    """Whoever can write the file is the daemon's admin (no-token = true)."""
    for mode in (0o666, 0o620, 0o602):
        path = write_conf(tmp_path / "w.conf", "listen = 127.0.0.1:1\n", mode)
        r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--config", path],
                           capture_output=True, text=True, timeout=30)
        assert_usage(r, path, "writable by no one else")


@pytest.mark.parametrize("what", ["missing", "dir", "fifo", "devnull"])
def test_config_must_name_a_regular_file(tmp_path, what):
    path = {"missing": str(tmp_path / "nope.conf"), "dir": str(tmp_path), "fifo": str(tmp_path / "fifo"),
            "devnull": "/dev/null"}[what]
    if what == "fifo":
        os.mkfifo(path, 0o600)   # must not block the daemon's start
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--config=" + path],
                       capture_output=True, text=True, timeout=30)
    assert_usage(r, path)


def test_config_and_no_config_together_is_an_error(tmp_path):
    path = write_conf(tmp_path / "c.conf", "")
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path), "serve", "--config", path, "--no-config"],
                       capture_output=True, text=True, timeout=30)
    assert_usage(r, "--no-config")


# ---- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--listen", "127.0.0.1:99999"], "0 to 65535"),
    (["--listen=127.0.0.1:65536"], "0 to 65535"),
    (["--listen", "localhost:80"], "numeric"),
    (["--max-connections=3"], "--max-connections must be a whole number from 4 to 100000"),
    (["--max-connections-per-ip", "0"], "from 1 to 100000"),
    (["--idle-timeout", "86401"], "from 1 to 86400"),
    (["--header-timeout", "-5"], "from 1 to 3600"),
    (["--audit-keep", "65"], "from 1 to 64"),
    (["--token-rate", "1000001"], "from 0 to 1000000"),
    (["--max-json-size", "100M"], "between 1K and 64M"),
    (["--max-file-size=0"], "--max-file-size must be between 1K and 1T"),
    (["--bogus"], "unknown option '--bogus'"),
    (["--bogus=1"], "unknown option '--bogus=1'"),
    (["--list", "127.0.0.1:1"], "not abbreviated"),
    (["--no-token-on-tcp"], "not abbreviated"),
    (["--no-token=1"], "takes no value"),
    (["--listen"], "needs a value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_flags_are_exit_2_naming_the_flag(tmp_path, args, needle):
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--no-config"] + args,
                       capture_output=True, text=True, timeout=30)
    assert_usage(r, needle)
    assert "cell serve --help" in r.stderr or "must" in r.stderr or "between" in r.stderr, r.stderr
    assert not (tmp_path / "st").exists()


# ---- the state directory ---------------------------------------------------------------------


def test_a_missing_or_empty_state_needs_init(tmp_path):
    r = serve(tmp_path / "typo", "--no-config")
    assert_usage(r, str(tmp_path / "typo"), "--init")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    r = serve(tmp_path / "empty", "--no-config")
    assert_usage(r, "no cell.db", "--init")
    assert os.listdir(tmp_path / "empty") == []
    # A file where the directory should be: the daemon's own error, not a new store.
    (tmp_path / "file").write_text("x")
    r = serve(tmp_path / "file", "--no-config", "--init")
    assert r.returncode != 0 and str(tmp_path / "file") in r.stderr, r


def test_init_makes_a_store_and_is_harmless_on_an_existing_one(tmp_path):
    state = tmp_path / "new" / "state"
    with dm.served(state) as d:          # the fixture passes --init
        first = d.admin_token
        tenant_token, _ = dm.make_tenant_token(d.client(), "keep")
    assert (state / "cell.db").exists()
    # Again with --init: the same store (the admin token and tenant token still work).
    with dm.served(state) as d:
        assert d.admin_token == first
        assert d.client(token=tenant_token).get("/v1/cells").status == 200
    # And without --init: an existing store needs none.
    port = dm.free_port()
    p = subprocess.Popen([dm.CELL_BIN, "--state", str(state), "serve", "--no-config", "--socket", "",
                          "--listen=127.0.0.1:%d" % port], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert_serving(p, dm.Client("127.0.0.1", port, token=first, timeout=5))
    finally:
        p.terminate()
        assert p.wait(60) == 0


def test_two_inits_of_one_new_state_make_one_store(tmp_path):
    """Two `serve --init` racing on a directory that does not exist yet: one
    daemon serves, the other exits naming the state, and the store is one."""
    state, ports = tmp_path / "new", [dm.free_port(), dm.free_port()]
    procs = [subprocess.Popen([dm.CELL_BIN, "--state", str(state), "serve", "--init", "--no-config", "--socket", "",
                               "--warm", "0", "--listen", "127.0.0.1:%d" % port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for port in ports]
    try:
        assert dm.wait_for(lambda: any(p.poll() is not None for p in procs), 60), "neither exited"
        loser = next(p for p in procs if p.poll() is not None)
        winner = procs[1 - procs.index(loser)]
        assert loser.returncode != 0 and str(state) in loser.stderr.read()
        token = open(state / "admin.token").read().strip() if dm.wait_for(
            lambda: (state / "admin.token").exists(), 30) else None
        assert_serving(winner, dm.Client("127.0.0.1", ports[procs.index(winner)], token=token, timeout=5))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                assert p.wait(60) == 0


def test_help_documents_config_and_init():
    out = subprocess.run([dm.CELL_BIN, "serve", "--help"], capture_output=True, text=True).stdout
    for opt in ("--config FILE", "--no-config", "--init", "--state DIR", "/etc/cell/cell.conf"):
        assert opt in out, opt
