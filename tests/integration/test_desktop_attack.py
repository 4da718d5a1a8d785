"""Attacks on the desktop (src/server/desktop.c), its live view
(desktop_live.c) and the Inspector UI (ui.c), as a hostile agent inside a
cell, a hostile second tenant and a web page on another origin would make
them.  Each test is one attempt; what it must not get is its assertion.
docs/security.md ("The desktop and the Inspector under attack") lists them.

Holes found in files this test does not own are strict xfails naming the
defect, so the day they are fixed the suite says so."""
import os
import re
import socket
import threading

import pytest

import daemon as dm
import wsclient
from conftest import cgroup_roots
from daemon import assert_problem, make_tenant_token, recv_to_close, wait_for
from desktop_support import Desktop, in_cell, named, new_cell, started

pytestmark = pytest.mark.skipif(
    not all(os.path.exists("/usr/bin/" + b) for b in ("Xvfb", "openbox", "xdotool", "convert", "xprop", "xterm",
                                                      "ffmpeg", "xdpyinfo")),
    reason="the desktop tools are not installed on the host (scripts/install-deps.sh)")

ALLOWED = "https://inspector.example.com"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("desktop-attack"), ["--cors-origin", ALLOWED])


@pytest.fixture(scope="module")
def victim(admin):
    """The victim: an active 640x480 desktop on :150 with one recording."""
    cid = new_cell(admin)
    dk = started(admin, cid)
    r = dk.post("/recording/start", {"fps": 5})
    assert r.status == 200, r
    dk.rec = r.body["id"]
    # Frames, not time: a recording stopped before its first frame is a failed one.
    assert wait_for(lambda: int(dk.run("sh", "-c", "stat -c %%s /tmp/.cell-desktop/recordings/%s.mp4 2>/dev/null || "
                                                   "echo 0" % dk.rec)["stdout"].split()[0]) > 0, timeout=20)
    r = dk.post("/recording/stop")
    assert r.status == 200 and r.body["status"] == "completed", r
    yield dk
    admin.delete("/v1/cells/%s" % cid)


@pytest.fixture(scope="module")
def stranger(d, admin):
    """A client of another tenant, and that tenant's token."""
    tok, _ = make_tenant_token(admin, dm.uniq("evil"))
    return admin.with_token(tok), tok


def sh(dk, script):
    """Run a shell script in dk's cell: (exit code, stdout + stderr)."""
    r = dk.run("sh", "-c", script)
    return r["exitCode"], r["stdout"] + r["stderr"]


def live(d, dk, token=None, query="", **kw):
    return wsclient.connect(d.port, "/cells/%s/v1/desktop/live%s" % (dk.cid, query), token=token, **kw)


def sources(d, dk):
    return [(p, a) for p, a in in_cell(dk, d.state) if os.path.basename(a[0]) == "ffmpeg" and "x11grab" in a]


# ---- the X server: reachable from nowhere but its own cell ----------------------------------

PROBE = r"""
import socket, sys
tries = [("unix", "/tmp/.X11-unix/X150"), ("abstract", "\0/tmp/.X11-unix/X150")]
tries += [("tcp", (a, 6150)) for a in sys.argv[1:]]
for kind, where in tries:
    s = socket.socket(socket.AF_INET if kind == "tcp" else socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(where)
        print("REACHED", kind, where)
    except OSError as e:
        print("refused", kind, e.__class__.__name__)
"""


def addresses(dk):
    """The cell's IPv4 addresses (loopback included)."""
    _, out = sh(dk, "cat /proc/net/fib_trie")
    return sorted({a for a in re.findall(r"\|-- (\d+\.\d+\.\d+\.\d+)\n\s+/32 host LOCAL", out)} | {"127.0.0.1"})


