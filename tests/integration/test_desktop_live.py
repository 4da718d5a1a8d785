"""The desktop's live view (GET /cells/{id}/v1/desktop/live, a WebSocket;
src/server/desktop_live.c): JPEG frames from an ffmpeg x11grab source that
runs in the cell, input and settings as JSON text messages; a refused one
is answered with an error message and the view goes on, protocol
violations close it; the same over TLS (wss).

Frames are decoded with the host's ImageMagick; what the test opens it finds
in a later frame's pixels; input is checked through the HTTP API; the frame
source is found among the cell's processes from the host, and its end is
checked after the socket closes; a client that never reads is checked by
the daemon's RSS against what the source wrote (its /proc io), not by time."""
import json
import os
import socket
import struct

import pytest

import daemon as dm
import wsclient
from daemon import make_tenant_token, wait_for
from desktop_support import Desktop, decode, in_cell, new_cell, pixel, started, xterm
from tlspki import client_context, make_pki, tls_args

pytestmark = pytest.mark.skipif(
    not all(os.path.exists("/usr/bin/" + b) for b in ("Xvfb", "openbox", "xdotool", "convert", "xterm", "ffmpeg")),
    reason="the desktop tools are not installed on the host (scripts/install-deps.sh)")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("desktop-live"))


@pytest.fixture(scope="module")
def shared(admin):
    """One active 640x480 desktop for the tests that stop nothing."""
    cid = new_cell(admin)
    yield started(admin, cid)
    admin.delete("/v1/cells/%s" % cid)


@pytest.fixture
def desk(admin, cells):
    cid = new_cell(admin)
    cells.append(cid)
    return started(admin, cid)


def live(d, dk, query="", token=None, **kw):
    path = "/cells/%s/v1/desktop/live%s" % (dk.cid, query)
    return wsclient.connect(d.port, path, token=token or d.admin_token, **kw)


def opened(d, dk, query=""):
    status, headers, ws = live(d, dk, query)
    assert status == 101, headers
    ready = ws.recv_json()
    assert ready["type"] == "ready", ready
    return ws, ready


def next_text(ws, within=300):
    """The next text message, decoded, among the next `within` messages:
    frames keep coming, so a missing answer is a failure, not a hang."""
    for _ in range(within):
        op, data = ws.recv()
        if op == 0x1:
            return json.loads(data)
    pytest.fail("no text message among %d messages" % within)


def next_frame(ws):
    while True:
        op, data = ws.recv()
        if op == 0x2:
            return data


def red(px):
    """JPEG moves colours a little."""
    return px[0] > 200 and px[1] < 60 and px[2] < 60


def sources(d, dk):
    """[(pid, argv)] of the cell's ffmpeg x11grab processes."""
    return [(p, a) for p, a in in_cell(dk, d.state) if os.path.basename(a[0]) == "ffmpeg" and "x11grab" in a]


# ---- frames ------------------------------------------------------------------------------


def test_frames_are_jpegs_of_the_desktops_size(d, shared):
    ws, ready = opened(d, shared)
    assert ready == {"type": "ready", "width": 640, "height": 480, "frameWidth": 640, "frameHeight": 480,
                     "fps": 10, "quality": 70, "scale": 1.0}, ready
    for _ in range(3):
        frame = next_frame(ws)
        assert frame[:2] == b"\xff\xd8" and frame[-2:] == b"\xff\xd9"
        assert decode(frame)[:2] == (640, 480)
    # Settings change the source: the answer names the new frame size, and frames follow it.
    ws.send_json({"type": "settings", "scale": 0.5, "fps": 20, "quality": 40})
    changed = ws.recv_json()
    assert changed["type"] == "settings" and (changed["frameWidth"], changed["frameHeight"]) == (320, 240), changed
    assert (changed["fps"], changed["quality"]) == (20, 40)
    assert decode(next_frame(ws))[:2] == (320, 240)
    assert ws.close() == (1000, "")


def test_query_settings_and_the_subprotocol(d, shared):
    status, headers, ws = live(d, shared, "?scale=0.25&fps=5&quality=100", protocols=["cell.desktop"])
    assert status == 101 and headers["sec-websocket-protocol"] == "cell.desktop", headers
    ready = ws.recv_json()
    assert (ready["frameWidth"], ready["frameHeight"], ready["fps"]) == (160, 120, 5), ready
    assert decode(next_frame(ws))[:2] == (160, 120)
    ws.close()


