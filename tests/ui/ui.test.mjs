// ui.test.mjs: the Inspector (/ui/, docs/ui.md) in a real browser: Debian's
// chromium, headless, driven by playwright-core, against a `cell serve` of
// its own.  One browser page walks what a person does: log in with the
// token, create a cell with a policy, run a command, follow a log, type in
// the terminal, upload, download and edit a file, see a denied connection
// in the egress view, delete the cell; with the keyboard alone and with a
// label on every control.  A failing test saves a screenshot and the page's
// HTML under the artifacts directory printed at the start.
//
// The denied peer: 198.18.48.1 (tests/integration/netfake.py's list), added
// to the host's lo with a listener on it, which must see no connection.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CELL_BIN = process.env.CELL_BIN || path.resolve(HERE, "../../build/cell");
const CHROMIUM = process.env.CELL_CHROMIUM || "/usr/bin/chromium";
const PEER = "198.18.48.1", PEER_PORT = 8080;
// A fake npm registry (tests/integration/npmfake.py) for the agent install's
// progress: the daemon's --agent-registry.
const REGISTRY_IP = "198.18.48.2";
// Those addresses on lo are host-wide: a second run of this file on the
// host (an engineer's beside CI) would lose them to the first one's after()
// and hang on a peer that is gone.  A run holds netfake.py's lock for the
// /24 (the same file) while they are up; a second one waits for it.
const NET_LOCK = `${existsSync("/run/lock") ? "/run/lock" : "/tmp"}/cell-test-net-198.18.48.lock`;
let netLock;
// Waits for the page are bounds for a broken page, not timings.
const BOUND = 20000;

const st = { daemon: null, stderr: "", dir: null, port: 0, token: "", base: "" };
let browser, page, artifacts, peer, peerConnections = 0, cellId = null, failures = 0, registry = null;
const requests = [], sockets = [], cspViolations = [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
async function api(method, p, body) {
  const res = await fetch(st.base + p, {
    method,
    headers: { Authorization: `Bearer ${st.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: res.status, body: json };
}

// GET with the path exactly as given (fetch would resolve "%2e%2e" first).
function rawGet(p, headers = {}) {
  return new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: st.port, path: p, headers }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    }).on("error", reject);
  });
}

// A WebSocket handshake offering `protocols`: {status, headers}.
function handshake(p, protocols) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: st.port, path: p, headers: {
      Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": protocols } });
    req.on("upgrade", (res, socket) => { socket.destroy(); resolve({ status: 101, headers: res.headers }); });
    req.on("response", (res) => { res.resume(); resolve({ status: res.statusCode, headers: res.headers }); });
    req.on("error", reject);
    req.end();
  });
}

// `cell serve` on d.port with state in d.dir and `extra` flags, answering:
// sets d.daemon, d.stderr and d.token (its admin token).
async function serve(d, extra) {
  d.stderr = "";
  d.daemon = spawn(CELL_BIN, ["--state", d.dir, "serve", "--init", "--no-config",
                              "--listen", `127.0.0.1:${d.port}`, "--socket", "", ...extra],
                   { stdio: ["ignore", "ignore", "pipe"] });
  d.daemon.stderr.on("data", (b) => { d.stderr += b; });
  for (let i = 0; ; i++) {
    assert.equal(d.daemon.exitCode, null, `cell serve exited: ${d.stderr}`);
    try {
      if ((await fetch(`${d.base}/v1/health`)).ok) break;
    } catch { /* not yet */ }
    assert.ok(i < 400, `cell serve did not answer: ${d.stderr}`);
    await sleep(50);
  }
  d.token = readFileSync(path.join(d.dir, "admin.token"), "utf8").trim();
}

// A test that fails leaves its screenshot and HTML behind.
// Each test has its own deadline, well inside the file's (run.sh): a test
// that hangs fails by its name, with its screenshot, and the others still
// run; each one's time is printed, so a slow CI run shows where it went.
const TEST_TIMEOUT_MS = 90_000;

function uiTest(name, fn) {
  test(name, { timeout: TEST_TIMEOUT_MS }, async () => {
    const t0 = Date.now();
    try {
      await fn();
      process.stdout.write(`# ${name}: ${Date.now() - t0} ms\n`);
    } catch (e) {
      process.stdout.write(`# ${name}: failed after ${Date.now() - t0} ms\n`);
      failures++;
      const stem = path.join(artifacts, name.replace(/[^a-z0-9]+/gi, "_"));
      try {
        await page.screenshot({ path: `${stem}.png`, fullPage: true });
        writeFileSync(`${stem}.html`, await page.content());
        process.stderr.write(`ui test "${name}" failed: screenshot ${stem}.png\n`);
      } catch { /* the browser itself died */ }
      throw e;
    }
  });
}

before(async () => {
  assert.ok(existsSync(CELL_BIN), `no cell binary at ${CELL_BIN} (set CELL_BIN)`);
  assert.ok(existsSync(CHROMIUM), `no chromium at ${CHROMIUM}: apt-get install chromium (scripts/install-deps.sh)`);
  artifacts = mkdtempSync(path.join(os.tmpdir(), "cell-ui-artifacts-"));
  process.stdout.write(`# ui artifacts (screenshots of failures): ${artifacts}\n`);
  st.dir = mkdtempSync(path.join(os.tmpdir(), "cell-ui-"));
  st.port = await freePort();
  st.base = `http://127.0.0.1:${st.port}`;
  // flock holds the lock while its cat reads stdin: until after() ends it,
  // or this process dies and the pipe closes.
  netLock = spawn("flock", ["-w", "900", NET_LOCK, "sh", "-c", "echo locked; exec cat"],
                  { stdio: ["pipe", "pipe", "inherit"] });
  await new Promise((resolve, reject) => {
    netLock.stdout.once("data", resolve);
    netLock.once("exit", (code) => reject(new Error(`198.18.48.0/24 stayed in use by another run (flock: ${code})`)));
  });
  execFileSync("ip", ["addr", "replace", `${REGISTRY_IP}/32`, "dev", "lo"]);
  registry = spawn("python3", [path.resolve(HERE, "../integration/npmfake.py"), REGISTRY_IP],
                   { stdio: ["pipe", "pipe", "inherit"], cwd: path.resolve(HERE, "../integration") });
  const registryUrl = await new Promise((resolve, reject) => {
    let out = "";
    registry.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(out.trim());
    });
    registry.once("exit", (code) => reject(new Error(`npmfake.py exited ${code}`)));
  });
  st.registryUrl = registryUrl;
  await serve(st, ["--agent-registry", registryUrl]);
  execFileSync("ip", ["addr", "replace", `${PEER}/32`, "dev", "lo"]);
  peer = net.createServer((s) => { peerConnections++; s.destroy(); });
  await new Promise((r) => peer.listen(PEER_PORT, PEER, r));
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
                                    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  page = await ctx.newPage();
  page.setDefaultTimeout(BOUND);
  page.on("request", (r) => requests.push(r.url()));
  page.on("websocket", (ws) => sockets.push(ws.url()));
  page.on("dialog", (d) => d.accept());
  // Every CSP violation of every page load (chromium reports them on the console).
  page.on("console", (m) => { if (/Content Security Policy/.test(m.text())) cspViolations.push(m.text()); });
});

after(async () => {
  if (browser) await browser.close();
  if (peer) peer.close();
  if (registry && registry.exitCode === null) {
    registry.stdin.end();
    await new Promise((r) => registry.once("exit", r));
  }
  for (const ip of [PEER, REGISTRY_IP])
    try { execFileSync("ip", ["addr", "del", `${ip}/32`, "dev", "lo"], { stdio: "ignore" }); } catch { /* gone */ }
  if (netLock && netLock.exitCode === null) {
    netLock.stdin.end();
    await new Promise((r) => netLock.once("exit", r));
  }
  if (st.daemon && st.daemon.exitCode === null) {
    st.daemon.kill("SIGTERM");
    await new Promise((r) => st.daemon.once("exit", r));
  }
  if (st.dir) rmSync(st.dir, { recursive: true, force: true });
  if (artifacts && !failures) rmSync(artifacts, { recursive: true, force: true });
});

