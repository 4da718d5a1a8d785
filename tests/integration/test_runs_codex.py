"""End to end: POST /v1/runs with the real Codex agent (codex-acp, installed
by the daemon from npm) on a host repository, against a fake OpenAI model
(fakemodel.py) reached only through the run's egress policy, with the model
key brokered on the host (`key: {secret, baseUrl}`), issue 12's test:

    198.18.43.53:53  DNS: model.test -> 198.18.43.10
    198.18.43.10:80  the fake model (the Responses API, scripted per request)

The fake model asks for a shell command that edits a file of the repo; the
run's diff must show exactly that change (nothing of the instructions,
skills or config the daemon wrote for Codex under /root), the host repo
must stay untouched until POST /v1/runs/{id}/apply and then be changed
exactly so; the sessionId is reported (usage: below); a resumed run
({"resume": {"run": ID}}) continues the session: the model sees the
earlier turn in its input.

What codex-acp 0.16.0 reports as usage (probed against this fake): one
`usage_update {used, size}` per model response, `used` being that
response's total_tokens (the context in use, not a sum over the turn) and
`size` the context window; no input/output split and no usage in the
prompt's answer.  That is not a count of tokens spent, so a codex run's
usage is what the egress engine metered of the model's responses on the
host (the key's rule has "meter": "openai"): usageSource "egress".

The attacks: the real key (and an MCP server's header secret) must be
nowhere the run's cell can read (its spec, its processes' environments, its
files), nor in the run's JSON or events, while the upstream got both; the
repo is a git repository whose .git must not change and must not show in
the diff; applying twice, or a patch the repo no longer matches, is a 409
that writes nothing.  Release stage only (a real download, a 230 MB agent).
"""
import json
import os
import pathlib
import subprocess
import uuid

import pytest

import daemon as dm
import fakemodel
import netfake

pytestmark = pytest.mark.skipif(dm.ASAN or dm.TSAN, reason="release stage only: a real agent, slow under sanitizers")

NET = netfake.claim("198.18.43", __name__)
KEY = "sk-real-" + uuid.uuid4().hex            # the model key: never in the cell
MCP_TOKEN = "mcp-real-" + uuid.uuid4().hex     # an MCP header's secret: never in the cell
INSTR = "INSTR-" + uuid.uuid4().hex[:12]       # marks the instructions
SKILL = "SKILL-" + uuid.uuid4().hex[:12]       # marks the skill
PROMPT1 = "Edit notes.txt please (" + uuid.uuid4().hex[:8] + ")"
PROMPT2 = "Now add a file (" + uuid.uuid4().hex[:8] + ")"
USAGE = (1000, 234)                            # what the fake reports per response


class Dir(type(pathlib.Path())):
    """A path that takes attributes (what a fixture knows about it)."""


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with fakemodel.network(NET, tmp_path_factory.mktemp("model-certs")) as n:
        n.model = n.models["http"]
        n.model.usage = USAGE
        yield n


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return tmp_path_factory.mktemp("run-repos")


@pytest.fixture(scope="module")
def d(tmp_path_factory, net, repos):
    yield from dm.serve(tmp_path_factory.mktemp("runs-codex"),
                        ["--upstream-ca", net.ca, "--allow-tenant-dest", NET + ".0/24",
                         "--run-repo-root", str(repos)])


@pytest.fixture(scope="module")
def alice(d):
    c = d.tenant(dm.uniq("alice"))
    # A ${secret:NAME} is a header's whole value: the secret holds "Bearer ...".
    for name, value in (("OPENAI_KEY", KEY), ("MCP_TOKEN", "Bearer " + MCP_TOKEN)):
        r = c.post("/v1/secrets", {"name": name, "value": value})
        assert r.status in (200, 201, 204), r
    return c


