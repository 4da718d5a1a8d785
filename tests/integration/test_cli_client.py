"""The CLI as a client of `cell serve`: create/ls/start/stop/rm, exec, shell,
cp, logs, audit and tokens, against a daemon started once for this module
on a free TCP port (the CLI itself talks to STATE/cell.sock).
"""
import json
import os
import signal
import subprocess
import time

import pytest

import daemon as dm
from conftest import CELL_BIN, run_cell, wait_for


@pytest.fixture(scope="module")
def d(cell):
    """A `cell serve` that runs for the whole module, with its unix socket."""
    yield from dm.serve_cli("cell-it-cli-")


@pytest.fixture(scope="module")
def daemon(d):
    """(state, port) of the module's daemon."""
    return d.state, d.port


@pytest.fixture(scope="module")
def cli(daemon):
    state, _ = daemon

    def _cli(*args, input=None, timeout=60, env=None):
        full = dict(os.environ)
        full.pop("CELL_TOKEN", None)
        full.pop("CELL_URL", None)
        full.update(env or {})
        return run_cell(state, list(args), input=input, timeout=timeout, env=full)

    return _cli


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def cid(cli):
    """A running host-image cell shared by the tests of this module."""
    r = ok(cli("create", "--memory", "256M", "--env", "GREETING=hello"))
    cell_id = r.stdout.strip()
    assert cell_id and "\n" not in cell_id
    yield cell_id
    cli("rm", cell_id)


def run_bytes(state, args, input=None, timeout=60):
    return subprocess.run([CELL_BIN, "--state", state] + list(args), input=input, capture_output=True,
                          timeout=timeout)


# ---- cells ------------------------------------------------------------------------------


def test_create_ls_and_json(cli, cid):
    r = ok(cli("ls"))
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "IMAGE", "LANE", "MEMORY", "CREATED"]
    row = [l for l in lines if l.startswith(cid)]
    assert row and row[0].split()[1:5] == ["running", "host", "-", "256M"], r.stdout
    cells = json.loads(ok(cli("--json", "ls")).stdout)["cells"]
    mine = [c for c in cells if c["id"] == cid][0]
    assert mine["state"] == "running" and mine["env"] == {"GREETING": "hello"}
    assert mine["resources"]["memory"] == 256 << 20


def test_create_json_stop_start_rm(cli):
    c = json.loads(ok(cli("--json", "create", "--mount-memory", "/scratch:16M", "--hostname", "box")).stdout)
    try:
        assert c["state"] == "running" and c["hostname"] == "box"
        assert c["mounts"] == [{"type": "memory", "target": "/scratch", "size": 16 << 20}]
        r = ok(cli("exec", c["id"], "--", "sh", "-c", "hostname; grep -c ' /scratch ' /proc/mounts"))
        assert r.stdout == "box\n1\n"
        assert ok(cli("stop", c["id"])).stdout == c["id"] + "\n"
        r = cli("exec", c["id"], "--", "true")
        assert r.returncode == 1 and "stopped" in r.stderr
        assert json.loads(ok(cli("--json", "start", c["id"])).stdout)["state"] == "running"
        ok(cli("exec", c["id"], "--", "true"))
    finally:
        r = cli("--json", "rm", c["id"])
    assert json.loads(ok(r).stdout) == {"id": c["id"], "deleted": True}
    assert c["id"] not in ok(cli("ls")).stdout


def test_create_usage_errors(cli):
    for args in (["--memory", "lots"], ["--env", "NOEQUALS"], ["--cpus", "-1"], ["--bogus"], ["--image"]):
        r = cli("create", *args)
        assert r.returncode == 2 and r.stderr.startswith("cell: "), (args, r.stderr)
    r = cli("create", "--memory", "1M")
    assert r.returncode == 1 and "resources.memory" in r.stderr


def test_unknown_cell_is_a_clear_error(cli, hostdir):
    # Uploads are refused at their headers, before the body is sent.
    os.mkdir(os.path.join(hostdir, "d"))
    with open(os.path.join(hostdir, "d", "f"), "wb") as f:
        f.write(os.urandom(3 << 20))
    for args in (["exec", "nosuchcell", "--", "true"], ["stop", "nosuchcell"], ["rm", "nosuchcell"],
                 ["cp", "nosuchcell:/etc/hostname", os.path.join(hostdir, "x")], ["shell", "nosuchcell", "sh"],
                 ["logs", "nosuchcell", "proc_1"], ["cp", os.path.join(hostdir, "d"), "nosuchcell:/tmp/d"],
                 ["cp", os.path.join(hostdir, "d", "f"), "nosuchcell:/tmp/f"]):
        r = cli(*args, input="")
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("cell: ") and "not found: cell nosuchcell" in r.stderr, (args, r.stderr)
        assert r.stdout == ""


