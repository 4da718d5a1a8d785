"""`cell serve`: the control plane (/v1/...) over real HTTP.

One daemon per module (started with a small --max-json-size); tests that
change quotas or rate limits use tenants of their own so they do not
interfere.  After the module the daemon is stopped with SIGTERM and must
leave no cell processes, no mounts and no sanitizer output behind.
"""
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token, sse_events, uniq, wait_for

MAX_JSON = 16 * 1024
# Operator ceilings on what a create may ask (cell serve --limit KEY=VALUE).
CEILINGS = {"cell.memory": 2 << 30, "cell.pids": 2048, "cell.cpus": 2, "cell.disk": 8 << 30, "cell.ttl": 86400,
            "lane.size": 4 << 30}
CEILING_ARGS = [a for k, v in sorted(CEILINGS.items()) for a in ("--limit", "%s=%d" % (k, v))]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("api"), ["--max-json-size", "16K"] + CEILING_ARGS)


@pytest.fixture(scope="module")
def other(d, admin):
    """A client of a second, non-admin tenant."""
    return d.tenant("other")


def new_tenant(d, admin, **extra):
    name = uniq("ten")
    tok, tid = make_tenant_token(admin, name, **extra)
    return name, d.client(tok), tid


def create_cell(c, body=None, status=201):
    r = c.post("/v1/cells", body if body is not None else {"resources": {"memory": "64M"}})
    assert r.status == status, r
    return r.body


def run_in(c, cell_id, command, args=(), **extra):
    body = {"command": command, "args": list(args)}
    body.update(extra)
    r = c.post("/cells/%s/v1/processes/run" % cell_id, body)
    assert r.status == 200, r
    return r.body


def sh(c, cell_id, script):
    return run_in(c, cell_id, "sh", ["-c", script])


# ---- public routes, authentication ----------------------------------------------------


def test_health_and_openapi_need_no_token(anon):
    r = anon.get("/v1/health")
    assert r.status == 200 and r.ctype == "application/json", r
    assert r.body["status"] == "ok" and isinstance(r.body["uptimeMs"], int)


def test_openapi_needs_no_token_and_describes_the_api(anon):
    r = anon.get("/openapi.json")
    assert r.status == 200 and r.ctype == "application/json", r
    assert r.body.get("openapi", "").startswith("3."), r
    paths = r.body.get("paths", {})
    missing = [p for p in ("/v1/cells", "/v1/cells/{id}", "/v1/lanes", "/v1/tokens", "/v1/audit") if p not in paths]
    assert not missing, "docs/openapi.json (served at /openapi.json) lacks paths %s" % missing


CONTROL_ROUTES = [
    ("POST", "/v1/cells", {}),
    ("GET", "/v1/cells", None),
    ("GET", "/v1/cells/abc", None),
    ("DELETE", "/v1/cells/abc", None),
    ("POST", "/v1/cells/abc/stop", None),
    ("POST", "/v1/cells/abc/start", None),
    ("POST", "/v1/lanes", {"name": "x"}),
    ("GET", "/v1/lanes", None),
    ("GET", "/v1/lanes/x", None),
    ("DELETE", "/v1/lanes/x", None),
    ("GET", "/v1/lanes/x/export", None),
    ("POST", "/v1/lanes/x/import", None),
    ("GET", "/v1/images", None),
    ("GET", "/v1/images/host", None),
    ("POST", "/v1/images/host/build", None),
    ("GET", "/v1/audit", None),
    ("POST", "/v1/tokens", {"tenant": "x"}),
    ("GET", "/v1/tokens", None),
    ("DELETE", "/v1/tokens/abc", None),
    ("GET", "/v1/tenants", None),
    ("GET", "/v1/tenants/default", None),
    ("PUT", "/v1/tenants/default", {"maxCells": 1}),
    ("GET", "/v1/limits", None),
    ("GET", "/cells/abc/v1/health", None),
    ("POST", "/cells/abc/v1/processes/run", {"command": "true"}),
    ("GET", "/cells/abc/v1/fs/file?path=/etc/passwd", None),
]


@pytest.mark.parametrize("method,path,body", CONTROL_ROUTES, ids=["%s %s" % (m, p) for m, p, _ in CONTROL_ROUTES])
def test_every_route_needs_a_token(anon, method, path, body):
    r = anon.call(method, path, json_body=body)
    assert_problem(r, 401, "token_invalid")


@pytest.mark.parametrize("auth", [
    "Bearer cell_0123456789abcdef_" + "0" * 64,      # well-formed, unknown
    "Bearer garbage",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "bearer",
])
def test_bad_and_malformed_tokens(anon, auth):
    r = anon.get("/v1/cells", headers={"Authorization": auth})
    assert_problem(r, 401, "token_invalid")


def test_error_shapes_match_sandbox_agent(admin, anon):
    """docs/compat/sandbox-agent-0.4.2.md: 401 token_invalid with details.message,
    unknown route 404 invalid_request titled "Not Found", 405 with an Allow header."""
    wrong = []
    r = anon.get("/v1/cells")
    b = assert_problem(r, 401, "token_invalid")
    if b["title"] != "Token Invalid" or not b["detail"].startswith("token invalid"):
        wrong.append(("401 title/detail", b))
    if not isinstance(b.get("details"), dict) or "message" not in b["details"]:
        wrong.append(("401 lacks details.message", b))
    r = admin.get("/cells/abc/v1/nope")
    b = assert_problem(r, 404, "invalid_request")
    if b["title"] != "Not Found":
        wrong.append(("unknown route title", b))
    r = admin.call("DELETE", "/v1/health")
    assert r.status == 405, r
    if "allow" not in r.headers:
        wrong.append(("405 without an Allow header", r.headers))
    assert not wrong, wrong


def test_wrong_secret_of_a_real_token(d, admin):
    tok, _ = make_tenant_token(admin, uniq("ten"))
    last = tok[-1]
    bad = tok[:-1] + ("0" if last != "0" else "1")
    assert_problem(d.client(bad).get("/v1/cells"), 401, "token_invalid")
    assert d.client(tok).get("/v1/cells").status == 200


def test_revoked_token_is_refused(d, admin):
    tok, tid = make_tenant_token(admin, uniq("ten"))
    c = d.client(tok)
    assert c.get("/v1/cells").status == 200
    r = admin.delete("/v1/tokens/%s" % tid)
    assert r.status == 204, r
    assert_problem(c.get("/v1/cells"), 401, "token_invalid")
    listed = {t["id"]: t for t in admin.get("/v1/tokens").body["tokens"]}
    assert listed[tid]["revoked"] is True
    # Revoked once: again is a 404 (it was a 204 and a second audit record).
    assert_problem(admin.delete("/v1/tokens/%s" % tid), 404, "not_found", detail_has=tid)
    assert_problem(admin.delete("/v1/tokens/ffffffffffffffff"), 404, "not_found")


def test_tokens_create_list_revoke(d, admin):
    name = uniq("ten")
    r = admin.post("/v1/tokens", {"tenant": name, "label": "ci", "rate": 5})
    assert r.status == 201, r
    t = r.body
    assert t["tenant"] == name and t["label"] == "ci" and t["admin"] is False and t["rate"] == 5, t
    assert t["token"].startswith("cell_") and t["revoked"] is False
    lst = admin.get("/v1/tokens")
    assert lst.status == 200, lst
    mine = [x for x in lst.body["tokens"] if x["id"] == t["id"]]
    assert len(mine) == 1 and "token" not in mine[0], "the list must not hand out secrets: %r" % mine
    # Validation names the field.
    assert_problem(admin.post("/v1/tokens", {}), 422, detail_has="tenant")
    assert_problem(admin.post("/v1/tokens", {"tenant": "bad/name"}), 400, detail_has="tenant")
    assert_problem(admin.post("/v1/tokens", {"tenant": "x", "admin": "yes"}), 422, detail_has="admin")


