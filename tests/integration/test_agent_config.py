"""`cell serve`: /cells/{id}/v1/config/mcp and /config/skills, answering like
sandbox-agent 0.4.2 (docs/compat/sandbox-agent-0.4.2-config.md: the bodies
below are the reference's transcripts), with the files inside the cell, and
the attacks: names and directories that try to leave the config directory,
symlinks the cell plants under .sandbox-agent/config, planted invalid or huge
files, another tenant's token.
"""
import json
import os
import threading
import uuid

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("agentcfg"))


@pytest.fixture(scope="module")
def admin(d):
    return d.client()


class Cell(dm.CellClient):
    def cfg(self, method, kind, directory, name, body=None, **kw):
        q = {"directory": directory, ("mcpName" if kind == "mcp" else "skillName"): name}
        return self.call(method, "/config/" + kind, query=q, json_body=body, **kw)


def new_cell(client):
    return Cell(client, dm.create_cell(client))


@pytest.fixture(scope="module")
def cell(admin):
    c = new_cell(admin)
    yield c
    admin.delete("/v1/cells/%s" % c.id)


@pytest.fixture(scope="module")
def host_marker(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfgsecret")
    os.chmod(d, 0o755)
    p = d / "secret.txt"
    secret = "HOST-SECRET-%s" % uuid.uuid4().hex
    p.write_text(secret)
    return str(p), secret


def fresh_dir():
    return "/work-%s" % uuid.uuid4().hex[:10]


LOCAL = {"type": "local", "command": "node", "args": ["x"], "cwd": "/w", "enabled": True, "env": {"K": "V"},
         "timeoutMs": 5}
LOCAL_OUT = {"type": "local", "command": "node", "args": ["x"], "env": {"K": "V"}, "enabled": True, "timeoutMs": 5,
             "cwd": "/w"}
REMOTE = {"type": "remote", "url": "http://x", "bearerTokenEnvVar": "T", "enabled": False, "envHeaders": {"h": "E"},
          "headers": {"a": "b"}, "oauth": {"x": 1}, "timeoutMs": 7, "transport": "sse"}
REMOTE_OUT = {"type": "remote", "url": "http://x", "headers": {"a": "b"}, "bearerTokenEnvVar": "T",
              "envHeaders": {"h": "E"}, "oauth": {}, "enabled": False, "timeoutMs": 7, "transport": "sse"}


def ordered(resp):
    """The body's keys in the order the server sent them."""
    return list(json.loads(resp.raw).keys())


# ---- round trips, in the reference's shapes and file layout ------------------------------

def test_mcp_round_trip_and_file_layout(cell):
    D = fresh_dir()
    r = cell.cfg("GET", "mcp", D, "a")
    b = assert_problem(r, 404, "session_not_found")
    assert b == {"type": "urn:sandbox-agent:error:session_not_found", "title": "Session Not Found", "status": 404,
                 "detail": "session not found: mcp:a", "sessionId": "mcp:a"}, b
    r = cell.cfg("PUT", "mcp", D, "a", LOCAL)
    assert r.status == 204 and r.raw == b"", r
    r = cell.cfg("GET", "mcp", D, "a")
    assert r.status == 200 and r.ctype == "application/json" and r.body == LOCAL_OUT, r
    assert ordered(r) == list(LOCAL_OUT), r.raw
    assert cell.cfg("PUT", "mcp", D, "r", REMOTE).status == 204
    r = cell.cfg("GET", "mcp", D, "r")
    assert r.body == REMOTE_OUT and ordered(r) == list(REMOTE_OUT), r.raw
    # stdio and http are stored as local and remote; defaults filled, unknown fields and nulls dropped.
    for body, out in [({"type": "stdio", "command": "n"}, {"type": "local", "command": "n", "args": []}),
                      ({"type": "http", "url": "u"}, {"type": "remote", "url": "u"}),
                      ({"type": "local", "command": ["a", "b"], "args": ["c"]},
                       {"type": "local", "command": ["a", "b"], "args": ["c"]}),
                      ({"type": "local", "command": "x", "cwd": None, "env": None, "enabled": None,
                        "timeoutMs": None, "bogus": 1}, {"type": "local", "command": "x", "args": []}),
                      ({"type": "remote", "url": "u", "oauth": {"clientId": "c", "clientSecret": "s", "scope": "x",
                                                                 "extra": 1}},
                       {"type": "remote", "url": "u", "oauth": {"clientId": "c", "clientSecret": "s", "scope": "x"}}),
                      ({"type": "remote", "url": "u", "oauth": False}, {"type": "remote", "url": "u", "oauth": False})]:
        assert cell.cfg("PUT", "mcp", D, "t", body).status == 204, body
        r = cell.cfg("GET", "mcp", D, "t")
        assert r.status == 200 and r.body == out, (body, r)
    assert cell.cfg("DELETE", "mcp", D, "t").status == 204
    # The file is where the reference puts it, inside the cell, in its format (sorted, 2-space indent).
    text = cell.sh("cat %s/.sandbox-agent/config/mcp.json" % D)["stdout"]
    assert text == json.dumps({"a": LOCAL_OUT, "r": REMOTE_OUT}, indent=2), text
    assert not os.path.exists(D), "the config landed on the host"
    # Replace, delete, delete again (204 both times), and the last delete leaves "{}".
    assert cell.cfg("PUT", "mcp", D, "a", {"type": "local", "command": "y"}).status == 204
    assert cell.cfg("GET", "mcp", D, "a").body == {"type": "local", "command": "y", "args": []}
    for name in ("a", "a", "r", "never"):
        r = cell.cfg("DELETE", "mcp", D, name)
        assert r.status == 204 and r.raw == b"", r
    assert_problem(cell.cfg("GET", "mcp", D, "a"), 404, "session_not_found")
    assert cell.sh("cat %s/.sandbox-agent/config/mcp.json" % D)["stdout"] == "{}"


def test_skills_round_trip(cell):
    D = fresh_dir()
    b = assert_problem(cell.cfg("GET", "skills", D, "s1"), 404, "session_not_found")
    assert b["detail"] == "session not found: skills:s1" and b["sessionId"] == "skills:s1", b
    body = {"sources": [{"type": "github", "source": "rivet-dev/skills", "skills": ["a"], "ref": "main",
                         "subpath": "x", "extra": 1}]}
    assert cell.cfg("PUT", "skills", D, "s1", body).status == 204
    out = {"sources": [{"type": "github", "source": "rivet-dev/skills", "skills": ["a"], "ref": "main",
                        "subpath": "x"}]}
    r = cell.cfg("GET", "skills", D, "s1")
    assert r.status == 200 and r.body == out and list(json.loads(r.raw)["sources"][0]) == list(out["sources"][0]), r
    nulls = {"sources": [{"type": "a", "source": "x", "skills": None, "ref": None, "subpath": None}]}
    assert cell.cfg("PUT", "skills", D, "s2", nulls).status == 204
    assert cell.cfg("GET", "skills", D, "s2").body == {"sources": [{"type": "a", "source": "x"}]}
    assert cell.cfg("PUT", "skills", D, "s3", {"sources": []}).status == 204
    text = cell.sh("cat %s/.sandbox-agent/config/skills.json" % D)["stdout"]
    assert json.loads(text) == {"s1": out, "s2": {"sources": [{"type": "a", "source": "x"}]}, "s3": {"sources": []}}
    assert text == json.dumps(json.loads(text), indent=2), text
    for name in ("s3", "s3", "nonexist"):
        assert cell.cfg("DELETE", "skills", D, name).status == 204
    assert_problem(cell.cfg("GET", "skills", D, "s3"), 404, "session_not_found")
    assert cell.cfg("GET", "skills", D, "s1").body == out


def test_relative_and_dotdot_directories_resolve_in_the_cell(cell):
    rel = "rel-%s" % uuid.uuid4().hex[:8]
    assert cell.cfg("PUT", "mcp", rel, "a", {"type": "local", "command": "x"}).status == 204
    assert "mcp.json" in cell.sh("ls /root/%s/.sandbox-agent/config" % rel)["stdout"]
    name = "dotdot-%s" % uuid.uuid4().hex[:8]
    assert cell.cfg("PUT", "mcp", "/root/../../../../tmp/" + name, "a", {"type": "local", "command": "x"}).status == 204
    assert cell.sh("cat /tmp/%s/.sandbox-agent/config/mcp.json" % name)["exitCode"] == 0
    assert not os.path.exists("/tmp/" + name), "a '..' directory reached the host"
    r = cell.cfg("GET", "mcp", "../../../../../tmp/" + name, "a")
    assert r.status == 200, r


def test_delete_of_nothing_creates_nothing(cell):
    D = fresh_dir()
    assert cell.cfg("DELETE", "mcp", D, "a").status == 204
    assert cell.sh("test -e %s" % D)["exitCode"] != 0


def test_concurrent_puts_lose_no_entry(cell):
    D = fresh_dir()
    names = ["n%d" % i for i in range(12)]
    res = {}

    def put(n):
        res[n] = cell.cfg("PUT", "mcp", D, n, {"type": "local", "command": n}).status

    ts = [threading.Thread(target=put, args=(n,)) for n in names]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert set(res.values()) == {204}, res
    stored = json.loads(cell.sh("cat %s/.sandbox-agent/config/mcp.json" % D)["stdout"])
    assert sorted(stored) == sorted(names), stored


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,param", [("mcp", "mcpName"), ("skills", "skillName")])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_missing_parameters(cell, kind, param, method):
    body = {"type": "local", "command": "x"} if kind == "mcp" else {"sources": []}
    for q in [{}, {"directory": "/w"}, {param: "a"}, {"directory": "", param: "a"}, {"directory": "/w", param: ""}]:
        r = cell.call(method, "/config/" + kind, query=q or None, json_body=body if method == "PUT" else None)
        missing = "directory" if not q.get("directory") else param
        assert_problem(r, 400, "invalid_request", "missing required '%s' query parameter" % missing)


@pytest.mark.parametrize("kind", ["mcp", "skills"])
@pytest.mark.parametrize("name", ["a/b", "..", ".", "../../x", "/etc/passwd", "a\\b", "a\nb", "x" * 129])
def test_bad_names_are_refused(cell, kind, name):
    D = fresh_dir()
    body = {"type": "local", "command": "x"} if kind == "mcp" else {"sources": []}
    for method in ("PUT", "GET", "DELETE"):
        r = cell.cfg(method, kind, D, name, body if method == "PUT" else None)
        assert_problem(r, 400, "invalid_request", "invalid")
    assert cell.sh("test -e %s" % D)["exitCode"] != 0


def test_nul_in_name_or_directory_is_refused(cell):
    D = fresh_dir()
    for path in ["/config/mcp?directory=%s&mcpName=a%%00b" % D, "/config/mcp?directory=%s%%00evil&mcpName=a" % D]:
        for method in ("PUT", "GET", "DELETE"):
            r = cell.call(method, path, json_body={"type": "local", "command": "x"} if method == "PUT" else None)
            assert_problem(r, 400, "invalid_request", "NUL")
    assert cell.sh("test -e %s" % D)["exitCode"] != 0
    assert cell.cfg("PUT", "mcp", D, "x" * 128, {"type": "local", "command": "x"}).status == 204


def test_long_directory_is_refused(cell):
    r = cell.cfg("PUT", "mcp", "/" + "d" * 5000, "a", {"type": "local", "command": "x"})
    assert r.status in (400, 414), r


MCP_BAD = [
    {"type": "weird", "command": "node"}, {"command": "node"}, {"type": "local"}, {"type": "local", "command": 5},
    {"type": "local", "command": "x", "args": "y"}, {"type": "local", "command": "x", "args": [1]},
    {"type": "local", "command": "x", "env": {"a": 1}}, {"type": "local", "command": "x", "env": []},
    {"type": "local", "command": "x", "timeoutMs": -1}, {"type": "local", "command": "x", "timeoutMs": 1.5},
    {"type": "local", "command": "x", "cwd": 5}, {"type": "local", "command": "x", "enabled": "yes"},
    {"type": "remote"}, {"type": "remote", "url": 1}, {"type": "remote", "url": "u", "headers": {"a": 1}},
    {"type": "remote", "url": "u", "oauth": 5}, {"type": "remote", "url": "u", "oauth": {"clientId": 1}},
    {"type": "local", "command": ["a", 1]}, {"type": 1, "command": "x"},
    [], None, "str", 5,
]
SKILLS_BAD = [
    {}, {"sources": {}}, {"sources": None}, {"sources": [{"type": "x"}]}, {"sources": [{"source": "x"}]},
    {"sources": [{"type": 1, "source": "x"}]}, {"sources": [{"type": "a", "source": "x", "skills": [1]}]},
    {"sources": ["x"]}, {"sources": [{"type": "a", "source": "x", "ref": 3}]}, [], None,
]


@pytest.mark.parametrize("kind,body", [("mcp", b) for b in MCP_BAD] + [("skills", b) for b in SKILLS_BAD])
def test_wrong_types_are_422_and_store_nothing(cell, kind, body):
    D = fresh_dir()
    r = cell.call("PUT", "/config/" + kind, query={"directory": D, "mcpName": "a", "skillName": "a"},
                  body=json.dumps(body), headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "invalid_request")
    assert cell.sh("test -e %s" % D)["exitCode"] != 0


def test_bad_json_empty_body_content_type_and_size(d, cell):
    D = fresh_dir()
    q = {"directory": D, "mcpName": "a"}
    for raw in [b"{bad", b"", b'{"type":"local","command":"x","type":"remote"}',
                b'{"type":"local","command":"a\\u0000b"}']:
        r = cell.call("PUT", "/config/mcp", query=q, body=raw, headers={"Content-Type": "application/json"})
        assert_problem(r, 400, "invalid_request")
    for ct in [None, "text/plain"]:
        r = cell.call("PUT", "/config/mcp", query=q, body=b'{"type":"local","command":"x"}',
                      headers={"Content-Type": ct} if ct else {})
        assert r.status == 415 and r.body["type"].endswith(":invalid_request"), r
    big = {"type": "local", "command": "x", "args": ["a" * 1000] * 1100}
    assert_problem(cell.cfg("PUT", "mcp", D, "a", big), 413)
    assert cell.sh("test -e %s" % D)["exitCode"] != 0


# ---- what the cell planted ------------------------------------------------------------------

def test_invalid_planted_files_are_400(cell):
    D = fresh_dir()
    cfg = D + "/.sandbox-agent/config"
    for content, says in [("garbage", "invalid config file"), ("[1]", "expected a map"),
                          ('{"a":{"type":"bogus"}}', "invalid config file")]:
        cell.sh("mkdir -p %s && printf '%%s' '%s' > %s/mcp.json" % (cfg, content, cfg))
        for method in ("GET", "PUT", "DELETE"):
            r = cell.cfg(method, "mcp", D, "a", {"type": "local", "command": "x"} if method == "PUT" else None)
            assert_problem(r, 400, "invalid_request", says)
    # A directory that is a file: the reference's 502 for writes, 404 for reads.
    cell.sh("mkdir -p /files && echo hi > /files/f")
    assert_problem(cell.cfg("PUT", "mcp", "/files/f", "a", {"type": "local", "command": "x"}), 502, "stream_error",
                   "Not a directory")
    assert_problem(cell.cfg("GET", "mcp", "/files/f", "a"), 404, "session_not_found")


def test_huge_or_special_planted_files_are_bounded(cell):
    D = fresh_dir()
    cfg = D + "/.sandbox-agent/config"
    cell.sh("mkdir -p %s && head -c 6000000 /dev/zero | tr '\\0' ' ' > %s/mcp.json" % (cfg, cfg))
    assert_problem(cell.cfg("GET", "mcp", D, "a"), 413, "payload_too_large")
    for target in ["/dev/zero", "/dev/urandom"]:
        cell.sh("rm -f %s/mcp.json && ln -s %s %s/mcp.json" % (cfg, target, cfg))
        r = cell.cfg("GET", "mcp", D, "a")
        assert 400 <= r.status < 600 and r.status != 500, r
    cell.sh("rm -f %s/mcp.json && mkfifo %s/mcp.json" % (cfg, cfg))
    r = cell.cfg("GET", "mcp", D, "a")
    assert 400 <= r.status < 600 and r.status != 500, r


def test_planted_symlinks_never_leave_the_cell(cell, host_marker):
    marker, secret = host_marker
    hostdir = os.path.dirname(marker)
    before = sorted(os.listdir(hostdir))
    attempts = [
        # the config directory itself points at the host directory (absolute, via /proc, via ..)
        ("ln -s %s {cfg}" % hostdir, "mcp.json"),
        ("ln -s /proc/1/root%s {cfg}" % hostdir, "mcp.json"),
        ("ln -s /proc/self/root%s {cfg}" % hostdir, "mcp.json"),
        ("ln -s ../../../../../../../..%s {cfg}" % hostdir, "mcp.json"),
        # the file points at the host marker
        ("mkdir {cfg} && ln -s %s {cfg}/mcp.json" % marker, "mcp.json"),
        ("mkdir {cfg} && ln -s /proc/1/root%s {cfg}/mcp.json" % marker, "mcp.json"),
        ("mkdir {cfg} && ln -s /proc/1/root%s {cfg}/skills.json" % marker, "skills.json"),
        # the temporary file of the atomic write is planted too
        ("mkdir {cfg} && ln -s %s/planted {cfg}/.mcp.json.cell-tmp" % hostdir, "mcp.json"),
        # .sandbox-agent points at the host
        ("rmdir {base} 2>/dev/null; ln -s /proc/1/root%s {base}" % hostdir, "mcp.json"),
    ]
    for script, file in attempts:
        D = fresh_dir()
        base = D + "/.sandbox-agent"
        cfg = base + "/config"
        out = cell.sh(("mkdir -p %s && " % base) + script.format(cfg=cfg, base=base))
        assert out["exitCode"] == 0, (script, out)
        kind = "mcp" if file == "mcp.json" else "skills"
        body = {"type": "local", "command": "x"} if kind == "mcp" else {"sources": []}
        for method in ("GET", "PUT", "GET", "DELETE"):
            r = cell.cfg(method, kind, D, "a", body if method == "PUT" else None)
            assert r.status < 500 or r.status == 502, (script, method, r)
            assert secret.encode() not in r.raw, (script, method, r)
        with open(marker) as f:
            assert f.read() == secret, "a config write through %r changed the host file" % script
        assert sorted(os.listdir(hostdir)) == before, "a config write through %r created a host file" % script


# ---- tenants ------------------------------------------------------------------------------

def test_other_tenants_get_404(d, admin, cell):
    D = fresh_dir()
    assert cell.cfg("PUT", "mcp", D, "a", {"type": "local", "command": "secret-cmd"}).status == 204
    tok, _ = make_tenant_token(admin, "cfg-other-%s" % uuid.uuid4().hex[:6])
    other = d.client(token=tok, admin=False)
    stranger = Cell(other, cell.id)
    for kind, method in [("mcp", "GET"), ("mcp", "PUT"), ("mcp", "DELETE"), ("skills", "GET"), ("skills", "PUT"),
                         ("skills", "DELETE")]:
        body = {"type": "local", "command": "y"} if kind == "mcp" else {"sources": []}
        r = stranger.cfg(method, kind, D, "a", body if method == "PUT" else None)
        assert r.status == 404 and b"secret-cmd" not in r.raw, (kind, method, r)
    assert cell.cfg("GET", "mcp", D, "a").body == {"type": "local", "command": "secret-cmd", "args": []}
    # Their own cell, same directory: nothing there.
    mine = new_cell(other)
    try:
        assert_problem(mine.cfg("GET", "mcp", D, "a"), 404, "session_not_found")
    finally:
        other.delete("/v1/cells/%s" % mine.id)
    assert_problem(cell.c.call("GET", "/cells/c-0000000000000000/v1/config/mcp",
                               query={"directory": D, "mcpName": "a"}), 404)


def test_nul_in_any_query_parameter_is_refused(cell):
    """The sibling of the config routes' NUL check, for every route: a C
    string would cut "path=/etc/hostname%00.txt" to "/etc/hostname"."""
    cell.sh("echo planted > /root/nul-target")
    for method, path in [("GET", "/fs/file?path=/root/nul-target%00.txt"), ("GET", "/fs/stat?path=/root/nul-target%00x"),
                         ("GET", "/fs/entries?path=/root%00/x"), ("DELETE", "/fs/entry?path=/root/nul-target%00.bak"),
                         ("GET", "/processes?owner=user%00x"), ("GET", "/config/skills?directory=/w&skillName=a%00")]:
        r = cell.call(method, path)
        assert_problem(r, 400, "invalid_request", "NUL")
    assert cell.sh("cat /root/nul-target")["stdout"] == "planted\n"
    r = cell.c.call("GET", "/v1/cells?x=%00")
    assert_problem(r, 400, "invalid_request", "NUL")