@pytest.mark.parametrize("who", ["same tenant", "other tenant"])
def test_another_cell_cannot_reach_the_display(d, admin, cells, victim, stranger, who):
    client = admin if who == "same tenant" else stranger[0]
    cid = new_cell(client)
    if who == "same tenant":
        cells.append(cid)
    attacker = Desktop(client, cid)
    try:
        targets = addresses(victim) + ["127.0.0.1"]
        code, out = sh(attacker, "python3 -c '%s' %s" % (PROBE.replace("'", "'\"'\"'"), " ".join(targets)))
        assert code == 0 and "REACHED" not in out and out.count("refused") == 2 + len(targets), out
        # The X tools say the same: no display :150 (nor the victim's address:150) here.
        for display in [":150"] + ["%s:150" % a for a in targets]:
            code, out = sh(attacker, "xdpyinfo -display %s >/dev/null 2>&1; echo $?" % display)
            assert out.strip() != "0", (display, out)
        # The attacker's own desktop on the same display number is its own: both stay up,
        # and the victim's screen is not the attacker's.
        r = attacker.post("/start", {"width": 320, "height": 200, "displayNum": 150})
        assert r.status == 200 and r.body["state"] == "active", r
        assert victim.get("/status").body["state"] == "active"
        assert attacker.get("/display/info").body["resolution"]["width"] == 320
        assert victim.get("/display/info").body["resolution"]["width"] == 640
    finally:
        if who == "other tenant":
            client.delete("/v1/cells/%s" % cid)


def test_the_host_reaches_no_x_socket(d, victim):
    """From the host: no TCP listener on 6000+N on any address, no socket file,
    no abstract socket in the host's namespace."""
    for port in (6150, 6000 + 99):
        s = socket.socket()
        s.settimeout(2)
        with pytest.raises(OSError):
            s.connect(("127.0.0.1", port))
        s.close()
    assert not os.path.exists("/tmp/.X11-unix/X150")
    with open("/proc/net/unix") as f:
        assert "@/tmp/.X11-unix/X150" not in f.read()


# ---- a hostile second tenant: 404 everywhere, as for a cell that does not exist ------------

ROUTES = [
    ("GET", "/status"), ("POST", "/start"), ("POST", "/stop"), ("GET", "/display/info"), ("GET", "/screenshot"),
    ("GET", "/screenshot/region?x=0&y=0&width=10&height=10"), ("GET", "/mouse/position"), ("POST", "/mouse/move"),
    ("POST", "/mouse/click"), ("POST", "/mouse/down"), ("POST", "/mouse/up"), ("POST", "/mouse/drag"),
    ("POST", "/mouse/scroll"), ("POST", "/keyboard/type"), ("POST", "/keyboard/press"), ("POST", "/keyboard/down"),
    ("POST", "/keyboard/up"), ("GET", "/windows"), ("GET", "/windows/focused"), ("POST", "/windows/1/focus"),
    ("POST", "/windows/1/move"), ("POST", "/windows/1/resize"), ("GET", "/clipboard"), ("POST", "/clipboard"),
    ("POST", "/launch"), ("POST", "/open"), ("POST", "/recording/start"), ("POST", "/recording/stop"),
    ("GET", "/recordings"), ("GET", "/recordings/REC"), ("GET", "/recordings/REC/download"),
    ("DELETE", "/recordings/REC"), ("GET", "/stream/status"), ("POST", "/stream/start"), ("POST", "/stream/stop"),
    ("GET", "/stream/signaling"),
]


def test_the_list_is_every_desktop_route():
    """ROUTES is every /desktop route src/server/routes.c serves but the
    live view (tested below by its three ways in): a route added there and
    not here fails, so the tenant check is never left untried."""
    src = open(os.path.join(os.path.dirname(__file__), "../../src/server/routes.c")).read()
    served = set(re.findall(r'CELL_ROUTE\("(GET|POST|PUT|DELETE)",\s*"/desktop(/[^"]*)"', src))
    served.discard(("GET", "/live"))
    norm = {(m, re.sub(r"\?.*", "", p).replace("/1/", "/{wid}/").replace("REC", "{rid}")) for m, p in ROUTES}
    assert served and served == norm, (sorted(served - norm), sorted(norm - served))
BODIES = {"/mouse/move": {"x": 1, "y": 1}, "/mouse/click": {"x": 1, "y": 1}, "/keyboard/type": {"text": "rm -rf /"},
          "/keyboard/press": {"key": "Return"}, "/clipboard": {"text": "stolen"}, "/launch": {"app": "xterm"}}


