"""Fake networks for the egress tests: peers on addresses this host adds to
its own lo, so that traffic never leaves the machine.

Inside a cell 127.0.0.0/8 is the cell's own loopback, so peers a cell must
reach listen on addresses of the benchmarking range 198.18.0.0/15.  Each
module claims a /24 of its own (claim()), so modules run in one pytest
session never share an address:

    198.18.0.0/24  test_egress.py
    198.18.2.0/24  test_egress_http.py
    198.18.3.0/24  test_egress_helper.py
    198.18.40.0/24 test_agent_keys.py
    198.18.41.0/24 test_agent_codex.py
    198.18.42.0/24 test_agent_install.py
    198.18.43.0/24 test_runs_codex.py
    198.18.46.0/24 test_cli_docs.py
    198.18.47.0/24 test_egress_ssrf.py
    198.18.48.0/24 tests/ui/ui.test.mjs (node; adds 198.18.48.1, a denied peer, and .2, npmfake.py, itself)
    198.18.50.0/24 test_daemon_pods.py (pods wired by veths, an echo server on lo)

Pieces (threads, stopped by Net.down()):

    Net            adds addresses to lo ("ip addr replace", so a leftover of
                   a crashed run is fine), starts servers, removes both
    FakeDNS        a zone {name: {type: [records]}} served over UDP and TCP,
                   recording every query (name, type, transport)
    Echo           TCP echo handler
    UdpEcho        UDP echo recording (server "IP:PORT", data) per datagram
    HeadersHTTP    HTTP handler answering with the request's headers as JSON
    DecideHook     a decide webhook: /allow/..., /deny/..., /slow/... (after
                   1.5 s), /error/... (500 with an allow body), anything else
                   allowed; records each POST and counts TCP connections

dnspython is imported lazily: a module without the python3-dnspython
package skips itself (see require_dns()).
"""
import fcntl
import http.server
import json
import os
import socketserver
import ssl
import subprocess
import threading
import time
import uuid

_CLAIMS = {}   # "198.18.N" -> owner, for the whole session


def claim(prefix, owner):
    """Reserve the /24 `prefix` ("198.18.N") for `owner` (a module name);
    a second owner of the same range is a bug in the tests."""
    held = _CLAIMS.setdefault(prefix, owner)
    assert held == owner, "%s.0/24 is already used by %s, not free for %s" % (prefix, held, owner)
    return prefix


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


def require_dns():
    """dnspython's modules, or None when python3-dnspython is missing."""
    try:
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset
    except ImportError:  # pragma: no cover - the host image has python3-dnspython
        return None
    return dns


# ---- servers -------------------------------------------------------------------------------


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class HTTPServer(http.server.ThreadingHTTPServer):
    """Threaded HTTP server; `seen` is a list handlers may append requests to
    and `connections` counts accepted TCP connections."""
    daemon_threads = True

    def __init__(self, addr, handler, tls=None):
        super().__init__(addr, handler)
        self.seen, self.connections, self.lock = [], 0, threading.Lock()
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.socket = ctx.wrap_socket(self.socket, server_side=True)

    def get_request(self):
        got = super().get_request()
        with self.lock:
            self.connections += 1
        return got


