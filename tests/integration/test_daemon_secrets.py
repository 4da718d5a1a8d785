"""`cell serve`: /v1/secrets and `cell secret`: tenant-scoped, write-only values.

One daemon for the module.  Every value a test sends is remembered, and at
the end the audit log, the daemon's stdout/stderr and every API answer must
not contain any of them.
"""
import json
import os
import sqlite3
import stat
import subprocess
import uuid

import pytest

import daemon as dm
from daemon import CELL_BIN, assert_problem, make_tenant_token

MAX_VALUE = 64 * 1024
MAX_SECRETS = 8    # cell serve --limit secrets=
SENT = []          # every secret value sent to the daemon by this module


def value(tag="v"):
    v = "SECRETVALUE-%s-%s" % (tag, uuid.uuid4().hex)
    SENT.append(v)
    return v


def no_values_in(text, where):
    leaked = [v for v in SENT if v in text]
    assert not leaked, "secret values found in %s: %s" % (where, leaked)


def no_values_in_outputs(dd):
    no_values_in(dm._read(dd.stderr_path), "the daemon's stderr")
    no_values_in(dm._read(dd.stdout_path), "the daemon's stdout")
    no_values_in(dm._read(os.path.join(dd.state, "audit.log")), "audit.log")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("secrets"), ["--limit", "secrets=%d" % MAX_SECRETS],
                        after_stop=no_values_in_outputs)


@pytest.fixture(scope="module")
def alice(d, admin):
    return d.tenant("alice")


@pytest.fixture(scope="module")
def bob(d, admin):
    return d.tenant("bob")