test("the static files: types, CSP, nosniff, caching, nothing else served", async () => {
  const csp = [];
  for (const [p, type] of [["/ui/", "text/html"], ["/ui/index.html", "text/html"],
                           ["/ui/app.js", "text/javascript"], ["/ui/app.css", "text/css"]]) {
    const res = await fetch(st.base + p);
    assert.equal(res.status, 200, p);
    assert.ok(res.headers.get("content-type").startsWith(type), `${p}: ${res.headers.get("content-type")}`);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("cache-control"), "no-cache");
    csp.push(res.headers.get("content-security-policy"));
    const etag = res.headers.get("etag");
    assert.match(etag, /^"[0-9a-f]{16}"$/);
    const again = await fetch(st.base + p, { headers: { "If-None-Match": etag } });
    assert.equal(again.status, 304, `${p} revalidated`);
  }
  const policy = csp[0];
  assert.ok(csp.every((c) => c === policy));
  for (const d of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'",
                   "base-uri 'none'"])
    assert.ok(policy.includes(d), `CSP has ${d}: ${policy}`);
  assert.ok(!policy.includes("unsafe-inline") && !policy.includes("unsafe-eval"), policy);
  const html = await (await fetch(`${st.base}/ui/`)).text();
  assert.ok(!/<script>|<script [^>]*>[^<]/.test(html), "no inline script in index.html");
  // /ui without the slash is sent to /ui/.
  const redir = await fetch(`${st.base}/ui`, { redirect: "manual" });
  assert.equal(redir.status, 308);
  assert.equal(redir.headers.get("location"), "/ui/");
  // Anything but the three files is 404: other names, traversal, nesting.
  for (const p of ["/ui/nope.js", "/ui/..%2Fadmin.token", "/ui/%2e%2e/openapi.json", "/ui/../openapi.json", "/ui/%2e%2e%2fcell.db", "/ui/app.js/x",
                   "/ui/deps/package.json", "/ui/.%2F.%2Fapp.js"]) {
    const res = await rawGet(p);
    assert.equal(res.status, 404, p);
    assert.ok(!res.body.includes(st.token));
  }
  // Writing is not a thing the UI's routes do.
  assert.equal((await fetch(`${st.base}/ui/app.js`, { method: "PUT", body: "x" })).status, 405);
  // The API itself still needs the token.
  assert.equal((await fetch(`${st.base}/v1/cells`)).status, 401);
});

uiTest("log in: a wrong token is refused at the field, the right one is kept out of URLs", async () => {
  await page.goto(`${st.base}/ui/`);
  const tok = page.getByLabel("API token");
  await tok.fill("not-a-token");
  await tok.press("Enter");
  await page.getByText("This token is not valid here (401).").waitFor();
  assert.equal(await tok.getAttribute("aria-invalid"), "true");
  await tok.fill(st.token);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Cells" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("cell.token")), st.token);
  assert.ok(!page.url().includes(st.token));
});

uiTest("create: policy errors are shown at the policy field, then a cell is created", async () => {
  const policy = page.getByLabel(/Network policy/);
  await policy.fill("{not json");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByText(/Not JSON/).waitFor();
  assert.equal(await policy.getAttribute("aria-invalid"), "true");
  // Valid JSON the daemon refuses: its problem+json lands at the field.
  await policy.fill('{"rules": [{"tcp": {"to": "198.18.48.0/24", "ports": [1]}, "bogus": 1}]}');
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator(".field-error", { hasText: "bogus" }).waitFor();
  assert.equal(await policy.getAttribute("aria-invalid"), "true");
  const memory = page.getByLabel("Memory");
  await memory.fill("12 parsecs");
  await policy.fill('{"rules": [{"tcp": {"to": "198.18.48.0/24", "ports": [1]}}]}');
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator(".field-error", { hasText: /memory/ }).first().waitFor();
  assert.equal(await memory.getAttribute("aria-invalid"), "true");
  assert.equal((await api("GET", "/v1/cells")).body.cells.length, 0, "nothing created by refused forms");
  await memory.fill("256M");
  await page.getByRole("button", { name: "Create" }).click();
  const row = page.locator("tr[data-cell]");
  await row.locator(".state-running").waitFor();
  cellId = await row.getAttribute("data-cell");
  const cell = (await api("GET", `/v1/cells/${cellId}`)).body;
  assert.equal(cell.resources.memory, 256 * 1024 * 1024);
  assert.deepEqual(cell.policy.rules[0].tcp.ports, [1]);
});

uiTest("processes: run a command and see its output; follow a log; stop one", async () => {
  await page.locator(`a[href="#/cells/${cellId}/processes"]`).click();
  const cmd = page.getByLabel("Command (run with sh -c)");
  await cmd.fill("echo hello-$((6*7)); echo oops >&2; exit 3");
  await cmd.press("Enter");
  await page.getByText("Exit code 3").waitFor();
  const out = await page.getByLabel("Command output").textContent();
  assert.match(out, /hello-42\n/);
  assert.match(out, /oops/);
  await cmd.fill("for i in 1 2 3; do echo tick$i; sleep 0.1; done");
  await page.getByRole("button", { name: "Start in background" }).click();
  await page.getByText(/Log of proc_\d+ \(ended\)/).waitFor();
  assert.match(await page.locator("pre.log").textContent(), /tick1\ntick2\ntick3\n/);
  await cmd.fill("sleep 600");
  await page.getByRole("button", { name: "Start in background" }).click();
  const kill = page.getByRole("button", { name: /^Kill proc_/ });
  await kill.waitFor();
  await kill.click();
  await page.getByRole("button", { name: /^Delete proc_/ }).nth(1).waitFor();
  const procs = (await api("GET", `/cells/${cellId}/v1/processes`)).body.processes;
  assert.ok(procs.every((p) => p.status === "exited"), JSON.stringify(procs));
});

uiTest("terminal: typed keys reach the shell and its echo is shown", async () => {
  await page.getByRole("link", { name: "Terminal" }).click();
  await page.getByText(/Connected to proc_/).waitFor();
  await page.keyboard.type("echo term-$((7*6))\n");
  await page.locator(".xterm-rows", { hasText: "term-42" }).waitFor();
  // No URL the page opened holds the token: the WebSocket offered it as a
  // subprotocol.
  assert.ok(sockets.length >= 1);
  assert.deepEqual([...requests, ...sockets].filter((u) => u.includes(st.token)), []);
  // That offer, tried by hand: it opens the terminal and is never echoed;
  // a wrong token, or the offer on a route that is not a WebSocket, is 401.
  const tty = (await api("POST", `/cells/${cellId}/v1/processes`, { command: "sh", tty: true, interactive: true })).body;
  const wsPath = `/cells/${cellId}/v1/processes/${tty.id}/terminal/ws`;
  const ok = await handshake(wsPath, `cell.terminal, cell.bearer.${st.token}`);
  assert.equal(ok.status, 101);
  assert.equal(ok.headers["sec-websocket-protocol"], "cell.terminal");
  assert.equal((await handshake(wsPath, `cell.terminal, cell.bearer.${st.token.slice(0, -1)}${st.token.endsWith("0") ? "1" : "0"}`)).status, 401);
  assert.equal((await handshake(wsPath, "cell.terminal")).status, 401);
  assert.equal((await handshake(wsPath, `cell.bearer.${"a".repeat(300)}`)).status, 401);
  const plain = await rawGet("/v1/cells", { "Sec-WebSocket-Protocol": `cell.bearer.${st.token}` });
  assert.equal(plain.status, 401, "the offer is taken on WebSocket upgrades only");
  await api("POST", `/cells/${cellId}/v1/processes/${tty.id}/kill`);
  // Leaving the page ends the shell.
  await page.getByRole("link", { name: "Files" }).click();
  for (let i = 0; ; i++) {
    const procs = (await api("GET", `/cells/${cellId}/v1/processes`)).body.processes;
    if (procs.filter((p) => p.tty).every((p) => p.status === "exited")) break;
    assert.ok(i < 200, "the terminal's shell still runs");
    await sleep(50);
  }
});

uiTest("files: upload, download, edit and delete", async () => {
  await page.goto(`${st.base}/ui/#/cells/${cellId}/files?path=/tmp`);
  await page.getByRole("table", { name: "Entries of /tmp" }).waitFor();
  await page.getByLabel("Upload files here").setInputFiles({ name: "up.txt", mimeType: "text/plain",
                                                             buffer: Buffer.from("uploaded \u00e9\n") });
  await page.locator('tr[data-entry="up.txt"]').waitFor();
  const r = await fetch(`${st.base}/cells/${cellId}/v1/fs/file?path=/tmp/up.txt`,
                        { headers: { Authorization: `Bearer ${st.token}` } });
  assert.equal(await r.text(), "uploaded \u00e9\n");
  const [dl] = await Promise.all([page.waitForEvent("download"),
                                  page.getByRole("button", { name: "Download up.txt" }).click()]);
  assert.equal(dl.suggestedFilename(), "up.txt");
  assert.equal(readFileSync(await dl.path(), "utf8"), "uploaded \u00e9\n");
  await page.getByRole("button", { name: "Edit up.txt" }).click();
  const text = page.getByLabel("Contents of /tmp/up.txt");
  assert.equal(await text.inputValue(), "uploaded \u00e9\n");
  await text.fill("edited\n");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText("Saved /tmp/up.txt").waitFor();
  const r2 = await fetch(`${st.base}/cells/${cellId}/v1/fs/file?path=/tmp/up.txt`,
                         { headers: { Authorization: `Bearer ${st.token}` } });
  assert.equal(await r2.text(), "edited\n");
  // A name that climbs out of the directory is the cell's path, not a host's.
  await page.getByLabel("New directory name").fill("made");
  await page.getByRole("button", { name: "Make directory" }).click();
  await page.locator('tr[data-entry="made"]').waitFor();
  await page.getByRole("button", { name: "Delete up.txt" }).click();
  await page.locator('tr[data-entry="up.txt"]').waitFor({ state: "detached" });
});

