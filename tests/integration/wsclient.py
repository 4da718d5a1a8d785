"""A small WebSocket client (RFC 6455) for the daemon's WebSocket routes:
the handshake by hand, masked client frames, whole messages back.  Tests
use it to speak the protocol exactly, and to misbehave on purpose (bad
frames, never reading)."""
import base64
import json
import os
import socket
import struct


class Closed(Exception):
    """The peer closed: code (None if its close frame had none) and reason."""

    def __init__(self, code, reason):
        super().__init__("closed %s %r" % (code, reason))
        self.code, self.reason = code, reason


class WS:
    def __init__(self, sock, rest, headers):
        self.sock, self.buf, self.headers = sock, rest, headers

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the connection ended")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next whole message: (opcode, payload); raises Closed on a close frame."""
        op, data = None, b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            assert not b1 & 0x80, "the server masked a frame"
            payload = self._read(n)
            fop = b0 & 0x0F
            if fop == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode())
            if fop in (0x9, 0xA):
                continue
            op = op if fop == 0 else fop
            data += payload
            if b0 & 0x80:
                return op, data

    def recv_json(self):
        """The next text message, decoded (binary ones are skipped)."""
        while True:
            op, data = self.recv()
            if op == 0x1:
                return json.loads(data)

    def send(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload)))

    def send_json(self, obj):
        self.send(0x1, json.dumps(obj).encode())

    def close(self, code=1000):
        """Send a close frame and read until the server's; its (code, reason)."""
        self.send(0x8, struct.pack(">H", code))
        try:
            while True:
                self.recv()
        except Closed as c:
            return c.code, c.reason
        finally:
            self.sock.close()

    def closed_with(self):
        """Read (and drop) messages until the server closes: its (code, reason)."""
        try:
            while True:
                self.recv()
        except Closed as c:
            return c.code, c.reason


def handshake(port, path, token=None, protocols=None, host="127.0.0.1", timeout=30, rcvbuf=None, ssl_context=None,
              headers=None):
    """Send a WebSocket upgrade request and read the answer's head; returns
    (socket, head lines, bytes after the head).  rcvbuf: a small receive
    buffer, set before connecting (the window it announces), for a client
    that stops reading.  ssl_context: wss, the socket is wrapped in TLS.
    headers: more request headers, as a browser adds them (Origin; a Host
    of its own replaces the default "x")."""
    headers = dict(headers or {})
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((host, port))
    if ssl_context:
        s = ssl_context.wrap_socket(s, server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, headers.pop("Host", "x"), key))
    req += "".join("%s: %s\r\n" % kv for kv in headers.items())
    if token:
        req += "Authorization: Bearer %s\r\n" % token
    if protocols:
        req += "Sec-WebSocket-Protocol: %s\r\n" % ", ".join(protocols)
    s.sendall((req + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return s, head.decode().split("\r\n"), rest


def connect(port, path, token=None, protocols=None, host="127.0.0.1", timeout=30, rcvbuf=None, ssl_context=None,
            headers=None):
    """Open a WebSocket (wss with ssl_context); returns (status, headers
    dict, WS or None).  A refused handshake's body is in headers["body"]."""
    s, lines, rest = handshake(port, path, token, protocols, host, timeout, rcvbuf, ssl_context, headers)
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if status != 101:
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        headers["body"] = json.loads(rest) if rest else None
        s.close()
        return status, headers, None
    return status, headers, WS(s, rest, headers)
