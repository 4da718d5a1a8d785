"""The runs API (POST /v1/runs and the routes under it, docs/api.md "Runs"):
what runs.c answers, tried by breaking it.

    bad input          malformed and non-object JSON, a body over the JSON
                       limit, every field missing, unknown or of the wrong
                       type (the problem names the field), traversal in
                       upload ids, artifact names and run ids
    repo.path          a tenant's path outside every --run-repo-root, or
                       through a link that leads out of one: 403
    tenants            every route with another tenant's run id: 404 like an
                       unknown id; lists hold only the caller's
    uploads            content type, empty body, eight pending, one run per
                       upload, another tenant's upload
    events             replay after Last-Event-ID, ?follow=false, bad ids
    delete             concurrent DELETEs of a finished run (one 204) and of
                       an active one (all 202, it ends canceled)
    limits             the ninth active run of a tenant: 429
    permissions        unknown request ids, bad decisions, concurrent answers
                       to one request (one 204, the rest 409)
    restart            runs survive the daemon; a run going at a crash is
                       failed with daemon_restarted
"""
import io
import json
import os
import tarfile
import threading

import pytest

import daemon as dm

UNKNOWN = "0123456789abcdef"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("run-root")
    (r / "repo").mkdir()
    (r / "repo" / "a.txt").write_text("a\n")
    return r


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    o = tmp_path_factory.mktemp("run-outside")
    (o / "secret.txt").write_text("host secret\n")
    return o


@pytest.fixture(scope="module")
def d(tmp_path_factory, root):
    yield from dm.serve(tmp_path_factory.mktemp("runs-api"), ["--run-repo-root", str(root), "--warm", "0"])


@pytest.fixture(scope="module")
def alice(d):
    return d.tenant(dm.uniq("alice"))


@pytest.fixture(scope="module")
def bob(d):
    return d.tenant(dm.uniq("bob"))


@pytest.fixture(scope="module")
def finished(alice):
    """A finished shell run of alice's."""
    run = dm.run_start(alice, {"agent": "shell", "prompt": "echo one; echo two"})
    body, events = dm.run_wait(alice, run["id"], 60)
    assert body["status"] in dm.RUN_TERMINAL, body
    return body


def assert_invalid(r, field=None):
    """A 400 or 422 (wrong type, missing) problem naming the field."""
    assert r.status in (400, 422), r
    dm.assert_problem(r, r.status, detail_has=field)


def shell_sleeping(client, seconds=60, **extra):
    body = {"agent": "shell", "prompt": "sleep %d" % seconds}
    body.update(extra)
    return dm.run_start(client, body)


def wait_status(client, rid, pred, limit=60):
    assert dm.wait_for(lambda: pred(client.get("/v1/runs/" + rid).body), limit, 0.1), \
        client.get("/v1/runs/" + rid).body
    return client.get("/v1/runs/" + rid).body


# ---- bad input --------------------------------------------------------------------------

def test_malformed_and_non_object_bodies(alice):
    r = alice.call("POST", "/v1/runs", body=b'{"agent": "shell", "prompt": ', headers={"Content-Type": "application/json"})
    dm.assert_problem(r, 400)
    r = alice.call("POST", "/v1/runs", body=b'["agent"]', headers={"Content-Type": "application/json"})
    assert_invalid(r)
    r = alice.call("POST", "/v1/runs", body=b'', headers={"Content-Type": "application/json"})
    dm.assert_problem(r, 400)


def test_a_body_over_the_json_limit_is_413(alice):
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "x" * (2 << 20)})
    dm.assert_problem(r, 413)


