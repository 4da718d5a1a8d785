"""A fake npm registry for hermetic agent installs (cell serve
--agent-registry URL): packuments and gzip'ed package tarballs made in the
test, every GET recorded, and a gate (GET /gate answers once it is opened)
that a package's postinstall can wait on, so a test holds an install in the
middle without timing it.

Used by test_agent_install.py (in process) and, as a program, by the
browser tests (tests/ui/ui.test.mjs):

    python3 npmfake.py IP

serves on IP (a port of its own) the codex adapter's pinned packages, the
native one's postinstall waiting for the gate; prints the registry's base
URL on a line; a line "open" on stdin opens the gate; stdin's end stops it.
"""
import base64
import gzip
import hashlib
import http.server
import io
import json
import sys
import tarfile
import threading
import urllib.parse

# The codex adapter's pinned npm packages (src/server/agentinstall.c).
CODEX_ADAPTER, CODEX_NATIVE, CODEX_VERSION = "@zed-industries/codex-acp", "@zed-industries/codex-acp-linux-x64", "0.16.0"

# postinstall: waits until the test opens the registry's gate.
GATE_JS = """
require('http').get('%s', { timeout: 120000 }, (res) => { res.resume(); res.on('end', () => process.exit(0)); })
  .on('error', (e) => { console.error('gate: ' + e.code); process.exit(1); });
"""



def tarball(files):
    """A package tarball: {path under package/: (bytes, mode)}."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, (data, mode) in sorted(files.items()):
            ti = tarfile.TarInfo("package/" + path)
            ti.size, ti.mode = len(data), mode
            tar.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


class Registry:
    """Packuments and tarballs; records every GET."""

    def __init__(self, base):
        self.base, self.docs, self.tarballs, self.seen, self.lock = base, {}, {}, [], threading.Lock()
        self.gate = threading.Event()       # GET /gate answers once it is set

    def add(self, name, version, pkg, files):
        pkg = dict(pkg, name=name, version=version)
        files = dict(files)
        files["package.json"] = (json.dumps(pkg).encode(), 0o644)
        tgz = tarball(files)
        fname = "%s-%s.tgz" % (name.split("/")[-1], version)
        path = "/%s/-/%s" % (name, fname)
        self.tarballs[path] = tgz
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
        vdoc = dict(pkg, dist={"tarball": self.base + path.lstrip("/"), "integrity": integrity,
                               "shasum": hashlib.sha1(tgz).hexdigest()})
        self.docs[name] = {"name": name, "dist-tags": {"latest": version}, "versions": {version: vdoc}}

    def fetches(self, suffix):
        with self.lock:
            return sum(1 for p in self.seen if p.endswith(suffix))

    def handler(self):
        reg = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = urllib.parse.unquote(self.path.split("?")[0])
                with reg.lock:
                    reg.seen.append(path)
                if path == "/gate":
                    reg.gate.wait(120)
                    body, ctype = b"open", "text/plain"
                elif path in reg.tarballs:
                    body, ctype = reg.tarballs[path], "application/octet-stream"
                elif path.lstrip("/") in reg.docs:
                    body, ctype = json.dumps(reg.docs[path.lstrip("/")]).encode(), "application/json"
                else:
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    body = b'{"error":"Not found"}'
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return H


# The native package's stand-in binary for main(): an ACP agent it is not;
# the browser test installs, it does not run it.
STUB_BIN = b"#!/bin/sh\necho 'npmfake codex-acp stub'\n"


def main(argv):
    import netfake
    ip = argv[1]
    srv = netfake.HTTPServer((ip, 0), http.server.BaseHTTPRequestHandler)
    reg = Registry("http://%s:%d/" % (ip, srv.server_address[1]))
    srv.RequestHandlerClass = reg.handler()
    reg.add(CODEX_ADAPTER, CODEX_VERSION, {"optionalDependencies": {CODEX_NATIVE: CODEX_VERSION}}, {})
    reg.add(CODEX_NATIVE, CODEX_VERSION, {"scripts": {"postinstall": "node gate.js"}},
            {"bin/codex-acp": (STUB_BIN, 0o755), "gate.js": ((GATE_JS % (reg.base + "gate")).encode(), 0o644)})
    netfake.start(srv)
    print(reg.base, flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "open":
                reg.gate.set()
    finally:
        reg.gate.set()
        netfake.stop(srv)


if __name__ == "__main__":
    main(sys.argv)
