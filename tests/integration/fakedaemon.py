"""A fake `cell serve` on a unix socket for the CLI's tests: it accepts
connections on DIR/fake.sock and calls `answer(conn, head, fake)` for each
request head (bytes up to the blank line); `answer` writes whatever it
likes (valid or hostile) and returns whether the connection stays open.
`conn` hands out the bytes after the head first (recv), and can read a
request body (read_body).  Shared by test_cli_http.py and
test_cli_agent_run.py.
"""
import os
import shutil
import socket
import tempfile
import threading

from conftest import run_cell

RUN_TIMEOUT = 60   # a bound on a hang, not a speed claim


class Conn:
    """A client connection with the bytes already received kept in front."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def recv(self, n):
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.sock.recv(n)

    def sendall(self, data):
        self.sock.sendall(data)

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            more = self.sock.recv(65536)
            if not more:
                return None
            self.buf += more
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def _exact(self, n):
        out = b""
        while len(out) < n:
            more = self.recv(n - len(out))
            if not more:
                raise EOFError("short body")
            out += more
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            more = self.sock.recv(65536)
            if not more:
                raise EOFError("short chunk")
            self.buf += more
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_body(self, head):
        """The request's body (Content-Length or chunked); "100 Continue" first when asked."""
        h = head.lower()
        if b"expect: 100-continue" in h:
            self.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if b"transfer-encoding: chunked" in h:
            out = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    return out
                out += self._exact(size)
                self._line()
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                return self._exact(int(line.split(b":", 1)[1]))
        return b""


class FakeDaemon:
    def __init__(self, answer, prefix="cell-it-fake-", tcp=False):
        """tcp: listen on 127.0.0.1 (a remote daemon to the CLI), not on the unix socket."""
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.path = os.path.join(self.dir, "fake.sock")
        self.answer = answer
        self.heads = []
        self.connections = 0
        if tcp:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(self.path)
            self.url = "unix:" + self.path
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._conn, args=(s,), daemon=True).start()

    def _conn(self, s):
        conn = Conn(s)
        try:
            while True:
                head = conn.read_head()
                if head is None:
                    return
                self.heads.append(head.decode("latin-1"))
                if not self.answer(conn, head, self):
                    return
        except (OSError, EOFError):
            pass        # the CLI went away: what several cases expect
        finally:
            s.close()

    def env(self, token="tok", env=None):
        full = dict(os.environ)
        full.pop("CELL_URL", None)
        full["CELL_TOKEN"] = token
        full.update(env or {})
        return full

    def cli(self, *args, token="tok", env=None, **kw):
        kw.setdefault("timeout", RUN_TIMEOUT)
        return run_cell(self.dir, ["--url", self.url] + list(args), env=self.env(token, env), **kw)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def fake_factory():
    """A pytest fixture body: yields make(answer, tcp=False) and closes what it made."""
    made = []

    def make(answer, tcp=False):
        f = FakeDaemon(answer, tcp=tcp)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()
