"""`cell agent run` and `cell agent runs` (src/cli/agent_cmds.c) against a
FAKE daemon (fakedaemon.py) that answers the /v1/runs routes with recorded
events, or with hostile answers: progress output, --json lines, exit codes,
Ctrl-C cancel, SSE reconnects with Last-Event-ID, huge and malformed events,
a run id with '../', terminal escapes in the agent's text, bad options, the
repository sent as a path or uploaded as a tar, --diff and --apply.  No root
and no real daemon needed; every CLI run is bounded by a subprocess timeout.
"""
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import tarfile
import threading
import time

import pytest

import daemon as dm
from conftest import CELL_BIN, run_cell
from fakedaemon import RUN_TIMEOUT, fake_factory

RID = "0123456789abcdef"
PATCH = ("diff --git a/a.txt b/a.txt\nindex 0000000000000000000000000000000000000000..0000000000000000000000000000000000000000 100644\n"
         "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-one\n+two\n")


@pytest.fixture
def fake():
    yield from fake_factory()


def events_for(exit_code=0, status="succeeded", text="all done\n"):
    return [
        {"type": "run.status", "status": "starting"},
        {"type": "run.started", "agent": "mock", "cellId": "c0ffee000001"},
        {"type": "agent.started"},
        {"type": "command", "callId": "t1", "command": "make test"},
        {"type": "command.exit", "callId": "t1", "command": "make test", "exitCode": 2},
        {"type": "file.change", "path": "a.txt", "kind": "modified"},
        {"type": "message.delta", "role": "assistant", "text": text},
        {"type": "usage", "inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
        {"type": "agent.exited", "exitCode": exit_code if exit_code is not None else 0},
        {"type": "run.finished", "status": status, "exitCode": exit_code, "durationMs": 1234},
    ]


def run_json(status="succeeded", exit_code=0, repo=None, diff=PATCH, truncated=False, result=True):
    r = {"id": RID, "agent": "mock", "status": status, "createdAtMs": 1700000000000, "keep": "nothing",
         "repo": repo or {"path": "/x"}, "timings": {}, "result": None}
    if result:
        r["result"] = {"exitCode": exit_code, "output": "all done\n", "sessionId": "s1",
                       "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
                       "diff": diff, "diffBytes": len(diff), "diffTruncated": truncated,
                       "changedFiles": [{"path": "a.txt", "status": "modified", "binary": False}],
                       "artifacts": [], "durationMs": 1234}
    return r


def sse(events, start=1):
    out = b""
    for i, e in enumerate(events, start):
        e = dict(e, seq=i, timeMs=1700000000000 + i)
        out += b"id: %d\nevent: %s\ndata: %s\n\n" % (i, e["type"].encode(), json.dumps(e).encode())
    return out


def send(conn, status, body=b"", ctype=b"application/json"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    if status == 204:
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        return
    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (status, ctype, len(body), body))


def problem(conn, status, detail, **extra):
    send(conn, status, dict({"title": "x", "status": status, "detail": detail}, **extra), b"application/problem+json")


class Runs:
    """The /v1/runs routes with a scenario; records what the CLI asked."""

    def __init__(self, events=None, run=None, post=None):
        self.events = events if events is not None else events_for()
        self.run = run or run_json()
        self.post = post or {"id": RID, "agent": "mock", "status": "queued"}
        self.bodies = []            # POST /v1/runs bodies
        self.uploads = []           # upload bytes
        self.requests = []          # (method, path, headers text)
        self.decisions = []
        self.path_forbidden = False
        self.apply_reply = (200, {"applied": True, "changedFiles": [{"path": "a.txt", "status": "modified"}]})
        self.stream = None          # a function(conn, head, n) for the events route, n = 0, 1, ...
        self.stream_calls = 0
        self.canceled = threading.Event()
        self.patch = PATCH.encode()

    def answer(self, conn, head, fake):
        line = head.split(b"\r\n")[0].decode()
        method, target, _ = line.split(" ")
        self.requests.append((method, target, head.decode("latin-1")))
        body = conn.read_body(head) if method in ("POST", "PUT") else b""
        path = target.split("?")[0]
        if method == "POST" and path == "/v1/runs/uploads":
            self.uploads.append(body)
            send(conn, 201, {"upload": "up%d" % len(self.uploads), "bytes": len(body)})
        elif method == "POST" and path == "/v1/runs":
            b = json.loads(body)
            self.bodies.append(b)
            if self.path_forbidden and "path" in (b.get("repo") or {}):
                problem(conn, 403, "repo.path: this token may not run on host paths")
            else:
                send(conn, 202, self.post)
        elif method == "GET" and path == "/v1/runs":
            send(conn, 200, {"runs": [self.run]})
        elif method == "GET" and path == "/v1/runs/%s/events" % RID:
            n = self.stream_calls
            self.stream_calls += 1
            if self.stream:
                return self.stream(conn, head, n)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + sse(self.events))
            return False
        elif method == "GET" and path == "/v1/runs/%s" % RID:
            send(conn, 200, self.run)
        elif method == "DELETE" and path == "/v1/runs/%s" % RID:
            self.canceled.set()
            send(conn, 202, self.run)
        elif method == "POST" and path.startswith("/v1/runs/%s/permissions/" % RID):
            self.decisions.append((path.rsplit("/", 1)[1], json.loads(body)))
            send(conn, 204)
        elif method == "POST" and path == "/v1/runs/%s/apply" % RID:
            status, reply = self.apply_reply
            if status == 200:
                send(conn, 200, reply)
            else:
                problem(conn, status, "the patch does not apply", details=reply)
        elif method == "GET" and path == "/v1/runs/%s/artifacts/diff.patch" % RID:
            send(conn, 200, self.patch, b"text/x-diff")
        else:
            problem(conn, 404, "no such route " + target)
        return True

    def paths(self, method=None):
        return [p for m, p, _ in self.requests if method is None or m == method]


