"""A revoked token ends every stream it opened, downloads included, at the
next chunk (conns.c): the daemon resets the connection (its queued bytes
are dropped, the client gets a reset, never the rest of the body) and a
body waiting on a slow cell looks for the revocation while it waits.
Each test reads slowly: a small receive buffer, so the daemon's send
buffer is full when the token is revoked, the case where a plain FIN would
still have delivered megabytes.  Waits are bounded (socket timeouts,
wait_for), never timed: what is asserted is that the stream ended short and
that nothing is left (the daemon's fds, the cell's transfer processes).

Other long-lived answers and where their revocation is tested: SSE log
follows and terminal WebSockets (test_daemon_front.py:
test_revoking_a_token_ends_its_streams), run events (test_runs_api.py:
test_revoking_the_token_ends_its_event_streams), the desktop's live view
(test_desktop_live.py: test_revoking_the_token_closes_the_live_view)."""
import os
import socket
import threading

import pytest

import daemon as dm
from daemon import assert_problem, content_length, make_tenant_token, raw_get, raw_get_on, wait_for

BIG = 32 << 20          # far more than the daemon's send buffer and the client's receive buffer
SLOW_RCVBUF = 4096
TENANT = "victim"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    # A long idle timeout: nothing here may end for any reason but the revocation.
    yield from dm.serve(tmp_path_factory.mktemp("revoke"), ["--idle-timeout", "300"])


@pytest.fixture(scope="module")
def victim(d, admin):
    """A cell of tenant `victim` holding /root/big (BIG bytes); each test
    revokes tokens of its own of that tenant."""
    tok, _ = make_tenant_token(admin, TENANT)
    c = d.client(tok)
    cid = dm.create_cell(c, "256M")
    r = c.post("/cells/%s/v1/processes/run" % cid,
               {"command": "sh", "args": ["-c", "head -c %d /dev/urandom > /root/big" % BIG]})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    yield cid
    admin.delete("/v1/cells/%s" % cid)


def fds(d):
    return len(os.listdir("/proc/%d/fd" % d.proc.pid))


def fd_links(d):
    out = []
    for n in os.listdir("/proc/%d/fd" % d.proc.pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (d.proc.pid, n)))
        except OSError:
            pass
    return sorted(out)


def settled(d):
    """The daemon's open fds and the cells' processes, once nothing moves."""
    return fds(d), len(dm.cell_pids_of_state(d.state))


def assert_back_to(d, before):
    """The daemon's fds and the cells' processes (a download's transfer
    process in the cell) are back to `before`."""
    assert wait_for(lambda: settled(d)[0] <= before[0], timeout=30), \
        "the daemon holds %d fds, %d before: %s" % (fds(d), before[0], fd_links(d))
    assert wait_for(lambda: settled(d)[1] <= before[1], timeout=30), \
        "a cell process was left: %d, %d before" % (len(dm.cell_pids_of_state(d.state)), before[1])


def read_until_end(s, limit_s=60):
    """(bytes read until the peer closed or reset, how it ended); the wait
    is bounded by the socket's timeout (a stream that does not end fails)."""
    s.settimeout(limit_s)
    n = 0
    with s:
        try:
            while True:
                got = s.recv(65536)
                if not got:
                    return n, "closed"
                n += len(got)
        except ConnectionResetError:
            return n, "reset"
        except socket.timeout:
            return n, "still open"


def file_path(cid):
    return "/cells/%s/v1/fs/file?path=/root/big" % cid


def revoke_mid_body(admin, tid, s, whole, what):
    """The body of `s` flows, the client stops reading, the token `tid` is
    revoked: the body must end, cut short of its `whole` bytes, with no
    more after the revocation than the client's own receive buffer held
    (not the daemon's send queue: megabytes, which a FIN behind it would
    deliver all)."""
    first = s.recv(65536)
    assert first
    assert admin.delete("/v1/tokens/%s" % tid).status == 204
    after, how = read_until_end(s)
    assert how != "still open", "the %s of a revoked token went on" % what
    assert len(first) + after < whole
    assert after < 1 << 20, "%d bytes arrived after the revocation" % after


def test_a_revoked_token_cuts_its_file_download_at_the_next_chunk(d, admin, victim):
    before = settled(d)
    tok, tid = make_tenant_token(admin, TENANT)
    other, _ = make_tenant_token(admin, TENANT)        # the same tenant, another token
    s, head = raw_get(d.port, file_path(victim), tok, rcvbuf=SLOW_RCVBUF)
    o, ohead = raw_get(d.port, file_path(victim), other, rcvbuf=SLOW_RCVBUF)
    assert head.startswith(b"HTTP/1.1 200 ") and content_length(head) == BIG, head
    assert ohead.startswith(b"HTTP/1.1 200 "), ohead
    revoke_mid_body(admin, tid, s, BIG, "download")
    # Refused from now on.
    assert_problem(d.client(tok).get(file_path(victim)), 401, "token_invalid")
    # The other token's download of the same file is whole.
    rest, how = read_until_end(o)
    assert how == "closed" and rest == BIG, (rest, how)
    assert_back_to(d, before)


