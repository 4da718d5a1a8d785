"""bench/desktop.py CELL_URL TOKEN REF_URL N M: the desktop's latencies
(bench/desktop.sh runs it; REF_URL "" skips the reference server).

For each server ("cell": a fresh cell per round; "reference": sandbox-agent
0.4.2 on the host, its one desktop), N rounds of: POST start (1440x900,
the reference's default) then GET screenshot, timed together ("start to
first screenshot"), then stop.  On one started desktop, M each of: a png
screenshot, a jpeg screenshot (quality 80), a mouse/move round trip, and
input to pixels (a key typed into an xterm until a screenshot of the
region shows it: the screenshot's own latency is inside it).  Prints a
markdown table of medians and p90, in milliseconds."""
import http.client
import json
import sys
import time
import urllib.parse

cell_url, token, ref_url, n, m = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


class Server:
    def __init__(self, url, token, prefix):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.token, self.prefix = u.hostname, u.port, token, prefix

    def call(self, method, path, body=None, query=None, base=None):
        path = (self.prefix if base is None else base) + path
        if query:
            path += "?" + urllib.parse.urlencode(query)
        h = {"Authorization": "Bearer " + self.token} if self.token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            raw = r.read()
        finally:
            c.close()
        if r.status >= 300:
            raise RuntimeError("%s %s -> %d %s" % (method, path, r.status, raw[:300]))
        return json.loads(raw) if r.getheader("content-type", "").startswith("application/json") else raw


def ms(f):
    t = time.perf_counter()
    v = f()
    return (time.perf_counter() - t) * 1000.0, v


def q(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p
    i = int(k)
    return v[i] if i + 1 >= len(v) else v[i] + (v[i + 1] - v[i]) * (k - i)


def wait_until(pred, limit_s=20):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
    raise RuntimeError("timed out")


def measure(s, fresh_prefix):
    out = {k: [] for k in ("start", "restart", "png", "jpeg", "move", "pixels", "png_bytes")}
    for _ in range(n):
        if fresh_prefix:
            s.prefix = fresh_prefix()
        t, _ = ms(lambda: (s.call("POST", "/desktop/start", {"width": 1440, "height": 900}),
                           s.call("GET", "/desktop/screenshot")))
        out["start"].append(t)
        s.call("POST", "/desktop/stop")
        # Again on the same host or cell (caches warm: a cell's fontconfig cache).
        t, _ = ms(lambda: (s.call("POST", "/desktop/start", {"width": 1440, "height": 900}),
                           s.call("GET", "/desktop/screenshot")))
        out["restart"].append(t)
        s.call("POST", "/desktop/stop")
    if fresh_prefix:
        s.prefix = fresh_prefix()
    s.call("POST", "/desktop/start", {"width": 1440, "height": 900})
    for _ in range(m):
        t, png = ms(lambda: s.call("GET", "/desktop/screenshot", query={"format": "png"}))
        out["png"].append(t)
        out["png_bytes"].append(len(png))
        out["jpeg"].append(ms(lambda: s.call("GET", "/desktop/screenshot", query={"format": "jpeg", "quality": 80}))[0])
        out["move"].append(ms(lambda: s.call("POST", "/desktop/mouse/move", {"x": 100 + len(out["move"]), "y": 100}))[0])
    # Input to pixels: an xterm at a known place, focused; each round types a
    # key and takes region screenshots until the region differs.
    s.call("POST", "/desktop/launch", {"app": "xterm", "args": ["-geometry", "40x5+50+50"], "wait": True})
    wins = s.call("GET", "/desktop/windows")["windows"]
    w = [x for x in wins if "xterm" in x["title"].lower()] or wins
    x0, y0 = w[0]["x"], w[0]["y"]
    s.call("POST", "/desktop/mouse/click", {"x": x0 + 20, "y": y0 + 20})
    region = {"x": x0, "y": y0, "width": 200, "height": 40}
    for i in range(m):
        before = s.call("GET", "/desktop/screenshot/region", query=region)
        t0 = time.perf_counter()
        s.call("POST", "/desktop/keyboard/type", {"text": "abcdefghij"[i % 10], "delayMs": 0})
        wait_until(lambda: s.call("GET", "/desktop/screenshot/region", query=region) != before)
        out["pixels"].append((time.perf_counter() - t0) * 1000.0)
    s.call("POST", "/desktop/stop")
    return out


cell = Server(cell_url, token, "")
cells = []


def fresh_cell():
    for cid in cells:
        cell.call("DELETE", "/v1/cells/%s" % cid, base="")
    cells.clear()
    cid = cell.call("POST", "/v1/cells", {"resources": {"memory": "1G"}}, base="")["id"]
    cells.append(cid)
    return "/cells/%s/v1" % cid


results = {"cell": measure(cell, fresh_cell)}
fresh_cell()
cells_left = list(cells)
for cid in cells_left:
    cell.call("DELETE", "/v1/cells/%s" % cid, base="")
if ref_url:
    results["reference"] = measure(Server(ref_url, "", "/v1"), None)

rows = [("start -> first screenshot (1440x900 png)", "start"),
        ("the same, second start (same cell / host)", "restart"), ("screenshot, png", "png"),
        ("screenshot, jpeg q80", "jpeg"), ("mouse/move round trip", "move"),
        ("input to pixels (key typed into xterm -> region screenshot differs)", "pixels")]
names = list(results)
print("| ms, median (p90) | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for label, key in rows:
    print("| %s | %s |" % (label, " | ".join("%.1f (%.1f)" % (q(results[k][key], .5), q(results[k][key], .9))
                                            for k in names)))
print()
print("- rounds: %d (pairs of) starts, %d of each other measurement per server; png size median %.1f KB (cell)"
      % (n, m, q(results["cell"]["png_bytes"], .5) / 1000))
