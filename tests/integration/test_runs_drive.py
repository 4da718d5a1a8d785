"""`cell serve`: the run driver (src/server/rundrive.c) with the mock and
shell agents: a run end to end, the ACP instance the driver opens (listed
and followable as run-<id>), the shell agent's output and exit code, the
permission policy and the client's answers (and a cancel while one
waits), keep cell / nothing, resume (the agent's state and the cumulative
patch), an MCP header secret that never enters the cell, a boot that
fails, the cell deleted under a run, and another tenant's reach into a
run's cell and its ACP instance.
"""
import base64
import io
import tarfile
import os
import threading
import time
import uuid

import pytest

import daemon as dm
from daemon import assert_problem


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return tmp_path_factory.mktemp("drive-repos")


@pytest.fixture(scope="module")
def d(tmp_path_factory, repos):
    yield from dm.serve(tmp_path_factory.mktemp("drive"), ["--run-repo-root", str(repos)])


def tenant(d, prefix):
    c = d.tenant(dm.uniq(prefix))
    return c


@pytest.fixture(scope="module")
def alice(d):
    return tenant(d, "alice")


@pytest.fixture(scope="module")
def bob(d):
    return tenant(d, "bob")


def make_repo(repos, files):
    r = repos / dm.uniq("repo")
    r.mkdir()
    for rel, data in files.items():
        (r / rel).write_text(data)
    return r


def types(events):
    return [e["type"] for e in events]


def wait_status(client, rid, want, limit=30):
    dm.wait_for(lambda: client.get("/v1/runs/" + rid).body["status"] in want, limit, 0.05)
    return client.get("/v1/runs/" + rid).body


def cell_sh(client, cid, script):
    r = client.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c", script]})
    assert r.status == 200, r
    return r.body


def events_until(client, rid, kind, limit=30):
    """Poll ?follow=false until an event of `kind` exists; returns it."""
    found = []

    def seen():
        found[:] = [e for e in dm.run_events(client, rid, follow=False) if e["type"] == kind]
        return found
    dm.wait_for(seen, limit, 0.05)
    return found[0]


# ---- end to end ------------------------------------------------------------------------------


def test_mock_run_end_to_end(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    run = dm.run_start(alice, {"agent": "mock", "prompt": "hello there", "repo": {"path": str(repo)}})
    done, events = dm.run_wait(alice, run["id"])
    res = done["result"]
    assert res["exitCode"] == 0 and res["output"] == "mock:hello there", done
    assert res["sessionId"].startswith("mock-session-")
    assert res["changedFiles"] == [] and res["diff"] == ""
    t = types(events)
    assert t[0] == "run.status" and t[-1] == "run.finished"
    for kind in ("run.started", "agent.started", "message.delta"):
        assert kind in t, t
    assert t.index("run.started") < t.index("agent.started") < t.index("message.delta")
    started = [e for e in events if e["type"] == "run.started"][0]
    assert started["agent"] == "mock" and started["cellId"] == done["cellId"]
    text = "".join(e["text"] for e in events if e["type"] == "message.delta")
    assert text == "mock:hello there"
    tm = done["timings"]
    assert tm["acceptedMs"] <= tm["cellReadyMs"] <= tm["agentStartedMs"] <= tm["agentDoneMs"] <= tm["finishedMs"]
    # keep "nothing": the cell is gone, the repository untouched.
    assert alice.get("/v1/cells/" + done["cellId"]).status == 404
    assert sorted(os.listdir(repo)) == ["a.txt"]
    assert done["status"] == "succeeded", done


def test_the_agent_runs_in_the_workspace_with_the_run_env(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    run = dm.run_start(alice, {"agent": "mock", "prompt": "pwd", "repo": {"path": str(repo)}})
    done, _ = dm.run_wait(alice, run["id"])
    assert done["result"]["output"] == "mock:/workspace" or done["result"]["output"].endswith("/workspace"), done


def test_the_acp_instance_is_a_listed_server_of_the_runs_cell(alice, bob):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "no answer", "timeout_s": 60})
    rid = run["id"]
    events_until(alice, rid, "agent.started")
    cid = alice.get("/v1/runs/" + rid).body["cellId"]
    servers = alice.get("/cells/%s/v1/acp" % cid).body["servers"]
    assert {"serverId": "run-" + rid, "agent": "mock"}.items() <= servers[0].items(), servers
    # The prompt went through it, as any client's would.
    conn, resp = alice.stream("GET", "/cells/%s/v1/acp/run-%s" % (cid, rid), timeout=10)
    try:
        assert resp.status == 200
        seen = []
        while not any(b'"sessionId"' in line for line in seen):
            line = resp.readline()      # bounded by the connection's timeout
            assert line, seen
            seen.append(line)
    finally:
        conn.close()
    # Another tenant reaches neither the cell nor the instance.
    assert bob.get("/cells/%s/v1/acp" % cid).status == 404
    assert bob.get("/cells/%s/v1/acp/run-%s" % (cid, rid)).status == 404
    assert bob.post("/cells/%s/v1/acp/run-%s" % (cid, rid), {"jsonrpc": "2.0", "method": "x"}).status == 404
    assert bob.get("/v1/runs/%s/events?follow=false" % rid).status == 404
    assert bob.get("/cells/%s/v1/fs/entries" % cid, query={"path": "/workspace"}).status == 404
    assert bob.post("/cells/%s/v1/processes/run" % cid, {"command": "ls"}).status == 404
    assert alice.get("/cells/%s/v1/fs/entries" % cid, query={"path": "/workspace"}).status == 200
    assert alice.delete("/v1/runs/" + rid).status == 202
    done, _ = dm.run_wait(alice, rid)
    assert done["status"] == "canceled" and done["result"]["exitCode"] is None
    assert alice.get("/v1/cells/" + cid).status == 404


