"""The Inspector UI's server side (docs/ui.md), without a browser, so that
it runs in the ASan+UBSan build's integration stage too, not only in
tests/ui's chromium suite (release): the embedded files with their types, CSP and
caching, attacked with other names, traversal in several encodings,
methods and concurrent readers; and the terminal WebSocket's subprotocol
token: taken on upgrades only, never echoed, wrong, missing, oversized,
another tenant's, and next to an Authorization header.
"""
import http.client
import os
import threading

import pytest

import daemon as dm

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cell serve tests must run as root")

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def admin(d):
    return d.client()


def raw(d, method, path, headers=None):
    """A request sent with its path exactly as given (no client-side
    normalisation of "..", "%2e"): status, lower-case headers, body."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        body = r.read() if r.status != 101 else b""
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def test_the_three_files_with_their_types_and_headers(admin):
    want = {"/ui/": "text/html", "/ui/index.html": "text/html", "/ui/app.js": "text/javascript",
            "/ui/app.css": "text/css"}
    etags = set()
    for path, ctype in want.items():
        r = admin.get(path, token="")          # public: no token needed
        assert r.status == 200, r
        assert r.headers["content-type"].startswith(ctype)
        csp = r.headers["content-security-policy"]
        for d in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
            assert d in csp
        assert "unsafe" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-cache"
        etags.add(r.headers["etag"])
        again = admin.get(path, token="", headers={"If-None-Match": r.headers["etag"]})
        assert again.status == 304 and again.raw == b""
        stale = admin.get(path, token="", headers={"If-None-Match": '"0000000000000000"'})
        assert stale.status == 200 and stale.raw == r.raw
    assert len(etags) == 1
    index = admin.get("/ui/", token="").raw
    assert b'<script src="app.js" defer></script>' in index and b"<script>" not in index
    r = admin.get("/ui", token="")
    assert r.status == 308 and r.headers["location"] == "/ui/"


@pytest.mark.parametrize("path", [
    "/ui/nope.js", "/ui/APP.JS", "/ui/app.js.map", "/ui/app.js/", "/ui/app.js/x", "/ui/deps/package.json",
    "/ui/..%2Fadmin.token", "/ui/%2e%2e/cell.db", "/ui/../admin.token", "/ui/%2e%2e%2fadmin.token",
    "/ui/.%2Fapp.js", "/ui//app.js", "/ui/" + "a" * 400,
])
def test_anything_else_under_ui_is_not_served(d, path):
    status, _, body = raw(d, "GET", path)
    assert status in (404, 414), (path, status)
    assert d.admin_token.encode() not in body
    assert b"function" not in body          # no script came back under another name


def test_other_methods_are_not_allowed(d):
    for method in ("PUT", "POST", "DELETE"):
        status, hdrs, _ = raw(d, method, "/ui/app.js", {"Content-Length": "0"})
        assert status == 405, method
        assert hdrs["allow"].startswith("GET")


def test_concurrent_readers_get_the_same_bytes(admin):
    want = admin.get("/ui/app.js", token="").raw
    got, errors = [], []

    def read():
        try:
            for _ in range(5):
                got.append(admin.get("/ui/app.js", token="").raw)
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 40 and all(g == want for g in got)


@pytest.fixture(scope="module")
def tty(admin):
    r = admin.post("/v1/cells", {"image": "host"})
    assert r.status == 201, r
    cell = dm.CellClient(admin, r.body["id"])
    proc = cell.spawn("sh", tty=True, interactive=True)
    yield cell, proc["id"]
    admin.delete("/v1/cells/" + cell.id)


def upgrade(d, path, protocols=None, extra=None):
    h = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": KEY}
    if protocols is not None:
        h["Sec-WebSocket-Protocol"] = protocols
    h.update(extra or {})
    return raw(d, "GET", path, h)


def test_the_token_as_a_subprotocol_opens_the_terminal_and_is_not_echoed(d, tty):
    cell, pid = tty
    path = "%s/processes/%s/terminal/ws" % (cell.base, pid)
    status, hdrs, _ = upgrade(d, path, "cell.terminal, cell.bearer." + d.admin_token)
    assert status == 101
    assert hdrs["sec-websocket-protocol"] == "cell.terminal"
    assert d.admin_token not in str(hdrs)
    # The order of the offer does not matter; without cell.terminal offered
    # none is chosen (a browser would then refuse, so the UI always offers it).
    assert upgrade(d, path, "cell.bearer.%s, cell.terminal" % d.admin_token)[0] == 101
    status, hdrs, _ = upgrade(d, path, "cell.bearer." + d.admin_token)
    assert status == 101 and "sec-websocket-protocol" not in hdrs


def test_bad_offers_are_refused(d, tty):
    cell, pid = tty
    path = "%s/processes/%s/terminal/ws" % (cell.base, pid)
    tok = d.admin_token
    for offer in ("cell.terminal", "cell.terminal, cell.bearer." + tok[:-1] + ("0" if tok[-1] != "0" else "1"),
                  "cell.terminal, cell.bearer.", "cell.terminal, cell.bearer." + "a" * 300,
                  "cell.terminal, cell.bearer." + tok + "x", "cell.terminal, Cell.Bearer." + tok, ""):
        status, _, body = upgrade(d, path, offer)
        assert status == 401, offer
        assert tok.encode() not in body


def test_the_offer_counts_on_websocket_upgrades_only(d, tty):
    cell, pid = tty
    offer = {"Sec-WebSocket-Protocol": "cell.terminal, cell.bearer." + d.admin_token}
    # A plain request, and an event stream (where ?access_token= is taken).
    assert raw(d, "GET", "/v1/cells", offer)[0] == 401
    status, _, _ = raw(d, "GET", "%s/processes/%s/logs?follow=true" % (cell.base, pid),
                       dict(offer, Accept="text/event-stream"))
    assert status == 401
    # Upgrade: websocket on a route that does not stream.
    status, _, _ = raw(d, "GET", "/v1/cells", dict(offer, Upgrade="websocket", Connection="Upgrade"))
    assert status == 401


def test_an_authorization_header_wins_over_the_offer(d, tty):
    cell, pid = tty
    path = "%s/processes/%s/terminal/ws" % (cell.base, pid)
    status, _, _ = upgrade(d, path, "cell.terminal, cell.bearer." + d.admin_token,
                           {"Authorization": "Bearer cell_000000000000_00000000000000000000000000000000"})
    assert status == 401


def test_another_tenants_token_offered_gets_what_an_unknown_cell_gets(d, tty):
    cell, pid = tty
    other = d.tenant("ui-other").token
    status, _, body = upgrade(d, "%s/processes/%s/terminal/ws" % (cell.base, pid), "cell.terminal, cell.bearer." + other)
    assert status == 404
    status2, _, body2 = upgrade(d, "/cells/000000000000/v1/processes/%s/terminal/ws" % pid,
                                "cell.terminal, cell.bearer." + other)
    assert status2 == 404
    assert body.replace(cell.id.encode(), b"ID") == body2.replace(b"000000000000", b"ID")