def test_non_admin_tokens_get_403_on_admin_routes(other):
    for method, path, body in [("POST", "/v1/tokens", {"tenant": "other"}), ("GET", "/v1/tokens", None),
                               ("DELETE", "/v1/tokens/abc", None), ("GET", "/v1/tenants", None),
                               ("PUT", "/v1/tenants/other", {"maxCells": 100}),
                               ("POST", "/v1/images/host/build", None)]:
        assert_problem(other.call(method, path, json_body=body), 403, "forbidden")


def test_tenants_get_own_only(admin, other):
    r = other.get("/v1/tenants/other")
    assert r.status == 200, r
    assert r.body["name"] == "other" and "maxCells" in r.body["quota"] and "cells" in r.body["usage"]
    assert_problem(other.get("/v1/tenants/default"), 404, "not_found")
    names = [t["name"] for t in admin.get("/v1/tenants").body["tenants"]]
    assert "other" in names and "default" in names


# ---- cells -------------------------------------------------------------------------------


def test_cell_create_defaults_get_list_delete(admin):
    r = admin.post("/v1/cells", {})
    assert r.status == 201, r
    c = r.body
    try:
        assert c["state"] == "running" and c["image"] == "host" and c["cwd"] == "/", c
        assert c["resources"]["memory"] >= 64 << 20 and c["resources"]["pids"] > 0 and c["ttl"] == 0, c
        assert c["baseUrl"] == "/cells/%s" % c["id"] and isinstance(c["createdAtMs"], int), c
        g = admin.get("/v1/cells/%s" % c["id"])
        assert g.status == 200 and g.body["id"] == c["id"] and g.body["state"] == "running", g
        ids = [x["id"] for x in admin.get("/v1/cells").body["cells"]]
        assert c["id"] in ids
        h = admin.get("/cells/%s/v1/health" % c["id"])
        assert h.status == 200 and h.body == {"status": "ok"}, h
    finally:
        r = admin.delete("/v1/cells/%s" % c["id"])
    assert r.status == 204, r
    assert_problem(admin.get("/v1/cells/%s" % c["id"]), 404, "not_found")
    assert c["id"] not in [x["id"] for x in admin.get("/v1/cells").body["cells"]]
    assert_problem(admin.delete("/v1/cells/%s" % c["id"]), 404, "not_found")


def test_cell_create_with_options(admin):
    body = {
        "resources": {"memory": "64M", "pids": 200, "cpus": 0.5},
        "env": {"FOO": "bar baz", "EMPTY": ""},
        "cwd": "/tmp",
        "hostname": "box-1",
        "ttl": 600,
        "mounts": [{"type": "memory", "target": "/scratch", "size": "8M"}],
    }
    c = create_cell(admin, body)
    try:
        assert c["resources"]["memory"] == 64 << 20 and c["resources"]["pids"] == 200, c
        assert c["resources"]["cpuMillis"] == 500, c
        assert c["env"] == {"FOO": "bar baz", "EMPTY": ""} and c["cwd"] == "/tmp" and c["hostname"] == "box-1", c
        assert c["ttl"] == 600 and c["mounts"][0]["target"] == "/scratch", c
        out = sh(admin, c["id"], 'echo "$FOO"; pwd; hostname; awk \'$2=="/scratch"{print $3}\' /proc/mounts; '
                                 'echo hi > /scratch/f && cat /scratch/f')
        assert out["exitCode"] == 0, out
        assert out["stdout"] == "bar baz\n/tmp\nbox-1\ntmpfs\nhi\n", out
    finally:
        admin.delete("/v1/cells/%s" % c["id"])


def test_cell_stop_start(admin):
    c = create_cell(admin)
    cid = c["id"]
    try:
        sh(admin, cid, "echo kept > /tmp/f")
        r = admin.post("/v1/cells/%s/stop" % cid)
        assert r.status == 200 and r.body["state"] == "stopped", r
        assert admin.get("/v1/cells/%s" % cid).body["state"] == "stopped"
        assert_problem(admin.post("/cells/%s/v1/processes/run" % cid, {"command": "true"}), 409, "cell_stopped")
        # Stopping a stopped cell is harmless.
        assert admin.post("/v1/cells/%s/stop" % cid).status == 200
        r = admin.post("/v1/cells/%s/start" % cid)
        assert r.status == 200 and r.body["state"] == "running" and "startedAtMs" in r.body, r
        assert_problem(admin.post("/v1/cells/%s/start" % cid), 409, "conflict")
        out = sh(admin, cid, "echo again")
        assert out["stdout"] == "again\n", out
    finally:
        assert admin.delete("/v1/cells/%s" % cid).status == 204


@pytest.mark.parametrize("method,suffix", [("GET", ""), ("DELETE", ""), ("POST", "/stop"), ("POST", "/start")])
def test_unknown_cell_is_404(admin, method, suffix):
    assert_problem(admin.call(method, "/v1/cells/000000000000" + suffix), 404, "not_found")


def test_other_tenants_cell_is_404_exactly_like_unknown(admin, other):
    c = create_cell(admin)
    cid = c["id"]
    unknown = "ffffffffffff"
    try:
        for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/stop"), ("POST", "/start")]:
            a = other.call(method, "/v1/cells/%s%s" % (cid, suffix))
            b = other.call(method, "/v1/cells/%s%s" % (unknown, suffix))
            assert a.status == b.status == 404, (a, b)
            assert a.body["type"] == b.body["type"] and a.body["title"] == b.body["title"], (a, b)
            assert a.body["detail"].replace(cid, "ID") == b.body["detail"].replace(unknown, "ID"), (a, b)
        a = other.post("/cells/%s/v1/processes/run" % cid, {"command": "true"})
        b = other.post("/cells/%s/v1/processes/run" % unknown, {"command": "true"})
        assert a.status == b.status == 404, (a, b)
        assert a.body["detail"].replace(cid, "ID") == b.body["detail"].replace(unknown, "ID")
        assert cid not in [x["id"] for x in other.get("/v1/cells").body["cells"]]
        # Still there and running for its owner.
        assert admin.get("/v1/cells/%s" % cid).body["state"] == "running"
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_bind_mount_needs_admin(admin, other, tmp_path):
    src = tmp_path / "bindsrc"
    src.mkdir()
    (src / "hello").write_text("from-host\n")
    os.chmod(src, 0o755)
    os.chmod(src / "hello", 0o644)
    body = {"resources": {"memory": "64M"},
            "mounts": [{"type": "bind", "source": str(src), "target": "/hostdir", "readonly": True}]}
    assert_problem(other.post("/v1/cells", body), 403, "forbidden", detail_has="bind")
    assert not [x for x in other.get("/v1/cells").body["cells"]], "a refused create must not leave a cell"
    c = create_cell(admin, body)
    try:
        out = sh(admin, c["id"], "cat /hostdir/hello; touch /hostdir/new 2>/dev/null && echo WROTE || echo ro")
        assert out["stdout"] == "from-host\nro\n", out
    finally:
        admin.delete("/v1/cells/%s" % c["id"])
    assert not (src / "new").exists()


@pytest.mark.parametrize("body,field", [
    ({"ttl": "x"}, "ttl"),
    ({"ttl": -1}, "ttl"),
    ({"resources": {"memory": "lots"}}, "memory"),
    ({"resources": {"memory": "1K"}}, "memory"),
    ({"resources": "big"}, "resources"),
    ({"resources": {"cpus": "two"}}, "cpus"),
    ({"resources": {"pids": 1.5}}, "pids"),
    ({"env": {"A": 1}}, "env"),
    ({"env": ["A=1"]}, "env"),
    ({"image": 5}, "image"),
    ({"image": "no-such-image"}, "image"),
    ({"cwd": "relative/dir"}, "cwd"),
    ({"hostname": "bad_host!"}, "hostname"),
    ({"hostname": "a.b"}, "hostname"),
    ({"hostname": "-a"}, "hostname"),
    ({"hostname": "a-"}, "hostname"),
    ({"mounts": "x"}, "mounts"),
    ({"mounts": [{"type": "memory"}]}, "target"),
    ({"mounts": [{"type": "nfs", "target": "/x"}]}, "type"),
    ({"lane": 7}, "lane"),
])
def test_create_wrong_types_name_the_field(admin, body, field):
    before = {x["id"] for x in admin.get("/v1/cells").body["cells"]}
    r = admin.post("/v1/cells", body)
    assert 400 <= r.status < 500, r
    b = assert_problem(r, r.status)
    assert field in b["detail"], r
    assert {x["id"] for x in admin.get("/v1/cells").body["cells"]} == before