uiTest("egress: a connection the policy denies appears as denied, and the peer saw nothing", async () => {
  const run = await api("POST", `/cells/${cellId}/v1/processes/run`, { command: "python3", args: ["-c",
    `import socket\ntry:\n socket.create_connection(("${PEER}", ${PEER_PORT}), 5)\n print("connected")\n` +
    `except OSError as e:\n print("refused", e)`] });
  assert.equal(run.status, 200, JSON.stringify(run.body));
  // The cell's connect may succeed: the egress engine answers it and then
  // decides; what matters is that the peer is never reached.
  await page.getByRole("link", { name: "Egress" }).click();
  await page.getByLabel("Show").selectOption("deny");
  const row = page.locator('tr[data-verdict="deny"]', { hasText: `${PEER}:${PEER_PORT}` }).first();
  await row.waitFor();
  assert.match(await row.textContent(), /denied/);
  // "Denied only" is the API's ?decision=deny: no allowed row comes with it.
  assert.deepEqual([...new Set(await page.locator("table.egress tbody tr[data-verdict]")
    .evaluateAll((trs) => trs.map((tr) => tr.dataset.verdict)))], ["deny"]);
  assert.equal(peerConnections, 0, "the denied peer was contacted");
  await page.getByRole("link", { name: "Policy" }).click();
  const policy = page.getByLabel(/Policy \(JSON/);
  assert.match(await policy.inputValue(), /198\.18\.48\.0\/24/);
  await policy.fill('{"rules": [{"tcp": {"to": "198.18.48.0/24", "ports": ["x"]}}]}');
  await page.getByRole("button", { name: "Save policy" }).click();
  await page.locator(".field-error:not(:empty)").waitFor();
  assert.equal(await policy.getAttribute("aria-invalid"), "true");
});

uiTest("accessibility: landmarks, a label on every control, keyboard-only navigation", async () => {
  await page.goto(`${st.base}/ui/#/cells`);
  await page.getByRole("heading", { name: "Cells" }).waitFor();
  for (const role of ["banner", "main", "navigation"])
    assert.ok(await page.getByRole(role).count() >= 1, `landmark ${role}`);
  for (const where of ["#/cells", `#/cells/${cellId}/processes`, `#/cells/${cellId}/files?path=/tmp`,
                       `#/cells/${cellId}/egress`, `#/cells/${cellId}/policy`, `#/cells/${cellId}/agent`,
                       `#/cells/${cellId}/desktop`, "#/lanes", "#/images", "#/audit", "#/tokens", "#/tenants"]) {
    await page.goto(`${st.base}/ui/${where}`);
    await page.locator("main form, main table").first().waitFor();
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll("main input, main select, main textarea")]
      .filter((el) => !el.labels?.length && !el.getAttribute("aria-label"))
      .map((el) => el.outerHTML));
    assert.deepEqual(unlabelled, [], `${where}: controls without a label`);
    const nameless = await page.evaluate(() => [...document.querySelectorAll("main button")]
      .filter((b) => !b.textContent.trim() && !b.getAttribute("aria-label")).map((b) => b.outerHTML));
    assert.deepEqual(nameless, [], `${where}: buttons without a name`);
  }
  // Keyboard only: from the top of the cells page, Tab reaches the cell's
  // link and Enter opens it; Tab then reaches the command field.
  await page.goto(`${st.base}/ui/#/cells`);
  await page.locator(`a[href="#/cells/${cellId}/processes"]`).waitFor();
  let reached = false;
  for (let i = 0; i < 30 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate((id) => document.activeElement?.getAttribute("href") === `#/cells/${id}/processes`, cellId);
  }
  assert.ok(reached, "Tab never reached the cell's link");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: `Cell ${cellId}` }).waitFor();
  // The page focuses the field in the task that adds it.
  await page.getByLabel("Command (run with sh -c)").waitFor();
  const focused = await page.evaluate(() => document.activeElement?.id &&
    document.querySelector(`label[for="${document.activeElement.id}"]`)?.textContent);
  assert.match(focused || "", /Command/);
  await page.keyboard.type("echo keyboard-only");
  await page.keyboard.press("Enter");
  await page.getByText("Exit code 0").waitFor();
  assert.match(await page.getByLabel("Command output").textContent(), /keyboard-only/);
});

uiTest("agent: a session with the mock agent: chat, a permission request answered, a tool call run", async () => {
  await page.goto(`${st.base}/ui/#/cells/${cellId}/agent`);
  await page.getByLabel("Agent to run").selectOption("mock");
  await page.getByRole("button", { name: "Start session" }).click();
  await page.locator(".transcript .info", { hasText: /^Session / }).waitFor();
  const msg = page.getByLabel("Message");
  await msg.fill("hello from the ui");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator(".transcript .agent", { hasText: /mock: ?hello from the ui/ }).waitFor();
  // The agent asks; the answer goes back, and the agent reports it.
  await msg.fill("permission please");
  await page.getByRole("button", { name: "Send" }).click();
  await page.getByRole("button", { name: "Allow once" }).click();
  await page.locator(".transcript .agent", { hasText: "permission: allow-once" }).waitFor();
  // A tool call: shown, asked for, run in the cell once allowed.
  await msg.fill("run echo tool-$((20+22)) > /tmp/agent-ran");
  await page.getByRole("button", { name: "Send" }).click();
  const second = page.locator(".transcript .permission").nth(1);
  await second.waitFor();
  await second.getByRole("button", { name: "Allow once" }).click();
  await page.locator(".transcript .tool .status", { hasText: "completed" }).waitFor();
  const r = await fetch(`${st.base}/cells/${cellId}/v1/fs/file?path=/tmp/agent-ran`,
                        { headers: { Authorization: `Bearer ${st.token}` } });
  assert.equal(await r.text(), "tool-42\n");
  // Leaving the page ends the agent.
  await page.getByRole("link", { name: "Files" }).click();
  for (let i = 0; ; i++) {
    const list = (await api("GET", `/cells/${cellId}/v1/acp`)).body;
    if (!JSON.stringify(list).includes("ui-")) break;
    assert.ok(i < 200, `the agent instance outlived its page: ${JSON.stringify(list)}`);
    await sleep(50);
  }
});

// The agent page's session controls (ui/src/agent.js) with the mock agent
// (src/agent/mock.c): mode and model sent to the agent, a turn cancelled,
// and the session loaded again on a new agent instance, its history
// replayed and its settings kept.
uiTest("agent sessions: mode and model, a turn cancelled, an earlier session loaded", async () => {
  await page.goto(`${st.base}/ui/#/cells/${cellId}/agent`);
  await page.getByLabel("Agent to run").selectOption("mock");
  await page.getByRole("button", { name: "Start session" }).click();
  const started = page.locator(".transcript .info", { hasText: /^Session mock-session-[0-9a-f]+ with mock$/ });
  await started.waitFor();
  const sid = (await started.textContent()).split(" ")[1];
  const mode = page.getByLabel("Mode", { exact: true }), model = page.getByLabel("Model", { exact: true });
  assert.equal(await mode.inputValue(), "normal");
  assert.equal(await model.inputValue(), "mock");
  // Each change is sent at once; the status line says when it was taken.
  await mode.selectOption("plan");
  await page.locator("#status", { hasText: "Mode: Plan" }).waitFor();
  await model.selectOption("mock-fast");
  await page.locator("#status", { hasText: "Model: Mock Fast" }).waitFor();
  const msg = page.getByLabel("Message");
  const send = async (text) => {
    await msg.fill(text);
    await page.getByRole("button", { name: "Send" }).click();
  };
  await send("show settings");
  await page.locator(".transcript .agent", { hasText: "mode=plan model=mock-fast" }).waitFor();
  // A turn that would last a minute, cancelled from the page (by keyboard).
  const cancel = page.getByRole("button", { name: "Cancel turn" });
  // The agent's answer is shown before its turn's end arrives: the button
  // goes off with the end, not with the text.
  for (let i = 0; !(await cancel.isDisabled()); i++) {
    assert.ok(i < 400, "Cancel turn stayed enabled after the turn ended");
    await sleep(50);
  }
  await send("sleep 60");
  await page.locator(".transcript .user", { hasText: "sleep 60" }).waitFor();
  await cancel.focus();
  await page.keyboard.press("Enter");
  await page.locator(".transcript .info", { hasText: "Turn ended: cancelled" }).waitFor();
  assert.equal(await cancel.isDisabled(), true);

  // Leave (the instance ends), come back: the session is offered to load.
  await page.getByRole("link", { name: "Files" }).click();
  await page.goto(`${st.base}/ui/#/cells/${cellId}/agent`);
  const load = page.getByLabel("Session to load");
  await page.locator(`#agent-sessions-${cellId} option[value="${sid}"]`).waitFor({ state: "attached" });
  // Ids the agent does not have, or that are not its ids, at the field.
  for (const [bad, says] of [["mock-session-0000000000000000", "-32002"], ["../../etc/passwd", "not a session id"]]) {
    await load.fill(bad);
    await load.press("Enter");
    await page.locator(".field-error", { hasText: says }).waitFor();
    assert.equal(await load.getAttribute("aria-invalid"), "true");
  }
  // A failed load leaves a new session possible on the instance it started.
  assert.equal(await page.getByRole("button", { name: "Start session" }).isEnabled(), true);
  assert.equal(await page.getByLabel("Agent to run").isDisabled(), true);
  await load.fill(sid);
  await load.press("Enter");
  await page.locator(".transcript .info", { hasText: `Session ${sid} loaded with mock` }).waitFor();
  assert.equal(await load.getAttribute("aria-invalid"), null);
  // The history replayed before the answer, the settings the session kept.
  await page.locator(".transcript .user", { hasText: "show settings" }).waitFor();
  await page.locator(".transcript .agent", { hasText: "mode=plan model=mock-fast" }).waitFor();
  assert.equal(await mode.inputValue(), "plan");
  assert.equal(await model.inputValue(), "mock-fast");
  await send("recall");
  await page.locator(".transcript .agent", { hasText: /show settings.*recall/ }).waitFor();
  // One instance, this page's; it goes with the page.
  const list = JSON.stringify((await api("GET", `/cells/${cellId}/v1/acp`)).body);
  assert.equal((list.match(/ui-[a-z0-9]+/g) || []).length > 0, true, list);
  await page.getByRole("link", { name: "Files" }).click();
  for (let i = 0; ; i++) {
    const l = (await api("GET", `/cells/${cellId}/v1/acp`)).body;
    if (!JSON.stringify(l).includes("ui-")) break;
    assert.ok(i < 200, `the agent instance outlived its page: ${JSON.stringify(l)}`);
    await sleep(50);
  }
});

