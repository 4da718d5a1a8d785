// harness.mjs: what the SDK suites (*.test.mjs) share: a `cell serve` of
// their own (CELL_BIN, default ../../build/cell relative to this file) on a
// free port with a temporary state directory, its admin token, calls to its
// control plane, and small async helpers.  node --test runs each test file
// in its own process, so each file gets its own daemon.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SandboxAgent, SandboxAgentError } from "sandbox-agent";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CELL_BIN = process.env.CELL_BIN || path.resolve(HERE, "../../build/cell");

// The running daemon: set by startDaemon(); port and token may also be set
// by a suite that talks to a reference server instead.
export const daemonState = { daemon: null, stderr: "", stateDir: null, keepState: false, port: 0, token: "", stopping: false };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `promise`, or a rejection naming `what` after `ms`; the timer never
// outlives the race (a pending timer would keep the test file running).
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
export const b64 = (s) => Buffer.from(s).toString("base64");
export const unb64 = (s) => Buffer.from(s, "base64");

export async function waitFor(pred, { timeout = 10000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(interval);
  }
}

// A control-plane call with the daemon's token (or `token`).
export async function control(method, urlPath, body, token = daemonState.token) {
  const res = await fetch(`http://127.0.0.1:${daemonState.port}${urlPath}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// Assert that `promise` rejects with the SDK's SandboxAgentError of `status`.
export async function rejectsWith(promise, status, what) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof SandboxAgentError, `${what}: expected SandboxAgentError, got ${err}`);
    assert.equal(err.status, status, `${what}: status ${err.status} (${JSON.stringify(err.problem)})`);
    assert.equal(err.problem?.status, status, `${what}: problem.status`);
    assert.equal(typeof err.problem?.title, "string", `${what}: problem.title`);
    return true;
  });
}

// Start `cell serve` and wait until it answers; fills daemonState.
// stateDir: an existing state directory to serve (one with a built image),
// kept by stopDaemon; by default a new temporary one, removed by it.
export async function startDaemon({ stateDir = null } = {}) {
  assert.ok(existsSync(CELL_BIN), `no cell binary at ${CELL_BIN} (set CELL_BIN)`);
  const st = daemonState;
  st.keepState = Boolean(stateDir);
  st.stateDir = stateDir || mkdtempSync(path.join(os.tmpdir(), "cell-sdk-"));
  // --init: a new state directory; --no-config: not the host's /etc/cell/cell.conf.
  // Port 0: the daemon binds a free port itself and prints it, so no other
  // process can take it between a pick and the bind (a free-port probe did,
  // under load: "Address already in use").
  st.port = 0;
  const daemon = spawn(CELL_BIN, ["--state", st.stateDir, "serve", "--init", "--no-config",
                                  "--listen", "127.0.0.1:0", "--socket", ""], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  st.daemon = daemon;
  let stdout = "";
  daemon.stdout.on("data", (d) => {
    stdout += d.toString();
    const m = !st.port && /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stdout);
    if (m) st.port = Number(m[1]);
  });
  daemon.stderr.on("data", (d) => { st.stderr += d.toString(); });
  daemon.exitedPromise = new Promise((resolve) => daemon.once("exit", (code, sig) => {
    // A daemon that dies under a test (a sanitizer abort) is reported at
    // once, with what it printed: the SDK's calls would only see a refused
    // connection, and CI's log is cut long before the suite ends.
    if (!st.stopping) process.stderr.write(`cell serve died (exit ${code}, signal ${sig}); its stderr:\n${st.stderr}\n`);
    resolve({ code, sig });
  }));
  await waitFor(async () => {
    if (daemon.exitCode !== null) throw new Error(`cell serve exited early: ${st.stderr}`);
    if (!st.port) return false;
    try {
      return (await fetch(`http://127.0.0.1:${st.port}/v1/health`)).ok;
    } catch {
      return false;
    }
  }, { timeout: 20000, what: "cell serve to answer /v1/health" });
  st.token = readFileSync(path.join(st.stateDir, "admin.token"), "utf8").trim();
  return st;
}

// SandboxAgent.connect with a bound on its health wait: the SDK's default
// waits for ever, so a daemon that died would hang the suite until CI's
// deadline instead of failing the test.
export function connectSdk(options) {
  return SandboxAgent.connect({ waitForHealth: { timeoutMs: 30000 }, ...options });
}

// A new cell (POST /v1/cells with `body`); its id.
export async function createCell(body = {}, token = daemonState.token) {
  const created = await control("POST", "/v1/cells", body, token);
  assert.equal(created.status, 201, `POST /v1/cells: ${JSON.stringify(created.body)}`);
  assert.ok(created.body.id, "the new cell has an id");
  return created.body.id;
}

// Delete `cellIds`, stop the daemon (SIGTERM, SIGKILL after 20 s), remove its
// state, and fail on a sanitizer report or an unclean exit.
export async function stopDaemon(cellIds = []) {
  const st = daemonState;
  const daemon = st.daemon;
  if (daemon) {
    for (const id of cellIds) if (id) await control("DELETE", `/v1/cells/${id}`).catch(() => {});
    if (daemon.exitCode === null && daemon.signalCode === null) {
      st.stopping = true;
      daemon.kill("SIGTERM");
      const timer = setTimeout(() => daemon.kill("SIGKILL"), 20000);
      await daemon.exitedPromise;
      clearTimeout(timer);
    }
  }
  if (st.stateDir && !st.keepState) rmSync(st.stateDir, { recursive: true, force: true });
  if (!daemon) return;
  assert.ok(!/AddressSanitizer|LeakSanitizer|runtime error/.test(st.stderr),
            `sanitizer report in the daemon's stderr:\n${st.stderr}`);
  assert.equal(daemon.exitCode, 0, `cell serve exit status after SIGTERM (signal ${daemon.signalCode}); stderr:\n${st.stderr}`);
}