BAD_FIELDS = [
    ({"prompt": "hi"}, "agent"),
    ({"agent": "shell"}, "prompt"),
    ({"agent": "shell", "prompt": "hi", "bogus": 1}, "bogus"),
    ({"agent": "nope", "prompt": "hi"}, "agent"),
    ({"agent": 5, "prompt": "hi"}, "agent"),
    ({"agent": "shell", "prompt": ["hi"]}, "prompt"),
    ({"agent": "shell", "prompt": "hi", "model": 3}, "model"),
    ({"agent": "shell", "prompt": "hi", "timeout_s": "10"}, "timeout_s"),
    ({"agent": "shell", "prompt": "hi", "timeout_s": 0}, "timeout_s"),
    ({"agent": "shell", "prompt": "hi", "timeout_s": 86401}, "timeout_s"),
    ({"agent": "shell", "prompt": "hi", "keep": "everything"}, "keep"),
    ({"agent": "shell", "prompt": "hi", "keep": 1}, "keep"),
    ({"agent": "shell", "prompt": "hi", "repo": "/tmp"}, "repo"),
    ({"agent": "shell", "prompt": "hi", "repo": {}}, "repo"),
    ({"agent": "shell", "prompt": "hi", "repo": {"path": 5}}, "repo.path"),
    ({"agent": "shell", "prompt": "hi", "repo": {"path": "relative/dir"}}, "repo.path"),
    ({"agent": "shell", "prompt": "hi", "repo": {"path": "/tmp", "upload": UNKNOWN}}, "repo"),
    ({"agent": "shell", "prompt": "hi", "repo": {"lane": 5}}, "repo.lane"),
    ({"agent": "shell", "prompt": "hi", "repo": {"lane": "x", "path": "/work/../etc"}}, "repo.path"),
    ({"agent": "shell", "prompt": "hi", "repo": {"upload": "../../cell.db"}}, "repo.upload"),
    ({"agent": "shell", "prompt": "hi", "repo": {"upload": 7}}, "repo.upload"),
    ({"agent": "shell", "prompt": "hi", "repo": {"path": "/tmp", "extra": 1}}, "repo.extra"),
    ({"agent": "shell", "prompt": "hi", "attachments": {"name": "a"}}, "attachments"),
    ({"agent": "shell", "prompt": "hi", "attachments": [{"name": "../a", "text": "x"}]}, "attachments[0]"),
    ({"agent": "shell", "prompt": "hi", "attachments": [{"name": "a", "text": 5}]}, "attachments[0]"),
    ({"agent": "shell", "prompt": "hi", "attachments": [{"name": "a", "base64": "!!!"}]}, "attachments[0].base64"),
    ({"agent": "shell", "prompt": "hi", "attachments": [{"name": "a", "text": "x", "base64": "eA=="}]}, "attachments[0]"),
    ({"agent": "shell", "prompt": "hi", "attachments": [{"name": "a", "text": "x"}] * 2}, "attachments[1].name"),
    ({"agent": "shell", "prompt": "hi", "attachments": [{"name": "a%d" % i, "text": "x"} for i in range(17)]}, "attachments"),
    ({"agent": "shell", "prompt": "hi", "resume": {}}, "resume"),
    ({"agent": "shell", "prompt": "hi", "resume": {"last": False}}, "resume"),
    ({"agent": "shell", "prompt": "hi", "resume": {"run": UNKNOWN, "fork": "yes"}}, "resume.fork"),
    ({"agent": "shell", "prompt": "hi", "resume": {"run": UNKNOWN, "other": 1}}, "resume.other"),
    ({"agent": "shell", "prompt": "hi", "env": {"A": 1}}, "env"),
    ({"agent": "shell", "prompt": "hi", "resources": {"memory": "lots"}}, "memory"),
    ({"agent": "shell", "prompt": "hi", "policy": "allow"}, "policy"),
    # The agent-facing fields, checked by srv_runagent_check through the API.
    ({"agent": "shell", "prompt": "hi", "instructions": 5}, "instructions"),
    ({"agent": "shell", "prompt": "hi", "instructions": "x" * (256 * 1024 + 1)}, "instructions"),
    ({"agent": "shell", "prompt": "hi", "skills": "s"}, "skills"),
    ({"agent": "shell", "prompt": "hi", "skills": [{"name": "s%d" % i, "description": "d"} for i in range(33)]}, "skills"),
    ({"agent": "shell", "prompt": "hi", "mcp": [{"name": "m", "type": "ftp"}]}, "mcp[0]"),
    ({"agent": "shell", "prompt": "hi", "permissions": {"default": "sometimes"}}, "permissions"),
    ({"agent": "shell", "prompt": "hi", "output_schema": "json"}, "output_schema"),
]


