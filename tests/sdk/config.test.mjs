// config.test.mjs: the sandbox-agent 0.4.2 SDK's MCP and skills config
// methods (getMcpConfig, setMcpConfig, deleteMcpConfig, getSkillsConfig,
// setSkillsConfig, deleteSkillsConfig), unmodified, against a cell of
// `cell serve` (harness.mjs starts its own daemon), and the files they leave
// inside the cell.  Another tenant's token and an unknown cell fail fast.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { SandboxAgent } from "sandbox-agent";
import { control, createCell, daemonState, rejectsWith, startDaemon, stopDaemon, connectSdk } from "./harness.mjs";

let cellId = "";
let baseUrl = "";
let sdk = null;

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

async function cat(path) {
  const r = await sdk.runProcess({ command: "cat", args: [path] });
  assert.equal(r.exitCode, 0, `cat ${path}: ${r.stderr}`);
  return r.stdout;
}

test("MCP config: set, get, replace, delete", async () => {
  const q = { directory: "/root/proj", mcpName: "everything" };
  await rejectsWith(sdk.getMcpConfig(q), 404, "get before set");
  assert.equal(await sdk.setMcpConfig(q, { type: "stdio", command: "npx", args: ["-y", "srv"], env: { K: "V" } }),
               undefined);
  assert.deepEqual(await sdk.getMcpConfig(q), { type: "local", command: "npx", args: ["-y", "srv"], env: { K: "V" } });
  await sdk.setMcpConfig({ ...q, mcpName: "remote" }, { type: "http", url: "http://127.0.0.1:9/mcp",
                                                        headers: { Authorization: "Bearer x" } });
  assert.deepEqual(await sdk.getMcpConfig({ ...q, mcpName: "remote" }),
                   { type: "remote", url: "http://127.0.0.1:9/mcp", headers: { Authorization: "Bearer x" } });
  await sdk.setMcpConfig(q, { type: "local", command: "node" });
  assert.deepEqual(await sdk.getMcpConfig(q), { type: "local", command: "node", args: [] });
  const file = JSON.parse(await cat("/root/proj/.sandbox-agent/config/mcp.json"));
  assert.deepEqual(Object.keys(file), ["everything", "remote"]);
  await sdk.deleteMcpConfig(q);
  await sdk.deleteMcpConfig(q);
  await rejectsWith(sdk.getMcpConfig(q), 404, "get after delete");
  const err = await sdk.getMcpConfig(q).catch((e) => e);
  assert.equal(err.problem.type, "urn:sandbox-agent:error:session_not_found");
  assert.equal(err.problem.detail, "session not found: mcp:everything");
});

test("skills config: set, get, delete", async () => {
  const q = { directory: "proj2", skillName: "mine" };
  const cfg = { sources: [{ type: "local", source: "/root/skills", skills: ["a", "b"] },
                          { type: "github", source: "rivet-dev/skills", ref: "main", subpath: "x" }] };
  await rejectsWith(sdk.getSkillsConfig(q), 404, "get before set");
  await sdk.setSkillsConfig(q, cfg);
  assert.deepEqual(await sdk.getSkillsConfig(q), cfg);
  const file = JSON.parse(await cat("/root/proj2/.sandbox-agent/config/skills.json"));
  assert.deepEqual(file, { mine: cfg });
  await sdk.deleteSkillsConfig(q);
  await rejectsWith(sdk.getSkillsConfig(q), 404, "get after delete");
});

test("bad input is refused with the SDK's errors", async () => {
  await rejectsWith(sdk.setMcpConfig({ directory: "/w", mcpName: "a/b" }, { type: "local", command: "x" }), 400,
                    "a name with a slash");
  await rejectsWith(sdk.setMcpConfig({ directory: "/w", mcpName: ".." }, { type: "local", command: "x" }), 400,
                    "a name '..'");
  await rejectsWith(sdk.setMcpConfig({ directory: "/w", mcpName: "a" }, { type: "weird", command: "x" }), 422,
                    "an unknown type");
  await rejectsWith(sdk.setMcpConfig({ directory: "/w", mcpName: "a" }, { type: "local" }), 422, "no command");
  await rejectsWith(sdk.setSkillsConfig({ directory: "/w", skillName: "a" }, { sources: {} }), 422, "sources not a list");
  await rejectsWith(sdk.getMcpConfig({ directory: "", mcpName: "a" }), 400, "an empty directory");
});

test("another tenant's token and an unknown cell fail fast", async () => {
  const tok = await control("POST", "/v1/tokens", { tenant: "sdk-other", label: "sdk-other" });
  assert.equal(tok.status, 201, JSON.stringify(tok.body));
  const other = await SandboxAgent.connect({ baseUrl, token: tok.body.token, skipHealthCheck: true });
  const unknown = await SandboxAgent.connect({ baseUrl: `http://127.0.0.1:${daemonState.port}/cells/c-nope`,
                                               token: daemonState.token, skipHealthCheck: true });
  try {
    await sdk.setMcpConfig({ directory: "/root/t", mcpName: "mine" }, { type: "local", command: "secret" });
    for (const client of [other, unknown]) {
      await rejectsWith(client.getMcpConfig({ directory: "/root/t", mcpName: "mine" }), 404, "get");
      await rejectsWith(client.setMcpConfig({ directory: "/root/t", mcpName: "mine" }, { type: "local", command: "y" }),
                        404, "set");
      await rejectsWith(client.deleteSkillsConfig({ directory: "/root/t", skillName: "mine" }), 404, "delete");
    }
    assert.deepEqual(await sdk.getMcpConfig({ directory: "/root/t", mcpName: "mine" }),
                     { type: "local", command: "secret", args: [] });
  } finally {
    await other.dispose();
    await unknown.dispose();
  }
});
