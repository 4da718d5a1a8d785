// The provider against a real `cell serve`: the SDK conformance suite's
// harness (tests/sdk/harness.mjs) starts it and gives its token.
import assert from "node:assert/strict";
import { test, before, after } from "node:test";
import { SandboxAgent } from "sandbox-agent";
import WebSocket from "ws";
import { control, daemonState, startDaemon, stopDaemon, waitFor, within } from "../../tests/sdk/harness.mjs";
import { cell, CellProblemError } from "../src/index.mjs";

const url = () => `http://127.0.0.1:${daemonState.port}`;
// SandboxAgent.start's health wait has no deadline of its own: each start
// here gives it one (a signal), so a daemon that stops answering fails the
// test instead of holding the run.
const bounded = () => AbortSignal.timeout(60000);
const start = (provider, extra = {}) => SandboxAgent.start({ sandbox: provider, signal: bounded(), ...extra });

// `promise` rejects, within 10 s, with the daemon's problem of `status`.
async function failsFast(promise, status, what) {
  await within(assert.rejects(promise, (e) => {
    assert.ok(e instanceof CellProblemError, `${what}: ${e}`);
    assert.equal(e.status, status, `${what}: ${e.message}`);
    assert.equal(e.problem.status, status, `${what}: the problem's status`);
    assert.match(e.type, /^urn:sandbox-agent:error:/, `${what}: the problem's type`);
    return true;
  }), 10000, what);
}
before(startDaemon);
after(() => stopDaemon());

test("start, run a process, destroy", async () => {
  const sdk = await SandboxAgent.start({ sandbox: cell({ url: url(), token: daemonState.token }) });
  assert.match(sdk.sandboxId, /^cell\/[0-9a-f]+$/);
  const r = await sdk.runProcess({ command: "sh", args: ["-c", "echo hi"] });
  assert.equal(r.exitCode, 0);
  assert.match(r.stdout, /hi/);
  await sdk.destroySandbox();
});

test("wrong token rejects at create with the problem", async () => {
  await assert.rejects(
    SandboxAgent.start({ sandbox: cell({ url: url(), token: "wrong" }) }),
    (e) => e instanceof CellProblemError && e.status === 401,
  );
});

test("unknown id rejects at reconnect with 404", async () => {
  await assert.rejects(
    SandboxAgent.start({ sandbox: cell({ url: url(), token: daemonState.token }), sandboxId: "cell/ffffffffffff" }),
    (e) => e instanceof CellProblemError && e.status === 404,
  );
});

test("a refused create names the field", async () => {
  await assert.rejects(
    SandboxAgent.start({ sandbox: cell({ url: url(), token: daemonState.token, hostname: "-bad-" }) }),
    (e) => e instanceof CellProblemError && e.status === 400 && /hostname/.test(e.message),
  );
});

test("pause stops, reconnect starts again, destroy twice is not an error", async () => {
  const provider = cell({ url: url(), token: daemonState.token });
  const sdk = await SandboxAgent.start({ sandbox: provider });
  const id = sdk.sandboxId;
  // Each client is disposed: its health wait runs in the background from
  // start and, with the cell paused under it, would poll for ever (the SDK
  // sets no deadline), keeping this file from ending (it held CI's ASan run
  // to its deadline).
  await sdk.dispose();
  await provider.pause(id.slice("cell/".length));
  const again = await SandboxAgent.start({ sandbox: provider, sandboxId: id });
  const r = await again.runProcess({ command: "true" });
  assert.equal(r.exitCode, 0);
  await again.dispose();
  await provider.destroy(id.slice("cell/".length));
  await provider.destroy(id.slice("cell/".length));
});