@pytest.fixture(scope="module")
def installed(alice):
    """Codex in the daemon's cache (npm, once), through a cell of its own,
    so that the runs below time Codex, not npm."""
    if not dm.npm_reachable():
        pytest.skip("the npm registry %s is not reachable from this host: codex cannot be installed"
                    % dm.NPM_REGISTRY)
    r = alice.post("/v1/cells", {})
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        r = alice.call("POST", "/cells/%s/v1/agents/codex/install" % cid, json_body={}, timeout=900)
        assert r.status == 200, r
    finally:
        alice.delete("/v1/cells/" + cid)
    return True


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo)] + list(args), capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}).stdout


def snapshot(root):
    return dm.tree_snapshot(root)


@pytest.fixture(scope="module")
def repo(repos):
    """A git repository on the host, under the daemon's --run-repo-root."""
    r = Dir(repos / "proj")
    r.mkdir()
    (r / "notes.txt").write_text("original line\n")
    (r / "keep.txt").write_text("not touched\n")
    (r / "src").mkdir()
    (r / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    git(r, "init", "-q")
    git(r, "add", "-A")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    r.before = snapshot(r)
    return r


def run_body(net, prompt, **extra):
    body = {"agent": "codex", "prompt": prompt,
            "key": {"secret": "OPENAI_KEY", "baseUrl": "http://model.test/v1"},
            "policy": {"rules": [net.dns_rule]},
            "resources": {"memory": "1G"}, "timeout_s": 600}
    body.update(extra)
    return body


@pytest.fixture(scope="module")
def first(alice, net, repo, installed):
    """Run 1: the model asks for a command that edits notes.txt, then
    answers; kept as a cell so the tests can look into it."""
    m = net.model
    m.script([fakemodel.call("exec_command", {"cmd": "printf 'changed by codex\\n' > notes.txt",
                                              "workdir": "/workspace", "justification": "edit the notes"})],
             [fakemodel.text("Edited", " notes.txt.")])
    seen0 = len(m.seen)
    run = dm.run_start(alice, run_body(
        net, PROMPT1, repo={"path": str(repo)}, keep="cell",
        instructions="Always answer briefly. " + INSTR,
        skills=[{"name": "tidy-notes", "description": "Keeps notes tidy " + SKILL,
                 "body": "# Tidy notes\nWrap lines at 72 columns.\n"}],
        # Another host than the model's: the model key's rule covers all of model.test.
        mcp=[{"name": "docs", "type": "http", "url": "http://mcp.test/mcp",
              "headers": {"Authorization": "${secret:MCP_TOKEN}"}}]))
    assert run["status"] in ("queued", "starting") and run["agent"] == "codex", run
    assert len(run["id"]) == 16 and run["keep"] == "cell", run
    done, events = dm.run_wait(alice, run["id"], limit_s=600)
    yield {"run": done, "events": events, "seen": m.seen[seen0:], "repo_after": snapshot(repo)}
    cid = (done.get("result") or {}).get("cellId")
    if cid:
        alice.delete("/v1/cells/" + cid)


def test_the_run_succeeds_with_the_models_answer_and_session(first):
    run, ev = first["run"], first["events"]
    res = run["result"]
    assert run["status"] == "succeeded", (run, ev[-5:])
    assert res["exitCode"] == 0 and "error" not in res, res
    assert res["output"] == "Edited notes.txt.", res
    assert isinstance(res["sessionId"], str) and res["sessionId"], res
    t = run["timings"]
    assert t["acceptedMs"] <= t["cellReadyMs"] <= t["agentStartedMs"] <= t["agentDoneMs"] <= t["finishedMs"], t
    types = [e["type"] for e in ev]
    assert types[-1] == "run.finished" and ev[-1]["status"] == "succeeded" and ev[-1]["exitCode"] == 0, ev[-1]
    assert [e["seq"] for e in ev] == sorted(e["seq"] for e in ev) and len({e["seq"] for e in ev}) == len(ev)
    for want in ("run.started", "agent.started", "tool.call", "tool.result", "message.delta"):
        assert want in types, (want, types)
    assert "".join(e["text"] for e in ev if e["type"] == "message.delta" and e["role"] == "assistant") \
        == "Edited notes.txt."
    call = next(e for e in ev if e["type"] == "tool.call")
    assert call["kind"] == "execute" and "notes.txt" in call["title"], call
    # The command and its exit code, as the issue asks.
    exits = [e for e in ev if e["type"] == "command.exit"]
    assert exits and exits[0]["exitCode"] == 0 and "notes.txt" in exits[0]["command"], exits
    # Codex asked to run it; the default policy ("allow") answered.
    dec = [e for e in ev if e["type"] == "permission.decided"]
    assert dec and dec[0]["decision"] == "allow" and dec[0]["by"] == "policy", dec


def test_usage_is_metered_by_egress(first, alice):
    """codex-acp 0.16.0 reports no token consumption (only usage_update's
    context occupancy `used`/`size`, which is not a count of tokens spent):
    the run's usage is the fake's numbers summed over the model responses
    of the run, as the egress engine read them from the responses on the
    host, and the kept cell's GET shows the same."""
    res, ev = first["run"]["result"], first["events"]
    k = len([s for s in first["seen"] if s["path"].endswith("/responses")])
    want = {"inputTokens": USAGE[0] * k, "outputTokens": USAGE[1] * k, "totalTokens": sum(USAGE) * k}
    assert k >= 2 and res["usage"] == want and res["usageSource"] == "egress", (res["usage"], want, res)
    assert alice.get("/v1/cells/" + res["cellId"]).body["usage"] == want
    # codex's own usage_update {used, size} is not taken as a usage.
    assert not [e for e in ev if e["type"] == "usage"], ev


def test_the_diff_is_exactly_the_change(first, repo):
    res = first["run"]["result"]
    assert res["changedFiles"] == [{"path": "notes.txt", "status": "modified", "binary": False}], res["changedFiles"]
    diff = res["diff"]
    assert "-original line" in diff and "+changed by codex" in diff, diff
    # Nothing else: not the instructions, skills, MCP or Codex config the
    # daemon wrote under /root, not .git.
    files = [l for l in diff.splitlines() if l.startswith("diff --git")]
    assert files == ["diff --git a/notes.txt b/notes.txt"], diff
    for bad in (INSTR, SKILL, "AGENTS.md", "SKILL.md", "config.toml", ".git/", "MCP_TOKEN"):
        assert bad not in diff, bad
    assert res["diffBytes"] == len(diff.encode()) and res["diffTruncated"] is False, res
    # The whole patch is served as an artifact, the same bytes.
    names = [a["name"] for a in res["artifacts"]]
    assert "diff.patch" in names and "agent-state.tar" not in names, res["artifacts"]


def test_the_materialised_instructions_and_skill_reach_codex(first):
    """Codex read them from its own files (the model's request shows them),
    which the diff above does not: they were written under /root."""
    bodies = [json.dumps(s["body"]) for s in first["seen"] if s["path"].endswith("/responses")]
    assert bodies, first["seen"]
    assert INSTR in bodies[0], "the instructions did not reach codex"
    assert SKILL in bodies[0], "the skill did not reach codex"
    assert PROMPT1 in bodies[0]


def test_the_host_repo_is_untouched_by_the_run(first, repo):
    assert first["repo_after"] == repo.before
    assert git(repo, "status", "--porcelain") == ""


def test_the_keys_reach_the_upstream_and_never_the_cell(first, alice, d):
    seen = first["seen"]
    resp = [s for s in seen if s["path"].endswith("/responses")]
    assert resp and {s["headers"].get("authorization") for s in resp} == {"Bearer " + KEY}
    # The MCP server's header: its ${secret:...} put in on the host.
    mcp = [s for s in seen if s["path"].startswith("/mcp")]
    assert mcp and {s["headers"].get("authorization") for s in mcp} == {"Bearer " + MCP_TOKEN}, mcp
    run = first["run"]
    for secret in (KEY, MCP_TOKEN):
        assert secret not in json.dumps(run), "the run JSON holds a secret"
        assert secret not in json.dumps(first["events"]), "an event holds a secret"
        assert secret not in json.dumps(alice.get("/v1/runs").body)
    # The kept cell: its spec, its processes, its files.
    cid = run["result"].get("cellId")
    assert cid and cid == run["cellId"], run
    spec = alice.get("/v1/cells/" + cid)
    assert spec.status == 200 and spec.body.get("run") == run["id"], spec
    assert KEY not in json.dumps(spec.body) and MCP_TOKEN not in json.dumps(spec.body)
    for pid in dm.cell_pids_of_state(d.state):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read()
        except OSError:
            continue
        assert KEY.encode() not in env and MCP_TOKEN.encode() not in env, pid
    r = alice.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c",
        "grep -rlF -e %s -e %s /root /tmp /etc /var /home /run /workspace /.cell-run 2>/dev/null; "
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -F -e %s -e %s; echo end"
        % (KEY, MCP_TOKEN, KEY, MCP_TOKEN)]})
    assert r.status == 200 and r.body["stdout"].strip() == "end", r
    # Codex's own config is there (something to search), under /root only.
    r = alice.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c",
        "ls -d /root/.codex && ls -a /workspace"]})
    assert r.status == 200 and "/root/.codex" in r.body["stdout"], r
    assert sorted(r.body["stdout"].split()[1:]) == sorted([".", "..", ".git", "keep.txt", "notes.txt", "src"]), r


