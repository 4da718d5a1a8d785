"""`cell exec` as `docker exec` (live stdout and stderr kept apart, -i, -t,
--user, --env, --cwd, exit codes), `cell cp` of directories both ways and of
tar streams (`-`), and a hostile cell's tar on the download side; against a
daemon started once for this module (issue 14, "CLI conventions").
"""
import hashlib
import io
import os
import pty
import select
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

import daemon as dm
from conftest import CELL_BIN, run_cell


@pytest.fixture(scope="module")
def d(cell):
    state = tempfile.mkdtemp(prefix="cell-it-exec-")
    try:
        yield from dm.serve(state, unix_socket=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def cli_env():
    env = dict(os.environ)
    env.pop("CELL_TOKEN", None)
    env.pop("CELL_URL", None)
    return env


@pytest.fixture(scope="module")
def cli(d):
    def _cli(*args, input=None, timeout=120):
        return run_cell(d.state, list(args), input=input, timeout=timeout, env=cli_env())
    return _cli


def raw(d, args, input=None, timeout=120, **kw):
    """The CLI with bytes in and out."""
    return subprocess.run([CELL_BIN, "--state", d.state] + list(args), input=input, capture_output=True,
                          timeout=timeout, env=cli_env(), **kw)


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


@pytest.fixture(scope="module")
def cid(cli):
    r = ok(cli("create", "--memory", "512M"))
    cell_id = r.stdout.strip()
    yield cell_id
    cli("rm", cell_id)


# ---- exec: output ---------------------------------------------------------------------------


def test_big_output_intact_on_both_streams(d, cid):
    # 3 MiB and 2 MiB, interleaved: far over the old 1 MiB cut.
    script = ("i=0; while [ $i -lt 48 ]; do head -c 65536 /dev/zero | tr '\\0' o; "
              "head -c 43690 /dev/zero | tr '\\0' e >&2; i=$((i+1)); done; echo end")
    r = raw(d, ["exec", cid, "--", "sh", "-c", script])
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout == b"o" * (48 * 65536) + b"end\n"
    assert r.stderr == b"e" * (48 * 43690)


def test_backpressure_keeps_output_past_a_small_log(d, cid):
    """With the cell's log cut to 64 KiB per process, 8 MiB still arrive
    whole: the daemon holds the process back instead of dropping output."""
    c = d.client()
    conf = c.get("/cells/%s/v1/processes/config" % cid).body
    small = dict(conf, maxLogBytesPerProcess=65536)
    assert c.post("/cells/%s/v1/processes/config" % cid, small).status == 200
    try:
        r = raw(d, ["exec", cid, "--", "sh", "-c", "head -c 8388608 /dev/urandom | base64 -w 76; echo done >&2"])
        assert r.returncode == 0, r.stderr[-500:]
        assert r.stderr == b"done\n"
        lines = r.stdout.split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == (8388608 * 4 // 3 + 75) // 76
        assert all(len(x) == 76 for x in lines[:-2])
    finally:
        assert c.post("/cells/%s/v1/processes/config" % cid, conf).status == 200


def test_closed_stdout_ends_the_process(d, cid):
    """`cell exec ... | head -c 10`: we stop and the process is killed, not left running."""
    script = ("%s --state %s exec %s -- sh -c 'while :; do echo marker-pipe; done' | head -c 10; "
              "echo \" ${PIPESTATUS[0]}\"" % (CELL_BIN, d.state, cid))
    p = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, env=cli_env())
    out, _ = p.communicate(timeout=60)
    assert out == b"marker-pip 141\n", out
    c = d.client()
    def gone():
        procs = c.get("/cells/%s/v1/processes" % cid).body["processes"]
        return not [x for x in procs if x["status"] == "running" and "marker-pipe" in " ".join(x["args"])]
    dm.wait_for(gone, timeout=30)


# ---- exec: stdin ------------------------------------------------------------------------------


def test_stdin_piped_through_with_i(d, cid):
    data = os.urandom(3 << 20)
    r = raw(d, ["exec", "-i", cid, "--", "sha256sum"], input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    # cat sees the end of its input and exits; nothing is lost or doubled.
    r = raw(d, ["exec", "--interactive", cid, "cat"], input=b"line 1\nline 2\n")
    assert (r.returncode, r.stdout) == (0, b"line 1\nline 2\n")


def test_without_i_stdin_is_empty(d, cid):
    r = raw(d, ["exec", cid, "--", "sh", "-c", "cat; echo after"], input=b"not sent\n", timeout=60)
    assert (r.returncode, r.stdout) == (0, b"after\n")


# ---- exec: a terminal ----------------------------------------------------------------------------


def run_on_pty(argv, send, timeout=60, prompt=True):
    """argv with stdin, stdout and stderr a new pty; `send` typed into it
    (after a shell prompt shows, with prompt).  Returns (exit code,
    everything the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=cli_env(), close_fds=True)
    os.close(slave)
    out = b""
    sent = False
    if not prompt:
        os.write(master, send)
        sent = True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if not sent and (b"$ " in out or b"# " in out):
                os.write(master, send)
                sent = True
        elif p.poll() is not None:
            break
    p.wait(timeout=30)
    os.close(master)
    return p.returncode, out


def test_tty_with_a_pty(d, cid):
    code, out = run_on_pty([CELL_BIN, "--state", d.state, "exec", "-it", cid, "--", "sh", "-i"],
                           b"tty; echo sum-$((40+2)); exit 3\n")
    assert code == 3, out
    assert b"sum-42" in out and b"/dev/pts/" in out, out


def test_i_from_a_terminal_without_t(d, cid):
    """-i alone on a terminal: our terminal stays cooked, its ^D ends CMD's input."""
    code, out = run_on_pty([CELL_BIN, "--state", d.state, "exec", "-i", cid, "--", "sh", "-c",
                            "cat; echo after-eof; test -t 0 || echo stdin-not-a-tty"], b"typed-line\n\x04",
                           prompt=False)
    assert code == 0, out
    assert out.count(b"typed-line") == 2 and b"after-eof" in out and b"stdin-not-a-tty" in out, out


def test_tty_keeps_one_stream(d, cid):
    r = raw(d, ["exec", "-t", cid, "--", "sh", "-c", "echo to-out; echo to-err >&2; test -t 1"])
    assert r.returncode == 0, r.stderr
    assert b"to-out" in r.stdout and b"to-err" in r.stdout and r.stderr == b""


# ---- exec: exit codes, env, user, cwd ------------------------------------------------------------


def test_exit_codes(cli, cid):
    assert cli("exec", cid, "--", "sh", "-c", "exit 42").returncode == 42
    assert cli("exec", cid, "--", "sh", "-c", "kill -TERM $$").returncode == 128 + 15
    assert cli("exec", cid, "--", "sh", "-c", "kill -9 $$").returncode == 128 + 9
    r = cli("exec", cid, "--", "no-such-command-xyz")
    assert r.returncode == 127 and "no-such-command-xyz: command not found in cell" in r.stderr, r.stderr
    r = cli("exec", cid, "--", "/etc/passwd")
    assert r.returncode == 126 and "cannot be executed" in r.stderr, r.stderr
    r = cli("exec", "-w", "/no/such/dir", cid, "--", "true")
    assert r.returncode == 126 and "working directory /no/such/dir" in r.stderr, r.stderr
    r = cli("exec", "--timeout", "1", cid, "--", "sleep", "60")
    assert r.returncode == 124 and "timed out" in r.stderr


def test_env_user_cwd(cli, cid):
    r = ok(cli("exec", "-e", "A=1", "--env", "B=two words", "-w", "/tmp", "-u", "1000:1001", cid, "--",
               "sh", "-c", 'echo "$A|$B|$(pwd)|$(id -u)|$(id -g)"'))
    assert r.stdout == "1|two words|/tmp|1000|1001\n"
    # Options after the ID, and CMD's own options stay CMD's.
    r = ok(cli("exec", cid, "--user", "nobody", "--workdir", "/", "id", "-u"))
    assert r.stdout.strip() == ok(cli("exec", cid, "--", "id", "-u", "nobody")).stdout.strip()
    assert ok(cli("exec", cid, "-u", "0", "ls", "-d", "/")).stdout == "/\n"


def test_exec_bad_input(cli, cid):
    for args, code, words in (
            (["exec", "-u", "70000", cid, "true"], 1, "user must be UID or UID:GID"),
            (["exec", "-u", "no-such-user-xyz", cid, "true"], 1, "no user 'no-such-user-xyz'"),
            (["exec", "-u", "0:no-such-group-xyz", cid, "true"], 1, "no group"),
            (["exec", "-u", ":5", cid, "true"], 2, "USER[:GROUP]"),
            (["exec", "-e", "=x", cid, "true"], 2, "NAME=VALUE"),
            (["exec", "--timeout", "-1", cid, "true"], 2, "--timeout"),
            (["exec", "--bogus", cid, "true"], 2, "unknown option"),
            (["exec", "-u"], 2, "needs a value"),
            (["exec", cid], 2, "missing CMD"),
            (["exec"], 2, "missing cell ID"),
            (["exec", "nosuchcell", "true"], 1, "nosuchcell"),
            (["--json", "exec", "-i", cid, "true"], 2, "--json")):
        r = cli(*args)
        assert r.returncode == code and words in r.stderr, (args, r.returncode, r.stderr)


def test_api_input_eof_user_and_signal(d, cid):
    """The daemon's side: input "eof", "user" and "signal" (docs/api.md)."""
    c = d.client()
    base = "/cells/%s/v1/processes" % cid
    p = c.post(base, {"command": "sh", "args": ["-c", "cat; echo; id -u"], "interactive": True, "user": "7"}).body
    assert c.post(base + "/%s/input" % p["id"], {"data": "aGk=", "eof": True}).body == {"bytesWritten": 2}
    dm.wait_for(lambda: c.get(base + "/" + p["id"]).body["status"] == "exited")
    logs = c.get(base + "/%s/logs" % p["id"], query={"stream": "stdout"}).body["entries"]
    import base64
    assert b"".join(base64.b64decode(e["data"]) for e in logs) == b"hi\n7\n"
    assert c.post(base + "/%s/input" % p["id"], {"data": "", "eof": True}).status == 409
    for bad in ("-1", "65536", "1:", "a", "1:2:3", " 1", "1 "):
        dm.assert_problem(c.post(base, {"command": "true", "user": bad}), 400, "invalid_request", "user must be")
    dm.assert_problem(c.post(base, {"command": "true", "user": 5}), 422, "invalid_request", "user")
    t = c.post(base, {"command": "sh", "tty": True, "interactive": True}).body
    dm.assert_problem(c.post(base + "/%s/input" % t["id"], {"data": "", "eof": True}), 400, "invalid_request", "^D")
    dm.assert_problem(c.post(base + "/%s/input" % t["id"], {"data": "", "eof": "yes"}), 422, "invalid_request", "eof")
    k = c.post(base + "/%s/kill" % t["id"], query={"waitMs": "5000"}).body
    assert k["status"] == "exited" and k["signal"] == 9 and "exitCode" not in k, k
    q = c.post(base, {"command": "cat", "interactive": True}).body
    assert c.post(base + "/%s/input" % q["id"], {"data": "", "eof": True}).status == 200
    dm.wait_for(lambda: c.get(base + "/" + q["id"]).body.get("exitCode") == 0)
    for x in (p, t, q):
        c.delete(base + "/" + x["id"])


def test_a_paced_process_never_holds_the_daemon(d, cid):
    """backpressure: with nobody following, the process waits (and can be
    killed); a follower that reads a little and hangs up ends the pacing,
    so the process runs to its end instead of hanging for ever."""
    c = d.client()
    base = "/cells/%s/v1/processes" % cid
    conf = c.get(base + "/config").body
    assert c.post(base + "/config", dict(conf, maxLogBytesPerProcess=65536)).status == 200
    try:
        body = {"command": "sh", "args": ["-c", "head -c 4000000 /dev/zero; echo done >&2"], "backpressure": True}
        p = c.post(base, body).body
        time.sleep(1)    # not a timing assertion: only lets the process run into its limit
        assert c.get(base + "/" + p["id"]).body["status"] == "running"
        k = c.post(base + "/%s/kill" % p["id"], query={"waitMs": "5000"}).body
        assert k["status"] == "exited" and k["signal"] == 9
        q = c.post(base, body).body
        conn, r = c.stream("GET", base + "/%s/logs?follow=true" % q["id"])
        assert r.status == 200 and r.read(1000)
        conn.close()
        dm.wait_for(lambda: c.get(base + "/" + q["id"]).body["status"] == "exited", timeout=60)
        assert c.get(base + "/" + q["id"]).body["exitCode"] == 0
        for x in (p, q):
            assert c.delete(base + "/" + x["id"]).status == 204
    finally:
        assert c.post(base + "/config", conf).status == 200


def test_another_tenants_cell_is_not_found(d, cid):
    bob, _ = dm.make_tenant_token(d.client(), "bob-exec")
    env = dict(cli_env(), CELL_TOKEN=bob)
    for args in (["exec", cid, "true"], ["exec", "-it", cid, "sh"], ["cp", "%s:/etc" % cid, "-"],
                 ["cp", "-", "%s:/tmp" % cid]):
        r = subprocess.run([CELL_BIN, "--state", d.state] + args, input=b"", capture_output=True, env=env,
                           timeout=60)
        assert r.returncode == 1 and cid.encode() in r.stderr, (args, r.returncode, r.stderr)


# ---- cp ---------------------------------------------------------------------------------------------


def make_tree(root):
    os.makedirs(os.path.join(root, "sub", "deeper"))
    with open(os.path.join(root, "a.txt"), "wb") as f:
        f.write(b"alpha\n")
    with open(os.path.join(root, "sub", "deeper", "big.bin"), "wb") as f:
        f.write(os.urandom(3 << 20))
    with open(os.path.join(root, "sub", "run.sh"), "wb") as f:
        f.write(b"#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "sub", "run.sh"), 0o755)
    os.symlink("a.txt", os.path.join(root, "link"))


def tree_of(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mode & 0o7777)
    return out


def test_cp_directory_both_ways(cli, cid, hostdir):
    src = os.path.join(hostdir, "tree")
    make_tree(src)
    ok(cli("exec", cid, "--", "rm", "-rf", "/tmp/cpd"))
    ok(cli("cp", src, "%s:/tmp/cpd" % cid))
    # Out into a new DST (it becomes DST) and into an existing one (DST/NAME).
    back = os.path.join(hostdir, "back")
    ok(cli("cp", "%s:/tmp/cpd" % cid, back))
    assert tree_of(back) == tree_of(src)
    into = os.path.join(hostdir, "into")
    os.mkdir(into)
    ok(cli("cp", "%s:/tmp/cpd/" % cid, into))
    assert tree_of(os.path.join(into, "cpd")) == tree_of(src)


def test_cp_tar_streams(d, cli, cid, hostdir):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (("x/one.txt", b"one\n"), ("x/two/three.txt", b"three\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    ok(cli("exec", cid, "--", "rm", "-rf", "/tmp/tars"))
    ok(raw(d, ["cp", "-", "%s:/tmp/tars" % cid], input=buf.getvalue()))
    assert ok(cli("exec", cid, "--", "cat", "/tmp/tars/x/two/three.txt")).stdout == "three\n"
    r = ok(raw(d, ["cp", "%s:/tmp/tars/x" % cid, "-"]))
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        names = sorted(n.rstrip("/") for n in t.getnames())
        assert names == ["x", "x/one.txt", "x/two", "x/two/three.txt"], names
        assert t.extractfile("x/one.txt").read() == b"one\n"
    # Never binary to a terminal, never a terminal as a tar.
    code, out = run_on_pty([CELL_BIN, "--state", d.state, "cp", "%s:/tmp/tars/x" % cid, "-"], b"")
    assert code == 2 and b"> FILE.tar" in out, out
    code, out = run_on_pty([CELL_BIN, "--state", d.state, "cp", "-", "%s:/tmp/tars" % cid], b"")
    assert code == 2 and b"not a tar" in out, out


def hostile_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for kind, name, arg in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(arg)
                info.mode = 0o6755
                t.addfile(info, io.BytesIO(arg))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = arg
                t.addfile(info)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = arg
                t.addfile(info)
    return buf.getvalue()


@pytest.fixture
def evil(cli):
    """A cell whose `tar` is the cell's own: a script first in its PATH
    (the host image's /usr is read-only; in a debian-bookworm cell an agent
    could replace /usr/bin/tar itself) that answers with /tmp/evil.tar."""
    r = ok(cli("create", "--memory", "256M", "--env", "PATH=/tmp/evil:/usr/sbin:/usr/bin:/sbin:/bin"))
    cell_id = r.stdout.strip()
    yield cell_id
    cli("rm", cell_id)


def test_hostile_cells_tar_stays_below_dst(d, cli, evil, hostdir):
    """Nothing the cell's tar says may land outside DST."""
    cid = evil
    outside = os.path.join(hostdir, "outside")
    os.mkdir(outside)
    sentinel = os.path.join(outside, "sentinel")
    with open(sentinel, "wb") as f:
        f.write(b"untouched\n")
    cases = {
        "dotdot": ([("file", "ok.txt", b"fine\n"), ("file", "../outside/escaped", b"x")], 1),
        "deepdotdot": ([("dir", "a", None), ("file", "a/../../outside/escaped", b"x")], 1),
        "through-link": ([("symlink", "lnk", outside), ("file", "lnk/escaped", b"x")], 1),
        "dir-through-link": ([("symlink", "lnk", outside), ("dir", "lnk/sub", None)], 1),
        "replace-link": ([("symlink", "s", sentinel), ("file", "s", b"replaced\n")], 0),
        "absolute": ([("file", "/abs-escaped", b"x")], 0),
        "setuid-and-hardlink": ([("file", "suid", b"#!/bin/sh\n"), ("hardlink", "hl", sentinel)], 0),
    }
    ok(cli("exec", cid, "--", "sh", "-c", "mkdir -p /tmp/evil /tmp/hostile-src && "
           "printf '#!/bin/sh\\ncat /tmp/evil.tar\\n' > /tmp/evil/tar && chmod 755 /tmp/evil/tar"))
    for name, (entries, code) in cases.items():
        path = os.path.join(hostdir, "in-" + name)
        with open(path, "wb") as f:
            f.write(hostile_tar(entries))
        ok(cli("cp", path, "%s:/tmp/evil.tar" % cid))
        dst = os.path.join(hostdir, "dst-" + name)
        r = cli("cp", "%s:/tmp/hostile-src" % cid, dst)
        assert r.returncode == code, (name, r.returncode, r.stderr)
        if code:
            assert "refusing" in r.stderr, (name, r.stderr)
        assert sorted(os.listdir(outside)) == ["sentinel"], name
        with open(sentinel, "rb") as f:
            assert f.read() == b"untouched\n", name
        assert not os.path.exists("/abs-escaped")
    assert os.path.exists(os.path.join(hostdir, "dst-dotdot", "ok.txt"))
    with open(os.path.join(hostdir, "dst-replace-link", "s"), "rb") as f:
        assert f.read() == b"replaced\n"
    assert os.path.isfile(os.path.join(hostdir, "dst-absolute", "abs-escaped"))
    st = os.stat(os.path.join(hostdir, "dst-setuid-and-hardlink", "suid"))
    assert st.st_mode & 0o7777 == 0o755, oct(st.st_mode)
    assert not os.path.exists(os.path.join(hostdir, "dst-setuid-and-hardlink", "hl"))


def test_a_tars_padding_after_its_end_is_not_a_failure(cli, evil, hostdir):
    """tar pads its archive to a record; padding that arrives after the parser
    saw the end-of-archive blocks is read and dropped (it once ended cp with
    141 when it came late).  A tar that never stops is cut with a message."""
    cid = evil
    path = os.path.join(hostdir, "padded.tar")
    with open(path, "wb") as f:
        f.write(hostile_tar([("file", "ok.txt", b"fine\n")]))
    ok(cli("cp", path, "%s:/tmp/evil.tar" % cid))
    ok(cli("exec", cid, "--", "sh", "-c", "mkdir -p /tmp/evil /tmp/padded-src && printf '%s' "
           "'#!/bin/sh\ncat /tmp/evil.tar; sleep 0.2; head -c 1000000 /dev/zero\n' > /tmp/evil/tar && "
           "chmod 755 /tmp/evil/tar"))
    dst = os.path.join(hostdir, "dst-padded")
    ok(cli("cp", "%s:/tmp/padded-src" % cid, dst))
    with open(os.path.join(dst, "ok.txt"), "rb") as f:
        assert f.read() == b"fine\n"
    ok(cli("exec", cid, "--", "sh", "-c", "printf '%s' '#!/bin/sh\ncat /tmp/evil.tar; exec cat /dev/zero\n' "
           "> /tmp/evil/tar"))
    r = cli("cp", "%s:/tmp/padded-src" % cid, os.path.join(hostdir, "dst-endless"))
    assert r.returncode == 1 and "past the end of its archive" in r.stderr, (r.returncode, r.stderr)


def test_lane_and_image_export_refuse_a_terminal(d):
    for args in (["lane", "export", "no-such-lane-xyz"], ["image", "export", "host"]):
        code, out = run_on_pty([CELL_BIN, "--state", d.state] + args, b"")
        assert code == 2 and b"> FILE" in out, (args, code, out)


# ---- exec against a fake daemon: what the CLI makes of the daemon's answers ----------------------


@pytest.fixture
def fake():
    from fakedaemon import fake_factory
    yield from fake_factory()


def fake_exec_daemon(entries, final):
    """Answers cell exec's requests: the SSE log gets `entries` (seq, stream,
    bytes), GET of the process `final`."""
    import base64
    import json

    def send_json(conn, status, body):
        data = json.dumps(body).encode()
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (status, len(data), data))

    def answer(conn, head, fk):
        line = head.split(b"\r\n", 1)[0].decode()
        method, target = line.split()[:2]
        conn.read_body(head)
        if method == "POST" and target.endswith("/v1/processes"):
            send_json(conn, 200, {"id": "proc_1", "status": "running"})
        elif target.endswith("/input"):
            send_json(conn, 200, {"bytesWritten": 0})
        elif "/logs?" in target:
            body = b"".join(b"event: log\ndata: %s\n\n" % json.dumps(
                {"sequence": seq, "stream": stream, "timestampMs": 1, "encoding": "base64",
                 "data": base64.b64encode(data).decode()}).encode() for seq, stream, data in entries)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            return False
        elif method == "GET":
            send_json(conn, 200, final)
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True
    return answer


def test_lost_output_and_endings_are_never_silent(fake):
    out = [(1, "stdout", b"a"), (2, "stderr", b"b"), (4, "stdout", b"d")]   # 3 was dropped
    f = fake(fake_exec_daemon(out, {"id": "proc_1", "status": "exited", "exitCode": 0}))
    r = f.cli("exec", "c1", "true")
    assert (r.returncode, r.stdout) == (125, "ad") and "1 pieces" in r.stderr and "lost" in r.stderr, r
    f = fake(fake_exec_daemon(out[:2], {"id": "proc_1", "status": "exited", "signal": 15}))
    r = f.cli("exec", "c1", "true")
    assert (r.returncode, r.stdout, r.stderr) == (143, "a", "b"), r
    f = fake(fake_exec_daemon(out[:2], {"id": "proc_1", "status": "running"}))
    r = f.cli("exec", "c1", "true")
    assert r.returncode == 125 and "before it exited" in r.stderr, r