# ---- shell --------------------------------------------------------------------------------------


def test_shell_output_exit_code_and_diff(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n", "gone.txt": "g\n"})
    run = dm.run_start(alice, {"agent": "shell", "repo": {"path": str(repo)},
                               "prompt": "echo out; echo err >&2; echo new > b.txt; rm gone.txt; exit 7"})
    done, events = dm.run_wait(alice, run["id"])
    res = done["result"]
    assert done["status"] == "failed" and res["exitCode"] == 7, done
    assert res["output"] == "out\n"
    assert {(f["path"], f["status"]) for f in res["changedFiles"]} == {("b.txt", "added"), ("gone.txt", "deleted")}
    exits = [e for e in events if e["type"] == "command.exit"]
    assert len(exits) == 1 and exits[0]["exitCode"] == 7
    assert sorted(os.listdir(repo)) == ["a.txt", "gone.txt"]


def test_shell_output_is_capped_and_binary_safe(alice):
    run = dm.run_start(alice, {"agent": "shell", "prompt": "head -c 3000000 /dev/zero | tr '\\0' x; printf '\\377\\n'"})
    done, _ = dm.run_wait(alice, run["id"])
    out = done["result"]["output"]
    assert len(out) == 1 << 20 and set(out) == {"x"}
    assert done["status"] == "succeeded", done


def test_shell_output_that_is_not_utf8(alice):
    run = dm.run_start(alice, {"agent": "shell", "prompt": "printf 'a\\377b\\000c'"})
    done, _ = dm.run_wait(alice, run["id"])
    assert done["result"]["output"] in ("a\ufffdb\ufffdc", "a\ufffdb\x00c"), done


# ---- permissions --------------------------------------------------------------------------------


def test_permission_policy_deny_answers_the_agent(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "permission please", "permissions": {"default": "deny"}})
    done, events = dm.run_wait(alice, run["id"])
    assert done["result"]["output"].endswith("permission: reject-once"), done
    dec = [e for e in events if e["type"] == "permission.decided"]
    assert len(dec) == 1 and dec[0]["decision"] == "deny" and dec[0]["by"] == "policy"
    assert "permission.asked" not in types(events)