@pytest.mark.parametrize("body,field", BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_bad_fields_are_400_naming_the_field(alice, body, field):
    assert_invalid(alice.post("/v1/runs", body), field)


def test_a_prompt_over_1_mib_is_refused(d, tmp_path):
    with dm.served(tmp_path / "big", ["--max-json-size", "4M", "--warm", "0"]) as dd:
        r = dd.client().post("/v1/runs", {"agent": "shell", "prompt": "x" * ((1 << 20) + 1)})
        dm.assert_problem(r, 400, detail_has="prompt")


def test_unknown_references_are_404(alice):
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "hi", "resume": {"run": UNKNOWN}})
    dm.assert_problem(r, 404, detail_has="resume")
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "hi", "repo": {"upload": UNKNOWN}})
    dm.assert_problem(r, 404, detail_has="repo.upload")
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "hi", "repo": {"lane": "no-such-lane"}})
    dm.assert_problem(r, 404, detail_has="repo.lane")


# ---- repo.path and --run-repo-root ---------------------------------------------------------

def test_a_tenants_repo_path_outside_the_roots_is_403(alice, outside):
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"path": str(outside)}})
    dm.assert_problem(r, 403, detail_has="repo.path")
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"path": "/etc"}})
    dm.assert_problem(r, 403, detail_has="repo.path")


def test_a_link_under_the_root_leading_out_of_it_is_403(alice, root, outside):
    link = root / dm.uniq("link")
    os.symlink(str(outside), str(link))
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"path": str(link)}})
    dm.assert_problem(r, 403, detail_has="repo.path")
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"path": str(root / "repo" / ".." / "..")}})
    dm.assert_problem(r, 403, detail_has="repo.path")


def test_a_path_under_the_root_is_kept_canonical(alice, root):
    link = root / dm.uniq("inside")
    os.symlink(str(root / "repo"), str(link))
    run = dm.run_start(alice, {"agent": "shell", "prompt": "cat /workspace/a.txt", "repo": {"path": str(link)}})
    assert run["repo"] == {"path": str((root / "repo").resolve())}, run
    body, _ = dm.run_wait(alice, run["id"], 60)
    assert body["result"]["output"] == "a\n", body


# ---- run JSON, list, get ------------------------------------------------------------------

def test_run_json_and_events_of_a_finished_run(alice, finished):
    assert len(finished["id"]) == 16 and finished["agent"] == "shell" and finished["keep"] == "nothing"
    for k in ("acceptedMs", "cellReadyMs", "agentStartedMs", "agentDoneMs", "finishedMs"):
        assert k in finished["timings"], finished
    assert finished["result"]["output"] == "one\ntwo\n", finished
    assert finished["finishedAtMs"] >= finished["createdAtMs"]
    events = dm.run_events(alice, finished["id"], follow=False)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
    assert events[0] == dict(events[0], type="run.status", status="queued")
    assert events[-1]["type"] == "run.finished" and events[-1]["status"] == finished["status"], events


def test_events_replay_after_last_event_id(alice, finished):
    every = dm.run_events(alice, finished["id"], follow=False)
    after = dm.run_events(alice, finished["id"], follow=False, last_id=2)
    assert after == every[2:], (after, every)
    assert dm.run_events(alice, finished["id"], last_id=every[-1]["seq"]) == []
    for bad in ("-1", "x", "1.5", "99999999999999999999999"):
        r = alice.get("/v1/runs/%s/events" % finished["id"], headers={"Last-Event-ID": bad})
        dm.assert_problem(r, 400, detail_has="Last-Event-ID")
    dm.assert_problem(alice.get("/v1/runs/%s/events?follow=maybe" % finished["id"]), 400, detail_has="follow")


