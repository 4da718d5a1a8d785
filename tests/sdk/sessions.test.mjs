// sessions.test.mjs: sessions on the mock agent through the sandbox-agent
// 0.4.2 SDK, unmodified, against a cell of `cell serve` (harness.mjs): set
// model, mode and thought level and see them take effect; resume a session
// on a new instance after the first was disposed, both the SDK's way (a new
// agent session with the history replayed into the next prompt) and ACP's
// (session/load on the agent's own saved history, replayed as
// session/update notifications in order); the ACP proxy's Last-Event-ID
// replay after such a resume; bad session/load and set_* input; an agent
// that exits or prints garbage in the middle of a prompt surfacing as an
// error; a session staying in its cell (another tenant cannot load it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SandboxAgent, InMemorySessionPersistDriver } from "sandbox-agent";
import { AcpHttpClient } from "acp-http-client";
import { control, createCell, daemonState, startDaemon, stopDaemon, waitFor, within, connectSdk } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const LAUNCHER = "/root/.local/share/sandbox-agent/bin/agent_processes/mock-acp";
const MOCK_BIN = "/root/.local/share/sandbox-agent/bin/cell-mock-agent";
let cellId = "";
let otherCell = "";
let baseUrl = "";
let sdk = null;

before(async () => {
  await startDaemon();
  cellId = await createCell({});
  baseUrl = `http://127.0.0.1:${daemonState.port}/cells/${cellId}`;
  sdk = await connectSdk({ baseUrl, token: daemonState.token });
  await sdk.installAgent("mock");
});

after(async () => {
  if (sdk) await sdk.dispose();
  await stopDaemon([cellId, otherCell]);
});

// The session/update payloads a session receives, in arrival order.
function collectUpdates(session) {
  const updates = [];
  const off = session.onEvent((ev) => {
    const p = ev.payload;
    if (p?.method === "session/update") updates.push(p.params.update);
  });
  return { updates, off };
}

const texts = (updates, kind = "agent_message_chunk") =>
  updates.filter((u) => u.sessionUpdate === kind).map((u) => u.content.text);

// createSession and one prompt in a child process (agents_probe.mjs): the
// SDK also raises a failed POST as an unhandled rejection.
function probe(promptText) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(HERE, "agents_probe.mjs"), baseUrl, daemonState.token, "mock", promptText],
             { timeout: 60000 },
             (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout.trim().split("\n").pop()))));
  });
}

// One raw JSON-RPC request through the ACP proxy; the agent's answer.
let rawId = 100;
async function rpc(server, method, params, cell = cellId, token = daemonState.token) {
  const r = await control("POST", `/cells/${cell}/v1/acp/${server}?agent=mock`,
                          { jsonrpc: "2.0", id: ++rawId, method, params }, token);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

// The SSE messages of an ACP instance ([id, message] pairs) after
// `lastId`, read until `until(message)` holds (bounded by `ms`).
async function sseEvents(server, lastId, until, ms = 10000) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  const headers = { Authorization: `Bearer ${daemonState.token}`, Accept: "text/event-stream" };
  if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
  const out = [];
  try {
    const res = await fetch(`${baseUrl}/v1/acp/${server}`, { headers, signal: ctl.signal });
    assert.equal(res.status, 200);
    const dec = new TextDecoder();
    let buf = "";
    for await (const part of res.body) {
      buf += dec.decode(part, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) !== -1) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const id = /^id: (\d+)$/m.exec(block);
        const data = /^data: (.*)$/m.exec(block);
        if (!id || !data) continue;
        const msg = JSON.parse(data[1]);
        out.push([Number(id[1]), msg]);
        if (until(msg)) return out;
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") throw err;
  } finally {
    clearTimeout(timer);
    ctl.abort();
  }
  throw new Error(`the stream of ${server} ended before the expected message (${out.length} read)`);
}

// How many of the cell's processes run the mock.
async function mockProcs() {
  const script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done";
  const r = await sdk.runProcess({ command: "sh", args: ["-c", script] });
  return r.stdout.split("\n").filter((l) => l.includes("cell-mock-agent")).length;
}

