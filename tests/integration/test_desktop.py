"""The per-cell desktop (/cells/{id}/v1/desktop/..., sandbox-agent 0.4.2's
routes and shapes; src/server/desktop.c): Xvfb, openbox and the X tools run
inside the cell on the host image (scripts/install-deps.sh installs xvfb,
openbox, xdotool, imagemagick, x11-utils, xclip, ffmpeg and xterm on the
host, whose /usr the host image shows).

What a test opens it checks in the screenshot's pixels (decoded with the
host's ImageMagick), what it types it reads back from the file the app
wrote, and the isolation claims it tries to break from the host: no X
socket of the desktop is reachable outside the cell, its processes are the
cell's (its uid range, its cgroup, its network namespace) and die with the
desktop's stop and with the cell.

One daemon per module; each test that changes a desktop's state uses a cell
of its own."""
import base64
import os
import socket
import subprocess
import threading

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token, wait_for
from desktop_support import Desktop, _netns, decode, in_cell, named, new_cell, pixel, started, xterm

pytestmark = pytest.mark.skipif(
    not all(os.path.exists("/usr/bin/" + b) for b in ("Xvfb", "openbox", "xdotool", "convert", "xprop", "xterm")),
    reason="the desktop tools are not installed on the host (scripts/install-deps.sh)")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("desktop"))


@pytest.fixture
def desk(admin, cells):
    """An active 640x480 desktop on display :150 in a cell of its own."""
    cid = new_cell(admin)
    cells.append(cid)
    return started(admin, cid)


@pytest.fixture(scope="module")
def shared(admin):
    """One active desktop for the tests that open no window and stop nothing."""
    cid = new_cell(admin)
    yield started(admin, cid)
    admin.delete("/v1/cells/%s" % cid)


@pytest.fixture(scope="module")
def idle(admin):
    """A cell whose desktop is never started."""
    cid = new_cell(admin)
    yield Desktop(admin, cid)
    admin.delete("/v1/cells/%s" % cid)


# ---- status, start, stop ---------------------------------------------------------------


def test_status_before_start_and_409_for_every_action(admin, idle):
    dk = idle
    r = dk.get("/status")
    assert r.status == 200 and r.body["state"] == "inactive" and r.body["missingDependencies"] == [], r
    assert "display" not in r.body and r.body["processes"] == []
    for method, path, body in (("GET", "/screenshot", None), ("GET", "/mouse/position", None),
                               ("POST", "/mouse/click", {"x": 1, "y": 1}), ("POST", "/keyboard/type", {"text": "a"}),
                               ("GET", "/windows", None), ("GET", "/display/info", None),
                               ("POST", "/launch", {"app": "xterm"}), ("GET", "/clipboard", None),
                               ("POST", "/open", {"target": "http://cell-open.invalid/"})):
        b = assert_problem(admin.call(method, dk.base + path, json_body=body), 409, "desktop_runtime_inactive")
        assert b["code"] == "desktop_runtime_inactive" and b["title"] == "Desktop Runtime Inactive", b
    # Stopping what never started is fine, and says inactive.
    r = dk.post("/stop")
    assert r.status == 200 and r.body["state"] == "inactive", r


def test_start_status_display_info_and_idempotent_start(shared):
    desk = shared
    r = desk.get("/status")
    b = r.body
    assert r.status == 200 and b["state"] == "active" and b["display"] == ":150", r
    assert b["resolution"] == {"width": 640, "height": 480, "dpi": 96} and b["startedAt"].endswith("Z"), b
    assert sorted(p["name"] for p in b["processes"]) == ["Xvfb", "openbox"] and all(p["running"] for p in b["processes"])
    assert isinstance(b["windows"], list)
    r = desk.get("/display/info")
    assert r.status == 200 and r.body == {"display": ":150", "resolution": {"width": 640, "height": 480, "dpi": 96}}, r
    # A second start answers the running desktop (other sizes are not applied to it).
    r = desk.post("/start", {"width": 800, "height": 600})
    assert r.status == 200 and r.body["resolution"]["width"] == 640 and r.body["startedAt"] == b["startedAt"], r


