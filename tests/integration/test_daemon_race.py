"""`cell serve`: lifecycle races on the same cells.

Several client threads of one tenant race create/start/stop/delete against
exec (buffered runs, long-running processes), process kill/delete and fs
calls on a small set of cells, for a bounded number of rounds.  The attack
is the one the review found: a start racing a delete left a cell running
that nobody could list, delete or count (and a use-after-free in the
daemon's watcher thread).  Afterwards:

- every response was a documented status (no 5xx but the per-cell plane's
  502 for an OS error inside a cell that was halted under it);
- the cell list, GET of each id, the tenant's quota usage and what runs on
  the host agree: no orphan cell processes, one running libcell cell per
  listed running cell;
- after deleting what is left: no cell process, mount, run directory or
  cgroup of any cell this daemon booted;
- the daemon's stderr has no sanitizer report (ASan, UBSan, TSan builds).
"""
import os
import json
import random
import socket
import threading
import time
import uuid

import pytest

import conftest
import daemon as dm
from daemon import make_tenant_token, recv_to_close, wait_for
from ocibuild import CONFIG, busybox_base, oci_archive

ROUNDS = int(os.environ.get("CELL_RACE_ROUNDS", "40"))
THREADS = 6
CELLS = 3
MAX_CELLS = 4

# Documented answers per operation (docs/api.md); anything else fails the test.
ALLOWED = {
    "create": {201, 403, 409},          # 403: quota "cells"; 409: boot refused (shutting down)
    "start": {200, 404, 409},           # 409 conflict: running, booting, stopping
    "stop": {200, 404, 409},
    "delete": {204, 404, 409},
    "get": {200, 404},
    "list": {200},
    "run": {200, 404, 409, 502},        # 409 cell_stopped; 502: the cell halted under the call
    "spawn": {200, 404, 409, 502},
    "procs": {200, 404, 409},
    "kill": {200, 404, 409, 502},
    "pdelete": {204, 404, 409},
    "fs": {200, 204, 400, 404, 409, 502},  # 400: deleting a path that is not there (sandbox-agent's answer)
}


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    # No warm pool: its ready cells are libcell cells no listed cell owns,
    # and this module accounts every cell process to a listed cell
    # (test_daemon_pool.py races for pooled cells).
    yield from dm.serve(tmp_path_factory.mktemp("race"), ["--warm", "0"])


def run_dir_ids(d):
    try:
        return {e for e in os.listdir(os.path.join(d.state, "run", "cells")) if not e.startswith(".")}
    except FileNotFoundError:
        return set()


def libcell_ids_of_pids(d, pids):
    """The libcell cell ids whose processes these are (their mounts name STATE/run/cells/ID)."""
    marker = os.path.join(d.state, "run", "cells") + "/"
    ids = set()
    for pid in pids:
        for line in dm._read("/proc/%d/mountinfo" % pid).splitlines():
            i = line.find(marker)
            if i >= 0:
                ids.add(line[i + len(marker):].split("/")[0].split(" ")[0])
    return ids


