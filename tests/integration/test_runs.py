"""Runs (POST /v1/runs, issue 12) end to end with the mock agent and the
shell agent (the prompt run as a command in /workspace): what the issue's
"Tests" list asks beside the API checks of test_runs_api.py, the driver's
of test_runs_drive.py and the diff script's of test_rundiff.py.

    timeouts           an agent that never answers and a command that sleeps
                       ignoring SIGTERM end as timed_out (exitCode null),
                       their processes gone
    cancel             DELETE mid-run: 202, the run ends canceled, the agent
                       is killed, the cell removed; DELETE again: 204, gone
                       (concurrent DELETEs: test_runs_api.py)
    crash              an agent that exits mid-prompt or is SIGKILLed, a
                       command killed by a signal: the code (128+N), the run
                       failed
    symlinks           a repo whose links point at /etc/shadow, at a host
                       file and up out of the repo: the agent reads nothing
                       of the host through them, writing through them changes
                       no host file, the diff records links, not targets
                       (a repo.path through a link: test_runs_api.py)
    apply              as the repo's owner, once of two concurrent applies,
                       links made as links; a conflict writes nothing
    huge diff          capped inline (1 MiB), whole in the diff.patch artifact
    two tenants        ids, events, artifacts, cells, apply, resume: 404
                       across tenants, lists hold only one's own
    racing runs        concurrent runs changing one repo: each diff is its
                       own, the repo stays untouched
    keep "nothing"     after the run no cell, mount, process or file is left
                       but the run's record (a detached process too)

The agent is hostile throughout: what it writes is what the tests attack with.
"""
import json
import os
import pathlib
import threading
import uuid

import pytest

import daemon as dm

MiB = 1 << 20


class Dir(type(pathlib.Path())):
    """A path that takes attributes (what a fixture knows about it)."""


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return tmp_path_factory.mktemp("run-repos")


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A host directory outside the repo root, with a file the agent must
    neither read nor change."""
    o = Dir(tmp_path_factory.mktemp("outside"))
    o.secret = "host-secret-" + uuid.uuid4().hex
    (o / "secret.txt").write_text(o.secret + "\n")
    return o


@pytest.fixture(scope="module")
def d(tmp_path_factory, repos):
    yield from dm.serve(tmp_path_factory.mktemp("runs"), ["--run-repo-root", str(repos)])


def tenant(d, prefix):
    name = dm.uniq(prefix)
    c = d.tenant(name)
    c.tenant_name = name
    return c


@pytest.fixture(scope="module")
def alice(d):
    return tenant(d, "alice")


@pytest.fixture(scope="module")
def bob(d):
    return tenant(d, "bob")


def snapshot(root):
    return dm.tree_snapshot(root, dirs=True)


def make_repo(repos, name, files):
    r = repos / name
    r.mkdir()
    for rel, data in files.items():
        p = r / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)
    return r


def wait_event(client, rid, etype, limit_s=60):
    """The first event of this type (polling ?follow=false, bounded)."""
    got = dm.wait_for(lambda: next((e for e in dm.run_events(client, rid, follow=False, limit_s=10)
                                    if e["type"] == etype), None), limit_s, 0.1)
    assert got, (etype, dm.run_events(client, rid, follow=False, limit_s=10))
    return got


def cells_of_run(client, rid):
    return [c for c in client.get("/v1/cells").body["cells"] if c.get("run") == rid]


def mock_pids(d):
    """The mock agent's processes in this daemon's cells."""
    return [p for p in host_pids_with("cell-mock-agent") if str(d.state) in dm._read("/proc/%d/mountinfo" % p)]


def host_pids_with(marker):
    """Host processes whose command line holds marker."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(p))
            except OSError:
                pass
    return out


def shell(prompt, **extra):
    body = {"agent": "shell", "prompt": prompt}
    body.update(extra)
    return body


# ---- timeouts, cancel, crash -------------------------------------------------------------


