"""CORS for browser clients (cell serve --cors-origin, off by default) and
OPTIONS, attacked: preflights from allowed, disallowed and look-alike
origins, requests without or with a wrong token from an allowed origin,
OPTIONS on unknown paths and without CORS configured, bad --cors-origin
values; and request paths holding control bytes ("%00" cut the route
parameter short), refused on every plane before routing or authentication.
"""
import http.client
import json
import os
import subprocess

import pytest

import daemon as dm
import openapi_contract
from daemon import assert_problem

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cell serve tests must run as root")

ALLOWED = "https://app.example.com"
ALLOWED2 = "http://127.0.0.1:5173"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("cors"), ["--cors-origin", ALLOWED, "--cors-origin", ALLOWED2])


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A daemon without --cors-origin."""
    yield from dm.serve(tmp_path_factory.mktemp("nocors"))


def raw(client, method, path, headers=None, token=None):
    """A request sent as it is (OPTIONS, refused paths), its answer checked
    against docs/openapi.json as the shared client's are: status, lower-case
    headers, body."""
    c = client.conn()
    try:
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in h.items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        hdrs, body = {k.lower(): v for k, v in r.getheaders()}, r.read()
        if client.openapi:
            ctype = (hdrs.get("content-type") or "").split(";")[0].strip()
            parsed = json.loads(body) if ctype.endswith("json") and body else None
            openapi_contract.check_response(method, path, r.status, ctype, parsed, body, headers=hdrs)
        return r.status, hdrs, body
    finally:
        c.close()


def preflight(client, path, origin, method="POST", req_headers="authorization, content-type"):
    return raw(client, "OPTIONS", path, {"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": req_headers})


@pytest.mark.parametrize("origin", [ALLOWED, ALLOWED2])
def test_preflight_from_an_allowed_origin_needs_no_token(d, origin):
    st, h, body = preflight(d.client(admin=False), "/v1/cells", origin)
    assert st == 204 and body == b"", (st, h, body)
    assert h["access-control-allow-origin"] == origin
    assert h["access-control-allow-credentials"] == "true"
    assert set(h["access-control-allow-methods"].split(",")) == {"GET", "POST", "OPTIONS"}
    allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(h["access-control-max-age"]) > 0
    assert "Origin" in h["vary"]
    assert set(h["allow"].split(",")) == {"GET", "POST", "OPTIONS"}
    # The per-cell plane's paths answer the same way (no cell lookup, no token).
    st, h, _ = preflight(d.client(admin=False), "/cells/nosuchcell/v1/fs/file", origin, "PUT")
    assert st == 204 and h["access-control-allow-origin"] == origin, h
    assert set(h["allow"].split(",")) == {"GET", "PUT", "OPTIONS"}


@pytest.mark.parametrize("origin", ["https://evil.example.com", "https://app.example.com.evil.net",
                                    "http://app.example.com", "https://APP.example.com", "null",
                                    "https://app.example.com:443", "https://app.example.com/"])
def test_disallowed_origin_gets_no_cors_headers(d, admin, origin):
    st, h, _ = preflight(d.client(admin=False), "/v1/cells", origin)
    assert st == 204, h
    assert not [k for k in h if k.startswith("access-control-")], h
    # An actual request is handled as today: with the token it works, and
    # the browser (seeing no Allow-Origin) keeps the answer from the page.
    r = admin.get("/v1/cells", headers={"Origin": origin})
    assert r.status == 200
    assert not [k for k in r.headers if k.startswith("access-control-")], r.headers
    assert "Origin" in r.headers["vary"]


def test_allowed_origin_still_needs_a_token(d, admin, anon):
    r = anon.get("/v1/cells", headers={"Origin": ALLOWED})
    assert_problem(r, 401, "token_invalid")
    assert r.headers["access-control-allow-origin"] == ALLOWED       # the page may read the 401
    r = anon.get("/v1/cells", headers={"Origin": ALLOWED}, token="wrong")
    assert_problem(r, 401, "token_invalid")
    r = admin.get("/v1/cells", headers={"Origin": ALLOWED})
    assert r.status == 200 and r.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-methods" not in r.headers           # only on preflights
    # A tenant's token from an allowed origin reaches only the tenant's things.
    bob = d.tenant("bob-cors")
    assert bob.get("/v1/tokens", headers={"Origin": ALLOWED}).status == 403


def test_options_on_unknown_paths_and_methods(d):
    st, h, body = raw(d.client(admin=False), "OPTIONS", "/v1/nosuch", {"Origin": ALLOWED})
    assert st == 404 and h["content-type"] == "application/problem+json", (st, h, body)
    # OPTIONS is not a way around a route's token: a GET after it still needs one.
    st, h, _ = raw(d.client(admin=False), "OPTIONS", "/v1/tokens/abc", {"Origin": ALLOWED})
    assert st == 204 and set(h["allow"].split(",")) == {"DELETE", "OPTIONS"}


def test_without_cors_configured_options_is_204_with_allow_and_no_cors(plain, admin):
    st, h, body = preflight(plain.client(admin=False), "/v1/cells", ALLOWED)
    assert st == 204 and body == b""
    assert set(h["allow"].split(",")) == {"GET", "POST", "OPTIONS"}
    assert not [k for k in h if k.startswith("access-control-")] and "vary" not in h, h
    r = plain.client().get("/v1/cells", headers={"Origin": ALLOWED})
    assert r.status == 200 and "access-control-allow-origin" not in r.headers and "vary" not in r.headers


@pytest.mark.parametrize("origin", ["*", "null", "app.example.com", "https://app.example.com/", "ftp://x.y",
                                    "https://", "https://app.example.com:0", "https://app.example.com:99999",
                                    "https://App.example.com", "https://a b", "https://app.example.com/path"])
def test_bad_cors_origin_is_refused(tmp_path, origin):
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--listen", "127.0.0.1:0",
                        "--socket", "", "--cors-origin", origin], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r   # a usage error
    assert "--cors-origin" in r.stderr and origin in r.stderr, r.stderr


# ---- control bytes in paths ---------------------------------------------------------------------


def test_control_bytes_in_paths_are_refused(d, admin, cells):
    r = admin.post("/v1/cells", {"resources": {"memory": "64M"}})
    assert r.status == 201, r
    cid = r.body["id"]
    cells.append(cid)
    lane = "lane-ctl"
    r = admin.post("/v1/lanes", {"name": lane})
    assert r.status == 201, r
    try:
        paths = [
            "/v1/cells/%s%%00junk" % cid,                       # was GET /v1/cells/CID
            "/v1/cells/%s%%00/stop" % cid,
            "/cells/%s%%00x/v1/fs/file?path=/etc/hostname" % cid,
            "/cells/%s/v1/fs/file%%00?path=/etc/hostname" % cid,
            "/cells/%s/v1/processes/%%01" % cid,
            "/v1/lanes/%s%%00" % lane,
            "/v1/lanes/%s%%0a" % lane,
            "/v1/images/host%00",
            "/v1/images/host%7f/export",
            "/v1/tokens/x%1b[2J",
            "/v1/health%00",
            "/v1/lanes/%s%%ff%%fe%%00" % lane,                 # not UTF-8 either: shown as %XX
        ]
        for path in paths:
            for client in (admin, d.client(admin=False)):     # refused before authentication
                st, h, body = raw(client, "GET", path, token=client.token)
                assert st == 400 and h["content-type"] == "application/problem+json", (path, st, body)
                text = body.decode().lower()
                assert "control character" in text and path.split("?")[0].lower() in text, (path, body)
        # The same paths without the control byte still work.
        assert admin.get("/v1/cells/%s" % cid).status == 200
        assert admin.get("/v1/lanes/%s" % lane).status == 200
        # A decoded "%" (from %25) in a path is not a control byte.
        r = admin.get("/v1/lanes/a%2500")
        assert r.status in (400, 404) and "control character" not in r.body["detail"], r
    finally:
        admin.delete("/v1/lanes/%s" % lane)



def test_paths_that_are_not_utf8_get_an_answer(d, admin):
    """A problem quoting the request's own bytes: "/v1/nosuch%ff" made no
    answer (jansson takes UTF-8 only), and the daemon then read the route it
    did not have and crashed; an unknown cell id of such bytes would have
    reached the handler without its cell."""
    for path, status in (("/v1/nosuch%ff", 404), ("/v1/cells/%ff%fe", 404), ("/cells/%ff/v1/processes", 404),
                         ("/cells/x%c3/v1/fs/file?path=/etc/hostname", 404), ("/v1/lanes/%80", 404)):
        for client in (admin, d.client(admin=False)):
            st, h, body = raw(client, "GET", path, token=client.token)
            want = status if client.token else (404 if path.startswith("/v1/nosuch") else 401)
            assert st == want and h["content-type"] == "application/problem+json", (path, st, body)
            body.decode("utf-8")
    assert admin.get("/v1/health").status == 200