def test_concurrent_starts_make_one_desktop(d, admin, cells):
    cid = new_cell(admin)
    cells.append(cid)
    dk = Desktop(admin, cid)
    results = [None] * 4

    def start(i):
        results[i] = dk.post("/start", {"width": 320, "height": 240})

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status == 200 and r.body["state"] == "active" for r in results), results
    assert len({r.body["startedAt"] for r in results}) == 1, results
    procs = in_cell(dk, d.state)
    xvfb = [p for p in named(procs, "Xvfb") if ":99" in p[1]]
    assert len(xvfb) == 1, procs
    # The cell's processes share its network namespace: one window manager there.
    assert len([p for p in named(procs, "openbox") if _netns(p[0]) == _netns(xvfb[0][0])]) == 1, procs
    dk.post("/stop")


def test_stop_kills_every_desktop_process(d, desk):
    xterm(desk)
    assert desk.post("/clipboard", {"text": "held by xclip"}).status == 200
    r = desk.post("/recording/start", {"fps": 5})
    assert r.status == 200, r
    names = {os.path.basename(a[0]) for _, a in in_cell(desk, d.state)}
    assert {"Xvfb", "openbox", "xterm", "ffmpeg", "xclip"} <= names, names
    r = desk.post("/stop")
    assert r.status == 200 and r.body["state"] == "inactive" and r.body["processes"] == [], r
    gone = {"Xvfb", "openbox", "xterm", "ffmpeg", "xclip"}
    assert wait_for(lambda: not gone & {os.path.basename(a[0]) for _, a in in_cell(desk, d.state)}), \
        in_cell(desk, d.state)
    assert_problem(desk.get("/screenshot"), 409, "desktop_runtime_inactive")
    # The recording cut short by the stop is listed as failed, not lost.
    recs = desk.get("/recordings").body["recordings"]
    assert [x["status"] for x in recs] == ["failed"], recs
    # And it starts again.
    r = desk.post("/start", {"width": 320, "height": 200, "displayNum": 151})
    assert r.status == 200 and r.body["display"] == ":151", r


def test_the_desktop_dies_with_its_cell(d, admin, desk):
    assert named(in_cell(desk, d.state), "Xvfb")
    r = admin.post("/v1/cells/%s/stop" % desk.cid)
    assert r.status == 200, r
    assert wait_for(lambda: not [p for p in in_cell(desk, d.state) if os.path.basename(p[1][0]) in ("Xvfb", "openbox")])
    r = admin.post("/v1/cells/%s/start" % desk.cid)
    assert r.status == 200, r
    r = desk.get("/status")
    assert r.status == 200 and r.body["state"] == "inactive", r


def test_the_desktop_counts_against_the_cells_memory(admin, cells):
    """An 8K framebuffer (7680x4320x4 bytes) does not fit a 64M cell: the X
    server is killed in the cell, the start fails naming it, and a smaller
    desktop starts after."""
    cid = new_cell(admin, resources={"memory": "64M"})
    cells.append(cid)
    dk = Desktop(admin, cid)
    b = assert_problem(dk.post("/start", {"width": 7680, "height": 4320}), 503, "desktop_runtime_failed",
                       ["Xvfb did not start", "signal 9"])
    assert b["code"] == "desktop_runtime_failed", b
    st = dk.get("/status").body
    assert st["state"] == "failed" and "Xvfb" in st["lastError"]["message"] and st["processes"] == [], st
    assert_problem(dk.get("/screenshot"), 503, "desktop_runtime_failed")
    r = dk.post("/start", {"width": 320, "height": 240})
    assert r.status == 200 and r.body["state"] == "active" and "lastError" not in r.body, r


# ---- screenshots -----------------------------------------------------------------------


