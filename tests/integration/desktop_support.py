"""What the desktop tests share (test_desktop.py, test_desktop_live.py): a
client of one cell's desktop routes, a cell with a started desktop, image
decoding with the host's ImageMagick, and the cell's processes seen from
the host."""
import os
import subprocess

import daemon as dm


def new_cell(admin, **extra):
    return dm.create_cell(admin, "512M", **extra)


class Desktop:
    def __init__(self, client, cid):
        self.c, self.cid = client, cid
        self.base = "/cells/%s/v1/desktop" % cid

    def get(self, path, **kw):
        return self.c.get(self.base + path, **kw)

    def post(self, path, body=None, **kw):
        return self.c.post(self.base + path, body, **kw)

    def run(self, command, *args):
        r = self.c.post("/cells/%s/v1/processes/run" % self.cid, {"command": command, "args": list(args)})
        assert r.status == 200, r
        return r.body


def started(admin, cid):
    dk = Desktop(admin, cid)
    r = dk.post("/start", {"width": 640, "height": 480, "dpi": 96, "displayNum": 150})
    assert r.status == 200 and r.body["state"] == "active", r
    return dk


def decode(image):
    """(width, height, rgb bytes) of any image ImageMagick reads."""
    size = subprocess.run(["identify", "-format", "%w %h", "-"], input=image, capture_output=True, check=True).stdout
    w, h = map(int, size.split())
    rgb = subprocess.run(["convert", "-", "-depth", "8", "rgb:-"], input=image, capture_output=True, check=True).stdout
    assert len(rgb) == w * h * 3
    return w, h, rgb


def pixel(img, x, y):
    w, _, rgb = img
    return tuple(rgb[(y * w + x) * 3:(y * w + x) * 3 + 3])


def in_cell(dk, state):
    """[(host pid, argv)] of the processes of dk's cell (of the daemon's cells, those
    in the cell's network namespace, which the cell reports itself)."""
    if not getattr(dk, "netns", None):
        dk.netns = dk.run("readlink", "/proc/self/ns/net")["stdout"].strip()
    out = []
    for pid in dm.cell_pids_of_state(state):
        try:
            if os.readlink("/proc/%d/ns/net" % pid) != dk.netns:
                continue
        except OSError:
            continue
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            out.append((pid, argv))
    return out


def named(procs, name):
    return [(pid, argv) for pid, argv in procs if os.path.basename(argv[0]) == name]


def xterm(dk, *extra):
    """Launch an xterm at +100+80 (red, 30x6 cells) and wait for its window."""
    r = dk.post("/launch", {"app": "xterm", "args": ["-geometry", "30x6+100+80", "-bg", "red", "-fg", "white",
                                                     *extra], "wait": True})
    assert r.status == 200 and r.body["processId"] and r.body.get("windowId"), r
    return r.body


def _netns(pid):
    return os.readlink("/proc/%s/ns/net" % pid)


REC_DIR = "/tmp/.cell-desktop/recordings"


def big_recording(dk, at_least, width=1280, height=960):
    """Start dk's desktop at width x height with an xterm scrolling random
    text and record it at 30 fps (about 4 MiB a second at 1280x960) until
    the file has at least `at_least` bytes: the stop's answer.  Bytes, not
    time: a recording stopped before its first frame is a failed one."""
    r = dk.post("/start", {"width": width, "height": height, "displayNum": 152})
    assert r.status == 200 and r.body["state"] == "active", r
    r = dk.post("/launch", {"app": "xterm", "args": ["-geometry", "220x75+0+0", "-e", "sh", "-c",
                                                     "od -x /dev/urandom"], "wait": True})
    assert r.status == 200, r
    rid = dk.post("/recording/start", {"fps": 30}).body["id"]

    def size():
        out = dk.run("sh", "-c", "stat -c %%s %s/%s.mp4 2>/dev/null || echo 0" % (REC_DIR, rid))["stdout"]
        return int(out.split()[0])

    assert dm.wait_for(lambda: size() >= at_least, timeout=60)
    stop = dk.post("/recording/stop").body
    assert stop["status"] == "completed", stop
    dk.run("sh", "-c", "pkill -x od; true")         # the screen still: no CPU spent scrolling
    return stop
