"""`cell serve`: the create path under concurrency and across a crash.

- Many threads POST /v1/cells at the same moment: every create that is
  answered 201 has its own id and its own uid range (read from inside each
  cell, /proc/self/uid_map), and deleting them all at once leaves nothing.
- SIGKILL right after answers (docs/architecture.md, "The store after a
  crash"): a cell answered 201 is in the store and listed as stopped after
  the restart, and can be started again; a cell answered 204 stays gone;
  cell.db passes SQLite's integrity check.  The cell state is written
  without waiting for the disk (store_cell_set_state), so a kill right
  after a create or a stop is the case that would show a lost write.
"""
import os
import sqlite3
import threading

import pytest

import daemon as dm
from daemon import make_tenant_token

THREADS = 12


def uid_base(client, cid):
    r = client.post("/cells/%s/v1/processes/run" % cid, {"command": "cat", "args": ["/proc/self/uid_map"]})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    lines = [l.split() for l in r.body["stdout"].splitlines() if l.strip()]
    assert len(lines) == 1, r.body["stdout"]
    inside, outside, count = (int(x) for x in lines[0])
    assert inside == 0
    return outside, count


def parallel(n, fn):
    out, errors = [None] * n, []
    start = threading.Barrier(n)

    def one(i):
        try:
            start.wait(30)
            out[i] = fn(i)
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def test_concurrent_creates_get_distinct_ids_and_uid_ranges(tmp_path):
    with dm.served(tmp_path / "d") as d:
        admin = d.client()
        tok, _ = make_tenant_token(admin, "racers")
        assert admin.put("/v1/tenants/racers", {"maxCells": THREADS + 4, "maxMemory": "4G"}).status == 200
        c = d.client(tok)
        created = parallel(THREADS, lambda i: c.post("/v1/cells", {"resources": {"memory": "64M"}}))
        assert all(r.status == 201 for r in created), [r for r in created if r.status != 201]
        ids = [r.body["id"] for r in created]
        assert len(set(ids)) == THREADS, ids
        listed = {x["id"] for x in c.get("/v1/cells").body["cells"]}
        assert listed == set(ids)
        ranges = sorted(uid_base(c, cid) for cid in ids)
        assert len({base for base, _ in ranges}) == THREADS, ranges
        for (b1, n1), (b2, _) in zip(ranges, ranges[1:]):
            assert b1 + n1 <= b2, "uid ranges overlap: %s" % ranges
        # The host's uids are not in any cell's range.
        assert all(base >= 65536 for base, _ in ranges), ranges
        deleted = parallel(THREADS, lambda i: c.delete("/v1/cells/%s" % ids[i]))
        assert all(r.status == 204 for r in deleted), deleted
        assert c.get("/v1/cells").body["cells"] == []


def db_cells(state):
    """The cells table as a fresh reader sees it after the crash (it also
    replays the WAL), and SQLite's verdict on the file."""
    db = sqlite3.connect(os.path.join(str(state), "cell.db"))
    try:
        check = db.execute("PRAGMA integrity_check").fetchall()
        rows = dict(db.execute("SELECT id, state FROM cells").fetchall())
    finally:
        db.close()
    return check, rows


def test_answers_given_before_a_kill_hold_after_the_restart(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("cell serve tests must run as root")
    state = tmp_path / "crash"
    first = dm.Daemon(state)
    first.start()
    try:
        c = first.client()
        ids = []
        for _ in range(3):
            r = c.post("/v1/cells", {"resources": {"memory": "64M"}})
            assert r.status == 201, r
            ids.append(r.body["id"])
        gone, stopped, last = ids
        assert c.delete("/v1/cells/%s" % gone).status == 204
        assert c.post("/v1/cells/%s/stop" % stopped).status == 200
        r = c.post("/v1/cells", {"resources": {"memory": "64M"}})
        assert r.status == 201, r
        ids.append(r.body["id"])
        first.kill9()                  # right after the 201: nothing ran in between
    finally:
        first.kill9()
    first.check_sanitizer()
    check, rows = db_cells(state)
    assert check == [("ok",)], check
    assert gone not in rows
    assert set(rows) == set(ids[1:]), rows
    second = dm.Daemon(state)
    second.start()
    try:
        c = second.client()
        listed = {x["id"]: x["state"] for x in c.get("/v1/cells").body["cells"]}
        assert listed == {cid: "stopped" for cid in ids[1:]}, listed
        assert c.get("/v1/cells/%s" % gone).status == 404
        newest = ids[-1]
        r = c.post("/v1/cells/%s/start" % newest)
        assert r.status == 200 and r.body["state"] == "running", r
        r = c.post("/cells/%s/v1/processes/run" % newest, {"command": "true"})
        assert r.status == 200 and r.body["exitCode"] == 0, r
        for cid in ids[1:]:
            assert c.delete("/v1/cells/%s" % cid).status == 204
        assert c.get("/v1/cells").body["cells"] == []
    finally:
        try:
            second.stop()
        finally:
            second.check_sanitizer()
    check, rows = db_cells(state)
    assert check == [("ok",)] and rows == {}, (check, rows)