def test_every_route_answers_another_tenant_as_an_unknown_cell(d, admin, victim, stranger):
    other, tok = stranger
    for method, path in ROUTES:
        path = path.replace("REC", victim.rec)
        body = BODIES.get(path, {}) if method == "POST" else None
        theirs = other.call(method, victim.base + path, json_body=body)
        nowhere = other.call(method, "/cells/000000000000/v1/desktop" + path, json_body=body)
        b = assert_problem(theirs, 404, "not_found")
        # The same answer as for a cell that does not exist, but for the id: nothing leaks.
        assert b["detail"].replace(victim.cid, "ID") == nowhere.body["detail"].replace("000000000000", "ID"), \
            (path, b, nowhere.body)
    # The live view too, by header, by subprotocol and by ?access_token=.
    for kw in ({"token": tok}, {"protocols": ["cell.desktop", "cell.bearer." + tok]},
               {"query": "?access_token=" + tok}):
        status, headers, _ = live(d, victim, **kw)
        assert status == 404 and headers["body"]["type"].endswith("not_found"), (kw, headers)
    # Nothing the stranger sent got through: still active, the recording kept, no stolen clipboard.
    assert victim.get("/status").body["state"] == "active"
    assert victim.get("/recordings/%s" % victim.rec).status == 200
    assert victim.get("/clipboard").body.get("text") != "stolen"
    assert not sources(d, victim)


def test_recording_ids_do_not_traverse(victim):
    for rid in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "rec_1%2F..%2Frec_1", victim.rec + ".mp4", victim.rec + "%00",
                victim.rec.upper(), "rec_" + "9" * 400, "*"):
        r = victim.get("/recordings/%s/download" % rid)
        assert r.status in (400, 404, 414), (rid, r)
        assert r.ctype != "video/mp4", rid


# ---- the live view: who may open it ----------------------------------------------------

def test_a_page_on_another_origin_cannot_open_the_live_view(d, victim):
    """No CORS preflight guards a WebSocket: the daemon checks Origin itself."""
    own = "127.0.0.1:%d" % d.port
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1", "http://%s.evil.example" % own,
                   "https://" + own + ".evil.example", "file://", ALLOWED + ".evil.example"):
        for kw in ({"token": d.admin_token}, {"protocols": ["cell.desktop", "cell.bearer." + d.admin_token]}):
            status, headers, _ = live(d, victim, headers={"Origin": origin, "Host": own}, **kw)
            assert status == 403 and origin in headers["body"]["detail"], (origin, headers)
    assert not sources(d, victim), "a refused handshake started a frame source"
    # The Inspector's own origin, an origin of --cors-origin, and a client that is not a browser may.
    for headers in ({"Origin": "http://" + own, "Host": own}, {"Origin": ALLOWED, "Host": own}, {"Host": own}):
        status, _, ws = live(d, victim, token=d.admin_token, headers=headers)
        assert status == 101, headers
        assert ws.recv_json()["type"] == "ready"
        ws.close()
    wait_for(lambda: not sources(d, victim))


def test_a_page_on_another_origin_cannot_open_a_terminal(d, admin, cells):
    cid = new_cell(admin, resources={"memory": "64M"})
    cells.append(cid)
    cell = dm.CellClient(admin, cid)
    pid = cell.spawn("sh", tty=True, interactive=True)["id"]
    path = "/cells/%s/v1/processes/%s/terminal/ws" % (cid, pid)
    own = "127.0.0.1:%d" % d.port
    status, headers, _ = wsclient.connect(d.port, path, token=d.admin_token,
                                          headers={"Origin": "https://evil.example", "Host": own})
    assert status == 403, headers
    status, _, ws = wsclient.connect(d.port, path, token=d.admin_token, headers={"Origin": "http://" + own,
                                                                                    "Host": own})
    assert status == 101
    ws.sock.close()


def test_the_token_in_the_url_is_never_logged(d, admin, victim):
    tok, _ = make_tenant_token(admin, dm.uniq("url"))
    c = d.client(tok)
    cid = new_cell(c)
    try:
        dk = started(c, cid)
        status, _, ws = live(d, dk, query="?access_token=%s&fps=5" % tok)
        assert status == 101
        ws.recv_json()
        ws.close()
        # A refused one too (a bad setting after the token).
        status, headers, _ = live(d, dk, query="?access_token=%s&fps=nope" % tok)
        assert status == 400, headers
        r = c.get("/v1/audit", query={"limit": "50"})
        assert r.status == 200 and r.raw and tok.encode() not in r.raw, r
        assert any(x.get("path", "").endswith("/desktop/live") for x in r.body["records"]), r.body
    finally:
        admin.delete("/v1/cells/%s" % cid)
    logs = [os.path.join(d.state, f) for f in os.listdir(d.state) if f.startswith(("audit.log", "daemon."))]
    assert logs
    for path in logs:
        with open(path, "rb") as f:
            assert tok.encode() not in f.read(), path