def test_an_agent_that_never_answers_times_out(alice):
    # A first run boots what every later one reuses (the host image), so
    # that the timed one's 5 s go to the agent, not to that (ASan: ~2 s).
    warm = dm.run_start(alice, {"agent": "mock", "prompt": "hi"})
    assert dm.run_wait(alice, warm["id"], limit_s=60)[0]["status"] in dm.RUN_TERMINAL
    run = dm.run_start(alice, {"agent": "mock", "prompt": "no answer", "timeout_s": 5})
    done, ev = dm.run_wait(alice, run["id"], limit_s=60)
    assert done["status"] == "timed_out", done
    assert done["result"]["exitCode"] is None, done["result"]
    assert ev[-1]["type"] == "run.finished" and ev[-1]["status"] == "timed_out" and ev[-1]["exitCode"] is None
    assert "agent.started" in [e["type"] for e in ev]
    assert dm.wait_for(lambda: not cells_of_run(alice, run["id"]), 10), cells_of_run(alice, run["id"])


def test_a_command_that_sleeps_times_out_and_its_processes_go(alice):
    marker = str(100000 + int(uuid.uuid4().hex[:5], 16))
    # Hostile: it ignores the polite signals, so only SIGKILL (or the cell's end) stops it.
    run = dm.run_start(alice, shell("trap '' TERM HUP INT; sleep %s & sleep %s; echo never" % (marker, marker),
                                    timeout_s=1))
    done, ev = dm.run_wait(alice, run["id"], limit_s=60)
    assert done["status"] == "timed_out" and done["result"]["exitCode"] is None, done
    assert "never" not in done["result"]["output"]
    assert dm.wait_for(lambda: not host_pids_with("sleep\0" + marker), 10), host_pids_with(marker)
    assert dm.wait_for(lambda: not cells_of_run(alice, run["id"]), 10)


def test_cancel_mid_run(alice, d):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "no answer", "timeout_s": 600})
    rid = run["id"]
    wait_event(alice, rid, "agent.started")
    r = alice.delete("/v1/runs/" + rid)
    assert r.status == 202, r
    done, ev = dm.run_wait(alice, rid, limit_s=60)
    assert done["status"] == "canceled" and done["result"]["exitCode"] is None, done
    assert ev[-1]["type"] == "run.finished" and ev[-1]["status"] == "canceled"
    # Its agent killed and its cell removed (keep "nothing").
    assert dm.wait_for(lambda: not cells_of_run(alice, rid), 10)
    assert dm.wait_for(lambda: not mock_pids(d), 10), mock_pids(d)
    # A finished run: DELETE removes its record and files.
    r = alice.delete("/v1/runs/" + rid)
    assert r.status == 204, r
    assert alice.get("/v1/runs/" + rid).status == 404
    assert alice.get("/v1/runs/%s/events?follow=false" % rid).status == 404
    assert alice.get("/v1/runs/%s/artifacts/diff.patch" % rid).status == 404
    assert not os.path.exists(os.path.join(d.state, "runs", rid))
    assert alice.delete("/v1/runs/" + rid).status == 404


def test_an_agent_that_crashes_mid_run(alice):
    run = dm.run_start(alice, {"agent": "mock", "prompt": "exit now"})
    done, ev = dm.run_wait(alice, run["id"], limit_s=60)
    assert done["status"] == "failed", done
    assert done["result"]["exitCode"] == 3, done["result"]
    ex = [e for e in ev if e["type"] == "agent.exited"]
    assert ex and ex[0]["exitCode"] == 3, ev
    assert ev[-1]["type"] == "run.finished" and ev[-1]["exitCode"] == 3


