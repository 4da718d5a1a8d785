"""TLS on `cell serve`'s TCP listener (--tls-cert, --tls-key, --tls-client-ca),
attacked: clients without a certificate, with one of another CA or an expired
one, plaintext to the TLS port, a client that does not trust the server;
tokens still required over mutual TLS; SSE and a terminal WebSocket over TLS;
plain HTTP refused on a non-loopback address without --insecure-listen; key
files others can read, mismatched or garbage PEM refused at start.

The certificates are made with the openssl CLI by tlspki.py: a CA, a server
certificate for 127.0.0.1, client certificates of that CA (one expired) and
of another CA.
"""
import base64
import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token, sse_events, wait_for
from tlspki import OFF_LOOPBACK, client_context, make_pki, tls_args

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cell serve tests must run as root")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def d(tmp_path_factory, pki):
    """Mutual TLS: the module's clients present client.pem."""
    yield from dm.serve(tmp_path_factory.mktemp("tls"), tls_args(pki), ssl_context=client_context(pki))


def https_get(port, ctx, path="/v1/health", token=None):
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        c.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_mutual_tls_still_requires_a_token(d, admin, anon):
    assert admin.get("/v1/health").status == 200
    assert admin.get("/v1/cells").status == 200
    assert_problem(anon.get("/v1/cells"), 401, "token_invalid")
    assert_problem(anon.get("/v1/cells", token="not-a-token"), 401, "token_invalid")
    with open(os.path.join(d.state, "daemon.stdout")) as f:
        assert "listening on https://127.0.0.1:%d" % d.port in f.read()


@pytest.mark.parametrize("cert,trust", [(None, "ca.pem"), ("stranger", "ca.pem"), ("expired", "ca.pem"),
                                        ("server", "ca.pem")],
                         ids=["no-client-cert", "client-cert-of-another-ca", "expired-client-cert",
                              "server-only-cert-as-client-cert"])
def test_client_without_a_good_certificate_is_refused(d, pki, cert, trust):
    """The handshake fails (TLS 1.3: the alert comes with the first read):
    no request reaches the daemon, whatever the token."""
    with pytest.raises(OSError):
        https_get(d.port, client_context(pki, cert, trust), "/v1/cells", d.admin_token)


def test_client_that_does_not_trust_the_server_gets_no_answer(d, pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(d.port, client_context(pki, "client", trust="otherca.pem"))


def test_plaintext_to_the_tls_port_gets_no_http(d, pki):
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    try:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while len(got) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        assert not got.startswith(b"HTTP/"), got[:200]
    finally:
        s.close()
    # The daemon goes on serving TLS clients.
    assert https_get(d.port, client_context(pki))[0] == 200


# ---- streams over TLS --------------------------------------------------------------------------


create_cell = dm.create_small_cell
spawn = dm.spawn


def ws_frame(text):
    """A masked client text frame."""
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def tls_terminal(d, pki, cid, term, token):
    """A terminal WebSocket over mutual TLS: (socket, bytes after the 101)."""
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=15)
    s = client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /cells/%s/v1/processes/%s/terminal/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Authorization: Bearer %s\r\n\r\n" % (cid, term, key, token)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head
    return s, rest


def closed_within(s, limit):
    """Read until the peer closes (or the TLS session fails); True if within limit."""
    s.settimeout(1)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_sse_and_terminal_websocket_work_over_tls(d, pki, admin, cells):
    cid = create_cell(admin)
    cells.append(cid)
    pid = spawn(admin, cid, "sh", ["-c", "echo over-tls-$((6*7))"])
    conn, resp = admin.stream("GET", "/cells/%s/v1/processes/%s/logs?follow=true" % (cid, pid),
                              headers={"Accept": "text/event-stream"})
    try:
        assert resp.status == 200
        assert resp.getheader("content-type").startswith("text/event-stream")
        events = sse_events(resp, limit_s=30)
    finally:
        conn.close()
    assert any("over-tls-42" in data or base64.b64encode(b"over-tls-42").decode()[:12] in data
               for _, data in events), events

    term = spawn(admin, cid, "sh", tty=True, interactive=True)
    s, rest = tls_terminal(d, pki, cid, term, d.admin_token)
    try:
        s.sendall(ws_frame(json.dumps({"type": "input", "data": "echo tls-ws-$((6*7))x\n"})))
        deadline = time.monotonic() + 30
        while b"tls-ws-42x" not in rest and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        assert b"tls-ws-42x" in rest, rest[-500:]
    finally:
        s.close()