def test_list_is_newest_first_and_without_diffs(alice, finished):
    second = dm.run_start(alice, {"agent": "shell", "prompt": "true"})
    dm.run_wait(alice, second["id"], 60)
    runs = alice.get("/v1/runs").body["runs"]
    ids = [x["id"] for x in runs]
    assert ids.index(second["id"]) < ids.index(finished["id"]), ids
    assert all("diff" not in (x["result"] or {}) for x in runs), runs
    assert [x["id"] for x in alice.get("/v1/runs?limit=1").body["runs"]] == [ids[0]]
    st = alice.get("/v1/runs?status=" + finished["status"]).body["runs"]
    assert st and all(x["status"] == finished["status"] for x in st)
    for q in ("status=bogus", "limit=0", "limit=1001", "limit=x", "limit="):
        dm.assert_problem(alice.get("/v1/runs?" + q), 400)
    dm.assert_problem(alice.get("/v1/runs?tenant=default"), 403)


def test_admins_list_another_tenant_with_a_query(d, alice, finished):
    tenant = alice.get("/v1/runs/" + finished["id"]).body["tenant"]
    admin = d.client()
    assert finished["id"] not in [x["id"] for x in admin.get("/v1/runs").body["runs"]]
    assert finished["id"] in [x["id"] for x in admin.get("/v1/runs?tenant=" + tenant).body["runs"]]


# ---- ids of nobody and of other tenants ------------------------------------------------------

def every_route(rid):
    return [
        ("GET", "/v1/runs/%s" % rid, None),
        ("DELETE", "/v1/runs/%s" % rid, None),
        ("GET", "/v1/runs/%s/events?follow=false" % rid, None),
        ("POST", "/v1/runs/%s/permissions/p1" % rid, {"decision": "allow"}),
        ("POST", "/v1/runs/%s/apply" % rid, None),
        ("GET", "/v1/runs/%s/artifacts/diff.patch" % rid, None),
        ("GET", "/v1/runs/%s/artifacts/events.jsonl" % rid, None),
    ]


@pytest.mark.parametrize("rid", [UNKNOWN, "..", "%2e%2e%2fcell.db", "0123456789ABCDEF", "0" * 64])
def test_unknown_run_ids_are_404_on_every_route(alice, rid):
    for method, path, body in every_route(rid):
        r = alice.call(method, path, json_body=body)
        assert r.status == 404, (method, path, r)


def test_another_tenants_run_is_404_on_every_route(alice, bob, finished):
    for method, path, body in every_route(finished["id"]):
        dm.assert_problem(bob.call(method, path, json_body=body), 404)
    assert finished["id"] not in [x["id"] for x in bob.get("/v1/runs").body["runs"]]
    r = bob.post("/v1/runs", {"agent": "shell", "prompt": "true", "resume": {"run": finished["id"]}})
    dm.assert_problem(r, 404, detail_has="resume")
    assert alice.get("/v1/runs/" + finished["id"]).status == 200      # still there


def test_artifact_names_come_from_a_fixed_list(alice, finished):
    for name in ("agent-state.tar", "..", "..%2f..%2fcell.db", "%2e%2e", "upload.tar",
                 "events.jsonl.x", "DIFF.PATCH"):
        r = alice.get("/v1/runs/%s/artifacts/%s" % (finished["id"], name))
        assert r.status in (400, 404), (name, r)
    r = alice.get("/v1/runs/%s/artifacts/events.jsonl" % finished["id"])
    assert r.status == 200 and r.body.startswith(b'{"seq":1,'), r


def test_apply_needs_a_finished_run_with_a_path_repo(alice, finished):
    dm.assert_problem(alice.post("/v1/runs/%s/apply" % finished["id"]), 400, detail_has="diff.patch")


# ---- uploads --------------------------------------------------------------------------------

def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(client, data, ctype="application/x-tar"):
    return client.call("POST", "/v1/runs/uploads", body=data, headers={"Content-Type": ctype})


def test_uploads_bad_input(alice):
    dm.assert_problem(upload(alice, b"x" * 100, "application/json"), 415)
    dm.assert_problem(upload(alice, b"x" * 100, "text/plain"), 415)
    dm.assert_problem(alice.call("POST", "/v1/runs/uploads", headers={"Content-Type": "application/x-tar"}), 400)


def test_an_upload_serves_one_run_and_one_tenant(alice, bob):
    r = upload(alice, tar_of({"hello.txt": b"from the upload\n"}))
    assert r.status == 201 and len(r.body["upload"]) == 16 and r.body["bytes"] > 0, r
    up = r.body["upload"]
    dm.assert_problem(bob.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"upload": up}}), 404)
    run = dm.run_start(alice, {"agent": "shell", "prompt": "cat /workspace/hello.txt", "repo": {"upload": up}})
    assert run["repo"] == {"upload": up}
    dm.assert_problem(alice.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"upload": up}}), 404)
    dm.run_wait(alice, run["id"], 60)