test("a session on the mock agent through the provider: create, prompt, the agent's answer", async () => {
  const sdk = await start(cell({ url: url(), token: daemonState.token }));
  try {
    await within(sdk.installAgent("mock"), 30000, "installAgent mock");
    const session = await within(sdk.createSession({ agent: "mock" }), 30000, "createSession");
    assert.match(session.agentSessionId, /^mock-session-/);
    const chunks = [];
    const off = session.onEvent((ev) => {
      const u = ev.payload?.params?.update;
      if (ev.payload?.method === "session/update" && u?.sessionUpdate === "agent_message_chunk") chunks.push(u.content.text);
    });
    const res = await within(session.prompt([{ type: "text", text: "hello provider" }]), 30000, "prompt");
    assert.equal(res.stopReason, "end_turn");
    await waitFor(() => chunks.join("") === "mock:hello provider", { what: `the reply in ${JSON.stringify(chunks)}` });
    off();
    await within(sdk.destroySession(session.id), 10000, "destroySession");
  } finally {
    await sdk.destroySandbox();
  }
});

test("the terminal through the provider: ready, input, output, exit (ws as the WebSocket)", async () => {
  const sdk = await start(cell({ url: url(), token: daemonState.token }));
  try {
    const sh = await sdk.createProcess({ command: "sh", tty: true, interactive: true });
    const term = sdk.connectProcessTerminal(sh.id, { WebSocket });
    let output = "";
    const errors = [];
    term.onData((bytes) => { output += Buffer.from(bytes).toString("utf8"); });
    term.onError((e) => errors.push(e));
    const ready = new Promise((resolve) => term.onReady(resolve));
    const exit = new Promise((resolve) => term.onExit(resolve));
    try {
      assert.equal((await within(ready, 10000, "the ready frame")).processId, sh.id);
      term.sendInput("echo T$((6*7))T\n");
      await waitFor(() => output.includes("T42T"), { what: `the output in ${JSON.stringify(output)}` });
      term.sendInput("exit 5\n");
      assert.equal((await within(exit, 10000, "the exit frame")).exitCode, 5);
      await within(term.closed, 10000, "the server closing the socket");
      assert.deepEqual(errors, []);
    } finally {
      term.close();
    }
  } finally {
    await sdk.destroySandbox();
  }
});

// Node 20 has no global WebSocket: what the SDK does without one (sdk/README.md).
test("without a WebSocket implementation the terminal throws at once, naming it", { skip: typeof globalThis.WebSocket !== "undefined" && "this node has a global WebSocket" }, async () => {
  const sdk = await start(cell({ url: url(), token: daemonState.token }));
  try {
    const sh = await sdk.createProcess({ command: "sh", tty: true, interactive: true });
    assert.throws(() => sdk.connectProcessTerminal(sh.id), /WebSocket API is not available; provide a WebSocket implementation/);
  } finally {
    await sdk.destroySandbox();
  }
});

// ---- each provider path with a wrong token or an unknown cell: the problem, at once ----

const UNKNOWN = "ffffffffffff";

test("create: a wrong token is 401, a refused body 400 naming the field", async () => {
  await failsFast(cell({ url: url(), token: "wrong" }).create(), 401, "create with a wrong token");
  const bad = cell({ url: url(), token: daemonState.token, resources: { memory: "lots" } }).create();
  await failsFast(bad, 400, "create with a bad memory");
  await assert.rejects(bad, /memory/);
});

test("reconnect: an unknown cell is 404, a wrong token 401 (also through SandboxAgent.start)", async () => {
  const provider = cell({ url: url(), token: daemonState.token });
  await failsFast(provider.reconnect(UNKNOWN), 404, "reconnect an unknown cell");
  await failsFast(provider.reconnect("../../v1/tokens"), 404, "reconnect a path as the id");
  const id = await provider.create();
  try {
    await failsFast(cell({ url: url(), token: "wrong" }).reconnect(id), 401, "reconnect with a wrong token");
    await failsFast(start(cell({ url: url(), token: "wrong" }), { sandboxId: `cell/${id}` }), 401,
                    "SandboxAgent.start with a wrong token and a sandboxId");
  } finally {
    await provider.destroy(id);
  }
});

