"""`cell serve` killed with SIGKILL in the middle of work, then restarted on
the same state directory.

Before the crash: a lane holding files and a cell using it, a cell running a
long process, a buffered run in flight and a lane import half sent.  After
it: no cell process and no mount is left (cell-init dies with its daemon
link), and the restarted daemon lists the cells as stopped, starts them with
the lane's files intact, honours the old tokens, reads the old audit log,
forgets the half-imported lane and creates new cells.
"""
import io
import os
import tarfile
import threading
import time

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token, wait_for


def tar_bytes(n_files=50, size=4096):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n_files):
            ti = tarfile.TarInfo("f%03d" % i)
            ti.size = size
            tf.addfile(ti, io.BytesIO(b"x" * size))
    return buf.getvalue()


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Run the first daemon up to its kill -9; hand the state to the tests."""
    if os.geteuid() != 0:
        pytest.skip("cell serve tests must run as root")
    state = tmp_path_factory.mktemp("crash")
    d = dm.Daemon(state)
    d.start()
    info = {"state": state, "first": d}
    try:
        admin = d.client()
        tok, tid = make_tenant_token(admin, "crashy")
        info["tenant_token"] = tok
        t = d.client(tok)
        assert t.post("/v1/lanes", {"name": "keep"}).status == 201
        r = t.post("/v1/cells", {"lane": "keep", "resources": {"memory": "64M"}})
        assert r.status == 201, r
        lane_cell = r.body["id"]
        r = t.call("PUT", "/cells/%s/v1/fs/file?path=/root/keep.txt" % lane_cell, body=b"survives the crash\n")
        assert r.status == 200, r
        r = t.post("/cells/%s/v1/processes/run" % lane_cell,
                   {"command": "sh", "args": ["-c", "mkdir -p /srv/app && echo state > /srv/app/db && sync"]})
        assert r.status == 200 and r.body["exitCode"] == 0, r
        r = t.post("/v1/cells", {"resources": {"memory": "64M"}})
        assert r.status == 201, r
        busy_cell = r.body["id"]
        r = t.post("/cells/%s/v1/processes" % busy_cell, {"command": "sleep", "args": ["1000"]})
        assert r.status == 200, r
        info.update(lane_cell=lane_cell, busy_cell=busy_cell)

        # Work in flight: a buffered run ...
        inflight = {}

        def long_run():
            try:
                inflight["resp"] = t.post("/cells/%s/v1/processes/run" % busy_cell,
                                          {"command": "sh", "args": ["-c", "echo working; sleep 60"],
                                           "timeoutMs": 120000}, timeout=90)
            except Exception as e:  # the daemon dies under it
                inflight["error"] = e

        th = threading.Thread(target=long_run)
        th.start()
        # ... and a lane import whose body is half sent.
        body = tar_bytes()
        imp = t.conn(timeout=30)
        imp.putrequest("POST", "/v1/lanes/halfway/import")
        imp.putheader("Authorization", "Bearer " + tok)
        imp.putheader("Content-Type", "application/x-tar")
        imp.putheader("Content-Length", str(len(body)))
        imp.endheaders()
        imp.send(body[: len(body) // 2])

        def cmdline(pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    return f.read()
            except OSError:
                return b""

        def run_started():
            return any(cmdline(pid) == b"sleep\x0060\x00" for pid in dm.cell_pids_of_state(state))

        assert wait_for(run_started, 5, 0.05), "the in-flight run never started"
        time.sleep(0.3)
        info["pids_before"] = dm.cell_pids_of_state(state)
        d.kill9()
        th.join(30)
        imp.close()
        info["inflight"] = inflight
        yield info
    finally:
        d.kill9()


@pytest.fixture(scope="module")
def restarted(crashed):
    # No warm pool in the restarted daemon: the tests below count every
    # cell process as one started behind the client's back.  The crashed
    # one had its default pool, whose cells died with it too.
    d = dm.Daemon(crashed["state"], ["--warm", "0"])
    d.start()
    yield d
    try:
        d.stop()
    finally:
        d.check_sanitizer()
        crashed["first"].check_sanitizer()


def test_cells_were_running_before_the_crash(crashed):
    assert len(crashed["pids_before"]) >= 4, "expected two cell inits, sleep 1000 and the run: %s" % crashed["pids_before"]


def test_in_flight_request_failed_with_the_daemon(crashed):
    inflight = crashed["inflight"]
    assert "resp" not in inflight, "a run answered although the daemon was killed: %r" % inflight.get("resp")
    assert isinstance(inflight.get("error"), (OSError, Exception)), inflight


def test_no_cell_process_survives_the_daemon(crashed):
    state = crashed["state"]
    left = wait_for(lambda: not dm.cell_pids_of_state(state), 10, 0.1)
    assert left, "cell processes outlived the killed daemon: %s" % [
        (pid, open("/proc/%d/cmdline" % pid, "rb").read()) for pid in dm.cell_pids_of_state(state)]


def test_no_mounts_left_after_the_crash(crashed):
    assert not dm.mounts_under(crashed["state"]), dm.mounts_under(crashed["state"])


def test_restart_lists_cells_as_stopped(crashed, restarted):
    t = restarted.client(crashed["tenant_token"])
    r = t.get("/v1/cells")
    assert r.status == 200, r
    states = {c["id"]: c["state"] for c in r.body["cells"]}
    assert states == {crashed["lane_cell"]: "stopped", crashed["busy_cell"]: "stopped"}, states
    assert_problem(t.get("/cells/%s/v1/health" % crashed["busy_cell"]), 409, "cell_stopped")
    # Nothing was started behind our back.
    assert not dm.cell_pids_of_state(crashed["state"])


def test_old_tokens_still_work(crashed, restarted):
    admin = restarted.client()
    assert admin.get("/v1/tokens").status == 200
    t = restarted.client(crashed["tenant_token"])
    assert t.get("/v1/tenants/crashy").status == 200


def test_lane_files_intact_after_start(crashed, restarted):
    t = restarted.client(crashed["tenant_token"])
    cid = crashed["lane_cell"]
    r = t.post("/v1/cells/%s/start" % cid)
    assert r.status == 200 and r.body["state"] == "running", r
    g = t.get("/cells/%s/v1/fs/file?path=/root/keep.txt" % cid)
    assert g.status == 200 and g.raw == b"survives the crash\n", g
    r = t.post("/cells/%s/v1/processes/run" % cid, {"command": "cat", "args": ["/srv/app/db"]})
    assert r.status == 200 and r.body["stdout"] == "state\n", r
    lane = t.get("/v1/lanes/keep")
    assert lane.status == 200 and lane.body["attached"] is True, lane
    assert t.post("/v1/cells/%s/stop" % cid).status == 200


def test_busy_cell_starts_clean(crashed, restarted):
    t = restarted.client(crashed["tenant_token"])
    cid = crashed["busy_cell"]
    assert t.post("/v1/cells/%s/start" % cid).status == 200
    r = t.get("/cells/%s/v1/processes" % cid)
    assert r.status == 200 and r.body == {"processes": []}, r
    r = t.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c", "pgrep -c sleep || true"]})
    assert r.status == 200 and r.body["stdout"].strip() in ("0", ""), r


def test_half_imported_lane_is_gone(crashed, restarted):
    t = restarted.client(crashed["tenant_token"])
    assert_problem(t.get("/v1/lanes/halfway"), 404, "not_found")
    assert [l["name"] for l in t.get("/v1/lanes").body["lanes"]] == ["keep"]
    r = t.post("/v1/lanes", {"name": "halfway"})
    assert r.status == 201, r
    assert t.delete("/v1/lanes/halfway").status == 204


def test_audit_log_readable_after_crash(crashed, restarted):
    t = restarted.client(crashed["tenant_token"])
    r = t.get("/v1/audit?limit=10000")
    assert r.status == 200, r
    recs = r.body["records"]
    created = [x for x in recs if x.get("kind") == "cell" and x.get("event") == "created"]
    assert {x["cell"] for x in created} >= {crashed["lane_cell"], crashed["busy_cell"]}, created
    started = [x for x in recs if x.get("kind") == "process" and x.get("event") == "started"]
    assert started, "the process start before the crash is not in the audit log"
    assert all(x["tenant"] == "crashy" for x in recs)


def test_new_cells_work_after_restart(crashed, restarted):
    t = restarted.client(crashed["tenant_token"])
    r = t.post("/v1/cells", {"resources": {"memory": "64M"}})
    assert r.status == 201 and r.body["state"] == "running", r
    cid = r.body["id"]
    try:
        r = t.post("/cells/%s/v1/processes/run" % cid, {"command": "echo", "args": ["fresh"]})
        assert r.status == 200 and r.body["stdout"] == "fresh\n", r
        # The lane can be used by a second cell once the first is deleted.
        assert_problem(t.delete("/v1/lanes/keep"), 409, "conflict")
    finally:
        assert t.delete("/v1/cells/%s" % cid).status == 204
    assert t.delete("/v1/cells/%s" % crashed["lane_cell"]).status == 204
    assert t.delete("/v1/lanes/keep").status == 204
