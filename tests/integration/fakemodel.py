"""A fake OpenAI model server for end-to-end agent tests: the Responses API
(POST .../responses) answered as a stream of server-sent events, the way
the Codex CLI reads it (docs/compat/sandbox-agent-0.4.2-agents.md, "Codex").

Each request takes the next reply of the script (script()); a reply is a
list of items:

    text("hello", "world")         an assistant message streamed as the
                                   deltas given, then the whole message
    call("shell_command", {...})   a function call the agent should run

Every request is recorded in `seen` (path, lower-cased headers, the JSON
body), so a test can check what the upstream got (the real key, injected
on the host).  Other paths (GET .../models and the like) answer 404 and are
recorded too.

    m = FakeModel((ip, 80)); netfake.start(m.server) ... netfake.stop(m.server)
"""
import http.server
import itertools
import json
import threading

import netfake


def text(*deltas):
    return {"type": "message", "deltas": list(deltas)}


def call(name, args):
    return {"type": "function_call", "name": name, "arguments": json.dumps(args)}


class FakeModel:
    def __init__(self, addr, tls=None):
        self.server = netfake.HTTPServer(addr, _Handler, tls=tls)
        self.server.model = self
        self.seen = self.server.seen
        self.replies, self.lock, self.ids = [], threading.Lock(), itertools.count(1)

    def script(self, *replies):
        """The replies (each a list of text()/call() items) of the next
        requests, in order; replaces what an earlier script left."""
        with self.lock:
            self.replies = [list(r) for r in replies]

    def responses(self):
        """The recorded POSTs to .../responses (not WebSocket attempts)."""
        return [s for s in self.seen if s["method"] == "POST" and s["path"].split("?")[0].endswith("/responses")]

    def next_reply(self):
        with self.lock:
            return self.replies.pop(0) if self.replies else [text("(the fake model has no reply scripted)")]

    def events(self, reply):
        """The SSE events of one reply: created, each item, completed."""
        rid = "resp_%d" % next(self.ids)
        yield {"type": "response.created", "response": {"id": rid}}
        for idx, it in enumerate(reply):
            iid = "item_%d" % next(self.ids)
            if it["type"] == "message":
                whole = {"type": "message", "role": "assistant", "id": iid,
                         "content": [{"type": "output_text", "text": "".join(it["deltas"]), "annotations": []}]}
                yield {"type": "response.output_item.added", "output_index": idx,
                       "item": dict(whole, content=[])}
                for d in it["deltas"]:
                    yield {"type": "response.output_text.delta", "item_id": iid, "output_index": idx,
                           "content_index": 0, "delta": d}
            else:
                whole = {"type": "function_call", "id": iid, "call_id": "call_%s" % iid,
                         "name": it["name"], "arguments": it["arguments"]}
            yield {"type": "response.output_item.done", "output_index": idx, "item": whole}
        yield {"type": "response.completed",
               "response": {"id": rid, "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                                                 "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                                                 "total_tokens": 15}}}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _record(self, body):
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = body.decode("utf-8", "replace")
        self.server.seen.append({"method": self.command, "path": self.path, "body": doc,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})

    def _plain(self, status, doc):
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        self._record(b"")
        self._plain(404, {"error": {"message": "not here", "type": "invalid_request_error"}})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self._record(self.rfile.read(n) if n else b"")
        if not self.path.split("?")[0].endswith("/responses"):
            return self._plain(404, {"error": {"message": "not here", "type": "invalid_request_error"}})
        model = self.server.model
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for ev in model.events(model.next_reply()):
            self.wfile.write(("event: %s\ndata: %s\n\n" % (ev["type"], json.dumps(ev))).encode())
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, *a):
        pass