def test_an_agent_killed_mid_run(alice, d):
    """An ACP agent that dies of a signal (as the OOM killer would do it)."""
    run = dm.run_start(alice, {"agent": "mock", "prompt": "no answer", "timeout_s": 600})
    wait_event(alice, run["id"], "agent.started")
    assert dm.wait_for(lambda: mock_pids(d), 10), "no mock agent process"
    for pid in mock_pids(d):
        os.kill(pid, 9)
    done, ev = dm.run_wait(alice, run["id"], limit_s=60)
    assert done["status"] == "failed" and done["result"]["exitCode"] == 128 + 9, done
    ex = [e for e in ev if e["type"] == "agent.exited"]
    assert ex and ex[0]["exitCode"] == 128 + 9, ev
    assert dm.wait_for(lambda: not cells_of_run(alice, run["id"]), 10)


def test_a_command_killed_by_a_signal(alice):
    run = dm.run_start(alice, shell("echo before; kill -SEGV $$"))
    done, _ = dm.run_wait(alice, run["id"], limit_s=60)
    assert done["status"] in dm.RUN_TERMINAL, done
    assert done["result"]["exitCode"] == 128 + 11, done["result"]
    assert "before" in done["result"]["output"]


def test_a_run_that_changes_nothing_has_an_empty_diff(alice, repos):
    repo = make_repo(repos, "same", {"f.txt": "f\n"})
    for extra in ({}, {"repo": {"path": str(repo)}}):
        run = dm.run_start(alice, shell("cat f.txt 2>/dev/null; true", **extra))
        done, _ = dm.run_wait(alice, run["id"], limit_s=60)
        res = done["result"]
        assert done["status"] == "succeeded", json.dumps(done)
        assert res["diff"] == "" and res["diffBytes"] == 0 and res["changedFiles"] == [], res
        assert res["diffTruncated"] is False and "error" not in res, res


# ---- symlinks pointing outside ---------------------------------------------------------


def test_symlinks_pointing_outside_the_repo(alice, repos, outside):
    repo = make_repo(repos, "links", {"a.txt": "a\n"})
    os.symlink("/etc/shadow", repo / "shadow")
    os.symlink(str(outside), repo / "hostdir")
    os.symlink(str(outside / "secret.txt"), repo / "victim")
    os.symlink("../" * 12 + str(outside).lstrip("/") + "/secret.txt", repo / "up")
    before, outside_before = snapshot(repo), snapshot(outside)
    try:
        with open("/etc/shadow") as f:
            shadow_line = f.readline().strip()
    except OSError:
        shadow_line = ""
    script = ("cat shadow hostdir/secret.txt victim up; ls -la hostdir/; "
              "echo pwned > victim; echo pwned >> up; echo pwned > hostdir/secret.txt; "
              "rm -f hostdir/secret.txt; "
              "ln -sf /etc/hostname shadow; ln -s /etc/passwd newlink; echo b > a.txt; true")
    run = dm.run_start(alice, shell(script, repo={"path": str(repo)}))
    done, ev = dm.run_wait(alice, run["id"], limit_s=120)
    res = done["result"]
    assert done["status"] in dm.RUN_TERMINAL and res is not None, done
    blob = json.dumps(done) + json.dumps(ev)
    # Nothing of the host was read through the links ...
    assert outside.secret not in blob, "the agent read a host file through a link"
    if shadow_line:
        assert shadow_line not in blob, "the agent read the host's /etc/shadow"
    # ... nor written through them, nor is the repo changed.
    assert snapshot(outside) == outside_before
    assert snapshot(repo) == before
    # The diff records links (mode 120000, the target as text), not what they point at.
    files = {f["path"]: f["status"] for f in res["changedFiles"]}
    assert files.get("newlink") == "added" and files.get("shadow") == "modified" and \
        files.get("a.txt") == "modified", res["changedFiles"]
    diff = res["diff"]
    assert "new file mode 120000" in diff and "+/etc/passwd" in diff and "+/etc/hostname" in diff, diff
    assert "root:x:0:0" not in diff and outside.secret not in diff
    # Writing through a link to a file the repo does not have leaves only
    # the workspace's own changes: no host path shows in the diff.
    for path in files:
        assert not path.startswith("/") and ".." not in path.split("/"), files