def test_concurrent_viewers_never_pass_the_bound(d, victim):
    results = [None] * 8

    def open_one(i):
        results[i] = live(d, victim, token=d.admin_token)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = [ws for status, _, ws in results if status == 101]
    assert 1 <= len(opened) <= 4 and all(s in (101, 409) for s, _, _ in results), [r[:2] for r in results]
    assert len(sources(d, victim)) == len(opened)
    for ws in opened:
        ws.sock.close()
    assert wait_for(lambda: not sources(d, victim), timeout=30), sources(d, victim)


def test_deleting_the_cell_ends_the_view_and_its_source(d, admin):
    cid = new_cell(admin)
    dk = started(admin, cid)
    status, _, ws = live(d, dk, token=d.admin_token)
    assert status == 101
    ws.recv_json()
    dk.netns = dk.run("readlink", "/proc/self/ns/net")["stdout"].strip()
    assert sources(d, dk)
    assert admin.delete("/v1/cells/%s" % cid).status in (200, 204)
    try:
        ws.closed_with()
    except (EOFError, ConnectionResetError):
        pass
    assert wait_for(lambda: not sources(d, dk), timeout=30)


# ---- the desktop's processes are the cell's: its limits, its end -------------------------

def _pids_cgroup(pid):
    """The pids cgroup directory of a process (v1's pids controller, else v2's)."""
    v2, v1 = cgroup_roots()
    with open("/proc/%d/cgroup" % pid) as f:
        lines = dict(l.split(":", 2)[1:] for l in f.read().splitlines())
    if "pids" in lines and "pids" in v1:
        return v1["pids"] + lines["pids"]
    return v2 + lines[""]


def test_a_fork_bomb_from_a_launched_app_stays_in_the_cells_pids(d, admin):
    cid = new_cell(admin, resources={"memory": "512M", "pids": 64, "cpus": 0.2})
    try:
        dk = started(admin, cid)
        (xpid, _), = named(in_cell(dk, d.state), "Xvfb")
        cg = _pids_cgroup(xpid)
        with open(cg + "/cgroup.procs") as f:
            assert str(xpid) in f.read().split(), "the X server is not in the cell's pids cgroup"
        with open(cg + "/pids.max") as f:
            assert f.read().strip() == "64"
        r = dk.post("/launch", {"app": "sh", "args": ["-c", "while :; do sleep 1000 & done"]})
        assert r.status == 200, r

        def hit_the_limit():
            with open(cg + "/pids.events") as f:
                return int(f.read().split()[1]) > 0
        assert wait_for(hit_the_limit, timeout=60)
        with open(cg + "/pids.current") as f:
            assert int(f.read()) <= 64
        # The daemon still answers, for this cell and for others.
        assert admin.get("/v1/health").status == 200
        assert dk.get("/status").status == 200
    finally:
        assert admin.delete("/v1/cells/%s" % cid).status in (200, 204)
    # Every process of it is gone with the cell: the cgroup itself.
    assert wait_for(lambda: not os.path.exists(cg), timeout=30), cg


def test_a_full_disk_fails_the_recording_not_the_daemon(d, admin):
    cid = new_cell(admin, resources={"memory": "512M", "disk": "64M"})
    try:
        dk = started(admin, cid)
        # The agent fills its throwaway layer (a tmpfs charged to the cell), where recordings go.
        code, out = sh(dk, "dd if=/dev/zero of=/tmp/fill bs=1M 2>&1; df -k /tmp | tail -1")
        assert "No space left" in out, out
        r = dk.post("/recording/start", {"fps": 10})
        if r.status == 200:
            r = dk.post("/recording/stop")
            assert r.status == 200 and r.body["status"] == "failed" and r.body["bytes"] == 0, r
            assert_problem(dk.get("/recordings/%s/download" % r.body["id"]), 409, "conflict", "failed")
        else:
            assert r.status in (409, 503), r
        assert admin.get("/v1/health").status == 200
        # Space again: recording works again.
        sh(dk, "rm -f /tmp/fill")
        assert dk.post("/recording/start", {"fps": 10}).status == 200
        assert dk.post("/recording/stop").status == 200
    finally:
        admin.delete("/v1/cells/%s" % cid)