def test_a_window_the_test_opens_appears_in_a_later_frame(d, desk):
    ws, _ = opened(d, desk)
    assert not red(pixel(decode(next_frame(ws)), 150, 100))
    xterm(desk)                                       # red, at +100+80
    for _ in range(100):                              # frames, not seconds
        if red(pixel(decode(next_frame(ws)), 150, 100)):
            break
    else:
        pytest.fail("no frame showed the red xterm")
    ws.close()


# ---- input --------------------------------------------------------------------------------


def test_input_over_the_socket_moves_the_pointer_and_types(d, desk):
    ws, _ = opened(d, desk)
    ws.send_json({"type": "move", "x": 321, "y": 123, "id": 1})
    assert ws.recv_json() == {"type": "done", "id": 1}
    r = desk.get("/mouse/position")
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (321, 123), r
    # Without an id, input is applied and not answered; the next answered one comes after it.
    ws.send_json({"type": "move", "x": 10, "y": 20})
    ws.send_json({"type": "click", "x": 30, "y": 40, "id": "c"})
    assert ws.recv_json() == {"type": "done", "id": "c"}
    r = desk.get("/mouse/position")
    assert (r.body["x"], r.body["y"]) == (30, 40), r
    # Keyboard: typed into an xterm that writes what it reads to a file.
    xterm(desk, "-e", "sh", "-c", "read line; echo \"$line\" > /tmp/live-typed")
    ws.send_json({"type": "click", "x": 150, "y": 100})
    ws.send_json({"type": "type", "text": "hello live"})
    ws.send_json({"type": "key", "key": "Return", "id": 2})
    assert ws.recv_json() == {"type": "done", "id": 2}
    wait_for(lambda: desk.run("cat", "/tmp/live-typed")["stdout"] == "hello live\n")
    ws.close()


def still_live(ws, mark):
    """The session goes on: a frame comes, and an input answers done."""
    next_frame(ws)
    ws.send_json({"type": "move", "x": 5, "y": 6, "id": mark})
    while True:
        m = next_text(ws)
        if m.get("id") == mark:
            assert m == {"type": "done", "id": mark}, m
            return


# A refused message: what to send, then the error's field, words and status.
REFUSED = [
    (b"{not json", None, "not JSON", 400),
    (b"[1, 2]", None, "JSON object", 400),
    (b"5", None, "JSON object", 400),
    (b"{}", "type", "\"type\" is missing", 400),
    (b'{"type": 5, "id": 7}', "type", "\"type\" is missing or not a string", 400),
    (b'{"type": "explode", "id": 7}', "type", "unknown \"type\" \"explode\"", 400),
    # The words quote the client's bytes cut at a byte count, inside a
    # UTF-8 character here: still answered (U+FFFD), not a 1008 close.
    (('{"type": "a%s", "id": 8}' % ("\u00e9" * 20)).encode(), "type", "unknown \"type\" \"a\u00e9", 400),
    (('{"%s' % ("\u00e9" * 100)).encode(), None, "not JSON", 400),
    (b'{"type": "settings", "fps": 99, "id": 7}', "fps", "fps must be an integer from 1 to 30", 400),
    (b'{"type": "settings", "fps": -9223372036854775807}', "fps", "fps must be an integer from 1 to 30", 400),
    (b'{"type": "settings", "scale": 0}', "scale", "scale must be a number from 0.1 to 1", 400),
    (b'{"type": "settings", "scale": true}', "scale", "scale must be a number", 400),
    (b'{"type": "settings", "quality": "high"}', "quality", "quality must be an integer", 400),
    (b'{"type": "move", "x": 9999, "y": 1, "id": 7}', None, "move:", 400),
    (b'{"type": "move"}', None, "move:", 400),
    (b'{"type": "move", "x": "10", "y": 1}', None, "move:", 400),
    (b'{"type": "type", "text": 5}', None, "type:", 400),
    (b'{"type": "key", "key": "a b", "id": "k"}', None, "key:", 400),
]


@pytest.mark.parametrize("message, field, says, status", REFUSED)
def test_a_refused_message_is_answered_and_the_view_goes_on(d, shared, message, field, says, status):
    ws, _ = opened(d, shared)
    ws.send(0x1, message)
    err = ws.recv_json()
    assert err["type"] == "error" and says in err["message"] and err["status"] == status, err
    assert err.get("field") == field, err
    try:
        sent = json.loads(message)
    except ValueError:
        sent = None
    assert err.get("id") == (sent.get("id") if isinstance(sent, dict) else None), err
    still_live(ws, "after")
    assert ws.close() == (1000, "")


