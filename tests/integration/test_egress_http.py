"""HTTP enforcement of "http" policy rules (docs/egress.md): requests are
checked (method, path prefix, Host) and rewritten (headers removed, secrets
injected) by the daemon, HTTPS is intercepted with the cell's own CA.

The fake network lives on addresses of 198.18.0.0/15 added to the host's lo
(198.18.2.x, apart from test_egress.py's, so the modules never share one):

    198.18.2.53:53   DNS (UDP and TCP): allowed.test, other.test, badcert.test,
                     nosecret.test -> 198.18.2.10
    198.18.2.10:80   HTTP echo: answers with the request (method, path,
                     headers, body) as JSON; /repo... answers 404
    198.18.2.10:443  the same over HTTPS, with a certificate for
                     allowed.test and other.test from a CA made by this
                     module, which the daemon trusts through --upstream-ca
    198.18.2.10:8080 a naive HTTP/1.0-era server that ignores
                     Transfer-Encoding (reads Content-Length only) and
                     records every request line it parses (smuggling tests)
    198.18.2.12:80, :443
                     recorder.test, optout.test: a TCP listener recording
                     every connection's bytes and answering 200 to a head
                     (what a plain request to a secret rule's host sends)

One `cell serve` for the module; probes run in cells (host image) through
the per-cell API as a Python program (PROBE) printing JSON results.
"""
import gzip
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import uuid

import pytest

import daemon as dm
import netfake

NET = netfake.claim("198.18.2", __name__)
DNS_IP, ECHO_IP, REC_IP = NET + ".53", NET + ".10", NET + ".12"
NAMES = ("allowed.test", "other.test", "badcert.test", "nosecret.test")
ZONE = {name: {"A": [ECHO_IP]} for name in NAMES}
ZONE.update({name: {"A": [REC_IP]} for name in ("recorder.test", "optout.test")})
SECRET = "sk-" + uuid.uuid4().hex          # must never show up in the cell or the logs
# The peers are this host's own addresses (on lo): the resolver hands them
# out only because "rebind" names them (DNS rebinding protection).
DNS_RULE = {"dns": {"upstreams": [DNS_IP], "strict": True, "rebind": ["198.18.2.0/24"]}}

PROBE = r'''
import json, os, socket, ssl, subprocess, sys, urllib.request, urllib.error

def why(e):
    return type(e).__name__ + ": " + str(e)

def read_all(s):
    buf = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError) as e:
            return buf, why(e)
        if not d:
            return buf, None
        buf += d

def dial(host, port, tls, sni=None):
    """A connection by name (only addresses the cell's DNS answered are
    pinned to a name an http rule can match), TLS with any SNI, unverified."""
    s = socket.create_connection((host, port), timeout=15)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=sni or host)
    return s

def raw(host, port, data, tls=False, sni=None):
    """Send bytes (see dial) and return the whole answer."""
    r = {}
    try:
        s = dial(host, port, tls, sni)
        s.sendall(data.encode("latin-1"))
        buf, err = read_all(s)
        s.close()
    except Exception as e:
        return {"err": why(e)}
    head, _, body = buf.partition(b"\r\n\r\n")
    r["raw"] = buf.decode("latin-1")
    if err:
        r["err"] = err
    if buf.startswith(b"HTTP/"):
        r["status"] = int(head.split()[1])
        r["head"] = head.decode("latin-1")
        r["body"] = body.decode("latin-1")
    return r

def seq(host, port, requests, tls=False):
    """Requests one after another on ONE connection, each answer read by its
    Content-Length; then whether the server closed the connection."""
    out = []
    try:
        s = dial(host, port, tls)
        f = s.makefile("rb")
        for req in requests:
            s.sendall(req.encode("latin-1"))
            line = f.readline()
            if not line:
                out.append({"eof": True})
                break
            hdrs = {}
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                hdrs[k.strip().lower()] = v.strip()
            body = f.read(int(hdrs.get("content-length", "0")))
            out.append({"status": int(line.split()[1]), "connection": hdrs.get("connection"),
                        "body": body.decode("latin-1")})
        s.settimeout(5)
        out.append({"closed": f.read(1) == b""})
    except Exception as e:
        out.append({"err": why(e)})
    return out

def url(u, method="GET", headers=None, data=None):
    req = urllib.request.Request(u, method=method, headers=headers or {},
                                 data=data.encode() if data is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return {"status": resp.status, "body": resp.read().decode(), "headers": dict(resp.headers)}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:
        return {"err": why(e)}

def cmd(*argv):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}

def scan(needle):
    """Where in the cell the needle can be found: env, /etc, /proc/*/environ."""
    n = needle.encode()
    hits = []
    if needle in json.dumps(dict(os.environ)):
        hits.append("env")
    for root, dirs, files in os.walk("/etc"):
        for f in files:
            p = os.path.join(root, f)
            try:
                with open(p, "rb") as fh:
                    if n in fh.read():
                        hits.append(p)
            except OSError:
                pass
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as fh:
                    if n in fh.read():
                        hits.append("/proc/%s/environ" % pid)
            except OSError:
                pass
    return {"hits": hits}

def env(*names):
    return {n: os.environ.get(n) for n in names}

out = []
for probe in json.loads(sys.argv[1]):
    kind, args = probe[0], probe[1:]
    kw = args.pop() if args and isinstance(args[-1], dict) else {}
    out.append({"raw": raw, "url": url, "cmd": cmd, "scan": scan, "env": env, "seq": seq}[kind](*args, **kw))
print(json.dumps(out))
'''


