"""Certificates for the tests that serve TLS (test_daemon_tls.py,
test_desktop_live.py): a CA, a server certificate for 127.0.0.1 (and an
address off loopback), client certificates of that CA (one expired) and of
another CA, made with the openssl CLI; the client context and the `cell
serve` arguments that use them."""
import os
import ssl
import subprocess

# An address of 198.18.0.0/15 a test adds to lo, for listeners off loopback.
OFF_LOOPBACK = "198.18.0.77"


def _openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=" + name,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d, name, ca, days, ext):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", name + ".key",
             "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-days", str(days),
             "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)
    os.chmod(os.path.join(d, name + ".key"), 0o600)


def make_pki(d):
    """Make the certificates in directory d; returns name -> path in d."""
    d = str(d)
    _ca(d, "ca")
    _ca(d, "otherca")
    _leaf(d, "server", "ca", 2, "subjectAltName=IP:127.0.0.1,IP:%s\nextendedKeyUsage=serverAuth\n" % OFF_LOOPBACK)
    client_ext = "extendedKeyUsage=clientAuth\n"
    _leaf(d, "client", "ca", 2, client_ext)
    _leaf(d, "expired", "ca", -1, client_ext)       # notAfter a day ago
    _leaf(d, "stranger", "otherca", 2, client_ext)
    return lambda name: os.path.join(d, name)


def client_context(pki, cert="client", trust="ca.pem"):
    ctx = ssl.create_default_context(cafile=pki(trust)) if trust else ssl.create_default_context()
    if cert:
        ctx.load_cert_chain(pki(cert + ".pem"), pki(cert + ".key"))
    return ctx


def tls_args(pki, client_ca=True):
    """`cell serve` arguments: TLS with the server certificate; client_ca:
    client certificates of the CA required (mutual TLS)."""
    a = ["--tls-cert", pki("server.pem"), "--tls-key", pki("server.key")]
    return a + (["--tls-client-ca", pki("ca.pem")] if client_ca else [])
