"""A `cell serve` daemon for the integration tests, and an HTTP client for it.

Standard library only.  Typical use, in a module-scoped fixture:

    d = Daemon(tmp_path_factory.mktemp("d"))
    d.start()
    api = d.client()                      # admin token
    st, hdrs, body = api.call("GET", "/v1/cells")
    ...
    d.stop()                              # SIGTERM, wait, then d.check_clean()

A module's daemon fixture is usually `yield from serve(state, extra_args)`
(start, yield, stop, check_sanitizer); conftest.py's `admin`, `anon` and
`cells` fixtures build on a module fixture named `d`.  `served` is the same
as a context manager, for a daemon of one test.

Environment:
    CELL_BIN   the cell binary (default: <checkout>/build/cell)

The daemon's stderr goes to STATE/daemon.stderr; check_sanitizer() fails if
it holds AddressSanitizer / UBSan / LeakSanitizer output (ASan builds) or a
ThreadSanitizer report (TSan builds).
"""
import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse

import openapi_contract

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
CELL_BIN = os.environ.get("CELL_BIN") or os.path.join(CHECKOUT, "build", "cell")

# Cells run as host uids from 0x40000000 up.
CELL_UID_FIRST = 0x40000000
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer")


def _links(path, lib):
    try:
        return lib in subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    except OSError:
        return False


# ThreadSanitizer's shadow memory multiplies the daemon's RSS: tests that
# bound RSS growth skip themselves under it (release and ASan runs keep them).
TSAN = _links(CELL_BIN, "libtsan")
ASAN = _links(CELL_BIN, "libasan")


# Ports served with TLS: port -> the ssl.SSLContext a Daemon(ssl_context=)
# was given; every Client of such a port speaks https.
TLS_CONTEXTS = {}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Poll predicate() until it returns a true value or timeout; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ---- leftovers -------------------------------------------------------------------------


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cell_uid_pids():
    """(uid, pid) of live processes running as a cell uid (ps -eo uid,pid,stat)."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,stat="], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        uid, pid, stat = int(parts[0]), int(parts[1]), parts[2]
        if uid >= CELL_UID_FIRST and not stat.startswith("Z"):
            found.append((uid, pid))
    return found


def cell_pids_of_state(state):
    """Cell processes belonging to cells of this state directory: the cell's
    root overlay names the state dir in its mount options.  Cells of other
    daemons and test runs on the same host are not counted."""
    state = str(state)
    return [pid for _, pid in cell_uid_pids() if state in _read("/proc/%d/mountinfo" % pid)]


def mounts_under(state):
    state = str(state)
    return [l for l in _read("/proc/self/mountinfo").splitlines() if state in l]


def proc_status(pid, tid=None):
    """/proc/PID[/task/TID]/status as a dict (raises OSError when gone)."""
    path = "/proc/%d/status" % pid if tid is None else "/proc/%d/task/%d/status" % (pid, tid)
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def rss_kib(pid):
    """VmRSS of a host process, in KiB."""
    return int(proc_status(pid)["VmRSS"].split()[0])


def children(pid):
    """Host pids whose parent is pid."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if proc_status(int(p)).get("PPid") == str(pid):
                    out.append(int(p))
            except OSError:
                pass
    return out


# ---- the client ------------------------------------------------------------------------