class Racer:
    def __init__(self, d, client, tenant):
        self.d, self.c, self.tenant = d, client, tenant
        self.ids = []               # every cell id created, live or not
        self.lock = threading.Lock()
        self.bad = []
        self.seen = {}              # (op, status) -> count
        self.libcell_ids = set()    # every run dir seen while racing
        self.stop_sampling = threading.Event()

    def note(self, op, r):
        with self.lock:
            self.seen[(op, r.status)] = self.seen.get((op, r.status), 0) + 1
            if r.status not in ALLOWED[op]:
                self.bad.append((op, r.status, r.body))

    def pick(self, rnd):
        with self.lock:
            return rnd.choice(self.ids[-CELLS:]) if self.ids else None

    def create(self):
        r = self.c.post("/v1/cells", {"resources": {"memory": "32M"}})
        self.note("create", r)
        if r.status == 201:
            with self.lock:
                self.ids.append(r.body["id"])

    def step(self, rnd):
        cid = self.pick(rnd)
        if cid is None or rnd.random() < 0.08:
            return self.create()
        base = "/cells/%s/v1" % cid
        op = rnd.choice(["start", "start", "stop", "delete", "get", "list", "run", "spawn", "procs",
                         "kill", "fs", "fs"])
        c = self.c
        if op == "start":
            r = c.post("/v1/cells/%s/start" % cid)
        elif op == "stop":
            r = c.post("/v1/cells/%s/stop" % cid)
        elif op == "delete":
            r = c.delete("/v1/cells/%s" % cid)
        elif op == "get":
            r = c.get("/v1/cells/%s" % cid)
        elif op == "list":
            r = c.get("/v1/cells")
        elif op == "run":
            r = c.post(base + "/processes/run", {"command": "sh", "args": ["-c", "echo hi; sleep 0.05"]})
        elif op == "spawn":
            r = c.post(base + "/processes", {"command": "sleep", "args": ["30"]})
        elif op == "procs":
            r = c.get(base + "/processes")
        elif op == "kill":
            r = c.get(base + "/processes")
            if r.status == 200 and r.body.get("processes"):
                p = rnd.choice(r.body["processes"])["id"]
                if rnd.random() < 0.5:
                    r = c.post(base + "/processes/%s/kill" % p)
                else:
                    op = "pdelete"
                    r = c.delete(base + "/processes/%s" % p)
            else:
                op = "procs"
        else:
            path = "/root/f%d" % rnd.randrange(3)
            k = rnd.randrange(3)
            if k == 0:
                r = c.call("PUT", base + "/fs/file", body=b"x" * 100, query={"path": path})
            elif k == 1:
                r = c.get(base + "/fs/entries", query={"path": "/root"})
            else:
                r = c.call("DELETE", base + "/fs/entry", query={"path": path})
        self.note(op, r)

    def worker(self, seed):
        rnd = random.Random(seed)
        for _ in range(ROUNDS):
            self.step(rnd)

    def sampler(self):
        while not self.stop_sampling.wait(0.02):
            self.libcell_ids |= run_dir_ids(self.d)


def cgroups_of(ids):
    return sorted(p for p in conftest.cell_cgroup_dirs() if os.path.basename(p) in ids)