def test_permission_ask_waits_for_the_client(alice, bob):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "permission please", "permissions": {"default": "ask"}})
    rid = run["id"]
    asked = events_until(alice, rid, "permission.asked")
    req = asked["requestId"]
    assert asked["kind"] == "edit" and asked["title"] == "mock wants to write a file"
    assert alice.get("/v1/runs/" + rid).body["status"] == "running"
    assert bob.post("/v1/runs/%s/permissions/%s" % (rid, req), {"decision": "allow"}).status == 404
    assert alice.post("/v1/runs/%s/permissions/nope" % rid, {"decision": "allow"}).status == 404
    assert alice.post("/v1/runs/%s/permissions/%s" % (rid, req), {"decision": "allow"}).status == 204
    assert alice.post("/v1/runs/%s/permissions/%s" % (rid, req), {"decision": "deny"}).status == 409
    done, events = dm.run_wait(alice, rid)
    assert done["result"]["output"].endswith("permission: allow-once"), done
    dec = [e for e in events if e["type"] == "permission.decided"]
    assert dec[0]["decision"] == "allow" and dec[0]["by"] == "client"


def test_cancel_while_a_permission_waits(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "permission please", "permissions": {"default": "ask"}})
    rid = run["id"]
    events_until(alice, rid, "permission.asked")
    assert alice.delete("/v1/runs/" + rid).status == 202
    done, events = dm.run_wait(alice, rid)
    assert done["status"] == "canceled" and done["result"]["exitCode"] is None, done
    dec = [e for e in events if e["type"] == "permission.decided"]
    assert dec and dec[0]["decision"] == "deny"
    assert alice.get("/v1/cells/" + done["cellId"]).status == 404


# ---- keep, resume ---------------------------------------------------------------------------------