def _raw(first, payload, masked=True):
    """A client frame by hand: its first byte, the payload, masked or not."""
    n = len(payload)
    bit = 0x80 if masked else 0
    head = bytes([first]) + (bytes([bit | n]) if n < 126 else
                             bytes([bit | 126]) + struct.pack(">H", n) if n < 65536 else
                             bytes([bit | 127]) + struct.pack(">Q", n))
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def test_a_burst_of_refused_messages_is_answered_in_order(d, shared):
    """Forty refused messages in one write (one read for the daemon) are not
    a flood: each is answered, in order, and the view goes on."""
    ws, _ = opened(d, shared)
    ws.sock.sendall(b"".join(_raw(0x81, json.dumps({"type": "explode", "id": i}).encode()) for i in range(40)))
    ids = []
    while len(ids) < 40:
        m = ws.recv_json()
        assert m["type"] == "error", m
        ids.append(m["id"])
    assert ids == list(range(40))
    still_live(ws, "burst")
    ws.close()


# Protocol violations close the view, each with its code.
VIOLATIONS = [
    ("binary", _raw(0x82, b"\xff\xd8"), 1003),
    ("unmasked", _raw(0x81, b'{"type": "move", "x": 1, "y": 1}', masked=False), 1002),
    ("reserved bit", _raw(0xC1, b"{}"), 1002),
    ("unknown opcode", _raw(0x83, b"{}"), 1002),
    ("continuation first", _raw(0x80, b"{}"), 1002),
    ("fragmented ping", _raw(0x09, b"x"), 1002),
    ("ping over 125 bytes", _raw(0x89, b"x" * 126), 1002),
    ("not UTF-8", _raw(0x81, b'{"type": "type", "text": "\xc3\x28"}'), 1007),
    ("over 128 KiB", _raw(0x81, json.dumps({"type": "type", "text": "a" * (200 << 10)}).encode()), 1009),
]


