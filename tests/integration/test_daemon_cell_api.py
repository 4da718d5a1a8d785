"""`cell serve`: the per-cell plane (/cells/{id}/v1/...), which answers like
sandbox-agent 0.4.2 (status codes, problem types, JSON shapes; transcripts of
the reference server are the expectations), over real HTTP.

One daemon (with --max-file-size 8M) and one shared cell per module; tests
that change the process config or stop their cell get a cell of their own.
"""
import base64
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import time
import uuid

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token, sse_events, wait_for

MAX_FILE = 8 << 20
# Operator ceilings on /processes/config (cell serve --limit), above the defaults.
CEILINGS = {"maxConcurrentProcesses": ("procs", 128), "defaultRunTimeoutMs": ("run.timeoutMs", 3600000),
            "maxRunTimeoutMs": ("run.timeoutMs", 3600000), "maxOutputBytes": ("run.outputBytes", 16 << 20),
            "maxLogBytesPerProcess": ("log.bytesPerProcess", 32 << 20),
            "maxInputBytesPerRequest": ("input.bytes", 1 << 20)}
CEILING_ARGS = [a for key, value in sorted(set(CEILINGS.values())) for a in ("--limit", "%s=%d" % (key, value))]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("cellapi"), ["--max-file-size", "8M"] + CEILING_ARGS)


def new_cell(admin, **extra):
    return dm.create_cell(admin, **extra)


Cell = dm.CellClient


@pytest.fixture(scope="module")
def cell(admin):
    cid = new_cell(admin)
    yield Cell(admin, cid)
    admin.delete("/v1/cells/%s" % cid)


@pytest.fixture
def own_cell(admin):
    """A fresh cell for tests that change its config or state."""
    cid = new_cell(admin)
    yield Cell(admin, cid)
    admin.delete("/v1/cells/%s" % cid)


@pytest.fixture(scope="module")
def host_marker(tmp_path_factory):
    """A secret file on the host, outside the state dir, that no cell may read."""
    d = tmp_path_factory.mktemp("hostsecret")
    os.chmod(d, 0o755)
    secret = "HOST-SECRET-%s\n" % uuid.uuid4().hex
    p = d / "secret.txt"
    p.write_text(secret)
    return str(p), secret.encode()


def host_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


DEFAULT_CONFIG = {"maxConcurrentProcesses": 64, "defaultRunTimeoutMs": 30000, "maxRunTimeoutMs": 300000,
                  "maxOutputBytes": 1048576, "maxLogBytesPerProcess": 10485760, "maxInputBytesPerRequest": 65536}


# ---- health, config -------------------------------------------------------------------


def test_health(cell):
    r = cell.get("/health")
    assert r.status == 200 and r.ctype == "application/json" and r.body == {"status": "ok"}, r


def test_process_config_get_set_validate(own_cell):
    r = own_cell.get("/processes/config")
    assert r.status == 200 and r.body == DEFAULT_CONFIG, r
    new = dict(DEFAULT_CONFIG, defaultRunTimeoutMs=5000, maxRunTimeoutMs=800, maxInputBytesPerRequest=16)
    r = own_cell.post("/processes/config", new)
    # The default is clamped to the maximum, as the reference does.
    assert r.status == 200 and r.body == dict(new, defaultRunTimeoutMs=800), r
    assert own_cell.get("/processes/config").body == r.body
    bad = own_cell.post("/processes/config", dict(DEFAULT_CONFIG, maxConcurrentProcesses=0))
    assert_problem(bad, 400, "invalid_request", "maxConcurrentProcesses must be greater than 0")
    assert bad.body["title"] == "Invalid Request" and bad.body["detail"].startswith("invalid request: ")
    r = own_cell.post("/processes/config", {"maxConcurrentProcesses": 2})
    assert r.status == 422, r
    r = own_cell.post("/processes/config", dict(DEFAULT_CONFIG, maxOutputBytes="big"))
    assert r.status == 422, r
    assert own_cell.get("/processes/config").body == dict(new, defaultRunTimeoutMs=800)
    # Run timeouts follow the new config.
    out = own_cell.run("sleep", ["3"])
    assert out["timedOut"] is True and out["exitCode"] is None and out["durationMs"] < 2500, out
    # The input limit too.
    p = own_cell.spawn("cat", interactive=True)
    r = own_cell.post("/processes/%s/input" % p["id"], {"data": "0" * 17, "encoding": "utf8"})
    b = assert_problem(r, 413, "invalid_request", "maxInputBytesPerRequest (16)")
    assert b["title"] == "Payload Too Large", b
    r = own_cell.post("/processes/%s/input" % p["id"], {"data": "0" * 16, "encoding": "utf8"})
    assert r.status == 200 and r.body == {"bytesWritten": 16}, r
    own_cell.post("/processes/%s/kill?waitMs=5000" % p["id"])


@pytest.mark.parametrize("field", sorted(CEILINGS))
def test_process_config_ceilings(own_cell, field):
    """A tenant cannot set a number above the operator's ceiling (the review's
    attack: maxLogBytesPerProcess = 2^62, then output until the daemon is
    OOM-killed), nor a negative one or one of the wrong type."""
    key, ceiling = CEILINGS[field]
    base = dict(DEFAULT_CONFIG, maxRunTimeoutMs=ceiling) if field == "defaultRunTimeoutMs" else DEFAULT_CONFIG
    for v in (ceiling + 1, 2 ** 62, 2 ** 63 - 1):
        r = own_cell.post("/processes/config", dict(base, **{field: v}))
        b = assert_problem(r, 400, "invalid_request", [field, str(ceiling), key])
        assert b["details"] == {"field": field, "ceiling": ceiling, "limit": key}, b
    for v in (-1, -(2 ** 62)):
        r = own_cell.post("/processes/config", dict(base, **{field: v}))
        assert_problem(r, 400, "invalid_request", field)
    for v in ("1", 1.5, True, None, [1], {"n": 1}):
        r = own_cell.post("/processes/config", dict(base, **{field: v}))
        assert r.status == 422, (v, r)
    assert own_cell.get("/processes/config").body == DEFAULT_CONFIG
    r = own_cell.post("/processes/config", dict(base, **{field: ceiling}))
    assert r.status == 200 and r.body[field] == ceiling, r