def test_keep_cell_leaves_the_workspace_running(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    run = dm.run_start(alice, {"agent": "shell", "prompt": "echo kept > k.txt; sleep 1000 &", "keep": "cell",
                               "repo": {"path": str(repo)}})
    done, _ = dm.run_wait(alice, run["id"])
    cid = done["result"]["cellId"]
    assert done["status"] == "succeeded" and cid == done["cellId"], done
    cell = alice.get("/v1/cells/" + cid)
    assert cell.status == 200 and cell.body["state"] == "running" and cell.body.get("run") == run["id"]
    out = cell_sh(alice, cid, "cat /workspace/k.txt; pgrep -x sleep || echo no-sleep")
    # The agent's leftovers were killed before the diff; the workspace stays.
    assert out["stdout"] == "kept\nno-sleep\n", out
    assert not (repo / "k.txt").exists()
    assert alice.delete("/v1/cells/" + cid).status == 204


def test_resume_continues_the_session_and_the_patch(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    first = dm.run_start(alice, {"agent": "mock", "prompt": "remember zebra", "repo": {"path": str(repo)}})
    done1, _ = dm.run_wait(alice, first["id"])
    assert done1["result"]["sessionId"], done1
    second = dm.run_start(alice, {"agent": "mock", "prompt": "recall", "resume": {"run": first["id"]}})
    done2, events = dm.run_wait(alice, second["id"])
    assert done2["resumedFrom"] == first["id"]
    assert "remember zebra" in done2["result"]["output"]
    assert done2["result"]["sessionId"] == done1["result"]["sessionId"]
    # session/load's replay is not this run's output.
    assert "mock:remember zebra" not in "".join(e.get("text", "") for e in events)
    assert done1["status"] == done2["status"] == "succeeded", (done1, done2)


def test_resume_applies_the_previous_patch(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    first = dm.run_start(alice, {"agent": "shell", "prompt": "echo one > one.txt; echo b >> a.txt",
                                 "repo": {"path": str(repo)}})
    assert dm.run_wait(alice, first["id"])[0]["status"] == "succeeded"
    second = dm.run_start(alice, {"agent": "shell", "prompt": "cat one.txt a.txt; echo two > two.txt",
                                  "resume": {"run": first["id"]}})
    done, _ = dm.run_wait(alice, second["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["output"] == "one\na\nb\n"
    # Cumulative against the original repository, which is untouched.
    got = {(f["path"], f["status"]) for f in done["result"]["changedFiles"]}
    assert got == {("one.txt", "added"), ("two.txt", "added"), ("a.txt", "modified")}, got
    assert sorted(os.listdir(repo)) == ["a.txt"] and (repo / "a.txt").read_text() == "a\n"


# ---- secrets, failures ----------------------------------------------------------------------------


def test_an_mcp_header_secret_never_enters_the_cell(alice):
    value = "mcp-secret-" + uuid.uuid4().hex
    assert alice.post("/v1/secrets", {"name": "MCPTOKEN", "value": value}).status in (200, 201)
    run = dm.run_start(alice, {"agent": "mock", "prompt": "env", "keep": "cell", "mcp": [
        {"name": "tools", "type": "http", "url": "http://mcp.example:8080/mcp",
         "headers": {"X-Api-Key": "${secret:MCPTOKEN}"}}]})
    done, events = dm.run_wait(alice, run["id"])
    cid = done["result"]["cellId"]
    try:
        cell = alice.get("/v1/cells/" + cid).body
        rules = cell["policy"]["rules"]
        assert {"X-Api-Key": "${secret:MCPTOKEN}"} in [r.get("http", {}).get("set_headers") for r in rules]
        out = cell_sh(alice, cid, "cat /proc/1/environ; env; grep -rl %s /root /workspace /.cell-run /tmp /etc "
                      "2>/dev/null; echo end" % value)
        assert value not in out["stdout"] and out["stdout"].endswith("end\n"), out
        assert value not in str(cell) and value not in str(done) and value not in str(events)
    finally:
        alice.delete("/v1/cells/" + cid)


def test_a_boot_that_fails_finishes_the_run(alice):
    r = alice.post("/v1/runs", {"agent": "shell", "prompt": "true", "env": {"A": "b"}, "image": "debian-bookworm"})
    if r.status != 202:
        pytest.skip("POST /v1/runs refused the unbuilt image up front: %s" % (r,))
    done, events = dm.run_wait(alice, r.body["id"])
    assert done["status"] == "failed" and done["result"]["error"]["type"] == "cell", done
    assert types(events)[-1] == "run.finished"


def test_the_cell_deleted_under_a_run(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "no answer", "timeout_s": 120})
    rid = run["id"]
    events_until(alice, rid, "agent.started")
    cid = alice.get("/v1/runs/" + rid).body["cellId"]
    assert alice.delete("/v1/cells/" + cid).status == 204
    done, events = dm.run_wait(alice, rid, limit_s=30)
    assert done["status"] == "failed", done
    assert done["result"]["error"]["type"] in ("cell_gone", "agent_exited"), done
    assert types(events)[-1] == "run.finished"


def test_attachments_are_written_for_the_agent(alice):
    data = base64.b64encode(b"\x00\x01bin").decode()
    run = dm.run_start(alice, {"agent": "shell", "prompt": "cat /.cell-run/attachments/notes.txt; "
                               "od -An -tx1 /.cell-run/attachments/blob.bin",
                               "attachments": [{"name": "notes.txt", "text": "hello notes"},
                                               {"name": "blob.bin", "base64": data}]})
    done, _ = dm.run_wait(alice, run["id"])
    assert done["result"]["output"].split() == ["hello", "notes", "00", "01", "62", "69", "6e"], done
    assert done["result"]["changedFiles"] == []
    assert done["status"] == "succeeded", done


def test_keep_lane_then_a_run_on_that_lane(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    first = dm.run_start(alice, {"agent": "shell", "prompt": "echo kept > k.txt", "keep": "lane",
                                 "repo": {"path": str(repo)}})
    done, _ = dm.run_wait(alice, first["id"])
    lane = done["result"].get("lane")
    assert done["status"] == "succeeded" and lane == "run-" + first["id"], done
    assert alice.get("/v1/cells/" + done["cellId"]).status == 404
    assert alice.get("/v1/lanes/" + lane).status == 200
    second = dm.run_start(alice, {"agent": "shell", "prompt": "cat a.txt k.txt; rm k.txt",
                                  "repo": {"lane": lane}})
    done2, _ = dm.run_wait(alice, second["id"])
    assert done2["status"] == "succeeded", done2
    assert done2["result"]["output"] == "a\nkept\n"
    assert [(f["path"], f["status"]) for f in done2["result"]["changedFiles"]] == [("k.txt", "deleted")]


def test_an_upload_repo(alice):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"uploaded\n"
        info = tarfile.TarInfo("src/u.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    r = alice.call("POST", "/v1/runs/uploads", body=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
    assert r.status == 201, r
    run = dm.run_start(alice, {"agent": "shell", "prompt": "cat src/u.txt; echo more >> src/u.txt",
                               "repo": {"upload": r.body["upload"]}})
    done, _ = dm.run_wait(alice, run["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["output"] == "uploaded\n"
    assert [(f["path"], f["status"]) for f in done["result"]["changedFiles"]] == [("src/u.txt", "modified")]


def test_a_daemon_stop_mid_run_finishes_it(tmp_path):
    state = tmp_path / "stop"
    with dm.served(state) as dd:
        c = dd.client()
        run = dm.run_start(c, {"agent": "mock", "prompt": "no answer", "timeout_s": 300})
        events_until(c, run["id"], "agent.started")
    # Stopped (SIGTERM) with the run going: its driver finished it, and its cell went.
    with dm.served(state) as dd:
        c = dd.client()
        done = c.get("/v1/runs/" + run["id"]).body
        assert done["status"] == "failed", done
        assert done["result"]["error"]["type"] in ("daemon_stopping", "daemon_restarted"), done
        assert c.get("/v1/cells").body["cells"] == []


def test_an_agent_that_exits_mid_run_says_so(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "exit now"})
    done, events = dm.run_wait(alice, run["id"])
    assert done["status"] == "failed" and done["result"]["exitCode"] == 3, done
    err = done["result"]["error"]
    assert err["type"] == "agent_exited" and "exited with code 3" in err["message"], err
    assert [e["exitCode"] for e in events if e["type"] == "agent.exited"] == [3]
    assert alice.get("/v1/cells/" + done["cellId"]).status == 404


def test_an_agent_that_removes_the_workspace_still_loses_its_processes(alice):
    # The driver's helpers run in / (the kill, the tars): a shell that
    # removes /workspace and leaves a process behind gets it killed anyway.
    run = dm.run_start(alice, {"agent": "shell", "keep": "cell",
                               "prompt": "cd / && rm -rf /workspace; sleep 1000 >/dev/null 2>&1 &"})
    done, events = dm.run_wait(alice, run["id"])
    cid = done["result"]["cellId"]
    try:
        r = alice.post("/cells/%s/v1/processes/run" % cid, {"command": "ps", "args": ["-eo", "comm="], "cwd": "/"})
        assert r.status == 200, r
        assert "sleep" not in r.body["stdout"].split(), r.body
        assert events[-1]["type"] == "run.finished"
    finally:
        alice.delete("/v1/cells/" + cid)


def test_the_model_is_set_on_the_session(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "settings", "model": "mock-fast"})
    done, _ = dm.run_wait(alice, run["id"])
    assert "model=mock-fast" in done["result"]["output"], done
    bad = dm.run_start(alice, {"agent": "mock", "prompt": "settings", "model": "no-such-model"})
    done, _ = dm.run_wait(alice, bad["id"])
    assert done["status"] == "failed" and done["result"]["output"] == "", done
    assert "session/set_model" in done["result"]["error"]["message"], done


SCHEMA = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}


def test_output_schema_gives_structured_output_or_fails(alice):
    run = dm.run_start(alice, {"agent": "shell", "prompt": "echo x > f; echo '{\"a\": 1}'", "output_schema": SCHEMA})
    done, _ = dm.run_wait(alice, run["id"])
    assert done["status"] == "succeeded" and done["result"]["structuredOutput"] == {"a": 1}, done
    for out in ("'{\"a\": \"one\"}'", "not json"):
        run = dm.run_start(alice, {"agent": "shell", "prompt": "echo x > f; echo %s" % out, "output_schema": SCHEMA})
        done, _ = dm.run_wait(alice, run["id"])
        assert done["status"] == "failed" and done["result"]["error"]["type"] == "output_schema", done
        assert "structuredOutput" not in done["result"] and done["result"]["exitCode"] == 0


def test_a_lane_in_use_by_a_running_cell_is_refused(alice):
    name = dm.uniq("lane")
    assert alice.post("/v1/lanes", {"name": name}).status == 201
    cell = alice.post("/v1/cells", {"lane": name})
    assert cell.status == 201, cell
    try:
        run = dm.run_start(alice, {"agent": "shell", "prompt": "true", "repo": {"lane": name}})
        done, _ = dm.run_wait(alice, run["id"])
        assert done["status"] == "failed" and "attached to a running cell" in done["result"]["error"]["message"], done
    finally:
        alice.delete("/v1/cells/" + cell.body["id"])


# ---- the mock's scripts: tools, commands, permissions, usage ---------------------------------------


SCRIPT = "write src/a.txt hello\\n\nrun echo ran > ran.txt\nusage 100 20\nsay done"


def test_a_scripted_turn_end_to_end(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    run = dm.run_start(alice, {"agent": "mock", "prompt": SCRIPT, "repo": {"path": str(repo)}})
    done, events = dm.run_wait(alice, run["id"])
    res = done["result"]
    assert done["status"] == "succeeded", done
    assert res["output"].endswith("done"), res["output"]
    assert res["usage"] == {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120}, res["usage"]
    got = {(f["path"], f["status"]) for f in res["changedFiles"]}
    assert got == {("src/a.txt", "added"), ("ran.txt", "added")}, got
    t = types(events)
    for kind in ("tool.call", "tool.result", "permission.decided", "usage"):
        assert kind in t, t
    dec = [e for e in events if e["type"] == "permission.decided"]
    assert [(e["decision"], e["by"]) for e in dec] == [("allow", "policy")]
    assert sorted(os.listdir(repo)) == ["a.txt"]


def test_a_denied_command_does_not_run(alice):
    rules = {"default": "allow", "rules": [{"kind": "execute", "action": "deny"}]}
    run = dm.run_start(alice, {"agent": "mock", "prompt": "run echo ran > ran.txt\nsay after", "permissions": rules})
    done, events = dm.run_wait(alice, run["id"])
    assert [(e["decision"], e["by"]) for e in events if e["type"] == "permission.decided"] == [("deny", "policy")]
    assert done["result"]["changedFiles"] == [], done
    assert done["status"] == "succeeded", done


def test_a_flood_of_updates_loses_no_permission_request(alice):
    # More messages than the client's queue holds (4096) before the
    # permission request: the reader waits for the driver, nothing is lost.
    script = "\n".join(["say x"] * 6000 + ["run echo ran > ran.txt", "say end"])
    run = dm.run_start(alice, {"agent": "mock", "prompt": script, "timeout_s": 120})
    done, events = dm.run_wait(alice, run["id"], limit_s=150)
    assert done["status"] == "succeeded", done
    assert [f["path"] for f in done["result"]["changedFiles"]] == ["ran.txt"]
    assert done["result"]["output"].endswith("end")


def test_cancel_ends_a_sleeping_turn(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "write f.txt x\nsleep 600", "timeout_s": 900})
    rid = run["id"]
    events_until(alice, rid, "tool.call")
    assert alice.delete("/v1/runs/" + rid).status == 202
    done, events = dm.run_wait(alice, rid, limit_s=60)
    assert done["status"] == "canceled" and done["result"]["exitCode"] is None, done
    # The work done before the cancel is still the run's diff.
    assert [f["path"] for f in done["result"]["changedFiles"]] == ["f.txt"]
    assert alice.get("/v1/cells/" + done["cellId"]).status == 404


def test_keep_lane_over_the_lane_quota_fails_and_leaves_no_lane(d):
    name = dm.uniq("carol")
    carol = d.tenant(name)
    admin = d.client()
    # No lane allowed: the import's own quota check refuses the kept lane.
    # (Not maxDisk: a run's own files count against it, and a big diff
    # would have the finished run pruned at once.)
    assert admin.put("/v1/tenants/" + name, {"maxLanes": 0}).status == 200
    run = dm.run_start(carol, {"agent": "shell", "keep": "lane", "prompt": "echo x > f.txt"})
    done, _ = dm.run_wait(carol, run["id"])
    assert done["status"] == "failed" and done["result"]["error"]["type"] == "keep", done
    assert "quota" in done["result"]["error"]["message"], done
    assert "lane" not in done["result"]
    assert [f["path"] for f in done["result"]["changedFiles"]] == ["f.txt"]
    assert carol.get("/v1/lanes").body["lanes"] == []
    assert carol.get("/v1/cells").body["cells"] == []