test("getUrl: an unknown cell is 404, a wrong token 401, another tenant's cell 404", async () => {
  const provider = cell({ url: url(), token: daemonState.token });
  await failsFast(provider.getUrl(UNKNOWN), 404, "getUrl of an unknown cell");
  const id = await provider.create();
  try {
    assert.equal(await provider.getUrl(id), `${url()}/cells/${id}`);
    await failsFast(cell({ url: url(), token: "wrong" }).getUrl(id), 401, "getUrl with a wrong token");
    const t = await control("POST", "/v1/tokens", { tenant: "provider-other" });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    await failsFast(cell({ url: url(), token: t.body.token }).getUrl(id), 404, "getUrl of another tenant's cell");
  } finally {
    await provider.destroy(id);
  }
});

test("destroy and kill: a wrong token is 401 and the cell stays; an unknown cell is already gone", async () => {
  const provider = cell({ url: url(), token: daemonState.token });
  const id = await provider.create();
  try {
    await failsFast(cell({ url: url(), token: "wrong" }).destroy(id), 401, "destroy with a wrong token");
    await failsFast(cell({ url: url(), token: "wrong" }).kill(id), 401, "kill with a wrong token");
    assert.equal((await control("GET", `/v1/cells/${id}`)).status, 200, "the cell is still there");
  } finally {
    await provider.destroy(id);
  }
  await within(provider.destroy(UNKNOWN), 10000, "destroy of an unknown cell resolves");
  await within(provider.kill(id), 10000, "kill of a deleted cell resolves");
});

test("pause: an unknown cell is 404, a wrong token 401", async () => {
  const provider = cell({ url: url(), token: daemonState.token });
  await failsFast(provider.pause(UNKNOWN), 404, "pause an unknown cell");
  const id = await provider.create();
  try {
    await failsFast(cell({ url: url(), token: "wrong" }).pause(id), 401, "pause with a wrong token");
    assert.equal((await control("GET", `/v1/cells/${id}`)).body.state, "running");
  } finally {
    await provider.destroy(id);
  }
});

test("a client whose cell is deleted under it: its calls reject with the 404 instead of waiting", async () => {
  const provider = cell({ url: url(), token: daemonState.token });
  const id = await provider.create();
  const base = await provider.getUrl(id);
  await provider.destroy(id);
  // A client whose health wait starts after the delete (as one connected
  // just before it would): the SDK would poll for ever; the provider's
  // fetch ends the wait with the problem.
  // What the SDK alone does (given a deadline here): it waits, the 404 retried.
  const plain = await SandboxAgent.connect({ baseUrl: base, token: daemonState.token, waitForHealth: { timeoutMs: 1500 } });
  await assert.rejects(plain.listProcesses(), /Timed out waiting for sandbox-agent health/);
  await plain.dispose();
  const sdk = await SandboxAgent.connect({ baseUrl: base, token: daemonState.token, fetch: await provider.getFetch(id) });
  try {
    await failsFast(sdk.runProcess({ command: "true" }), 404, "runProcess in a deleted cell");
    await failsFast(sdk.listProcesses(), 404, "a second call");
  } finally {
    await sdk.dispose();
  }
  // The same with a token revoked under the client: 401.
  const t = await control("POST", "/v1/tokens", { tenant: "provider-revoked" });
  const mine = cell({ url: url(), token: t.body.token });
  const id2 = await mine.create();
  try {
    assert.equal((await control("DELETE", `/v1/tokens/${t.body.id}`)).status, 204);
    const c2 = await SandboxAgent.connect({ baseUrl: `${url()}/cells/${id2}`, token: t.body.token,
                                            fetch: await mine.getFetch(id2) });
    try {
      await failsFast(c2.listProcesses(), 401, "a call with the revoked token");
    } finally {
      await c2.dispose();
    }
  } finally {
    await control("DELETE", `/v1/cells/${id2}`);
  }
});