def test_resume_continues_the_session(first, alice, net, repo):
    m = net.model
    m.script([fakemodel.call("exec_command", {"cmd": "echo added > added.txt", "workdir": "/workspace",
                                              "justification": "add the file"})],
             [fakemodel.text("Added", " it.")])
    seen0 = len(m.responses())
    prev = first["run"]
    run = dm.run_start(alice, run_body(net, PROMPT2, resume={"run": prev["id"]}))
    done, ev = dm.run_wait(alice, run["id"], limit_s=600)
    res = done["result"]
    assert done["status"] == "succeeded", (done, ev[-5:])
    assert done.get("resumedFrom") == prev["id"], done
    assert res["sessionId"] == prev["result"]["sessionId"], (res["sessionId"], prev["result"]["sessionId"])
    assert res["output"] == "Added it.", res
    # The model saw the earlier turn: the first prompt, its command's output.
    calls = m.responses()[seen0:]
    assert calls, m.seen[-3:]
    inp = json.dumps(calls[0]["body"]["input"])
    assert PROMPT1 in inp and PROMPT2 in inp, inp[-3000:]
    assert any(i.get("type") == "function_call_output" for i in calls[0]["body"]["input"]), inp[-3000:]
    # The diff is cumulative against the original repo.
    got = sorted((f["path"], f["status"]) for f in res["changedFiles"])
    assert got == [("added.txt", "added"), ("notes.txt", "modified")], res["changedFiles"]
    assert snapshot(repo) == repo.before
    first["resumed"] = done


