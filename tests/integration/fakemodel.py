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

network() is the whole setup the agent tests share: a fake DNS and the
model over HTTP and HTTPS on a /24 of their own.
"""
import contextlib
import http.server
import itertools
import json
import shutil
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
        # The token counts each response.completed reports (a test may set
        # its own, to tell them from anything else in an agent's report).
        self.usage = (10, 5)

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
        tin, tout = self.usage
        yield {"type": "response.completed",
               "response": {"id": rid, "usage": {"input_tokens": tin, "input_tokens_details": {"cached_tokens": 0},
                                                 "output_tokens": tout, "output_tokens_details": {"reasoning_tokens": 0},
                                                 "total_tokens": tin + tout}}}


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


@contextlib.contextmanager
def network(prefix, certdir):
    """The fake network of the end-to-end agent tests, on the /24 `prefix`
    (netfake.claim()ed by the caller) of the host's lo:

        PREFIX.53:53   DNS: model.test, api.openai.com and mcp.test -> PREFIX.10
        PREFIX.10:80   the fake model (FakeModel): n.models["http"]
        PREFIX.10:443  the same over HTTPS: n.models["https"], with a
                       certificate for both names from a CA made in certdir
                       (n.ca: the daemon trusts it through --upstream-ca)

    n.dns_rule is the egress policy rule a cell needs to resolve them.
    Skips the test (pytest.skip) without dnspython or the openssl CLI."""
    import pytest
    if netfake.require_dns() is None:
        pytest.skip("dnspython (python3-dnspython) is needed for the fake DNS server")
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is needed to make the test CA")
    dns_ip, model_ip = prefix + ".53", prefix + ".10"
    n = netfake.Net((dns_ip, model_ip))
    n.dns_ip, n.model_ip = dns_ip, model_ip
    n.dns_rule = {"dns": {"upstreams": [dns_ip], "strict": True, "rebind": [prefix + ".0/24"]}}
    n.ca, leaf, key = netfake.make_ca(str(certdir), "model.test", "api.openai.com", "mcp.test")
    try:
        n.up()
        n.models = {"http": FakeModel((model_ip, 80)), "https": FakeModel((model_ip, 443), tls=(leaf, key))}
        zone = {name: {"A": [model_ip]} for name in ("model.test", "api.openai.com", "mcp.test")}
        n.serve(*netfake.FakeDNS(zone).servers(dns_ip),
                *[m.server for m in n.models.values()])
        yield n
    finally:
        n.down()