def stored_value(d, tenant, name):
    """The value as the store holds it (read-only, from the test's side)."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.state, "cell.db"), uri=True)
    try:
        row = db.execute("SELECT value FROM secrets WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
    finally:
        db.close()
    return None if row is None else bytes(row[0])


SEAL_OVERHEAD = 12 + 16     # AES-256-GCM nonce and tag


def sealed_as(d, tenant, name, v):
    """The row holds v sealed: marked so, nonce + ciphertext + tag long, and
    without the value in it."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.state, "cell.db"), uri=True)
    try:
        row = db.execute("SELECT value, sealed FROM secrets WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
    finally:
        db.close()
    assert row is not None, (tenant, name)
    blob = bytes(row[0])
    return row[1] == 1 and len(blob) == len(v.encode()) + SEAL_OVERHEAD and v.encode()[:16] not in blob


def raw_state_files(d):
    """cell.db and its WAL as bytes, as someone who copies them would read them."""
    out = b""
    for f in ("cell.db", "cell.db-wal"):
        try:
            with open(os.path.join(d.state, f), "rb") as fh:
                out += fh.read()
        except FileNotFoundError:
            pass
    return out


def names(client):
    r = client.get("/v1/secrets")
    assert r.status == 200, r
    for v in SENT:
        assert v.encode() not in r.raw, r
    for s in r.body["secrets"]:
        assert set(s) == {"name", "createdAtMs"}, s
    return {s["name"]: s["createdAtMs"] for s in r.body["secrets"]}


def test_create_list_delete(d, alice):
    v = value("crud")
    r = alice.post("/v1/secrets", {"name": "OPENAI_API_KEY", "value": v})
    assert r.status == 201, r
    assert set(r.body) == {"name", "createdAtMs"}, r
    assert r.body["name"] == "OPENAI_API_KEY" and isinstance(r.body["createdAtMs"], int)
    assert v.encode() not in r.raw
    assert names(alice) == {"OPENAI_API_KEY": r.body["createdAtMs"]}
    assert sealed_as(d, "alice", "OPENAI_API_KEY", v)

    # Replacing keeps one entry with the new value.
    v2 = value("crud2")
    r2 = alice.post("/v1/secrets", {"name": "OPENAI_API_KEY", "value": v2})
    assert r2.status == 201, r2
    assert r2.body["createdAtMs"] >= r.body["createdAtMs"]
    assert list(names(alice)) == ["OPENAI_API_KEY"]
    assert sealed_as(d, "alice", "OPENAI_API_KEY", v2)

    r = alice.delete("/v1/secrets/OPENAI_API_KEY")
    assert r.status == 204, r
    assert names(alice) == {}
    assert stored_value(d, "alice", "OPENAI_API_KEY") is None
    assert_problem(alice.delete("/v1/secrets/OPENAI_API_KEY"), 404, "not_found")


def test_tenants_are_isolated(d, alice, bob, admin):
    va, vb = value("alice"), value("bob")
    assert alice.post("/v1/secrets", {"name": "shared.name", "value": va}).status == 201
    assert "shared.name" not in names(bob)
    assert "shared.name" not in names(admin)
    # bob can neither delete alice's secret nor overwrite it: his is his own.
    assert_problem(bob.delete("/v1/secrets/shared.name"), 404, "not_found")
    assert bob.post("/v1/secrets", {"name": "shared.name", "value": vb}).status == 201
    assert sealed_as(d, "alice", "shared.name", va)
    assert sealed_as(d, "bob", "shared.name", vb)
    assert alice.delete("/v1/secrets/shared.name").status == 204
    assert "shared.name" in names(bob)
    assert bob.delete("/v1/secrets/shared.name").status == 204


def test_needs_a_token(d):
    anon = d.client(admin=False)
    assert anon.get("/v1/secrets").status == 401
    assert anon.post("/v1/secrets", {"name": "x", "value": value("anon")}).status == 401
    assert anon.delete("/v1/secrets/x").status == 401


@pytest.mark.parametrize("name", ["", ".hidden", "-dash", "a/b", "a b", "x" * 64, "caf\u00e9", 7, None])
def test_bad_names(alice, name):
    body = {"value": value("badname")}
    if name is not None:
        body["name"] = name
    r = alice.post("/v1/secrets", body)
    assert_problem(r, 400, "invalid_request", "name")
    for v in SENT:
        assert v.encode() not in r.raw


def test_bad_values(alice):
    for body in ({"name": "k"}, {"name": "k", "value": ""}, {"name": "k", "value": 42},
                 {"name": "k", "value": ["a"]}, {"name": "k", "value": None}):
        assert_problem(alice.post("/v1/secrets", body), 400, "invalid_request", "value")
    assert_problem(alice.call("POST", "/v1/secrets", body="[]", headers={"Content-Type": "application/json"}), 422)
    assert_problem(alice.call("POST", "/v1/secrets", body=b"", headers={"Content-Type": "application/json"}), 400)
    assert "k" not in names(alice)


def test_malformed_json_does_not_echo_the_value(alice):
    v = value("malformed")
    for raw in ('{"name": "k", "value": "%s' % v, '{"name": "k", "value": %s}' % v,
                '{"name": "k", "value": "%s", "value": "%s"}' % (v, v)):
        r = alice.call("POST", "/v1/secrets", body=raw, headers={"Content-Type": "application/json"})
        assert_problem(r, 400, "invalid_request")
        assert v.encode() not in r.raw, r


def test_value_size_limit(d, alice):
    big = value("big")
    big += "x" * (MAX_VALUE - len(big))
    r = alice.post("/v1/secrets", {"name": "big", "value": big})
    assert r.status == 201, r
    assert sealed_as(d, "alice", "big", big)
    r = alice.post("/v1/secrets", {"name": "big", "value": big + "y"})
    assert r.status in (400, 413), r
    assert big.encode()[:64] not in r.raw
    # Far beyond the daemon's JSON limit: refused before the body is read.
    huge = value("huge") + "z" * (2 << 20)
    r = alice.post("/v1/secrets", {"name": "huge", "value": huge})
    assert r.status == 413, r
    assert sealed_as(d, "alice", "big", big)
    assert "huge" not in names(alice)
    assert alice.delete("/v1/secrets/big").status == 204


def test_delete_bad_name(alice):
    assert_problem(alice.delete("/v1/secrets/.hidden"), 400, "invalid_request")
    assert alice.delete("/v1/secrets/" + "x" * 70).status in (400, 404)


# ---- the CLI ----------------------------------------------------------------------------

def cli(d, token, *args, input=None):
    env = dict(os.environ)
    env["CELL_TOKEN"] = token
    env.pop("CELL_URL", None)
    argv = [CELL_BIN, "--state", d.state, "--url", "http://127.0.0.1:%d" % d.port] + list(args)
    return subprocess.run(argv, input=input, capture_output=True, env=env, timeout=60)


def test_cli_round_trip(d, admin, tmp_path):
    tok, _ = make_tenant_token(admin, "carol")
    carol = d.client(tok)
    v = value("cli")
    r = cli(d, tok, "secret", "set", "GITHUB_TOKEN", input=(v + "\n").encode())
    assert r.returncode == 0, r
    assert r.stdout.decode().strip() == "set secret GITHUB_TOKEN"
    assert v.encode() not in r.stdout + r.stderr
    assert sealed_as(d, "carol", "GITHUB_TOKEN", v)    # the newline is gone

    vf = value("file")
    f = tmp_path / "value.txt"
    f.write_text(vf + "\r\n")
    r = cli(d, tok, "secret", "set", "FROM_FILE", "--value-file", str(f))
    assert r.returncode == 0, r
    assert sealed_as(d, "carol", "FROM_FILE", vf)

    r = cli(d, tok, "secret", "ls")
    assert r.returncode == 0, r
    out = r.stdout.decode()
    assert "GITHUB_TOKEN" in out and "FROM_FILE" in out and out.startswith("NAME")
    no_values_in(out, "cell secret ls")
    r = cli(d, tok, "--json", "secret", "ls")
    assert r.returncode == 0, r
    listed = json.loads(r.stdout)["secrets"]
    assert sorted(s["name"] for s in listed) == ["FROM_FILE", "GITHUB_TOKEN"]
    no_values_in(r.stdout.decode(), "cell --json secret ls")
    assert sorted(names(carol)) == ["FROM_FILE", "GITHUB_TOKEN"]

    r = cli(d, tok, "secret", "rm", "GITHUB_TOKEN")
    assert r.returncode == 0, r
    assert r.stdout.decode().strip() == "removed secret GITHUB_TOKEN"
    r = cli(d, tok, "secret", "rm", "GITHUB_TOKEN")
    assert r.returncode == 1, r
    assert b"not found" in r.stderr.lower() or b"no secret" in r.stderr.lower(), r
    assert list(names(carol)) == ["FROM_FILE"]

    # Usage errors, found before the daemon is asked.
    assert cli(d, tok, "secret", "set", ".bad", input=b"x").returncode == 2
    assert cli(d, tok, "secret", "set", "EMPTY", input=b"\n").returncode == 2
    assert cli(d, tok, "secret", "set", "K", "--value", "oops").returncode == 2
    assert cli(d, tok, "secret", "set", "BIG", input=b"b" * (MAX_VALUE + 1)).returncode == 2
    assert cli(d, tok, "secret", "set", "NOFILE", "--value-file", str(tmp_path / "missing")).returncode == 2
    assert cli(d, tok, "secret", "frobnicate").returncode == 2
    assert cli(d, tok, "secret").returncode == 2
    r = cli(d, tok, "secret", "--help")
    assert r.returncode == 0 and b"usage: cell secret" in r.stdout
    assert list(names(carol)) == ["FROM_FILE"]
    assert carol.delete("/v1/secrets/FROM_FILE").status == 204


# ---- nothing leaked ---------------------------------------------------------------------

def test_audit_has_requests_but_no_values(d, admin, alice):
    v = value("audit")
    assert alice.post("/v1/secrets", {"name": "audited", "value": v}).status == 201
    assert alice.delete("/v1/secrets/audited").status == 204
    r = alice.get("/v1/audit", query={"limit": 1000})
    assert r.status == 200, r
    recs = [x for x in r.body["records"] if x.get("path", "").startswith("/v1/secrets")]
    assert any(x["method"] == "POST" and x["status"] == 201 for x in recs), recs
    assert any(x["method"] == "DELETE" and x["path"] == "/v1/secrets/audited" for x in recs), recs
    no_values_in(r.raw.decode(), "GET /v1/audit")
    audit = dm._read(os.path.join(d.state, "audit.log"))
    assert "/v1/secrets" in audit
    no_values_in(audit, "audit.log")
    no_values_in(d.stderr(), "the daemon's stderr")
    # The database holding them is private.
    assert stat.S_IMODE(os.stat(os.path.join(d.state, "cell.db")).st_mode) == 0o600


# ---- sealed at rest ---------------------------------------------------------------------

def test_values_are_sealed_at_rest(d, alice):
    """Someone who copies cell.db (and its WAL) gets no secret value: they
    are AES-256-GCM sealed under STATE/secrets.key (0600, outside the db)."""
    v = value("rest")
    assert alice.post("/v1/secrets", {"name": "AT_REST", "value": v}).status == 201
    assert v.encode() not in raw_state_files(d)
    assert sealed_as(d, "alice", "AT_REST", v)
    key = os.path.join(d.state, "secrets.key")
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32 and st.st_uid == os.geteuid()
    with open(key, "rb") as f:
        assert f.read() not in raw_state_files(d)
    assert alice.delete("/v1/secrets/AT_REST").status == 204


def _secret_daemon(tmp_path_factory, tag, extra=()):
    dd = dm.Daemon(tmp_path_factory.mktemp(tag), list(extra))
    dd.start()
    return dd


def _start_fails(dd, *words):
    with pytest.raises(RuntimeError) as e:
        dd.start(timeout=20)
    for w in words:
        assert w in str(e.value), str(e.value)[-2000:]


def test_wrong_or_missing_key_fails_closed(tmp_path_factory, tmp_path):
    dd = _secret_daemon(tmp_path_factory, "seckey")
    try:
        tok, _ = make_tenant_token(dd.client(), "kim")
        v = value("key")
        assert dd.client(tok).post("/v1/secrets", {"name": "K", "value": v}).status == 201
    finally:
        dd.stop()
    key = os.path.join(dd.state, "secrets.key")
    with open(key, "rb") as f:
        good = f.read()
    # Another key of the right size and mode: refused, not used to seal anew.
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    _start_fails(dd, "secrets key", "wrong key")
    # No key at all while sealed rows exist: refused, and no new key is made.
    os.unlink(key)
    _start_fails(dd, "secrets key", "missing")
    assert not os.path.exists(key)
    # A key others can read is refused too.
    other = tmp_path / "elsewhere.key"
    other.write_bytes(good)
    os.chmod(other, 0o644)
    dd.extra_args = ["--secrets-key-file", str(other)]
    _start_fails(dd, "chmod 600")
    # The right key, kept outside the state directory, works.
    os.chmod(other, 0o600)
    dd.start()
    try:
        r = dd.client(tok).get("/v1/secrets")
        assert r.status == 200 and [s["name"] for s in r.body["secrets"]] == ["K"], r
    finally:
        dd.stop()
        dd.check_sanitizer()
        no_values_in(dd.stderr(), "the daemon's stderr")


def test_plain_rows_are_sealed_on_start(tmp_path_factory):
    """Rows an older version stored in plain text are sealed when the daemon
    starts, and their plaintext leaves the database file and the WAL."""
    dd = _secret_daemon(tmp_path_factory, "secmig")
    try:
        tok, _ = make_tenant_token(dd.client(), "lee")
    finally:
        dd.stop()
    v = value("plain")
    db = sqlite3.connect(os.path.join(dd.state, "cell.db"))
    try:
        db.execute("INSERT INTO secrets (tenant, name, value, sealed, created) VALUES ('lee', 'OLD', ?, 0, 1)",
                   (v.encode(),))
        db.commit()
    finally:
        db.close()
    assert v.encode() in raw_state_files(dd)
    dd.start()
    try:
        assert sealed_as(dd, "lee", "OLD", v)
        assert v.encode() not in raw_state_files(dd)
        assert "sealed 1 secrets" in dd.stderr()
        assert [s["name"] for s in dd.client(tok).get("/v1/secrets").body["secrets"]] == ["OLD"]
    finally:
        dd.stop()
        dd.check_sanitizer()


def test_secret_count_is_bounded(d, admin):
    """A tenant cannot store secrets without end (each up to 64 KiB, all
    listed in one answer): --limit secrets caps them per tenant."""
    tok, _ = make_tenant_token(admin, "hoarder")
    c = d.client(tok)
    for i in range(MAX_SECRETS):
        assert c.post("/v1/secrets", {"name": "S%d" % i, "value": value("n")}).status == 201
    r = c.post("/v1/secrets", {"name": "ONE_MORE", "value": value("n")})
    b = assert_problem(r, 403, "quota_exceeded", "secrets")
    assert b["details"] == {"limit": "secrets", "ceiling": MAX_SECRETS}, b
    assert "ONE_MORE" not in names(c)
    # Replacing one is not a new one; after a delete there is room again.
    assert c.post("/v1/secrets", {"name": "S0", "value": value("n")}).status == 201
    assert c.delete("/v1/secrets/S1").status == 204
    assert c.post("/v1/secrets", {"name": "ONE_MORE", "value": value("n")}).status == 201
    # Other tenants have their own count.
    tok2, _ = make_tenant_token(admin, "frugal")
    assert d.client(tok2).post("/v1/secrets", {"name": "S0", "value": value("n")}).status == 201
    for n in list(names(c)):
        assert c.delete("/v1/secrets/%s" % n).status == 204
