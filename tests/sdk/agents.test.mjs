// agents.test.mjs: the sandbox-agent 0.4.2 SDK's agent methods, unmodified,
// against a cell of `cell serve` (harness.mjs starts its own daemon):
// listAgents/getAgent/installAgent, createSession on the mock agent (which
// runs inside the cell), prompts streaming chunks in order, permission
// requests answered (reject, allow-always: not asked again), destroy and
// dispose (model/mode and resume: sessions.test.mjs), an agent
// that exits or prints garbage (its launcher replaced through the SDK's fs
// API), and another tenant's token or an unknown cell failing fast.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SandboxAgent } from "sandbox-agent";
import { control, createCell, daemonState, rejectsWith, startDaemon, stopDaemon, within, waitFor, connectSdk } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const LAUNCHER = "/root/.local/share/sandbox-agent/bin/agent_processes/mock-acp";
const MOCK_BIN = "/root/.local/share/sandbox-agent/bin/cell-mock-agent";
let cellId = "";
let baseUrl = "";
let sdk = null;

// createSession in a child process (agents_probe.mjs): see there why.
function probe(url, token, agent = "mock") {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(HERE, "agents_probe.mjs"), url, token, agent], { timeout: 60000 },
             (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout.trim().split("\n").pop()))));
  });
}

before(async () => {
  await startDaemon();
  cellId = await createCell({});
  baseUrl = `http://127.0.0.1:${daemonState.port}/cells/${cellId}`;
  sdk = await connectSdk({ baseUrl, token: daemonState.token });
});

after(async () => {
  if (sdk) await sdk.dispose();
  await stopDaemon([cellId]);
});

// The text of a session's agent_message_chunk updates, in arrival order.
function collectChunks(session) {
  const chunks = [];
  const off = session.onEvent((ev) => {
    const p = ev.payload;
    if (p?.method === "session/update" && p.params?.update?.sessionUpdate === "agent_message_chunk")
      chunks.push(p.params.update.content.text);
  });
  return { chunks, off };
}

test("listAgents, getAgent, installAgent (mock) and the real agents' honest refusal", async () => {
  const list = await sdk.listAgents();
  assert.deepEqual(list.agents.map((a) => a.id), ["claude", "codex", "opencode", "amp", "pi", "cursor", "mock"]);
  for (const a of list.agents) {
    assert.equal(typeof a.installed, "boolean");
    assert.equal(typeof a.credentialsAvailable, "boolean");
    assert.equal(a.capabilities.sharedProcess, false);
  }
  const withConfig = await sdk.getAgent("mock", { config: true });
  assert.deepEqual(withConfig.configOptions.map((o) => o.id), ["model", "mode", "thought_level"]);
  const inst = await sdk.installAgent("mock");
  assert.equal(inst.artifacts[0].path, LAUNCHER);
  assert.equal(inst.artifacts[0].kind, "agent_process");
  assert.equal((await sdk.getAgent("mock")).installed, true);
  assert.equal((await sdk.installAgent("mock")).already_installed, true);
  // amp has no ACP adapter on npm (real installs: tests/integration/test_agent_install.py)
  await rejectsWith(sdk.installAgent("amp"), 501, "installing amp");
  await rejectsWith(sdk.getAgent("nope"), 400, "unknown agent");
});

test("createSession on the mock, prompt, chunks in order, destroy", async () => {
  const session = await within(sdk.createSession({ agent: "mock" }), 30000, "createSession");
  assert.match(session.agentSessionId, /^mock-session-/);
  const { chunks, off } = collectChunks(session);
  const res = await within(session.prompt([{ type: "text", text: "one two three four five" }]), 30000, "prompt");
  assert.equal(res.stopReason, "end_turn");
  await waitFor(() => chunks.length >= 6, { what: "six chunks" });
  assert.equal(chunks.join(""), "mock:one two three four five");
  off();
  // The agent runs in the cell with the cell's working directory.
  const pwd = collectChunks(session);
  await session.prompt([{ type: "text", text: "pwd" }]);
  await waitFor(() => pwd.chunks.length >= 1, { what: "pwd chunk" });
  assert.equal(pwd.chunks[0], "/");
  pwd.off();
  await sdk.destroySession(session.id);
});

