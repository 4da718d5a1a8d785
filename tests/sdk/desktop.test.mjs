// desktop.test.mjs: the per-cell desktop (src/server/desktop.c) driven by the
// unmodified sandbox-agent 0.4.2 SDK's desktop methods, on a cell of the host
// image (scripts/install-deps.sh installs Xvfb, openbox, xdotool, ImageMagick,
// x11-utils, xclip, ffmpeg and xterm on the host).
//
// Screenshots are decoded with the host's ImageMagick (`convert ... rgb:-`)
// and checked pixel by pixel where a window the test opened should be; typed
// text is read back from the file the app wrote; a recording is checked with
// ffprobe.  Waits are bounded polls of a condition, never a sleep that must
// be long enough.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createCell, daemonState, rejectsWith, startDaemon, stopDaemon, waitFor, connectSdk } from "./harness.mjs";
import WebSocket from "ws";

const TOOLS = ["Xvfb", "openbox", "xdotool", "convert", "xprop", "xwininfo", "xterm", "xclip", "ffprobe"];
const missingTools = TOOLS.filter((t) => !existsSync(`/usr/bin/${t}`));
const skip = missingTools.length ? `host lacks ${missingTools.join(", ")} (scripts/install-deps.sh)` : false;

let cellId = "";
let bareId = "";
let sdk = null;
let bare = null;

// { width, height, rgb } of any image ImageMagick reads.
function decode(bytes) {
  const buf = Buffer.from(bytes);
  const [w, h] = execFileSync("identify", ["-format", "%w %h", "-"], { input: buf }).toString().split(" ").map(Number);
  const rgb = execFileSync("convert", ["-", "-depth", "8", "rgb:-"], { input: buf, maxBuffer: 64 << 20 });
  assert.equal(rgb.length, w * h * 3);
  return { width: w, height: h, rgb };
}
const pixel = (img, x, y) => [...img.rgb.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];

async function cat(file) {
  const r = await sdk.runProcess({ command: "cat", args: [file] });
  return r.exitCode === 0 ? r.stdout : null;
}

before(async () => {
  if (skip) return;
  await startDaemon();
  const { port, token } = daemonState;
  cellId = await createCell({ resources: { memory: "512M" } });
  sdk = await connectSdk({ baseUrl: `http://127.0.0.1:${port}/cells/${cellId}`, token });
  // The host image with an empty /usr/bin: a cell whose image lacks the tools.
  bareId = await createCell({ resources: { memory: "64M" }, mounts: [{ type: "memory", target: "/usr/bin", size: "1M" }] });
  bare = await connectSdk({ baseUrl: `http://127.0.0.1:${port}/cells/${bareId}`, token });
});

after(async () => {
  if (sdk) await sdk.dispose();
  if (bare) await bare.dispose();
  if (!skip) await stopDaemon([cellId, bareId]);
});

test("before start: status inactive, actions 409", { skip }, async () => {
  const st = await sdk.getDesktopStatus();
  assert.equal(st.state, "inactive");
  assert.deepEqual(st.missingDependencies, []);
  await rejectsWith(sdk.takeDesktopScreenshot(), 409, "screenshot before start");
  await rejectsWith(sdk.clickDesktop({ x: 1, y: 1 }), 409, "click before start");
  await assert.rejects(sdk.getDesktopMousePosition(), (e) => e.problem?.code === "desktop_runtime_inactive");
});

test("a cell without the tools: 503 naming them and the install command", { skip }, async () => {
  const st = await bare.getDesktopStatus();
  assert.equal(st.state, "install_required");
  assert.ok(st.missingDependencies.includes("Xvfb") && st.missingDependencies.includes("openbox"), JSON.stringify(st));
  await assert.rejects(bare.startDesktop({}), (e) => {
    assert.equal(e.status, 503);
    assert.equal(e.problem.code, "desktop_dependencies_missing");
    assert.ok(e.problem.missingDependencies.includes("xdotool"), JSON.stringify(e.problem));
    assert.match(e.problem.installCommand, /^apt-get install -y .*xvfb/);
    return true;
  });
});

test("start, display info, bad sizes refused", { skip }, async () => {
  await rejectsWith(sdk.startDesktop({ width: 100000, height: 100 }), 400, "huge width");
  await rejectsWith(sdk.startDesktop({ dpi: 0 }), 400, "dpi 0");
  const st = await sdk.startDesktop({ width: 640, height: 480, dpi: 96, displayNum: 120 });
  assert.equal(st.state, "active");
  assert.equal(st.display, ":120");
  assert.deepEqual(st.resolution, { width: 640, height: 480, dpi: 96 });
  assert.deepEqual(st.processes.map((p) => p.name).sort(), ["Xvfb", "openbox"]);
  const info = await sdk.getDesktopDisplayInfo();
  assert.deepEqual(info, { display: ":120", resolution: { width: 640, height: 480, dpi: 96 } });
});