class Response(tuple):
    """(status, headers, body) with attribute access too."""

    def __new__(cls, status, headers, body, raw):
        self = tuple.__new__(cls, (status, headers, body))
        self.status, self.headers, self.body, self.raw = status, headers, body, raw
        return self

    @property
    def ctype(self):
        return (self.headers.get("content-type") or "").split(";")[0].strip()

    def __repr__(self):
        return "Response(%d, %s, %r)" % (self.status, self.ctype, self.body if self.body is not None else self.raw[:300])


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the daemon's STATE/cell.sock)."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Client:
    # Each answer is checked against docs/openapi.json (openapi_contract.py);
    # a test talking to something else sets this False.
    openapi = openapi_contract.ENABLED

    def __init__(self, host, port, token=None, timeout=60, unix=None):
        """unix: talk to this unix socket instead of host:port."""
        self.host, self.port, self.token, self.timeout, self.unix = host, port, token, timeout, unix

    def with_token(self, token):
        c = Client(self.host, self.port, token, self.timeout, unix=self.unix)
        c.openapi = self.openapi
        return c

    def conn(self, timeout=None):
        if self.unix:
            return UnixHTTPConnection(self.unix, timeout or self.timeout)
        ctx = TLS_CONTEXTS.get(self.port)
        if ctx:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout or self.timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def headers_for(self, headers=None, token=None):
        h = {}
        tok = self.token if token is None else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        h.update(headers or {})
        return h

    def call(self, method, path, json_body=None, body=None, headers=None, token=None, query=None, timeout=None):
        """Returns Response(status, headers (lower-case keys), parsed body).
        The body is parsed as JSON for JSON and problem+json replies, else bytes."""
        if query:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
        h = self.headers_for(headers, token)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            raw = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()
        ctype = (hdrs.get("content-type") or "").split(";")[0].strip()
        parsed = raw
        if ctype in ("application/json", "application/problem+json"):
            parsed = json.loads(raw) if raw else None
        if self.openapi:
            openapi_contract.check_response(method, path, r.status, ctype, parsed, raw, headers=hdrs)
        return Response(r.status, hdrs, parsed, raw)

    # shorthands
    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.call("POST", path, json_body=json_body, **kw)

    def put(self, path, json_body=None, **kw):
        return self.call("PUT", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def chunked(self, method, path, content_type=None, timeout=None):
        """A connection with the request line and headers sent for a chunked
        body (no Content-Length); the caller sends the chunks (send_chunks)
        and reads the response."""
        c = self.conn(timeout)
        h = {"Content-Type": content_type} if content_type else {}
        h["Transfer-Encoding"] = "chunked"
        c.putrequest(method, path)
        for k, v in self.headers_for(h).items():
            c.putheader(k, v)
        c.endheaders()
        return c

    def stream(self, method, path, headers=None, timeout=None):
        """Open a request and return (connection, response) unread, for SSE."""
        c = self.conn(timeout)
        c.request(method, path, headers=self.headers_for(headers))
        r = c.getresponse()
        if self.openapi:
            ctype = (r.getheader("content-type") or "").split(";")[0].strip()
            try:
                openapi_contract.check_response(method, path, r.status, ctype, None, b"", streamed=True,
                                                headers={k.lower(): v for k, v in r.getheaders()})
            except AssertionError:
                c.close()
                raise
        return c, r


def recv_to_close(s):
    """Everything a socket receives until the peer closes (a raw HTTP/1.1
    exchange with Connection: close), then the socket is closed."""
    buf = b""
    with s:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return buf
            buf += chunk


def raw_get(port, path, token, rcvbuf=None, host="127.0.0.1"):
    """A GET on a socket of its own, with Connection: close: (socket, head),
    the status line and headers read and not a byte of the body.  rcvbuf:
    a small receive buffer, so that the daemon's side of a big answer fills
    and stays full while the test does not read (a slow reader)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((host, port))
    return s, raw_get_on(s, path, token)


def raw_get_on(s, path, token):
    """raw_get on a socket already connected (a test that connects first
    and sends at a barrier): the head, read a byte at a time so that not a
    byte of the body is taken."""
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
               % (path, token)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        got = s.recv(1)
        if not got:
            break
        head += got
    return head


def content_length(head):
    """The Content-Length of a raw answer's head, or None."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return None


def send_chunks(conn, data, size):
    """Send data in chunks of `size` and the last chunk; stop quietly when the
    server closed first (it may refuse a body half-way).  True if all went."""
    try:
        for i in range(0, len(data), size):
            part = data[i:i + size]
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
        return True
    except OSError:
        return False


def assert_problem(resp, status, type_suffix=None, detail_has=None):
    """resp is a problem+json of this status (and type, and detail text)."""
    assert resp.status == status, resp
    assert resp.ctype == "application/problem+json", resp
    b = resp.body
    assert isinstance(b, dict) and b.get("status") == status, resp
    assert isinstance(b.get("type"), str) and isinstance(b.get("title"), str) and isinstance(b.get("detail"), str), resp
    if type_suffix:
        assert b["type"].endswith(":" + type_suffix), resp
    if detail_has:
        for s in ([detail_has] if isinstance(detail_has, str) else detail_has):
            assert s in b["detail"], resp
    return b


def sse_events(resp, limit_s=20):
    """Parse a text/event-stream response until it ends: [(event, data)]."""
    events, event, data = [], None, []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        if line == "":
            if event is not None or data:
                events.append((event or "message", "\n".join(data)))
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    return events


# ---- the daemon ------------------------------------------------------------------------


class Daemon:
    def __init__(self, state, extra_args=(), port=None, unix_socket=False, ssl_context=None, host="127.0.0.1",
                 netns=None):
        """unix_socket: also serve STATE/cell.sock (the CLI's way in).
        ssl_context: the daemon serves TLS (extra_args give --tls-cert...);
        its clients connect with this context.  host: the address to listen
        on and connect to (one the test added, off loopback).  netns: run
        the daemon in that network namespace (/run/netns/NAME, entered with
        nsenter --net only) on STATE/cell.sock alone; clients use the socket."""
        self.netns = netns
        if netns:
            unix_socket = True
        self.state = str(state)
        self.extra_args = list(extra_args)
        self.port = port
        self.unix_socket = unix_socket
        self.ssl_context = ssl_context
        self.host = host
        self.proc = None
        self.stderr_path = os.path.join(self.state, "daemon.stderr")
        self.stdout_path = os.path.join(self.state, "daemon.stdout")

    @property
    def admin_token(self):
        with open(os.path.join(self.state, "admin.token")) as f:
            return f.read().strip()

    def start(self, timeout=20):
        # A port free_port() picked may be taken by another process (another
        # pytest-xdist worker's daemon, a test's server) before the daemon
        # binds it: then pick again.  A port the test chose (or a restart's) is kept.
        picked = self.port is None
        for attempt in range(3):
            if picked:
                self.port = free_port()
            seen = len(self.stderr())
            try:
                return self._start_once(timeout)
            except RuntimeError:
                self._close_logs()
                if not picked or attempt == 2 or "Address already in use" not in self.stderr()[seen:]:
                    raise

    def _start_once(self, timeout):
        os.makedirs(self.state, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        # --init: the state is new (or a restart's, where it is harmless);
        # --no-config: a host's /etc/cell/cell.conf must not change the tests
        # (unless the test names a --config of its own).
        argv = (["nsenter", "--net=/run/netns/" + self.netns] if self.netns else []) + \
            [CELL_BIN, "--state", self.state, "serve", "--init"]
        argv += [] if any(a == "--config" or a.startswith("--config=") for a in self.extra_args) else ["--no-config"]
        argv += ["--listen", "" if self.netns else "%s:%d" % (self.host, self.port)]
        argv += ([] if self.unix_socket else ["--socket", ""]) + self.extra_args
        # Append: a restarted daemon keeps the earlier run's sanitizer output.
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        if self.ssl_context:
            TLS_CONTEXTS[self.port] = self.ssl_context
        c = Client(self.host, self.port, timeout=2, unix=self.sock_path if self.netns else None)

        def healthy():
            if self.proc.poll() is not None:
                raise RuntimeError("cell serve exited with %s: %s" % (self.proc.returncode, self.stderr()[-3000:]))
            if self.unix_socket and not os.path.exists(os.path.join(self.state, "cell.sock")):
                return False
            try:
                return c.get("/v1/health").status == 200
            except OSError:
                return False

        if not wait_for(healthy, timeout, 0.05):
            self.kill9()
            raise RuntimeError("cell serve never answered GET /v1/health: %s" % self.stderr()[-3000:])
        return self

    @property
    def sock_path(self):
        return os.path.join(self.state, "cell.sock")

    def client(self, token=None, admin=True):
        if token is None and admin:
            token = self.admin_token
        return Client(self.host, self.port, token, unix=self.sock_path if self.netns else None)

    def tenant(self, name, **extra):
        """A client with a new token of tenant `name` (made by the admin)."""
        tok, _ = make_tenant_token(self.client(), name, **extra)
        return self.client(tok, admin=False)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_logs(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()

    def stop(self, timeout=30, check=True):
        """SIGTERM and wait; returns the exit status.  Then check_clean()."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
                    raise AssertionError("cell serve did not stop within %ss of SIGTERM" % timeout)
            rc = self.proc.returncode
            self._close_logs()
        if check:
            self.check_clean()
        return rc

    def kill9(self):
        """kill -9 the daemon (crash tests); no cleanup check."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_logs()

    def leftovers(self):
        problems = []
        pids = cell_pids_of_state(self.state)
        if pids:
            problems.append("cell processes still running: %s" % pids)
        mounts = mounts_under(self.state)
        if mounts:
            problems.append("mounts under the state dir: %s" % mounts)
        return problems

    def check_clean(self, timeout=10):
        """No processes of this daemon's cells and no mounts under the state dir."""
        wait_for(lambda: not self.leftovers(), timeout, 0.1)
        problems = self.leftovers()
        assert not problems, "leftovers after the daemon stopped: " + "; ".join(problems)

    def stderr(self):
        return _read(self.stderr_path)

    def sanitizer_report(self):
        text = self.stderr()
        if any(m in text for m in SANITIZER_MARKERS):
            return text
        return None

    def check_sanitizer(self):
        rep = self.sanitizer_report()
        assert rep is None, "sanitizer output in %s:\n%s" % (self.stderr_path, rep[-8000:])


class CellClient:
    """A client bound to one cell's /cells/{id}/v1 prefix: the per-cell
    plane's calls the tests make again and again.  Test files subclass it
    for their own (ACP, config)."""

    def __init__(self, client, cell_id):
        self.c, self.id = client, cell_id
        self.base = "/cells/%s/v1" % cell_id

    def call(self, method, path, **kw):
        return self.c.call(method, self.base + path, **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.call("POST", path, json_body=json_body, **kw)

    def run(self, command, args=(), **extra):
        body = {"command": command, "args": list(args)}
        body.update(extra)
        r = self.post("/processes/run", body)
        assert r.status == 200, r
        return r.body

    def sh(self, script, **extra):
        return self.run("sh", ["-c", script], **extra)

    def spawn(self, command, args=(), **extra):
        body = {"command": command, "args": list(args)}
        body.update(extra)
        r = self.post("/processes", body)
        assert r.status == 200, r
        return r.body

    def proc(self, pid):
        r = self.get("/processes/%s" % pid)
        assert r.status == 200, r
        return r.body

    def wait_exited(self, pid, timeout=10):
        assert wait_for(lambda: self.proc(pid)["status"] == "exited", timeout), self.proc(pid)
        return self.proc(pid)

    def logs(self, pid, **q):
        r = self.get("/processes/%s/logs" % pid, query=q or None)
        assert r.status == 200, r
        return r.body

    def log_text(self, pid, **q):
        return b"".join(base64.b64decode(e["data"]) for e in self.logs(pid, **q)["entries"])

    def put_file(self, path, data, **kw):
        return self.c.call("PUT", self.base + "/fs/file", body=data, query={"path": path}, **kw)

    def get_file(self, path):
        return self.c.call("GET", self.base + "/fs/file", query={"path": path})


def serve(state, extra_args=(), after_stop=None, env=None, **kw):
    """Generator for a module-scoped daemon fixture:

        @pytest.fixture(scope="module")
        def d(tmp_path_factory):
            yield from dm.serve(tmp_path_factory.mktemp("api"), ["--max-json-size", "16K"])

    Skips unless root; starts the daemon, yields it, then stops it (SIGTERM,
    check_clean()), calls after_stop(daemon) if given, and always checks its
    stderr for sanitizer output.  env: variables set in this process while
    the daemon starts (it inherits them), then removed."""
    if os.geteuid() != 0:
        import pytest
        pytest.skip("cell serve tests must run as root")
    dd = Daemon(state, extra_args, **kw)
    os.environ.update(env or {})
    try:
        dd.start()
    finally:
        for k in env or {}:
            del os.environ[k]
    try:
        yield dd
    finally:
        try:
            dd.stop()
            if after_stop:
                after_stop(dd)
        finally:
            dd.check_sanitizer()


def serve_cli(prefix):
    """Generator for a module-scoped daemon the CLI reaches at its default
    STATE/cell.sock: a fresh state directory (removed afterwards); after the
    stop, the daemon must have exited 0 and left no cell, cgroup or mount."""
    import shutil
    import tempfile
    from conftest import assert_no_leftovers, cell_cgroup_dirs
    state = tempfile.mkdtemp(prefix=prefix)
    before = cell_cgroup_dirs()

    def exited_clean(dd):
        assert dd.proc.returncode == 0, dd.stderr()[-3000:]
        assert_no_leftovers(state, before)

    try:
        yield from serve(state, unix_socket=True, after_stop=exited_clean)
    finally:
        shutil.rmtree(state, ignore_errors=True)


# The same as a context manager, for a daemon of one test:
#     with dm.served(tmp_path / "d", ["--limit", "procs.kept=5"]) as dd: ...
served = contextlib.contextmanager(serve)


def openapi_check(body, schema):
    """Validate a response body against docs/openapi.json's
    components.schemas[schema] (JSON Schema 2020-12, as OpenAPI 3.1 says),
    so the document is checked against what the daemon really answers."""
    openapi_contract.check_schema(body, schema)


def tree_snapshot(root, dirs=False):
    """{relative path: bytes, or "-> target" for a link} of every file under
    root (links to directories included, never followed); dirs: each
    directory too, as "path/": "dir"."""
    out = {}
    for top, subdirs, files in os.walk(root):
        for f in files + [x for x in subdirs if os.path.islink(os.path.join(top, x))]:
            p = os.path.join(top, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            else:
                with open(p, "rb") as fh:
                    out[rel] = fh.read()
        if dirs:
            out.update({os.path.relpath(os.path.join(top, x), root) + "/": "dir" for x in subdirs})
    return out


def create_cell(c, memory="128M", **extra):
    """A cell of `memory` through client c (extra: more members of the
    request); its id."""
    body = {"resources": {"memory": memory}}
    body.update(extra)
    r = c.post("/v1/cells", body)
    assert r.status == 201, r
    return r.body["id"]


def create_small_cell(c):
    """A cell of 64M through client c; its id."""
    return create_cell(c, "64M")


def spawn(c, cid, command, args=(), **extra):
    """Start a process in cell cid (extra: more fields of the request); its id."""
    body = {"command": command, "args": list(args)}
    body.update(extra)
    r = c.post("/cells/%s/v1/processes" % cid, body)
    assert r.status == 200, r
    return r.body["id"]


def uniq(prefix="t", n=8):
    return "%s-%s" % (prefix, os.urandom(16).hex()[:n])


def make_tenant_token(admin, tenant, **extra):
    """POST /v1/tokens as admin; returns (bearer, token id)."""
    body = {"tenant": tenant, "label": "it-" + tenant}
    body.update(extra)
    r = admin.post("/v1/tokens", body)
    assert r.status == 201, r
    return r.body["token"], r.body["id"]


# ---- runs (POST /v1/runs, docs/api.md "Runs") ------------------------------------------

RUN_TERMINAL = ("succeeded", "failed", "canceled", "timed_out")


def run_events(client, rid, follow=True, limit_s=120, last_id=None):
    """GET /v1/runs/{rid}/events: [event JSON] (each with "seq" and "type")
    until the stream ends (after run.finished when following) or limit_s."""
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    path = "/v1/runs/%s/events%s" % (rid, "" if follow else "?follow=false")
    # Heartbeats come every 15 s: a read may wait that long.
    conn, resp = client.stream("GET", path, headers=headers, timeout=min(limit_s, 40))
    try:
        assert resp.status == 200, (resp.status, resp.read()[:500])
        out = []
        for event, data in sse_events(resp, limit_s):
            doc = json.loads(data)
            assert doc.get("type") == event, (event, doc)
            openapi_check(doc, "RunEvent")
            out.append(doc)
            if doc["type"] == "run.finished":
                break
        return out
    finally:
        conn.close()


def run_wait(client, rid, limit_s=120):
    """Follow the run's events until run.finished (bounded); returns (the
    run JSON from GET /v1/runs/{rid}, its events)."""
    events = run_events(client, rid, limit_s=limit_s)
    r = client.get("/v1/runs/" + rid)
    assert r.status == 200, r
    if r.body["status"] not in RUN_TERMINAL:   # the stream ended early: poll, bounded
        wait_for(lambda: client.get("/v1/runs/" + rid).body["status"] in RUN_TERMINAL, 30, 0.2)
        r = client.get("/v1/runs/" + rid)
    openapi_check(r.body, "Run")
    return r.body, events


def run_start(client, body, status=202):
    """POST /v1/runs; asserts the status; returns the run JSON."""
    r = client.post("/v1/runs", body)
    assert r.status == status, r
    openapi_check(r.body, "Run" if status == 202 else "ProblemDetails")
    return r.body


def files_with(root, needle):
    """Regular files under root (links not followed) whose bytes hold needle."""
    hits = []
    for top, _, files in os.walk(root):
        for f in files:
            p = os.path.join(top, f)
            try:
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as fh:
                        if needle in fh.read():
                            hits.append(p)
            except OSError:
                pass
    return hits


NPM_REGISTRY = "https://registry.npmjs.org/"   # the daemon's default --agent-registry


def npm_reachable(package="@zed-industries%2fcodex-acp"):
    """Whether the npm registry answers for package (tests that install a
    real agent skip without it)."""
    import urllib.request
    try:
        with urllib.request.urlopen(NPM_REGISTRY + package, timeout=15) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False