// The desktop tab (ui/src/desktop.js): the live view (or, on a daemon without
// /desktop/live, polled screenshots) of a 640x480 desktop in the test's cell.
uiTest("desktop: start, a window appears in the view, a click and keys reach it, stop", async () => {
  await page.goto(`${st.base}/ui/#/cells/${cellId}/desktop`);
  const stateLine = page.locator(".deskstate");
  await page.locator('.deskstate[data-state="inactive"]').waitFor();
  // A resolution the daemon refuses is shown at its field; nothing starts.
  await page.getByLabel("Width", { exact: true }).fill("99999");
  await page.getByLabel("Height", { exact: true }).fill("480");
  await page.getByRole("button", { name: "Start desktop" }).click();
  await page.locator(".field-error", { hasText: "width" }).waitFor();
  assert.equal(await page.getByLabel("Width", { exact: true }).getAttribute("aria-invalid"), "true");
  assert.equal((await api("GET", `/cells/${cellId}/v1/desktop/status`)).body.state, "inactive");
  await page.getByLabel("Width", { exact: true }).fill("640");
  await page.getByRole("button", { name: "Start desktop" }).click();
  await page.locator('.deskstate[data-state="active"]').waitFor();
  assert.match(await stateLine.textContent(), /640x480/);
  // The view: the live socket when the daemon has it, screenshots otherwise.
  const live = (await handshake(`/cells/${cellId}/v1/desktop/live`, `cell.desktop, cell.bearer.${st.token}`)).status === 101;
  const view = page.getByRole("application", { name: `Desktop of cell ${cellId}` });
  await page.locator(`canvas.deskview[data-mode="${live ? "live" : "poll"}"]`).waitFor();
  await page.waitForFunction(() => Number(document.querySelector("canvas.deskview").dataset.frames) >= 1);
  const pixel = (x, y) => page.evaluate(([px, py]) => [...document.querySelector("canvas.deskview").getContext("2d")
    .getImageData(px, py, 1, 1).data].slice(0, 3), [x, y]);
  const red = ([r, g, b]) => r > 180 && g < 80 && b < 80;
  assert.ok(!red(await pixel(150, 100)), "the empty desktop is not red at 150,100");
  assert.match(await page.locator(".deskrate").textContent(), /^(\d+ fps)?$/);
  // A window the test opens through the API appears in a later frame: a red
  // xterm that writes the line it reads to a file.
  const launched = await api("POST", `/cells/${cellId}/v1/desktop/launch`, { app: "xterm", wait: true, args: [
    "-geometry", "30x6+100+80", "-bg", "red", "-fg", "white", "-e", "sh", "-c", 'read line; echo "$line" > /tmp/ui-typed'] });
  assert.equal(launched.status, 200, JSON.stringify(launched.body));
  await page.waitForFunction(() => {
    const d = document.querySelector("canvas.deskview").getContext("2d").getImageData(150, 100, 1, 1).data;
    return d[0] > 180 && d[1] < 80 && d[2] < 80;
  });
  await page.locator(".deskrate", { hasText: /[1-9]\d* fps/ }).waitFor();
  // Click into the window through the view (the canvas is drawn 1:1 here),
  // then type: the keys go to the desktop while the view has the focus.
  const click = async (x, y) => {
    await view.scrollIntoViewIfNeeded();
    const box = await view.boundingBox();
    await page.mouse.click(box.x + (x + 0.5) * box.width / 640, box.y + (y + 0.5) * box.height / 480);
  };
  await click(150, 100);
  assert.equal(await page.evaluate(() => document.activeElement?.classList.contains("deskview")), true);
  await page.keyboard.type("hello ui");
  await page.keyboard.press("Enter");
  for (let i = 0; ; i++) {
    const r = await fetch(`${st.base}/cells/${cellId}/v1/fs/file?path=/tmp/ui-typed`, { headers: { Authorization: `Bearer ${st.token}` } });
    if (r.ok && (await r.text()) === "hello ui\n") break;
    assert.ok(i < 200, "the typed line never reached the xterm");
    await sleep(50);
  }
  await click(500, 400);
  for (let i = 0; ; i++) {
    const p = (await api("GET", `/cells/${cellId}/v1/desktop/mouse/position`)).body;
    if (p.x === 500 && p.y === 400) break;
    assert.ok(i < 200, `the pointer is at ${JSON.stringify(p)}, not 500,400`);
    await sleep(50);
  }
  // Escape gives the keyboard back to the page.
  await view.focus();
  await page.keyboard.press("Escape");
  assert.equal(await page.evaluate(() => document.activeElement?.classList.contains("deskview")), false);
  await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.classList.contains("deskview")), true, "Shift+Tab goes back into the view");
  // The socket carried no token in its URL.
  assert.deepEqual([...requests, ...sockets].filter((u) => u.includes(st.token)), []);
  if (live) assert.ok(sockets.some((u) => u.endsWith(`/cells/${cellId}/v1/desktop/live`)), sockets.join(" "));
  await page.getByRole("button", { name: "Stop desktop" }).click();
  await page.locator('.deskstate[data-state="inactive"]').waitFor();
  assert.equal(await view.isVisible(), false);
  assert.equal((await api("GET", `/cells/${cellId}/v1/desktop/status`)).body.state, "inactive");
});