test("a window the test opens is in the screenshot where the window list says", { skip }, async () => {
  const shot = decode(await sdk.takeDesktopScreenshot());
  assert.equal(shot.width, 640);
  assert.equal(shot.height, 480);
  const app = await sdk.launchDesktopApp({ app: "xterm", args: ["-geometry", "30x6+120+90", "-bg", "blue"], wait: true });
  assert.ok(app.processId && app.windowId, JSON.stringify(app));
  // The app is a process of the cell, owner "desktop", through the process methods too.
  const info = await sdk.getProcess(app.processId);
  assert.equal(info.owner, "desktop");
  assert.equal(info.status, "running");
  assert.ok((await sdk.listProcesses({ owner: "desktop" })).processes.some((p) => p.id === app.processId));
  const { windows } = await sdk.listDesktopWindows();
  const w = windows.find((x) => x.id === app.windowId);
  assert.ok(w && w.title === "xterm" && w.isActive, JSON.stringify(windows));
  assert.ok(w.x >= 120 && w.x <= 130 && w.y >= 90 && w.y <= 130, JSON.stringify(w));
  const cx = w.x + (w.width >> 1), cy = w.y + w.height - 5;
  const img = await waitFor(async () => {
    const i = decode(await sdk.takeDesktopScreenshot({ format: "png" }));
    return pixel(i, cx, cy).join() === "0,0,255" ? i : null;
  }, { what: "the blue xterm in a screenshot" });
  assert.deepEqual(pixel(img, 600, 450), [0, 0, 0]);
  const region = decode(await sdk.takeDesktopRegionScreenshot({ x: w.x, y: w.y, width: 50, height: 40 }));
  assert.equal(region.width, 50);
  assert.deepEqual(pixel(region, 25, 30), [0, 0, 255]);
  const jpeg = await sdk.takeDesktopScreenshot({ format: "jpeg", quality: 50, scale: 0.5 });
  assert.deepEqual([...jpeg.subarray(0, 2)], [0xff, 0xd8]);
  assert.equal(decode(jpeg).width, 320);
  const webp = await sdk.takeDesktopScreenshot({ format: "webp" });
  assert.equal(Buffer.from(webp.subarray(8, 12)).toString(), "WEBP");
});

test("click and type into the app, read the result back", { skip }, async () => {
  const { windows } = await sdk.listDesktopWindows();
  const w = windows.find((x) => x.title === "xterm");
  const pos = await sdk.clickDesktop({ x: w.x + 30, y: w.y + 30 });
  assert.deepEqual([pos.x, pos.y], [w.x + 30, w.y + 30]);
  assert.deepEqual(await sdk.typeDesktopText({ text: "echo sdk-$((40+2)) > /tmp/sdk-typed", delayMs: 1 }), { ok: true });
  assert.deepEqual(await sdk.pressDesktopKey({ key: "Return" }), { ok: true });
  assert.equal(await waitFor(async () => (await cat("/tmp/sdk-typed")) === "sdk-42\n" && "ok", { what: "the typed file" }), "ok");
  assert.deepEqual(await sdk.keyDownDesktop({ key: "shift" }), { ok: true });
  assert.deepEqual(await sdk.keyUpDesktop({ key: "shift" }), { ok: true });
});

test("mouse, windows and clipboard methods", { skip }, async () => {
  assert.deepEqual((({ x, y }) => [x, y])(await sdk.moveDesktopMouse({ x: 10, y: 20 })), [10, 20]);
  assert.deepEqual((({ x, y }) => [x, y])(await sdk.getDesktopMousePosition()), [10, 20]);
  assert.deepEqual((({ x, y }) => [x, y])(await sdk.dragDesktopMouse({ startX: 5, startY: 5, endX: 50, endY: 60 })), [50, 60]);
  await sdk.scrollDesktop({ x: 30, y: 30, deltaY: 2 });
  // (the right and middle buttons on the root window open openbox's menus)
  await sdk.mouseDownDesktop({ x: 40, y: 40, button: "left" });
  await sdk.mouseUpDesktop({ button: "left" });
  await rejectsWith(sdk.clickDesktop({ x: -1, y: 0 }), 400, "negative x");
  await rejectsWith(sdk.clickDesktop({ x: 1, y: 1, button: "fourth" }), 400, "unknown button");
  await rejectsWith(sdk.takeDesktopScreenshot({ format: "gif" }), 400, "bad format");
  const xterm = (await sdk.listDesktopWindows()).windows.find((x) => x.title === "xterm");
  assert.equal((await sdk.focusDesktopWindow(xterm.id)).isActive, true);
  const focused = await sdk.getDesktopFocusedWindow();
  assert.equal(focused.id, xterm.id);
  // The answer is the window right after the action; the window manager and
  // xterm (which snaps to whole character cells) may still adjust it, so the
  // list is what is checked, until it shows the change.
  const current = async () => (await sdk.listDesktopWindows()).windows.find((x) => x.id === focused.id);
  assert.equal((await sdk.moveDesktopWindow(focused.id, { x: 200, y: 150 })).id, focused.id);
  await waitFor(async () => Math.abs((await current()).x - 200) <= 10, { what: "the window at x 200" });
  assert.equal((await sdk.resizeDesktopWindow(focused.id, { width: 300, height: 200 })).id, focused.id);
  await waitFor(async () => Math.abs((await current()).width - 300) <= 20, { what: "the window 300 wide" });
  assert.equal((await sdk.focusDesktopWindow(focused.id)).id, focused.id);
  await rejectsWith(sdk.focusDesktopWindow("12345"), 404, "unknown window");
  assert.deepEqual(await sdk.setDesktopClipboard({ text: "from the SDK ✓" }), { ok: true });
  assert.deepEqual(await sdk.getDesktopClipboard(), { selection: "clipboard", text: "from the SDK ✓" });
});