def test_the_desktop_dies_with_a_killed_daemon(tmp_path):
    with dm.served(tmp_path / "d") as dd:
        admin = dd.client()
        cid = new_cell(admin)
        dk = started(admin, cid)
        assert named(in_cell(dk, dd.state), "Xvfb")
        dd.kill9()
        assert wait_for(lambda: not dm.cell_pids_of_state(dd.state), timeout=30), dm.cell_pids_of_state(dd.state)
        dd.start()
        assert admin.post("/v1/cells/%s/start" % cid).status == 200
        r = dk.get("/status")
        assert r.status == 200 and r.body["state"] == "inactive", r


def test_recordings_are_bounded_in_number(d, admin, cells):
    """32 kept at most: the 33rd start is refused (each one a file in the cell and a
    record in the daemon), and deleting one makes room."""
    cid = new_cell(admin)
    cells.append(cid)
    dk = started(admin, cid)
    for i in range(32):
        r = dk.post("/recording/start", {"fps": 30})
        assert r.status == 200, (i, r)
        assert dk.post("/recording/stop").status == 200
    b = assert_problem(dk.post("/recording/start", {"fps": 30}), 409, "conflict", "32 recordings are kept")
    recs = dk.get("/recordings").body["recordings"]
    assert len(recs) == 32 and not sources(d, dk), b
    assert dk.c.delete(dk.base + "/recordings/%s" % recs[0]["id"]).status == 204
    assert dk.post("/recording/start", {"fps": 30}).status == 200
    assert dk.post("/recording/stop").status == 200


# ---- recordings: what the agent in the cell can do to a download --------------------------

def _hwm_kib(pid):
    return int(dm.proc_status(pid)["VmHWM"].split()[0])


REC_DIR = "/tmp/.cell-desktop/recordings"


def _rec_size(dk, rid):
    return int(sh(dk, "stat -c %%s %s/%s.mp4 2>/dev/null || echo 0" % (REC_DIR, rid))[1].split()[0])


def _recorded(dk, fps=10, at_least=1):
    """A completed recording of at least `at_least` bytes: its stop's answer."""
    rid = dk.post("/recording/start", {"fps": fps}).body["id"]
    # Bytes, not time: a recording stopped before its first frame is a failed one.
    assert wait_for(lambda: _rec_size(dk, rid) >= at_least, timeout=60)
    stop = dk.post("/recording/stop").body
    assert stop["status"] == "completed", stop
    return stop


def test_a_download_does_not_buffer_what_the_cell_put_in_place_of_the_recording(tmp_path):
    # A daemon of its own: its peak RSS (VmHWM) before the download is its start's, not
    # another test's.
    with dm.served(tmp_path / "d") as dd:
        admin = dd.client()
        dk = started(admin, new_cell(admin))
        rid = _recorded(dk)["id"]
        # 16 MiB in the cell's throwaway layer (charged to its 512M), in place of the finished recording.
        code, out = sh(dk, "cd %s && head -c 16777216 /dev/zero > big && mv -f big %s.mp4" % (REC_DIR, rid))
        assert code == 0, out
        before = _hwm_kib(dd.proc.pid)
        # Not the recording any more: refused before a byte of it is read.
        assert_problem(dk.get("/recordings/%s/download" % rid), 409, "conflict", "changed in the cell after it stopped")
        grown = _hwm_kib(dd.proc.pid) - before
        assert grown < 8 << 10, "one download made the daemon's peak grow by %d MiB" % (grown >> 10)


@pytest.fixture(scope="module")
def recorded(admin):
    """A cell with one completed recording, and a copy of it at /tmp/orig.mp4."""
    cid = new_cell(admin)
    dk = started(admin, cid)
    dk.stop = _recorded(dk)
    dk.path = "%s/%s.mp4" % (REC_DIR, dk.stop["id"])
    assert sh(dk, "cp -p %s /tmp/orig.mp4" % dk.path)[0] == 0
    yield dk
    admin.delete("/v1/cells/%s" % cid)