// The controls under the view (ui/src/deskcontrols.js): each does what the
// daemon then reports through the API, and the lists follow the desktop.
uiTest("desktop controls: launch, the window list, focus, move and resize, open, screenshots, the clipboard, recordings", async () => {
  await page.goto(`${st.base}/ui/#/cells/${cellId}/desktop`);
  await page.locator('.deskstate[data-state="inactive"]').waitFor();
  const controls = page.locator(".deskcontrols");
  assert.equal(await controls.isVisible(), false, "the controls show before the desktop runs");
  await page.getByLabel("Width", { exact: true }).fill("640");
  await page.getByLabel("Height", { exact: true }).fill("480");
  await page.getByRole("button", { name: "Start desktop" }).click();
  await page.locator('.deskstate[data-state="active"]').waitFor();
  await controls.waitFor();
  const d = (rest) => `/cells/${cellId}/v1/desktop${rest}`;

  // Launch, from the keyboard: no app is refused at its field; then two
  // xterms with their titles (an argument with a space stays one).
  const appField = page.getByLabel("App", { exact: true });
  await appField.focus();
  await page.keyboard.press("Enter");
  await page.locator(".field-error", { hasText: "App:" }).waitFor();
  assert.equal(await appField.getAttribute("aria-invalid"), "true");
  const launch = async (title, geometry) => {
    await appField.fill("xterm");
    await page.getByLabel("Arguments (one a line)").fill(`-geometry\n${geometry}\n-title\n${title}`);
    await appField.focus();
    await page.keyboard.press("Enter");
    await page.locator(`#desk-launched-${cellId}`, { hasText: /Launched xterm: process \S+, window \d+/ }).waitFor();
    const win = (await api("GET", d("/windows"))).body.windows.find((w) => w.title === title);
    assert.ok(win, `no window titled ${title}: ${JSON.stringify((await api("GET", d("/windows"))).body)}`);
    return win;
  };
  const first = await launch("ui one", "30x5+20+20");
  const second = await launch("ui-two", "30x5+300+200");
  // The window list: both, the second focused (through the API, so the
  // focus the page then moves is known to be elsewhere).
  const winRow = (w) => page.locator(`table.deskwindows tr[data-window="${w.id}"]`);
  await winRow(first).waitFor();
  await winRow(second).waitFor();
  assert.match(await winRow(first).textContent(), /ui one/);
  assert.equal((await api("POST", d(`/windows/${second.id}/focus`))).status, 200);
  assert.equal((await api("GET", d("/windows/focused"))).body.id, second.id);
  // Focus the first with its row's button (named with its window), by keyboard.
  const focusBtn = page.getByRole("button", { name: `Focus window ui one (${first.id})` });
  await focusBtn.focus();
  await page.keyboard.press("Enter");
  for (let i = 0; ; i++) {
    const f = await api("GET", d("/windows/focused"));
    if (f.status === 200 && f.body.id === first.id) break;
    assert.ok(i < 200, `the focused window is ${JSON.stringify(f.body)}, not ${first.id}`);
    await sleep(50);
  }
  await page.locator(`table.deskwindows tr[data-window="${first.id}"][data-active="true"]`).waitFor();

  // The clipboard: written in the page, read by the API; written by the API, read in the page.
  const text = "from the page \u2713 <b>not markup</b>";
  await page.getByLabel("Clipboard text").fill(text);
  await page.getByRole("button", { name: "Write clipboard" }).click();
  for (let i = 0; ; i++) {
    const c = await api("GET", d("/clipboard"));
    if (c.status === 200 && c.body.text === text) break;
    assert.ok(i < 200, `the clipboard holds ${JSON.stringify(c.body)}`);
    await sleep(50);
  }
  assert.equal((await api("POST", d("/clipboard"), { text: "primary from the api", selection: "primary" })).status, 200);
  await page.getByLabel("Selection").selectOption("primary");
  await page.getByRole("button", { name: "Read clipboard" }).click();
  for (let i = 0; await page.getByLabel("Clipboard text").inputValue() !== "primary from the api"; i++) {
    assert.ok(i < 400, "the page never showed the primary selection");
    await sleep(50);
  }

  // Recordings: a rate the daemon refuses at its field; start, stop, the
  // file downloaded with the token in a header (an MP4), deleted.
  await page.getByLabel("Frames per second").fill("1000");
  await page.getByRole("button", { name: "Start recording" }).click();
  await page.locator(".field-error", { hasText: "fps" }).waitFor();
  assert.equal(await page.getByLabel("Frames per second").getAttribute("aria-invalid"), "true");
  assert.deepEqual((await api("GET", d("/recordings"))).body.recordings, []);
  await page.getByLabel("Frames per second").fill("10");
  await page.getByRole("button", { name: "Start recording" }).click();
  await page.locator('table.deskrecordings tr[data-status="recording"]').waitFor();
  assert.equal(await page.getByRole("button", { name: "Start recording" }).isDisabled(), true);
  const rec = (await api("GET", d("/recordings"))).body.recordings;
  assert.equal(rec.length, 1);
  // Frames, not time: stopped once ffmpeg has written some (x264 holds its
  // first ones back; the list's size is the file's only once it ends).
  for (let i = 0; ; i++) {
    const r = await api("POST", `/cells/${cellId}/v1/processes/run`, { command: "sh", args: ["-c",
      "stat -c %s /tmp/.cell-desktop/recordings/*.mp4 2>/dev/null || echo 0"] });
    if (Number(String(r.body.stdout).split(/\s/)[0]) > 0) break;
    assert.ok(i < 400, `the recording never grew: ${JSON.stringify(r.body)}`);
    await sleep(50);
  }
  await page.getByRole("button", { name: "Stop recording" }).click();
  const done = page.locator(`table.deskrecordings tr[data-recording="${rec[0].id}"][data-status="completed"]`);
  await done.waitFor();
  const name = `recording ${rec[0].fileName || rec[0].id}`;
  const before = requests.length;
  const [download] = await Promise.all([page.waitForEvent("download"),
    page.getByRole("button", { name: `Download ${name}` }).click()]);
  const file = await download.path();
  const bytes = readFileSync(file);
  assert.ok(bytes.length > 1000 && bytes.subarray(4, 8).toString() === "ftyp", `not an MP4: ${bytes.length} bytes: ${bytes.subarray(0, 64).toString("hex")}`);
  const fetched = requests.slice(before).filter((u) => u.includes("/download"));
  assert.ok(fetched.length >= 1 && fetched.every((u) => !u.includes(st.token)), fetched.join(" "));
  await page.getByRole("button", { name: `Delete ${name}` }).click();
  await done.waitFor({ state: "detached" });
  assert.deepEqual((await api("GET", d("/recordings"))).body.recordings, []);
  await page.locator("table.deskrecordings", { hasText: "No recordings." }).waitFor();

  // Move and resize the second window, chosen in the page's list; a size
  // the daemon refuses at its field.  xterm rounds its size to whole
  // character cells, so the page is checked against the API's record.
  const win = async (w) => (await api("GET", d("/windows"))).body.windows.find((x) => x.id === w.id);
  const was = await win(second);
  await page.getByLabel("Window", { exact: true }).selectOption(String(second.id));
  await page.getByLabel("Window width").fill("0");
  await page.getByLabel("Window height").fill("100");
  await page.getByRole("button", { name: "Resize window" }).click();
  await page.locator(".field-error", { hasText: '"width"' }).waitFor();
  assert.equal(await page.getByLabel("Window width").getAttribute("aria-invalid"), "true");
  assert.deepEqual(await win(second), was);
  await page.getByLabel("Window width").fill(String(was.width + 120));
  await page.getByRole("button", { name: "Resize window" }).click();
  const geo = page.locator(`#desk-geo-${cellId}`);
  await geo.filter({ hasText: /^Resized / }).waitFor();
  const resized = await win(second);
  assert.ok(resized.width > was.width, `not wider: ${JSON.stringify([was, resized])}`);
  assert.ok((await geo.textContent()).endsWith(`now at ${resized.x}, ${resized.y}, ${resized.width}x${resized.height}.`),
            `${await geo.textContent()} vs ${JSON.stringify(resized)}`);
  await page.getByLabel("X", { exact: true }).fill("40");
  await page.getByLabel("Y", { exact: true }).fill("");
  await page.getByRole("button", { name: "Move window" }).click();
  await page.locator(".field-error", { hasText: "Y: a number is required" }).waitFor();
  await page.getByLabel("Y", { exact: true }).fill("300");
  // From the keyboard: Y, the size fields, then Move.
  await page.getByLabel("Y", { exact: true }).focus();
  for (let i = 0; i < 3; i++) await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Move window");
  await page.keyboard.press("Enter");
  await geo.filter({ hasText: /^Moved / }).waitFor();
  const moved = await win(second);
  assert.ok(moved.x < resized.x && moved.y > resized.y, `not moved toward 40,300: ${JSON.stringify([resized, moved])}`);
  await page.locator(`table.deskwindows tr[data-window="${second.id}"]`, { hasText: `${moved.x}, ${moved.y}` }).waitFor();

  // Open: refusals at the field (a file the cell lacks, a leading '-'),
  // then a file of the cell handed to xdg-open as its one argument.
  const target = page.getByLabel("URL or file", { exact: true });
  await target.fill("/tmp/ui-no-such-file");
  await target.press("Enter");
  await page.locator(".field-error", { hasText: "/tmp/ui-no-such-file" }).waitFor();
  assert.equal(await target.getAttribute("aria-invalid"), "true");
  await target.fill("--help");
  await target.press("Enter");
  await page.locator(".field-error", { hasText: "must not start with '-'" }).waitFor();
  assert.equal((await api("PUT", `/cells/${cellId}/v1/fs/file?path=/tmp/ui-open.bin`, "x")).status < 300, true);
  await target.fill("/tmp/ui-open.bin");
  await target.press("Enter");
  const opened = page.locator(`#desk-opened-${cellId}`);
  await opened.filter({ hasText: /^Opened \/tmp\/ui-open\.bin: process \S+\.$/ }).waitFor();
  assert.equal(await target.getAttribute("aria-invalid"), null);
  const procId = await opened.getAttribute("data-process");
  const procs = (await api("GET", `/cells/${cellId}/v1/processes?owner=desktop`)).body.processes;
  assert.deepEqual(procs.filter((p) => p.id === procId).map((p) => [p.command, p.args]), [["xdg-open", ["/tmp/ui-open.bin"]]]);
  await api("POST", `/cells/${cellId}/v1/processes/${procId}/kill`);

  // Screenshots: a half-given region refused in the page, one outside the
  // screen refused by the daemon at its field, then a PNG of a region (its
  // size in its header) and a JPEG of the screen, saved as downloads
  // fetched with the token in the header.
  const shot = async () => {
    const at = requests.length;
    const [dl] = await Promise.all([page.waitForEvent("download"),
      page.getByRole("button", { name: "Download screenshot" }).click()]);
    const urls = requests.slice(at).filter((u) => u.includes("/screenshot"));
    assert.ok(urls.length === 1 && !urls[0].includes(st.token), urls.join(" "));
    return { name: dl.suggestedFilename(), bytes: readFileSync(await dl.path()) };
  };
  await page.getByLabel("Region x").fill("600");
  await page.getByRole("button", { name: "Download screenshot" }).click();
  await page.locator(".field-error", { hasText: "a region needs x, y, width and height" }).waitFor();
  await page.getByLabel("Region y").fill("10");
  await page.getByLabel("Region width").fill("100");
  await page.getByLabel("Region height").fill("50");
  await page.getByRole("button", { name: "Download screenshot" }).click();
  await page.locator(".field-error", { hasText: "not inside the 640x480 screen" }).waitFor();
  assert.equal(await page.getByLabel("Region x").getAttribute("aria-invalid"), "true");
  await page.getByLabel("Region x").fill("20");
  const png = await shot();
  assert.equal(png.name, `desktop-${cellId}-region.png`);
  assert.equal(png.bytes.subarray(1, 4).toString(), "PNG");
  assert.deepEqual([png.bytes.readUInt32BE(16), png.bytes.readUInt32BE(20)], [100, 50]);
  for (const f of ["Region x", "Region y", "Region width", "Region height"]) await page.getByLabel(f).fill("");
  await page.getByLabel("Format").selectOption("jpeg");
  const jpg = await shot();
  assert.equal(jpg.name, `desktop-${cellId}.jpg`);
  assert.equal(jpg.bytes.subarray(0, 2).toString("hex"), "ffd8");

  // Every control has its label (checked by name above); stopping hides them.
  await page.getByRole("button", { name: "Stop desktop" }).click();
  await page.locator('.deskstate[data-state="inactive"]').waitFor();
  assert.equal(await controls.isVisible(), false);
});