def test_screenshot_shows_the_window_where_it_is(desk):
    r = desk.get("/screenshot")
    assert r.status == 200 and r.ctype == "image/png" and r.raw[:8] == b"\x89PNG\r\n\x1a\n", r
    img = decode(r.raw)
    assert img[:2] == (640, 480) and pixel(img, 320, 240) == (0, 0, 0)
    xterm(desk)
    wins = desk.get("/windows").body["windows"]
    assert len(wins) == 1 and wins[0]["title"] == "xterm" and wins[0]["isActive"], wins
    w = wins[0]
    # openbox keeps the requested frame position; the client sits inside its decorations.
    assert 100 <= w["x"] <= 110 and 80 <= w["y"] <= 120 and w["width"] > 100 and w["height"] > 40, w
    cx, cy = w["x"] + w["width"] // 2, w["y"] + w["height"] - 5
    # Mapped is not yet painted: look until xterm has drawn its background.
    img = wait_for(lambda: (lambda i: i if pixel(i, cx, cy) == (255, 0, 0) else None)(decode(desk.get("/screenshot").raw)))
    assert img, (cx, cy)
    assert pixel(img, 600, 450) == (0, 0, 0)
    # The region is the same pixels, cropped.
    r = desk.get("/screenshot/region", query={"x": w["x"], "y": w["y"], "width": 40, "height": 30})
    assert r.status == 200 and r.ctype == "image/png", r
    reg = decode(r.raw)
    assert reg[:2] == (40, 30) and pixel(reg, 20, 25) == (255, 0, 0)


def test_screenshot_formats_scale_quality_cursor(shared):
    desk = shared
    r = desk.get("/screenshot", query={"format": "jpeg", "quality": 40})
    assert r.status == 200 and r.ctype == "image/jpeg" and r.raw[:2] == b"\xff\xd8", r
    assert decode(r.raw)[:2] == (640, 480)
    r = desk.get("/screenshot", query={"format": "webp", "scale": "0.5"})
    assert r.status == 200 and r.ctype == "image/webp" and r.raw[:4] == b"RIFF" and r.raw[8:12] == b"WEBP", r
    assert decode(r.raw)[:2] == (320, 240)
    desk.post("/mouse/move", {"x": 300, "y": 300})
    plain = decode(desk.get("/screenshot/region", query={"x": 290, "y": 290, "width": 40, "height": 40}).raw)
    shown = decode(desk.get("/screenshot/region", query={"x": 290, "y": 290, "width": 40, "height": 40,
                                                         "showCursor": "true"}).raw)
    # The arrow's tip is at the pointer (10, 10 in the region); (13, 19) is inside it.
    assert pixel(plain, 13, 19) == (0, 0, 0) and pixel(shown, 13, 19) == (255, 255, 255)


@pytest.mark.parametrize("query,says", [
    ({"format": "gif"}, "format"), ({"quality": "0"}, "quality"), ({"quality": "abc"}, "quality"),
    ({"scale": "0"}, "scale"), ({"scale": "nan"}, "scale"), ({"showCursor": "maybe"}, "showCursor"),
])
def test_screenshot_bad_queries(shared, query, says):
    desk = shared
    assert_problem(desk.get("/screenshot", query=query), 400, "desktop_invalid_action", says)


@pytest.mark.parametrize("query", [
    {"x": 0, "y": 0, "width": 641, "height": 10}, {"x": 630, "y": 0, "width": 20, "height": 10},
    {"x": -1, "y": 0, "width": 10, "height": 10}, {"x": 0, "y": 0, "width": 0, "height": 10},
    {"x": 0, "y": 0, "width": 10},
])
def test_region_outside_the_screen_or_incomplete(shared, query):
    desk = shared
    assert_problem(desk.get("/screenshot/region", query=query), 400, "desktop_invalid_action")


# ---- input -----------------------------------------------------------------------------


def test_click_and_type_into_an_app_and_read_it_back(desk):
    win = xterm(desk)
    w = [x for x in desk.get("/windows").body["windows"] if x["id"] == win["windowId"]][0]
    r = desk.post("/mouse/click", {"x": w["x"] + 20, "y": w["y"] + 20})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (w["x"] + 20, w["y"] + 20), r
    r = desk.post("/keyboard/type", {"text": "echo $((6*7)) typed > /tmp/typed", "delayMs": 1})
    assert r.status == 200 and r.body == {"ok": True}, r
    assert desk.post("/keyboard/press", {"key": "Return"}).body == {"ok": True}
    assert wait_for(lambda: desk.run("cat", "/tmp/typed")["stdout"] == "42 typed\n"), desk.run("cat", "/tmp/typed")
    # Modifiers: ctrl+u erases the line typed so far in the shell.
    desk.post("/keyboard/type", {"text": "echo wrong > /tmp/typed2"})
    assert desk.post("/keyboard/press", {"key": "u", "modifiers": {"ctrl": True}}).status == 200
    desk.post("/keyboard/type", {"text": "echo right > /tmp/typed2\n"})
    assert wait_for(lambda: desk.run("cat", "/tmp/typed2")["stdout"] == "right\n"), desk.run("cat", "/tmp/typed2")
    assert desk.post("/keyboard/down", {"key": "shift"}).body == {"ok": True}
    assert desk.post("/keyboard/up", {"key": "shift"}).body == {"ok": True}