def test_help_texts(cli):
    for cmd in ("create", "ls", "start", "stop", "rm", "exec", "shell", "cp", "logs", "audit", "token"):
        r = ok(cli(cmd, "--help"))
        assert r.stdout.startswith("usage: cell ") and "exit codes" in r.stdout, cmd
        assert ok(cli("help", cmd)).stdout == r.stdout


# ---- exec -------------------------------------------------------------------------------


def test_exec_exit_code_and_streams(cli, cid):
    r = cli("exec", cid, "--", "sh", "-c", "echo out; echo err >&2; echo $GREETING; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\nhello\n", "err\n")
    r = cli("exec", cid, "--cwd", "/tmp", "--env", "X=1", "--env", "GREETING=bye", "--", "sh", "-c",
            "pwd; echo $X $GREETING")
    assert (r.returncode, r.stdout) == (0, "/tmp\n1 bye\n")
    # Without "--" too, and a command that cannot start.
    assert ok(cli("exec", cid, "echo", "a b")).stdout == "a b\n"
    r = cli("exec", cid, "--", "/no/such/program")
    assert r.returncode == 127 and r.stderr.startswith("cell: "), r.stderr
    assert cli("exec", cid, "--", "/etc/passwd").returncode == 126
    assert cli("shell", cid, "/no/such/program", input="").returncode == 127


def test_exec_timeout_is_124(cli, cid):
    t = time.monotonic()
    r = cli("exec", cid, "--timeout", "1", "--", "sleep", "30")
    assert r.returncode == 124, (r.stdout, r.stderr)
    assert time.monotonic() - t < 15
    assert "timed out" in r.stderr


def test_exec_json(cli, cid):
    r = cli("--json", "exec", cid, "--", "sh", "-c", "echo o; echo e >&2; exit 3")
    assert r.returncode == 3
    res = json.loads(r.stdout)
    assert (res["exitCode"], res["stdout"], res["stderr"], res["timedOut"]) == (3, "o\n", "e\n", False)


def test_exec_killed_by_signal(cli, cid):
    r = cli("exec", cid, "--", "sh", "-c", "kill -9 $$")
    assert r.returncode == 137, (r.returncode, r.stderr)


# ---- cp -----------------------------------------------------------------------------------


