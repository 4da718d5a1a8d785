// The provider against a real `cell serve`: the SDK conformance suite's
// harness (tests/sdk/harness.mjs) starts it and gives its token.
import assert from "node:assert/strict";
import { test, before, after } from "node:test";
import { SandboxAgent } from "sandbox-agent";
import { daemonState, startDaemon, stopDaemon } from "../../tests/sdk/harness.mjs";
import { cell, CellProblemError } from "../src/index.mjs";

const url = () => `http://127.0.0.1:${daemonState.port}`;
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