uiTest("tokens and audit: a token made in the UI works until the UI revokes it; the audit lists requests", async () => {
  await page.getByRole("link", { name: "Tokens" }).click();
  await page.getByLabel("Tenant").fill("ui-made");
  await page.getByLabel("Label").fill("from the ui");
  await page.getByRole("button", { name: "Create token" }).click();
  const secret = page.locator("#new-token");
  await secret.waitFor();
  const made = await secret.inputValue();
  assert.match(made, /^cell_[0-9a-f]{12}_[0-9a-f]{32}$/);
  const id = made.split("_")[1];
  const use = () => fetch(`${st.base}/v1/cells`, { headers: { Authorization: `Bearer ${made}` } });
  assert.equal((await use()).status, 200);
  await page.getByRole("button", { name: `Revoke ${id}` }).click();
  await page.locator(`tr[data-token="${id}"]`, { hasText: "revoked" }).waitFor();
  assert.equal((await use()).status, 401);
  // A tenant field the daemon refuses: the error at the field.
  await page.getByLabel("Tenant").fill("bad tenant/name");
  await page.getByRole("button", { name: "Create token" }).click();
  await page.locator(".field-error:not(:empty)").waitFor();
  await page.getByRole("link", { name: "Audit" }).click();
  await page.getByLabel("Kind").selectOption("request");
  await page.locator('tr[data-kind="request"]', { hasText: `DELETE /v1/tokens/${id}` }).waitFor();
});

uiTest("tenants: quotas set in the UI hold in the daemon; a bad size is shown at its field", async () => {
  await page.getByRole("link", { name: "Tenants" }).click();
  await page.locator('tr[data-tenant="default"]').waitFor();
  const name = page.getByLabel("Tenant", { exact: true });
  await name.fill("ui-quota");
  await page.getByLabel("Memory", { exact: true }).fill("lots");
  await page.getByRole("button", { name: "Save quotas" }).click();
  const memory = page.getByLabel("Memory", { exact: true });
  await page.locator(".field-error", { hasText: "maxMemory" }).waitFor();
  assert.equal(await memory.getAttribute("aria-invalid"), "true");
  await memory.fill("1G");
  await page.getByLabel("Cells", { exact: true }).fill("1");
  await page.getByRole("button", { name: "Save quotas" }).click();
  const row = page.locator('tr[data-tenant="ui-quota"]');
  await row.waitFor();
  assert.match(await row.textContent(), /0 \/ 1/);
  const t = (await api("GET", "/v1/tenants/ui-quota")).body;
  assert.equal(t.quota.maxCells, 1);
  assert.equal(t.quota.maxMemory, 1024 ** 3);
});

// The audit page's paging (ui/src/audit.js): more records than a page, paged
// through with "Load older records" to the oldest, each shown once, in the
// API's order; the kind filter in the hash; a new record added at the top
// while following; the daemon's refusal of a bad cell id at its field.
uiTest("audit: paging past a page, the kind, cell and decision filters, new records followed", async () => {
  const listed = async () => (await api("GET", `/v1/audit?kind=request&cell=${cellId}&limit=10000`)).body;
  const before = (await listed()).records.length;
  for (let i = 0; i < 120; i++) assert.equal((await api("GET", `/v1/cells/${cellId}`)).status, 200);
  // A request's record is written when libmicrohttpd reports it complete,
  // after the client has its answer (and an earlier test's long request,
  // a log follow, may complete meanwhile): wait until all 120 are in, and
  // compare the pages with what the audit holds once they are loaded.
  let all = await listed();
  for (let i = 0; all.records.length < before + 120; i++) {
    assert.ok(i < 400, `the audit has ${all.records.length - before} of the 120 requests`);
    await sleep(50);
    all = await listed();
  }
  assert.equal(all.cursor, undefined);
  const want = all.records.length;
  assert.ok(want > 120, `${want} records`);
  await page.goto(`${st.base}/ui/#/audit?kind=request&cell=${cellId}&limit=50`);
  await page.getByRole("heading", { name: "Audit" }).waitFor();
  assert.equal(await page.getByLabel("Kind").inputValue(), "request");
  assert.equal(await page.getByLabel("Cell id").inputValue(), cellId);
  const rows = page.locator("table.audit tbody tr[data-seq]");
  await page.locator("#audit-summary", { hasText: "50 records loaded" }).waitFor();
  const older = page.getByRole("button", { name: "Load older records" });
  for (let pages = 1; await older.isVisible(); pages++) {
    const summary = await page.locator("#audit-summary").textContent();
    // One more page for records that complete while the test pages.
    assert.ok(pages <= Math.ceil(want / 50) + 1, `more pages than records: page ${pages}, ${want} listed, "${summary}"`);
    const loaded = await rows.count();
    // The rows of a page are drawn before its button is enabled again: Enter
    // on a disabled button would be lost.
    for (let i = 0; await older.isDisabled(); i++) {
      assert.ok(i < 400, "Load older records stayed disabled");
      await sleep(50);
    }
    await older.focus();
    await page.keyboard.press("Enter");
    // More rows, or none older after all (a full last page still has a cursor).
    await page.waitForFunction((n) => document.querySelectorAll("table.audit tbody tr[data-seq]").length > n ||
      [...document.querySelectorAll("button")].some((b) => b.textContent === "Load older records" && b.hidden), loaded);
  }
  await page.locator("#audit-summary", { hasText: "that is all of them" }).waitFor();
  const shown = (await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.seq))));
  // Exactly the audit's records of this cell up to the newest shown, newest
  // first, each once (following may have added newer ones at the top).
  const now = (await listed()).records.map((r) => r.seq).reverse().filter((seq) => seq <= shown[0]);
  assert.ok(shown.length >= want, `${shown.length} shown of ${want}`);
  assert.deepEqual(shown, now);
  const cells = await rows.evaluateAll((trs) => [...new Set(trs.map((tr) => tr.children[2].textContent + tr.dataset.kind))]);
  assert.deepEqual(cells, [`${cellId}request`]);
  // A new record of the filter appears at the top without a reload.
  await api("GET", `/v1/cells/${cellId}`);
  await page.waitForFunction((n) => document.querySelectorAll("table.audit tbody tr[data-seq]").length === n + 1, shown.length);
  assert.ok(Number(await rows.first().getAttribute("data-seq")) > shown[0]);
  // The kind filter: the table and the hash follow it.
  await page.getByLabel("Kind").selectOption("cell");
  await page.locator('table.audit tbody tr[data-kind="cell"]').first().waitFor();
  assert.deepEqual([...new Set(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.kind)))], ["cell"]);
  assert.match(page.url(), /kind=cell/);
  // Network records of the cell, filtered by the daemon to its denials (the
  // egress test's denied connection): the rows are exactly the API's
  // ?decision=deny list, the filter is in the hash, and a link to it opens
  // with it chosen.
  await page.getByLabel("Kind").selectOption("net");
  await page.getByLabel("Decision").selectOption("deny");
  await page.waitForFunction(() => /decision=deny/.test(location.hash));
  const denied = (await api("GET", `/v1/audit?kind=net&cell=${cellId}&decision=deny&limit=100`)).body.records;
  assert.ok(denied.length > 0 && denied.every((r) => r.verdict === "deny"), JSON.stringify(denied.slice(0, 2)));
  await page.locator('table.audit tbody tr[data-verdict="deny"]').first().waitFor();
  const deniedSeqs = denied.map((r) => r.seq).reverse();
  await page.waitForFunction((n) => document.querySelectorAll("table.audit tbody tr[data-seq]").length >= n, deniedSeqs.length);
  assert.deepEqual((await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.seq)))).slice(-deniedSeqs.length),
    deniedSeqs);
  assert.deepEqual([...new Set(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.verdict)))], ["deny"]);
  await page.goto(`${st.base}/ui/#/audit?kind=net&cell=${cellId}&decision=allow&limit=50`);
  assert.equal(await page.getByLabel("Decision").inputValue(), "allow");
  await page.waitForFunction(() => /records? loaded/.test(document.getElementById("audit-summary")?.textContent) &&
    [...document.querySelectorAll("table.audit tbody tr[data-seq]")].every((tr) => tr.dataset.verdict === "allow"));
  await page.getByLabel("Decision").selectOption("");
  await page.waitForFunction(() => !/decision=/.test(location.hash));
  // A cell id the daemon refuses (too long): its message at the field.
  const cell = page.getByLabel("Cell id");
  await cell.fill("x".repeat(80));
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.locator(".field-error", { hasText: /"cell"/ }).waitFor();
  assert.equal(await cell.getAttribute("aria-invalid"), "true");
  await cell.fill("");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.locator('form[aria-label="Audit filters"] [aria-invalid]').waitFor({ state: "detached" });
  await page.locator("#audit-summary", { hasText: /[1-9]\d* records? loaded/ }).waitFor();
});

