"""Runs with the mock agent, end to end, for what runagent.c does (the
backends, issue 12): the instructions, skills and attachments a run
materialises arrive where the agent reads them and never in the diff;
what the agent reports becomes the run's normalised events (tool calls,
file changes, commands and their exit codes); the permission policy
answers the agent's requests (deny, allow, ask); the output schema turns
the output into structuredOutput.  The mock's script words are in
src/agent/mock.c (test_mock_script.py drives it alone)."""
import pytest

import daemon as dm


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("runs-backends"))


@pytest.fixture(scope="module")
def alice(d):
    return d.tenant(dm.uniq("alice"))


def run(client, body, **kw):
    r = dm.run_start(client, dict({"agent": "mock"}, **body))
    return dm.run_wait(client, r["id"], **kw)


def of(events, type_):
    return [e for e in events if e["type"] == type_]


def test_instructions_skills_and_attachments_arrive_and_stay_out_of_the_diff(alice):
    res, ev = run(alice, {
        "prompt": "instructions\nrun cat /.cell-run/attachments/note.txt\nwrite made.txt x",
        "instructions": "Be brief.\nEnds here: \"quoted\" ]",
        "skills": [{"name": "lint.v2", "description": "Lint \"it\"\nnow", "body": "Run make lint.",
                    "files": {"scripts/run.sh": "#!/bin/sh\necho lint\n"}}],
        "attachments": [{"name": "note.txt", "text": "attached-text"}],
    })
    assert res["status"] == "succeeded", res
    out = res["result"]["output"]
    assert out.startswith("instructions: Be brief.\nEnds here: \"quoted\" ]\n"), out
    assert 'skill lint.v2: ---\nname: "lint.v2"\ndescription: "Lint \\"it\\"\\u000anow"\n---\n\nRun make lint.\n' in out
    assert "file lint.v2/scripts/run.sh\n" in out
    cat = [e for e in of(ev, "command.exit") if "attachments" in e["command"]]
    assert cat and cat[0]["exitCode"] == 0, ev
    results = {e["callId"]: e for e in of(ev, "tool.result")}
    assert results[cat[0]["callId"]]["output"]["output"] == "attached-text"
    # Only what the agent made is in the diff: nothing of /root or /.cell-run.
    assert [f["path"] for f in res["result"]["changedFiles"]] == ["made.txt"], res["result"]


def test_the_agents_reports_become_normalised_events(alice):
    res, ev = run(alice, {"prompt": "think let me see\nwrite a/b.txt hello\\nworld\nwrite gone.txt x\n"
                                    "delete gone.txt\nrun echo out; exit 3\nsay done"})
    assert res["status"] == "succeeded" and res["result"]["exitCode"] == 0, res
    assert res["result"]["output"] == "done"
    assert [e["text"] for e in of(ev, "message.delta") if e["role"] == "thought"] == ["let me see"]
    assert [(e["kind"], e["title"]) for e in of(ev, "tool.call")] == [
        ("edit", "a/b.txt"), ("edit", "gone.txt"), ("delete", "gone.txt"), ("execute", "echo out; exit 3")]
    assert [(e["path"], e["kind"]) for e in of(ev, "file.change")] == [
        ("a/b.txt", "added"), ("gone.txt", "added"), ("gone.txt", "deleted")]
    assert [e["command"] for e in of(ev, "command")] == ["echo out; exit 3"]
    assert [(e["command"], e["exitCode"]) for e in of(ev, "command.exit")] == [("echo out; exit 3", 3)]
    assert [e["status"] for e in of(ev, "tool.result")] == ["completed", "completed", "completed", "failed"]
    assert [f["path"] for f in res["result"]["changedFiles"]] == ["a/b.txt"]


def test_permission_policy_denies_allows_and_asks(alice):
    policy = {"default": "ask", "rules": [{"kind": "execute", "pattern": "rm *", "action": "deny"},
                                          {"kind": "execute", "pattern": "echo *", "action": "allow"}]}
    r = dm.run_start(alice, {"agent": "mock", "permissions": policy,
                             "prompt": "write keep.txt k\nrun rm -f keep.txt\nrun echo allowed\nrun touch asked.txt"})
    rid = r["id"]
    # "touch" matches no rule: the default asks the client.
    asked = dm.wait_for(lambda: of(dm.run_events(alice, rid, follow=False), "permission.asked"), 60, 0.1)
    assert asked and asked[0]["kind"] == "execute" and asked[0]["command"] == "touch asked.txt", asked
    r = alice.post("/v1/runs/%s/permissions/%s" % (rid, asked[0]["requestId"]), {"decision": "allow"})
    assert r.status == 204, r
    res, ev = dm.run_wait(alice, rid)
    assert res["status"] == "succeeded", res
    decided = [(e["decision"], e["by"]) for e in of(ev, "permission.decided")]
    assert decided == [("deny", "policy"), ("allow", "policy"), ("allow", "client")], decided
    exits = [(e["command"], e["exitCode"]) for e in of(ev, "command.exit")]
    assert exits == [("echo allowed", 0), ("touch asked.txt", 0)], exits
    assert sorted(f["path"] for f in res["result"]["changedFiles"]) == ["asked.txt", "keep.txt"]


def test_output_schema_gives_structured_output(alice):
    schema = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}},
              "additionalProperties": False}
    # (A file written too: the output stays the JSON alone.)
    res, _ = run(alice, {"prompt": "write x.txt 1\njson {\"ok\": true}", "output_schema": schema})
    assert res["status"] == "succeeded" and res["result"]["structuredOutput"] == {"ok": True}, (res["result"].get("error"), res["result"]["output"])
    res, _ = run(alice, {"prompt": "write x.txt 1\njson {\"ok\": 1, \"more\": 2}", "output_schema": schema})
    assert res["status"] == "failed", res
    assert res["result"]["error"]["type"] == "output_schema" and "/ok" in res["result"]["error"]["message"], res


def test_hostile_agent_config_is_refused_naming_the_field(alice):
    for body, field in [
        ({"skills": [{"name": "../x", "description": "d"}]}, "skills[0].name"),
        ({"skills": [{"name": "s", "description": "d", "files": {"../../etc/passwd": "x"}}]}, "skills[0].files"),
        ({"mcp": [{"name": "m", "type": "http", "url": "http://mcp.test",
                   "headers": {"Authorization": "Bearer ${secret:k}"}}]}, "mcp[0].headers"),
        ({"mcp": [{"name": "a]\nb", "type": "stdio", "command": "x"}]}, "mcp[0].name"),
        ({"permissions": {"rules": [{"action": "perhaps"}]}}, "permissions.rules[0].action"),
        ({"output_schema": {"type": "string", "pattern": ".*"}}, "output_schema"),
    ]:
        r = alice.post("/v1/runs", dict({"agent": "mock", "prompt": "hi"}, **body))
        dm.assert_problem(r, 400, detail_has=field)