test("model, mode and thought level: set through the SDK, they take effect in the agent", async () => {
  const session = await within(sdk.createSession({ agent: "mock", mode: "plan", model: "mock-fast" }), 30000,
                               "createSession with mode and model");
  const { updates, off } = collectUpdates(session);
  await session.setThoughtLevel("high");
  await session.prompt([{ type: "text", text: "settings" }]);
  await waitFor(() => texts(updates).length >= 1, { what: "the settings reply" });
  assert.deepEqual(texts(updates), ["mode=plan model=mock-fast thought_level=high"]);
  // The SDK's view follows the agent's answers.
  assert.equal((await session.getModes()).currentModeId, "plan");
  const opts = Object.fromEntries((await session.getConfigOptions()).map((o) => [o.id, o.currentValue]));
  assert.deepEqual(opts, { model: "mock-fast", mode: "plan", thought_level: "high" });
  // A change is announced as ACP specifies: config_option_update (and
  // current_mode_update for the mode).
  // (The stream may still bring createSession's own updates: those say "plan".)
  await session.setMode("normal");
  const modeIs = (u, m) => u.sessionUpdate === "config_option_update" &&
    u.configOptions.find((o) => o.id === "mode").currentValue === m;
  await waitFor(() => updates.some((u) => modeIs(u, "normal")), { what: "config_option_update to normal" });
  const i = updates.findIndex((u) => u.sessionUpdate === "current_mode_update" && u.currentModeId === "normal");
  assert.ok(i >= 0 && i < updates.findIndex((u) => modeIs(u, "normal")), JSON.stringify(updates));
  assert.ok(updates.some((u) => u.sessionUpdate === "config_option_update" &&
    u.configOptions.find((o) => o.id === "thought_level").currentValue === "high"), JSON.stringify(updates));
  // Values the agent does not offer are refused before they are sent.
  await assert.rejects(session.setModel("gpt-5"), /gpt-5/);
  off();
  await sdk.destroySession(session.id);
});

test("bad session/load and set_* input: JSON-RPC -32602 naming the field, unknown sessions -32002", async () => {
  const server = `raw-${process.pid}`;
  assert.equal((await rpc(server, "initialize", { protocolVersion: 1 })).result.agentCapabilities.loadSession, true);
  const sid = (await rpc(server, "session/new", { cwd: "/", mcpServers: [] })).result.sessionId;
  assert.match(sid, /^mock-session-[0-9a-f]{16}$/);
  const cases = [
    ["session/set_mode", { sessionId: sid, modeId: 7 }, -32602, /^modeId: /],
    ["session/set_mode", { sessionId: sid, modeId: "yolo" }, -32602, /^modeId: unknown mode yolo/],
    // Quoted up to 80 bytes, never half a character (jansson refuses that).
    ["session/set_mode", { sessionId: sid, modeId: "\u00e9".repeat(100) }, -32602, /^modeId: unknown mode \u00e9{40}$/],
    ["session/set_model", { sessionId: sid }, -32602, /^modelId: /],
    ["session/set_config_option", { sessionId: sid, configId: "model", value: ["x"] }, -32602, /^value: /],
    ["session/set_config_option", { sessionId: sid, configId: "temperature", value: "1" }, -32602, /^configId: /],
    ["session/set_config_option", { sessionId: 5, configId: "model", value: "mock" }, -32602, /^sessionId: /],
    ["session/set_mode", { sessionId: "mock-session-0000000000000000", modeId: "plan" }, -32002, /^sessionId: /],
    ["session/prompt", { sessionId: sid, prompt: "hello" }, -32602, /^prompt: /],
    ["session/prompt", "not an object", -32602, /^params: /],
    // The id names the agent's file: a path is refused, not followed.
    ["session/load", { sessionId: "../../../etc/passwd", cwd: "/", mcpServers: [] }, -32602, /^sessionId: /],
    ["session/load", { sessionId: "x".repeat(100000), cwd: "/", mcpServers: [] }, -32602, /^sessionId: /],
    ["session/load", { sessionId: "mock-session-0000000000000000", cwd: "/", mcpServers: [] }, -32002, /^sessionId: /],
    ["session/load", { sessionId: sid, mcpServers: [] }, -32602, /^cwd: /],
    ["session/load", { sessionId: sid, cwd: "/", mcpServers: {} }, -32602, /^mcpServers: /],
  ];
  for (const [method, params, code, message] of cases) {
    const b = await rpc(server, method, params);
    assert.equal(b.error?.code, code, `${method} ${JSON.stringify(params).slice(0, 80)}: ${JSON.stringify(b)}`);
    assert.match(b.error.message, message);
  }
  // Saved state is the cell's and read like input: a file that is not
  // JSON, one naming a model the agent does not offer, one over the size
  // cap, and a FIFO (which must not block the agent) are all refused.
  const dir = "/root/.local/state/cell-mock-agent";
  const enc = new TextEncoder();
  const bad = { "1111111111111111": "{not json", "2222222222222222": JSON.stringify(
    { version: 1, model: "evil", mode: "plan", thought_level: "low", alwaysAllowed: true, history: [] }),
                "3333333333333333": `{"history":["${"x".repeat(3 << 20)}"]}` };
  for (const [hex, text] of Object.entries(bad))
    await sdk.writeFsFile({ path: `${dir}/mock-session-${hex}.json` }, enc.encode(text));
  const fifo = await sdk.runProcess({ command: "mkfifo", args: [`${dir}/mock-session-4444444444444444.json`] });
  assert.equal(fifo.exitCode, 0, JSON.stringify(fifo));
  for (const hex of [...Object.keys(bad), "4444444444444444"]) {
    const b = await rpc(server, "session/load", { sessionId: `mock-session-${hex}`, cwd: "/", mcpServers: [] });
    assert.equal(b.error?.code, -32002, `${hex}: ${JSON.stringify(b)}`);
  }
  // The session is unharmed.
  assert.equal((await rpc(server, "session/prompt", { sessionId: sid, prompt: [{ type: "text", text: "settings" }] }))
    .result.stopReason, "end_turn");
  assert.equal((await control("DELETE", `/cells/${cellId}/v1/acp/${server}`)).status, 204);
});

