"""bench/desktop_live.py CELL_URL TOKEN M: the desktop live view's frame rate
and input-to-frame latency (bench/desktop_live.sh runs it).

One fresh cell (1G) with a 1280x720 desktop and an xterm at a known place,
focused.  Over GET /desktop/live (tests/integration/wsclient.py):
- frames per second delivered for fps=10 and fps=30 (quality 70, scale 1):
  5*M frames counted, from the first frame's arrival to the last's;
- the frames' median size;
- an input's answer: {type:move, id} to {type:done, id} (the input applied
  by xdotool in the cell);
- input to frame: a key typed into the xterm (or a pointer move, which
  x11grab draws) until the first frame whose bytes differ from the still
  screen's (a still screen gives byte-identical JPEGs), M each, at fps=30:
  this holds the wait for the next grab (up to 1/30 s), the encode, the
  daemon's relay and the socket.
Prints a markdown table (medians and p90)."""
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import wsclient  # noqa: E402

url, token, m = sys.argv[1], sys.argv[2], int(sys.argv[3])
port = int(url.rsplit(":", 1)[1])


def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def q(v, p):
    v = sorted(v)
    k = (len(v) - 1) * p
    i = int(k)
    return v[i] if i + 1 >= len(v) else v[i] + (v[i + 1] - v[i]) * (k - i)


def frame(ws):
    while True:
        op, data = ws.recv()
        if op == 0x2:
            return data


def still(ws):
    """A frame equal to the one before it: the screen is still."""
    prev = frame(ws)
    while True:
        cur = frame(ws)
        if cur == prev:
            return cur
        prev = cur


def live(query):
    status, headers, ws = wsclient.connect(port, "/cells/%s/v1/desktop/live%s" % (cid, query), token=token)
    if status != 101:
        raise RuntimeError("live view: %d %s" % (status, headers.get("body")))
    ws.recv_json()
    return ws


cid = call("POST", "/v1/cells", {"resources": {"memory": "1G"}})["id"]
rows = []
try:
    base = "/cells/%s/v1/desktop" % cid
    call("POST", base + "/start", {"width": 1280, "height": 720})
    call("POST", base + "/launch", {"app": "xterm", "args": ["-geometry", "60x10+100+100"], "wait": True})
    call("POST", base + "/mouse/click", {"x": 200, "y": 150})

    for fps in (10, 30):
        ws = live("?fps=%d" % fps)
        frame(ws)
        t0, sizes = time.perf_counter(), []
        for _ in range(5 * m):
            sizes.append(len(frame(ws)))
        took = time.perf_counter() - t0
        rows.append(("frames per second delivered (fps=%d asked, %d frames)" % (fps, 5 * m),
                     "%.1f" % (5 * m / took), ""))
        if fps == 30:
            rows.append(("frame size, KiB (1280x720, quality 70)", "%.0f" % (statistics.median(sizes) / 1024), ""))
        ws.sock.close()

    ws = live("?fps=30")
    acks, keys, moves = [], [], []
    for i in range(m):
        t = time.perf_counter()
        ws.send_json({"type": "move", "x": 600 + (i % 2) * 40, "y": 500, "id": i})
        while ws.recv_json().get("id") != i:
            pass
        acks.append((time.perf_counter() - t) * 1000)
    for i in range(m):
        base_frame = still(ws)
        t = time.perf_counter()
        ws.send_json({"type": "type", "text": "M"})
        while frame(ws) == base_frame:
            pass
        keys.append((time.perf_counter() - t) * 1000)
        base_frame = still(ws)
        t = time.perf_counter()
        ws.send_json({"type": "move", "x": 700 + (i % 2) * 50, "y": 550})
        while frame(ws) == base_frame:
            pass
        moves.append((time.perf_counter() - t) * 1000)
    ws.sock.close()
    for name, v in (("input answered (move with id -> done), ms", acks),
                    ("key typed -> first frame showing it, ms", keys),
                    ("pointer moved -> first frame showing it, ms", moves)):
        rows.append((name, "%.1f" % statistics.median(v), "%.1f" % q(v, 0.9)))
finally:
    call("DELETE", "/v1/cells/%s" % cid)

print("| measurement | median | p90 |")
print("|---|---|---|")
for name, med, p90 in rows:
    print("| %s | %s | %s |" % (name, med, p90))