# ---- the fake network ---------------------------------------------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive unless told otherwise: the proxy must say close

    def answer(self):
        if self.path.startswith("/raw/"):
            return self.raw_answer()
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(n) if n else b""
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
        out = json.dumps({"method": self.command, "path": self.path, "body": body.decode("latin-1"),
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "peer": "%s:%d" % self.client_address[:2]}).encode()
        if self.path.startswith("/gzip"):
            out = gzip.compress(out)
        self.send_response(404 if self.path.startswith("/repo") else 200)
        self.send_header("Content-Type", "application/json")
        # An echo of the request's Authorization in a response header too.
        self.send_header("X-Echo-Authorization", self.headers.get("Authorization", ""))
        if self.path.startswith("/gzip"):
            self.send_header("Content-Encoding", "gzip")
        if self.path.startswith("/echo-chunked"):
            # Tiny chunks: an echoed secret is split across several.
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "keep-alive")
            self.end_headers()
            if self.command != "HEAD":
                for i in range(0, len(out), 7):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(out[i:i + 7]), out[i:i + 7]))
                self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def raw_answer(self):
        """Misbehaving keep-alive answers (upstream reuse tests), each with
        the upstream connection's peer address as its body:
        /raw/bye    framed and keep-alive, then the connection is closed
        /raw/eof    no framing: the body ends when the connection does
        /raw/extra  framed, then a second response nobody asked for"""
        peer = ("%s:%d" % self.client_address[:2]).encode()
        framed = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(peer), peer)
        bad = {  # responses another parser could read otherwise, and ones to re-frame
            "/raw/split": b"HTTP/1.1 200 OK\r\nX-A: 1\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
            "/raw/lf": b"HTTP/1.1 200 OK\nSet-Cookie: evil=1\nContent-Length: 2\n\nok",
            "/raw/clte": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nEVIL!",
            "/raw/twocl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 6\r\n\r\nokEVIL",
            "/raw/101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nEVIL",
            "/raw/chunkext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
                             b"2;ext=\"EVIL\"\r\nok\r\n0\r\nX-T: EVIL\r\n\r\n",
            "/raw/103": b"HTTP/1.1 103 Early Hints\r\nLink: </EVIL>\r\n\r\n"
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/raw/many103": b"HTTP/1.1 103 Early Hints\r\n\r\n" * 17 + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
        }
        if self.path in bad:
            self.wfile.write(bad[self.path])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/raw/eof":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n" + peer)
        elif self.path == "/raw/extra":
            self.wfile.write(framed + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
        else:
            self.wfile.write(framed)
        self.wfile.flush()
        self.close_connection = self.path in ("/raw/bye", "/raw/eof")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

    def log_message(self, *a):
        pass


class _Naive(socketserver.BaseRequestHandler):
    """An upstream that predates chunked framing: it reads Content-Length
    only, so a chunked body it gets is, to it, more requests."""

    def handle(self):
        f = self.request.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return
            if not line.strip():
                continue
            hdrs = {}
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                hdrs[k.strip().lower()] = v.strip()
            try:
                n = int(hdrs.get("content-length") or 0)
            except ValueError:
                n = 0
            body = f.read(n) if n else b""
            rec = {"line": line.decode("latin-1").strip(), "headers": hdrs, "body": body.decode("latin-1")}
            self.server.naive.append(rec)
            out = json.dumps(rec).encode()
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))