def test_mouse_move_position_drag_scroll_down_up(shared):
    desk = shared
    r = desk.post("/mouse/move", {"x": 10, "y": 20})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (10, 20), r
    r = desk.get("/mouse/position")
    assert r.status == 200 and (r.body["x"], r.body["y"], r.body["screen"]) == (10, 20, 0), r
    r = desk.post("/mouse/drag", {"startX": 5, "startY": 5, "endX": 200, "endY": 100, "button": "left"})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (200, 100), r
    r = desk.post("/mouse/scroll", {"x": 50, "y": 60, "deltaY": 3, "deltaX": -2})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (50, 60), r
    assert desk.post("/mouse/down", {"button": "right"}).status == 200
    r = desk.post("/mouse/up", {"x": 70, "y": 80, "button": "right"})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (70, 80), r
    r = desk.post("/mouse/click", {"x": 1, "y": 2, "button": "middle", "clickCount": 2})
    assert r.status == 200, r


def test_button_up_where_the_pointer_is_over_a_window(desk):
    """A button pressed over a window gives that window the pointer's grab;
    an up at the same point then must not wait for a motion that never
    comes (xdotool's `mousemove --sync` to where the pointer is hung until
    its time limit: found by the Inspector's desktop tab)."""
    xterm(desk)
    r = desk.post("/mouse/down", {"x": 150, "y": 100, "button": "left"})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (150, 100), r
    r = desk.post("/mouse/up", {"x": 150, "y": 100, "button": "left"})
    assert r.status == 200 and (r.body["x"], r.body["y"]) == (150, 100), r


@pytest.mark.parametrize("path,body,says", [
    ("/mouse/move", {"x": -1, "y": 5}, "outside"),
    ("/mouse/move", {"x": 640, "y": 5}, "outside"),
    ("/mouse/move", {"x": 5}, "y"),
    ("/mouse/move", {"x": "5", "y": 5}, "x"),
    ("/mouse/move", {"x": 1.5, "y": 5}, "x"),
    ("/mouse/click", {"x": 5, "y": 5, "button": "fourth"}, "button"),
    ("/mouse/click", {"x": 5, "y": 5, "clickCount": 0}, "clickCount"),
    ("/mouse/down", {"x": 5}, "x and y"),
    ("/mouse/drag", {"startX": 0, "startY": 0, "endX": 99999, "endY": 0}, "outside"),
    ("/mouse/scroll", {"x": 5, "y": 5}, "non-zero"),
    ("/keyboard/type", {"text": ""}, "empty"),
    ("/keyboard/type", {"text": 5}, "text"),
    ("/keyboard/type", {"text": "x" * 2000, "delayMs": 100}, "delayMs"),
    ("/keyboard/press", {"key": "a b"}, "key"),
    ("/keyboard/press", {"key": "a", "modifiers": {"ctrl": "yes"}}, "ctrl"),
    ("/keyboard/down", {}, "key"),
    ("/launch", {"app": ""}, "app"),
    ("/launch", {"app": "xterm", "args": [1]}, "args"),
    ("/clipboard", {"text": "x", "selection": "other"}, "selection"),
    ("/windows/notanid/move", {"x": 1, "y": 1}, "window id"),
    ("/open", {}, "target"),
    ("/open", {"target": 5}, "target"),
    ("/open", {"target": ["http://a.invalid/"]}, "target"),
    ("/open", {"target": ""}, "empty"),
    ("/open", {"target": "--help"}, "option"),
    ("/open", {"target": "-"}, "option"),
    ("/open", {"target": "http://a.invalid/\nb"}, "control"),
    ("/open", {"target": "/tmp/x\x7f"}, "control"),
    ("/open", {"target": "http://a.invalid/" + "x" * 8192}, "longer"),
])
def test_bad_input(shared, path, body, says):
    desk = shared
    assert_problem(desk.post(path, body), 400, "desktop_invalid_action", says)


