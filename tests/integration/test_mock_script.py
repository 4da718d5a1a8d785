"""The mock agent's script words (src/agent/mock.c), which runs and their
tests drive: cell-mock-agent run as a plain process beside the cell binary,
spoken to over ACP on its stdin/stdout, in a scratch working directory and
HOME.  What each word reports (tool calls, diffs, permission requests,
exit codes, usage, cancel) is what runagent.c's normaliser reads; the old
words keep working when a prompt is not a script."""
import json
import os
import select
import subprocess
import time

import pytest

MOCK = os.path.join(os.path.dirname(os.path.abspath(
    os.environ.get("CELL_BIN", os.path.join(os.path.dirname(__file__), "../../build/cell")))), "cell-mock-agent")


class Mock:
    def __init__(self, cwd, home):
        self.p = subprocess.Popen([MOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd,
                                  env={"HOME": home, "PATH": "/usr/bin:/bin"}, bufsize=0)
        self.next_id = 1
        self.call("initialize", {"protocolVersion": 1})
        self.sid = self.call("session/new", {"cwd": cwd, "mcpServers": []})[0]["result"]["sessionId"]

    def send(self, msg):
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()

    def line(self, timeout=20):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert r, "the mock said nothing within %ss" % timeout
        line = self.p.stdout.readline()
        return json.loads(line) if line else None

    def call(self, method, params, answer=lambda call: "allow-once", after_send=None):
        """(response, [updates], [permission toolCalls]); None response at EOF."""
        i = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
        if after_send:
            after_send()
        updates, asked = [], []
        while True:
            m = self.line()
            if m is None:
                return None, updates, asked
            if m.get("method") == "session/request_permission":
                asked.append(m["params"]["toolCall"])
                self.send({"jsonrpc": "2.0", "id": m["id"],
                           "result": {"outcome": {"outcome": "selected", "optionId": answer(m["params"]["toolCall"])}}})
            elif m.get("method") == "session/update":
                updates.append(m["params"]["update"])
            elif m.get("id") == i:
                return m, updates, asked

    def prompt(self, text, **kw):
        return self.call("session/prompt", {"sessionId": self.sid, "prompt": [{"type": "text", "text": text}]}, **kw)

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(10)


@pytest.fixture
def mock(tmp_path):
    if not os.access(MOCK, os.X_OK):
        pytest.skip("no cell-mock-agent beside CELL_BIN")
    ws, home = tmp_path / "ws", tmp_path / "home"
    ws.mkdir()
    home.mkdir()
    m = Mock(str(ws), str(home))
    m.ws, m.home = ws, home
    yield m
    m.close()


def chunks(updates, kind="agent_message_chunk"):
    return "".join(u["content"]["text"] for u in updates if u["sessionUpdate"] == kind)


def test_write_and_delete_report_edits_with_diffs(mock):
    (mock.ws / "old.txt").write_text("before\n")
    res, ups, _ = mock.prompt("write sub/dir/new.txt line1\\nline2\nwrite old.txt after\ndelete old.txt\nsay ok")
    assert res["result"] == {"stopReason": "end_turn"}
    assert (mock.ws / "sub/dir/new.txt").read_text() == "line1\nline2"
    assert not (mock.ws / "old.txt").exists()
    calls = [u for u in ups if u["sessionUpdate"] == "tool_call"]
    assert [(c["kind"], c["title"]) for c in calls] == [("edit", "sub/dir/new.txt"), ("edit", "old.txt"),
                                                        ("delete", "old.txt")]
    done = [u for u in ups if u["sessionUpdate"] == "tool_call_update"]
    assert all(u["status"] == "completed" for u in done)
    assert done[0]["content"] == [{"type": "diff", "path": str(mock.ws / "sub/dir/new.txt"), "oldText": None,
                                   "newText": "line1\nline2"}]
    assert done[1]["content"][0]["oldText"] == "before\n"
    assert done[2]["locations"] == [{"path": str(mock.ws / "old.txt")}]
    assert chunks(ups) == "ok"


def test_run_asks_first_and_runs_only_when_allowed(mock):
    res, ups, asked = mock.prompt("run echo out; echo err >&2; exit 3\nrun touch denied.txt\nrun kill -9 $$",
                                  answer=lambda c: "reject-once" if "denied" in c["title"] else "allow-once")
    assert res["result"]["stopReason"] == "end_turn"
    assert [(a["kind"], a["rawInput"]["command"]) for a in asked] == [
        ("execute", "echo out; echo err >&2; exit 3"), ("execute", "touch denied.txt"), ("execute", "kill -9 $$")]
    assert not (mock.ws / "denied.txt").exists()
    ends = [u for u in ups if u["sessionUpdate"] == "tool_call_update" and u["status"] != "in_progress"]
    assert ends[0]["status"] == "failed" and ends[0]["rawOutput"] == {"exitCode": 3, "output": "out\nerr\n"}
    assert ends[1]["status"] == "failed" and ends[1]["rawOutput"] == {"error": "permission denied"}
    assert ends[2]["rawOutput"]["exitCode"] == 128 + 9


def test_usage_json_think_and_ignored_notes(mock):
    res, ups, _ = mock.prompt("usage 7 5\nthink hmm\njson {\"answer\": 42}\nusage\n\nAnswer with exactly one JSON "
                              "value\n- /.cell-run/attachments/a.txt")
    assert res["result"] == {"stopReason": "end_turn",
                             "usage": {"inputTokens": 107, "outputTokens": 25, "totalTokens": 132}}
    assert [u["used"] for u in ups if u["sessionUpdate"] == "usage_update"] == [12, 132]
    assert chunks(ups, "agent_thought_chunk") == "hmm"
    assert json.loads(chunks(ups)) == {"answer": 42}
    res, ups, _ = mock.prompt("json")
    assert chunks(ups) == '{"ok":true}'


def test_instructions_reads_what_a_run_wrote(mock):
    res, ups, _ = mock.prompt("instructions")
    assert chunks(ups) == "instructions: (none)\n"
    cfg = mock.home / ".config/cell-mock-agent"
    (cfg / "skills/lint/scripts").mkdir(parents=True)
    (cfg / "instructions.md").write_text("Be brief.")
    (cfg / "skills/lint/SKILL.md").write_text("---\nname: \"lint\"\n---\n\nRun lint.")
    (cfg / "skills/lint/scripts/run.sh").write_text("#!/bin/sh\n")
    res, ups, _ = mock.prompt("instructions")
    assert chunks(ups) == ("instructions: Be brief.\nskill lint: ---\nname: \"lint\"\n---\n\nRun lint.\n"
                           "file lint/scripts/run.sh\n")


def test_sleep_ends_on_cancel_and_stays_busy(mock):
    res, ups, _ = mock.prompt("sleep 0\nsay awake")
    assert chunks(ups) == "awake"

    def cancel_later():
        time.sleep(0.2)
        # A request meanwhile is refused, the cancel for another session ignored.
        mock.send({"jsonrpc": "2.0", "id": "x", "method": "session/set_mode",
                   "params": {"sessionId": mock.sid, "modeId": "plan"}})
        mock.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": "other"}})
        mock.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": mock.sid}})

    started = time.monotonic()
    busy = []
    orig = mock.line

    def line(timeout=20):
        m = orig(timeout)
        if m and m.get("id") == "x":
            busy.append(m)
            return orig(timeout)
        return m
    mock.line = line
    res, ups, _ = mock.prompt("sleep 600\nsay never", after_send=cancel_later)
    assert res["result"] == {"stopReason": "cancelled"}
    assert time.monotonic() - started < 300
    assert busy and busy[0]["error"]["code"] == -32000
    assert chunks(ups) == ""


def test_crash_exits_3_mid_prompt(mock):
    res, ups, _ = mock.prompt("say before\ncrash\nsay after")
    assert res is None
    assert chunks(ups) == "before"
    assert mock.p.wait(10) == 3


def test_old_words_are_not_scripts(mock):
    res, ups, _ = mock.prompt("please write something")
    assert chunks(ups) == "mock:please write something"
    res, ups, asked = mock.prompt("permission", answer=lambda c: "allow-always")
    assert asked[0]["kind"] == "edit" and chunks(ups) == "permission: allow-always"