class _Recorder(socketserver.BaseRequestHandler):
    """Records each connection's bytes (until the end of a head, EOF or
    5 s) and answers a head with 200: the wire, as a network observer
    would see it."""

    def handle(self):
        self.request.settimeout(5)
        got = b""
        rec = {"port": self.server.server_address[1], "data": got}
        self.server.recorded.append(rec)
        try:
            while b"\r\n\r\n" not in got:
                d = self.request.recv(65536)
                if not d:
                    break
                got += d
                rec["data"] = got
            if b"\r\n\r\n" in got:
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            pass


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_test_ca(d):
    """A CA and a leaf for allowed.test/other.test/badcert-free names."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=cell test upstream CA", cwd=d)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key",
            "-out", "leaf.csr", "-subj", "/CN=allowed.test", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:allowed.test,DNS:other.test,DNS:nosecret.test\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "leaf.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return os.path.join(d, "ca.pem")


class Net(netfake.Net):
    def __init__(self, certdir):
        super().__init__((DNS_IP, ECHO_IP, REC_IP))
        self.certdir, self.zone = certdir, netfake.FakeDNS(ZONE)
        self.http = self.https = None

    def up(self):
        super().up()
        self.ca = make_test_ca(self.certdir)
        self.http = netfake.HTTPServer((ECHO_IP, 80), _Echo)
        self.https = netfake.HTTPServer((ECHO_IP, 443), _Echo, tls=(os.path.join(self.certdir, "leaf.pem"),
                                                                    os.path.join(self.certdir, "leaf.key")))
        self.http.seen = self.https.seen = []      # one list: in arrival order
        self.naive = netfake.TCPServer((ECHO_IP, 8080), _Naive)
        self.naive.naive = []
        self.rec = [netfake.TCPServer((REC_IP, port), _Recorder) for port in (80, 443)]
        self.rec[0].recorded = self.rec[1].recorded = []
        self.serve(*self.zone.servers(DNS_IP), self.http, self.https, self.naive, *self.rec)
        return self

    def recorded(self):
        return list(self.rec[0].recorded)

    def seen(self):
        return list(self.http.seen)


@pytest.fixture(scope="module")
def net(cell, tmp_path_factory):
    if netfake.require_dns() is None:
        pytest.skip("dnspython (python3-dnspython) is needed for the fake DNS server")
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is needed to make the test CA")
    n = Net(str(tmp_path_factory.mktemp("certs")))
    try:
        n.up()
        yield n
    finally:
        n.down()


def _debian_source():
    """A built debian-bookworm image to copy, or None."""
    for base in (os.environ.get("CELL_TEST_STATE"), os.environ.get("CELL_TEST_IMAGE_CACHE")):
        if not base:
            continue
        for d in (os.path.join(base, "images", "debian-bookworm"), os.path.join(base, "debian-bookworm")):
            if os.path.exists(os.path.join(d, "ready")):
                return d
    return None


@pytest.fixture(scope="module")
def d(tmp_path_factory, net):
    state = tmp_path_factory.mktemp("egress-http")
    src = _debian_source()
    if src:
        os.makedirs(os.path.join(str(state), "images"), exist_ok=True)
        subprocess.run(["cp", "-a", src, os.path.join(str(state), "images", "debian-bookworm")], check=True)
    for dd in dm.serve(state, ["--upstream-ca", net.ca]):
        dd.has_debian = bool(src)
        yield dd


@pytest.fixture(scope="module")
def admin(d):
    c = d.client()
    r = c.post("/v1/secrets", {"name": "API_TOKEN", "value": SECRET})
    assert r.status in (200, 201, 204), r
    return c


def http_rule(host="allowed.test", **kw):
    rule = {"host": host, "ports": [80, 443]}
    rule.update(kw)
    return {"http": rule}


# "tls": false: these tests inject over plain HTTP too, which a rule with a
# secret refuses unless it opts out (test_secret_rules_refuse_plain_http).
INJECT = http_rule(set_headers={"Authorization": "Bearer ${secret:API_TOKEN}", "X-Static": "static"},
                   remove_headers=["X-Remove-Me"], tls=False)


def new_cell(admin, cells, rules, image=None):
    body = {"resources": {"memory": "256M"}, "policy": {"rules": [DNS_RULE] + rules}}
    if image:
        body["image"] = image
    r = admin.post("/v1/cells", body)
    assert r.status == 201, r
    cells.append(r.body["id"])
    return r.body["id"]


def probe(admin, cid, probes, command="/usr/bin/python3"):
    r = admin.post("/cells/%s/v1/processes/run" % cid,
                   {"command": command, "args": ["-c", PROBE, json.dumps(probes)], "timeoutMs": 120000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    return json.loads(r.body["stdout"].strip().splitlines()[-1])


def http_records(admin, cid):
    r = admin.get("/v1/audit", query={"kind": "net", "limit": 10000})
    assert r.status == 200, r
    return [x for x in r.body["records"] if x.get("cell") == cid and x.get("event") == "http"]


def get(path, host="allowed.test", extra=""):
    return "GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (path, host, extra)


# ---- header middleware and secrets -----------------------------------------------------------


def test_header_injection_plain_http(d, admin, cells, net):
    cid = new_cell(admin, cells, [INJECT])
    r = probe(admin, cid, [
        ["url", "http://allowed.test/v1/echo?q=1", {"headers": {"X-Remove-Me": "1", "x-static": "from-cell",
                                                                 "Authorization": "Basic from-cell"}}],
        ["url", "http://allowed.test/upload", {"method": "POST", "data": "hello body"}],
        ["raw", "allowed.test", 80, "POST /chunked HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"],
        ["scan", SECRET],
    ])
    assert r[0]["status"] == 200, r[0]
    got = json.loads(r[0]["body"])
    h = got["headers"]
    assert h["authorization"] == "Bearer " + SECRET
    assert h["x-static"] == "static" and "x-remove-me" not in h
    assert "connection" not in h and h["host"] == "allowed.test"     # keep-alive upstream (pooled)
    assert got["path"] == "/v1/echo?q=1"
    assert r[0]["headers"]["Connection"] == "close", r[0]      # the upstream said keep-alive
    assert json.loads(r[1]["body"])["body"] == "hello body"
    open("/tmp/audit.json", "w").write(json.dumps(admin.get("/v1/audit", query={"kind": "net", "limit": 10000}).body, indent=1))
    assert r[2].get("status") == 200, r[2]
    assert json.loads(r[2]["body"])["body"] == "hello world"
    assert r[3]["hits"] == [], r[3]
    recs = http_records(admin, cid)
    assert len(recs) == 3, recs
    assert {(x["method"], x["path"], x["status"], x["verdict"]) for x in recs} == {
        ("GET", "/v1/echo", 200, "allow"), ("POST", "/upload", 200, "allow"), ("POST", "/chunked", 200, "allow")}
    assert all(x["host"] == "allowed.test" and x["rule"] == 1 for x in recs), recs


def test_secret_never_logged(d, admin, cells, net):
    cid = new_cell(admin, cells, [INJECT])
    probe(admin, cid, [["url", "http://allowed.test/x"], ["url", "https://allowed.test/y"]])
    audit = admin.get("/v1/audit", query={"limit": 10000})
    assert audit.status == 200
    assert SECRET not in json.dumps(audit.body)
    # Everything the daemon wrote except its database (which holds the secret).
    for root, dirs, files in os.walk(d.state):
        dirs[:] = [x for x in dirs if x not in ("images", "lanes", "run")]
        for f in files:
            p = os.path.join(root, f)
            if not f.startswith("cell.db") and os.path.isfile(p):
                with open(p, "rb") as fh:
                    assert SECRET.encode() not in fh.read(), p


def test_missing_secret_refused(admin, cells, net):
    cid = new_cell(admin, cells, [http_rule("nosecret.test", set_headers={"X-Key": "${secret:NOPE}"}, tls=False)])
    before = len(net.seen())
    r = probe(admin, cid, [["raw", "nosecret.test", 80, get("/a", "nosecret.test")]])
    assert r[0]["status"] == 502 and "secret NOPE not found" in r[0]["body"], r[0]
    assert len(net.seen()) == before
    recs = http_records(admin, cid)
    assert recs and recs[-1]["verdict"] == "deny" and recs[-1]["reason"] == "secret NOPE not found", recs


def test_moved_secret_row_fails_closed(d, admin, cells, net):
    """Secrets are sealed for their tenant and name: a cell.db row moved to
    another tenant, or renamed, by someone who can write the database is
    not injected (502, nothing sent upstream) rather than handing one
    tenant's credential to another."""
    import sqlite3
    moved = "MOVED-" + uuid.uuid4().hex
    # An admin of its own tenant, so that its policy may name the test's DNS server.
    r = admin.post("/v1/tokens", {"tenant": "mallory", "admin": True})
    assert r.status == 201, r
    mallory = d.client(r.body["token"])
    assert admin.post("/v1/secrets", {"name": "VICTIM_KEY", "value": moved}).status == 201
    db = sqlite3.connect(os.path.join(d.state, "cell.db"), timeout=10)
    try:
        db.execute("UPDATE secrets SET tenant = 'mallory' WHERE tenant = 'default' AND name = 'VICTIM_KEY'")
        db.commit()
    finally:
        db.close()
    mine = []
    cid = new_cell(mallory, mine, [http_rule("nosecret.test", set_headers={"X-Key": "${secret:VICTIM_KEY}"}, tls=False)])
    try:
        before = len(net.seen())
        r = probe(mallory, cid, [["raw", "nosecret.test", 80, get("/a", "nosecret.test")]])
        assert r[0]["status"] == 502 and moved not in json.dumps(r), r[0]
        assert len(net.seen()) == before
        # Renamed within the tenant: the same.
        db = sqlite3.connect(os.path.join(d.state, "cell.db"), timeout=10)
        try:
            db.execute("UPDATE secrets SET tenant = 'default', name = 'RENAMED' WHERE name = 'VICTIM_KEY'")
            db.commit()
        finally:
            db.close()
        cid2 = new_cell(admin, cells, [http_rule("nosecret.test", set_headers={"X-Key": "${secret:RENAMED}"}, tls=False)])
        r = probe(admin, cid2, [["raw", "nosecret.test", 80, get("/a", "nosecret.test")]])
        assert r[0]["status"] == 502 and moved not in json.dumps(r), r[0]
        assert len(net.seen()) == before
    finally:
        mallory.delete("/v1/cells/%s" % cid)
        admin.delete("/v1/secrets/RENAMED")