def test_malformed_and_huge_bodies(shared):
    desk = shared
    r = desk.c.call("POST", desk.base + "/mouse/move", body=b"{not json", headers={"Content-Type": "application/json"})
    assert_problem(r, 400)
    r = desk.c.call("POST", desk.base + "/mouse/move", body=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert r.status in (400, 422), r
    r = desk.post("/keyboard/type", {"text": "x" * ((64 << 10) + 1)})
    assert r.status in (400, 413), r


@pytest.mark.parametrize("body,says", [
    ({"width": 100000, "height": 100}, "width"), ({"width": 0}, "width"), ({"height": -5}, "height"),
    ({"dpi": 0}, "dpi"), ({"displayNum": 0}, "displayNum"), ({"displayNum": "99"}, "displayNum"),
    ({"width": 7681, "height": 4320}, "width"),
])
def test_start_refuses_bad_sizes(idle, body, says):
    assert_problem(idle.post("/start", body), 400, "desktop_invalid_action", says)
    assert idle.get("/status").body["state"] == "inactive"


# ---- windows, clipboard, launch --------------------------------------------------------


def test_windows_focus_move_resize(desk):
    a = xterm(desk)["windowId"]
    b = desk.post("/launch", {"app": "xterm", "args": ["-geometry", "20x4+300+300"], "wait": True}).body["windowId"]
    r = desk.get("/windows/focused")
    assert r.status == 200 and r.body["id"] == b, r
    r = desk.post("/windows/%s/focus" % a)
    assert r.status == 200 and r.body["id"] == a and r.body["isActive"], r
    assert desk.get("/windows/focused").body["id"] == a
    # The answer is the window right after the action; openbox and xterm (whole
    # character cells) may still adjust it: the list is checked until it shows it.
    def window():
        return [w for w in desk.get("/windows").body["windows"] if w["id"] == a][0]
    r = desk.post("/windows/%s/move" % a, {"x": 200, "y": 150})
    assert r.status == 200 and r.body["id"] == a, r
    assert wait_for(lambda: abs(window()["x"] - 200) <= 10 and abs(window()["y"] - 150) <= 40), window()
    r = desk.post("/windows/%s/resize" % hex(int(a)), {"width": 300, "height": 200})
    assert r.status == 200 and r.body["id"] == a, r
    assert wait_for(lambda: abs(window()["width"] - 300) <= 20 and abs(window()["height"] - 200) <= 30), window()
    assert_problem(desk.post("/windows/12345/focus"), 404, "not_found")
    status = desk.get("/status").body
    assert {w["id"] for w in status["windows"]} == {a, b}, status


def test_clipboard_round_trip(shared):
    desk = shared
    r = desk.get("/clipboard")
    assert r.status == 200 and r.body == {"selection": "clipboard", "text": ""}, r
    text = "héllo\nworld\t\u2603"
    assert desk.post("/clipboard", {"text": text}).body == {"ok": True}
    assert desk.get("/clipboard").body == {"selection": "clipboard", "text": text}
    assert desk.post("/clipboard", {"text": "p", "selection": "primary"}).status == 200
    assert desk.get("/clipboard", query={"selection": "primary"}).body["text"] == "p"
    assert desk.get("/clipboard").body["text"] == text


def test_launch_unknown_app_and_without_wait(desk):
    assert_problem(desk.post("/launch", {"app": "no-such-app-here"}), 404, "not_found", "no-such-app-here")
    # The name is an argument, never shell text.
    assert_problem(desk.post("/launch", {"app": "xterm; touch /tmp/pwned"}), 404, "not_found")
    assert desk.run("ls", "/tmp/pwned")["exitCode"] != 0
    r = desk.post("/launch", {"app": "xterm", "args": ["-e", "sh", "-c", "echo $DISPLAY > /tmp/display"]})
    assert r.status == 200 and "windowId" not in r.body and r.body["pid"] > 1, r
    assert wait_for(lambda: desk.run("cat", "/tmp/display")["stdout"] == ":150\n")
    # The app is a process of owner "desktop", listed as such, with its logs.
    pid = r.body["processId"]
    procs = desk.c.get("/cells/%s/v1/processes" % desk.cid).body["processes"]
    assert [p["owner"] for p in procs if p["id"] == pid] == ["desktop"], (pid, procs)
    assert [p["id"] for p in desk.c.get("/cells/%s/v1/processes" % desk.cid, query={"owner": "desktop"})
            .body["processes"]] == [pid]
    assert pid not in [p["id"] for p in desk.c.get("/cells/%s/v1/processes" % desk.cid, query={"owner": "user"})
                       .body["processes"]]
    assert desk.c.get("/cells/%s/v1/processes" % desk.cid, query={"owner": "system"}).body["processes"] == []
    r = desk.post("/launch", {"app": "sh", "args": ["-c", "echo app-out; echo DISPLAY=$DISPLAY"]})
    logs = lambda: desk.c.get("/cells/%s/v1/processes/%s/logs" % (desk.cid, r.body["processId"])).body["entries"]
    assert wait_for(lambda: b"DISPLAY=:150" in b"".join(base64.b64decode(e["data"]) for e in logs())), logs()


# ---- open (xdg-open in the cell) --------------------------------------------------------


def windows_titled(dk, word):
    return [w for w in dk.get("/windows").body["windows"] if word in w["title"]]


@pytest.mark.skipif(not (os.path.exists("/usr/bin/xdg-open") and os.path.exists("/usr/lib/chromium/chromium")),
                    reason="xdg-utils or chromium is not installed (scripts/install-deps.sh)")
def test_open_a_url_and_a_file_in_the_browser(d, admin, cells, tmp_path):
    cid = dm.create_cell(admin, "1G")              # chromium's renderer and GPU processes
    cells.append(cid)
    dk = started(admin, cid)
    # A URL: xdg-open hands it to the browser (no network in the cell: its error page, titled by the host).
    url = "http://cell-open-test.invalid/$(touch${IFS}/tmp/pwned)"
    r = dk.post("/open", {"target": url})
    assert r.status == 200 and set(r.body) == {"processId", "pid"} and r.body["pid"] > 1, r
    assert wait_for(lambda: windows_titled(dk, "cell-open-test.invalid"), timeout=30), dk.get("/windows").body
    # The process is the desktop's: xdg-open with the target as its one argument, never shell text.
    procs = admin.get("/cells/%s/v1/processes" % cid, query={"owner": "desktop"}).body["processes"]
    assert [(p["command"], p["args"]) for p in procs if p["id"] == r.body["processId"]] == [("xdg-open", [url])]
    assert dk.run("ls", "/tmp/pwned")["exitCode"] != 0
    # A file of the cell (an HTML page: the browser again, as the desktop's default for text/html).
    page = b"<html><head><title>cell-open-file</title></head><body>opened</body></html>"
    w = admin.call("PUT", "/cells/%s/v1/fs/file" % cid, body=page, query={"path": "/tmp/page.html"},
                   headers={"Content-Type": "application/octet-stream"})
    assert w.status == 200, w
    r = dk.post("/open", {"target": "file:///tmp/page.html"})
    assert r.status == 200, r
    assert wait_for(lambda: windows_titled(dk, "cell-open-file"), timeout=30), dk.get("/windows").body
    # The cell's files only: a host file the cell does not have, a missing one, a traversal to one.
    host_only = tmp_path / "host-only.html"
    host_only.write_bytes(page)
    for target in (str(host_only), "/tmp/no-such-page.html", "file:///tmp/../tmp/no-such-page.html",
                   "../../../../tmp/no-such; touch /tmp/pwned"):
        assert_problem(dk.post("/open", {"target": target}), 404, "not_found", "does not exist in the cell")
    assert dk.run("ls", "/tmp/pwned")["exitCode"] != 0
    # What the browser started dies with the desktop's stop.
    assert named(in_cell(dk, d.state), "chromium")
    r = dk.post("/stop")
    assert r.status == 200, r
    assert wait_for(lambda: not {"chromium", "xdg-open"} & {os.path.basename(a[0]) for _, a in in_cell(dk, d.state)}), \
        in_cell(dk, d.state)


# ---- the reference's WebRTC stream: bookkeeping, and signaling 501 --------------------


def test_stream_start_stop_status_and_signaling_names_the_live_view(admin, desk, idle):
    live = "/cells/%s/v1/desktop/live" % desk.cid
    # Before the desktop: inactive, start refused as the reference does, stop harmless.
    r = idle.get("/stream/status")
    assert r.status == 200 and r.body == {"active": False, "liveView": "/cells/%s/v1/desktop/live" % idle.cid}, r
    b = assert_problem(idle.post("/stream/start"), 409, "conflict", "not active")
    assert b["details"] == {"message": "desktop runtime is not active"}, b
    assert idle.post("/stream/stop").body["active"] is False
    # With it: start, status, stop, and the desktop's stop ends it too.
    assert desk.get("/stream/status").body == {"active": False, "liveView": live}
    for _ in range(2):                              # start is idempotent
        r = desk.post("/stream/start")
        assert r.status == 200 and r.body == {"active": True, "liveView": live}, r
    assert desk.get("/stream/status").body["active"] is True
    r = desk.post("/stream/stop")
    assert r.status == 200 and r.body == {"active": False, "liveView": live}, r
    assert desk.post("/stream/start").body["active"] is True
    assert desk.post("/stop").status == 200
    assert desk.get("/stream/status").body["active"] is False
    # Signaling is a 501 naming the live view, for a plain GET and for the SDK's
    # WebSocket upgrade with ?access_token= (accepted there, as for every WebSocket).
    assert_problem(desk.get("/stream/signaling"), 501, "not_implemented", [live, "WebRTC"])
    r = admin.call("GET", desk.base + "/stream/signaling", query={"access_token": admin.token}, token="",
                   headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
    assert_problem(r, 501, "not_implemented", live)


# ---- recordings ------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/usr/bin/ffprobe"), reason="ffmpeg is not installed")
def test_record_and_the_file_plays(desk, tmp_path):
    assert_problem(desk.post("/recording/stop"), 409, "conflict")
    r = desk.post("/recording/start", {"fps": 10})
    assert r.status == 200 and r.body["status"] == "recording", r
    rid = r.body["id"]
    assert_problem(desk.post("/recording/start"), 409, "conflict", "still active")
    xterm(desk)
    # Frames, not time: wait until ffmpeg has written some.
    assert wait_for(lambda: int(desk.run("sh", "-c", "stat -c %s /tmp/.cell-desktop/recordings/*.mp4 2>/dev/null "
                                               "|| echo 0")["stdout"].split()[0]) > 0, timeout=20)
    r = desk.post("/recording/stop")
    assert r.status == 200 and r.body["id"] == rid and r.body["status"] == "completed" and r.body["bytes"] > 0, r
    assert desk.get("/recordings").body["recordings"][0]["id"] == rid
    assert desk.get("/recordings/%s" % rid).body["status"] == "completed"
    r = desk.get("/recordings/%s/download" % rid)
    assert r.status == 200 and r.ctype == "video/mp4" and len(r.raw) == desk.get("/recordings/%s" % rid).body["bytes"]
    path = tmp_path / "rec.mp4"
    path.write_bytes(r.raw)
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True).stdout.strip()
    codec, w, h, frames = probe.split(",")
    assert (codec, w, h) == ("h264", "640", "480") and int(frames) >= 1, probe
    assert desk.c.delete(desk.base + "/recordings/%s" % rid).status == 204
    assert_problem(desk.get("/recordings/%s" % rid), 404, "not_found")
    assert_problem(desk.get("/recordings/nope/download"), 404, "not_found")


# ---- dependencies, tenancy, unknown cells ---------------------------------------------------


def test_missing_tools_answer_503_naming_them(admin, cells):
    # The host image with an empty /usr/bin: no X tool, no shell to look for them with.
    cid = new_cell(admin, mounts=[{"type": "memory", "target": "/usr/bin", "size": "1M"}])
    cells.append(cid)
    dk = Desktop(admin, cid)
    r = dk.get("/status")
    assert r.status == 200 and r.body["state"] == "install_required", r
    tools = ["Xvfb", "openbox", "xdotool", "convert", "xprop", "xwininfo"]
    install = "apt-get install -y xvfb openbox xdotool imagemagick x11-utils"
    assert r.body["missingDependencies"] == tools and r.body["installCommand"] == install, r
    for resp in (dk.post("/start"), dk.get("/screenshot"), dk.post("/mouse/move", {"x": 1, "y": 1})):
        b = assert_problem(resp, 503, "desktop_dependencies_missing", [", ".join(tools), install])
        assert b["missingDependencies"] == tools and b["installCommand"] == install, b
    r = dk.get("/status")
    assert r.body["state"] == "install_required" and r.body["processes"] == [], r


def test_unknown_cell_and_other_tenant(admin, shared):
    desk = shared
    assert_problem(admin.get("/cells/000000000000/v1/desktop/status"), 404, "not_found")
    assert_problem(admin.post("/cells/000000000000/v1/desktop/start", {}), 404, "not_found")
    tok, _ = make_tenant_token(admin, dm.uniq("desk"))
    other = admin.with_token(tok)
    for method, path in (("GET", "/status"), ("POST", "/stop"), ("GET", "/screenshot"), ("GET", "/clipboard")):
        assert_problem(other.call(method, desk.base + path, json_body={} if method == "POST" else None), 404,
                       "not_found")
    assert desk.get("/status").body["state"] == "active", "the stranger's stop must not reach it"
    assert_problem(admin.get(desk.base + "/nope"), 404)
    assert_problem(admin.call("DELETE", desk.base + "/status"), 405)
    assert_problem(other.post(desk.base + "/open", {"target": "/etc/hostname"}), 404, "not_found")
    assert_problem(other.post(desk.base + "/stream/start"), 404, "not_found")
    assert_problem(admin.post("/cells/000000000000/v1/desktop/open", {"target": "/etc/hostname"}), 404, "not_found")


# ---- isolation: what the host can reach -----------------------------------------------------


def test_no_x_socket_is_reachable_from_outside_the_cell(d, shared):
    desk = shared
    xvfb = named(in_cell(desk, d.state), "Xvfb")
    xvfb = [p for p in xvfb if ":150" in p[1]]
    assert len(xvfb) == 1, xvfb
    pid, argv = xvfb[0]
    assert "-nolisten" in argv and "tcp" in argv and "local" in argv, argv
    # The X server is the cell's: a cell uid, its own network namespace.
    assert int(dm.proc_status(pid)["Uid"].split()[0]) >= dm.CELL_UID_FIRST
    assert _netns(pid) != _netns("self")
    # No socket file on the host's /tmp, no abstract socket in the host's namespace...
    assert not os.path.exists("/tmp/.X11-unix/X150")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError):
        s.connect("\0/tmp/.X11-unix/X150")
    s.close()
    # ...nor in the cell's (abstract names would be reachable from any process of
    # that namespace), and no TCP listener on 6150 there: only the socket file.
    with open("/proc/%d/net/unix" % pid) as f:
        unix = f.read()
    assert "/tmp/.X11-unix/X150" in unix and "@/tmp/.X11-unix/X150" not in unix, unix
    with open("/proc/%d/net/tcp" % pid) as f:
        tcp = f.read() + open("/proc/%d/net/tcp6" % pid).read()
    assert ":1806 " not in tcp, tcp
    # The X tools run in the cell's cgroup, as its processes do.
    with open("/proc/%d/cgroup" % pid) as f:
        xcg = f.read()
    init = [p for p, a in in_cell(desk, d.state) if a[0] == "cell-init" and _netns(p) == _netns(pid)]
    assert len(init) == 1
    with open("/proc/%d/cgroup" % init[0]) as f:
        assert f.read() == xcg