def start(fake, runs):
    return fake(runs.answer)


def agent(f, *args, **kw):
    return f.cli("agent", *args, **kw)


# ---- progress, JSON lines, exit codes ------------------------------------------------------------


def test_progress_messages_and_summary(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--agent", "mock", "--no-repo", "fix", "it")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "all done\n"
    assert "$ make test\n  exit 2\n" in r.stderr
    assert "  M a.txt\n" in r.stderr
    assert "run %s succeeded, exit 0, 1.2 s" % RID in r.stderr
    assert "usage: 10 input, 5 output, 15 total tokens" in r.stderr
    assert runs.bodies == [{"agent": "mock", "prompt": "fix it"}]
    assert runs.paths("GET")[-1] == "/v1/runs/%s" % RID


def test_json_lines_then_the_run(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--json", "--no-repo", "go")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["type"] for l in lines[:-1]] == [e["type"] for e in runs.events]
    assert [l["seq"] for l in lines[:-1]] == list(range(1, len(runs.events) + 1))
    assert lines[-1]["id"] == RID and lines[-1]["result"]["exitCode"] == 0
    # The global --json does the same.
    r2 = f.cli("--json", "agent", "run", "--no-repo", "go")
    assert r2.stdout == r.stdout


@pytest.mark.parametrize("status,code,want", [
    ("succeeded", 0, 0), ("failed", 3, 3), ("failed", None, 1), ("canceled", None, 130),
    ("timed_out", None, 124), ("failed", 0, 1), ("failed", 99999, 1), ("failed", -5, 1), ("succeeded", "7", 0),
])
def test_exit_code_follows_the_run(fake, status, code, want):
    runs = Runs(events=events_for(code if isinstance(code, int) else None, status), run=run_json(status, code))
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == want, (r.returncode, r.stderr)


def test_detach_prints_the_id_and_follows_nothing(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--no-repo", "x")
    assert r.returncode == 0 and r.stdout == RID + "\n", r.stderr
    assert runs.paths() == ["/v1/runs"]


def test_prompt_from_stdin(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--no-repo", "-", input="line one\nline two\n")
    assert r.returncode == 0, r.stderr
    assert runs.bodies[0]["prompt"] == "line one\nline two\n"


# ---- the request ------------------------------------------------------------------------------


def test_options_become_the_request(fake, tmp_path):
    (tmp_path / "AGENTS.md").write_text("be brief\n")
    skill = tmp_path / "skill"
    (skill / "scripts").mkdir(parents=True)
    (skill / "SKILL.md").write_text('---\nname: "lint"\ndescription: runs the linter\n---\nUse it.\n')
    (skill / "scripts" / "run.sh").write_text("#!/bin/sh\nlint\n")
    os.symlink("/etc/passwd", skill / "leak")            # not followed: skipped
    (tmp_path / "schema.json").write_text('{"type": "object"}')
    (tmp_path / "policy.json").write_text('{"default": "deny"}')
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff\x01")
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--no-repo", "--agent", "claude", "--model", "m1",
              "--instructions", str(tmp_path / "AGENTS.md"), "--skill", str(skill),
              "--mcp", "fs=npx -y server-fs /workspace", "--mcp", "web=http://127.0.0.1:9/mcp",
              "--policy", str(tmp_path / "policy.json"), "--key", "OPENAI,base=http://198.18.0.1:1/v1,provider=openai",
              "--timeout", "60", "--keep", "lane", "--output-schema", str(tmp_path / "schema.json"),
              "--attach", str(tmp_path / "notes.txt"), "--attach", str(tmp_path / "blob.bin"),
              "--resume", "last", "--fork", "--allow", "git *", "--deny", "kind=delete", "--ask", "*",
              "--image", "debian-bookworm", "do", "the", "thing")
    assert r.returncode == 0, r.stderr
    assert "skipping leak" in r.stderr
    b = runs.bodies[0]
    assert b["agent"] == "claude" and b["model"] == "m1" and b["prompt"] == "do the thing"
    assert b["instructions"] == "be brief\n"
    assert b["skills"] == [{"name": "lint", "description": "runs the linter", "body": "Use it.\n",
                            "files": {"scripts/run.sh": "#!/bin/sh\nlint\n"}}]
    assert b["mcp"] == [{"name": "fs", "type": "stdio", "command": "npx", "args": ["-y", "server-fs", "/workspace"]},
                        {"name": "web", "type": "http", "url": "http://127.0.0.1:9/mcp"}]
    assert b["policy"] == {"default": "deny"}
    assert b["key"] == {"secret": "OPENAI", "baseUrl": "http://198.18.0.1:1/v1", "provider": "openai"}
    assert b["timeout_s"] == 60 and b["keep"] == "lane" and b["output_schema"] == {"type": "object"}
    assert b["attachments"] == [{"name": "notes.txt", "text": "hello"}, {"name": "blob.bin", "base64": "AP8B"}]
    assert b["resume"] == {"last": True, "fork": True}
    assert b["permissions"] == {"default": "allow", "rules": [
        {"pattern": "git *", "action": "allow"}, {"kind": "delete", "action": "deny"}, {"pattern": "*", "action": "ask"}]}
    assert b["image"] == "debian-bookworm"
    assert "repo" not in b


@pytest.mark.parametrize("args,words", [
    (["--bogus", "x"], "unknown option '--bogus'"),
    (["--timeout"], "'--timeout' needs a value"),
    (["--timeout", "0", "x"], "--timeout '0'"),
    (["--timeout", "86401", "x"], "--timeout '86401'"),
    (["--keep", "all", "x"], "--keep 'all'"),
    (["--mcp", "noequals", "x"], "--mcp 'noequals'"),
    (["--mcp", "a= ", "x"], "the command is empty"),
    (["--fork", "x"], "--fork"),
    (["--key", ",base=http://x", "x"], "--key"),
    (["--key", "K,model=x", "x"], "--key 'K,model=x'"),
    (["--skill", "/nonexistent", "x"], "--skill"),
    (["--instructions", "/nonexistent", "x"], "--instructions"),
    (["--policy", "/etc/hostname", "x"], "--policy /etc/hostname: not JSON"),
    (["--repo", "/nonexistent", "x"], "--repo /nonexistent"),
    ([], "a PROMPT is required"),
])
def test_bad_options_are_usage_errors_and_send_nothing(fake, args, words):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert words in r.stderr, r.stderr
    assert runs.requests == []


def test_skill_front_matter_block_scalars(fake, tmp_path):
    skill = tmp_path / "fmt"
    skill.mkdir()
    (skill / "SKILL.md").write_text("---\nname: fmt\ndescription: >-\n  Formats code\n  before commits.\n"
                                     "license: MIT\n---\n# Fmt\n")
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--no-repo", "--skill", str(skill), "x")
    assert r.returncode == 0, r.stderr
    assert runs.bodies[0]["skills"] == [{"name": "fmt", "description": "Formats code before commits.", "body": "# Fmt\n"}]


def test_limits_checked_before_sending(fake, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"a" * (256 * 1024 + 1))
    skill = tmp_path / "s"
    skill.mkdir()
    (skill / "SKILL.md").write_text("no front matter\n")
    noname = tmp_path / "n"
    noname.mkdir()
    (noname / "SKILL.md").write_text("---\nname: x\n---\nbody\n")
    runs = Runs()
    f = start(fake, runs)
    for args, words in [(["--instructions", str(big)], "larger than"),
                        (["--skill", str(skill)], "front matter"),
                        (["--skill", str(noname)], "description"),
                        (["--attach", str(big)] * 17, "at most 16 files")]:
        r = agent(f, "run", "--no-repo", *args, "x")
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    r = agent(f, "run", "--no-repo", "-", input="p" * ((1 << 20) + 1))
    assert r.returncode == 2 and "larger than 1 MiB" in r.stderr, r.stderr
    assert runs.requests == []


# ---- the repository -----------------------------------------------------------------------------


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def make_repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "a.txt").write_text("one\n")
    (repo / "sub" / "b.txt").write_text("b\n")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "build.log").write_text("ignored\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    (repo / "untracked.txt").write_text("new\n")
    return repo


def tar_names(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return sorted(m.name[2:] if m.name.startswith("./") else m.name for m in t.getmembers() if m.isfile())


def test_local_daemon_gets_the_real_path(fake, tmp_path):
    repo = make_repo(tmp_path)
    os.symlink(repo, tmp_path / "link")
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--repo", str(tmp_path / "link"), "x")
    assert r.returncode == 0, r.stderr
    assert runs.bodies == [{"agent": "codex", "prompt": "x", "repo": {"path": str(repo)}}]
    assert runs.uploads == []


def test_forbidden_path_falls_back_to_an_upload_of_what_git_lists(fake, tmp_path):
    repo = make_repo(tmp_path)
    runs = Runs()
    runs.path_forbidden = True
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--repo", str(repo), "x")
    assert r.returncode == 0, r.stderr
    assert [b.get("repo") for b in runs.bodies] == [{"path": str(repo)}, {"upload": "up1"}]
    assert tar_names(runs.uploads[0]) == [".gitignore", "a.txt", "sub/b.txt", "untracked.txt"]
    head = [h for m, p, h in runs.requests if p == "/v1/runs/uploads"][0]
    assert "Content-Type: application/x-tar" in head and "Transfer-Encoding: chunked" in head


def test_a_remote_daemon_always_gets_an_upload(fake, tmp_path):
    repo = make_repo(tmp_path)
    runs = Runs()
    f = fake(runs.answer, tcp=True)
    r = agent(f, "run", "--detach", "--repo", str(repo), "x")
    assert r.returncode == 0, r.stderr
    assert [b.get("repo") for b in runs.bodies] == [{"upload": "up1"}]
    assert "a.txt" in tar_names(runs.uploads[0])


def test_upload_of_a_plain_directory_takes_everything(fake, tmp_path):
    d = tmp_path / "plain"
    (d / "x").mkdir(parents=True)
    (d / "x" / "y.txt").write_text("y")
    (d / "z.log").write_text("z")
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--detach", "--upload", "--repo", str(d), "x")
    assert r.returncode == 0, r.stderr
    assert runs.bodies[0]["repo"] == {"upload": "up1"}
    assert tar_names(runs.uploads[0]) == ["x/y.txt", "z.log"]
    with tarfile.open(fileobj=io.BytesIO(runs.uploads[0])) as t:
        assert {m.uid for m in t.getmembers()} == {0}


def test_refused_upload_is_reported(fake, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "f").write_bytes(os.urandom(1 << 20))

    def answer(conn, head, fk):
        problem(conn, 413, "the upload is larger than --max-file-size")
        return False
    f = fake(answer)
    r = agent(f, "run", "--upload", "--repo", str(d), "x")
    assert r.returncode == 1 and "larger than --max-file-size" in r.stderr, r.stderr


# ---- events: reconnects and hostile streams -------------------------------------------------------


def stream_head(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")


def test_reconnect_sends_last_event_id_and_skips_replays(fake):
    runs = Runs(events=events_for(text="once\n"))
    evs = runs.events
    heads = []

    def stream(conn, head, n):
        heads.append(head.decode())
        stream_head(conn)
        if n == 0:
            conn.sendall(sse(evs[:7]))          # up to the message, then the connection drops
        else:
            conn.sendall(sse(evs))              # replays everything, as a daemon that ignores the id
        return False
    runs.stream = stream
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "once\n"
    assert "Last-Event-ID" not in heads[0] and "Last-Event-ID: 7\r\n" in heads[1] + "\r\n", heads
    assert r.stderr.count("$ make test") == 1
    assert "reconnecting" in r.stderr


def test_a_stream_that_keeps_ending_is_given_up(fake):
    runs = Runs()

    def stream(conn, head, n):
        stream_head(conn)
        conn.sendall(b": heartbeat\n\n")
        return False
    runs.stream = stream
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 125 and "giving up" in r.stderr, r.stderr
    assert 2 < runs.stream_calls < 20


def test_event_id_cannot_inject_headers(fake):
    runs = Runs()
    heads = []

    def stream(conn, head, n):
        heads.append(head.decode("latin-1"))
        stream_head(conn)
        if n == 0:
            e = dict(runs.events[0], seq=1)
            conn.sendall(b"id: 1\rX-Evil: yes\ndata: %s\n\n" % json.dumps(e).encode())
            return False
        conn.sendall(sse(runs.events))
        return False
    runs.stream = stream
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 0, r.stderr
    assert len(heads) == 2 and not any("X-Evil" in h for h in heads) and "Last-Event-ID" not in heads[1], heads


def test_huge_and_malformed_events_are_skipped(fake):
    runs = Runs()

    def stream(conn, head, n):
        stream_head(conn)
        conn.sendall(b"data: " + b"x" * (17 << 20) + b"\n\n")        # one line over the cap
        conn.sendall(b"data: {\n" + (b"data: " + b"y" * (1 << 20) + b"\n") * 17 + b"\n")   # an event over it
        # An oversized line inside an event drops the whole event, not just the line.
        conn.sendall(b"data: {\"type\": \"error\",\ndata: " + b"w" * (17 << 20) + b"\ndata: \"message\": \"half\"}\n\n")
        conn.sendall(b"data: {not json\n\n")
        conn.sendall(b"data: [1, 2]\n\n")
        conn.sendall(b"id: 99999999999999999999999999\ndata: {\"type\": 5}\n\n")
        conn.sendall(sse(runs.events))
        return False
    runs.stream = stream
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 0, r.stderr
    assert "skipped an event line larger than 16 MiB" in r.stderr
    assert "skipped an event larger than 16 MiB" in r.stderr
    assert r.stderr.count("not a JSON object with a type") == 3 and "half" not in r.stderr
    assert r.stdout == "all done\n"


def test_endless_line_is_discarded_not_held(fake):
    runs = Runs()

    def stream(conn, head, n):
        stream_head(conn)
        for _ in range(64):                     # 64 MiB without a newline, then the real events
            conn.sendall(b"z" * (1 << 20))
        conn.sendall(b"\n\n" + sse(runs.events))
        return False
    runs.stream = stream
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 0 and "larger than 16 MiB" in r.stderr, r.stderr


@pytest.mark.parametrize("bad_id", ["../../v1/cells", "0123456789ABCDEF", "abc", "", None, 12])
def test_a_bad_run_id_from_the_daemon_goes_nowhere(fake, bad_id):
    runs = Runs(post={"id": bad_id, "status": "queued"})
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 125 and "no valid run id" in r.stderr, r.stderr
    assert runs.paths() == ["/v1/runs"]


def test_terminal_escapes_in_agent_text_are_neutralised(fake):
    evil = "\x1b]0;pwned\x07\x1b[2J\u009b31m"
    evs = [{"type": "command", "command": "echo " + evil}, {"type": "file.change", "path": evil, "kind": "added"},
           {"type": "error", "message": evil}, {"type": "message.delta", "role": "assistant", "text": evil},
           {"type": "run.finished", "status": "succeeded", "exitCode": 0, "durationMs": 1}]
    run = run_json()
    run["result"]["changedFiles"] = [{"path": evil, "status": "added"}]
    runs = Runs(events=evs, run=run)
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr and "\u009b" not in r.stderr and "\x07" not in r.stderr
    assert "echo \\x1b]0;pwned\\x07\\x1b[2J\\u009b31m" in r.stderr
    # stdout is not a terminal here: the agent's message is the output, as it is.
    assert r.stdout.startswith(evil)


# ---- Ctrl-C, permissions ---------------------------------------------------------------------------


def held_stream(runs, first):
    """Sends `first`, heartbeats until the cancel, then run.finished canceled."""
    def stream(conn, head, n):
        stream_head(conn)
        conn.sendall(sse(first))
        while not runs.canceled.wait(0.2):
            conn.sendall(b": heartbeat\n\n")
        conn.sendall(sse([{"type": "run.finished", "status": "canceled", "exitCode": None, "durationMs": 5}],
                         start=len(first) + 1))
        return False
    return stream


def read_until(fd, words, limit=RUN_TIMEOUT):
    buf = b""
    end = time.monotonic() + limit
    while words.encode() not in buf:
        left = end - time.monotonic()
        assert left > 0, buf
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                more = os.read(fd, 4096)
            except OSError:
                more = b""
            assert more, buf
            buf += more
    return buf


def popen_agent(f, *args, **kw):
    return subprocess.Popen([CELL_BIN, "--url", f.url, "agent", *args], env=f.env(),
                            start_new_session=True, **kw)


def test_ctrl_c_cancels_and_waits_for_the_end(fake):
    runs = Runs(run=run_json("canceled", None))
    runs.stream = held_stream(runs, runs.events[:3])
    f = start(fake, runs)
    p = popen_agent(f, "run", "--no-repo", "x", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_until(p.stderr.fileno(), "agent started")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=RUN_TIMEOUT)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 130, err
    assert "canceling run" in err.decode()
    assert ("DELETE", "/v1/runs/" + RID) in [(m, p_) for m, p_, _ in runs.requests]


def test_permission_ask_without_a_terminal_waits_for_the_daemon(fake):
    evs = [{"type": "permission.asked", "requestId": "r1", "kind": "execute", "title": "rm -rf /", "command": "rm -rf /",
            "options": []},
           {"type": "permission.decided", "requestId": "r1", "decision": "deny", "by": "timeout"},
           {"type": "run.finished", "status": "succeeded", "exitCode": 0, "durationMs": 1}]
    runs = Runs(events=evs)
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "x", input="")
    assert r.returncode == 0, r.stderr
    assert "? permission for execute: rm -rf /" in r.stderr and "waiting for a decision" in r.stderr
    assert "deny (by timeout)" in r.stderr
    assert runs.decisions == []


def test_permission_ask_on_a_terminal_posts_the_answer(fake):
    evs = [{"type": "permission.asked", "requestId": "r/1", "kind": "edit", "title": "edit a.txt", "options": []},
           {"type": "run.finished", "status": "succeeded", "exitCode": 0, "durationMs": 1}]
    runs = Runs(events=evs)
    f = start(fake, runs)
    master, slave = pty.openpty()
    p = popen_agent(f, "run", "--no-repo", "x", stdin=slave, stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    try:
        read_until(master, "allow? [y/N]")
        os.write(master, b"y\n")
        p.wait(timeout=RUN_TIMEOUT)
    finally:
        p.kill()
        p.wait()
        os.close(master)
    assert p.returncode == 0
    assert runs.decisions == [("r%2F1", {"decision": "allow"})]


# ---- diff and apply ----------------------------------------------------------------------------------


def test_diff_inline_and_from_the_artifact(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--no-repo", "--diff", "x")
    assert r.returncode == 0 and r.stdout == "all done\n" + PATCH, r.stdout
    runs.run = run_json(diff=PATCH[:20], truncated=True)
    runs.patch = (PATCH * 3).encode()
    r = agent(f, "runs", "diff", RID)
    assert r.returncode == 0 and r.stdout == PATCH * 3, r.stdout


def test_apply_of_a_path_repo_is_the_daemons(fake, tmp_path):
    repo = make_repo(tmp_path)
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "run", "--apply", "--repo", str(repo), "x")
    assert r.returncode == 0 and "applied the change to %s" % repo in r.stderr, r.stderr
    assert ("POST", "/v1/runs/%s/apply" % RID) in [(m, p) for m, p, _ in runs.requests]
    runs.apply_reply = (409, {"conflicts": ["a.txt"]})
    r = agent(f, "run", "--apply", "--repo", str(repo), "x")
    assert r.returncode == 1 and "conflict: a.txt" in r.stderr, r.stderr


def test_apply_is_refused_for_a_run_that_did_not_succeed(fake, tmp_path):
    repo = make_repo(tmp_path)
    runs = Runs(events=events_for(3, "failed"), run=run_json("failed", 3))
    f = start(fake, runs)
    r = agent(f, "run", "--apply", "--repo", str(repo), "x")
    assert r.returncode == 1 and "did not succeed" in r.stderr, r.stderr
    assert "/v1/runs/%s/apply" % RID not in runs.paths()


@pytest.mark.parametrize("sub", [False, True], ids=["top", "subdir"])
def test_apply_of_an_upload_is_git_apply_here(fake, tmp_path, sub):
    repo = make_repo(tmp_path)
    target = repo / "sub" if sub else repo
    (target / "a.txt").write_text("one\n")
    runs = Runs(run=run_json(repo={"upload": "up1"}))
    runs.path_forbidden = True
    f = start(fake, runs)
    r = agent(f, "run", "--apply", "--repo", str(target), "x")
    assert r.returncode == 0, r.stderr
    assert (target / "a.txt").read_text() == "two\n"
    if sub:
        assert (repo / "a.txt").read_text() == "one\n"
    # Again: it no longer applies; nothing is written and the conflict is named.
    (target / "a.txt").write_text("changed\n")
    r = agent(f, "runs", "apply", RID, "--repo", str(target))
    assert r.returncode == 1 and "does not apply" in r.stderr and "a.txt" in r.stderr, r.stderr
    assert (target / "a.txt").read_text() == "changed\n"


@pytest.mark.parametrize("victim", ["../outside.txt", ".git/hooks/post-checkout", "link/owned.txt"])
def test_a_hostile_patch_cannot_write_outside_the_repo(fake, tmp_path, victim):
    repo = make_repo(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, repo / "link")
    patch = ("diff --git a/{0} b/{0}\nnew file mode 100755\nindex 0000000..1111111\n--- /dev/null\n+++ b/{0}\n"
             "@@ -0,0 +1 @@\n+pwned\n").format(victim)
    runs = Runs(run=run_json(repo={"upload": "up1"}))
    runs.patch = patch.encode()
    f = start(fake, runs)
    r = agent(f, "runs", "apply", RID, "--repo", str(repo))
    assert r.returncode == 1, r.stderr
    assert not (tmp_path / "outside.txt").exists() and not (outside / "owned.txt").exists()
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()


def test_a_patch_cannot_write_through_a_symlink_it_creates(fake, tmp_path):
    repo = make_repo(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = str(outside)
    patch = ("diff --git a/ln b/ln\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/ln\n"
             "@@ -0,0 +1 @@\n+{0}\n\\ No newline at end of file\n"
             "diff --git a/ln/owned.txt b/ln/owned.txt\nnew file mode 100644\nindex 0000000..2222222\n"
             "--- /dev/null\n+++ b/ln/owned.txt\n@@ -0,0 +1 @@\n+pwned\n").format(target)
    runs = Runs(run=run_json(repo={"upload": "up1"}))
    runs.patch = patch.encode()
    f = start(fake, runs)
    r = agent(f, "runs", "apply", RID, "--repo", str(repo))
    assert r.returncode == 1, r.stderr
    assert not (outside / "owned.txt").exists() and not os.path.lexists(repo / "ln")


# ---- cell agent runs ---------------------------------------------------------------------------------


def test_runs_ls_show_and_json(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "runs")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^ID\s+STATUS\s+AGENT\s+EXIT", r.stdout)
    assert re.search(RID + r"\s+succeeded\s+mock\s+0\s+2023-11-14 22:13:20\s+1.2s", r.stdout), r.stdout
    r = agent(f, "runs", "ls", "--json", "--status", "succeeded", "--limit", "5")
    assert json.loads(r.stdout)["runs"][0]["id"] == RID
    assert "/v1/runs?status=succeeded&limit=5" in [p for _, p, _ in runs.requests]
    r = agent(f, "runs", "show", RID)
    assert r.returncode == 0 and "changed files: 1" in r.stdout and "output:\nall done" in r.stdout, r.stdout
    r = agent(f, "runs", "show", RID, "--json")
    assert json.loads(r.stdout)["id"] == RID


def test_runs_events_prints_and_ends(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "runs", "events", RID, "--json")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(runs.events)
    assert runs.paths("GET") == ["/v1/runs/%s/events?follow=false" % RID]
    r = agent(f, "runs", "events", "-f", RID)
    assert r.returncode == 0 and "$ make test" in r.stdout, r.stdout
    assert runs.paths("GET")[-1] == "/v1/runs/%s/events" % RID


def test_runs_events_of_an_unknown_run_is_a_refusal(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "runs", "events", "ffffffffffffffff")
    assert r.returncode == 1 and "no such route" in r.stderr, r.stderr


def test_endless_patch_is_cut_at_64_mib(fake, tmp_path):
    repo = make_repo(tmp_path)

    def answer(conn, head, fk):
        if b"/artifacts/" not in head:
            send(conn, 200, run_json(repo={"upload": "u"}))
            return True
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        while True:             # until the CLI stops reading
            conn.sendall(b"+" * (1 << 20))
    f = fake(answer)
    r = agent(f, "runs", "apply", RID, "--repo", str(repo))
    assert r.returncode == 125 and "larger than 64 MiB" in r.stderr, r.stderr
    assert (repo / "a.txt").read_text() == "one\n"


def test_runs_cancel_never_deletes_a_finished_run(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "runs", "cancel", RID)
    assert r.returncode == 1 and "has finished" in r.stderr, r.stderr
    assert runs.paths("DELETE") == []
    r = agent(f, "runs", "rm", RID)
    assert r.returncode == 0 and runs.paths("DELETE") == ["/v1/runs/" + RID]
    runs.run = run_json("running", result=False)
    r = agent(f, "runs", "cancel", RID)
    assert r.returncode == 0 and len(runs.paths("DELETE")) == 2
    r = agent(f, "runs", "rm", RID)
    assert r.returncode == 1 and "still active" in r.stderr


def test_runs_ids_are_escaped_and_unknown_ones_refused(fake):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, "runs", "show", "../../v1/cells")
    assert r.returncode == 1 and "no such route" in r.stderr, r.stderr
    assert runs.paths() == ["/v1/runs/..%2F..%2Fv1%2Fcells"]


@pytest.mark.parametrize("args,words", [
    (["runs", "frob"], "unknown subcommand 'frob'"), (["runs", "show"], "show takes one run ID"),
    (["runs", "ls", "x"], "ls takes no argument"), (["runs", "--bogus"], "'--bogus'"),
    (["frob"], "unknown subcommand 'frob'"), ([], ""),
])
def test_runs_usage_errors(fake, args, words):
    runs = Runs()
    f = start(fake, runs)
    r = agent(f, *args)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert runs.requests == []


def test_help_documents_every_option():
    out = subprocess.run([CELL_BIN, "agent", "run", "--help"], capture_output=True, text=True).stdout
    src = open(os.path.join(os.path.dirname(__file__), "..", "..", "src", "cli", "agent_cmds.c")).read()
    opts = re.findall(r'\{ "([a-z-]+)", (?:required|no)_argument, NULL, O_', src)
    assert len(opts) > 20
    for o in set(opts) - {"help"}:
        assert "--" + o in out, o
    assert subprocess.run([CELL_BIN, "help", "agent", "runs"], capture_output=True, text=True).stdout.startswith(
        "usage: cell agent runs")
    assert "agent run" in subprocess.run([CELL_BIN, "help"], capture_output=True, text=True).stdout


# ---- end to end, against the real daemon (root) ---------------------------------------------------
# The repository is a temp dir; the shell agent makes the change (the mock
# agent writes no files).


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("cli-runs"), unix_socket=True)


def real_env(token=None):
    env = dict(os.environ)
    env.pop("CELL_URL", None)
    env.pop("CELL_TOKEN", None)
    if token:
        env["CELL_TOKEN"] = token
    return env


def real(d, *args, token=None, **kw):
    return run_cell(d.state, ["agent", *args], env=real_env(token), timeout=180, **kw)


def run_id_of(stderr):
    m = re.search(r"^run ([0-9a-f]{16}) (succeeded|failed|canceled|timed_out)", stderr, re.M)
    assert m, stderr
    return m.group(1)


def test_real_run_diff_leaves_the_repo_until_apply(d, tmp_path):
    repo = make_repo(tmp_path)
    r = real(d, "run", "--agent", "shell", "--repo", str(repo), "--diff", "printf 'two\\n' > a.txt; echo out")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("out\n") and "-one\n+two\n" in r.stdout, r.stdout
    assert "  M a.txt" in r.stderr and "$ printf" in r.stderr
    assert (repo / "a.txt").read_text() == "one\n"
    rid = run_id_of(r.stderr)
    r = real(d, "runs", "diff", rid)
    assert r.returncode == 0 and "+two\n" in r.stdout, r.stderr
    r = real(d, "runs", "show", rid, "--json")
    assert json.loads(r.stdout)["result"]["changedFiles"][0]["path"] == "a.txt"
    r = real(d, "runs", "apply", rid)
    assert r.returncode == 0, r.stderr
    assert (repo / "a.txt").read_text() == "two\n"
    # Applied once: a second apply conflicts and writes nothing.
    r = real(d, "runs", "apply", rid)
    assert r.returncode == 1, r.stderr
    assert (repo / "a.txt").read_text() == "two\n"


def test_real_exit_code_and_json_lines(d, tmp_path):
    repo = make_repo(tmp_path)
    r = real(d, "run", "--json", "--agent", "shell", "--repo", str(repo), "exit 7")
    assert r.returncode == 7, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert lines[-2]["type"] == "run.finished" and lines[-1]["result"]["exitCode"] == 7, lines[-2:]
    assert [l["seq"] for l in lines[:-1]] == sorted(l["seq"] for l in lines[:-1])


def test_real_tenant_uploads_and_applies_here(d, tmp_path):
    repo = make_repo(tmp_path)
    tok, _ = dm.make_tenant_token(d.client(), dm.uniq("cli"))
    # build.log is ignored by git: it must not have been uploaded.
    r = real(d, "run", "--agent", "shell", "--repo", str(repo), "--apply",
             "test ! -e build.log && test -e untracked.txt && printf 'two\\n' > a.txt && echo x > new.txt", token=tok)
    assert r.returncode == 0, r.stderr
    assert "uploading" in r.stderr
    assert (repo / "a.txt").read_text() == "two\n" and (repo / "new.txt").read_text() == "x\n"


def test_real_ctrl_c_cancels_the_run(d):
    p = subprocess.Popen([CELL_BIN, "--state", d.state, "agent", "run", "--agent", "mock", "--no-repo", "no answer"],
                         env=real_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        read_until(p.stderr.fileno(), "agent started", 120)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 130, err
    rid = re.search(rb"canceling run ([0-9a-f]{16})", err).group(1).decode()
    assert d.client().get("/v1/runs/" + rid).body["status"] == "canceled"


def test_real_permission_ask_answered_on_the_terminal(d):
    master, slave = pty.openpty()
    p = subprocess.Popen([CELL_BIN, "--state", d.state, "agent", "run", "--agent", "mock", "--no-repo",
                          "--ask", "kind=edit", "permission please"],
                         env=real_env(), stdin=slave, stderr=slave, stdout=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    try:
        seen = read_until(master, "allow? [y/N]", 120)
        os.write(master, b"y\n")
        out, _ = p.communicate(timeout=120)
    finally:
        p.kill()
        p.wait()
        os.close(master)
    assert b"? permission for edit: mock wants to write a file" in seen, seen
    assert out.decode() == "permission: allow-once", out