// The lanes page (ui/src/lanes.js).
uiTest("lanes: create, a bad size at its field, in use refuses delete and export with the daemon's detail, export, delete", async () => {
  await page.goto(`${st.base}/ui/#/lanes`);
  await page.getByRole("heading", { name: "Lanes" }).waitFor();
  const name = page.getByLabel("Name", { exact: true }), size = page.getByLabel("Size (optional)", { exact: true });
  await name.fill("ui-lane");
  await size.fill("lots");
  await page.getByRole("button", { name: "Create lane" }).click();
  await page.locator(".field-error:not(:empty)").first().waitFor();
  assert.equal(await size.getAttribute("aria-invalid"), "true");
  assert.equal((await api("GET", "/v1/lanes/ui-lane")).status, 404, "a refused form made a lane");
  await size.fill("32M");
  await page.getByRole("button", { name: "Create lane" }).click();
  const row = page.locator('tr[data-lane="ui-lane"]');
  await row.waitFor();
  assert.match(await row.textContent(), /32\.0 MiB/);
  assert.match(await row.textContent(), /free/);
  // The same name again: the daemon's 409, nothing changed.
  await name.fill("ui-lane");
  await page.getByRole("button", { name: "Create lane" }).click();
  await page.locator(".field-error", { hasText: /ui-lane/ }).waitFor();
  // A cell on it: the lane is in use; delete and export are refused with
  // the daemon's words (the cell named), and the lane stays.
  await page.getByRole("button", { name: "Start a cell on ui-lane" }).click();
  await row.locator(".state-running", { hasText: "in use" }).waitFor();
  const onLane = (await api("GET", "/v1/cells")).body.cells.find((c) => c.lane === "ui-lane");
  assert.ok(onLane, "no cell on the lane");
  await page.getByRole("button", { name: "Delete ui-lane" }).click();
  await page.locator("#lanes-alert", { hasText: `used by cell ${onLane.id}` }).waitFor();
  assert.equal((await api("GET", "/v1/lanes/ui-lane")).status, 200);
  await page.getByRole("button", { name: "Export ui-lane" }).click();
  await page.locator("#lanes-alert", { hasText: /^Export ui-lane: .*ui-lane/ }).waitFor();
  assert.equal((await api("DELETE", `/v1/cells/${onLane.id}`)).status, 204);
  await row.locator(".state-stopped", { hasText: "free" }).waitFor();
  // Export: a tar, fetched with the token in a header.
  const [download] = await Promise.all([page.waitForEvent("download"),
    page.getByRole("button", { name: "Export ui-lane" }).click()]);
  assert.equal(download.suggestedFilename(), "ui-lane.tar");
  const tar = readFileSync(await download.path());
  assert.ok(tar.length >= 1024 && tar.length % 512 === 0, `${tar.length} bytes`);
  assert.equal(tar.subarray(257, 262).toString(), "ustar");
  await page.getByRole("button", { name: "Delete ui-lane" }).click();
  await row.waitFor({ state: "detached" });
  assert.equal((await api("GET", "/v1/lanes/ui-lane")).status, 404);
  assert.deepEqual([...requests, ...sockets].filter((u) => u.includes(st.token)), []);
});

// The images page (ui/src/images.js): a build's progress (the host image's
// build is quick and offline), an unknown image's build refused at the
// field, an import of a one-file OCI image made by tests/integration/ocibuild.py,
// a refused name, delete refused while a lane uses it, then delete.
uiTest("images: a build's progress live, a bad build at the field, import, delete refused in use, delete", async () => {
  await page.goto(`${st.base}/ui/#/images`);
  await page.locator('tr[data-image="host"]').waitFor();
  await page.getByRole("button", { name: "Build host" }).click();
  await page.locator('.buildstate[data-state="done"]', { hasText: "Built host: ready." }).waitFor();
  assert.match(await page.getByLabel("Build progress").textContent(), /generated from this host/);
  const bname = page.getByLabel("Image to build");
  await bname.fill("no-such-image");
  await bname.press("Enter");
  await page.locator('.buildstate[data-state="failed"]').waitFor();
  await page.locator(".field-error", { hasText: "known images" }).waitFor();
  assert.equal(await bname.getAttribute("aria-invalid"), "true");
  // An image tar, and one the daemon refuses by its name and by its bytes.
  const tarPath = path.join(st.dir, "ui-img.tar");
  execFileSync("python3", ["-c", `import sys, ocibuild
t, _ = ocibuild.oci_archive([ocibuild.tar_bytes([("hello", "file", b"hi\\n", 0o644)])], {"Env": ["PATH=/bin"]})
open(sys.argv[1], "wb").write(t)`, tarPath], { cwd: path.resolve(HERE, "../integration") });
  const iname = page.getByLabel("Name", { exact: true }), ifile = page.getByLabel(/Image tar/);
  await iname.fill("Bad Name");
  await ifile.setInputFiles(tarPath);
  const impErrors = page.locator('form[aria-labelledby="img-imp-h"] .field-error:not(:empty)');
  await page.getByRole("button", { name: "Import image" }).click();
  await impErrors.first().waitFor();
  assert.equal(await iname.getAttribute("aria-invalid"), "true");
  await iname.fill("ui-junk");
  await ifile.setInputFiles({ name: "junk.tar", mimeType: "application/x-tar", buffer: Buffer.alloc(2048, 7) });
  await page.getByRole("button", { name: "Import image" }).click();
  await impErrors.first().waitFor();
  assert.equal(await iname.getAttribute("aria-invalid"), null, await impErrors.first().textContent());
  assert.equal((await api("GET", "/v1/images/ui-junk")).status, 404);
  await iname.fill("ui-img");
  await ifile.setInputFiles(tarPath);
  await page.getByRole("button", { name: "Import image" }).click();
  const row = page.locator('tr[data-image="ui-img"]');
  await row.waitFor();
  assert.match(await row.textContent(), /import.*ready/);
  // In use by a lane: delete is refused with the daemon's detail.
  assert.equal((await api("POST", "/v1/lanes", { name: "on-ui-img", image: "ui-img", size: "16M" })).status, 201);
  await row.locator("td", { hasText: "on-ui-img" }).waitFor();
  await page.getByRole("button", { name: "Delete ui-img" }).click();
  await page.locator("#images-alert", { hasText: /on-ui-img/ }).waitFor();
  assert.equal((await api("GET", "/v1/images/ui-img")).status, 200);
  assert.equal((await api("DELETE", "/v1/lanes/on-ui-img")).status, 204);
  await page.getByRole("button", { name: "Delete ui-img" }).click();
  await row.waitFor({ state: "detached" });
  assert.equal((await api("GET", "/v1/images/ui-img")).status, 404);
});