def test_log_memory_is_bounded_daemon_wide(tmp_path_factory):
    """Per-process log caps times processes times cells cannot add up past
    --limit log.memory: four processes print 3 MiB each (12 MiB, under their
    10 MiB caps) and the daemon keeps at most 2 MiB of logs.  The largest
    logs are trimmed first: the newest output of the last writer and a
    quiet process's line survive the flood."""
    with dm.served(tmp_path_factory.mktemp("logmem"), ["--limit", "log.memory=2M"]) as dd:
        admin = dd.client()
        cells = [Cell(admin, new_cell(admin)) for _ in range(2)]
        quiet = cells[1].spawn("echo", ["quiet-line"])
        cells[1].wait_exited(quiet["id"])
        assert wait_for(lambda: cells[1].log_text(quiet["id"]) == b"quiet-line\n", 5)
        procs = []
        for i in range(4):
            c = cells[i % 2]
            p = c.spawn("sh", ["-c", "head -c 3145728 /dev/zero | tr '\\0' x; echo END-%d" % i])
            c.wait_exited(p["id"], timeout=60)
            procs.append((c, p["id"]))
        kept = sum(len(c.log_text(pid)) for c, pid in procs)
        assert 0 < kept <= 2 << 20, kept
        c, pid = procs[-1]
        assert c.log_text(pid).endswith(b"END-3\n")
        assert cells[1].log_text(quiet["id"]) == b"quiet-line\n"
        lim = admin.get("/v1/limits")
        assert lim.status == 200 and lim.body["logMemory"]["limit"] == 2 << 20, lim
        assert 0 < lim.body["logMemory"]["used"] <= 2 << 20, lim
        # Deleting the cells gives the memory back.
        for cc in cells:
            assert admin.delete("/v1/cells/%s" % cc.id).status == 204
        assert wait_for(lambda: admin.get("/v1/limits").body["logMemory"]["used"] == 0, 10)


def test_tiny_writes_do_not_multiply_log_memory(own_cell):
    """One-byte writes would make one entry each (48 bytes of bookkeeping
    per byte, and more in a JSON answer): a process keeps at most one entry
    per 256 bytes of its cap (at least 1024), the newest.  200000 writes:
    the daemon's reads gather what a busy machine lets pile up in the pipe,
    and 40000 made fewer than 1025 entries under load."""
    cfg = dict(DEFAULT_CONFIG, maxLogBytesPerProcess=256 * 1024)
    assert own_cell.post("/processes/config", cfg).status == 200
    p = own_cell.spawn("sh", ["-c", "i=0; while [ $i -lt 200000 ]; do printf x; i=$((i+1)); done; printf END"])
    own_cell.wait_exited(p["id"], timeout=60)
    entries = own_cell.logs(p["id"])["entries"]
    assert 0 < len(entries) <= 1024, len(entries)
    assert own_cell.log_text(p["id"]).endswith(b"END")
    seqs = [e["sequence"] for e in entries]
    # The process made more entries than were kept (the cap was reached).
    assert seqs == sorted(seqs) and seqs[-1] > 1024, seqs[-1]


def test_exited_processes_kept_are_bounded(tmp_path_factory):
    """Exited processes stay listed until deleted; past --limit procs.kept
    the oldest exited one goes, so spawning forever cannot grow the table."""
    with dm.served(tmp_path_factory.mktemp("kept"), ["--limit", "procs.kept=5"]) as dd:
        admin = dd.client()
        c = Cell(admin, new_cell(admin))
        keep = c.spawn("sleep", ["60"])
        ids = []
        for i in range(8):
            p = c.spawn("echo", ["n%d" % i])
            c.wait_exited(p["id"])
            wait_for(lambda: c.log_text(p["id"]) == b"n%d\n" % i, 5)
            ids.append(p["id"])
        listed = [x["id"] for x in c.get("/processes").body["processes"]]
        assert len(listed) <= 5 and keep["id"] in listed and ids[-1] in listed, listed
        assert c.get("/processes/%s" % ids[0]).status == 404
        c.post("/processes/%s/kill?waitMs=5000" % keep["id"])


# ---- buffered runs ------------------------------------------------------------------------


def test_run_stdout_stderr_exit_code(cell):
    out = cell.run("echo", ["hello", "world"])
    assert out["exitCode"] == 0 and out["stdout"] == "hello world\n" and out["stderr"] == "", out
    assert out["timedOut"] is False and out["stdoutTruncated"] is False and out["stderrTruncated"] is False
    assert isinstance(out["durationMs"], int)
    assert set(out) == {"exitCode", "timedOut", "stdout", "stderr", "stdoutTruncated", "stderrTruncated",
                        "durationMs"}, out
    out = cell.sh("echo out; echo err >&2; exit 3")
    assert (out["exitCode"], out["stdout"], out["stderr"]) == (3, "out\n", "err\n"), out
    out = cell.run("sh", ["-c", "pwd; echo $FOO"], cwd="/tmp", env={"FOO": "bar"})
    assert out["stdout"] == "/tmp\nbar\n", out
    # Unknown fields and nulls are ignored.
    out = cell.post("/processes/run", {"command": "echo", "bogus": 1, "cwd": None, "timeoutMs": None,
                                       "maxOutputBytes": None})
    assert out.status == 200 and out.body["stdout"] == "\n", out


def test_run_timeout(cell):
    t0 = time.monotonic()
    out = cell.run("sleep", ["5"], timeoutMs=300)
    assert out["timedOut"] is True and out["exitCode"] is None, out
    assert time.monotonic() - t0 < 3.5, "a 300 ms timeout took %.1f s" % (time.monotonic() - t0)
    out = cell.sh("echo partial; sleep 5", timeoutMs=300)
    assert out["timedOut"] is True and out["exitCode"] is None and out["stdout"] == "partial\n", out


def test_run_killed_by_signal(cell):
    out = cell.sh("kill -9 $$")
    assert out["exitCode"] is None and out["timedOut"] is False, out


def test_run_output_truncation(cell):
    out = cell.sh("printf 0123456789abcdef; printf EEEEEEEEEE >&2", maxOutputBytes=5)
    assert (out["stdout"], out["stderr"]) == ("01234", "EEEEE"), out
    assert out["stdoutTruncated"] is True and out["stderrTruncated"] is True and out["exitCode"] == 0, out
    out = cell.run("echo", maxOutputBytes=0)
    assert out["stdout"] == "" and out["stdoutTruncated"] is True and out["stderrTruncated"] is False, out
    out = cell.sh("head -c 3000000 /dev/zero | tr '\\0' a")
    assert len(out["stdout"]) == 1 << 20 and out["stdoutTruncated"] is True and out["exitCode"] == 0, \
        (len(out["stdout"]), out["exitCode"])


def test_run_invalid_utf8_output(cell):
    out = cell.sh('printf "\\377\\376 bin"')
    assert out["stdout"] == "\ufffd\ufffd bin", out
    out = cell.sh('printf "\\303\\251\\303\\251"', maxOutputBytes=3)
    assert out["stdout"] == "\u00e9\ufffd" and out["stdoutTruncated"] is True, out


@pytest.mark.parametrize("body,err", [
    ({"command": "nonexistent-cmd-xyz"}, "No such file or directory (os error 2)"),
    ({"command": "/etc/passwd"}, "Permission denied (os error 13)"),
    ({"command": "echo", "cwd": "/nonexistent-dir"}, "No such file or directory (os error 2)"),
])
@pytest.mark.parametrize("route", ["/processes/run", "/processes"])
def test_spawn_failure_is_502_stream_error(cell, route, body, err):
    r = cell.post(route, body)
    b = assert_problem(r, 502, "stream_error", "failed to spawn process: " + err)
    assert b["title"] == "Stream Error" and b["details"] == {"message": "failed to spawn process: " + err}, b


