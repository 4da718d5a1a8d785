"""`cell serve`'s front door, attacked: connection floods and slow clients,
--no-token on TCP, streams outliving their revoked token, tokens in URLs,
SIGHUP, and a second daemon on the same state directory.

Each test starts daemons of its own (small limits and timeouts as flags),
so the attacks cannot disturb other modules' daemons.
"""
import http.client
import io
import json
import os
import resource
import select
import signal
import socket
import subprocess
import tarfile
import threading
import time

import pytest

import daemon as dm
import wsclient
from daemon import UnixHTTPConnection, assert_problem, make_tenant_token, uniq, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cell serve tests must run as root")


@pytest.fixture
def daemons():
    started = []

    def start(state, args=(), **kw):
        d = dm.Daemon(state, list(args), **kw)
        d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        try:
            d.stop()
        finally:
            d.check_sanitizer()


def unix_get(path, url, token):
    c = UnixHTTPConnection(path)
    try:
        c.request("GET", url, headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get_from(src, port, url, token=None, timeout=10):
    """GET over TCP from a chosen loopback source address."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(src, 0))
    try:
        c.request("GET", url, headers={"Authorization": "Bearer " + token} if token else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def closed_by_peer(s):
    """True once the daemon has closed this socket (EOF or reset)."""
    try:
        p = select.poll()               # select() cannot take fds above 1023
        p.register(s, select.POLLIN)
        if not p.poll(0):
            return False
        return s.recv(4096, socket.MSG_DONTWAIT) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, n))
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def open_idle(port, n, src="127.0.0.1"):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    return socks


# ---- class 7: connection exhaustion ---------------------------------------------------------


def test_idle_flood_and_slowloris_do_not_lock_clients_out(tmp_path, daemons):
    """1100 idle connections from 127.0.0.1 and a client dribbling its
    headers: another loopback address and the unix socket are still served,
    and the daemon closes the idle and the slow connections by itself."""
    raise_nofile(4096)
    sock = str(tmp_path / "cell.sock")
    # Timeouts long enough for the checks below to run while the flood holds.
    d = daemons(tmp_path / "st", ["--socket", sock, "--max-connections-per-ip", "16",
                                  "--idle-timeout", "10", "--header-timeout", "12"])
    token = d.admin_token
    flood = open_idle(d.port, 1100)
    stop = threading.Event()
    slow = socket.create_connection(("127.0.0.1", d.port), source_address=("127.0.0.3", 0))
    slow_closed = threading.Event()

    def dribble():
        head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        for ch in head:
            if stop.is_set():
                return
            try:
                slow.send(bytes([ch]))
            except OSError:
                slow_closed.set()
                return
            if closed_by_peer(slow):
                slow_closed.set()
                return
            time.sleep(0.5)          # well inside the idle timeout: only the head deadline can end it

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        time.sleep(1)
        # Another loopback address is a different peer: it has its own quota.
        st, body = get_from("127.0.0.2", d.port, "/v1/cells", token)
        assert st == 200, body
        st, _ = get_from("127.0.0.2", d.port, "/v1/health")
        assert st == 200
        # The admin's way in is a daemon instance of its own.
        st, body = unix_get(sock, "/v1/cells", token)
        assert st == 200, body
        # 127.0.0.1 itself is at its limit: a new connection gets no answer.
        with pytest.raises((OSError, http.client.HTTPException)):
            get_from("127.0.0.1", d.port, "/v1/health", timeout=3)
        # The idle connections and the slow one are closed by the daemon.
        assert wait_for(lambda: slow_closed.is_set(), 30, 0.2), "a client dribbling its headers kept its connection"
        # ThreadSanitizer slows the daemon's accept-and-close of 1100 sockets several-fold.
        assert wait_for(lambda: all(closed_by_peer(s) for s in flood), 120 if dm.TSAN else 30, 0.5), \
            "%d of the idle connections are still open" % sum(not closed_by_peer(s) for s in flood)
        assert wait_for(lambda: health_ok("127.0.0.1", d.port), 20, 0.5), "127.0.0.1 did not recover"
    finally:
        stop.set()
        t.join(10)
        slow.close()
        for s in flood:
            s.close()


def test_full_tcp_listener_leaves_the_unix_socket_working(tmp_path, daemons):
    """The total limit: every TCP slot taken (from many loopback addresses,
    so the per-address limit does not help); the unix socket still answers."""
    sock = str(tmp_path / "cell.sock")
    d = daemons(tmp_path / "st", ["--socket", sock, "--max-connections", "8", "--header-timeout", "60",
                                  "--idle-timeout", "60"])
    token = d.admin_token
    held = []
    try:
        for i in range(8):
            held += open_idle(d.port, 1, "127.0.1.%d" % (i + 1))
        # All eight held by the daemon before the probe: the fixture's own
        # health check closed its connection just before, and a loaded
        # daemon may still count it, refusing (closing) a held one at the
        # limit; that one is opened again until all eight stay open.
        for _ in range(20):
            for s in held:
                _, w, _ = select.select([], [s], [], 20)
                assert w and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0, "a held connection did not connect"
            time.sleep(1)
            closed = [i for i, s in enumerate(held) if select.select([s], [], [], 0)[0]]
            if not closed:
                break
            for i in closed:
                held[i].close()
                held[i] = open_idle(d.port, 1, "127.0.1.%d" % (i + 1))[0]
        else:
            pytest.fail("the daemon kept closing held connections below its limit")
        st, body = unix_get(sock, "/v1/cells", token)
        assert st == 200, body
        with pytest.raises((OSError, http.client.HTTPException)):
            get_from("127.0.2.1", d.port, "/v1/health", timeout=2)
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: health_ok("127.0.2.1", d.port), 20, 0.5), "TCP did not recover"


def health_ok(src, port):
    try:
        return get_from(src, port, "/v1/health", timeout=2)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def test_stalled_body_is_closed(tmp_path, daemons):
    d = daemons(tmp_path / "st", ["--idle-timeout", "2"])
    s = socket.create_connection(("127.0.0.1", d.port))
    try:
        s.sendall(b"POST /v1/lanes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + d.admin_token.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na")
        s.setblocking(False)
        assert wait_for(lambda: closed_by_peer(s), 30, 0.2), "a stalled body kept its connection"
    finally:
        s.close()


def test_unauthenticated_trickled_body_is_closed(tmp_path, daemons):
    """A refused (no token) request's body is drained so the client sees the
    401, but a body trickled in below the idle timeout gets no more time
    than a request head."""
    d = daemons(tmp_path / "st", ["--idle-timeout", "5", "--header-timeout", "3"])
    s = socket.create_connection(("127.0.0.1", d.port))
    s.setblocking(False)
    try:
        s.sendall(b"POST /v1/lanes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n")
        closed = False
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not closed:
            try:
                s.send(b"x")
            except OSError:
                closed = True
                break
            time.sleep(1)            # inside the idle timeout
            closed = closed_by_peer(s)
        assert closed, "an unauthenticated client kept its connection by trickling a body"
    finally:
        s.close()


@pytest.mark.parametrize("args", [["--max-connections", "0"], ["--max-connections-per-ip", "x"],
                                  ["--idle-timeout", "-1"], ["--header-timeout", "99999999"],
                                  ["--max-connections", "100000"]])
def test_limit_flags_are_checked(tmp_path, args):
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--listen", "127.0.0.1:0",
                        "--socket", ""] + args, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r
    assert args[0] in r.stderr or "RLIMIT_NOFILE" in r.stderr, r.stderr


@pytest.mark.parametrize("spec", ["127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80",
                                  "127.0.0.1:80x", "127.0.0.1: 80", "127.0.0.1:", "127.0.0.1", ":80"])
def test_listen_port_out_of_range_is_an_error(tmp_path, spec):
    """--listen 127.0.0.1:99999 listened on 34463 (getaddrinfo keeps the low
    16 bits) and said it listened on 99999."""
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--listen", spec, "--socket", ""],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r
    assert "--listen" in r.stderr and spec in r.stderr, r.stderr


def test_listen_port_zero_reports_the_port_it_got(tmp_path):
    p = subprocess.Popen([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--listen", "127.0.0.1:0",
                          "--socket", ""], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        for _ in range(10):
            line = p.stdout.readline()
            if "listening on" in line:
                break
        port = int(line.strip().rsplit(":", 1)[1])
        assert 0 < port < 65536, line
        r = dm.Client("127.0.0.1", port, timeout=10).get("/v1/health")
        assert r.status == 200, r
    finally:
        p.terminate()
        p.wait(30)


def test_serve_help_documents_limits_and_signals():
    out = subprocess.run([dm.CELL_BIN, "serve", "--help"], capture_output=True, text=True).stdout
    for word in ("--max-connections", "--max-connections-per-ip", "--idle-timeout", "--header-timeout",
                 "--log", "HUP", "TERM", "KILL", "--no-token-on-tcp-i-understand-anyone-local-is-admin"):
        assert word in out, word


# ---- cells, processes, streams ------------------------------------------------------------------


create_cell = dm.create_small_cell
spawn = dm.spawn


def ws_open(port, path, token=None, query_token=None):
    """A WebSocket handshake; returns (socket, status line, rest)."""
    if query_token:
        path += "?access_token=" + query_token
    s, lines, rest = wsclient.handshake(port, path, token, timeout=10)
    return s, lines[0], rest


def ws_drain_until_closed(s, rest, limit):
    """Read until the daemon closes the WebSocket; True if it did within limit."""
    s.settimeout(1)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True
        if not chunk:
            return True
    return False


def test_revoking_a_token_ends_its_streams(tmp_path, daemons):
    """A tenant's SSE log follow, terminal WebSocket and an idle keep-alive
    connection all end when an admin revokes the tenant's token."""
    d = daemons(tmp_path / "st", ["--idle-timeout", "300"])
    admin = d.client()
    tok, tid = make_tenant_token(admin, "victim")
    other_tok, _ = make_tenant_token(admin, "bystander")
    c, other = d.client(tok), d.client(other_tok)
    cid, ocid = create_cell(c), create_cell(other)
    try:
        sleeper = spawn(c, cid, "sh", ["-c", "while :; do echo tick; sleep 1; done"])
        term = spawn(c, cid, "sh", tty=True, interactive=True)
        osleeper = spawn(other, ocid, "sh", ["-c", "while :; do echo tock; sleep 1; done"])

        conn, resp = c.stream("GET", "/cells/%s/v1/processes/%s/logs?follow=true" % (cid, sleeper))
        assert resp.status == 200
        assert resp.readline()                        # the stream is live
        oconn, oresp = other.stream("GET", "/cells/%s/v1/processes/%s/logs?follow=true" % (ocid, osleeper))
        assert oresp.status == 200
        ws, status, rest = ws_open(d.port, "/cells/%s/v1/processes/%s/terminal/ws" % (cid, term), token=tok)
        assert " 101 " in status, status

        ended = {}

        def read_sse():
            conn.sock.settimeout(60)
            try:
                while resp.readline():
                    pass
            except OSError:
                pass
            ended["sse"] = True

        t = threading.Thread(target=read_sse, daemon=True)
        t.start()
        assert admin.delete("/v1/tokens/%s" % tid).status == 204
        t.join(30)
        assert ended.get("sse"), "the SSE follow of a revoked token went on"
        assert ws_drain_until_closed(ws, rest, 30), "the terminal WebSocket of a revoked token stayed open"
        # New requests with the token are refused.
        assert_problem(c.get("/v1/cells"), 401, "token_invalid")
        assert_problem(c.get("/cells/%s/v1/processes" % cid), 401, "token_invalid")
        # The bystander's stream goes on.
        oconn.sock.settimeout(10)
        assert oresp.readline()
        oconn.close()
        ws.close()
        conn.close()
    finally:
        admin.delete("/v1/cells/%s" % cid)
        admin.delete("/v1/cells/%s" % ocid)


def test_stream_to_a_client_that_stopped_reading_is_cut(tmp_path, daemons):
    """A log follow has no idle timeout, but a client that stops reading
    must not hold the stream's thread for ever; a quiet stream whose client
    reads stays open."""
    d = daemons(tmp_path / "st", ["--idle-timeout", "2"])
    admin = d.client()
    cid = create_cell(admin)
    try:
        loud = spawn(admin, cid, "sh", ["-c", "while :; do seq 1 2000; done"])
        quiet = spawn(admin, cid, "sh", ["-c", "sleep 6; echo late"])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", d.port))
        s.sendall(("GET /cells/%s/v1/processes/%s/logs?follow=true HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\n\r\n" % (cid, loud, d.admin_token)).encode())
        # The quiet stream: idle longer than --idle-timeout, then its line arrives.
        qconn, qresp = admin.stream("GET", "/cells/%s/v1/processes/%s/logs?follow=true" % (cid, quiet))
        assert qresp.status == 200
        body = b""
        qconn.sock.settimeout(30)
        while b"event: log" not in body:
            line = qresp.readline()
            assert line, "a quiet stream was closed: %r" % body
            body += line
        qconn.close()
        # By now the loud stream's client has not read for > 6 s.  Reading
        # now must hit the end: a live stream of a looping process never ends.
        s.settimeout(10)
        ended = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if not s.recv(1 << 20):
                    ended = True
                    break
            except ConnectionResetError:
                ended = True
                break
            except socket.timeout:
                continue
        s.close()
        assert ended, "the stream to a client that stopped reading stayed open"
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_unauthenticated_flood_cannot_flood_the_audit_log(tmp_path, daemons):
    """Every failed request is accounted for, but only a few per second get
    a record of their own: the rest are counted in the next record."""
    d = daemons(tmp_path / "st")
    path = "/v1/cells/%s" % uniq("flood")
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    start = time.monotonic()
    n = 300
    for _ in range(n):
        c.request("GET", path, headers={"Authorization": "Bearer cell_000000000000_" + "0" * 32})
        r = c.getresponse()
        r.read()
        assert r.status == 401
    elapsed = time.monotonic() - start
    c.close()
    time.sleep(1.1)                  # a new second: the next one is recorded with the count
    assert d.client(admin=False).get(path).status == 401

    def records():
        with open(os.path.join(d.state, "audit.log")) as f:
            return [rec for rec in map(json.loads, f) if rec.get("path") == path]

    def counted(recs):
        return len(recs) + sum(r.get("unauthenticatedSuppressed", 0) for r in recs)

    # The last record (the one carrying the count) is appended once its
    # request completes, which may be after the client has its answer.
    recs = wait_for(lambda: (lambda rs: rs if counted(rs) >= n + 1 else None)(records()), 10) or records()
    assert all(r["token"] == "-" and r["status"] == 401 for r in recs), recs[:3]
    assert len(recs) + sum(r.get("unauthenticatedSuppressed", 0) for r in recs) == n + 1, recs
    assert len(recs) <= 5 * (elapsed + 3), (len(recs), elapsed)


# ---- ?access_token= ------------------------------------------------------------------------------


def test_access_token_only_where_headers_cannot_be_set(tmp_path, daemons):
    d = daemons(tmp_path / "st")
    admin = d.client()
    tok, _ = make_tenant_token(admin, "urltok")
    anon = d.client(admin=False)
    c = d.client(tok)
    cid = create_cell(c)
    try:
        for path in ("/v1/cells", "/v1/tenants/urltok", "/cells/%s/v1/processes" % cid):
            b = assert_problem(anon.get(path, query={"access_token": tok}), 401, "token_invalid")
            assert "Authorization" in b["detail"], b
        p = spawn(c, cid, "echo", ["hi"])
        logs = "/cells/%s/v1/processes/%s/logs" % (cid, p)
        # The log route without asking for an event stream: refused.
        assert_problem(anon.get(logs, query={"access_token": tok}), 401, "token_invalid")
        # An EventSource (Accept: text/event-stream) may use it.
        r = anon.get(logs, query={"access_token": tok, "follow": "true"}, headers={"Accept": "text/event-stream"})
        assert r.status == 200 and r.ctype == "text/event-stream", r
        # A WebSocket upgrade may use it; a bad one is still refused.
        t = spawn(c, cid, "sh", tty=True, interactive=True)
        ws, status, _ = ws_open(d.port, "/cells/%s/v1/processes/%s/terminal/ws" % (cid, t), query_token=tok)
        assert " 101 " in status, status
        ws.close()
        ws, status, _ = ws_open(d.port, "/cells/%s/v1/processes/%s/terminal/ws" % (cid, t), query_token="nope")
        assert " 401 " in status, status
        ws.close()
        # The header still works everywhere, and wins over a URL token.
        assert c.get("/v1/cells", query={"access_token": "garbage"}).status == 200
    finally:
        admin.delete("/v1/cells/%s" % cid)


# ---- class 12: --no-token ------------------------------------------------------------------------


def test_no_token_is_refused_on_tcp(tmp_path):
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--listen",
                        "127.0.0.1:%d" % dm.free_port(), "--socket", "", "--no-token"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r   # a usage error
    assert "--no-token" in r.stderr and "--no-token-on-tcp-i-understand-anyone-local-is-admin" in r.stderr, r.stderr
    # Nothing was touched: the state directory has no database.
    assert not os.path.exists(tmp_path / "st" / "cell.db")


def test_no_token_on_the_unix_socket_only(tmp_path):
    sock = str(tmp_path / "cell.sock")
    p = subprocess.Popen([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--listen", "",
                          "--socket", sock, "--no-token"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 20), "no socket"
        assert p.poll() is None, p.stderr.read()
        assert os.stat(sock).st_mode & 0o077 == 0, oct(os.stat(sock).st_mode)
        c = UnixHTTPConnection(sock)
        c.request("GET", "/v1/cells")
        assert c.getresponse().status == 200
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_no_token_on_tcp_with_the_override_warns(tmp_path, daemons):
    d = daemons(tmp_path / "st", ["--no-token", "--no-token-on-tcp-i-understand-anyone-local-is-admin"])
    assert d.client(admin=False).get("/v1/cells").status == 200
    assert "WARNING" in d.stderr() and "every local user" in d.stderr(), d.stderr()


# ---- SIGHUP ------------------------------------------------------------------------------------------


def test_sighup_reopens_the_log_and_keeps_cells(tmp_path, daemons):
    log = tmp_path / "daemon.log"
    d = daemons(tmp_path / "st", ["--log", str(log)])
    admin = d.client()
    cid = create_cell(admin)
    try:
        p = spawn(admin, cid, "sleep", ["300"])
        assert "listening on" in log.read_text()
        os.rename(log, str(log) + ".1")
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: log.exists() and "log reopened" in log.read_text(), 10), "the log was not reopened"
        assert d.running()
        assert admin.get("/v1/cells/%s" % cid).body["state"] == "running"
        r = admin.get("/cells/%s/v1/processes/%s" % (cid, p))
        assert r.status == 200 and r.body["status"] == "running", r
        r = admin.post("/cells/%s/v1/processes/run" % cid, {"command": "echo", "args": ["alive"]})
        assert r.status == 200 and r.body["stdout"] == "alive\n", r
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_sighup_without_log_keeps_the_daemon(tmp_path, daemons):
    d = daemons(tmp_path / "st")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert d.running() and d.client().get("/v1/cells").status == 200


# ---- one daemon per state directory ------------------------------------------------------------


def lane_tar(size=4 << 20):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = os.urandom(size)
        ti = tarfile.TarInfo("big.bin")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_second_daemon_on_the_same_state_is_refused(tmp_path, daemons):
    state = tmp_path / "st"
    d = daemons(state)
    admin = d.client()
    cid = create_cell(admin)
    try:
        # An import in progress: half the body sent.
        body = lane_tar()
        name = uniq("imp")
        s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
        s.sendall(("POST /v1/lanes/%s/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n"
                   % (name, d.admin_token, len(body))).encode())
        s.sendall(body[:len(body) // 2])
        time.sleep(1)
        second = subprocess.run([dm.CELL_BIN, "--state", str(state), "serve", "--listen",
                                 "127.0.0.1:%d" % dm.free_port(), "--socket", ""],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0, second
        assert str(state) in second.stderr and str(d.proc.pid) in second.stderr, second.stderr
        # The first daemon's cell still runs, and the import completes.
        assert admin.get("/v1/cells/%s" % cid).body["state"] == "running"
        r = admin.post("/cells/%s/v1/processes/run" % cid, {"command": "echo", "args": ["alive"]})
        assert r.status == 200 and r.body["stdout"] == "alive\n", r
        s.sendall(body[len(body) // 2:])
        f = s.makefile("rb")
        status = f.readline()
        assert b" 201 " in status, status + f.read(2000)
        s.close()
        assert admin.get("/v1/lanes/%s" % name).status == 200
        # The CLI's own commands still work on the state directory.
        r = subprocess.run([dm.CELL_BIN, "--state", str(state), "lane", "ls"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r
        assert admin.delete("/v1/lanes/%s" % name).status == 204
    finally:
        admin.delete("/v1/cells/%s" % cid)