def test_a_plain_codex_run(first, alice, net):
    """Only a prompt and the key: no instructions, skills, MCP or repo."""
    net.model.script([fakemodel.text("Plain", " answer.")])
    run = dm.run_start(alice, run_body(net, "Say something"))
    done, ev = dm.run_wait(alice, run["id"], limit_s=600)
    assert done["status"] == "succeeded", json.dumps(ev)[-2000:]
    assert done["result"]["output"] == "Plain answer." and done["result"]["changedFiles"] == [], done["result"]


def test_a_command_the_policy_denies_does_not_run(first, alice, net, repo):
    """permissions deny for execute: Codex's request is refused by the
    policy, the command never runs, the diff is empty."""
    net.model.script([fakemodel.call("exec_command", {"cmd": "echo denied > denied.txt", "workdir": "/workspace",
                                                      "justification": "a command the policy refuses"})],
                     [fakemodel.text("Not", " done.")])
    run = dm.run_start(alice, run_body(net, "Try a command", repo={"path": str(repo)},
                                       permissions={"default": "allow", "rules": [{"kind": "execute",
                                                                                   "action": "deny"}]}))
    done, ev = dm.run_wait(alice, run["id"], limit_s=600)
    assert done["status"] in dm.RUN_TERMINAL, done
    dec = [e for e in ev if e["type"] == "permission.decided"]
    assert dec and all(e["decision"] == "deny" and e["by"] == "policy" for e in dec), json.dumps(ev)[-3000:]
    assert not any(e["type"] == "command.exit" and "denied.txt" in e.get("command", "") for e in ev), ev
    assert done["result"]["changedFiles"] == [] and done["result"]["diff"] == "", done["result"]
    assert snapshot(repo) == repo.before