test("resume on a new instance: the SDK's replay, ACP session/load's replay in order, Last-Event-ID after it", async () => {
  const persist = new InMemorySessionPersistDriver();
  const first = await connectSdk({ baseUrl, token: daemonState.token, persist });
  const before0 = await mockProcs();
  const session = await within(first.createSession({ agent: "mock" }), 30000, "createSession");
  await first.setSessionMode(session.id, "plan");
  // Words in a context block (not the prompt's last) are not commands: the
  // SDK's replay quotes earlier prompts in one.
  await session.prompt([{ type: "text", text: "quoted: exit now" }, { type: "text", text: "alpha beta" }]);
  await session.prompt([{ type: "text", text: "gamma delta" }]);
  const oldAgentSession = session.agentSessionId;
  await first.dispose();
  await waitFor(async () => (await mockProcs()) === before0, { what: "the first instance's agent to be gone" });

  // The SDK's resume: a new agent session on a new instance, the history
  // handed to the agent with the next prompt.
  const second = await connectSdk({ baseUrl, token: daemonState.token, persist });
  try {
    const resumed = await within(second.resumeSession(session.id), 30000, "resumeSession");
    assert.notEqual(resumed.agentSessionId, oldAgentSession);
    const { updates, off } = collectUpdates(resumed);
    await resumed.prompt([{ type: "text", text: "recall" }]);
    await waitFor(() => texts(updates).length >= 1, { what: "the recall reply" });
    const seen = texts(updates).join("");
    assert.match(seen, /^Previous session history is replayed below/);
    const a = seen.indexOf("alpha beta"), g = seen.indexOf("gamma delta");
    assert.ok(a > 0 && g > a, `history order in ${seen.slice(0, 400)}`);
    off();
  } finally {
    await second.dispose();
  }

  // ACP's resume: session/load of the old agent session on yet another
  // instance; the agent reads the history it saved in the cell's HOME.
  const server = `load-${process.pid}`;
  const got = [];
  const acp = new AcpHttpClient({
    baseUrl, token: daemonState.token,
    transport: { path: `/v1/acp/${server}`, bootstrapQuery: { agent: "mock" } },
    client: { sessionUpdate: async (n) => { got.push(n.update); }, requestPermission: async () => ({ outcome: { outcome: "cancelled" } }) },
  });
  try {
    const init = await within(acp.initialize({ protocolVersion: 1, clientInfo: { name: "t", version: "1" } }), 30000, "initialize");
    assert.equal(init.agentCapabilities.loadSession, true);
    const loaded = await within(acp.loadSession({ sessionId: oldAgentSession, cwd: "/", mcpServers: [] }), 30000, "loadSession");
    assert.equal(loaded.modes.currentModeId, "plan");
    await waitFor(() => got.length >= 4, { what: "four replayed messages" });
    assert.deepEqual(got.map((u) => [u.sessionUpdate, u.content.text]), [
      ["user_message_chunk", "quoted: exit now\nalpha beta"], ["agent_message_chunk", "mock:alpha beta"],
      ["user_message_chunk", "gamma delta"], ["agent_message_chunk", "mock:gamma delta"],
    ]);
    // The loaded session goes on where it was.
    got.length = 0;
    assert.equal((await acp.prompt({ sessionId: oldAgentSession, prompt: [{ type: "text", text: "recall" }] })).stopReason, "end_turn");
    await waitFor(() => got.length >= 3, { what: "the recall reply" });
    assert.deepEqual(got.map((u) => u.content.text), ["quoted: exit now\nalpha beta", "gamma delta", "recall"]);

    // The proxy's ring after the resume: everything in order, and after a
    // Last-Event-ID exactly the later messages.
    const isEnd = (m) => m.result?.stopReason === "end_turn";
    const all = await sseEvents(server, null, isEnd);
    const ids = all.map(([id]) => id);
    assert.deepEqual(ids, [...ids].sort((x, y) => x - y));
    const replayed = all.filter(([, m]) => m.params?.update?.sessionUpdate === "user_message_chunk");
    assert.deepEqual(replayed.map(([, m]) => m.params.update.content.text), ["quoted: exit now\nalpha beta", "gamma delta"]);
    const cut = replayed[1][0];
    const later = await sseEvents(server, cut, isEnd);
    assert.deepEqual(later.map(([id]) => id), ids.filter((id) => id > cut));
  } finally {
    await acp.disconnect();
  }
  assert.ok((await control("GET", `/cells/${cellId}/v1/acp`)).body.servers.every((s) => s.serverId !== server));
});