@pytest.mark.parametrize("name, frame, code", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_protocol_violations_close_with_their_code(d, shared, name, frame, code):
    ws, _ = opened(d, shared)
    ws.sock.sendall(frame)
    assert ws.closed_with()[0] == code, name


@pytest.mark.parametrize("query", ["?fps=0", "?fps=31", "?fps=x", "?quality=0", "?quality=101", "?scale=0.05",
                                   "?scale=2", "?scale=nan", "?scale=", "?fps=10abc"])
def test_bad_settings_answer_400(d, shared, query):
    status, headers, ws = live(d, shared, query)
    assert status == 400 and ws is None, headers
    assert headers["body"]["status"] == 400 and "query parameter" in headers["body"]["detail"], headers


# ---- lifetime and backpressure -------------------------------------------------------------


def test_closing_the_socket_ends_the_frame_source(d, desk):
    ws, _ = opened(d, desk)
    next_frame(ws)
    src = sources(d, desk)
    assert len(src) == 1, src
    ws.close()
    # The daemon ends the source before it sends its close frame.
    assert not os.path.exists("/proc/%d" % src[0][0]) or src[0][0] not in [p for p, _ in sources(d, desk)]
    # A client that just vanishes (no close frame) ends it too.
    ws, _ = opened(d, desk)
    next_frame(ws)
    src = sources(d, desk)
    assert len(src) == 1, src
    ws.sock.close()
    wait_for(lambda: not sources(d, desk))


def test_stopping_the_desktop_closes_the_socket(d, desk):
    ws, _ = opened(d, desk)
    next_frame(ws)
    assert desk.post("/stop").status == 200
    assert ws.closed_with() == (1001, "the desktop stopped")
    assert not sources(d, desk)
    # Before a start: 409, as every desktop action.
    status, headers, _ = live(d, desk)
    assert status == 409 and headers["body"]["type"].endswith("desktop_runtime_inactive"), headers


def test_the_cell_stopping_closes_the_socket(d, admin, desk):
    ws, _ = opened(d, desk)
    next_frame(ws)
    assert admin.post("/v1/cells/%s/stop" % desk.cid).status == 200
    assert ws.closed_with()[0] == 1001


def _written(pid):
    with open("/proc/%d/io" % pid) as f:
        return int(dict(l.split(": ") for l in f.read().splitlines())["wchar"])


def _send_buffer_max():
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


def stalled(d, desk):
    """A viewer that has not read while its source wrote more than the
    daemon's socket can hold: (ws, the source's pid, the daemon's RSS in KiB
    before).  The kernel holds little of it (the client's 4 KiB window and
    at most tcp_wmem's maximum on the daemon's side), so the socket is full."""
    # A busy screen makes big frames: an xterm full of random text.
    r = desk.post("/launch", {"app": "xterm", "args": ["-geometry", "100x40+0+0", "-e", "sh", "-c",
                                                       "while :; do head -c 2000 /dev/urandom | base64; done"]})
    assert r.status == 200, r
    status, _, ws = live(d, desk, "?quality=100&fps=30", rcvbuf=4096)
    assert status == 101
    (pid, _), = sources(d, desk)
    before = dm.rss_kib(d.proc.pid)
    start = _written(pid)
    # By the source's own counter, not a clock.
    enough = max(8 << 20, 2 * _send_buffer_max())
    wait_for(lambda: _written(pid) - start > enough, timeout=120)
    return ws, pid, before


def test_a_client_that_never_reads_costs_bounded_memory(d, desk):
    ws, _, before = stalled(d, desk)
    grown = dm.rss_kib(d.proc.pid) - before
    # At most three frames are held (parsed, being sent, waiting), plus allocator slack.
    # ASan's quarantine keeps freed frames resident and TSan's shadow scales RSS (as in
    # test_daemon_cell_api): the release stage checks the bound, every stage the rest.
    if not (dm.ASAN or dm.TSAN):
        assert grown < 4 << 10, "the daemon grew %d KiB while its client did not read" % grown
    # And the session still works once the client reads again.
    next_frame(ws)
    ws.send_json({"type": "move", "x": 5, "y": 5, "id": "after"})
    while next_text(ws).get("id") != "after":
        pass
    ws.sock.close()
    wait_for(lambda: not sources(d, desk))


def test_answers_a_client_does_not_read_past_the_limit_close_it(d, desk):
    """The flood limit: a client that sends messages needing an answer and
    does not read them gets 8 answers queued; the next closes the view
    with 1008 (the error messages are never a queue without bound)."""
    ws, _, _ = stalled(d, desk)
    # Nine answers more than the socket takes.  Its send buffer can still
    # grow a little after it first filled (TCP's autotuning): then some
    # answers go out and another round is needed.  The daemon ends the
    # source before it queues its close: seen without reading (a client
    # that reads first would make room for the answers).
    sent = 0
    for _ in range(50):
        ws.sock.sendall(b"".join(_raw(0x81, json.dumps({"type": "explode", "id": sent + i}).encode())
                                 for i in range(9)))
        sent += 9
        if wait_for(lambda: not sources(d, desk), timeout=2):
            break
    assert not sources(d, desk), "%d unanswered messages did not close the view" % sent
    errors = []
    try:
        while True:
            m = next_text(ws, within=1000)
            if m["type"] != "ready":                    # (stalled() read nothing)
                errors.append(m["id"])
    except wsclient.Closed as c:
        assert (c.code, c.reason) == (1008, "more than 8 answers wait: read the socket"), c
    # The answers that waited went out, in order, before the close; 8 of
    # them could not go out when the next came.
    assert errors == list(range(len(errors))) and 8 <= len(errors) < sent, (errors, sent)
    ws.sock.close()


# ---- who may watch --------------------------------------------------------------------------


def test_tenancy_auth_and_the_viewer_bound(d, admin, shared):
    # Unknown cell, another tenant's token, no token.
    status, headers, _ = wsclient.connect(d.port, "/cells/nope/v1/desktop/live", token=d.admin_token)
    assert status == 404, headers
    tok, _ = make_tenant_token(admin, dm.uniq("live"))
    status, headers, _ = live(d, shared, token=tok)
    assert status == 404, headers
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(("GET /cells/%s/v1/desktop/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % shared.cid).encode())
    assert b" 401 " in s.recv(4096).split(b"\r\n")[0]
    s.close()
    # A browser's way: the token as a subprotocol offer.
    status, headers, ws = wsclient.connect(d.port, "/cells/%s/v1/desktop/live" % shared.cid,
                                           protocols=["cell.desktop", "cell.bearer." + d.admin_token])
    assert status == 101 and headers["sec-websocket-protocol"] == "cell.desktop", headers
    # Four viewers at most; the fifth is told, and a closed one frees its place.
    viewers = [ws] + [opened(d, shared)[0] for _ in range(3)]
    status, headers, _ = live(d, shared)
    assert status == 409 and "4 live views" in headers["body"]["detail"], headers
    viewers.pop().close()
    more, _ = opened(d, shared)
    for v in viewers + [more]:
        v.close()
    # Not a WebSocket handshake: 400.
    r = admin.get("/cells/%s/v1/desktop/live" % shared.cid)
    assert r.status == 400, r


def test_idle_desktop_answers_409(d, admin, cells):
    cid = new_cell(admin)
    cells.append(cid)
    status, headers, _ = live(d, Desktop(admin, cid))
    assert status == 409 and headers["body"]["type"].endswith("desktop_runtime_inactive"), headers


def revoke_ends_the_view(d, admin, dk, tid, ws):
    """Revoke token tid, whose view of dk is ws: the view ends, and its source."""
    next_frame(ws)
    assert len(sources(d, dk)) == 1               # (and learns the cell's netns while the token works)
    assert admin.delete("/v1/tokens/%s" % tid).status in (200, 204)
    # The daemon cuts the revoked token's connections itself (conns.c; over
    # TLS under the relay); the session's 1008 close frame may or may not get out first.
    try:
        assert ws.closed_with() == (1008, "the token was revoked")
    except (EOFError, OSError):
        pass
    assert wait_for(lambda: not sources(d, dk))
    ws.sock.close()


def test_revoking_the_token_closes_the_live_view(d, admin):
    tok, tid = make_tenant_token(admin, dm.uniq("rev"))
    c = d.client(tok)
    cid = new_cell(c)
    try:
        dk = started(c, cid)
        status, _, ws = live(d, dk, token=tok)
        assert status == 101
        ws.recv_json()
        revoke_ends_the_view(d, admin, dk, tid, ws)
    finally:
        admin.delete("/v1/cells/%s" % cid)


# ---- over TLS ---------------------------------------------------------------------------------


def test_the_live_view_over_tls(tmp_path_factory):
    """wss: `cell serve --tls-cert/--tls-key` (mutual TLS here) serves the
    live view as it serves plain HTTP: frames, input, a refused input
    answered, settings, the close handshake, the source's end; and the
    daemon stops cleanly with a TLS viewer open that never reads (its
    session runs on a thread of its own, upgrade.c, ended before
    libmicrohttpd stops)."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    ctx = client_context(pki)
    with dm.served(tmp_path_factory.mktemp("live-tls"), tls_args(pki), ssl_context=ctx) as dd:
        admin = dd.client()
        dk = started(admin, new_cell(admin))
        path = "/cells/%s/v1/desktop/live" % dk.cid
        status, headers, ws = wsclient.connect(dd.port, path, token=dd.admin_token, ssl_context=ctx)
        assert status == 101, headers
        assert ws.recv_json()["type"] == "ready"
        frame = next_frame(ws)
        assert frame[:2] == b"\xff\xd8" and decode(frame)[:2] == (640, 480)
        ws.send_json({"type": "move", "x": 123, "y": 45, "id": 1})
        assert ws.recv_json() == {"type": "done", "id": 1}
        r = dk.get("/mouse/position")
        assert (r.body["x"], r.body["y"]) == (123, 45), r
        ws.send_json({"type": "move", "x": 9999, "y": 1, "id": 2})
        err = ws.recv_json()
        assert err["type"] == "error" and err["id"] == 2 and err["status"] == 400, err
        ws.send_json({"type": "settings", "scale": 0.5})
        assert ws.recv_json()["frameWidth"] == 320
        assert decode(next_frame(ws))[:2] == (320, 240)
        (src, _), = sources(dd, dk)
        assert ws.close() == (1000, "")
        wait_for(lambda: not os.path.exists("/proc/%d" % src) or not sources(dd, dk))
        # Revoking the token ends a TLS view and its source.
        tok, tid = make_tenant_token(admin, dm.uniq("tlsrev"))
        dk2 = started(dd.client(tok), new_cell(dd.client(tok)))
        status, _, ws2 = wsclient.connect(dd.port, "/cells/%s/v1/desktop/live" % dk2.cid, token=tok, ssl_context=ctx)
        assert status == 101
        revoke_ends_the_view(dd, admin, dk2, tid, ws2)
        # A viewer that never reads, open while the daemon stops.
        status, _, idle = wsclient.connect(dd.port, path, token=dd.admin_token, ssl_context=ctx, rcvbuf=4096)
        assert status == 101
        wait_for(lambda: len(sources(dd, dk)) == 1)
        try:
            assert dd.stop() == 0
        finally:
            idle.sock.close()
