#!/usr/bin/env python3
"""runs.py: the measuring half of bench/runs.sh (issue 12's overhead of a run).

    python3 bench/runs.py URL TOKEN REPO N WARMUP

Against a running `cell serve` at URL (TOKEN: a bearer allowed to use REPO,
a git repository under the daemon's --run-repo-root), N timed iterations
after WARMUP untimed ones, the three kinds interleaved (the order rotates
each iteration, so drift and noise spread over all three; each step starts
after a 200 ms pause):

  mock    POST /v1/runs {"agent": "mock", "prompt": "hi", "repo": {"path": REPO}}
  shell   the same with {"agent": "shell", "prompt": CMD}
  subproc sbx-agents' approach, for scale: copy REPO to a temporary
          directory, subprocess.run(CMD) there, `git add -A` and
          `git diff --cached --binary`, remove the copy (no isolation)

CMD writes one file: `echo changed > notes.txt`.

Per cell run, two clocks:
  timings  the run's own: start = agentStartedMs - acceptedMs,
           finish = finishedMs - agentDoneMs
  client   this process's monotonic clock: start = from sending the POST
           to reading `agent.started` (shell: `command`) on the run's
           event stream (opened right after the POST's answer, so a boot
           faster than that answer counts the stream's open too), finish =
           from reading the agent's end (`agent.exited`, shell:
           `command.exit`, or `run.status` "finishing", whichever comes
           first) to reading `run.finished`
  total    client: from sending the POST to reading `run.finished`
subproc: start = the copy (and anything before the command runs), finish =
the diff and the cleanup after it exits, total = all of it.

Prints one JSON object: {kind: {metric: [ms, ...]}}.  Each run must
succeed with the expected change in its diff (exit 1 otherwise).
Standard library only.
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

CMD = "echo changed > notes.txt"
PAUSE = 0.2     # seconds before each timed step


def now_ms():
    return time.monotonic() * 1000.0


class Api:
    def __init__(self, url, token):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.token = u.hostname, u.port, token

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method, path, body=None):
        c = self.conn()
        try:
            h = {"Authorization": "Bearer " + self.token}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
        finally:
            c.close()


def fail(msg):
    print("bench/runs.py: " + msg, file=sys.stderr)
    sys.exit(1)


def cell_run(api, agent, prompt, repo):
    t0 = now_ms()
    st, run = api.call("POST", "/v1/runs", {"agent": agent, "prompt": prompt, "repo": {"path": repo}})
    if st != 202:
        fail("POST /v1/runs (%s): %s %s" % (agent, st, run))
    c = api.conn()
    c.request("GET", "/v1/runs/%s/events" % run["id"],
              headers={"Authorization": "Bearer " + api.token, "Accept": "text/event-stream"})
    r = c.getresponse()
    if r.status != 200:
        fail("GET events: %s" % r.status)
    seen, etype = {}, None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if line.startswith("event:"):
            etype = line[6:].strip()
        elif line.startswith("data:") and etype:
            t = now_ms()
            doc = json.loads(line[5:])
            if etype == "run.status" and doc.get("status") == "finishing":
                etype = "finishing"
            seen.setdefault(etype, t)
            if etype == "run.finished":
                break
    c.close()
    st, done = api.call("GET", "/v1/runs/" + run["id"])
    if st != 200 or done.get("status") != "succeeded":
        fail("%s run %s did not succeed: %s" % (agent, run["id"], json.dumps(done)[:2000]))
    res = done["result"]
    if agent == "shell" and [f["path"] for f in res["changedFiles"]] != ["notes.txt"]:
        fail("shell run %s: unexpected change %s" % (run["id"], res["changedFiles"]))
    tm = done["timings"]
    # The shell backend says `command` / `command.exit` where an ACP agent
    # says agent.started / agent.exited.
    start = min(seen.get("agent.started", 1e300), seen.get("command", 1e300))
    end = min(seen.get("agent.exited", 1e300), seen.get("command.exit", 1e300), seen.get("finishing", 1e300))
    if start == 1e300 or end == 1e300 or "run.finished" not in seen:
        fail("%s run %s: events missing: %s" % (agent, run["id"], sorted(seen)))
    # Delete the finished run: its record and files (256 per tenant are kept).
    api.call("DELETE", "/v1/runs/" + run["id"])
    return {"timings_start": tm["agentStartedMs"] - tm["acceptedMs"],
            "timings_finish": tm["finishedMs"] - tm["agentDoneMs"],
            "client_start": start - t0,
            "client_finish": seen["run.finished"] - end,
            "total": seen["run.finished"] - t0}


def git(cwd, *args):
    return subprocess.run(["git", "-C", cwd] + list(args), capture_output=True, check=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
                               "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
                               "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}).stdout


def subproc_run(repo):
    """sbx-agents' shell backend without its container: a copy, the
    command, git diff, cleanup."""
    t0 = now_ms()
    tmp = tempfile.mkdtemp(prefix="runs-bench-")
    try:
        ws = os.path.join(tmp, "ws")
        shutil.copytree(repo, ws, symlinks=True)
        t1 = now_ms()
        p = subprocess.run(["sh", "-c", CMD], cwd=ws, capture_output=True)
        t2 = now_ms()
        if p.returncode != 0:
            fail("subprocess: exit %d" % p.returncode)
        git(ws, "add", "-A")
        diff = git(ws, "diff", "--cached", "--binary", "--full-index")
        if b"+changed" not in diff:
            fail("subprocess: the diff lacks the change")
    finally:
        shutil.rmtree(tmp)
    t3 = now_ms()
    return {"timings_start": t1 - t0, "timings_finish": t3 - t2, "client_start": t1 - t0,
            "client_finish": t3 - t2, "total": t3 - t0}


def main():
    url, token, repo, n, warmup = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    api = Api(url, token)
    kinds = {"mock": lambda: cell_run(api, "mock", "hi", repo),
             "shell": lambda: cell_run(api, "shell", CMD, repo),
             "subproc": lambda: subproc_run(repo)}
    order = list(kinds)
    out = {k: {} for k in kinds}
    for i in range(warmup + n):
        rot = order[i % len(order):] + order[:i % len(order)]
        for k in rot:
            # A pause off the clock before each step: the last one's
            # aftermath (a cell's teardown, the record's removal and the
            # journal writes they cause on the disk) is not in this one.
            time.sleep(PAUSE)
            m = kinds[k]()
            if i >= warmup:
                for name, v in m.items():
                    out[k].setdefault(name, []).append(round(v, 3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