// Installing from the agent page (ui/src/agent.js): the SSE form of the
// install, npm's lines shown while it runs (codex from the fake registry,
// whose postinstall waits for the test to open its gate), the outcome, and
// a refusal (amp has no ACP adapter: 501).
uiTest("agent install: npm's progress shown live, then the outcome; mock; amp's 501 at the field", async () => {
  await page.goto(`${st.base}/ui/#/cells/${cellId}/agent`);
  const agent = page.getByLabel("Agent to run");
  await agent.selectOption("mock");
  const [req] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith(`/cells/${cellId}/v1/agents/mock/install`)),
    page.getByRole("button", { name: "Install agent" }).click()]);
  assert.equal(req.method(), "POST");
  assert.match(req.headers().accept, /text\/event-stream/);
  await page.locator('.installstate[data-state="done"]', { hasText: /^mock (installed|was already installed)/ }).waitFor();
  let list = (await api("GET", `/cells/${cellId}/v1/agents`)).body.agents;
  assert.equal(list.find((a) => a.id === "mock").installed, true);
  // codex: npm runs in an install cell against the fake registry and stops
  // in the native package's postinstall; what it printed so far is shown
  // while the install is still running.
  await agent.selectOption("codex");
  await page.getByRole("button", { name: "Install agent" }).click();
  const log = page.getByLabel("Install progress");
  await log.filter({ hasText: /\S/ }).waitFor();
  assert.equal(await page.locator(".installstate").getAttribute("data-state"), "running");
  // One install at a time from the page: the button waits for this one.
  assert.equal(await page.getByRole("button", { name: "Install agent" }).isDisabled(), true);
  registry.stdin.write("open\n");
  await page.locator('.installstate[data-state="done"]', { hasText: "codex installed (npm 0.16.0)" }).waitFor();
  assert.match(await log.textContent(), /codex-acp/);
  list = (await api("GET", `/cells/${cellId}/v1/agents`)).body.agents;
  assert.equal(list.find((a) => a.id === "codex").installed, true);
  // pi: the fake registry has none of its packages, so npm fails; the
  // stream's result is the 502 problem, shown at the field with npm's stderr.
  await agent.selectOption("pi");
  await page.getByRole("button", { name: "Install agent" }).click();
  await page.locator('.installstate[data-state="failed"]', { hasText: "Installing pi failed." }).waitFor();
  await page.locator(".field-error", { hasText: /\(502\)/ }).waitFor();
  assert.match(await log.textContent(), /404|E404|Not found/i);
  await agent.selectOption("amp");
  await page.getByRole("button", { name: "Install agent" }).click();
  await page.locator('.installstate[data-state="failed"]').waitFor();
  await page.locator(".field-error", { hasText: /\(501\)/ }).waitFor();
  assert.equal(await agent.getAttribute("aria-invalid"), "true");
  assert.equal(await page.getByRole("button", { name: "Install agent" }).isEnabled(), true);
});

// The shared daemon's budget holds the install cell's 1.5 GiB, so a second,
// small one refuses it: a 1 GiB host budget (256 MiB reserved) and a 512 MiB
// cell.  The install's stream ends with the 409 budget_exceeded, shown at
// the field with what the budget has left; nothing is installed.
uiTest("agent install: a 409 budget_exceeded shown at the field, on a daemon with a small budget", async () => {
  const small = { dir: mkdtempSync(path.join(os.tmpdir(), "cell-ui-budget-")), port: await freePort() };
  small.base = `http://127.0.0.1:${small.port}`;
  try {
    await serve(small, ["--agent-registry", st.registryUrl, "--limit", "host.memory=1G", "--limit", "reserve.memory=256M"]);
    const call = async (method, p, body) => {
      const r = await fetch(small.base + p, { method, headers: { Authorization: `Bearer ${small.token}`,
        "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
      return { status: r.status, body: r.status === 204 ? null : await r.json() };
    };
    const made = await call("POST", "/v1/cells", { resources: { memory: "512M" } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const cid = made.body.id;
    await page.goto(`${small.base}/ui/`);
    await page.getByLabel("API token").fill(small.token);
    await page.getByLabel("API token").press("Enter");
    await page.getByRole("heading", { name: "Cells" }).waitFor();
    await page.goto(`${small.base}/ui/#/cells/${cid}/agent`);
    const agent = page.getByLabel("Agent to run");
    await agent.selectOption("codex");
    await page.getByRole("button", { name: "Install agent" }).click();
    await page.locator('.installstate[data-state="failed"]', { hasText: "Installing codex failed." }).waitFor();
    const err = page.locator(".field-error", { hasText: "budget exceeded" });
    await err.waitFor();
    assert.match(await err.textContent(), /\(409\)\. The install needs 1\.5 GiB of memory; the host budget has 256\.0 MiB free of 768\.0 MiB/);
    assert.equal(await agent.getAttribute("aria-invalid"), "true");
    assert.equal(await page.getByRole("button", { name: "Install agent" }).isEnabled(), true);
    // Nothing ran: codex is not installed, no install cell is reserved.
    const agents = (await call("GET", `/cells/${cid}/v1/agents`)).body.agents;
    assert.equal(agents.find((a) => a.id === "codex").installed, false);
    assert.deepEqual((await call("GET", "/v1/limits")).body.agents.installing, { memory: 0, pids: 0 });
    assert.deepEqual([...requests].filter((u) => u.includes(small.token)), []);
    assert.ok([204, 200].includes((await call("DELETE", `/v1/cells/${cid}`)).status));
  } finally {
    if (small.daemon && small.daemon.exitCode === null) {
      small.daemon.kill("SIGTERM");
      await new Promise((r) => small.daemon.once("exit", r));
    }
    rmSync(small.dir, { recursive: true, force: true });
    // Back to the shared daemon's origin, where this tab holds its token.
    await page.goto(`${st.base}/ui/`);
  }
  assert.equal(small.daemon.exitCode, 0, small.stderr);
  assert.doesNotMatch(small.stderr, /Sanitizer|runtime error/);
});

uiTest("another tenant's token sees none of the cell, its lanes or its audit; an admin's build and import are 403", async () => {
  const other = await api("POST", "/v1/tokens", { tenant: "ui-other", label: "ui-test" });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  const ctx = await browser.newContext();
  const p2 = await ctx.newPage();
  p2.setDefaultTimeout(BOUND);
  try {
    await p2.goto(`${st.base}/ui/`);
    await p2.getByLabel("API token").fill(other.body.token);
    await p2.getByLabel("API token").press("Enter");
    await p2.getByText("No cells yet: create one below.").waitFor();
    assert.equal(await p2.locator(`tr[data-cell="${cellId}"]`).count(), 0);
    // The cell's pages by its id: the daemon's 404, nothing of the cell.
    await p2.goto(`${st.base}/ui/#/cells/${cellId}/files?path=/tmp`);
    await p2.getByText(/not found/).waitFor();
    assert.equal(await p2.locator("tr[data-entry]").count(), 0);
    // Lanes, audit, images: none of the other tenant's; an admin's build
    // and import are the daemon's 403, shown at the field.
    assert.equal((await api("POST", "/v1/lanes", { name: "admins-lane", size: "16M" })).status, 201);
    await p2.goto(`${st.base}/ui/#/lanes`);
    await p2.getByText("No lanes yet: create one below.").waitFor();
    assert.equal(await p2.locator("tr[data-lane]").count(), 0);
    await p2.goto(`${st.base}/ui/#/audit?cell=${cellId}&limit=500`);
    await p2.locator("#audit-summary", { hasText: /^0 records loaded/ }).waitFor();
    assert.equal(await p2.locator("table.audit tbody tr[data-seq]").count(), 0);
    await p2.goto(`${st.base}/ui/#/images`);
    await p2.locator('tr[data-image="host"]').waitFor();
    const build = p2.getByLabel("Image to build");
    await build.fill("host");
    await build.press("Enter");
    await p2.locator('.buildstate[data-state="failed"]').waitFor();
    assert.equal(await build.getAttribute("aria-invalid"), "true");
    assert.match(await p2.locator(".field-error:not(:empty)").first().textContent(), /admin/i);
    await p2.getByLabel("Name", { exact: true }).fill("tenant-img");
    await p2.getByLabel(/Image tar/).setInputFiles({ name: "x.tar", mimeType: "application/x-tar", buffer: Buffer.alloc(1024) });
    await p2.getByRole("button", { name: "Import image" }).click();
    await p2.locator('form[aria-labelledby="img-imp-h"] .field-error', { hasText: /admin/i }).waitFor();
    assert.equal((await api("GET", "/v1/images/tenant-img")).status, 404);
    assert.equal((await api("DELETE", "/v1/lanes/admins-lane")).status, 204);
    // The tabs are separate sessions: the first still holds the admin token.
    assert.equal(await page.evaluate(() => sessionStorage.getItem("cell.token")), st.token);
  } finally {
    await ctx.close();
  }
});

uiTest("stop and start from the list", async () => {
  await page.goto(`${st.base}/ui/#/cells`);
  const row = page.locator(`tr[data-cell="${cellId}"]`);
  await row.getByRole("button", { name: "Stop" }).click();
  await row.locator(".state-stopped").waitFor();
  assert.equal((await api("GET", `/v1/cells/${cellId}`)).body.state, "stopped");
  await row.getByRole("button", { name: "Start" }).click();
  await row.locator(".state-running").waitFor();
});

uiTest("delete: the cell goes from the list and from the daemon; no script was blocked", async () => {
  await page.goto(`${st.base}/ui/#/cells`);
  const row = page.locator(`tr[data-cell="${cellId}"]`);
  await row.waitFor();
  await row.getByRole("button", { name: "Delete" }).click();
  await row.waitFor({ state: "detached" });
  assert.equal((await api("GET", `/v1/cells/${cellId}`)).status, 404);
  // xterm.js's <style> elements are refused by style-src (their rules are
  // applied through CSSOM instead: ui/src/terminal.js); nothing else may be.
  const csp = cspViolations.filter((v) => !/(Refused to apply|Applying) inline style/.test(v));
  assert.deepEqual(csp, []);
});

test("the daemon stops cleanly and reported no sanitizer error", async () => {
  st.daemon.kill("SIGTERM");
  const [code] = await new Promise((r) => st.daemon.once("exit", (...a) => r(a)));
  assert.doesNotMatch(st.stderr, /AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer/, st.stderr);
  assert.equal(code, 0, st.stderr);
});