def test_secret_rules_refuse_plain_http(admin, cells, net):
    """The attack: the cell speaks plain HTTP to a secret-injecting rule's
    host, on 443 (where the upstream expects TLS) and on 80.  The engine
    follows the cell's TLS-or-not upstream, so the key would cross the
    network in clear.  A rule that injects a secret refuses plain HTTP
    unless it says "tls": false (the author's opt-out, honoured)."""
    inject = {"Authorization": "Bearer ${secret:API_TOKEN}"}
    cid = new_cell(admin, cells, [http_rule("recorder.test", set_headers=inject),
                                  http_rule("optout.test", set_headers=inject, tls=False)])
    placeholder = "Authorization: Bearer cell-placeholder\r\n"
    before = len(net.recorded())
    r = probe(admin, cid, [
        ["raw", "recorder.test", 443, get("/v1/a", "recorder.test", placeholder)],
        ["raw", "recorder.test", 80, get("/v1/b", "recorder.test", placeholder)],
        ["url", "http://recorder.test/v1/c", {"headers": {"Authorization": "Bearer cell-placeholder"}}],
        ["raw", "optout.test", 80, get("/v1/d", "optout.test", placeholder)],
    ])
    for x in r[:3]:
        assert x.get("status") == 403 and "plain HTTP refused" in x["body"], r
    assert r[3].get("status") == 200 and r[3]["body"] == "ok", r[3]
    # The refused requests opened no upstream connection at all: the
    # recorder saw only the opted-out one, which carried the key.
    got = net.recorded()[before:]
    assert len(got) == 1 and got[0]["port"] == 80, got
    assert b"GET /v1/d " in got[0]["data"] and b"Bearer " + SECRET.encode() in got[0]["data"], got
    assert b"cell-placeholder" not in got[0]["data"], got
    assert SECRET not in json.dumps(r)
    recs = http_records(admin, cid)
    refused = [x for x in recs if x["verdict"] == "deny"]
    assert len(refused) == 3 and all(x["status"] == 403 and "plain HTTP refused" in x["reason"] for x in refused), recs
    # The field is a boolean; a wrong type names it.
    for bad in ("no", 0, None, [False]):
        rule = http_rule("recorder.test", set_headers=inject, tls=bad)
        res = admin.post("/v1/cells", {"policy": {"rules": [DNS_RULE, rule]}})
        assert res.status == 400 and "rules[1].http.tls" in json.dumps(res.body), (bad, res)


# ---- request checks -----------------------------------------------------------------------------


