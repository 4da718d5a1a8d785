"""Unknown JSON fields in request bodies (docs/api.md, "Unknown fields").

Every control-plane route that takes a JSON object refuses a member it does
not know with a 400 problem naming it and the known ones, instead of
ignoring it (a mistyped optional field would otherwise silently get its
default).  The per-cell sandbox-agent routes (/cells/{id}/v1/...) ignore
unknown members, as sandbox-agent 0.4.2 does for each of its request types:
those are tested as the documented exception.
"""
import pytest

import daemon as dm
from daemon import assert_problem


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("unknown-fields"))


@pytest.fixture(scope="module")
def cell_id(admin):
    r = admin.post("/v1/cells", {})
    assert r.status == 201, r
    yield r.body["id"]
    admin.delete("/v1/cells/" + r.body["id"])


# (method, path, a valid body, the field to add, how the problem names it).
# Each body would be accepted without the extra field, so the 400 is the
# unknown field's alone; checks come before any lookup, so names need not exist.
ROUTES = [
    ("POST", "/v1/cells", {"image": "host"}, "bogus", "bogus"),
    ("POST", "/v1/cells", {"resources": {"memory": "64M"}}, ("resources", "memroy"), "resources.memroy"),
    ("POST", "/v1/cells", {"mounts": [{"type": "memory", "target": "/scratch"}]}, ("mounts", 0, "tagret"),
     "mounts[0].tagret"),
    ("POST", "/v1/cells", {"policy": {"rules": []}}, ("policy", "rulez"), "rulez"),
    ("POST", "/v1/cells", {"agents": {"codex": {"secret": "uf-key"}}}, ("agents", "codex", "model"), "model"),
    ("PUT", "/v1/cells/{cell}/policy", {"rules": []}, "default", "default"),
    ("POST", "/v1/lanes", {"name": "uf-lane"}, "sise", "sise"),
    ("POST", "/v1/lanes/no-such-lane/commit", {"image": "uf-img"}, "tag", "tag"),
    ("PUT", "/v1/images/host/tenants", {"tenants": ["*"]}, "mode", "mode"),
    ("POST", "/v1/tokens", {"tenant": "uf"}, "expires", "expires"),
    ("PUT", "/v1/tenants/uf", {"maxCells": 3}, "maxCPUs", "maxCPUs"),
    ("POST", "/v1/secrets", {"name": "uf", "value": "v"}, "ttl", "ttl"),
    ("POST", "/v1/runs", {"agent": "mock", "prompt": "hi"}, "promt", "promt"),
    ("POST", "/v1/runs", {"agent": "mock", "prompt": "hi", "resume": {"last": True}}, ("resume", "frok"),
     "resume.frok"),
]


def _with_field(body, where):
    import copy
    body = copy.deepcopy(body)
    if isinstance(where, str):
        body[where] = 1
        return body
    node = body
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = 1
    return body


@pytest.mark.parametrize("method,path,body,field,named", ROUTES,
                         ids=["%s %s %s" % (m, p, n) for m, p, _, _, n in ROUTES])
def test_an_unknown_field_is_a_400_naming_it(admin, cell_id, method, path, body, field, named):
    path = path.replace("{cell}", cell_id)
    r = admin.call(method, path, json_body=_with_field(body, field))
    b = assert_problem(r, 400)
    assert '"%s"' % named in b["detail"] or named in b["detail"], r
    # The field's own message, not a later check's.
    assert any(w in b["detail"] for w in ("not known", "unknown", "is not a field")), r


@pytest.mark.parametrize("method,path,field,known", [
    ("POST", "/v1/cells", "bogus", ["image", "lane", "cwd", "env", "resources", "mounts", "policy", "agents"]),
    ("POST", "/v1/tokens", "bogus", ["tenant", "label", "admin", "rate"]),
    ("PUT", "/v1/tenants/uf", "bogus", ["maxCells", "maxMemory", "maxLanes", "maxDisk", "maxPids"]),
])
def test_the_problem_lists_the_known_fields(admin, method, path, field, known):
    r = admin.call(method, path, json_body={field: 1})
    b = assert_problem(r, 400, "invalid_request")
    assert 'field "%s" is not known; known fields: ' % field in b["detail"], r
    for k in known:
        assert k in b["detail"], (k, r)


def test_nothing_is_made_by_a_refused_body(admin):
    """The check comes before any effect: no token, tenant quota, lane or secret."""
    tokens = len(admin.get("/v1/tokens").body)
    assert admin.post("/v1/tokens", {"tenant": "uf-none", "bogus": True}).status == 400
    assert len(admin.get("/v1/tokens").body) == tokens
    assert admin.post("/v1/lanes", {"name": "uf-none", "bogus": 1}).status == 400
    assert admin.get("/v1/lanes/uf-none").status == 404
    assert admin.post("/v1/secrets", {"name": "uf-none", "value": "v", "bogus": 1}).status == 400
    assert "uf-none" not in str(admin.get("/v1/secrets").body)


@pytest.mark.parametrize("key", [
    "", " ", "x" * 5000, "\u00e9t\u00e9", "a\"b", "__proto__", "name\u0001",
])
def test_odd_unknown_names_are_named_safely(admin, key):
    """Empty, huge, non-ASCII, quoting and control-character names: a 400
    with problem+json (the name cut short), never a crash or a 500."""
    r = admin.post("/v1/tokens", {"tenant": "uf", key: 1})
    b = assert_problem(r, 400, "invalid_request")
    assert len(b["detail"]) < 2000, r


def test_a_tenant_token_gets_the_same_answer(d):
    """The check does not depend on who asks (no admin-only leniency)."""
    t = d.tenant("uf-tenant")
    assert_problem(t.post("/v1/lanes", {"name": "uf-t", "bogus": 1}), 400, detail_has='"bogus"')
    assert_problem(t.post("/v1/cells", {"bogus": 1}), 400, detail_has='"bogus"')


# sandbox-agent 0.4.2 deserializes its request types with serde's default,
# which ignores unknown members (checked against its binary: processes/run,
# processes, processes/config, input, terminal/resize, fs/move, agent
# install and the ACP envelope all accept {"bogus": 1}); SDK clients may send
# fields newer than this daemon, so these routes ignore them too.
@pytest.mark.parametrize("path,body", [
    ("/processes/run", {"command": "true", "bogus": 1}),
    ("/fs/move", {"from": "/tmp/uf-a", "to": "/tmp/uf-b", "bogus": 1}),
])
def test_per_cell_sandbox_agent_routes_ignore_unknown_fields(admin, cell_id, path, body):
    if path == "/fs/move":
        r = admin.put("/cells/%s/v1/fs/file" % cell_id, body=b"x", query={"path": "/tmp/uf-a"},
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200, r
    r = admin.post("/cells/%s/v1%s" % (cell_id, path), body)
    assert r.status == 200, r