# What the agent in the cell puts in place of a finished recording: each is refused before the
# status line, the desktop still answers, and the recording downloads again once it is back.
IN_PLACE = [
    ("ln -sf /dev/zero $F", 409, "no longer a regular file"),            # endless: once held the lock 60 s
    ("ln -sf /etc/shadow $F", 409, "no longer a regular file"),          # a path outside the recordings
    ("ln -sf /tmp/orig.mp4 $F", 409, "no longer a regular file"),        # the same bytes, through a link
    ("mv %s %s.real && ln -s %s.real %s && rm -f $F && ln /tmp/orig.mp4 $F" % ((REC_DIR,) * 4), 409,
     "no longer a regular file"),                                        # a link higher up the path
    ("rm -f $F && mkfifo $F", 409, "no longer a regular file"),          # a FIFO nobody writes
    ("rm -f $F && mkdir $F", 409, "no longer a regular file"),
    ("cat /tmp/orig.mp4 /tmp/orig.mp4 > $F", 409, "changed in the cell after it stopped"),   # grown after stop
    ("head -c 100 /tmp/orig.mp4 > $F", 409, "changed in the cell after it stopped"),        # shrunk
    ("rm -f $F", 404, "is gone from the cell"),
]


@pytest.mark.parametrize("script,status,words", IN_PLACE, ids=["dev-zero", "host-path", "same-bytes-link",
                                                               "linked-dir", "fifo", "dir", "grown", "shrunk",
                                                               "gone"])
def test_what_the_cell_puts_in_place_of_a_recording_is_refused(recorded, script, status, words):
    dk, rid = recorded, recorded.stop["id"]
    code, out = sh(dk, script.replace("$F", dk.path))
    assert code == 0, out
    try:
        r = dk.get("/recordings/%s/download" % rid)
        b = assert_problem(r, status, "conflict" if status == 409 else "not_found", words)
        assert rid in b["detail"], b
        # The desktop's lock was not kept: its other calls answer.
        assert dk.get("/recordings/%s" % rid).status == 200
        assert dk.get("/mouse/position").status == 200
    finally:
        sh(dk, "rm -rf %s; if [ -L %s ]; then rm %s && mv %s.real %s; fi; rm -rf %s; cp -p /tmp/orig.mp4 %s"
           % (dk.path, REC_DIR, REC_DIR, REC_DIR, REC_DIR, dk.path, dk.path))
    # Put back, it is the recording again.
    r = dk.get("/recordings/%s/download" % rid)
    assert r.status == 200 and len(r.raw) == dk.stop["bytes"] and r.ctype == "video/mp4", r


@pytest.fixture(scope="module")
def big(admin):
    """A cell whose completed recording is at least 12 MiB (a 1280x960 screen of scrolling
    random text at 30 fps, about 4 MiB a second) and the file's sha256."""
    cid = new_cell(admin)
    dk = Desktop(admin, cid)
    r = dk.post("/start", {"width": 1280, "height": 960, "displayNum": 151})
    assert r.status == 200 and r.body["state"] == "active", r
    r = dk.post("/launch", {"app": "xterm", "args": ["-geometry", "220x75+0+0", "-e", "sh", "-c",
                                                     "od -x /dev/urandom"], "wait": True})
    assert r.status == 200, r
    dk.stop = _recorded(dk, fps=30, at_least=12 << 20)
    dk.path = "%s/%s.mp4" % (REC_DIR, dk.stop["id"])
    dk.sha = sh(dk, "sha256sum %s" % dk.path)[1].split()[0]
    # The screen still: nothing of the cell's CPU goes on scrolling.
    assert sh(dk, "pkill -x od; true")[0] == 0
    yield dk
    admin.delete("/v1/cells/%s" % cid)