def test_unknown_lane_is_404(admin):
    assert_problem(admin.post("/v1/cells", {"lane": "no-such-lane"}), 404, "not_found", detail_has="no-such-lane")


@pytest.mark.parametrize("raw", [b'{"ttl": 1', b"not json", b'{"a":1,"a":2}', b""])
def test_malformed_json_is_400(admin, raw):
    r = admin.call("POST", "/v1/cells", body=raw, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "invalid_request")


@pytest.mark.parametrize("raw", [b"[]", b'[{"ttl":1}]', b"null", b'"str"', b"42"])
def test_non_object_json_body_is_refused(admin, raw):
    before = {x["id"] for x in admin.get("/v1/cells").body["cells"]}
    r = admin.call("POST", "/v1/cells", body=raw, headers={"Content-Type": "application/json"})
    assert r.status in (400, 422), r
    assert_problem(r, r.status, "invalid_request", detail_has="object" if raw.startswith(b"[") else "JSON")
    assert {x["id"] for x in admin.get("/v1/cells").body["cells"]} == before


def test_huge_json_body_is_413_and_daemon_keeps_serving(admin):
    huge = json.dumps({"env": {"K%d" % i: "v" * 50 for i in range(MAX_JSON // 40)}}).encode()
    assert len(huge) > MAX_JSON
    r = admin.call("POST", "/v1/cells", body=huge, headers={"Content-Type": "application/json"})
    assert_problem(r, 413, "payload_too_large")
    # Without a Content-Length (chunked), the limit applies while reading.
    c = admin.chunked("POST", "/v1/cells", "application/json")
    try:
        dm.send_chunks(c, huge, 4096)
        resp = c.getresponse()
        assert resp.status == 413, (resp.status, resp.read())
        resp.read()
    finally:
        c.close()
    assert admin.get("/v1/health").status == 200
    assert admin.get("/v1/cells").status == 200


def test_unknown_route_is_404_and_wrong_method_is_405(admin, anon):
    for path in ("/v1/nope", "/v2/cells", "/", "/v1", "/v1/cells/abc/nope", "/cells/abc/v1/nope"):
        assert_problem(admin.get(path), 404)
    for method, path in [("PATCH", "/v1/cells"), ("PUT", "/v1/cells"), ("DELETE", "/v1/health"),
                         ("POST", "/v1/cells/abc"), ("GET", "/v1/cells/abc/stop"), ("PUT", "/v1/lanes/x")]:
        assert_problem(admin.call(method, path), 405)
    assert_problem(anon.call("POST", "/v1/health"), 405)


def test_very_long_path_is_refused_cleanly(admin):
    r = admin.get("/v1/cells/" + "a" * 4000)
    assert 400 <= r.status < 500, r
    assert admin.get("/v1/health").status == 200


# ---- quotas ---------------------------------------------------------------------------------


def test_cell_quota(d, admin):
    name, c, _ = new_tenant(d, admin)
    r = admin.put("/v1/tenants/%s" % name, {"maxCells": 1})
    assert r.status == 200 and r.body["quota"]["maxCells"] == 1, r
    first = create_cell(c)
    try:
        r = c.post("/v1/cells", {"resources": {"memory": "64M"}})
        assert_problem(r, 403, "quota_exceeded", detail_has="cells")
        assert len(c.get("/v1/cells").body["cells"]) == 1
        t = c.get("/v1/tenants/%s" % name)
        assert t.body["usage"]["cells"] == 1, t
    finally:
        assert c.delete("/v1/cells/%s" % first["id"]).status == 204
    second = create_cell(c)
    c.delete("/v1/cells/%s" % second["id"])


def test_memory_quota(d, admin):
    name, c, _ = new_tenant(d, admin)
    assert admin.put("/v1/tenants/%s" % name, {"maxMemory": "100M"}).status == 200
    first = create_cell(c, {"resources": {"memory": "64M"}})
    try:
        r = c.post("/v1/cells", {"resources": {"memory": "64M"}})
        assert_problem(r, 403, "quota_exceeded", detail_has="memory")
    finally:
        c.delete("/v1/cells/%s" % first["id"])


def test_quota_put_validation(admin):
    assert_problem(admin.put("/v1/tenants/x", {"maxCells": "many"}), 422, detail_has="maxCells")
    assert_problem(admin.put("/v1/tenants/x", {"maxMemory": "lots"}), 400, detail_has="maxMemory")
    assert_problem(admin.put("/v1/tenants/.bad", {"maxCells": 1}), 400, detail_has="tenant")


def test_lane_quota(d, admin):
    name, c, _ = new_tenant(d, admin)
    assert admin.put("/v1/tenants/%s" % name, {"maxLanes": 1}).status == 200
    r = c.post("/v1/lanes", {"name": "one"})
    assert r.status == 201, r
    try:
        assert_problem(c.post("/v1/lanes", {"name": "two"}), 403, "quota_exceeded", detail_has="lanes")
        assert [l["name"] for l in c.get("/v1/lanes").body["lanes"]] == ["one"]
    finally:
        assert c.delete("/v1/lanes/one").status == 204
    r = c.post("/v1/lanes", {"name": "two"})
    assert r.status == 201, r
    c.delete("/v1/lanes/two")


# ---- operator ceilings and the host budget ---------------------------------------------------

# (body of POST /v1/cells, field named, limit key, ceiling as the API states it)
OVER_CEILING = [
    ({"resources": {"memory": (2 << 30) + 1}}, "resources.memory", "cell.memory", 2 << 30),
    ({"resources": {"memory": "1T"}}, "resources.memory", "cell.memory", 2 << 30),
    ({"resources": {"memory": 2 ** 62}}, "resources.memory", "cell.memory", 2 << 30),
    ({"resources": {"pids": 2049}}, "resources.pids", "cell.pids", 2048),
    ({"resources": {"cpus": 2.5}}, "resources.cpus", "cell.cpus", 2000),
    ({"resources": {"disk": "9G"}}, "resources.disk", "cell.disk", 8 << 30),
    ({"ttl": 86401}, "ttl", "cell.ttl", 86400),
    ({"mounts": [{"type": "memory", "target": "/big", "size": "3G"}]}, "mounts[0].size", "cell.memory", 2 << 30),
]


@pytest.mark.parametrize("body,field,key,ceiling", OVER_CEILING, ids=[o[1] + "=" + json.dumps(o[0])[-12:] for o in OVER_CEILING])
def test_create_above_a_ceiling_is_refused(d, admin, body, field, key, ceiling):
    name, c, _ = new_tenant(d, admin)
    # The tenant's own quotas would allow it: the ceiling is the operator's.
    assert admin.put("/v1/tenants/%s" % name, {"maxMemory": "1T", "maxPids": 1 << 30}).status == 200
    r = c.post("/v1/cells", body)
    b = assert_problem(r, 400, "invalid_request", [field, str(ceiling), key])
    assert b["details"] == {"field": field, "ceiling": ceiling, "limit": key}, b
    assert c.get("/v1/cells").body["cells"] == []


@pytest.mark.parametrize("body", [
    {"resources": {"memory": -1}}, {"resources": {"pids": -5}}, {"resources": {"cpus": -1}},
    {"resources": {"disk": -1}}, {"ttl": -1}, {"mounts": [{"type": "memory", "target": "/m", "size": -1}]},
    {"resources": {"memory": [1]}}, {"resources": {"pids": "many"}}, {"resources": {"disk": True}},
    {"ttl": 1.5}, {"mounts": [{"type": "memory", "target": "/m", "size": {"n": 1}}]},
    {"resources": {"pids": 2 ** 64}},
])
def test_create_negative_or_wrong_type_numbers(admin, body):
    r = admin.post("/v1/cells", body)
    assert r.status in (400, 422), r
    assert_problem(r, r.status)


def test_create_at_the_ceiling_is_accepted(admin):
    c = create_cell(admin, {"resources": {"memory": "64M", "pids": 2048, "cpus": 2}, "ttl": 86400})
    try:
        assert c["resources"]["pids"] == 2048 and c["ttl"] == 86400, c
    finally:
        admin.delete("/v1/cells/%s" % c["id"])


def test_lane_size_ceiling(admin):
    for size in ((4 << 30) + 1, "5G", 2 ** 62):
        r = admin.post("/v1/lanes", {"name": uniq("l"), "size": size})
        b = assert_problem(r, 400, "invalid_request", ["size", str(4 << 30), "lane.size"])
        assert b["details"]["limit"] == "lane.size", b
        r = admin.call("POST", "/v1/lanes/%s/import" % uniq("l"), body=b"x", query={"size": str(size)},
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status == 400 and "lane.size" in r.body["detail"], r
    for size in (-1, "lots", [1]):
        assert_problem(admin.post("/v1/lanes", {"name": uniq("l"), "size": size}), 400)


def _proc_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def _mem_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def test_default_budget_fits_this_host(d, admin):
    """Defaults are derived from the host: all cells together, and one
    tenant's default quota, stay below pid_max / threads-max and MemTotal."""
    pid_max, threads_max = _proc_int("/proc/sys/kernel/pid_max"), _proc_int("/proc/sys/kernel/threads-max")
    mem_total = _mem_total()
    r = admin.get("/v1/limits")
    assert r.status == 200, r
    pids, mem = r.body["budget"]["pids"], r.body["budget"]["memory"]
    assert pids["host"] == min(pid_max, threads_max) and mem["host"] == mem_total, r
    assert 0 < pids["total"] == pids["host"] - pids["reserve"] < pids["host"], r
    assert 0 < mem["total"] == mem["host"] - mem["reserve"] < mem["host"], r
    assert r.body["ceilings"]["cell.pids"] <= pids["total"] and r.body["ceilings"]["cell.memory"] <= mem["total"]
    assert 0 < r.body["logMemory"]["limit"] < mem_total, r
    name, c, _ = new_tenant(d, admin)
    q = c.get("/v1/tenants/%s" % name).body["quota"]
    assert q["maxPids"] <= pids["total"] and q["maxMemory"] <= mem["total"], q
    # Default cells: a tenant's whole default quota of cells fits the pid budget only as far as the budget says.
    cell = create_cell(c, {})
    try:
        assert cell["resources"]["pids"] <= pids["total"], cell
    finally:
        c.delete("/v1/cells/%s" % cell["id"])
    assert_problem(c.get("/v1/limits"), 403)


def test_tenant_pid_quota(d, admin):
    name, c, _ = new_tenant(d, admin)
    r = admin.put("/v1/tenants/%s" % name, {"maxPids": 1000})
    assert r.status == 200 and r.body["quota"]["maxPids"] == 1000, r
    first = create_cell(c, {"resources": {"memory": "32M", "pids": 600}})
    try:
        assert c.get("/v1/tenants/%s" % name).body["usage"]["pids"] == 600
        r = c.post("/v1/cells", {"resources": {"memory": "32M", "pids": 600}})
        assert_problem(r, 403, "quota_exceeded", ["pids", "1000"])
    finally:
        c.delete("/v1/cells/%s" % first["id"])
    for bad in (-1, "x", 2 ** 33):
        assert_problem(admin.put("/v1/tenants/%s" % name, {"maxPids": bad}), 422 if bad == "x" else 400)


def test_daemon_wide_budget_across_tenants(tmp_path_factory):
    """Two tenants, each far under its own quota, together reach the host
    budget (a small one set with --limit host.* and the --reserve-* margins):
    the create that would pass it is refused, naming the budget."""
    with dm.served(tmp_path_factory.mktemp("budget"), ["--limit", "host.memory=1G", "--reserve-memory", "512M",
                                                        "--limit", "host.pids=3000", "--reserve-pids", "1000"]) as dd:
        made = []
        try:
            adm = dd.client()
            lim = adm.get("/v1/limits").body
            assert lim["budget"]["memory"]["total"] == 512 << 20 and lim["budget"]["pids"]["total"] == 2000, lim
            clients = []
            for t in ("ta", "tb"):
                tok, _ = make_tenant_token(adm, t)
                assert adm.put("/v1/tenants/%s" % t, {"maxMemory": "1G", "maxPids": 3000, "maxCells": 10}).status == 200
                clients.append(dd.client(tok))
            a, b = clients

            def make(c, memory, pids, status=201):
                r = c.post("/v1/cells", {"resources": {"memory": memory, "pids": pids}})
                assert r.status == status, r
                if status == 201:
                    made.append((c, r.body["id"]))
                return r

            make(a, "150M", 100)
            make(a, "150M", 100)
            make(b, "100M", 100)                  # 400M of 512M
            r = make(b, "150M", 100, 409)
            body = assert_problem(r, 409, "budget_exceeded", ["memory", str(512 << 20)])
            assert body["details"]["budget"] == "memory" and body["details"]["reserved"] == 400 << 20, body
            assert b.get("/v1/tenants/tb").body["usage"]["memory"] == 100 << 20   # far under its 1G quota
            make(a, "16M", 1500)                  # pids: 1800 of 2000
            r = make(b, "16M", 300, 409)
            body = assert_problem(r, 409, "budget_exceeded", ["pids", "2000"])
            assert body["details"]["budget"] == "pids", body
            # Deleting a cell gives its reservation back to everyone.
            c, cid = made.pop(0)
            assert c.delete("/v1/cells/%s" % cid).status == 204
            make(b, "100M", 100)
        finally:
            for c, cid in made:
                c.delete("/v1/cells/%s" % cid)


def test_serve_refuses_bad_limits(tmp_path):
    for args in (["--limit", "cell.memory"], ["--limit", "nope=1"], ["--limit", "cell.pids=-1"],
                 ["--limit", "cell.pids=0"], ["--reserve-memory", "lots"], ["--limit", "cell.memory=1Z"]):
        r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path), "serve", "--init", "--listen", "", "--socket", ""]
                           + args,
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 2 and ("limit" in r.stderr or "reserve" in r.stderr), (args, r)
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path), "serve", "--init", "--listen", "", "--socket", "",
                        "--limit", "host.memory=1G", "--reserve-memory", "1G"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and "reserve" in r.stderr, r


# ---- rate limit -----------------------------------------------------------------------------


def test_rate_limit(d, admin):
    _, c, tid = new_tenant(d, admin, rate=2)
    results = []
    lock = threading.Lock()

    def hit():
        r = c.get("/v1/cells")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=hit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status for r in results)
    assert 200 in codes and 429 in codes, codes
    assert set(codes) <= {200, 429}, codes
    limited = [r for r in results if r.status == 429]
    assert_problem(limited[0], 429, "rate_limited", detail_has=tid)
    # Other tokens are not affected, and the bucket refills.
    assert admin.get("/v1/cells").status == 200
    time.sleep(1.2)
    assert c.get("/v1/cells").status == 200


# ---- lanes ------------------------------------------------------------------------------------


def test_lanes_create_list_get_duplicate_delete(admin, other):
    name = uniq("lane")
    r = admin.post("/v1/lanes", {"name": name})
    assert r.status == 201, r
    assert r.body["name"] == name and r.body["image"] == "host" and r.body["attached"] is False, r
    try:
        assert name in [l["name"] for l in admin.get("/v1/lanes").body["lanes"]]
        g = admin.get("/v1/lanes/%s" % name)
        assert g.status == 200 and g.body["name"] == name, g
        assert_problem(admin.post("/v1/lanes", {"name": name}), 409, "conflict")
        # Another tenant neither sees it nor collides with it.
        assert_problem(other.get("/v1/lanes/%s" % name), 404, "not_found")
        assert name not in [l["name"] for l in other.get("/v1/lanes").body["lanes"]]
        r2 = other.post("/v1/lanes", {"name": name})
        assert r2.status == 201, r2
        assert other.delete("/v1/lanes/%s" % name).status == 204
        assert admin.get("/v1/lanes/%s" % name).status == 200
    finally:
        assert admin.delete("/v1/lanes/%s" % name).status == 204
    assert_problem(admin.get("/v1/lanes/%s" % name), 404, "not_found")
    assert_problem(admin.delete("/v1/lanes/%s" % name), 404, "not_found")


@pytest.mark.parametrize("body,field", [({}, "name"), ({"name": 3}, "name"), ({"name": "../x"}, "name"),
                                        ({"name": ".hidden"}, "name"), ({"name": "ok", "size": "huge"}, "size"),
                                        ({"name": "ok", "image": "nope"}, "image")])
def test_lane_create_validation(admin, body, field):
    r = admin.post("/v1/lanes", body)
    assert 400 <= r.status < 500, r
    assert field in assert_problem(r, r.status)["detail"], r
    assert "ok" not in [l["name"] for l in admin.get("/v1/lanes").body["lanes"]]


def test_lane_keeps_files_across_stop_start_export_import(admin):
    name = uniq("lane")
    assert admin.post("/v1/lanes", {"name": name}).status == 201
    c = create_cell(admin, {"lane": name, "resources": {"memory": "64M"}})
    cid = c["id"]
    imported = name + "-copy"
    try:
        assert c["lane"] == name, c
        assert admin.get("/v1/lanes/%s" % name).body["attached"] is True
        r = admin.call("PUT", "/cells/%s/v1/fs/file?path=/root/data/keep.txt" % cid, body=b"lane-data\n")
        assert r.status == 200, r
        sh(admin, cid, "mkdir -p /opt/app && echo conf > /opt/app/conf")
        # Attached: no export, no delete.
        assert_problem(admin.get("/v1/lanes/%s/export" % name), 409, "conflict")
        assert_problem(admin.delete("/v1/lanes/%s" % name), 409, "conflict", detail_has=cid)
        assert admin.post("/v1/cells/%s/stop" % cid).status == 200
        assert_problem(admin.delete("/v1/lanes/%s" % name), 409, "conflict", detail_has=cid)
        assert admin.post("/v1/cells/%s/start" % cid).status == 200
        r = admin.get("/cells/%s/v1/fs/file?path=/root/data/keep.txt" % cid)
        assert r.status == 200 and r.raw == b"lane-data\n", r
        assert sh(admin, cid, "cat /opt/app/conf")["stdout"] == "conf\n"
        assert admin.post("/v1/cells/%s/stop" % cid).status == 200

        exp = admin.get("/v1/lanes/%s/export" % name)
        assert exp.status == 200 and exp.ctype == "application/x-tar", exp
        with tarfile.open(fileobj=io.BytesIO(exp.raw)) as tf:
            names = {m.name.lstrip("./").rstrip("/") for m in tf.getmembers()}
            keep = [m for m in tf.getmembers() if m.name.lstrip("./") == "root/data/keep.txt"]
            assert keep, sorted(names)[:50]
            assert tf.extractfile(keep[0]).read() == b"lane-data\n"
        assert "opt/app/conf" in names, sorted(names)[:50]

        imp = admin.call("POST", "/v1/lanes/%s/import" % imported, body=exp.raw,
                         headers={"Content-Type": "application/x-tar"})
        assert imp.status == 201 and imp.body["name"] == imported, imp
        assert_problem(admin.call("POST", "/v1/lanes/%s/import" % imported, body=exp.raw,
                                  headers={"Content-Type": "application/x-tar"}), 409, "conflict")
        c2 = create_cell(admin, {"lane": imported, "resources": {"memory": "64M"}})
        try:
            assert sh(admin, c2["id"], "cat /root/data/keep.txt /opt/app/conf")["stdout"] == "lane-data\nconf\n"
        finally:
            assert admin.delete("/v1/cells/%s" % c2["id"]).status == 204
    finally:
        admin.delete("/v1/cells/%s" % cid)
    assert admin.delete("/v1/lanes/%s" % name).status == 204
    assert admin.delete("/v1/lanes/%s" % imported).status == 204


def test_lane_import_of_garbage_leaves_no_lane(admin):
    name = uniq("lane")
    r = admin.call("POST", "/v1/lanes/%s/import" % name, body=b"this is not a tar archive" * 100,
                   headers={"Content-Type": "application/x-tar"})
    assert 400 <= r.status < 600 and r.status != 201, r
    assert_problem(r, r.status)
    assert_problem(admin.get("/v1/lanes/%s" % name), 404, "not_found")
    assert admin.post("/v1/lanes", {"name": name}).status == 201
    admin.delete("/v1/lanes/%s" % name)


def test_lane_import_with_dotdot_entries_is_refused(admin, tmp_path):
    name = uniq("lane")
    marker = "cell-it-escape-%s" % uuid.uuid4().hex[:8]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = b"escaped\n"
        for n in ("ok.txt", "../../../../../../tmp/%s" % marker):
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    r = admin.call("POST", "/v1/lanes/%s/import" % name, body=buf.getvalue(),
                   headers={"Content-Type": "application/x-tar"})
    try:
        assert not os.path.exists("/tmp/" + marker), "a lane import wrote outside the lane"
        assert r.status == 400, r
    finally:
        if os.path.exists("/tmp/" + marker):
            os.unlink("/tmp/" + marker)
        admin.delete("/v1/lanes/%s" % name)


# ---- images -------------------------------------------------------------------------------


def test_images(admin):
    r = admin.get("/v1/images")
    assert r.status == 200, r
    imgs = {i["name"]: i for i in r.body["images"]}
    assert imgs["host"]["ready"] is True and "debian-bookworm" in imgs, imgs
    g = admin.get("/v1/images/host")
    assert g.status == 200 and g.body == {"name": "host", "ready": True, "size": 0, "created": 0,
                                          "source": "builtin", "lanes": []}, g
    assert_problem(admin.get("/v1/images/no-such-image"), 404, "not_found")


def test_image_build_streams_progress(admin, other):
    # host needs no debootstrap: the build is quick but goes the whole way
    # (progress events, then "done").
    conn, resp = admin.stream("POST", "/v1/images/host/build")
    try:
        assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream", resp.status
        events = sse_events(resp, limit_s=60)
    finally:
        conn.close()
    assert events and events[-1][0] == "done", events
    assert json.loads(events[-1][1]) == {"name": "host", "ready": True}, events
    assert_problem(admin.post("/v1/images/no-such-image/build"), 404, "not_found")
    assert_problem(other.post("/v1/images/host/build"), 403, "forbidden")


# ---- audit ----------------------------------------------------------------------------------


def audit(c, **q):
    r = c.get("/v1/audit", query=q or None)
    assert r.status == 200, r
    return r.body["records"]


def test_audit_records_requests_and_processes(admin, other):
    since = int(time.time() * 1000) - 1
    c = create_cell(admin)
    cid = c["id"]
    try:
        out = run_in(admin, cid, "sh", ["-c", "exit 4"])
        assert out["exitCode"] == 4
        p = admin.post("/cells/%s/v1/processes" % cid, {"command": "sh", "args": ["-c", "exit 3"]})
        assert p.status == 200, p
        pid = p.body["id"]
        assert wait_for(lambda: admin.get("/cells/%s/v1/processes/%s" % (cid, pid)).body["status"] == "exited")
        k = admin.post("/cells/%s/v1/processes" % cid, {"command": "sleep", "args": ["60"]})
        kid = k.body["id"]
        assert admin.post("/cells/%s/v1/processes/%s/kill?waitMs=5000" % (cid, kid)).body["status"] == "exited"
        # Another tenant's failed look at the cell.
        assert other.get("/v1/cells/%s" % cid).status == 404
    finally:
        admin.delete("/v1/cells/%s" % cid)

    def ours():
        return audit(admin, since=since, limit=1000)

    recs = wait_for(lambda: [r for r in ours() if r.get("kind") == "cell" and r.get("event") == "deleted"
                             and r.get("cell") == cid] and ours(), 5)
    assert recs, "no cell deleted record"
    for r in recs:
        assert r["tenant"] == "default" and isinstance(r["ts_ms"], int), r
    reqs = [r for r in recs if r.get("kind") == "request"]
    create = [r for r in reqs if r["method"] == "POST" and r["path"] == "/v1/cells" and r["status"] == 201]
    assert create and create[0].get("cell") == cid, reqs[-10:]
    run = [r for r in reqs if r["path"] == "/cells/%s/v1/processes/run" % cid]
    assert run and run[0]["command"] == "sh" and run[0]["exitCode"] == 4, run
    events = {(r.get("process"), r.get("event")) for r in recs if r.get("kind") == "process"}
    assert (pid, "started") in events and (kid, "started") in events, events
    killed = [r for r in recs if r.get("kind") == "process" and r.get("process") == kid and r.get("event") == "exited"]
    assert killed and killed[0].get("signal") == 9 and "exitCode" not in killed[0], (killed, events)
    # A process that ends on its own is recorded too, with its exit code.
    ended = [r for r in recs if r.get("kind") == "process" and r.get("process") == pid and r.get("event") != "started"]
    assert ended and ended[0].get("exitCode") == 3, \
        "no audit record of process %s exiting by itself: %s" % (pid, sorted(events))
    # The other tenant sees its own 404, never the admin's records.
    theirs = audit(other, since=since, limit=1000)
    assert theirs, "the other tenant's own request is not in its audit log"
    assert all(r["tenant"] == "other" for r in theirs), theirs
    assert not [r for r in theirs if r.get("kind") in ("process", "cell")], theirs
    assert [r for r in theirs if r.get("path") == "/v1/cells/%s" % cid and r.get("status") == 404]
    # limit and since are validated.
    assert_problem(admin.get("/v1/audit?limit=0"), 400, detail_has="limit")
    assert_problem(admin.get("/v1/audit?since=yesterday"), 400, detail_has="since")
    assert len(audit(admin, limit=2)) == 2


def test_failed_auth_is_audited_without_tenant(admin, anon):
    since = int(time.time() * 1000) - 1
    anon.get("/v1/cells/audit-probe-401")
    # Tenant-less records belong to no tenant's view.
    assert not [r for r in audit(admin, since=since) if r.get("path") == "/v1/cells/audit-probe-401"]


# ---- ttl --------------------------------------------------------------------------------------


def test_ttl_reaps_an_idle_cell(admin):
    c = create_cell(admin, {"ttl": 2, "resources": {"memory": "64M"}})
    cid = c["id"]
    keep = create_cell(admin, {"ttl": 2, "resources": {"memory": "64M"}})
    kid = keep["id"]
    p = admin.post("/cells/%s/v1/processes" % kid, {"command": "sleep", "args": ["30"]})
    assert p.status == 200, p
    try:
        t0 = time.monotonic()
        # Idle (no requests, no process): gone after ttl + the reaper's second.
        gone = wait_for(lambda: cid not in [x["id"] for x in admin.get("/v1/cells").body["cells"]], 8, 0.25)
        assert gone, "a cell with ttl 2 was still listed after %.1f s" % (time.monotonic() - t0)
        assert time.monotonic() - t0 >= 1.0, "reaped before its ttl"
        assert_problem(admin.get("/v1/cells/%s" % cid), 404, "not_found")
        reaped = [r for r in audit(admin, limit=1000) if r.get("cell") == cid and r.get("event") == "reaped"]
        assert reaped, "no audit record of the reaping"
        # A cell with a running process is not idle.
        assert admin.get("/v1/cells/%s" % kid).body["state"] == "running"
    finally:
        admin.delete("/v1/cells/%s" % kid)


# ---- disk quota: every byte a tenant stores is counted and bounded while written ---------------


def lane_dirs(d):
    return sorted(os.listdir(os.path.join(d.state, "lanes")))


def gzip_tar_of_zeros(inflated):
    """A .tar.gz of one file of `inflated` zero bytes, built in memory
    (about 1 KiB per MiB inflated)."""
    import gzip
    ti = tarfile.TarInfo("zeros")
    ti.size = inflated
    buf = io.BytesIO()
    chunk = bytes(1 << 20)
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        gz.write(ti.tobuf(tarfile.PAX_FORMAT))
        for _ in range(inflated // len(chunk)):
            gz.write(chunk)
        gz.write(bytes(-inflated % 512 + 1024))
    return buf.getvalue()


def upload_refused_early(c, path, size):
    """PUT `size` bytes; the daemon may answer (and close) before the body is
    all sent, so send what it takes and then read its answer."""
    import http.client
    conn = c.conn()
    try:
        conn.putrequest("PUT", path)
        for k, v in c.headers_for({"Content-Length": str(size)}).items():
            conn.putheader(k, v)
        conn.endheaders()
        chunk = bytes(1 << 20)
        try:
            for _ in range(size // len(chunk)):
                conn.send(chunk)
        except OSError:
            pass
        try:
            r = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None, "closed"
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def test_api_lanes_are_sized_and_count_against_the_disk_quota(d, admin):
    """A tenant with an 80M disk quota: a lane without a size gets what is
    left (so it cannot escape the quota), a cell on it that writes 200M gets
    ENOSPC, an fs upload past it fails with 507, and the tenant's usage shows
    the declared size."""
    name, c, _ = new_tenant(d, admin)
    assert admin.put("/v1/tenants/%s" % name, {"maxDisk": "80M"}).status == 200
    r = c.post("/v1/lanes", {"name": "a"})
    assert r.status == 201 and r.body["size"] == 80 << 20, r
    try:
        assert_problem(c.post("/v1/lanes", {"name": "b"}), 403, "quota_exceeded", detail_has="disk")
        assert_problem(c.post("/v1/lanes", {"name": "b", "size": "16M"}), 403, "quota_exceeded", detail_has="disk")
        usage = admin.get("/v1/tenants/%s" % name).body["usage"]
        assert usage["disk"] == 80 << 20 and usage["lanes"] == 1, usage
        cell = create_cell(c, {"lane": "a", "resources": {"memory": "64M"}})
        try:
            out = sh(c, cell["id"], "dd if=/dev/zero of=/root/big bs=1M count=200 2>&1; echo rc=$?; sync")
            assert "No space left on device" in out["stdout"] and "rc=1" in out["stdout"], out
            status, text = upload_refused_early(c, "/cells/%s/v1/fs/file?path=/root/more" % cell["id"], 32 << 20)
            # 507 when the failure is seen before the body is all in; a
            # connection closed mid-body otherwise.  Either way nothing past
            # the quota is stored (checked below).
            assert (status == 507 and "insufficient_storage" in text) or status is None, (status, text)
            r = c.call("PUT", "/cells/%s/v1/fs/file?path=/root/small" % cell["id"], body=bytes(1 << 20))
            assert_problem(r, 507, "insufficient_storage")
        finally:
            assert c.delete("/v1/cells/%s" % cell["id"]).status == 204
        # What the host holds for the lane never outgrows its declared size.
        held = 0
        for top, _, files in os.walk(os.path.join(d.state, "lanes")):
            for f in files:
                held += os.lstat(os.path.join(top, f)).st_blocks * 512
        assert held <= (80 << 20) + len(lane_dirs(d)) * (1 << 20), held
    finally:
        assert c.delete("/v1/lanes/a").status == 204
    assert admin.get("/v1/tenants/%s" % name).body["usage"]["disk"] == 0


def test_api_import_of_a_gzip_bomb_is_refused_and_leaves_nothing(d, admin):
    """512 MiB of zeros in a 0.5 MiB .tar.gz, for a tenant whose quota is 64M:
    refused with 413 naming the lane and the quota, and no lane, row or file
    is left behind."""
    name, c, _ = new_tenant(d, admin)
    assert admin.put("/v1/tenants/%s" % name, {"maxDisk": "64M"}).status == 200
    bomb = gzip_tar_of_zeros(512 << 20)
    assert len(bomb) < (1 << 20)
    before = lane_dirs(d)
    r = c.call("POST", "/v1/lanes/bomb/import", body=bomb, headers={"Content-Type": "application/x-tar"})
    p = assert_problem(r, 413, "payload_too_large")
    assert "bomb" in p["detail"] and "disk" in p["detail"] and "67108864" in p["detail"], p
    assert_problem(c.get("/v1/lanes/bomb"), 404, "not_found")
    assert wait_for(lambda: lane_dirs(d) == before, 10), (before, lane_dirs(d))
    assert admin.get("/v1/tenants/%s" % name).body["usage"]["disk"] == 0
    # The size of an import is asked for, and checked like a lane's.
    tiny = gzip_tar_of_zeros(1 << 20)
    for q, status in (("size=lots", 400), ("size=1G", 403), ("size=1M", 400)):
        r = c.call("POST", "/v1/lanes/x/import?" + q, body=tiny, headers={"Content-Type": "application/x-tar"})
        assert_problem(r, status)
    r = c.call("POST", "/v1/lanes/x/import?size=32M", body=tiny, headers={"Content-Type": "application/x-tar"})
    assert r.status == 201 and r.body["size"] == 32 << 20, r
    assert c.delete("/v1/lanes/x").status == 204


def test_lane_errors_show_lane_names_not_internal_ids_or_paths(d, admin):
    """A failed import's problem names the tenant's lane, never the lane's
    host-unique id (l-...) or a path in the daemon's state directory."""
    name, c, _ = new_tenant(d, admin)
    import re
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("/etc/abs"), io.BytesIO(b""))
    for body in (b"this is not a tar archive" * 100, bad.getvalue(), gzip_tar_of_zeros(64 << 20)[:20000]):
        r = c.call("POST", "/v1/lanes/mylane/import", body=body, headers={"Content-Type": "application/x-tar"})
        p = assert_problem(r, r.status)
        assert 400 <= r.status < 600 and "mylane" in p["detail"], p
        assert not re.search(r"l-[0-9a-f]{16}", json.dumps(p)), p
        assert d.state not in json.dumps(p), p


# ---- audit: floods are coalesced, the log rotates, reads are bounded -------------------------------


FLOOD = r"""
import socket, sys
n = int(sys.argv[1])
for i in range(n):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("198.18.0.1", 9))
    except OSError:
        pass
    s.close()
print("done")
"""


def events_of(records):
    return sum(r.get("dropped", r.get("count", 1)) for r in records)


def test_audit_flood_of_denied_connections_is_coalesced(d, admin, other):
    """A cell makes 3000 denied connections as fast as it can: the log gets a
    bounded number of records per second (coalesced ones with a count, and
    one saying how many were dropped), and they account for every attempt."""
    cid = create_cell(admin, {"resources": {"memory": "128M"}, "policy": {"rules": []}})["id"]
    try:
        t0 = time.monotonic()
        out = run_in(admin, cid, "/usr/bin/python3", ["-c", FLOOD, "3000"], timeoutMs=120000)
        took = time.monotonic() - t0
        assert out["exitCode"] == 0 and "done" in out["stdout"], out

        def all_in():
            recs = audit(admin, kind="net", cell=cid, limit=10000)
            return recs if events_of(recs) >= 3000 else None

        # Coalesced records go out once a second; under ASan with two pytest
        # workers the last came after 10 s once (1897 of 3000 seen).
        recs = wait_for(all_in, 60)
        recs = recs or audit(admin, kind="net", cell=cid, limit=10000)
        assert events_of(recs) == 3000, (len(recs), events_of(recs))
        # At most 64 as they come, 64 coalesced and one "dropped" per second.
        assert len(recs) <= 129 * (int(took) + 3), (len(recs), took)
        assert len(recs) < 3000
        coalesced = [r for r in recs if r.get("count", 1) > 1]
        assert coalesced and all(r["verdict"] == "deny" for r in coalesced), recs[-5:]
        # Another tenant asking for this cell's records gets none.
        assert audit(other, cell=cid, limit=10000) == []
        assert all(r["tenant"] == "other" for r in audit(other, kind="net", limit=10000))
    finally:
        admin.delete("/v1/cells/%s" % cid)


PARALLEL_FLOOD = r"""
import socket, sys, time
socks = []
for i in range(int(sys.argv[1])):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("198.18.0.1", 9))
    except OSError:
        pass
    socks.append(s)
time.sleep(3)
for s in socks:
    s.close()
print("done")
"""


def test_audit_accounts_for_flows_the_engine_had_no_worker_for(d, admin):
    """600 connections at once from a cell whose pids limit (which the
    egress helper is charged to) leaves the engine short of threads: the
    flows it could not take were reset without a record (16 of 600 vanished
    in a try); each is now audited as a denial, so the log still accounts
    for every attempt."""
    cid = create_cell(admin, {"resources": {"memory": "128M", "pids": 40}, "policy": {"rules": []}})["id"]
    try:
        out = run_in(admin, cid, "/usr/bin/python3", ["-c", PARALLEL_FLOOD, "600"], timeoutMs=120000)
        assert out["exitCode"] == 0 and "done" in out["stdout"], out

        def all_in():
            recs = audit(admin, kind="net", cell=cid, limit=10000)
            return recs if events_of(recs) >= 600 else None

        recs = wait_for(all_in, 60) or audit(admin, kind="net", cell=cid, limit=10000)
        assert events_of(recs) == 600, (len(recs), events_of(recs))
        assert all(r["verdict"] == "deny" for r in recs if r.get("event") == "connect"), recs[-5:]
    finally:
        admin.delete("/v1/cells/%s" % cid)


vm_rss_kib = dm.rss_kib


def test_audit_read_of_a_huge_log_keeps_memory_bounded(tmp_path):
    """A 200 MB audit log (written before the daemon starts): reading it
    with filters that match most of it keeps the daemon's RSS growth far
    below the file's size, and pages go on with the cursor."""
    if dm.TSAN:
        pytest.skip("RSS bound: ThreadSanitizer's shadow memory scales it")
    state = tmp_path / "big"
    state.mkdir()
    line = json.dumps({"ts": "2026-01-01T00:00:00.000Z", "ts_ms": 1767225600000, "tenant": "default",
                       "kind": "net", "cell": "c-flood", "event": "connect", "verdict": "deny",
                       "dst": "198.18.0.1:9", "reason": "x" * 200}, separators=(",", ":")) + "\n"
    other = line.replace('"tenant":"default"', '"tenant":"other"')
    block = (line * 500 + other * 500).encode()
    with open(state / "audit.log", "wb") as f:
        for _ in range((200 << 20) // len(block)):
            f.write(block)
    os.chmod(state / "audit.log", 0o600)
    dd = dm.Daemon(state).start()
    try:
        admin = dd.client()
        before = vm_rss_kib(dd.proc.pid)
        r = admin.get("/v1/audit", query={"kind": "net", "limit": 10000})
        assert r.status == 200 and len(r.body["records"]) == 10000, r.status
        assert all(x["tenant"] == "default" for x in r.body["records"])
        r = admin.get("/v1/audit", query={"kind": "process", "limit": 10000})  # matches nothing: reads it all
        assert r.status == 200 and r.body["records"] == [], r
        grown = vm_rss_kib(dd.proc.pid) - before
        assert grown < 96 << 10, "RSS grew by %d KiB reading a 200 MB log" % grown
        dd.stop()
    finally:
        if dd.running():
            dd.kill9()
        for n in os.listdir(state):  # pytest keeps tmp dirs of recent runs
            if n.startswith("audit.log"):
                os.unlink(state / n)
        dd.check_sanitizer()


def test_audit_log_rotates_by_size_and_reads_span_the_files(tmp_path):
    """--audit-max-size 64K --audit-keep 2: the log rotates into audit.log.1
    and .2 (no .3), each about the size; a tenant's pages, followed with the
    cursor, span the rotated files and never show another tenant's records."""
    state = tmp_path / "rot"
    dd = dm.Daemon(state, ["--audit-max-size", "64K", "--audit-keep", "2"]).start()
    try:
        admin = dd.client()
        tok, _ = make_tenant_token(admin, "rot-other")
        other = dd.client(tok)
        for i in range(700):
            (admin if i % 2 else other).get("/v1/lanes/probe-%d" % i)
        names = sorted(n for n in os.listdir(state) if n.startswith("audit.log"))
        assert names == ["audit.log", "audit.log.1", "audit.log.2"], names
        for n in names[1:]:
            assert 64 << 10 <= os.path.getsize(state / n) < (64 << 10) + 4096, n
        seen, cursor, pages = [], None, 0
        while pages < 50:
            q = {"limit": 40}
            if cursor:
                q["cursor"] = cursor
            r = other.get("/v1/audit", query=q)
            assert r.status == 200, r
            seen += r.body["records"]
            pages += 1
            cursor = r.body.get("cursor")
            if not cursor:
                break
        assert all(x["tenant"] == "rot-other" for x in seen), [x for x in seen if x["tenant"] != "rot-other"][:3]
        seqs = [x["seq"] for x in seen]
        assert len(set(seqs)) == len(seqs), "a record came twice"
        # The oldest file's records are among them: reads span the rotation.
        with open(state / "audit.log.2") as f:
            oldest = [json.loads(x) for x in f if '"rot-other"' in x]
        assert oldest and oldest[0]["seq"] in seqs
        for q, field in (({"cursor": "x"}, "cursor"), ({"cursor": "0"}, "cursor"), ({"cursor": "-5"}, "cursor"),
                         ({"cursor": "9" * 30}, "cursor"), ({"limit": 10001}, "limit"), ({"cell": "c" * 100}, "cell"),
                         ({"kind": "bogus"}, "kind")):
            assert_problem(other.get("/v1/audit", query=q), 400, detail_has=field)
        assert other.get("/v1/audit", query={"cursor": str(2 ** 62)}).status == 200
        dd.stop()
    finally:
        if dd.running():
            dd.kill9()
        dd.check_sanitizer()
    for bad in (["--audit-keep", "0"], ["--audit-keep", "65"], ["--audit-max-size", "1K"], ["--audit-max-size", "lots"]):
        r = subprocess.run([dm.CELL_BIN, "--state", str(state), "serve"] + bad, capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 2 and bad[0] in r.stderr, (bad, r)


def audit_pages(c, **q):
    """Every record GET /v1/audit answers for q, paged with the cursor to
    the oldest, oldest first; and how many pages it took."""
    got, cursor, pages = [], None, 0
    while pages < 1000:
        qq = dict(q, cursor=cursor) if cursor else dict(q)
        r = c.get("/v1/audit", query=qq)
        assert r.status == 200, r
        page = r.body["records"]
        assert len(page) <= int(q.get("limit", 100)), (qq, len(page))
        assert [x["seq"] for x in page] == sorted(x["seq"] for x in page), "a page is not oldest first"
        got = page + got
        pages += 1
        cursor = r.body.get("cursor")
        if not cursor:
            return got, pages
    raise AssertionError("paging never ended: %r" % q)


def test_audit_decision_filter_pages_exactly_the_matching_records(tmp_path):
    """?decision=allow|deny keeps the records whose top-level "verdict" (net)
    or "decision" (a run's permission answer) is that, in the store's read (a short page is the oldest, the cursor goes
    on below the page): paging through the filtered list with a small limit
    gives exactly the matching records of the caller's tenant, in order,
    also combined with kind, cell and since and with eight readers at once.
    Records that only look like a match (the value inside another
    member's string, another spelling, another tenant's) never
    appear; bad values are a 400 naming the parameter and its values."""
    state = tmp_path / "decision"
    state.mkdir()
    recs = []
    for i in range(240):
        r = {"ts": "2026-01-01T00:00:00.000Z", "ts_ms": 1767225600000 + i * 1000, "seq": i + 1,
             "tenant": "default", "kind": "net", "cell": "c-%d" % (i % 3), "event": "connect",
             "dst": "198.18.0.%d:443" % (i % 200)}
        m = i % 8
        if m in (0, 3):
            r["verdict"] = "deny"
            r["reason"] = "no rule"
        elif m in (1, 5):
            r["verdict"] = "allow"
        elif m == 2:    # another tenant's denials
            r.update(tenant="dec-other", verdict="deny")
        elif m == 4:    # request records: a permission answer every other time, else none
            r.update(kind="request", method="POST", path="/v1/runs/r1/permissions/p%d" % i, status=204)
            if i % 16 == 4:
                r["decision"] = "deny"
            del r["event"]
        elif m == 6:    # allowed, with "deny" only where a prefilter could be fooled
            r.update(verdict="allow", reason='"verdict":"deny"', error='{"decision":"deny"}')
        else:           # other spellings are not the value
            r["verdict"] = ["Deny", "denied", "deny ", "allowed"][(i // 8) % 4]
        recs.append(r)
    with open(state / "audit.log", "w") as f:
        for r in recs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    os.chmod(state / "audit.log", 0o600)
    dd = dm.Daemon(state).start()
    try:
        admin = dd.client()
        other = dd.tenant("dec-other")

        def want(tenant, verdict, **f):
            return [r for r in recs if r["tenant"] == tenant and verdict in (r.get("verdict"), r.get("decision"))
                    and all(r.get(k) == v for k, v in f.items())]

        denied = want("default", "deny")
        assert len(denied) == 75
        for limit in (7, 30, 60, 1000):   # short last page, full last page, one page
            got, pages = audit_pages(admin, decision="deny", limit=limit)
            assert got == denied, (limit, [x["seq"] for x in got][:10])
            assert pages == len(denied) // limit + 1, (limit, pages)
        got, _ = audit_pages(admin, decision="allow", limit=11)
        assert got == want("default", "allow") and len(got) == 90
        # With the other filters: kind, cell, since.
        got, _ = audit_pages(admin, decision="deny", kind="net", cell="c-1", limit=4)
        assert got == want("default", "deny", kind="net", cell="c-1") and got
        since = recs[120]["ts_ms"]
        got, _ = audit_pages(admin, decision="deny", since=since, limit=9)
        assert got == [r for r in denied if r["ts_ms"] >= since] and got
        got, _ = audit_pages(admin, decision="deny", kind="request", limit=4)
        assert got == want("default", "deny", kind="request") and len(got) == 15
        assert audit_pages(admin, decision="allow", kind="request")[0] == []
        # Another tenant sees its own denials and never the admin's.
        got, _ = audit_pages(other, decision="deny", limit=6)
        assert got == want("dec-other", "deny") and len(got) == 30
        assert all(x["tenant"] == "dec-other" for x in audit_pages(other, decision="allow")[0])
        # A cursor of the admin's list given to the other tenant shows only its own.
        cur = admin.get("/v1/audit", query={"decision": "deny", "limit": 5}).body["cursor"]
        r = other.get("/v1/audit", query={"decision": "deny", "cursor": cur, "limit": 1000})
        assert r.status == 200 and r.body["records"] == [x for x in want("dec-other", "deny") if x["seq"] < int(cur)]
        # Eight readers at once page the same list.
        results = [None] * 8

        def reader(k):
            results[k] = audit_pages(admin if k % 2 else other, decision="deny", limit=5 + k)[0]

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for k, res in enumerate(results):
            assert res == (denied if k % 2 else want("dec-other", "deny")), k
        # Bad values: named, with the values allowed; nothing else is read as one.
        for bad in ("", "Deny", "DENY", "denied", "deny ", "allowed", "verdict", "../deny", "d" * 5000, "deny\u00e9", "0"):
            b = assert_problem(admin.get("/v1/audit", query={"decision": bad}), 400, "invalid_request",
                               detail_has=['"decision"', "allow or deny"])
            assert "records" not in b
        dd.stop()
    finally:
        if dd.running():
            dd.kill9()
        dd.check_sanitizer()