def test_method_and_path_refusals(admin, cells, net):
    cid = new_cell(admin, cells, [http_rule(methods=["GET"], paths=["/v1/"])])
    before = len(net.seen())
    r = probe(admin, cid, [
        ["url", "http://allowed.test/v1/ok"],
        ["url", "http://allowed.test/v1/ok", {"method": "POST", "data": "x"}],
        ["url", "http://allowed.test/v2/nope"],
        ["raw", "allowed.test", 80, get("/v1/../admin")],
        ["raw", "allowed.test", 80, get("/v1/%2e%2e/admin")],
        ["raw", "allowed.test", 80, get("http://allowed.test/v1/abs")],
        ["raw", "allowed.test", 80, get("http://other.test/v1/abs")],
        ["raw", "allowed.test", 80, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test\r\n\r\n"],
    ])
    assert r[0]["status"] == 200, r[0]
    assert r[1]["status"] == 403 and "method not allowed" in r[1]["body"], r[1]
    assert r[2]["status"] == 403 and "path not allowed" in r[2]["body"], r[2]
    # Matched in normal form: both are /admin.
    assert r[3]["status"] == 403 and "path not allowed" in r[3]["body"], r[3]
    assert r[4]["status"] == 403 and "path not allowed" in r[4]["body"], r[4]
    assert r[5]["status"] == 200 and json.loads(r[5]["body"])["path"] == "/v1/abs", r[5]
    assert r[6]["status"] == 403 and "another host" in r[6]["body"], r[6]
    assert r[7]["status"] == 403, r[7]
    assert [x["path"] for x in net.seen()[before:]] == ["/v1/ok", "/v1/abs"]
    recs = http_records(admin, cid)
    denied = [x for x in recs if x["verdict"] == "deny"]
    assert len(denied) == 6 and all(x["status"] == 403 and x.get("reason") for x in denied), recs
    assert {"method": "POST", "path": "/v1/ok"}.items() <= denied[0].items(), denied[0]


# ---- strict parsing (RFC 9112): a request others could read otherwise is refused -------------


def test_malformed_heads_are_refused(admin, cells, net):
    """Spellings that slipped past remove_headers, set_headers and the Host
    check, and framing that two parsers can read differently: each gets a
    400, the connection ends, and nothing reaches the upstream."""
    rule = http_rule(set_headers={"Authorization": "Bearer ${secret:API_TOKEN}"}, remove_headers=["X-Remove-Me"],
                     tls=False)
    cid = new_cell(admin, cells, [rule])
    before = len(net.seen())
    post = "POST /v1/x HTTP/1.1\r\nHost: allowed.test\r\n%s\r\n%s"
    bad = [
        "GET / HTTP/1.1\r\nHost : other.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nAuthorization : Basic from-the-cell\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Remove-Me : 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-A: 1\r\n Authorization: Basic folded\r\n\r\n",
        "GET / HTTP/1.1\nHost: allowed.test\n\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\rX-Remove-Me: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nX: a\x00b\r\n\r\n",
        post % ("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        post % ("Content-Length: 4\r\nContent-Length: 5\r\n", "abcde"),
        post % ("Content-Length: +4\r\n", "abcd"),
        post % ("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
        post % ("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n"),
        "POST /v1/x HTTP/1.0\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    r = probe(admin, cid, [["raw", "allowed.test", 80, b] for b in bad] +
              [["raw", "allowed.test", 443, bad[0], {"tls": True}], ["url", "http://allowed.test/ok"]])
    for b, x in zip(bad + [bad[0]], r):
        assert x.get("status") == 400 and "malformed request" in x["body"], (b, x)
        assert "connection: close" in x["head"].lower(), x
    assert r[-1]["status"] == 200, r[-1]
    assert [x["path"] for x in net.seen()[before:]] == ["/ok"]
    recs = http_records(admin, cid)
    assert sum(x["status"] == 400 and x["verdict"] == "deny" for x in recs) == len(bad) + 1, recs


def test_paths_are_matched_and_forwarded_in_normal_form(admin, cells, net):
    """A path prefix cannot be left through the upstream's reading of the
    path: ambiguous paths get 400, the rest are normalised once, matched,
    and forwarded in that form."""
    cid = new_cell(admin, cells, [http_rule(paths=["/v1/"])])
    before = len(net.seen())
    refused = ["/v1/..;/admin", "/v1/.;/admin", "/v1/%252e%252e/admin", "/v1/%2e%2e%2fadmin", "/v1%2fadmin",
               "/v1/%5c..%5cadmin", "/v1/..\\admin", "/v1/%00", "/v1/%zz"]
    r = probe(admin, cid, [["raw", "allowed.test", 80, get(p)] for p in refused] + [
        ["raw", "allowed.test", 80, get("/v1/../admin")],
        ["raw", "allowed.test", 80, get("/v1/x/%2e%2e/%2E/admin")],
        ["raw", "allowed.test", 80, get("/v1/a/../b/./c?q=/../x")],
        ["raw", "allowed.test", 80, get("/v1/%7euser/%3f")],
        ["raw", "allowed.test", 80, get("/x/../v1/ok")],
    ])
    for p, x in zip(refused, r):
        assert x.get("status") == 400, (p, x)
    n = len(refused)
    assert r[n]["status"] == 403 and "path not allowed" in r[n]["body"], r[n]
    got = [json.loads(x["body"])["path"] for x in r[n + 1:]]
    assert got == ["/v1/admin", "/v1/b/c?q=/../x", "/v1/~user/%3F", "/v1/ok"], got
    assert [x["path"] for x in net.seen()[before:]] == got
    recs = http_records(admin, cid)
    assert {x["path"] for x in recs if x["verdict"] == "allow"} == {"/v1/admin", "/v1/b/c", "/v1/~user/%3F",
                                                                    "/v1/ok"}, recs


def test_chunked_body_cannot_smuggle_a_request(admin, cells, net):
    """A chunked body whose data is a request, sent to an upstream that
    ignores chunked framing: the engine re-frames the body with a
    Content-Length, so the upstream sees exactly one request and the
    smuggled bytes as its body; chunk extensions and trailers are gone."""
    cid = new_cell(admin, cells, [http_rule(ports=[8080], paths=["/v1/"])])
    smuggled = "GET /admin HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
    body = "%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(smuggled), smuggled)
    req = ("POST /v1/upload HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n"
           "Connection: close\r\n\r\n" + body)
    before = len(net.naive.naive)
    r = probe(admin, cid, [["raw", "allowed.test", 8080, req]])
    assert r[0].get("status") == 200, r[0]
    seen = net.naive.naive[before:]
    assert [x["line"] for x in seen] == ["POST /v1/upload HTTP/1.1"], seen
    assert seen[0]["body"] == smuggled, seen
    assert seen[0]["headers"].get("content-length") == str(len(smuggled)), seen
    assert "transfer-encoding" not in seen[0]["headers"] and "x-trailer" not in seen[0]["headers"], seen
    # Past 64 KiB the body is re-chunked in chunks of the engine's own
    # (extensions gone), and 100-continue is answered once.
    data = "".join("%x;x=y\r\n%s\r\n" % (1000, chr(97 + i % 26) * 1000) for i in range(100)) + "0\r\n\r\n"
    big = ("POST /v1/big HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n"
           "Expect: 100-continue\r\nConnection: close\r\n\r\n" + data)
    before = len(net.seen())
    cid2 = new_cell(admin, cells, [http_rule(paths=["/v1/"])])
    r = probe(admin, cid2, [["raw", "allowed.test", 80, big]])
    assert r[0]["raw"].count("100 Continue") == 1, r[0]["raw"][:300]
    echoed = json.loads(r[0]["raw"].split("\r\n\r\n", 2)[2])
    assert echoed["body"] == "".join(chr(97 + i % 26) * 1000 for i in range(100)), len(echoed["body"])
    assert net.seen()[before:][0]["headers"].get("transfer-encoding") == "chunked"


def test_upstream_responses_are_parsed_strictly(admin, cells, net):
    """Response splitting and ambiguous framing from an upstream never reach
    the cell (502); chunk extensions, trailers and interim responses are not
    relayed: the cell gets the body re-chunked by the engine."""
    cid = new_cell(admin, cells, [http_rule()])
    paths = ["/raw/split", "/raw/lf", "/raw/clte", "/raw/twocl", "/raw/101", "/raw/many103", "/raw/chunkext",
             "/raw/103"]
    r = probe(admin, cid, [["raw", "allowed.test", 80, get(p)] for p in paths])
    for p, x in zip(paths[:6], r):
        assert x.get("status") == 502 and "EVIL" not in x["raw"] and "evil" not in x["raw"], (p, x)
    assert r[6]["status"] == 200 and r[6]["body"] == "2\r\nok\r\n0\r\n\r\n", r[6]
    assert "EVIL" not in r[6]["raw"] and "Trailer" not in r[6]["head"], r[6]
    assert r[7]["status"] == 200 and r[7]["body"] == "ok" and "EVIL" not in r[7]["raw"], r[7]


# ---- secrets echoed back by the upstream -----------------------------------------------------


def test_redact_response_hides_echoed_secrets(admin, cells, net):
    """An upstream that echoes request headers hands the injected secret
    back.  With "redact_response" the cell gets '*' of the same length in
    response headers and bodies (Content-Length and chunked, the value
    split across chunks, HTTP and HTTPS); a content-encoded response it
    cannot check is refused.  Without it the secret comes back (docs)."""
    redact = http_rule(set_headers={"Authorization": "Bearer ${secret:API_TOKEN}"}, redact_response=True, tls=False)
    cid = new_cell(admin, cells, [redact])
    mask = "Bearer " + "*" * len(SECRET)
    r = probe(admin, cid, [["url", "http://allowed.test/v1/echo"], ["url", "https://allowed.test/v1/echo"],
                           ["url", "http://allowed.test/echo-chunked"], ["url", "https://allowed.test/gzip"],
                           ["raw", "allowed.test", 80, get("/v1/raw-echo")], ["scan", SECRET]])
    for x in r[:3]:
        assert x.get("status") == 200 and SECRET not in json.dumps(x), x
        assert json.loads(x["body"])["headers"]["authorization"] == mask, x
        assert x["headers"]["X-Echo-Authorization"] == mask, x
        assert json.loads(x["body"])["headers"]["accept-encoding"] == "identity", x
    assert r[3].get("status") == 502 and "content-encoded" in r[3]["body"], r[3]
    assert SECRET not in r[4]["raw"] and r[4]["status"] == 200, r[4]
    head, body = r[4]["head"], r[4]["body"]
    assert "Content-Length: %d" % len(body.encode("latin-1")) in head, r[4]     # framing kept
    assert r[5]["hits"] == [], r[5]
    # The upstream did get the secret.
    assert any(x["headers"].get("authorization") == "Bearer " + SECRET for x in net.seen()[-5:])
    plain = new_cell(admin, cells, [INJECT])
    r = probe(admin, plain, [["url", "http://allowed.test/v1/echo"]])
    assert json.loads(r[0]["body"])["headers"]["authorization"] == "Bearer " + SECRET, r[0]
    bad = admin.post("/v1/cells", {"policy": {"rules": [DNS_RULE, http_rule(redact_response="yes")]}})
    assert bad.status == 400 and "redact_response" in json.dumps(bad.body), bad
    bad = admin.post("/v1/cells", {"policy": {"rules": [DNS_RULE, http_rule(redact_response=True)]}})
    assert bad.status == 400 and "no ${secret:NAME}" in json.dumps(bad.body), bad


def test_host_header_spoofing(admin, cells, net):
    cid = new_cell(admin, cells, [http_rule()])
    before = len(net.seen())
    r = probe(admin, cid, [
        ["raw", "allowed.test", 80, get("/", "other.test")],
        ["raw", "allowed.test", 80, "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: other.test\r\n\r\n"],
        ["raw", "allowed.test", 80, "GET / HTTP/1.0\r\n\r\n"],
        ["raw", "allowed.test", 443, get("/", "other.test"), {"tls": True}],
        ["raw", "allowed.test", 80, get("/", "allowed.test:80")],
    ])
    for x in r[:4]:
        assert x.get("status") == (400 if x is r[1] else 403) and "Host header" in x["body"], r
    assert r[4]["status"] == 200, r[4]
    assert len(net.seen()) == before + 1


def test_sni_mismatch_fails_closed(admin, cells, net):
    cid = new_cell(admin, cells, [http_rule()])
    before = len(net.seen())
    r = probe(admin, cid, [["raw", "allowed.test", 443, get("/"), {"tls": True, "sni": "other.test"}],
                           ["raw", "allowed.test", 443, get("/"), {"tls": True, "sni": "allowed.test"}]])
    assert "status" not in r[0], r[0]
    assert r[1]["status"] == 200, r[1]
    assert len(net.seen()) == before + 1
    recs = http_records(admin, cid)
    assert any("does not match the pinned host" in x.get("reason", "") for x in recs), recs


def test_non_http_fails_closed(admin, cells, net):
    cid = new_cell(admin, cells, [http_rule()])
    before = len(net.seen())
    r = probe(admin, cid, [["raw", "allowed.test", 80, "\x00\x01 hello, not http\r\n\r\n"],
                           ["raw", "allowed.test", 443, "SSH-2.0-OpenSSH_9.2\r\n\r\n", {"tls": True}],
                           ["raw", "allowed.test", 80, "SSH-2.0-OpenSSH_9.2\r\n"]])
    for x in r:
        assert "status" not in x and x.get("raw", "") == "", r
    assert len(net.seen()) == before
    recs = http_records(admin, cid)
    assert sum(x.get("reason") == "not HTTP" for x in recs) >= 2, recs


def test_upstream_verification_failure(admin, cells, net):
    """badcert.test's upstream presents a certificate for other names."""
    cid = new_cell(admin, cells, [http_rule("badcert.test")])
    before = len(net.seen())
    r = probe(admin, cid, [["url", "https://badcert.test/x"]])
    assert r[0].get("status") == 502, r[0]
    assert len(net.seen()) == before
    recs = http_records(admin, cid)
    assert recs and "upstream TLS" in recs[-1]["reason"], recs


# ---- the cell trusts its CA ------------------------------------------------------------------------


def test_tools_trust_the_ca_without_flags(admin, cells, net):
    cid = new_cell(admin, cells, [INJECT])
    names = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"]
    probes = [["url", "https://allowed.test/py"], ["env"] + names,
              ["cmd", "cat", "/etc/ssl/certs/cell-egress-ca.pem"],
              ["cmd", "openssl", "x509", "-noout", "-subject", "-in", "/etc/ssl/certs/cell-egress-ca.pem"]]
    if shutil.which("curl"):
        probes.append(["cmd", "curl", "-sS", "https://allowed.test/curl"])
    r = probe(admin, cid, probes)
    assert r[0]["status"] == 200, r[0]
    assert json.loads(r[0]["body"])["headers"]["authorization"] == "Bearer " + SECRET
    assert set(r[1].values()) == {"/etc/ssl/certs/ca-certificates.crt"}, r[1]
    assert "BEGIN CERTIFICATE" in r[2]["out"] and "PRIVATE" not in r[2]["out"], r[2]
    assert "CN = cell " in r[3]["out"] and "egress CA" in r[3]["out"], r[3]
    if shutil.which("curl"):
        assert r[4]["rc"] == 0, r[4]
        assert json.loads(r[4]["out"])["path"] == "/curl"


@pytest.mark.debian
def test_debian_curl_git_python(d, admin, cells, net):
    if not d.has_debian:
        pytest.skip("no built debian-bookworm image (set CELL_TEST_STATE or CELL_TEST_IMAGE_CACHE to one)")
    cid = new_cell(admin, cells, [INJECT], image="debian-bookworm")
    r = probe(admin, cid, [["cmd", "curl", "-sS", "https://allowed.test/deb"],
                           ["cmd", "git", "ls-remote", "https://allowed.test/repo"],
                           ["url", "https://allowed.test/py"]])
    assert r[0]["rc"] == 0 and json.loads(r[0]["out"])["path"] == "/deb", r[0]
    # The echo answers 404: git got through TLS and failed on HTTP.
    assert r[1]["rc"] != 0 and "not found" in r[1]["err"] and "SSL" not in r[1]["err"], r[1]
    open("/tmp/audit.json", "w").write(json.dumps(admin.get("/v1/audit", query={"kind": "net", "limit": 10000}).body, indent=1))
    assert r[2].get("status") == 200, r[2]


# ---- upstream connection reuse (docs/egress.md, "Upstream connections") -----------------------------


def test_upstream_reuse_is_per_cell_and_host(d, admin, cells, net):
    """Requests of one cell to one host reuse an upstream connection, with
    the secret injected each time; another host or another cell never gets
    that connection."""
    both = [INJECT, http_rule("other.test")]
    a, b = new_cell(admin, cells, both), new_cell(admin, cells, both)
    ra = probe(admin, a, [["url", "https://allowed.test/r%d" % i] for i in range(3)] +
               [["url", "http://allowed.test/p%d" % i] for i in range(2)] +
               [["url", "https://other.test/o"], ["scan", SECRET]])
    rb = probe(admin, b, [["url", "https://allowed.test/b"]])
    got = [json.loads(x["body"]) for x in ra[:6] + rb]
    for g in got[:5] + got[6:]:
        assert g["headers"]["authorization"] == "Bearer " + SECRET, g
    assert "authorization" not in got[5]["headers"]
    https_a, http_a, other_a, https_b = {g["peer"] for g in got[:3]}, {g["peer"] for g in got[3:5]}, got[5]["peer"], got[6]["peer"]
    assert len(https_a) == 1 and len(http_a) == 1, got             # reused within the cell
    assert https_a != http_a and other_a not in https_a | http_a    # never across host or TLS
    assert https_b not in https_a | http_a | {other_a}              # never across cells
    assert ra[6]["hits"] == [], ra[6]
    assert SECRET not in json.dumps(admin.get("/v1/audit", query={"limit": 10000}).body)
    assert len(http_records(admin, a)) == 6


def test_upstream_misbehaviour_is_not_pooled(admin, cells, net):
    """A connection the upstream closed while idle, one whose response had
    no framing, and one with bytes after its response are not reused; the
    extra bytes never answer a later request."""
    cid = new_cell(admin, cells, [http_rule()])
    r = probe(admin, cid, [["url", "https://allowed.test/raw/bye"], ["url", "https://allowed.test/raw/eof"],
                           ["url", "https://allowed.test/raw/extra"], ["url", "https://allowed.test/after"],
                           ["url", "http://allowed.test/raw/extra"], ["url", "http://allowed.test/after"]])
    for x in r:
        assert x.get("status") == 200 and "EVIL" not in x["body"], r
    peers = [r[0]["body"], r[1]["body"], r[2]["body"], json.loads(r[3]["body"])["peer"]]
    assert len(set(peers)) == 4, peers
    assert json.loads(r[5]["body"])["peer"] != r[4]["body"], r


# ---- several requests on one cell connection -------------------------------------------------


def test_client_keep_alive_checks_every_request(admin, cells, net):
    """One TLS connection from the cell: two allowed requests are answered
    (keep-alive, the secret injected into each), the third, to a path the
    rule does not allow, gets 403 and the connection ends: the fourth is
    never served.  Each request has its own audit record."""
    rule = http_rule(set_headers={"Authorization": "Bearer ${secret:API_TOKEN}"}, paths=["/v1/"])
    cid = new_cell(admin, cells, [rule])
    ka = "GET %s HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
    r = probe(admin, cid, [["seq", "allowed.test", 443, [ka % "/v1/a", ka % "/v1/b", ka % "/admin", ka % "/v1/c"],
                            True]])[0]
    assert [x.get("status") for x in r[:3]] == [200, 200, 403], r
    assert r[0]["connection"] == "keep-alive" and r[1]["connection"] == "keep-alive", r
    for x in r[:2]:
        assert json.loads(x["body"])["headers"]["authorization"] == "Bearer " + SECRET, x
    assert r[3] == {"eof": True} or r[3] == {"closed": True}, r
    recs = http_records(admin, cid)
    assert [(x["path"], x["status"], x["verdict"]) for x in recs] == [
        ("/v1/a", 200, "allow"), ("/v1/b", 200, "allow"), ("/admin", 403, "deny")], recs


# ---- cell run --secret ----------------------------------------------------------------------


def test_cell_run_secret_file(run, tmp_path, net):
    """`cell run --secret NAME=FILE`: the header gets FILE's value host-side,
    the cell never sees it; a bad --secret is a usage error."""
    value = "sk-run-" + uuid.uuid4().hex
    sfile = tmp_path / "token"
    sfile.write_text(value + "\n")
    os.chmod(str(sfile), 0o600)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"rules": [DNS_RULE, INJECT]}))
    r = run(["run", "--policy", str(policy), "--upstream-ca", net.ca, "--secret", "API_TOKEN=%s" % sfile, "--",
             "/usr/bin/python3", "-c", PROBE, json.dumps([["url", "http://allowed.test/v1/echo"], ["scan", value]])],
            timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out[0]["status"] == 200, out[0]
    assert json.loads(out[0]["body"])["headers"]["authorization"] == "Bearer " + value, out[0]
    assert out[1]["hits"] == [], out[1]
    assert value not in r.stderr
    for bad, why in ((["--secret", "API_TOKEN"], "expected NAME=FILE"),
                     (["--secret", "API_TOKEN=/nonexistent/x"], "No such file"),
                     (["--secret", "a b=%s" % sfile], "letters, digits")):
        r = run(["run", "--policy", str(policy)] + bad + ["--", "true"])
        assert r.returncode == 2 and why in r.stderr, (bad, r.returncode, r.stderr)