def test_at_most_eight_uploads_wait(d):
    carol = d.tenant(dm.uniq("carol"))
    ids = []
    for _ in range(8):
        r = upload(carol, tar_of({"f": b"x"}))
        assert r.status == 201, r
        ids.append(r.body["upload"])
    dm.assert_problem(upload(carol, tar_of({"f": b"x"})), 429)
    # Another tenant is not counted with carol.
    dave = d.tenant(dm.uniq("dave"))
    assert upload(dave, tar_of({"f": b"x"})).status == 201
    # Only carol's own ids exist for carol.
    assert len(set(ids)) == 8


# ---- delete and cancel ---------------------------------------------------------------------------

def test_concurrent_deletes_of_a_finished_run_one_wins(alice):
    run = dm.run_start(alice, {"agent": "shell", "prompt": "true"})
    dm.run_wait(alice, run["id"], 60)
    results = []
    threads = [threading.Thread(target=lambda: results.append(alice.delete("/v1/runs/" + run["id"]).status))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [204] + [404] * 5, results
    dm.assert_problem(alice.get("/v1/runs/" + run["id"]), 404)
    assert run["id"] not in [x["id"] for x in alice.get("/v1/runs").body["runs"]]


def test_concurrent_deletes_of_an_active_run_cancel_it(d, alice):
    run = shell_sleeping(alice, 120)
    wait_status(alice, run["id"], lambda b: b["status"] == "running")
    results = []
    threads = [threading.Thread(target=lambda: results.append(alice.delete("/v1/runs/" + run["id"]).status))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [202] * 6, results
    body, events = dm.run_wait(alice, run["id"], 60)
    assert body["status"] == "canceled" and body["result"]["exitCode"] is None, body
    assert events[-1]["type"] == "run.finished" and events[-1]["status"] == "canceled"
    assert alice.delete("/v1/runs/" + run["id"]).status == 204
    dm.assert_problem(alice.get("/v1/runs/" + run["id"]), 404)
    kinds = [(a.get("event"), a.get("run")) for a in alice.get("/v1/audit?kind=run").body["records"]]
    assert ("canceled", run["id"]) in kinds and ("created", run["id"]) in kinds, kinds


def test_deleting_the_runs_cell_fails_the_run(alice):
    run = shell_sleeping(alice, 120, keep="cell")
    body = wait_status(alice, run["id"], lambda b: b["status"] == "running" and b.get("cellId"))
    cells = alice.get("/v1/cells").body["cells"]
    assert [c.get("run") for c in cells if c["id"] == body["cellId"]] == [run["id"]], cells
    assert alice.delete("/v1/cells/" + body["cellId"]).status == 204
    body, _ = dm.run_wait(alice, run["id"], 60)
    assert body["status"] in ("failed", "canceled"), body


# ---- limits --------------------------------------------------------------------------------------

def test_the_ninth_active_run_of_a_tenant_is_429(d):
    erin = d.tenant(dm.uniq("erin"))
    runs = [shell_sleeping(erin, 120) for _ in range(8)]
    try:
        dm.assert_problem(erin.post("/v1/runs", {"agent": "shell", "prompt": "true"}), 429, "too_many_runs")
        other = d.tenant(dm.uniq("frank"))
        assert dm.run_start(other, {"agent": "shell", "prompt": "true"})["status"] not in dm.RUN_TERMINAL
    finally:
        for run in runs:
            assert erin.delete("/v1/runs/" + run["id"]).status == 202
        for run in runs:
            dm.run_wait(erin, run["id"], 60)


# ---- permissions ---------------------------------------------------------------------------------

def test_permission_answers_bad_input(alice, finished):
    rid = finished["id"]
    dm.assert_problem(alice.post("/v1/runs/%s/permissions/nope" % rid, {"decision": "allow"}), 404)
    dm.assert_problem(alice.post("/v1/runs/%s/permissions/nope" % rid, {"decision": "maybe"}), 400, detail_has="decision")
    assert_invalid(alice.post("/v1/runs/%s/permissions/nope" % rid, {"decision": 1}), "decision")
    assert_invalid(alice.post("/v1/runs/%s/permissions/nope" % rid, {}), "decision")
    dm.assert_problem(alice.post("/v1/runs/%s/permissions/nope" % rid, {"decision": "allow", "x": 1}), 400)


def test_concurrent_answers_to_one_permission_request(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "permission please",
                               "permissions": {"default": "ask"}, "timeout_s": 120})
    asked = []

    def find():
        evs = dm.run_events(alice, run["id"], follow=False)
        asked[:] = [e for e in evs if e["type"] == "permission.asked"]
        return asked or any(e["type"] == "run.finished" for e in evs)
    assert dm.wait_for(find, 90, 0.2)
    if not asked:
        pytest.skip("the mock agent's run asked no permission (driver or policy not there yet): %s"
                    % alice.get("/v1/runs/" + run["id"]).body)
    req = asked[0]["requestId"]
    results = []
    threads = [threading.Thread(target=lambda dec=dec: results.append(
        alice.post("/v1/runs/%s/permissions/%s" % (run["id"], req), {"decision": dec}).status))
        for dec in ("allow", "deny") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [204] + [409] * 7, results
    body, events = dm.run_wait(alice, run["id"], 90)
    decided = [e for e in events if e["type"] == "permission.decided" and e["requestId"] == req]
    assert len(decided) == 1 and decided[0]["by"] == "client", decided
    dm.assert_problem(alice.post("/v1/runs/%s/permissions/%s" % (run["id"], req), {"decision": "allow"}), 409)


# ---- the store across restarts ---------------------------------------------------------------------

def test_runs_survive_a_restart_and_a_crash_fails_the_going_ones(tmp_path):
    state = tmp_path / "st"
    dd = dm.Daemon(state, ["--warm", "0"]).start()
    try:
        c = dd.client()
        done = dm.run_start(c, {"agent": "shell", "prompt": "echo kept"})
        before, events = dm.run_wait(c, done["id"], 60)
        going = shell_sleeping(c, 300)
        wait_status(c, going["id"], lambda b: b["status"] == "running")
        dd.kill9()
        # What a crash can leave: a torn last event line, a run directory
        # without a record, an upload cut short.
        with open(os.path.join(str(state), "runs", done["id"], "events.jsonl"), "a") as fh:
            fh.write('{"seq": 99, "type": "run.sta')
        orphan = os.path.join(str(state), "runs", "00000000000000ff")
        os.makedirs(orphan)
        open(os.path.join(orphan, "events.jsonl"), "w").close()
        part_dir = os.path.join(str(state), "runs", "uploads", "default")
        os.makedirs(part_dir, exist_ok=True)
        open(os.path.join(part_dir, "00000000000000ee.part"), "w").close()
        dd = dm.Daemon(state, ["--warm", "0"]).start()
        c = dd.client()
        assert not os.path.exists(orphan) and os.listdir(part_dir) == []
        after = c.get("/v1/runs/" + done["id"]).body
        assert after["status"] == before["status"] and after["result"] == before["result"], (before, after)
        assert dm.run_events(c, done["id"], follow=False) == events
        assert dm.run_events(c, done["id"], limit_s=20) == events       # the torn line neither shows nor holds it
        crashed = c.get("/v1/runs/" + going["id"]).body
        assert crashed["status"] == "failed" and crashed["result"]["error"]["type"] == "daemon_restarted", crashed
        # Both listed, the newest first; a finished run can be removed.
        assert [x["id"] for x in c.get("/v1/runs").body["runs"]][:2] == [going["id"], done["id"]]
        # Its events end without a run.finished (the daemon died first).
        assert dm.run_events(c, going["id"])[-1]["type"] != "run.finished"
        assert c.delete("/v1/runs/" + going["id"]).status == 204
        dd.stop()
        dd = dm.Daemon(state, ["--warm", "0"]).start()
        c = dd.client()
        dm.assert_problem(c.get("/v1/runs/" + going["id"]), 404)
        assert c.get("/v1/runs/" + done["id"]).status == 200
    finally:
        dd.stop(check=False)
        dd.check_sanitizer()


def test_stopping_the_daemon_cancels_active_runs(tmp_path):
    with dm.served(tmp_path / "stop", ["--warm", "0"]) as dd:
        c = dd.client()
        run = shell_sleeping(c, 300)
        wait_status(c, run["id"], lambda b: b["status"] == "running")
    # served() stopped it (SIGTERM within its timeout) and found nothing left.
    dd = dm.Daemon(tmp_path / "stop", ["--warm", "0"]).start()
    try:
        body = dd.client().get("/v1/runs/" + run["id"]).body
        assert body["status"] in ("canceled", "failed"), body
    finally:
        dd.stop()


# ---- apply, diffs, revocation ----------------------------------------------------------------------

def test_apply_writes_the_host_directory_once(alice, root):
    repo = root / dm.uniq("apply")
    repo.mkdir()
    (repo / "a.txt").write_text("a\n")
    run = dm.run_start(alice, {"agent": "shell", "prompt": "echo b >> a.txt; echo new > n.txt",
                               "repo": {"path": str(repo)}})
    body, _ = dm.run_wait(alice, run["id"], 60)
    assert body["status"] == "succeeded", body
    assert "+b" in body["result"]["diff"], body
    listed = [x for x in alice.get("/v1/runs").body["runs"] if x["id"] == run["id"]]
    assert listed and "diff" not in listed[0]["result"], listed
    assert (repo / "a.txt").read_text() == "a\n" and not (repo / "n.txt").exists()   # untouched by the run
    patch = alice.get("/v1/runs/%s/artifacts/diff.patch" % run["id"])
    assert patch.status == 200 and b"n.txt" in patch.body, patch
    results = []
    threads = [threading.Thread(target=lambda: results.append(alice.post("/v1/runs/%s/apply" % run["id"])))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [x for x in results if x.status == 200]
    assert len(ok) == 1 and ok[0].body["applied"] is True, results
    assert all(x.status == 409 for x in results if x.status != 200), results
    assert (repo / "a.txt").read_text() == "a\nb\n" and (repo / "n.txt").read_text() == "new\n"
    # Once applied, the patch no longer applies: a conflict, nothing written.
    b = dm.assert_problem(alice.post("/v1/runs/%s/apply" % run["id"]), 409, "conflict")
    assert "conflicts" in b.get("details", {}), b
    assert (repo / "a.txt").read_text() == "a\nb\n"


def test_apply_of_an_active_run_is_409(alice, root):
    run = shell_sleeping(alice, 120, repo={"path": str(root / "repo")})
    try:
        dm.assert_problem(alice.post("/v1/runs/%s/apply" % run["id"]), 409)
    finally:
        alice.delete("/v1/runs/" + run["id"])
        dm.run_wait(alice, run["id"], 60)


def test_revoking_the_token_ends_its_event_streams(d):
    tok, tid = dm.make_tenant_token(d.client(), dm.uniq("gina"))
    g = d.client(tok, admin=False)
    run = shell_sleeping(g, 120)
    conn, resp = g.stream("GET", "/v1/runs/%s/events" % run["id"], timeout=30)
    try:
        assert resp.status == 200
        assert resp.readline()                      # the stream is going
        assert d.client().delete("/v1/tokens/" + tid).status in (200, 204)
        # The stream ends (bounded by the read timeout, not by the run).
        while resp.readline():
            pass
    finally:
        conn.close()
    assert g.get("/v1/runs/" + run["id"]).status == 401
    dm.assert_problem(d.client().get("/v1/runs/%s" % run["id"]), 404)   # the admin's tenant is another
    # The run itself goes on until canceled by its tenant's other tokens or the stop.


def test_an_upload_over_the_file_limit_is_413_and_leaves_nothing(tmp_path):
    with dm.served(tmp_path / "small", ["--max-file-size", "64K", "--warm", "0"]) as dd:
        c = dd.client()
        dm.assert_problem(upload(c, b"\0" * (200 << 10)), 413)
        # Chunked, without a length: refused as it grows past the limit.
        conn = c.chunked("POST", "/v1/runs/uploads", "application/x-tar")
        dm.send_chunks(conn, b"\0" * (200 << 10), 16 << 10)
        r = conn.getresponse()
        assert r.status == 413, r.status
        conn.close()
        up = os.path.join(dd.state, "runs", "uploads", "default")
        assert dm.wait_for(lambda: not os.path.isdir(up) or not os.listdir(up), 10, 0.1), os.listdir(up)
        r = upload(c, tar_of({"f": b"x"}), "application/gzip")     # the type is not the content's proof
        assert r.status == 201, r


def test_a_lane_repo_is_the_tenants_lane(alice, bob):
    name = dm.uniq("lane")
    assert alice.post("/v1/lanes", {"name": name}).status == 201
    dm.assert_problem(bob.post("/v1/runs", {"agent": "shell", "prompt": "true", "repo": {"lane": name}}), 404)
    run = dm.run_start(alice, {"agent": "shell", "prompt": "ls /workspace", "repo": {"lane": name}})
    assert run["repo"] == {"lane": name, "path": "/workspace"}, run
    body, _ = dm.run_wait(alice, run["id"], 60)
    assert body["status"] in dm.RUN_TERMINAL


def test_run_repo_root_must_be_an_absolute_directory(tmp_path):
    import subprocess
    out = subprocess.run([dm.CELL_BIN, "serve", "--help"], capture_output=True, text=True).stdout
    assert "--run-repo-root DIR" in out
    for bad in ("relative/dir", str(tmp_path / "missing"), "/etc/hostname"):
        p = subprocess.run([dm.CELL_BIN, "serve", "--state", str(tmp_path / "st"), "--run-repo-root", bad],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "--run-repo-root" in p.stderr, (bad, p)


def test_resumes_of_an_upload_repo_keep_the_upload(d, alice):
    up = upload(alice, tar_of({"hello.txt": b"hi\n"})).body["upload"]
    first = dm.run_start(alice, {"agent": "shell", "prompt": "true", "repo": {"upload": up}})
    dm.run_wait(alice, first["id"], 60)
    second = dm.run_start(alice, {"agent": "shell", "prompt": "true", "resume": {"run": first["id"]}})
    assert second["repo"] == {"upload": up} and second["resumedFrom"] == first["id"], second
    dm.run_wait(alice, second["id"], 60)
    assert alice.delete("/v1/runs/" + first["id"]).status == 204
    third = dm.run_start(alice, {"agent": "shell", "prompt": "true", "resume": {"run": second["id"]}})
    dm.run_wait(alice, third["id"], 60)
    for rid in (second["id"], third["id"]):
        assert os.path.isfile(os.path.join(d.state, "runs", rid, "upload.tar")), rid
    assert not os.path.exists(os.path.join(d.state, "runs", first["id"]))


def test_run_files_count_against_the_disk_quota(d):
    name = dm.uniq("hank")
    h = d.tenant(name)
    admin = d.client()
    assert admin.put("/v1/tenants/" + name, {"maxDisk": 1 << 20}).status == 200
    big = tar_of({"big.bin": os.urandom(600 << 10)})
    up = upload(h, big)
    assert up.status == 201, up
    run = dm.run_start(h, {"agent": "shell", "prompt": "true", "repo": {"upload": up.body["upload"]}})
    dm.run_wait(h, run["id"], 60)
    # The run keeps its 600K upload: another one does not fit.
    dm.assert_problem(upload(h, big), 403, "quota_exceeded")
    up_dir = os.path.join(d.state, "runs", "uploads", name)
    assert dm.wait_for(lambda: os.listdir(up_dir) == [], 10, 0.1), os.listdir(up_dir)
    # A lower quota: the finished run is removed to make its files fit.
    assert admin.put("/v1/tenants/" + name, {"maxDisk": 300 << 10}).status == 200
    nxt = dm.run_start(h, {"agent": "shell", "prompt": "true"})
    dm.assert_problem(h.get("/v1/runs/" + run["id"]), 404)
    assert not os.path.exists(os.path.join(d.state, "runs", run["id"]))
    dm.run_wait(h, nxt["id"], 60)