# ---- start-up refusals ----------------------------------------------------------------------------


def serve_fails(tmp_path, *args, code=None):
    """The start's stderr; it must fail (with exit status `code` if given)."""
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--socket", ""] + list(args),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 if code is None else r.returncode == code, r
    return r.stderr


@pytest.mark.parametrize("listen", [OFF_LOOPBACK + ":0", "0.0.0.0:0", "[::]:0", "[::ffff:10.0.0.1]:0"])
def test_plain_http_off_loopback_is_refused(tmp_path, listen):
    err = serve_fails(tmp_path, "--listen", listen, code=2)   # options that do not go together: usage
    assert "--tls-cert" in err and "--insecure-listen" in err and listen in err, err
    assert not os.path.exists(str(tmp_path / "st" / "admin.token")), "the state was touched before the refusal"


def test_insecure_listen_and_tls_listen_off_loopback(tmp_path, pki):
    """On an address the test adds to lo: --insecure-listen serves plain
    HTTP (and says so), TLS serves https without the flag."""
    added = subprocess.run(["ip", "addr", "add", OFF_LOOPBACK + "/32", "dev", "lo"], capture_output=True, text=True)
    if added.returncode != 0 and "File exists" not in added.stderr:
        pytest.skip("cannot add %s to lo: %s" % (OFF_LOOPBACK, added.stderr))
    try:
        with dm.served(tmp_path / "plain", ["--insecure-listen"], host=OFF_LOOPBACK) as dd:
            assert dd.client().get("/v1/cells").status == 200
            assert "--insecure-listen" in dd.stderr() and "plain HTTP" in dd.stderr()
        with dm.served(tmp_path / "tls", tls_args(pki, client_ca=False), host=OFF_LOOPBACK,
                       ssl_context=client_context(pki, None)) as dd:
            assert dd.client().get("/v1/cells").status == 200
            assert "WARNING" not in dd.stderr()
    finally:
        if added.returncode == 0:
            subprocess.run(["ip", "addr", "del", OFF_LOOPBACK + "/32", "dev", "lo"], capture_output=True)


def test_key_readable_by_others_is_refused(tmp_path, pki):
    key = tmp_path / "server.key"
    with open(pki("server.key")) as f:
        key.write_text(f.read())
    for mode in (0o644, 0o604, 0o640):
        os.chmod(str(key), mode)
        err = serve_fails(tmp_path, "--listen", "127.0.0.1:0", "--tls-cert", pki("server.pem"), "--tls-key", str(key))
        assert "--tls-key" in err and "chmod 600" in err and "%04o" % mode in err, err
    os.chmod(str(key), 0o600)
    os.chown(str(key), 4242, 4242)
    err = serve_fails(tmp_path, "--listen", "127.0.0.1:0", "--tls-cert", pki("server.pem"), "--tls-key", str(key))
    assert "uid 4242" in err, err


@pytest.mark.parametrize("case", ["key-of-another-cert", "garbage-cert", "garbage-ca", "cert-without-key",
                                  "key-without-cert", "ca-without-cert", "tls-without-tcp", "missing-cert"])