def test_cp_file_both_ways_binary(cli, cid, daemon, hostdir):
    state, _ = daemon
    data = bytes(range(256)) * 64 + b"\0\r\n\xff"
    src = os.path.join(hostdir, "blob.bin")
    with open(src, "wb") as f:
        f.write(data)
    ok(cli("cp", src, "%s:/tmp/blob.bin" % cid))
    r = run_bytes(state, ["exec", cid, "--", "sha256sum", "/tmp/blob.bin"])
    import hashlib
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    # Onto a directory: keeps its name.  Back out into a directory and to a name.
    ok(cli("cp", src, "%s:/tmp/" % cid))
    out = os.path.join(hostdir, "out")
    os.mkdir(out)
    ok(cli("cp", "%s:/tmp/blob.bin" % cid, out))
    ok(cli("cp", "%s:/tmp/blob.bin" % cid, os.path.join(out, "renamed")))
    for name in ("blob.bin", "renamed"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read() == data


def test_cp_20mib_file(cli, cid, hostdir):
    data = os.urandom(20 << 20)
    src = os.path.join(hostdir, "big")
    with open(src, "wb") as f:
        f.write(data)
    ok(cli("cp", src, "%s:/tmp/big" % cid, timeout=120))
    back = os.path.join(hostdir, "big.back")
    ok(cli("cp", "%s:/tmp/big" % cid, back, timeout=120))
    with open(back, "rb") as f:
        assert f.read() == data
    assert ok(cli("exec", cid, "--", "stat", "-c", "%s", "/tmp/big")).stdout == "%d\n" % (20 << 20)


def test_cp_directory_in(cli, cid, hostdir):
    src = os.path.join(hostdir, "tree")
    os.makedirs(os.path.join(src, "sub", "deeper"))
    with open(os.path.join(src, "sub", "deeper", "bin"), "wb") as f:
        f.write(b"\x00\x01\xfe\xff")
    with open(os.path.join(src, "top.txt"), "w") as f:
        f.write("top\n")
    os.chmod(os.path.join(src, "top.txt"), 0o750)
    os.symlink("top.txt", os.path.join(src, "link"))
    os.mkfifo(os.path.join(src, "fifo"))
    ok(cli("exec", cid, "--", "rm", "-rf", "/tmp/tree", "/tmp/newdir"))
    # DST missing: the directory becomes DST.  The tar stream comes from the
    # archive plugin; what it cannot copy is named and skipped.
    r = ok(cli("cp", src, "%s:/tmp/newdir" % cid))
    assert "cell: cp: skipping %s: only files, directories and symlinks" % os.path.join(src, "fifo") in r.stderr, r.stderr
    assert cli("exec", cid, "--", "test", "-e", "/tmp/newdir/fifo").returncode == 1
    # DST an existing directory: DST/NAME.
    ok(cli("cp", src + "/", "%s:/tmp" % cid))
    for root in ("/tmp/newdir", "/tmp/tree"):
        r = ok(cli("exec", cid, "--", "sh", "-c",
                   "cd %s && od -An -tx1 sub/deeper/bin && cat top.txt && readlink link && stat -c %%a top.txt" % root))
        assert r.stdout.split() == ["00", "01", "fe", "ff", "top", "top.txt", "750"], (root, r.stdout)


def test_cp_into_proc_is_the_cells_write_not_the_daemons(cli, cid, hostdir):
    """cp goes through the daemon's fs API (fsapi), whose bytes are moved by a
    process of the cell: lowering a process's oom_score_adj or its autogroup
    nice needs host capabilities the daemon has and the cell's root has not."""
    tag = "3600.%d" % (os.getpid() % 100000)
    ok(cli("exec", cid, "--", "sh", "-c", "sleep %s >/dev/null 2>&1 &" % tag))
    want = b"sleep\0" + tag.encode() + b"\0"

    def find():
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    if f.read() == want:
                        return int(name)
            except OSError:
                pass
        return None
    assert wait_for(lambda: find() is not None, 10)
    hp = find()
    with open("/proc/%d/status" % hp) as f:
        pid = int([l for l in f if l.startswith("NSpid:")][0].split()[-1])

    def host(name):
        with open("/proc/%d/%s" % (hp, name)) as f:
            return int(f.read().split()[-1])
    attacks = [("oom_score_adj", b"-1000")]
    if os.path.exists("/proc/%d/autogroup" % hp):
        attacks.append(("autogroup", b"-20"))
    for name, value in attacks:
        before = host(name)
        src = os.path.join(hostdir, name)
        with open(src, "wb") as f:
            f.write(value)
        r = cli("cp", src, "%s:/proc/%d/%s" % (cid, pid, name))
        assert r.returncode != 0, (name, r.stdout, r.stderr)
        assert host(name) == before, name
    # What cp reads is read by the transfer process in the cell, not the daemon.
    out = os.path.join(hostdir, "status")
    ok(cli("cp", "%s:/proc/self/status" % cid, out))
    with open(out) as f:
        st = dict(l.split(":", 1) for l in f.read().splitlines())
    assert st["Name"].strip() == "cell-fs" and st["Uid"].split() == ["0"] * 4, st
    cli("exec", cid, "--", "pkill", "-f", "sleep " + tag)


def test_cp_errors_name_the_side(cli, cid, hostdir):
    r = cli("cp", "%s:/no/such/file" % cid, os.path.join(hostdir, "x"))
    assert r.returncode == 1 and ("%s:/no/such/file" % cid) in r.stderr, r.stderr
    assert not os.listdir(hostdir), "a failed download left files"
    r = cli("cp", os.path.join(hostdir, "missing"), "%s:/tmp/x" % cid)
    assert r.returncode == 1 and os.path.join(hostdir, "missing") in r.stderr, r.stderr
    r = cli("cp", "%s:/etc/hostname" % cid, "/no/such/dir/x")
    assert r.returncode == 1 and "/no/such/dir/x" in r.stderr, r.stderr
    for args in (["a", "b"], ["%s:/a" % cid, "%s:/b" % cid], ["only-one"]):
        assert cli("cp", *args).returncode == 2


# ---- shell and logs ---------------------------------------------------------------------


def test_shell_with_piped_stdin(cli, cid):
    r = cli("shell", cid, "sh", input="echo hi\nexit 3\n", timeout=30)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "hi" in r.stdout


def test_shell_double_dash_and_args(cli, cid):
    r = cli("shell", cid, "--", "sh", "-c", "echo $((6*7)); exit 9", input="", timeout=30)
    assert r.returncode == 9 and "42" in r.stdout, (r.stdout, r.stderr)


def test_shell_default_and_eof(cli, cid):
    # No CMD: bash (the host image has it); stdin EOF ends it.
    r = cli("shell", cid, input="echo $0; false\n", timeout=30)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "bash" in r.stdout


def test_shell_sigterm_kills_the_command(daemon, cli, cid):
    state, _ = daemon
    p = subprocess.Popen([CELL_BIN, "--state", state, "shell", cid, "--", "sleep", "600"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def sleeping():
            r = ok(cli("exec", cid, "--", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"))
            return "sleep 600" in r.stdout
        assert wait_for(sleeping, 10)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 128 + signal.SIGTERM
        assert wait_for(lambda: not sleeping(), 10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
        p.stdin.close()


def test_logs(daemon, cli, cid):
    state, port = daemon
    token = open(os.path.join(state, "admin.token")).read().strip()
    import urllib.request

    def api(method, path, body=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    p = api("POST", "/cells/%s/v1/processes" % cid,
            {"command": "sh", "args": ["-c", "printf 'a\\0b\\n'; echo E >&2; sleep 1; echo late"]})
    r = run_bytes(state, ["logs", cid, p["id"], "--follow", "--stream", "stdout"], timeout=30)
    assert (r.returncode, r.stdout) == (0, b"a\0b\nlate\n"), r.stderr
    r = run_bytes(state, ["logs", cid, p["id"], "--stream", "stderr"])
    assert (r.returncode, r.stdout) == (0, b"E\n")
    r = run_bytes(state, ["logs", cid, p["id"]])
    assert sorted(r.stdout.splitlines()) == sorted([b"a\0b", b"E", b"late"])
    r = ok(cli("--json", "logs", cid, p["id"]))
    assert len(json.loads(r.stdout)["entries"]) >= 3
    r = ok(cli("--json", "logs", cid, p["id"], "--follow"))
    assert all(json.loads(line)["encoding"] == "base64" for line in r.stdout.splitlines())
    r = cli("logs", cid, "proc_9999")
    assert r.returncode == 1 and "proc_9999" in r.stderr
    assert cli("logs", cid, p["id"], "--stream", "both").returncode == 2


# ---- audit and tokens ----------------------------------------------------------------------------


def test_audit_shows_the_requests(cli, cid):
    since = int(time.time() * 1000) - 1
    ok(cli("exec", cid, "--", "true"))
    r = ok(cli("audit", "--since", str(since)))
    # exec starts a process (POST processes) and follows its output.
    path = "/cells/%s/v1/processes" % cid
    lines = [l for l in r.stdout.splitlines() if l.split()[3:5] == ["POST", path]]
    assert lines and lines[0].split()[1:] == ["default", "request", "POST", path, "200"], r.stdout
    recs = json.loads(ok(cli("--json", "audit", "--limit", "5")).stdout)["records"]
    assert 1 <= len(recs) <= 5 and all("ts_ms" in x for x in recs)
    assert cli("audit", "--limit", "x").returncode == 2


def test_tokens(cli):
    r = ok(cli("token", "create", "--tenant", "clitest", "--label", "ci"))
    bearer = r.stdout.strip()
    assert bearer and "\n" not in bearer and "shown only" in r.stderr
    toks = json.loads(ok(cli("--json", "token", "ls")).stdout)["tokens"]
    mine = [t for t in toks if t["tenant"] == "clitest"]
    assert len(mine) == 1 and mine[0]["label"] == "ci" and not mine[0]["admin"] and not mine[0]["revoked"]
    assert mine[0]["id"] in ok(cli("token", "ls")).stdout
    as_tenant = {"CELL_TOKEN": bearer}
    r = ok(cli("--json", "ls", env=as_tenant))
    assert json.loads(r.stdout) == {"cells": []}, "another tenant's cells are visible"
    r = cli("token", "ls", env=as_tenant)
    assert r.returncode == 1 and "admin" in r.stderr
    assert ok(cli("token", "revoke", mine[0]["id"])).stdout.strip() == "revoked token %s" % mine[0]["id"]
    r = cli("ls", env=as_tenant)
    assert r.returncode == 1 and "$CELL_TOKEN" in r.stderr, r.stderr
    assert cli("token", "revoke", "nosuchtoken").returncode == 1
    assert cli("token", "create", "--label", "x").returncode == 2
    t = json.loads(ok(cli("--json", "token", "create", "--tenant", "clitest", "--admin", "--rate", "5")).stdout)
    assert t["admin"] and t["rate"] == 5 and t["token"].startswith("cell_")
    ok(cli("token", "revoke", t["id"]))


# ---- reaching the daemon -------------------------------------------------------------------------


def test_url_flag_and_env(daemon, cli, cid):
    _, port = daemon
    url = "http://127.0.0.1:%d" % port
    assert cid in ok(cli("--url", url, "ls")).stdout
    assert cid in ok(cli("ls", env={"CELL_URL": url})).stdout


def test_daemon_not_running(cell, hostdir):
    for args, where in ((["--state", hostdir], "unix:%s/cell.sock" % hostdir),
                        (["--url", "http://127.0.0.1:%d" % dm.free_port()], "http://127.0.0.1:")):
        r = subprocess.run([cell] + args + ["ls"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 125, r.stderr
        assert r.stderr.startswith("cell: cannot reach the cell daemon at " + where), r.stderr
        assert "start it with `cell serve`" in r.stderr