def test_lifecycle_race(d):
    admin = d.client()
    tenant = "race-" + uuid.uuid4().hex[:6]
    tok, _ = make_tenant_token(admin, tenant)
    assert admin.put("/v1/tenants/%s" % tenant, {"maxCells": MAX_CELLS}).status == 200
    racer = Racer(d, d.client(tok), tenant)
    for _ in range(CELLS):
        racer.create()
    sampler = threading.Thread(target=racer.sampler)
    sampler.start()
    threads = [threading.Thread(target=racer.worker, args=(seed,)) for seed in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    racer.stop_sampling.set()
    sampler.join()
    assert not racer.bad, "undocumented answers: %r (all: %r)" % (racer.bad[:10], racer.seen)

    # What the daemon says exists ...
    c = racer.c
    listed = {x["id"]: x for x in c.get("/v1/cells").body["cells"]}
    for cid in racer.ids:
        r = c.get("/v1/cells/%s" % cid)
        assert r.status == (200 if cid in listed else 404), (cid, r)
        if r.status == 200:
            assert r.body["state"] in ("running", "stopped"), r.body
    assert set(listed) <= set(racer.ids)
    usage = admin.get("/v1/tenants/%s" % tenant).body["usage"]
    assert usage["cells"] == len(listed), (usage, listed)
    assert usage["memory"] == sum(x["resources"]["memory"] for x in listed.values()), (usage, listed)

    # ... is what runs: one libcell cell per running listed cell, no orphan.
    running = [x for x in listed.values() if x["state"] == "running"]
    assert len(run_dir_ids(d)) == len(running), (run_dir_ids(d), listed)
    live = libcell_ids_of_pids(d, dm.cell_pids_of_state(d.state))
    assert live <= run_dir_ids(d), (live, run_dir_ids(d))

    # Deleting what is left leaves nothing behind.
    for cid in listed:
        assert c.delete("/v1/cells/%s" % cid).status == 204
    assert c.get("/v1/cells").body["cells"] == []
    assert admin.get("/v1/tenants/%s" % tenant).body["usage"]["cells"] == 0
    wait_for(lambda: not d.leftovers() and not run_dir_ids(d), 10, 0.1)
    assert not d.leftovers(), d.leftovers()
    assert not run_dir_ids(d)
    assert racer.libcell_ids, "the sampler never saw a running cell"
    assert not cgroups_of(racer.libcell_ids), cgroups_of(racer.libcell_ids)
    d.check_sanitizer()


def raw_requests(d, token, reqs, gap, full=False):
    """Send several requests on connections opened beforehand, `gap` seconds
    apart (busy-waited), and return their statuses (full: (status, headers
    and body) bytes): requests that arrive within microseconds of each
    other, which Python threads cannot do."""
    socks = []
    for method, path, body in reqs:
        body = json.dumps(body).encode() if body is not None else b""
        s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
        data = ("%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, token, len(body))).encode() + body
        socks.append((s, data))
    for i, (s, data) in enumerate(socks):
        if i:
            until = time.perf_counter() + gap
            while time.perf_counter() < until:
                pass
        s.sendall(data)
    out = []
    for s, _ in socks:
        buf = recv_to_close(s)
        out.append((int(buf.split(b" ", 2)[1]), buf) if full else int(buf.split(b" ", 2)[1]))
    return out


def test_delete_during_start_leaves_nothing(d):
    """The reproduction: a start and a delete of the same stopped cell arrive
    together, microseconds apart, in both orders; half the rounds behind a
    policy change, which holds the cell's control-channel lock for an fsync
    so that the start and the delete queue up on it.  Afterwards the cell is
    gone and nothing of it runs."""
    admin = d.client()
    rnd = random.Random(1)
    bad = []
    policy = {"rules": [{"tcp": {"to": "127.0.0.1", "ports": 7}}]}
    for i in range(ROUNDS):
        r = admin.post("/v1/cells", {"resources": {"memory": "32M"}})
        assert r.status == 201, r
        cid = r.body["id"]
        assert admin.post("/v1/cells/%s/stop" % cid).status == 200
        names = ["start", "delete"] if i % 2 == 0 else ["delete", "start"]
        reqs = {"start": ("POST", "/v1/cells/%s/start" % cid, None), "delete": ("DELETE", "/v1/cells/%s" % cid, None)}
        reqs = [reqs[n] for n in names]
        if i % 4 >= 2:
            names.insert(0, "policy")
            reqs.insert(0, ("PUT", "/v1/cells/%s/policy" % cid, policy))
        st = dict(zip(names, raw_requests(d, d.admin_token, reqs, rnd.random() * 0.0005)))
        if st["start"] not in (200, 404, 409) or st["delete"] != 204 or st.get("policy", 200) not in (200, 404):
            bad.append((cid, st))
        assert admin.get("/v1/cells/%s" % cid).status == 404
        assert cid not in [x["id"] for x in admin.get("/v1/cells").body["cells"]]
        # Nothing of it may run: an orphan would stay for good.
        wait_for(lambda: not dm.cell_pids_of_state(d.state) and not run_dir_ids(d), 5, 0.05)
        assert not dm.cell_pids_of_state(d.state), (cid, st, "orphan cell processes")
        assert not run_dir_ids(d), (cid, st, "orphan cell", run_dir_ids(d))
    assert not bad, bad
    assert not d.leftovers(), d.leftovers()
    d.check_sanitizer()


def test_transitional_state_is_a_409_naming_it(d):
    """A start while the cell boots or stops answers 409 conflict whose details name the state."""
    admin = d.client()
    cid = admin.post("/v1/cells", {"resources": {"memory": "32M"}}).body["id"]
    assert admin.post("/v1/cells/%s/stop" % cid).status == 200
    seen = []
    t = threading.Thread(target=lambda: seen.append(admin.post("/v1/cells/%s/start" % cid)))
    t.start()
    for _ in range(50):
        r = admin.post("/v1/cells/%s/start" % cid)
        seen.append(r)
        if r.status == 409:
            break
    t.join()
    for r in seen:
        assert r.status in (200, 409), r
        if r.status == 409:
            assert r.body["type"].endswith(":conflict"), r.body
            assert r.body["details"]["state"] in ("booting", "running"), r.body
            assert r.body["details"]["state"] in r.body["detail"] or "already running" in r.body["detail"], r.body
    assert sum(r.status == 200 for r in seen) == 1, seen
    assert admin.delete("/v1/cells/%s" % cid).status == 204
    d.check_sanitizer()


def test_process_delete_and_kill_race_exit(d):
    """Two DELETEs of one exited process arrive together: exactly one wins
    (the loser used to drop the table's reference a second time and free the
    process under the winner); kills race the process's own exit."""
    admin = d.client()
    tok = d.admin_token
    cid = admin.post("/v1/cells", {"resources": {"memory": "32M"}}).body["id"]
    base = "/cells/%s/v1/processes" % cid
    rnd = random.Random(2)
    for i in range(ROUNDS):
        p = admin.post(base, {"command": "sh", "args": ["-c", "exit 3"]}).body["id"]
        assert wait_for(lambda: admin.get(base + "/" + p).body.get("status") == "exited", 10)
        st = raw_requests(d, tok, [("DELETE", "%s/%s" % (base, p), None)] * 2, rnd.random() * 0.0002)
        assert sorted(st) == [204, 404], (p, st)
        p = admin.post(base, {"command": "sleep", "args": ["0.0%d" % (i % 10)]}).body["id"]
        st = raw_requests(d, tok, [("POST", "%s/%s/kill?waitMs=5000" % (base, p), None),
                                   ("DELETE", "%s/%s" % (base, p), None)], rnd.random() * 0.01)
        # The kill waits for the exit; a delete that got there first after
        # the exit makes it a 404.
        assert st in ([200, 204], [200, 409], [404, 204]), (p, st)
    assert admin.delete("/v1/cells/%s" % cid).status == 204
    d.check_sanitizer()


def test_lane_delete_racing_a_cell_create_on_it(d):
    """A lane delete and a create of a cell on that lane arrive together:
    either the cell exists on a lane that still exists (the delete is a 409
    naming it), or the lane is gone and no cell was made on it, or both
    saw each other and backed off (two 409s); never a cell on a lane that
    is gone."""
    admin = d.client()
    tok = d.admin_token
    rnd = random.Random(3)
    for i in range(max(4, ROUNDS // 4)):
        name = "race-%d-%s" % (i, uuid.uuid4().hex[:6])
        r = admin.post("/v1/lanes", {"name": name, "image": "host", "size": "64M"})
        assert r.status == 201, r
        reqs = [("POST", "/v1/cells", {"lane": name, "resources": {"memory": "32M"}}),
                ("DELETE", "/v1/lanes/%s" % name, None)]
        if i % 2:
            reqs.reverse()
        st = dict(zip([m for m, _, _ in reqs], raw_requests(d, tok, reqs, rnd.random() * 0.001)))
        cells = [x for x in admin.get("/v1/cells").body["cells"] if x.get("lane") == name]
        lane = admin.get("/v1/lanes/%s" % name)
        if st["POST"] == 201:
            assert st["DELETE"] == 409 and lane.status == 200 and len(cells) == 1, (st, lane, cells)
            assert admin.delete("/v1/cells/%s" % cells[0]["id"]).status == 204
            assert admin.delete("/v1/lanes/%s" % name).status == 204
        elif st["DELETE"] == 204:
            assert st["POST"] in (404, 409), st
            assert lane.status == 404 and not cells, (lane, cells)
        else:
            # Each saw the other and backed off: no cell, the lane stays.
            assert st == {"POST": 409, "DELETE": 409}, st
            assert lane.status == 200 and not cells, (lane, cells)
            assert admin.delete("/v1/lanes/%s" % name).status == 204
    wait_for(lambda: not d.leftovers() and not run_dir_ids(d), 10, 0.1)
    assert not d.leftovers(), d.leftovers()
    d.check_sanitizer()


def assert_one_winner(answers, won, what):
    """Exactly one status `won`; every other a 404 not_found problem naming
    `what` (not the daemon's internal lane id)."""
    assert sorted(st for st, _ in answers) == [won] + [404] * (len(answers) - 1), (what, answers)
    for st, raw in answers:
        if st == 404:
            assert b"application/problem+json" in raw and b":not_found" in raw, (what, raw)
            assert what.encode() in raw.split(b"\r\n\r\n", 1)[1], (what, raw)


DELETERS = 8


def deletes(d, path, n=DELETERS):
    """n DELETEs of path arriving together (connections opened first)."""
    return raw_requests(d, d.admin_token, [("DELETE", path, None)] * n, 0, full=True)


def test_concurrent_deletes_of_one_lane_one_wins(d):
    """DELETERS DELETEs of one lane at once, in a loop: exactly one 204, the
    others 404 problems (several answered 204: each moved the lane to
    "deleting" unconditionally after finding it ready); the lane is gone."""
    admin = d.client()
    for i in range(max(4, ROUNDS // 2)):
        name = "del-%d-%s" % (i, uuid.uuid4().hex[:6])
        assert admin.post("/v1/lanes", {"name": name, "image": "host", "size": "16M"}).status == 201
        assert_one_winner(deletes(d, "/v1/lanes/%s" % name), 204, name)
        assert admin.get("/v1/lanes/%s" % name).status == 404
        assert name not in [x["name"] for x in admin.get("/v1/lanes").body["lanes"]]
    d.check_sanitizer()


def test_concurrent_deletes_of_a_used_lane_and_of_secrets(d):
    """A lane a cell uses: every one of the concurrent DELETEs is the 409
    naming the cell (none a 404 for a lane that stays), and after the
    cell's delete exactly one wins.  Secrets: one DELETE statement decides."""
    admin = d.client()
    name = "used-" + uuid.uuid4().hex[:6]
    assert admin.post("/v1/lanes", {"name": name, "image": "host", "size": "16M"}).status == 201
    cid = admin.post("/v1/cells", {"lane": name, "resources": {"memory": "32M"}}).body["id"]
    for _ in range(4):
        rs = deletes(d, "/v1/lanes/%s" % name)
        assert all(st == 409 and ("used by cell %s" % cid).encode() in raw for st, raw in rs), rs
        assert admin.get("/v1/lanes/%s" % name).status == 200
    assert admin.delete("/v1/cells/%s" % cid).status == 204
    assert_one_winner(deletes(d, "/v1/lanes/%s" % name), 204, name)
    for i in range(max(4, ROUNDS // 4)):
        assert admin.post("/v1/secrets", {"name": "s%d" % i, "value": "v"}).status in (200, 201)
        assert_one_winner(deletes(d, "/v1/secrets/s%d" % i), 204, "s%d" % i)
    d.check_sanitizer()


def test_concurrent_revokes_of_one_token_one_wins(d):
    """DELETERS revokes of one token at once: exactly one 204, the others
    404 problems naming it (each answered 204 and audited "revoked_token":
    the revoke set revoked = 1 whether it was or not); a later revoke is a
    404 too, and the audit has one "revoked_token" of it among the records
    of every one of those requests."""
    admin = d.client()
    since = int(time.time() * 1000) - 1
    tok, tid = make_tenant_token(admin, "rv-" + uuid.uuid4().hex[:6])
    assert d.client(tok).get("/v1/cells").status == 200
    assert_one_winner(deletes(d, "/v1/tokens/%s" % tid), 204, tid)
    assert_one_winner([(st, raw) for st, raw in raw_requests(d, d.admin_token, [("DELETE", "/v1/tokens/%s" % tid,
                                                                                   None)], 0, full=True)], 404, tid)
    assert d.client(tok).get("/v1/cells").status == 401
    assert [t["revoked"] for t in admin.get("/v1/tokens").body["tokens"] if t["id"] == tid] == [True]

    def records():
        # A request's record is written when it completes, which can be
        # after its answer: wait for all DELETERS + 1 of them.
        r = admin.get("/v1/audit", query={"since": since, "limit": 1000})
        assert r.status == 200, r
        mine = [x for x in r.body["records"] if x.get("kind") == "request" and x.get("method") == "DELETE"
                and x.get("path") == "/v1/tokens/%s" % tid]
        return mine if len(mine) == DELETERS + 1 else None
    recs = wait_for(records)
    assert recs, "the audit lacks records of the revokes"
    assert sorted(x["status"] for x in recs) == [204] + [404] * DELETERS, recs
    assert [x["status"] for x in recs if x.get("revoked_token") == tid] == [204], recs
    d.check_sanitizer()


def test_concurrent_deletes_of_one_cell_and_one_image_one_wins(d):
    """The same for a cell and for an imported image: one 204 (image: 200),
    the others 404 problems naming it; the next DELETE a 404."""
    admin = d.client()
    for _ in range(3):
        cid = admin.post("/v1/cells", {"resources": {"memory": "32M"}}).body["id"]
        assert_one_winner(deletes(d, "/v1/cells/%s" % cid), 204, cid)
        assert admin.get("/v1/cells/%s" % cid).status == 404
        assert admin.delete("/v1/cells/%s" % cid).status == 404
    data = oci_archive([busybox_base()], CONFIG)[0]
    for _ in range(3):
        image = "rm-" + uuid.uuid4().hex[:6]
        r = admin.call("POST", "/v1/images/%s/import" % image, body=data, headers={"Content-Type": "application/x-tar"})
        assert r.status == 201, r
        assert_one_winner(deletes(d, "/v1/images/%s" % image), 200, image)
        assert admin.delete("/v1/images/%s" % image).status == 404
    d.check_sanitizer()