def test_bad_tls_material_is_refused_at_start(tmp_path, pki, case):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    os.chmod(str(junk), 0o600)
    cert, key = pki("server.pem"), pki("server.key")
    args = {
        "key-of-another-cert": ["--tls-cert", cert, "--tls-key", pki("client.key")],
        "garbage-cert": ["--tls-cert", str(junk), "--tls-key", key],
        "garbage-ca": ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(junk)],
        "cert-without-key": ["--tls-cert", cert],
        "key-without-cert": ["--tls-key", key],
        "ca-without-cert": ["--tls-client-ca", pki("ca.pem")],
        "tls-without-tcp": ["--tls-cert", cert, "--tls-key", key],
        "missing-cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", key],
    }[case]
    listen = "" if case == "tls-without-tcp" else "127.0.0.1:0"
    err = serve_fails(tmp_path, "--listen", listen, *args)
    named = {"garbage-ca": "--tls-client-ca", "key-without-cert": "--tls-cert", "ca-without-cert": "--tls-cert"}
    assert named.get(case, "--tls-") in err, err
    assert not os.path.exists(str(tmp_path / "st" / "admin.token")), "the state was touched before the refusal"


def test_serve_help_documents_tls_and_cors():
    out = subprocess.run([dm.CELL_BIN, "serve", "--help"], capture_output=True, text=True).stdout
    for word in ("--tls-cert", "--tls-key", "--tls-client-ca", "--insecure-listen", "--cors-origin"):
        assert word in out, word


def test_cli_refuses_https_and_says_what_to_use(d):
    """The lean CLI speaks no TLS (libc only): it says so, and names the
    unix socket, a tunnel and curl/SDKs instead of failing obscurely."""
    env = dict(os.environ, CELL_URL="https://127.0.0.1:%d" % d.port, CELL_TOKEN=d.admin_token)
    r = subprocess.run([dm.CELL_BIN, "ls"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    assert "TLS" in r.stderr and "unix:" in r.stderr and "curl" in r.stderr, r.stderr


def test_revoking_a_token_ends_its_tls_terminal(d, pki, admin):
    """A TLS terminal runs on a thread of its own: revocation still ends it
    (the connection's socket is shut down under the relay)."""
    tok, tid = make_tenant_token(admin, "tls-victim")
    c = d.client(tok, admin=False)
    cid = create_cell(c)
    try:
        term = spawn(c, cid, "sh", tty=True, interactive=True)
        s, _ = tls_terminal(d, pki, cid, term, tok)
        try:
            assert admin.delete("/v1/tokens/%s" % tid).status == 204
            assert closed_within(s, 30), "the TLS terminal of a revoked token stayed open"
        finally:
            s.close()
        assert_problem(c.get("/v1/cells"), 401, "token_invalid")
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_daemon_stops_with_tls_terminals_open(tmp_path, pki):
    """SIGTERM with TLS terminal sessions open (one idle, one whose client
    stopped reading a flood): the daemon ends them and exits cleanly
    (Daemon.stop: within 30 s, no cell left; sanitizer builds: no report)."""
    with dm.served(tmp_path / "st", tls_args(pki), ssl_context=client_context(pki)) as dd:
        admin = dd.client()
        cid = create_cell(admin)
        idle = spawn(admin, cid, "sh", tty=True, interactive=True)
        flood = spawn(admin, cid, "sh", tty=True, interactive=True)
        s1, _ = tls_terminal(dd, pki, cid, idle, dd.admin_token)
        s2, _ = tls_terminal(dd, pki, cid, flood, dd.admin_token)
        s2.sendall(ws_frame(json.dumps({"type": "input", "data": "yes flood-flood-flood\n"})))
        time.sleep(1)                                   # let the flood fill the buffers
        try:
            assert dd.stop() == 0
        finally:
            s1.close()
            s2.close()


def test_a_stalled_tls_handshake_is_cut_at_the_header_timeout(tmp_path, pki):
    """Slowloris on TLS: a client that opens the connection and sends part
    of a ClientHello is cut by the head deadline like a plain one."""
    with dm.served(tmp_path / "st", tls_args(pki) + ["--header-timeout", "1"],
                   ssl_context=client_context(pki)) as dd:
        s = socket.create_connection(("127.0.0.1", dd.port), timeout=10)
        try:
            s.sendall(b"\x16\x03\x01\x02\x00\x01")          # a handshake record's head, then nothing
            assert closed_within(s, 15), "a stalled TLS handshake kept its connection"
        finally:
            s.close()
        assert dd.client().get("/v1/health").status == 200