test("openDesktopTarget; the stream's status, start and stop; its signaling fails with a reason", { skip }, async () => {
  // open: xdg-open in the cell, a process of the desktop, answered at once.
  await sdk.writeFsFile({ path: "/tmp/sdk-open.txt" }, new TextEncoder().encode("opened by the SDK\n"));
  const opened = await sdk.openDesktopTarget({ target: "/tmp/sdk-open.txt" });
  assert.equal(typeof opened.processId, "string");
  assert.ok(opened.pid > 1, JSON.stringify(opened));
  const proc = (await sdk.listProcesses({ owner: "desktop" })).processes.find((p) => p.id === opened.processId);
  assert.deepEqual([proc.command, proc.args], ["xdg-open", ["/tmp/sdk-open.txt"]]);
  await rejectsWith(sdk.openDesktopTarget({ target: "/tmp/no-such-file" }), 404, "a file the cell lacks");
  await rejectsWith(sdk.openDesktopTarget({ target: "--help" }), 400, "an option as the target");
  // The stream: the reference's bookkeeping, and where the live view is.
  const live = `/cells/${cellId}/v1/desktop/live`;
  assert.deepEqual(await sdk.getDesktopStreamStatus(), { active: false, liveView: live });
  assert.deepEqual(await sdk.startDesktopStream(), { active: true, liveView: live });
  assert.equal((await sdk.getDesktopStreamStatus()).active, true);
  // Connecting: the signaling WebSocket is refused (501, naming the live
  // view), so the session reports an error and closes instead of waiting.
  const session = sdk.connectDesktopStream({ WebSocket });
  const errors = [];
  session.onError((e) => errors.push(e));
  await session.closed;
  assert.ok(errors.length > 0, "connectDesktopStream reported no error");
  const refused = await new Promise((resolve, reject) => {
    const ws = new WebSocket(sdk.buildDesktopStreamWebSocketUrl());
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c) => { body += c; });
      res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
    });
    ws.on("open", () => reject(new Error("the signaling WebSocket opened")));
    ws.on("error", () => {});
  });
  assert.equal(refused.status, 501);
  assert.equal(refused.body.code, "not_implemented");
  assert.ok(refused.body.detail.includes(live), refused.body.detail);
  assert.deepEqual(await sdk.stopDesktopStream(), { active: false, liveView: live });
});

test("record, download, the file plays", { skip }, async () => {
  const rec = await sdk.startDesktopRecording({ fps: 10 });
  assert.equal(rec.status, "recording");
  await waitFor(async () => {
    const r = await sdk.runProcess({ command: "sh", args: ["-c", "stat -c %s /tmp/.cell-desktop/recordings/*.mp4"] });
    return r.exitCode === 0 && Number(r.stdout.trim()) > 0;
  }, { timeout: 20000, what: "ffmpeg to write frames" });
  const done = await sdk.stopDesktopRecording();
  assert.equal(done.id, rec.id);
  assert.equal(done.status, "completed");
  assert.equal((await sdk.listDesktopRecordings()).recordings[0].id, rec.id);
  const mp4 = await sdk.downloadDesktopRecording(rec.id);
  assert.equal(mp4.length, done.bytes);
  const dir = mkdtempSync(path.join(os.tmpdir(), "desk-sdk-"));
  try {
    writeFileSync(path.join(dir, "r.mp4"), mp4);
    const probe = execFileSync("ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries",
      "stream=codec_name,width,height", "-of", "csv=p=0", path.join(dir, "r.mp4")]).toString().trim();
    assert.equal(probe, "h264,640,480");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await sdk.deleteDesktopRecording(rec.id);
  await rejectsWith(sdk.getDesktopRecording(rec.id), 404, "deleted recording");
});

test("stop ends every desktop process; status after", { skip }, async () => {
  const st = await sdk.stopDesktop();
  assert.equal(st.state, "inactive");
  assert.deepEqual(st.processes, []);
  // X clients the desktop did not start itself (xclip's selection owner) end
  // with their server, a moment after it.
  const desktopProcs = async () => (await sdk.runProcess({ command: "ps", args: ["-eo", "comm="] })).stdout
    .split("\n").filter((c) => ["Xvfb", "openbox", "xterm", "xclip", "ffmpeg"].includes(c.trim()));
  await waitFor(async () => (await desktopProcs()).length === 0, { what: "every desktop process to end" });
  assert.equal((await sdk.getDesktopStatus()).state, "inactive");
  await rejectsWith(sdk.takeDesktopScreenshot(), 409, "screenshot after stop");
});