def test_apply_changes_the_host_repo_exactly_so(first, alice, repo):
    rid = first["run"]["id"]
    assert snapshot(repo) == repo.before
    r = alice.post("/v1/runs/%s/apply" % rid, {})
    assert r.status == 200 and r.body["applied"] is True, r
    assert [f["path"] for f in r.body["changedFiles"]] == ["notes.txt"], r
    after = snapshot(repo)
    want = dict(repo.before)
    want["notes.txt"] = b"changed by codex\n"
    changed = {k for k in set(after) | set(want) if not k.startswith(".git/") and after.get(k) != want.get(k)}
    assert changed == set(), changed
    assert git(repo, "status", "--porcelain") == " M notes.txt\n"
    # Twice: the patch no longer applies; nothing is written.
    dm.assert_problem(alice.post("/v1/runs/%s/apply" % rid, {}), 409)
    # The resumed run's cumulative patch holds the same change: a conflict
    # naming notes.txt, and its added.txt is not written either.
    if "resumed" in first:
        r = alice.post("/v1/runs/%s/apply" % first["resumed"]["id"], {})
        b = dm.assert_problem(r, 409, "conflict")
        assert "notes.txt" in json.dumps(b.get("details", {}).get("conflicts")), b
    assert not (repo / "added.txt").exists()
    assert git(repo, "status", "--porcelain") == " M notes.txt\n"


def test_the_cli_runs_codex_and_applies(first, alice, net, repos, d, tmp_path):
    """`cell agent run --agent codex --repo DIR --diff --apply`: the
    progress, the answer and the patch printed, the host repo changed
    only by --apply at the end, exactly so."""
    r = Dir(repos / "cliproj")
    r.mkdir()
    (r / "notes.txt").write_text("cli original\n")
    (r / "other.txt").write_text("other\n")
    before = snapshot(r)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"rules": [net.dns_rule]}))
    instr = tmp_path / "AGENTS.md"
    instr.write_text("Keep notes short.\n")
    net.model.script([fakemodel.call("exec_command", {"cmd": "printf 'changed by the cli run\\n' > notes.txt",
                                                      "workdir": "/workspace", "justification": "edit"})],
                     [fakemodel.text("CLI", " run done.")])
    env = dict(os.environ, CELL_TOKEN=alice.token)
    p = subprocess.run([dm.CELL_BIN, "--url", "http://127.0.0.1:%d" % d.port, "agent", "run", "--agent", "codex",
                        "--repo", str(r), "--key", "OPENAI_KEY,base=http://model.test/v1", "--policy", str(policy),
                        "--instructions", str(instr), "--timeout", "600", "--diff", "--apply", "Edit the notes"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert "CLI run done." in p.stdout, p.stdout
    assert "+changed by the cli run" in p.stdout and "-cli original" in p.stdout, p.stdout
    assert KEY not in p.stdout + p.stderr
    after = snapshot(r)
    assert after == dict(before, **{"notes.txt": b"changed by the cli run\n"}), after


def test_another_tenant_cannot_see_or_apply_the_run(first, d):
    bob = d.tenant(dm.uniq("bob"))
    rid = first["run"]["id"]
    for method, path in (("GET", ""), ("GET", "/events?follow=false"), ("POST", "/apply"),
                         ("GET", "/artifacts/diff.patch"), ("DELETE", "")):
        r = bob.call(method, "/v1/runs/" + rid + path, json_body={} if method == "POST" else None)
        assert r.status == 404, (method, path, r)
    assert rid not in json.dumps(bob.get("/v1/runs").body)