# ---- apply ---------------------------------------------------------------------------------


def chown_tree(root, uid):
    for top, dirs, files in os.walk(root):
        for x in dirs + files:
            os.lchown(os.path.join(top, x), uid, uid)
    os.lchown(root, uid, uid)


def test_apply_writes_as_the_owner_once_and_never_through_links(alice, repos, outside):
    owner = 4321
    repo = make_repo(repos, "owned", {"f.txt": "f\n", "old.txt": "old\n"})
    chown_tree(repo, owner)
    script = ("echo changed > f.txt; rm old.txt; mkdir -p sub; echo new > sub/new.txt; "
              "ln -s %s escape; ln -s /etc/passwd pw" % outside)
    run = dm.run_start(alice, shell(script, repo={"path": str(repo)}))
    rid = run["id"]
    done, _ = dm.run_wait(alice, rid, limit_s=60)
    assert done["status"] == "succeeded", json.dumps(done)
    outside_before = snapshot(outside)
    # Two applies at once: one applies, the other finds it applied (409).
    codes = []
    ts = [threading.Thread(target=lambda: codes.append(alice.post("/v1/runs/%s/apply" % rid, {}, timeout=60).status))
          for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    assert sorted(codes) == [200, 409], codes
    assert (repo / "f.txt").read_text() == "changed\n" and not (repo / "old.txt").exists()
    assert (repo / "sub" / "new.txt").read_text() == "new\n"
    # Links are made as links: nothing written where they point.
    assert os.readlink(repo / "escape") == str(outside) and os.readlink(repo / "pw") == "/etc/passwd"
    assert snapshot(outside) == outside_before
    for p in ("f.txt", "sub", "sub/new.txt", "escape", "pw"):
        assert os.lstat(repo / p).st_uid == owner, (p, os.lstat(repo / p).st_uid)


def test_apply_on_conflict_writes_nothing(alice, repos):
    repo = make_repo(repos, "conflict", {"a.txt": "a\n", "b.txt": "b\n"})
    run = dm.run_start(alice, shell("echo A > a.txt; echo B > b.txt; echo C > c.txt", repo={"path": str(repo)}))
    done, _ = dm.run_wait(alice, run["id"], limit_s=60)
    assert done["status"] == "succeeded", json.dumps(done)
    (repo / "b.txt").write_text("changed on the host meanwhile\n")
    before = snapshot(repo)
    b = dm.assert_problem(alice.post("/v1/runs/%s/apply" % run["id"], {}), 409, "conflict")
    assert "b.txt" in json.dumps(b["details"]["conflicts"]) and "a.txt" not in json.dumps(b["details"]["conflicts"]), b
    assert snapshot(repo) == before
    # A run without a path repo has no host directory to apply to.
    r = dm.run_start(alice, shell("echo x > x.txt"))
    assert dm.run_wait(alice, r["id"], limit_s=60)[0]["status"] == "succeeded"
    dm.assert_problem(alice.post("/v1/runs/%s/apply" % r["id"], {}), 400)


# ---- a huge diff ---------------------------------------------------------------------------


def test_a_huge_diff_is_capped_inline_and_whole_in_the_artifact(alice, repos):
    repo = make_repo(repos, "huge", {"small.txt": "x\n"})
    # ~3.4 MiB of added lines, and a binary file.
    run = dm.run_start(alice, shell("seq 1 500000 > big.txt; head -c 70000 /dev/urandom > blob.bin",
                                    repo={"path": str(repo)}))
    done, _ = dm.run_wait(alice, run["id"], limit_s=120)
    res = done["result"]
    assert done["status"] == "succeeded", done
    assert res["diffTruncated"] is True and res["diffBytes"] > 3 * MiB, {k: res[k] for k in ("diffBytes", "diffTruncated")}
    assert len(res["diff"].encode()) <= MiB, len(res["diff"])
    assert sorted((f["path"], f["status"], f["binary"]) for f in res["changedFiles"]) == \
        [("big.txt", "added", False), ("blob.bin", "added", True)], res["changedFiles"]
    art = next(a for a in res["artifacts"] if a["name"] == "diff.patch")
    r = alice.call("GET", "/v1/runs/%s/artifacts/diff.patch" % run["id"], timeout=60)
    assert r.status == 200 and len(r.raw) == res["diffBytes"] == art["bytes"], (r.status, len(r.raw), res["diffBytes"])
    assert r.raw.startswith(res["diff"].encode())
    assert b"\n+500000\n" in r.raw and b"GIT binary patch" in r.raw
    # The list leaves the diff out.
    listed = next(x for x in alice.get("/v1/runs").body["runs"] if x["id"] == run["id"])
    assert "diff" not in (listed.get("result") or {}), listed
    # The internal state tar is not served; names are not paths.
    for name in ("agent-state.tar", "../diff.patch", "..%2fdiff.patch", "%2e%2e", "nope"):
        assert alice.get("/v1/runs/%s/artifacts/%s" % (run["id"], name)).status in (400, 404), name


# ---- two tenants ---------------------------------------------------------------------------


def test_two_tenants_runs_are_isolated(alice, bob, d):
    a = dm.run_start(alice, shell("echo alice-was-here > mine.txt", keep="cell"))
    b = dm.run_start(bob, shell("echo bob-was-here > mine.txt"))
    adone, aev = dm.run_wait(alice, a["id"], limit_s=60)
    bdone, _ = dm.run_wait(bob, b["id"], limit_s=60)
    assert adone["status"] == bdone["status"] == "succeeded", (adone, bdone)
    assert a["id"] != b["id"]
    cid = adone["result"]["cellId"]
    try:
        for me, other, oid in ((bob, alice, a["id"]), (alice, bob, b["id"])):
            for method, path in (("GET", ""), ("GET", "/events?follow=false"), ("GET", "/events"),
                                 ("GET", "/artifacts/diff.patch"), ("POST", "/apply"),
                                 ("POST", "/permissions/x"), ("DELETE", "")):
                r = me.call(method, "/v1/runs/" + oid + path,
                            json_body={"decision": "allow"} if method == "POST" else None, timeout=20)
                assert r.status == 404, (method, path, r)
            assert oid not in json.dumps(me.get("/v1/runs").body)
            r = me.post("/v1/runs", {"agent": "mock", "prompt": "hi", "resume": {"run": oid}})
            assert r.status in (400, 404), r
        # The kept cell is alice's: bob cannot see or use it.
        assert bob.get("/v1/cells/" + cid).status == 404
        assert bob.post("/cells/%s/v1/processes/run" % cid, {"command": "true"}).status in (403, 404)
        assert alice.get("/v1/cells/" + cid).body.get("run") == a["id"]
        # Each tenant's diff is its own.
        assert "alice-was-here" in adone["result"]["diff"] and "bob" not in adone["result"]["diff"]
        assert "bob-was-here" in bdone["result"]["diff"] and "alice" not in bdone["result"]["diff"]
        # An admin sees each tenant's with ?tenant=.
        admin = d.client()
        ids = [x["id"] for x in admin.get("/v1/runs", query={"tenant": alice.tenant_name}).body["runs"]]
        assert a["id"] in ids and b["id"] not in ids, ids
    finally:
        alice.delete("/v1/cells/" + cid)


# ---- racing runs on one repo ---------------------------------------------------------------


def test_concurrent_runs_on_one_repo_leave_it_untouched(alice, repos):
    repo = make_repo(repos, "shared", {"f.txt": "base\n", "gone.txt": "x\n", "d/g.txt": "g\n"})
    before = snapshot(repo)
    n, runs, lock = 5, [], threading.Lock()

    def one(i):
        r = dm.run_start(alice, shell("echo run-%d > f.txt; rm gone.txt; echo %d > new-%d.txt; rm -r d" % (i, i, i),
                                      repo={"path": str(repo)}))
        with lock:
            runs.append((i, r["id"]))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(runs) == n, runs
    for i, rid in sorted(runs):
        done, _ = dm.run_wait(alice, rid, limit_s=120)
        res = done["result"]
        assert done["status"] == "succeeded", done
        got = sorted((f["path"], f["status"]) for f in res["changedFiles"])
        assert got == [("d/g.txt", "deleted"), ("f.txt", "modified"), ("gone.txt", "deleted"),
                       ("new-%d.txt" % i, "added")], (i, got)
        assert "+run-%d" % i in res["diff"] and all("run-%d" % j not in res["diff"] for j in range(n) if j != i)
    assert snapshot(repo) == before


# ---- nothing left --------------------------------------------------------------------------


def state_paths(state):
    out = set()
    for top, dirs, files in os.walk(state):
        for x in dirs + files:
            out.add(os.path.relpath(os.path.join(top, x), state))
    return out


@pytest.fixture
def quiet(tmp_path, repos):
    """A daemon of its own without a warm pool, so that nothing boots
    beside the run."""
    with dm.served(tmp_path / "quiet", ["--run-repo-root", str(repos), "--warm", "0"]) as dd:
        yield dd


def test_keep_nothing_leaves_nothing_but_the_record(quiet, repos):
    d = quiet
    carol = tenant(d, "carol")
    repo = make_repo(repos, "clean", {"f.txt": "f\n"})
    # A first run prepares what every later one shares (the host image).
    first = dm.run_start(carol, shell("echo warm > w.txt"))
    warm = dm.run_wait(carol, first["id"], limit_s=60)[0]
    assert warm["status"] == "succeeded", json.dumps(warm)
    assert carol.delete("/v1/runs/" + first["id"]).status == 204
    marker = str(200000 + int(uuid.uuid4().hex[:5], 16))
    mounts0 = set(dm.mounts_under(d.state))
    pids0 = set(dm.cell_pids_of_state(d.state))
    paths0 = state_paths(d.state)
    # A process that leaves the agent's group and outlives the command.
    run = dm.run_start(carol, shell("setsid sleep %s </dev/null >/dev/null 2>&1 & echo x > f.txt" % marker,
                                    repo={"path": str(repo)}))
    rid = run["id"]
    done, _ = dm.run_wait(carol, rid, limit_s=60)
    assert done["status"] == "succeeded" and "cellId" not in done["result"] and "lane" not in done["result"], done
    assert dm.wait_for(lambda: not carol.get("/v1/cells").body["cells"], 10), carol.get("/v1/cells").body
    assert carol.get("/v1/lanes").body.get("lanes", []) == []
    assert dm.wait_for(lambda: not host_pids_with("sleep\0" + marker), 10), host_pids_with(marker)
    assert dm.wait_for(lambda: set(dm.mounts_under(d.state)) <= mounts0, 10), \
        set(dm.mounts_under(d.state)) - mounts0
    assert dm.wait_for(lambda: set(dm.cell_pids_of_state(d.state)) <= pids0, 10)
    # Files: only the run's own record directory (and the store's journal) is new.
    new = {p for p in state_paths(d.state) - paths0
           if not (p == "runs" or p.startswith(os.path.join("runs", rid)) or p.endswith(("-wal", "-shm", "-journal")))}
    assert new == set(), sorted(new)
    assert os.path.isdir(os.path.join(d.state, "runs", rid))
    assert [e for e in os.listdir(os.path.join(d.state, "runs")) if rid in e] == [rid]
    assert snapshot(repo) == {"f.txt": b"f\n"}
