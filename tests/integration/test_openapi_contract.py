"""docs/openapi.json as the contract: the daemon serves it unchanged, its
version is the binary's, and the check every integration test's client runs
(openapi_contract.py) refuses what the document does not say."""
import json
import os
import re
import subprocess

import pytest

import daemon as dm
import openapi_contract as oc
from openapi_contract import ContractError


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("contract"))


def test_the_document_is_served_byte_for_byte(anon):
    r = anon.get("/openapi.json")
    assert r.status == 200 and r.ctype == "application/json", r
    with open(oc.DOC_PATH, "rb") as f:
        assert r.raw == f.read(), "GET /openapi.json differs from docs/openapi.json (rebuild the daemon)"


def test_the_document_version_is_the_binary_version():
    out = subprocess.run([dm.CELL_BIN, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == oc.document()["info"]["version"], out


def test_every_route_of_the_daemon_is_in_the_document():
    """src/server/routes.c's table against the document's paths and methods."""
    src = os.path.join(dm.CHECKOUT, "src", "server", "routes.c")
    import re
    text = open(src).read()
    missing = []
    for m, p in re.findall(r'\{\s*"(GET|POST|PUT|DELETE)",\s*"(/[^"]*)"', text):
        if oc.match_path(p.replace("{", "x").replace("}", "x")) is None or \
                m.lower() not in oc.document()["paths"][oc.match_path(p.replace("{", "x").replace("}", "x"))]:
            missing.append("%s %s" % (m, p))
    for m, p in re.findall(r'CELL_ROUTE\("(GET|POST|PUT|DELETE)",\s*"(/[^"]*)"', text):
        full = "/cells/c/v1" + p.replace("*", "x/y").replace("{", "x").replace("}", "x")
        tpl = oc.match_path(full)
        if tpl is None or m.lower() not in oc.document()["paths"][tpl]:
            missing.append("%s /cells/{cell}/v1%s" % (m, p))
    assert not missing, "routes.c has routes docs/openapi.json lacks: %s" % missing


# ---- the check itself: it must fail on what the document does not say -------------------


PROBLEM = {"type": "urn:sandbox-agent:error:not_found", "title": "Not Found", "status": 404, "detail": "x"}


def test_a_matching_answer_passes():
    oc.check_response("GET", "/v1/health", 200, "application/json", {"status": "ok", "uptimeMs": 5}, b"{}")
    oc.check_response("GET", "/v1/cells/abc?x=1", 404, "application/problem+json", PROBLEM, b"{}")
    oc.check_response("GET", "/no/such/route", 404, "application/problem+json", PROBLEM, b"{}")


@pytest.mark.parametrize("args,says", [
    (("GET", "/v1/health", 200, "application/json", {"status": "ok"}, b"{}"), "uptimeMs"),
    (("GET", "/v1/health", 200, "application/json", {"status": "ok", "uptimeMs": "5"}, b"{}"), "/uptimeMs"),
    (("GET", "/v1/health", 418, "application/json", {}, b"{}"), "status 418 is not documented"),
    (("GET", "/v1/health", 200, "text/html", None, b"<p>"), "content type 'text/html'"),
    (("GET", "/no/such/route", 200, "application/json", {}, b"{}"), "no path of docs/openapi.json"),
    (("PATCH", "/v1/cells", 200, "application/json", {}, b"{}"), "no PATCH operation"),
    (("DELETE", "/v1/cells/abc", 204, "", None, b"surprise"), "has no content"),
    (("GET", "/v1/cells/abc", 404, "application/problem+json", {"type": "x"}, b"{}"), "does not match"),
])
def test_a_mismatch_fails_naming_route_status_and_place(args, says):
    with pytest.raises(ContractError) as e:
        oc.check_response(*args)
    msg = str(e.value)
    assert says in msg, msg
    assert "%s " % args[0] in msg and "-> %d" % args[2] in msg, msg


def test_the_client_checks_each_answer(d):
    """The shared client raises on an answer the document does not describe
    (here: the document is swapped for one without /v1/health's 200)."""
    c = d.client(admin=False)
    doc = oc.document()
    saved = doc["paths"]["/v1/health"]["get"]["responses"].pop("200")
    try:
        with pytest.raises(ContractError, match="status 200 is not documented"):
            c.get("/v1/health")
    finally:
        doc["paths"]["/v1/health"]["get"]["responses"]["200"] = saved
    assert c.get("/v1/health").status == 200


def test_problem_schema_is_what_every_error_carries():
    s = oc.document()["components"]["schemas"]["ProblemDetails"]
    assert set(s["required"]) >= {"type", "title", "status"}, json.dumps(s)


# ---- where the server was wrong, not the document ----------------------------------------


def test_a_truncated_lane_archive_is_the_clients_fault(admin):
    """A gzip cut short inside an entry's data was a 500 internal; it is the
    client's archive, so 400 invalid_request (still naming the lane)."""
    import gzip
    import io
    import tarfile
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        data = os.urandom(256 << 10)
        ti = tarfile.TarInfo("blob")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    cut = gzip.compress(raw.getvalue())[:100 << 10]
    name = dm.uniq("trunc")
    r = admin.call("POST", "/v1/lanes/%s/import" % name, body=cut, headers={"Content-Type": "application/x-tar"})
    dm.assert_problem(r, 400, "invalid_request", name)
    admin.delete("/v1/lanes/" + name)


# ---- strict schemas: an answer with a member the document does not name fails ------------

# Where a response may carry members the document does not list, and why.
OPEN_OBJECTS = {
    "#/paths/~1openapi.json/get/responses/200/content/application~1json/schema": "the document itself",
}


def _object_schemas_of_responses():
    """(pointer, schema, inside) of every object schema an answer can reach;
    inside: it is an allOf member of a schema with unevaluatedProperties."""
    doc = oc.document()
    seen, out = set(), []

    def walk(s, where, inside=False):
        if not isinstance(s, dict):
            return
        if "$ref" in s:
            if s["$ref"] not in seen:
                seen.add(s["$ref"])
                target, ptr = oc._resolve({"$ref": s["$ref"]}, s["$ref"])
                walk(target, ptr, inside)
            return
        t = s.get("type")
        if t == "object" or (isinstance(t, list) and "object" in t) or "properties" in s:
            out.append((where, s, inside))
        for k in ("properties", "patternProperties"):
            for n, v in (s.get(k) or {}).items():
                walk(v, "%s/%s/%s" % (where, k, n))
        for k in ("items", "additionalProperties", "not", "if", "then", "else"):
            walk(s.get(k), "%s/%s" % (where, k))
        for k in ("oneOf", "anyOf", "allOf"):
            for i, v in enumerate(s.get(k) or []):
                walk(v, "%s/%s/%d" % (where, k, i), inside or (k == "allOf" and "unevaluatedProperties" in s))

    for tpl, item in doc["paths"].items():
        for method, op in item.items():
            for status, resp in (op.get("responses") or {}).items() if isinstance(op, dict) else ():
                resp, ptr = oc._resolve(resp, oc._pointer("paths", tpl, method, "responses", status))
                for ctype, media in (resp.get("content") or {}).items():
                    if "schema" in media:
                        walk(media["schema"], ptr + "/" + oc._pointer("content", ctype, "schema")[2:])
    return out


def test_every_response_object_refuses_undocumented_members():
    loose = []
    for where, s, inside in _object_schemas_of_responses():
        extra = s.get("unevaluatedProperties", s.get("additionalProperties"))
        if inside and extra is None:
            continue            # the composite's unevaluatedProperties decides
        if extra is None or (extra is True and where not in OPEN_OBJECTS):
            loose.append(where)
    assert not loose, ("object schemas that let an answer carry undocumented members (add "
                       "\"additionalProperties\": false, or list them in OPEN_OBJECTS with why): %s" % loose)


def test_a_strict_schema_refuses_an_undocumented_member():
    with pytest.raises(ContractError, match="'surprise' was unexpected"):
        oc.check_response("GET", "/v1/health", 200, "application/json",
                          {"status": "ok", "uptimeMs": 5, "surprise": 1}, b"{}")
    with pytest.raises(ContractError, match="'instance' was unexpected"):
        oc.check_response("GET", "/v1/cells/abc", 404, "application/problem+json", dict(PROBLEM, instance="/x"), b"{}")
    # The token's own members and the bearer, nothing else, in a create's answer.
    tok = {"id": "5dce4f851d25", "tenant": "t", "label": "l", "admin": False, "rate": 0, "createdAtMs": 1,
           "revoked": False, "token": "cell_x"}
    oc.check_response("POST", "/v1/tokens", 201, "application/json", tok, b"{}")
    with pytest.raises(ContractError, match="secret"):
        oc.check_response("POST", "/v1/tokens", 201, "application/json", dict(tok, secret="x"), b"{}")
    # ...and a listed token never carries the bearer.
    with pytest.raises(ContractError, match="token"):
        oc.check_response("GET", "/v1/tokens", 200, "application/json", {"tokens": [tok]}, b"{}")


# ---- OPTIONS ---------------------------------------------------------------------------


def test_options_answers_are_checked():
    """204 with no body and an Allow naming exactly the path's methods."""
    oc.check_response("OPTIONS", "/v1/cells", 204, "", None, b"", headers={"allow": "GET,POST,OPTIONS"})
    oc.check_response("OPTIONS", "/cells/abc/v1/fs/file", 204, "", None, b"",
                      headers={"allow": "GET,PUT,OPTIONS", "access-control-allow-origin": "https://a.example",
                               "access-control-allow-credentials": "true", "access-control-max-age": "600"})
    for headers, says in (({}, "lacks the Allow header"),
                          ({"allow": "GET,POST"}, "Allow says GET,POST"),
                          ({"allow": "GET,POST,DELETE,OPTIONS"}, "Allow says"),
                          ({"allow": "get, post"}, "header Allow"),
                          ({"allow": "GET,POST,OPTIONS", "access-control-allow-credentials": "yes"},
                           "header Access-Control-Allow-Credentials")):
        with pytest.raises(ContractError, match=says):
            oc.check_response("OPTIONS", "/v1/cells", 204, "", None, b"", headers=headers)
    with pytest.raises(ContractError, match="has no content"):
        oc.check_response("OPTIONS", "/v1/cells", 204, "", None, b"x", headers={"allow": "GET,POST,OPTIONS"})


def test_every_path_documents_options():
    doc = oc.document()
    missing = [tpl for tpl, item in doc["paths"].items() if "options" not in item]
    assert not missing, missing


def test_options_of_every_documented_path_is_what_the_document_says(d):
    """The daemon's Allow for each path (a placeholder in each {param}) is
    the document's methods: checked by the client."""
    c = d.client(admin=False)
    for tpl in oc.document()["paths"]:
        path = re.sub(r"\{\w+\}", "abc123", tpl.replace("{rest}", "x/y"))
        r = c.call("OPTIONS", path)
        assert r.status == 204 and r.raw == b"", (tpl, r)