def make_ca(d, name, *more):
    """A test CA and a certificate for `name` (and the names `more`) signed
    by it, in directory d (the openssl CLI); returns the paths (ca.pem,
    leaf.pem, leaf.key)."""
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cell test CA")
    openssl("req", "-new", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=" + name)
    with open(d + "/ext.cnf", "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                % ",".join("DNS:" + n for n in (name,) + more))
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "leaf.pem", "-days", "2", "-extfile", "ext.cnf")
    return d + "/ca.pem", d + "/leaf.pem", d + "/leaf.key"


def start(srv):
    threading.Thread(target=srv.serve_forever, args=(0.1,), daemon=True).start()
    return srv


def stop(srv):
    try:
        srv.shutdown()
        srv.server_close()
    except Exception:
        pass


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            try:
                d = self.request.recv(65536)
            except OSError:
                return
            if not d:
                return
            self.request.sendall(d)


class UdpEcho:
    """Echoes datagrams; `seen` holds (server "IP:PORT", data) of each."""

    def __init__(self):
        self.count, self.seen, self.lock = 0, [], threading.Lock()
        outer = self

        class H(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                with outer.lock:
                    outer.count += 1
                    outer.seen.append(("%s:%d" % sock.getsockname(), data.decode("latin-1")))
                sock.sendto(data, self.client_address)
        self.handler = H

    def got(self, data):
        with self.lock:
            return [srv for srv, d in self.seen if d == data]


class HeadersHTTP(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"server": self.server.server_address[0], "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


# ---- DNS -------------------------------------------------------------------------------------


class FakeDNS:
    """A zone's server.  `seen` holds every query that reached it, as
    (name without the final dot, type name, transport).  A name outside the
    zone is NXDOMAIN; a type the name lacks is an empty NOERROR answer."""

    def __init__(self, zone):
        self.zone, self.seen, self.lock = zone, [], threading.Lock()
        self.dns = require_dns()

    def answer(self, wire, transport):
        dns = self.dns
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q)
        question = q.question[0]
        name = question.name.to_text().rstrip(".").lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            self.seen.append((name, qtype, transport))
        records = self.zone.get(name)
        if records is None:
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif qtype in records:
            r.answer.append(dns.rrset.from_text(question.name, 60, "IN", qtype, *records[qtype]))
        return r.to_wire()

    def names(self):
        with self.lock:
            return [s[0] for s in self.seen]

    def queries(self):
        with self.lock:
            return list(self.seen)

    def servers(self, ip_addr, port=53):
        """A UDP and a TCP server for ip_addr:port (not started)."""
        zone = self

        class U(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                try:
                    sock.sendto(zone.answer(data, "udp"), self.client_address)
                except Exception:
                    pass

        class T(socketserver.BaseRequestHandler):
            def handle(self):
                f = self.request.makefile("rb")
                while True:
                    hdr = f.read(2)
                    if len(hdr) < 2:
                        return
                    reply = zone.answer(f.read(int.from_bytes(hdr, "big")), "tcp")
                    self.request.sendall(len(reply).to_bytes(2, "big") + reply)

        return [UDPServer((ip_addr, port), U), TCPServer((ip_addr, port), T)]


# ---- the network ---------------------------------------------------------------------------


# Addresses on lo are host-wide: a second pytest session on this host
# running the same module (an engineer's while CI runs) would fail to bind
# them, or have them deleted by the first one's down().  Net.up() therefore
# holds a host-wide lock per /24 until down(); the second one waits.
LOCK_DIR = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
LOCK_WAIT = 900   # seconds: longer than any module's use of its range


def _lock_ranges(addrs):
    fds = []
    for prefix in sorted({a.rsplit(".", 1)[0] for a in addrs}):
        fd = os.open(os.path.join(LOCK_DIR, "cell-test-net-%s.lock" % prefix), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    _unlock_ranges(fds)
                    raise AssertionError("%s.0/24 stayed in use by another test session for %d s" % (prefix, LOCK_WAIT))
                time.sleep(0.2)
        fds.append(fd)
    return fds


def _unlock_ranges(fds):
    for fd in fds:
        os.close(fd)


class Net:
    """Addresses on lo and the servers on them; down() undoes up()."""

    def __init__(self, addrs=()):
        self.addrs, self.added, self.servers, self.locks = list(addrs), [], [], []

    def up(self):
        if not self.locks:
            self.locks = _lock_ranges(self.addrs)
        for a in self.addrs:
            # replace, not add: a leftover from a crashed run is fine.
            ip("addr", "replace", a + "/32", "dev", "lo")
            self.added.append(a)
        return self

    def serve(self, *servers):
        """Start servers and stop them at down(); returns the first."""
        for srv in servers:
            self.servers.append(start(srv))
        return servers[0] if servers else None

    def down(self):
        for srv in self.servers:
            stop(srv)
        for a in self.added:
            ip("addr", "del", a + "/32", "dev", "lo", check=False)
        self.added = []
        _unlock_ranges(self.locks)
        self.locks = []


# ---- the decide webhook -------------------------------------------------------------------


class DecideHook:
    """The decide webhook: the first path segment says how to answer:
    allow, deny, slow (allow after 1.5 s), error (500 with an allow body);
    any other segment allows.  `hits` holds (path, parsed body), `requests`
    (path, raw body) of each POST; `connections` counts TCP connections, so a
    connection that never sent a request shows too."""

    def __init__(self, bind="127.0.0.1"):
        self.hits, self.requests, self.lock = [], [], threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.requests.append((self.path, body))
                    try:
                        outer.hits.append((self.path, json.loads(body or b"null")))
                    except ValueError:
                        outer.hits.append((self.path, None))
                kind = self.path.split("/")[1]
                if kind == "slow":
                    time.sleep(1.5)
                status = 500 if kind == "error" else 200
                out = json.dumps({"allow": kind != "deny"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.srv = start(HTTPServer((bind, 0), H))
        self.host = "127.0.0.1" if bind == "0.0.0.0" else bind
        self.port = self.srv.server_address[1]

    @property
    def connections(self):
        with self.srv.lock:
            return self.srv.connections

    def url(self, kind):
        return "http://%s:%d/%s/%s" % (self.host, self.port, kind, uuid.uuid4().hex[:8])

    def count(self, url):
        path = url.split(str(self.port), 1)[1]
        with self.lock:
            return [b for p, b in self.hits if p == path]

    def close(self):
        stop(self.srv)