@pytest.mark.parametrize("route", ["/processes/run", "/processes"])
def test_run_request_validation(cell, route):
    b = assert_problem(cell.post(route, {"command": ""}), 400, "invalid_request", "command must not be empty")
    assert b["detail"] == "invalid request: command must not be empty", b
    wrong = []
    for body in ({"args": ["x"]}, {"command": 5}, {"command": "echo", "args": "x"}, {"command": "echo", "args": [1]},
                 {"command": "echo", "env": {"A": 1}}, {"command": "echo", "tty": "yes"}, {"command": "echo", "cwd": 7},
                 ):
        r = cell.post(route, body)
        if r.status != 422:
            wrong.append((body, r.status, r.body))
    assert not wrong, "type errors must be 422 like sandbox-agent's: %s" % wrong
    r = cell.call("POST", route, body=b"[]", headers={"Content-Type": "application/json"})
    assert r.status == 422, r
    r = cell.call("POST", route, body=b'{"command":"echo",', headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    r = cell.call("POST", route, body=b"", headers={"Content-Type": "application/json"})
    assert r.status == 400, r


def test_run_numeric_validation(cell):
    for body in ({"command": "echo", "timeoutMs": -1}, {"command": "echo", "maxOutputBytes": -1},
                 {"command": "echo", "timeoutMs": "1"}):
        r = cell.post("/processes/run", body)
        assert r.status in (400, 422), (body, r)
    # Out-of-range but valid values are clamped, as the reference does.
    out = cell.run("echo", timeoutMs=999999999, maxOutputBytes=99999999999)
    assert out["stdout"] == "\n" and out["exitCode"] == 0, out


# ---- long-running processes --------------------------------------------------------------------


def test_process_lifecycle_and_logs(cell):
    p = cell.spawn("sh", ["-c", "echo started; echo e1 >&2; sleep 30"])
    pid = p["id"]
    assert p["status"] == "running" and isinstance(p["pid"], int) and p["owner"] == "user", p
    assert p["command"] == "sh" and p["args"] == ["-c", "echo started; echo e1 >&2; sleep 30"], p
    assert p["tty"] is False and p["interactive"] is False and "exitCode" not in p, p
    lst = cell.get("/processes")
    assert lst.status == 200 and pid in [x["id"] for x in lst.body["processes"]], lst
    assert cell.get("/processes?owner=system").body == {"processes": []}
    assert cell.get("/processes?owner=bad").status == 400
    assert wait_for(lambda: len(cell.logs(pid)["entries"]) == 2, 5), cell.logs(pid)
    logs = cell.logs(pid)
    assert logs["processId"] == pid and logs["stream"] == "combined", logs
    for e in logs["entries"]:
        assert set(e) == {"sequence", "stream", "timestampMs", "data", "encoding"} and e["encoding"] == "base64", e
    assert sorted(e["sequence"] for e in logs["entries"]) == [1, 2]
    assert cell.log_text(pid, stream="stdout") == b"started\n"
    assert cell.log_text(pid, stream="stderr") == b"e1\n"
    assert cell.logs(pid, stream="pty")["entries"] == []
    last = cell.logs(pid, tail=1)["entries"]
    assert [e["sequence"] for e in last] == [2], last
    assert [e["sequence"] for e in cell.logs(pid, since=1)["entries"]] == [2]
    assert cell.logs(pid, tail=0)["entries"] == []
    for q in ("stream=bogus", "tail=-1", "follow=1", "since=x"):
        assert cell.get("/processes/%s/logs?%s" % (pid, q)).status == 400, q
    # Running: no delete.
    b = assert_problem(cell.call("DELETE", "/processes/%s" % pid), 409, "conflict",
                       "process is still running; stop or kill it before delete")
    assert b["details"] == {"message": "process is still running; stop or kill it before delete"}
    r = cell.post("/processes/%s/stop?waitMs=5000" % pid)
    assert r.status == 200 and r.body["status"] == "exited" and "exitedAtMs" in r.body and "pid" not in r.body, r
    assert cell.log_text(pid, stream="stdout") == b"started\n", "logs outlive the process"
    # Stop and kill of an exited process are no-ops.
    assert cell.post("/processes/%s/stop" % pid).body["status"] == "exited"
    assert cell.post("/processes/%s/kill" % pid).body["status"] == "exited"
    assert cell.post("/processes/%s/stop?waitMs=abc" % pid).status == 400
    r = cell.call("DELETE", "/processes/%s" % pid)
    assert r.status == 204 and r.raw == b"", r
    nf = assert_problem(cell.call("DELETE", "/processes/%s" % pid), 404, "not_found", "process %s" % pid)
    assert nf["details"] == {"id": pid, "resource": "process"}, nf
    assert_problem(cell.get("/processes/%s" % pid), 404, "not_found")
    assert pid not in [x["id"] for x in cell.get("/processes").body["processes"]]


def test_exit_code_of_a_process(cell):
    p = cell.spawn("sh", ["-c", "exit 7"], cwd="/tmp", env={"X": "1"})
    assert p["cwd"] == "/tmp", p
    done = cell.wait_exited(p["id"])
    assert done["exitCode"] == 7 and done["exitedAtMs"] >= done["createdAtMs"], done
    assert cell.call("DELETE", "/processes/%s" % p["id"]).status == 204


def test_unknown_process_is_404_everywhere(cell):
    for method, suffix, body in [("GET", "", None), ("DELETE", "", None), ("GET", "/logs", None),
                                 ("POST", "/stop", None), ("POST", "/kill", None),
                                 ("POST", "/input", {"data": "aGkK"}),
                                 ("POST", "/terminal/resize", {"cols": 80, "rows": 24})]:
        r = cell.call(method, "/processes/proc_999" + suffix, json_body=body)
        b = assert_problem(r, 404, "not_found", "process proc_999")
        assert b["details"] == {"id": "proc_999", "resource": "process"}, (method, suffix, b)


def test_logs_follow_over_sse(cell):
    p = cell.spawn("sh", ["-c", "echo a; sleep 0.3; echo b >&2; sleep 0.3; printf c"])
    conn, resp = cell.c.stream("GET", cell.base + "/processes/%s/logs?follow=true" % p["id"], timeout=20)
    try:
        assert resp.status == 200, resp.read()
        assert resp.getheader("Content-Type").startswith("text/event-stream")
        t0 = time.monotonic()
        events = sse_events(resp, limit_s=15)
        assert time.monotonic() - t0 < 10, "the stream did not end after the process exited"
    finally:
        conn.close()
    assert events and all(ev == "log" for ev, _ in events), events
    entries = [json.loads(data) for _, data in events]
    assert [e["sequence"] for e in entries] == [1, 2, 3], entries
    assert [(e["stream"], base64.b64decode(e["data"])) for e in entries] == \
        [("stdout", b"a\n"), ("stderr", b"b\n"), ("stdout", b"c")], entries
    # Filter and since apply to the followed stream too.
    conn, resp = cell.c.stream("GET", cell.base + "/processes/%s/logs?follow=true&stream=stdout&since=1" % p["id"])
    try:
        ents = [json.loads(data) for _, data in sse_events(resp, limit_s=10)]
    finally:
        conn.close()
    assert [(e["sequence"], base64.b64decode(e["data"])) for e in ents] == [(3, b"c")], ents


def test_follow_of_an_exited_process_ends(cell):
    p = cell.spawn("echo", ["done"])
    cell.wait_exited(p["id"])
    conn, resp = cell.c.stream("GET", cell.base + "/processes/%s/logs?follow=true" % p["id"], timeout=10)
    try:
        ents = [json.loads(data) for _, data in sse_events(resp, limit_s=8)]
    finally:
        conn.close()
    assert [base64.b64decode(e["data"]) for e in ents] == [b"done\n"], ents


def test_follow_replays_a_large_log_in_pieces(cell):
    """A follow of a 6 MiB log is formatted a piece at a time (not one copy
    of the whole log per open follow) and still replays every entry, in
    order, once."""
    p = cell.spawn("sh", ["-c", "head -c 6291456 /dev/urandom | base64 -w 1000"])
    cell.wait_exited(p["id"], timeout=60)
    want = cell.logs(p["id"])["entries"]
    conn, resp = cell.c.stream("GET", cell.base + "/processes/%s/logs?follow=true" % p["id"], timeout=30)
    try:
        got = [json.loads(data) for _, data in sse_events(resp, limit_s=60)]
    finally:
        conn.close()
    assert [e["sequence"] for e in got] == [e["sequence"] for e in want]
    assert b"".join(base64.b64decode(e["data"]) for e in got) == cell.log_text(p["id"])
    assert len(cell.log_text(p["id"])) > 6 << 20


def _rss(pid):
    return dm.rss_kib(pid) << 10


def test_open_follows_do_not_each_copy_the_log(d, cell):
    """16 follows of a 6 MiB log whose clients read nothing: each holds at
    most a piece of the formatted replay, not a copy of the whole log."""
    if dm.TSAN or dm.ASAN:
        # ASan's quarantine keeps up to 256 MiB of freed memory resident
        # (53 and 130 MiB in two CI runs), TSan's shadow memory scales RSS:
        # the release stage measures this.
        pytest.skip("RSS bound: the sanitizers' own memory dominates it")
    p = cell.spawn("sh", ["-c", "head -c 6291456 /dev/urandom | base64 -w 1000"])
    cell.wait_exited(p["id"], timeout=60)
    before = _rss(d.proc.pid)
    conns = []
    try:
        for _ in range(16):
            conns.append(cell.c.stream("GET", cell.base + "/processes/%s/logs?follow=true" % p["id"], timeout=30))
        time.sleep(2)                    # let each follow format what it will
        grown = _rss(d.proc.pid) - before
    finally:
        for conn, _ in conns:
            conn.close()
    assert grown < 48 << 20, "the daemon grew %d MiB for 16 follows" % (grown >> 20)


def test_input_to_a_process_that_never_reads(cell):
    """A process that never reads its stdin: once the pipe is full, an
    input request answers 409 after a bounded wait instead of holding a
    daemon thread until the process exits, and the daemon keeps serving.
    (A pty never blocks its writer: the line discipline drops what does not
    fit.)"""
    p = cell.spawn("sleep", ["600"], interactive=True)
    chunk = {"data": base64.b64encode(b"x" * 65536).decode()}
    statuses = []
    for _ in range(8):                       # 512 KiB: far past a pipe's 64 KiB and a pty's buffer
        r = cell.post("/processes/%s/input" % p["id"], chunk)
        statuses.append(r.status)
        if r.status != 200:
            assert_problem(r, 409, None, "has not read its input")
            break
    assert 409 in statuses, statuses
    assert cell.get("/processes/%s" % p["id"]).status == 200
    assert cell.post("/processes/%s/kill?waitMs=5000" % p["id"]).status == 200


def test_input(cell):
    p = cell.spawn("cat", interactive=True)
    pid = p["id"]
    assert p["interactive"] is True
    ok = [({"data": "aGkK"}, 3), ({"data": "aGkK", "encoding": "base64"}, 3), ({"data": "txt\n", "encoding": "text"}, 4),
          ({"data": "u8\n", "encoding": "utf8"}, 3), ({"data": "", "encoding": "base64"}, 0),
          ({"data": "aGkK", "encoding": None}, 3)]
    for body, n in ok:
        r = cell.post("/processes/%s/input" % pid, body)
        assert r.status == 200 and r.body == {"bytesWritten": n}, (body, r)
    bad = [({"data": "hello\n"}, "invalid base64 input: Invalid symbol 10, offset 5."),
           ({"data": "aGk"}, "invalid base64 input: Invalid padding"),
           ({"data": "0123456789abcdefX"}, "invalid base64 input: Invalid input length: 17"),
           ({"data": "_-8K", "encoding": "base64"}, "invalid base64 input: Invalid symbol 95, offset 0."),
           ({"data": "x", "encoding": "hex"}, "encoding must be one of: base64, utf8, text"),
           ({"data": "x", "encoding": "BASE64"}, "encoding must be one of: base64, utf8, text")]
    bad.append(({"data": "aGk=\n", "encoding": "base64"}, "invalid base64 input: Invalid symbol 10, offset 4."))
    wrong = []
    for body, msg in bad:
        b = assert_problem(cell.post("/processes/%s/input" % pid, body), 400, "invalid_request")
        if b["detail"] != "invalid request: " + msg:
            wrong.append((body["data"], b["detail"], "expected: " + msg))
    assert not wrong, "input errors unlike sandbox-agent's: %s" % wrong
    assert cell.post("/processes/%s/input" % pid, {}).status == 422
    big = base64.b64encode(b"x" * 65537).decode()
    assert_problem(cell.post("/processes/%s/input" % pid, {"data": big}), 413, None, "maxInputBytesPerRequest (65536)")
    assert wait_for(lambda: cell.log_text(pid) == b"hi\nhi\ntxt\nu8\nhi\n", 5), cell.log_text(pid)
    r = cell.post("/processes/%s/kill?waitMs=5000" % pid)
    assert r.status == 200 and r.body["status"] == "exited", r
    b = assert_problem(cell.post("/processes/%s/input" % pid, {"data": "aGkK"}), 409, "conflict",
                       "process is not running")
    assert b["details"] == {"message": "process is not running"}
    assert cell.call("DELETE", "/processes/%s" % pid).status == 204


def test_stop_wait_and_kill(cell):
    p = cell.spawn("sh", ["-c", "trap 'echo got-term' TERM; while true; do sleep 0.1; done"])
    pid = p["id"]
    time.sleep(0.3)
    r = cell.post("/processes/%s/stop?waitMs=400" % pid)
    assert r.status == 200 and r.body["status"] == "running", "the trap keeps it alive: %r" % (r,)
    assert wait_for(lambda: b"got-term" in cell.log_text(pid), 5)
    t0 = time.monotonic()
    r = cell.post("/processes/%s/kill?waitMs=5000" % pid)
    assert r.status == 200 and r.body["status"] == "exited" and "exitCode" not in r.body, r
    assert time.monotonic() - t0 < 4
    q = cell.spawn("sleep", ["60"])
    r = cell.post("/processes/%s/stop?waitMs=5000" % q["id"])
    assert r.status == 200 and r.body["status"] == "exited", r
    for x in (pid, q["id"]):
        assert cell.call("DELETE", "/processes/%s" % x).status == 204


def test_max_concurrent_processes(own_cell):
    cfg = dict(DEFAULT_CONFIG, maxConcurrentProcesses=2)
    assert own_cell.post("/processes/config", cfg).status == 200
    a = own_cell.spawn("sleep", ["30"])
    b = own_cell.spawn("sleep", ["30"])
    r = own_cell.post("/processes", {"command": "sleep", "args": ["30"]})
    body = assert_problem(r, 409, "conflict", "max concurrent process limit reached (2)")
    assert body["details"] == {"message": "max concurrent process limit reached (2)"}
    # A buffered run is not counted.
    assert own_cell.run("echo", ["run-at-limit"])["stdout"] == "run-at-limit\n"
    own_cell.post("/processes/%s/kill?waitMs=5000" % a["id"])
    c = own_cell.spawn("true")
    for x in (b["id"], c["id"]):
        own_cell.post("/processes/%s/kill?waitMs=5000" % x)


def test_resize(cell):
    p = cell.spawn("sleep", ["30"])
    b = assert_problem(cell.post("/processes/%s/terminal/resize" % p["id"], {"cols": 100, "rows": 40}), 409,
                       "conflict", "process is not running in tty mode")
    assert b["details"] == {"message": "process is not running in tty mode"}
    cell.post("/processes/%s/kill?waitMs=5000" % p["id"])

    t = cell.spawn("sh", tty=True, interactive=True)
    tid = t["id"]
    assert t["tty"] is True, t
    try:
        r = cell.post("/processes/%s/terminal/resize" % tid, {"cols": 100, "rows": 40})
        assert r.status == 200 and r.body == {"cols": 100, "rows": 40}, r
        assert cell.post("/processes/%s/terminal/resize" % tid, {"cols": 100}).status == 422
        assert cell.post("/processes/%s/terminal/resize" % tid, {"cols": "x", "rows": 1}).status == 422
        r = cell.post("/processes/%s/input" % tid, {"data": "stty size; echo END-$((6*7))\n", "encoding": "utf8"})
        assert r.status == 200, r
        assert wait_for(lambda: b"END-42" in cell.log_text(tid, stream="pty"), 5), cell.log_text(tid)
        assert b"40 100" in cell.log_text(tid, stream="pty"), cell.log_text(tid)
        assert cell.logs(tid, stream="stdout")["entries"] == []
    finally:
        r = cell.post("/processes/%s/kill?waitMs=5000" % tid)
    assert r.body["status"] == "exited", r
    assert_problem(cell.post("/processes/%s/terminal/resize" % tid, {"cols": 80, "rows": 24}), 409, "conflict")


# ---- fs -----------------------------------------------------------------------------------


def test_fs_put_get_binary_empty_large(cell):
    blob = bytes(range(256)) * 4
    r = cell.put_file("/root/bin.dat", blob)
    assert r.status == 200 and r.body == {"path": "/root/bin.dat", "bytesWritten": len(blob)}, r
    g = cell.get_file("/root/bin.dat")
    assert g.status == 200 and g.raw == blob and g.ctype == "application/octet-stream", g
    r = cell.put_file("/root/empty", b"")
    assert r.status == 200 and r.body["bytesWritten"] == 0, r
    g = cell.get_file("/root/empty")
    assert g.status == 200 and g.raw == b"", g
    big = os.urandom(5 << 20)
    r = cell.put_file("/root/big/nested/five.bin", big)
    assert r.status == 200 and r.body["bytesWritten"] == len(big), r
    g = cell.get_file("/root/big/nested/five.bin")
    assert g.status == 200 and hashlib.sha256(g.raw).digest() == hashlib.sha256(big).digest(), len(g.raw)
    # Relative paths are relative to /root; overwrite truncates.
    assert cell.put_file("rel.txt", b"longer content").status == 200
    assert cell.put_file("rel.txt", b"short").status == 200
    assert cell.get_file("/root/rel.txt").raw == b"short"
    assert cell.sh("cat /root/rel.txt; stat -c %s /root/big/nested/five.bin")["stdout"] == "short%d\n" % len(big)


def test_fs_stat_entries(cell):
    cell.put_file("/root/st/a.txt", b"12345")
    r = cell.get("/fs/stat", query={"path": "/root/st/a.txt"})
    assert r.status == 200, r
    assert r.body["path"] == "/root/st/a.txt" and r.body["entryType"] == "file" and r.body["size"] == 5, r
    assert r.body["modified"].endswith("+00:00"), r
    r = cell.get("/fs/stat", query={"path": "/root/st"})
    assert r.status == 200 and r.body["entryType"] == "directory", r
    cell.call("POST", "/fs/mkdir", query={"path": "/root/st/sub"})
    r = cell.get("/fs/entries", query={"path": "/root/st"})
    assert r.status == 200 and isinstance(r.body, list), r
    got = {e["name"]: e for e in r.body}
    assert set(got) == {"a.txt", "sub"}, got
    assert got["a.txt"]["path"] == "/root/st/a.txt" and got["a.txt"]["entryType"] == "file" and got["a.txt"]["size"] == 5
    assert got["sub"]["entryType"] == "directory"
    assert_problem(cell.get("/fs/entries", query={"path": "/root/st/a.txt"}), 400, "invalid_request")
    assert_problem(cell.get("/fs/stat"), 400, "invalid_request")


def test_fs_mkdir(cell):
    r = cell.call("POST", "/fs/mkdir", query={"path": "/root/mk/a/b/c"})
    assert r.status == 200 and r.body == {"path": "/root/mk/a/b/c"}, r
    r = cell.call("POST", "/fs/mkdir", query={"path": "/root/mk/a/b/c"})
    assert r.status == 200, "mkdir of an existing directory is fine: %r" % (r,)
    assert cell.sh("test -d /root/mk/a/b/c && echo yes")["stdout"] == "yes\n"
    cell.put_file("/root/mk/file", b"x")
    r = cell.call("POST", "/fs/mkdir", query={"path": "/root/mk/file/sub"})
    assert_problem(r, 502, "stream_error", "Not a directory (os error 20)")
    r = cell.call("POST", "/fs/mkdir", query={"path": "/root/mk/file"})
    assert_problem(r, 502, "stream_error", "File exists (os error 17)")
    r = cell.put_file("/root/mk/a", b"onto a dir")
    assert_problem(r, 502, "stream_error", "Is a directory (os error 21)")


def test_fs_move(cell):
    cell.put_file("/root/mv/src", b"source")
    cell.put_file("/root/mv/dst", b"dest")
    b = assert_problem(cell.post("/fs/move", {"from": "/root/mv/src", "to": "/root/mv/dst"}), 400, "invalid_request",
                       "destination already exists")
    assert cell.get_file("/root/mv/dst").raw == b"dest" and cell.get_file("/root/mv/src").raw == b"source", b
    r = cell.post("/fs/move", {"from": "/root/mv/src", "to": "/root/mv/dst", "overwrite": True})
    assert r.status == 200 and r.body == {"from": "/root/mv/src", "to": "/root/mv/dst"}, r
    assert cell.get_file("/root/mv/dst").raw == b"source"
    assert_problem(cell.get_file("/root/mv/src"), 400, "invalid_request", "path not found")
    r = cell.post("/fs/move", {"from": "mv/dst", "to": "mv/renamed"})
    assert r.status == 200 and r.body["to"] == "/root/mv/renamed", r
    assert_problem(cell.post("/fs/move", {"from": "/root/mv/nope", "to": "/root/mv/x"}), 400, "invalid_request",
                   "path not found")
    assert cell.post("/fs/move", {"from": "/root/mv/renamed"}).status == 422
    assert cell.post("/fs/move", {"from": "/root/mv/renamed", "to": "/x", "overwrite": "yes"}).status == 422


def test_fs_delete(cell):
    cell.put_file("/root/del/d/f1", b"1")
    cell.put_file("/root/del/d/sub/f2", b"2")
    r = cell.call("DELETE", "/fs/entry", query={"path": "/root/del/d"})
    assert_problem(r, 502, "stream_error")
    assert cell.get_file("/root/del/d/f1").raw == b"1"
    r = cell.call("DELETE", "/fs/entry", query={"path": "/root/del/d", "recursive": "true"})
    assert r.status == 200 and r.body == {"path": "/root/del/d"}, r
    assert_problem(cell.get("/fs/stat", query={"path": "/root/del/d"}), 400, "invalid_request", "path not found")
    cell.put_file("/root/del/one", b"1")
    assert cell.call("DELETE", "/fs/entry", query={"path": "/root/del/one"}).status == 200
    assert_problem(cell.call("DELETE", "/fs/entry", query={"path": "/root/del/one"}), 400, "invalid_request",
                   "path not found")
    assert_problem(cell.call("DELETE", "/fs/entry", query={"path": "/", "recursive": "true"}), 400)
    assert_problem(cell.call("DELETE", "/fs/entry", query={"path": "/root/del", "recursive": "maybe"}), 400)
    assert cell.sh("echo alive")["stdout"] == "alive\n"


def test_fs_errors(cell):
    b = assert_problem(cell.get_file("/root/does/not/exist"), 400, "invalid_request", "path not found")
    assert b["detail"] == "invalid request: path not found: /root/does/not/exist", b
    cell.call("POST", "/fs/mkdir", query={"path": "/root/adir"})
    assert_problem(cell.get_file("/root/adir"), 400, "invalid_request")
    assert_problem(cell.get("/fs/file"), 400, "invalid_request")
    assert_problem(cell.call("PUT", "/fs/file", body=b"x"), 400, "invalid_request")


def make_tar(entries):
    """entries: (name, bytes | None for a dir | ('link', target) for a symlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = int(time.time())
            if data is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            elif isinstance(data, tuple):
                ti.type = tarfile.SYMTYPE
                ti.linkname = data[1]
                tf.addfile(ti)
            else:
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def upload(cell, path, data):
    return cell.c.call("POST", cell.base + "/fs/upload-batch", body=data, query={"path": path},
                       headers={"Content-Type": "application/x-tar"})


def test_fs_upload_batch(cell):
    data = make_tar([("proj", None), ("proj/a.txt", b"A"), ("proj/sub", None), ("proj/sub/b.bin", b"\0\1\2"),
                     ("top.txt", b"top")])
    r = upload(cell, "/root/up", data)
    assert r.status == 200, r
    assert r.body["truncated"] is False, r
    assert set(r.body["paths"]) >= {"/root/up/proj/a.txt", "/root/up/proj/sub/b.bin", "/root/up/top.txt"}, r
    assert cell.get_file("/root/up/proj/sub/b.bin").raw == b"\0\1\2"
    assert cell.get_file("/root/up/top.txt").raw == b"top"
    # As the reference: not a tar is a 502 stream_error; an empty body is an empty upload.
    assert_problem(upload(cell, "/root/up2", b"definitely not a tar file" * 50), 502, "stream_error")
    r = upload(cell, "/root/up3", b"")
    assert r.status == 200 and r.body == {"paths": [], "truncated": False}, r
    r = cell.c.call("POST", cell.base + "/fs/upload-batch", body=data, query={"path": "/root/up4"},
                    headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 400, "invalid_request", "content-type must be application/x-tar")


def test_fs_upload_batch_dotdot_is_refused(cell, host_marker):
    name = "escape-%s" % uuid.uuid4().hex[:8]
    data = make_tar([("fine.txt", b"ok"), ("../../../../../../tmp/%s" % name, b"escaped")])
    r = upload(cell, "/root/upx/inner", data)
    assert_problem(r, 400, "invalid_request")
    assert not os.path.exists("/tmp/" + name), "upload-batch wrote onto the host"
    out = cell.sh("ls /tmp/%s /root/%s /%s 2>&1; true" % (name, name, name))
    assert "escaped" not in out["stdout"] and cell.get_file("/tmp/" + name).status == 400, out
    data = make_tar([("/abs-%s" % name, b"abs")])
    r = upload(cell, "/root/upabs", data)
    assert r.status == 400 or cell.get_file("/abs-" + name).status == 400, r


def test_fs_upload_batch_through_symlink_stays_in_cell(cell, host_marker):
    marker_path, secret = host_marker
    hostdir = os.path.dirname(marker_path)
    data = make_tar([("lnk", ("link", hostdir)), ("lnk/planted.txt", b"planted")])
    r = upload(cell, "/root/upl", data)
    assert r.status in (200, 400), r
    assert not os.path.exists(os.path.join(hostdir, "planted.txt")), "upload-batch followed a symlink to the host"
    assert host_bytes(marker_path) == secret


def test_fs_path_escapes_never_reveal_host_files(cell, host_marker):
    marker_path, secret = host_marker
    host_shadow = host_bytes("/etc/shadow")
    host_hostname = host_bytes("/etc/hostname")
    cell_hostname = cell.get_file("/etc/hostname").raw
    out = cell.sh("ln -s / /root/to-root; ln -s /proc/1/root /root/p1root; ln -s /proc/self/root /root/selfroot; "
                  "ln -s %s /root/to-marker; ln -s ../../../../.. /root/dotdots" % marker_path)
    assert out["exitCode"] == 0, out
    tried = []
    for p in ["/../../../etc/shadow", "../../../../etc/shadow", "/root/../../../../etc/shadow",
              "/etc/../../etc/shadow", "/./../etc/shadow",
              marker_path, "/../../.." + marker_path, "/root/to-marker", "/root/to-root" + marker_path,
              "/root/p1root" + marker_path, "/root/selfroot" + marker_path, "/root/dotdots" + marker_path,
              "/proc/1/root" + marker_path, "/proc/self/root" + marker_path, "/proc/1/cwd" + marker_path,
              "/root/p1root/etc/shadow", "/root/p1root/etc/hostname", "/proc/1/root/etc/hostname"]:
        r = cell.get_file(p)
        tried.append((p, r.status))
        if r.status == 200:
            assert secret not in r.raw, "GET fs/file?path=%s revealed the host marker" % p
            if host_shadow:
                assert r.raw != host_shadow, "GET fs/file?path=%s revealed the host's /etc/shadow" % p
            if p.endswith("hostname") and host_hostname != cell_hostname:
                assert r.raw != host_hostname, "GET fs/file?path=%s revealed the host's /etc/hostname" % p
        else:
            assert 400 <= r.status < 600, (p, r)
    for p in ["/root/to-root" + os.path.dirname(marker_path), "/root/p1root" + os.path.dirname(marker_path)]:
        r = cell.get("/fs/entries", query={"path": p})
        assert not (r.status == 200 and any(e["name"] == "secret.txt" for e in r.body)), (p, r)
        r = cell.get("/fs/stat", query={"path": p + "/secret.txt"})
        assert r.status != 200, (p, r)
    # Writes through the same links stay inside the cell.
    for p in ["/root/to-root" + os.path.dirname(marker_path) + "/w1", "/root/p1root" + os.path.dirname(marker_path)
              + "/w2", "/root/to-marker"]:
        cell.put_file(p, b"overwritten")
    assert host_bytes(marker_path) == secret, "a PUT through a symlink changed the host's file"
    assert not os.path.exists(os.path.join(os.path.dirname(marker_path), "w1"))
    assert not os.path.exists(os.path.join(os.path.dirname(marker_path), "w2"))
    r = cell.post("/fs/move", {"from": "/root/to-marker", "to": "/root/moved", "overwrite": True})
    assert host_bytes(marker_path) == secret
    assert cell.sh("echo ok")["stdout"] == "ok\n", tried


# ---- fs: the cell's credentials, never the daemon's (confused deputy) -------------------
# Many kernel files check whoever calls write(2) or read(2), not whoever
# opened them: the bytes must be moved by a process of the cell.


def host_pid_of_argv(argv):
    """Host pid of the process whose command line is exactly argv, or None."""
    want = b"".join(a.encode() + b"\0" for a in argv)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    if f.read() == want:
                        return int(name)
            except OSError:
                continue
    return None


def proc_status(text):
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def host_int(path):
    with open(path) as f:
        return int(f.read().split()[-1])


@pytest.fixture
def victim(d, admin):
    """(cell of a tenant, host pid, pid in the cell) of a sleeping process in it."""
    tok, _ = make_tenant_token(admin, "deputy")
    tenant = d.client(tok)
    c = Cell(tenant, new_cell(tenant))
    argv = ["sleep", "3600.%06d" % (uuid.uuid4().int % 1000000)]
    c.spawn(argv[0], argv[1:])
    assert wait_for(lambda: host_pid_of_argv(argv) is not None, 10)
    hp = host_pid_of_argv(argv)
    nspid = int(proc_status(open("/proc/%d/status" % hp).read())["NSpid"].split()[-1])
    yield c, hp, nspid
    admin.delete("/v1/cells/%s" % c.id)


def test_fs_put_to_proc_is_checked_against_the_cells_credentials(victim):
    c, hp, pid = victim
    adj = host_int("/proc/%d/oom_score_adj" % hp)
    if adj == -1000:
        pytest.skip("oom_score_adj is already at its minimum")
    # Lowering oom_score_adj needs CAP_SYS_RESOURCE on the host: the daemon
    # has it, the cell's root does not.
    assert_problem(c.put_file("/proc/%d/oom_score_adj" % pid, b"%d" % max(-1000, adj - 100)), 502, "stream_error")
    assert host_int("/proc/%d/oom_score_adj" % hp) == adj
    assert c.sh("echo %d > /proc/%d/oom_score_adj" % (max(-1000, adj - 100), pid))["exitCode"] != 0
    if not os.path.exists("/proc/%d/autogroup" % hp):
        return
    nice = host_int("/proc/%d/autogroup" % hp)
    assert_problem(c.put_file("/proc/%d/autogroup" % pid, b"-20"), 502, "stream_error", "not permitted")
    assert host_int("/proc/%d/autogroup" % hp) == nice
    # What the cell's root may do, the API may do too.
    assert c.put_file("/proc/%d/oom_score_adj" % pid, b"%d" % min(1000, adj + 1)).status == 200
    assert host_int("/proc/%d/oom_score_adj" % hp) == min(1000, adj + 1)


def test_fs_upload_batch_into_proc_is_checked_against_the_cells_credentials(victim):
    c, hp, pid = victim
    adj = host_int("/proc/%d/oom_score_adj" % hp)
    if adj == -1000:
        pytest.skip("oom_score_adj is already at its minimum")
    r = upload(c, "/proc/%d" % pid, make_tar([("oom_score_adj", b"%d" % max(-1000, adj - 100))]))
    assert r.status >= 400, r
    assert host_int("/proc/%d/oom_score_adj" % hp) == adj
    if os.path.exists("/proc/%d/autogroup" % hp):
        nice = host_int("/proc/%d/autogroup" % hp)
        assert upload(c, "/proc/%d" % pid, make_tar([("autogroup", b"-20")])).status >= 400
        assert host_int("/proc/%d/autogroup" % hp) == nice


def test_fs_get_is_read_by_a_process_of_the_cell(d, victim):
    c, hp, pid = victim
    r = c.get_file("/proc/self/status")
    assert r.status == 200, r
    st = proc_status(r.raw.decode())
    cell_st = proc_status(c.sh("cat /proc/self/status")["stdout"])
    daemon_st = proc_status(open("/proc/%d/status" % d.proc.pid).read())
    assert st["Name"] == "cell-fs", st          # the transfer process, not cell-init
    assert st["NSpid"].split()[-1] != "1", st
    assert st["Uid"].split() == ["0"] * 4 and st["Gid"].split() == ["0"] * 4, st
    assert st["CapEff"] == cell_st["CapEff"] != daemon_st["CapEff"], (st["CapEff"], daemon_st["CapEff"])
    assert st["CapBnd"] == cell_st["CapBnd"], st
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
    assert c.get_file("/proc/self/cgroup").raw.decode() == c.sh("cat /proc/self/cgroup")["stdout"]
    # A kernel stack needs CAP_SYS_ADMIN on the host: the daemon has it.
    with open("/proc/%d/stack" % hp) as f:
        assert f.read()
    assert_problem(c.get_file("/proc/%d/stack" % pid), 502, "stream_error", "os error 13")
    assert_problem(c.get_file("/proc/self"), 400, "invalid_request", "not a file")


def test_fs_upload_batch_is_parsed_by_a_confined_child(d, cell):
    """The tar (untrusted) is parsed by cell-untar, exec'd by the daemon, as
    nobody, with no_new_privs, a seccomp filter and only its two pipes: seen
    while an upload is held open halfway."""
    data = make_tar([("first.txt", b"x" * 4096), ("second.txt", b"y")])
    conn = cell.c.chunked("POST", cell.base + "/fs/upload-batch?path=/root/upconf", "application/x-tar")
    try:
        half = data[:2048]
        conn.send(b"%x\r\n%s\r\n" % (len(half), half))

        def parser():
            for name in filter(str.isdigit, os.listdir("/proc")):
                st = proc_status(dm._read("/proc/%s/status" % name))
                if st.get("PPid") == str(d.proc.pid) and st.get("Uid", "").split()[:1] == ["65534"]:
                    return name, st
            return None
        assert wait_for(lambda: parser() is not None, 10)
        pid, st = parser()
        assert st["Name"].startswith("memfd:cell-unta"), st  # its own program, not a fork of the daemon
        assert st["Uid"].split() == ["65534"] * 4 and st["Gid"].split() == ["65534"] * 4, st
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2" and st["CapEff"] == "0" * 16, st
        assert sorted(os.listdir("/proc/%s/fd" % pid)) == ["0", "1"], os.listdir("/proc/%s/fd" % pid)
        rest = data[2048:]
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 200, body
    finally:
        conn.close()
    assert cell.get_file("/root/upconf/first.txt").raw == b"x" * 4096
    assert cell.get_file("/root/upconf/second.txt").raw == b"y"


def test_fs_large_put_get_upload_are_byte_identical(tmp_path_factory):
    with dm.served(tmp_path_factory.mktemp("cellapibig"), ["--max-file-size", "80M"]) as dd:
        admin = dd.client()
        c = Cell(admin, new_cell(admin, resources={"memory": "512M"}))
        big = os.urandom(64 << 20)
        digest = hashlib.sha256(big).hexdigest()
        r = c.put_file("/tmp/big.bin", big)
        assert r.status == 200 and r.body["bytesWritten"] == len(big), r
        g = c.get_file("/tmp/big.bin")
        assert g.status == 200 and hashlib.sha256(g.raw).hexdigest() == digest, len(g.raw)
        assert g.headers.get("content-length") == str(len(big)), g.headers
        r = upload(c, "/tmp/up", make_tar([("big.bin", big)]))
        assert r.status == 200, r
        assert c.sh("sha256sum /tmp/up/big.bin")["stdout"].split()[0] == digest


def test_fs_body_over_max_file_size_is_413(cell, admin):
    big = b"z" * (MAX_FILE + 1024)
    r = cell.put_file("/root/too-big", big)
    assert_problem(r, 413)
    # Chunked, without a Content-Length: refused while streaming.
    conn = cell.c.chunked("PUT", cell.base + "/fs/file?path=/root/too-big-chunked")
    try:
        chunk = b"y" * 65536
        sent = 0
        try:
            while sent <= MAX_FILE + 65536:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 413, (resp.status, body)
    finally:
        conn.close()
    r = upload(cell, "/root/up-too-big", make_tar([("x.bin", big)]))
    assert_problem(r, 413)
    assert admin.get("/v1/health").status == 200
    assert cell.get("/health").status == 200
    assert cell.sh("echo still-serving")["stdout"] == "still-serving\n"


def test_lane_import_over_max_file_size_is_413_and_leaves_no_lane(admin, d):
    # Declared up front, and streamed in chunks without a Content-Length.
    tar_bytes = make_tar([("big.bin", b"q" * (MAX_FILE + 1024))])
    r = admin.call("POST", "/v1/lanes/too-big/import", body=tar_bytes, headers={"Content-Type": "application/x-tar"})
    assert_problem(r, 413, "payload_too_large", "max-file-size")
    conn = admin.chunked("POST", "/v1/lanes/too-big-chunked/import", "application/x-tar")
    try:
        dm.send_chunks(conn, tar_bytes, 65536)
        resp = conn.getresponse()
        assert resp.status == 413, (resp.status, resp.read())
    finally:
        conn.close()
    # The refused import is abandoned when its request ends: no lane remains,
    # not even a row left "creating" (which the API would not list).
    def leftovers():
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.state, "cell.db"), uri=True)
        try:
            return db.execute("SELECT name, state FROM lanes WHERE name LIKE 'too-big%'").fetchall()
        finally:
            db.close()
    dm.wait_for(lambda: not leftovers(), 5)
    assert not leftovers()
    for name in ("too-big", "too-big-chunked"):
        assert admin.get("/v1/lanes/" + name).status == 404


# ---- cell states, tenants, unimplemented routes -----------------------------------------


PER_CELL_ROUTES = [
    ("GET", "/health", None), ("GET", "/processes/config", None), ("POST", "/processes/run", {"command": "true"}),
    ("POST", "/processes", {"command": "true"}), ("GET", "/processes", None), ("GET", "/processes/proc_1", None),
    ("GET", "/processes/proc_1/logs", None), ("POST", "/processes/proc_1/stop", None),
    ("GET", "/fs/file?path=/etc/passwd", None), ("GET", "/fs/entries?path=/", None),
    ("GET", "/fs/stat?path=/", None), ("POST", "/fs/mkdir?path=/x", None),
]


def test_stopped_cell_is_409(admin):
    cid = new_cell(admin)
    c = Cell(admin, cid)
    try:
        assert admin.post("/v1/cells/%s/stop" % cid).status == 200
        for method, path, body in PER_CELL_ROUTES:
            assert_problem(c.call(method, path, json_body=body), 409, "cell_stopped")
        assert_problem(c.put_file("/root/x", b"data"), 409, "cell_stopped")
        assert_problem(upload(c, "/root", make_tar([("a", b"a")])), 409, "cell_stopped")
        assert admin.post("/v1/cells/%s/start" % cid).status == 200
        assert c.get("/health").status == 200
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_unknown_and_other_tenants_cell_is_404(d, admin, cell):
    tok, _ = make_tenant_token(admin, "stranger")
    stranger = d.client(tok)
    for cid, client in [("000000000000", admin), (cell.id, stranger)]:
        c = Cell(client, cid)
        for method, path, body in PER_CELL_ROUTES:
            assert_problem(c.call(method, path, json_body=body), 404, "not_found")
        assert_problem(c.put_file("/root/x", b"data"), 404, "not_found")
    assert cell.get_file("/root/x").status == 400, "a refused PUT must not write"


# Agents, ACP and the desktop are served now (test_agents.py, test_desktop.py),
# the desktop's open and stream bookkeeping too; the WebRTC signaling is not.
def test_desktop_stream_signaling_is_501(cell):
    assert_problem(cell.get("/desktop/stream/signaling"), 501, "not_implemented")


def test_unknown_per_cell_route(cell):
    assert_problem(cell.get("/nope"), 404)
    assert_problem(cell.call("DELETE", "/processes"), 405)
    assert_problem(cell.call("POST", "/health"), 405)