// The daemon answers the pending prompt's POST with 500 at once; the SDK
// (0.4.2) raises that from its transport and leaves its prompt() promise
// unsettled, so the probe reports the transport error (error: null means
// it came, not the probe's 8 s bound).
test("an agent that exits mid-prompt, or prints garbage and exits: an error, not a hang", async () => {
  const r = await probe("please exit now");
  assert.equal(r.created, true, JSON.stringify(r));
  assert.equal(r.error, null, JSON.stringify(r));
  assert.equal(r.prompted, false, JSON.stringify(r));
  assert.ok(r.transportErrors.length >= 1, JSON.stringify(r));
  assert.deepEqual(r.transportErrors[0], { status: 500, type: "urn:sandbox-agent:error:agent_process_exited", exitCode: 3 });

  // A scripted agent (the launcher replaced through the fs API, as the
  // SDK's own tests do): answers initialize and session/new, then answers
  // the prompt with a line that is not JSON and exits.
  const enc = new TextEncoder();
  const script = [
    "#!/bin/sh",
    "id() { printf '%s\\n' \"$1\" | sed -n 's/.*\"id\":\\([0-9][0-9]*\\).*/\\1/p'; }",
    "read -r l; printf '{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"protocolVersion\":1,\"agentCapabilities\":{},\"authMethods\":[]}}\\n' \"$(id \"$l\")\"",
    "read -r l; printf '{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"sessionId\":\"scripted\"}}\\n' \"$(id \"$l\")\"",
    "read -r l; echo 'this is no JSON-RPC'; echo 'scripted agent gives up' >&2; exit 9",
    "",
  ].join("\n");
  await sdk.writeFsFile({ path: LAUNCHER }, enc.encode(script));
  let g;
  try {
    g = await probe("hello");
  } finally {
    await sdk.writeFsFile({ path: LAUNCHER }, enc.encode(`#!/bin/sh\nexec ${MOCK_BIN} "$@"\n`));
  }
  assert.equal(g.created, true, JSON.stringify(g));
  assert.equal(g.error, null, JSON.stringify(g));
  assert.equal(g.prompted, false, JSON.stringify(g));
  assert.deepEqual(g.transportErrors[0], { status: 500, type: "urn:sandbox-agent:error:agent_process_exited", exitCode: 9 });
});

test("a session stays in its cell: another tenant's cell cannot load it, nor reach the instance", async () => {
  const server = `own-${process.pid}`;
  await rpc(server, "initialize", { protocolVersion: 1 });
  const sid = (await rpc(server, "session/new", { cwd: "/", mcpServers: [] })).result.sessionId;
  await rpc(server, "session/prompt", { sessionId: sid, prompt: [{ type: "text", text: "secret plans" }] });
  const tok = await control("POST", "/v1/tokens", { tenant: "sessions-other", label: "other" });
  assert.equal(tok.status, 201, JSON.stringify(tok.body));
  otherCell = await createCell({}, tok.body.token);
  // The other tenant's own mock knows nothing of the session ...
  const b = await rpc(`theirs-${process.pid}`, "session/load", { sessionId: sid, cwd: "/", mcpServers: [] },
                      otherCell, tok.body.token);
  assert.equal(b.error?.code, -32002, JSON.stringify(b));
  // ... and the instance holding it is not theirs to post to or stream.
  const post = await control("POST", `/cells/${cellId}/v1/acp/${server}`,
                             { jsonrpc: "2.0", id: 1, method: "session/load", params: { sessionId: sid, cwd: "/", mcpServers: [] } },
                             tok.body.token);
  assert.equal(post.status, 404, JSON.stringify(post.body));
  assert.equal((await control("GET", `/cells/${cellId}/v1/acp/${server}`, undefined, tok.body.token)).status, 404);
  assert.equal((await control("DELETE", `/cells/${cellId}/v1/acp/${server}`)).status, 204);
});