test("permission requests: reject, then allow-always", async () => {
  const session = await sdk.createSession({ agent: "mock" });
  const asked = [];
  const replies = ["reject", "always"];
  session.onPermissionRequest((req) => {
    asked.push(req);
    void session.respondPermission(req.id, replies[asked.length - 1]);
  });
  const { chunks, off } = collectChunks(session);
  await within(session.prompt([{ type: "text", text: "permission please" }]), 30000, "first prompt");
  await waitFor(() => chunks.length >= 1, { what: "reject outcome" });
  assert.equal(chunks[0], "permission: reject-once");
  await within(session.prompt([{ type: "text", text: "permission again" }]), 30000, "second prompt");
  await waitFor(() => chunks.length >= 2, { what: "allow outcome" });
  assert.equal(chunks[1], "permission: allow-always");
  assert.equal(asked.length, 2);
  assert.ok(asked[0].availableReplies.includes("always"));
  // Allowed always: the next tool call in this session is not asked again.
  await within(session.prompt([{ type: "text", text: "permission once more" }]), 30000, "third prompt");
  await waitFor(() => chunks.length >= 3, { what: "remembered outcome" });
  assert.equal(chunks[2], "permission: allow-always (remembered)");
  assert.equal(asked.length, 2);
  off();
  await sdk.destroySession(session.id);
});

test("an agent that prints garbage and exits: the launcher replaced through the fs API", async () => {
  const enc = new TextEncoder();
  await sdk.writeFsFile({ path: LAUNCHER }, enc.encode("#!/bin/sh\nread line\necho 'not json at all'\necho dying >&2\nexit 7\n"));
  let r;
  try {
    r = await probe(baseUrl, daemonState.token);
  } finally {
    // Back to the real mock for the tests after this one.
    await sdk.writeFsFile({ path: LAUNCHER }, enc.encode(`#!/bin/sh\nexec ${MOCK_BIN} "$@"\n`));
  }
  assert.equal(r.created, false, JSON.stringify(r));
  assert.ok(r.error, "createSession failed");
  for (const e of r.transportErrors) {
    assert.equal(e.status, 500, JSON.stringify(r));
    assert.equal(e.type, "urn:sandbox-agent:error:agent_process_exited");
  }
  // The mock works again once the launcher is back.
  assert.equal((await probe(baseUrl, daemonState.token)).created, true);
});

// Command lines of the cell's processes running the mock (its /proc).
async function mockProcs() {
  const script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done";
  const r = await sdk.runProcess({ command: "sh", args: ["-c", script] });
  return r.stdout.split("\n").filter((l) => l.includes("cell-mock-agent")).length;
}

test("dispose ends the instance (DELETE): its agent is gone from the cell", async () => {
  const before = await mockProcs();
  const own = await connectSdk({ baseUrl, token: daemonState.token });
  const session = await own.createSession({ agent: "mock" });
  assert.equal(await mockProcs(), before + 1);
  const listed = (await control("GET", `/cells/${cellId}/v1/acp`)).body.servers.length;
  await own.destroySession(session.id);
  await own.dispose();
  assert.equal((await control("GET", `/cells/${cellId}/v1/acp`)).body.servers.length, listed - 1);
  await waitFor(async () => (await mockProcs()) === before, { what: "the disposed agent to be gone", timeout: 10000 });
});

test("another tenant's token and an unknown cell fail fast", async () => {
  const tok = await control("POST", "/v1/tokens", { tenant: "agents-other", label: "other" });
  assert.equal(tok.status, 201, JSON.stringify(tok.body));
  const other = await SandboxAgent.connect({ baseUrl, token: tok.body.token, skipHealthCheck: true });
  await rejectsWith(other.listAgents(), 404, "another tenant's listAgents");
  await rejectsWith(other.installAgent("mock"), 404, "another tenant's installAgent");
  await other.dispose();
  const r = await probe(baseUrl, tok.body.token);
  assert.equal(r.created, false, JSON.stringify(r));
  for (const e of r.transportErrors) assert.equal(e.status, 404, JSON.stringify(r));
  const servers = await control("GET", `/cells/${cellId}/v1/acp`);
  assert.ok(servers.body.servers.every((s) => !s.serverId.includes("other")));
  const wrong = await SandboxAgent.connect({ baseUrl, token: "not-a-token", skipHealthCheck: true });
  await rejectsWith(wrong.listAgents(), 401, "wrong token");
  await wrong.dispose();
  const unknown = await SandboxAgent.connect({ baseUrl: `http://127.0.0.1:${daemonState.port}/cells/nosuchcell`,
                                              token: daemonState.token, skipHealthCheck: true });
  await rejectsWith(unknown.listAgents(), 404, "unknown cell");
  await unknown.dispose();
});