def test_revoke_while_eight_downloads_of_the_token_start(d, admin, victim):
    """The revocation races 8 downloads starting at once: each is refused
    (401) or cut short; none is a whole body, none leaks."""
    before = settled(d)
    tok, tid = make_tenant_token(admin, TENANT)
    go, revoked = threading.Barrier(9), threading.Event()
    results = [None] * 8

    def download(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        s.connect(("127.0.0.1", d.port))
        go.wait(30)
        try:
            head = raw_get_on(s, file_path(victim), tok)
        except OSError:                         # reset before the head: cut at once
            s.close()
            results[i] = (None, 0, "reset")
            return
        revoked.wait(60)                         # a slow reader: nothing read until the revocation
        body = len(head) - head.index(b"\r\n\r\n") - 4 if b"\r\n\r\n" in head else 0
        n, how = read_until_end(s)
        results[i] = (head, body + n, how)

    threads = [threading.Thread(target=download, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    go.wait(30)
    assert admin.delete("/v1/tokens/%s" % tid).status == 204
    revoked.set()
    for t in threads:
        t.join(90)
    for i, res in enumerate(results):
        assert res is not None, "download %d did not end" % i
        head, got, how = res
        assert how != "still open", (i, head)
        if head and head.startswith(b"HTTP/1.1 200 "):
            assert got < BIG, "download %d of a revoked token came whole" % i
        elif head:
            assert head.startswith(b"HTTP/1.1 401 "), (i, head)
    assert_problem(d.client(tok).get(file_path(victim)), 401, "token_invalid")
    assert_back_to(d, before)


def test_a_revoked_token_cuts_its_lane_export(d, admin):
    """A body a worker thread writes through a pipe (stream.c: lane and image
    exports, image builds) ends the same way."""
    tok, tid = make_tenant_token(admin, TENANT)
    c = d.client(tok)
    lane = dm.uniq("lane")
    assert c.post("/v1/lanes", {"name": lane}).status == 201
    cid = dm.create_cell(c, "256M", lane=lane)
    r = c.post("/cells/%s/v1/processes/run" % cid,
               {"command": "sh", "args": ["-c", "head -c %d /dev/urandom > /root/big" % BIG]})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    assert c.delete("/v1/cells/%s" % cid).status == 204          # an attached lane is not exported
    # The first export loads the archive code for the daemon's lifetime (a memfd): not a leak.
    warm = dm.uniq("lane")
    assert c.post("/v1/lanes", {"name": warm}).status == 201
    assert c.get("/v1/lanes/%s/export" % warm).status == 200
    assert c.delete("/v1/lanes/%s" % warm).status in (200, 204)
    before = settled(d)
    try:
        s, head = raw_get(d.port, "/v1/lanes/%s/export" % lane, tok, rcvbuf=SLOW_RCVBUF)
        assert head.startswith(b"HTTP/1.1 200 "), head
        revoke_mid_body(admin, tid, s, BIG, "lane export")
        assert_back_to(d, before)
    finally:
        keeper, _ = make_tenant_token(admin, TENANT)
        assert d.client(keeper).delete("/v1/lanes/%s" % lane).status in (200, 204)


DESKTOP_TOOLS = ("Xvfb", "openbox", "xdotool", "xterm", "ffmpeg", "xdpyinfo")


@pytest.mark.skipif(not all(os.path.exists("/usr/bin/" + b) for b in DESKTOP_TOOLS),
                    reason="the desktop tools are not installed on the host (scripts/install-deps.sh)")
def test_a_revoked_token_cuts_its_recording_download(d, admin):
    import desktop_support as ds
    tok, tid = make_tenant_token(admin, TENANT)
    c = d.client(tok)
    cid = ds.new_cell(c)
    try:
        dk = ds.Desktop(c, cid)
        stop = ds.big_recording(dk, 6 << 20)
        before = settled(d)
        path = "%s/recordings/%s/download" % (dk.base, stop["id"])
        s, head = raw_get(d.port, path, tok, rcvbuf=SLOW_RCVBUF)
        assert head.startswith(b"HTTP/1.1 200 ") and content_length(head) == stop["bytes"], head
        revoke_mid_body(admin, tid, s, stop["bytes"], "recording download")
        assert_back_to(d, before)               # the cell's transfer process too
    finally:
        admin.delete("/v1/cells/%s" % cid)