def _open_download(dk, rcvbuf=None):
    """A GET of the big recording on a socket of its own, the status line and headers read
    and the body not; rcvbuf: a small receive buffer, so that the daemon's side fills."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", dk.c.port))
    s.sendall(("GET %s/recordings/%s/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Connection: close\r\n\r\n" % (dk.base, dk.stop["id"], dk.c.token)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        got = s.recv(1)
        assert got, head
        head += got
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"content-length: %d\r\n" % dk.stop["bytes"] in head.lower(), head
    return s


def _read_rest(s):
    body = b""
    while True:
        got = s.recv(1 << 20)
        if not got:
            return body
        body += got


def test_concurrent_downloads_of_one_recording_each_get_it_whole(big):
    import hashlib
    results = {}

    def download(i):
        results[i] = big.get("/recordings/%s/download" % big.stop["id"])

    threads = [threading.Thread(target=download, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results.values():
        assert r.status == 200 and len(r.raw) == big.stop["bytes"], r
        assert hashlib.sha256(r.raw).hexdigest() == big.sha


def test_a_recording_grown_during_its_download_is_cut_short_never_extended(big):
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max = int(f.read().split()[2])
    # What the transfer process may have read ahead: the 1 MiB pipe, the daemon's send buffer,
    # the client's receive buffer and the daemon's block.
    assert big.stop["bytes"] > (1 << 20) + wmem_max + (256 << 10), "recording too small for this host's buffers"
    s = _open_download(big, rcvbuf=64 << 10)
    try:
        assert s.recv(64 << 10)
        # With the client this far, the cell's transfer process is at most a pipe and the
        # daemon's socket buffers (about 5 MiB) into the 12 MiB file: it reads what the agent
        # appends now, and the response ends short of its Content-Length.
        assert sh(big, "head -c 1048576 /dev/urandom >> %s" % big.path)[0] == 0
        body = _read_rest(s)
    finally:
        s.close()
        assert sh(big, "truncate -s %d %s" % (big.stop["bytes"], big.path))[0] == 0
    assert 0 < len(body) < big.stop["bytes"] - (64 << 10)
    # Back to its size, it downloads whole.
    r = big.get("/recordings/%s/download" % big.stop["id"])
    assert r.status == 200 and len(r.raw) == big.stop["bytes"], r


def test_a_client_that_stops_reading_holds_neither_memory_nor_the_desktop(d, big):
    import hashlib
    rss = lambda: int(dm.proc_status(d.proc.pid)["VmRSS"].split()[0])  # noqa: E731
    before = rss()
    s = _open_download(big, rcvbuf=64 << 10)
    try:
        first = s.recv(64 << 10)
        assert first
        # The client reads no more.  The daemon's memory stays where it was (one block of the
        # file, not the file), and the desktop answers its other calls meanwhile.
        assert big.get("/recordings").status == 200
        assert big.get("/status").body["state"] == "active"
        shot = big.get("/screenshot/region", query={"x": 0, "y": 0, "width": 64, "height": 64})
        assert shot.status == 200 and shot.ctype == "image/png", shot
        grown = rss() - before
        assert grown < 6 << 10, "a stalled download grew the daemon by %d MiB" % (grown >> 10)
        # Deleting the recording meanwhile is not held up by it, and the download, of a file
        # that was opened whole, still gets every byte.
        assert big.c.delete(big.base + "/recordings/%s" % big.stop["id"]).status == 204
        body = first + _read_rest(s)
    finally:
        s.close()
    assert len(body) == big.stop["bytes"]
    assert hashlib.sha256(body).hexdigest() == big.sha
    assert_problem(big.get("/recordings/%s/download" % big.stop["id"]), 404, "not_found")


def test_a_screenshot_is_never_bigger_than_8k(d, admin, cells):
    """The daemon holds a screenshot while it answers it: at most 8K's pixels (at 4 bytes
    each, plus headers) get asked of convert, whatever the scale; more is refused before it runs."""
    cid = new_cell(admin)
    cells.append(cid)
    dk = Desktop(admin, cid)
    r = dk.post("/start", {"width": 3840, "height": 2160, "displayNum": 152})
    assert r.status == 200 and r.body["state"] == "active", r
    for query in ({"scale": "2.01"}, {"scale": "4"}):
        assert_problem(dk.get("/screenshot", query=query), 400, "desktop_invalid_action", "more pixels than 7680x4320")
    region = {"x": 0, "y": 0, "width": 1921, "height": 1080, "scale": "4"}
    assert_problem(dk.get("/screenshot/region", query=region), 400, "desktop_invalid_action", "7684x4320")
    assert not [a for _, a in in_cell(dk, d.state) if os.path.basename(a[0]) == "convert"]
    # Below the bound, screenshots are what they were (an 8K one needs more than this cell's 512M
    # in ImageMagick: the cell's memory limit kills it, not the daemon's cap).
    region.update(width=1920, scale="2")
    for path, query in (("/screenshot/region", region), ("/screenshot", {"format": "jpeg", "quality": "100"})):
        r = dk.get(path, query=query)
        assert r.status == 200 and r.ctype in ("image/png", "image/jpeg"), r


def test_deleting_while_downloading(d, admin, cells):
    cid = new_cell(admin)
    cells.append(cid)
    dk = started(admin, cid)
    r = dk.post("/recording/start", {"fps": 10})
    rid = r.body["id"]
    # Downloading while recording: refused, the file is not whole yet.
    assert_problem(dk.get("/recordings/%s/download" % rid), 409, "conflict", "still active")
    assert wait_for(lambda: int(sh(dk, "stat -c %%s /tmp/.cell-desktop/recordings/%s.mp4 2>/dev/null || echo 0"
                                   % rid)[1].split()[0]) > 0, timeout=20)
    stop = dk.post("/recording/stop").body
    results = {}

    def download(i):
        results[i] = dk.get("/recordings/%s/download" % rid)

    threads = [threading.Thread(target=download, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deleted = dk.c.delete(dk.base + "/recordings/%s" % rid)
    for t in threads:
        t.join()
    assert deleted.status == 204, deleted
    for r in results.values():
        # Whole or not found: never a part of the file.
        assert (r.status == 200 and len(r.raw) == stop["bytes"]) or r.status == 404, r
    assert_problem(dk.get("/recordings/%s" % rid), 404, "not_found")


# ---- the Inspector UI -------------------------------------------------------------------

def _raw(d, method, path, headers=None):
    s = socket.create_connection(("127.0.0.1", d.port))
    req = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % (method, path)
    req += "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    s.sendall((req + "\r\n").encode())
    data = recv_to_close(s)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs.setdefault(k.lower(), []).append(v.strip())
    return int(lines[0].split()[1]), hdrs, body


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/app.js", "/ui/app.css", "/ui/nope", "/ui/%2e%2e/admin.token",
                                  "/ui/..%2f..%2fadmin.token", "/ui/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                                  "/ui/" + "a" * 5000, "/ui/app.js%00.html"])
def test_every_ui_answer_forbids_framing_sniffing_and_inline_script(d, path):
    """Answers under /ui/, found or not: a strict CSP (no inline script, no
    framing), nosniff, no Referer, exactly once each."""
    status, h, body = _raw(d, "GET", path)
    assert status in (200, 308, 400, 404, 414), (path, status)
    assert h.get("x-content-type-options") == ["nosniff"], (path, h)
    csp = h.get("content-security-policy")
    assert csp and len(csp) == 1, (path, h)
    for want in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert want in csp[0], (path, csp)
    assert "unsafe-inline" not in csp[0] and "unsafe-eval" not in csp[0]
    assert h.get("x-frame-options") == ["DENY"] and h.get("referrer-policy") == ["no-referrer"], (path, h)
    if status != 200:
        # What is not found may be echoed (JSON-escaped), but only as JSON, never as a page.
        assert d.admin_token.encode() not in body
        assert not body or h["content-type"][0].startswith(("application/problem+json", "application/json")), h


def test_the_api_answers_are_never_sniffed(d, admin):
    """A JSON answer may echo what the caller sent (a path, a name): with nosniff
    a browser never runs it as a page or a script."""
    for method, path in (("GET", "/v1/cells"), ("GET", "/v1/nope%3Cscript%3E"), ("GET", "/v1/health")):
        status, h, _ = _raw(d, method, path, {"Authorization": "Bearer " + d.admin_token})
        assert h.get("x-content-type-options") == ["nosniff"], (path, status, h)


def test_the_ui_never_puts_the_token_in_a_url_or_storage(d):
    status, _, js = _raw(d, "GET", "/ui/app.js")
    assert status == 200
    text = js.decode("utf-8", "replace")
    # The page keeps the token in memory (sessionStorage at most), never localStorage,
    # and never builds ?access_token=.
    assert "localStorage" not in text
    assert "access_token" not in text
