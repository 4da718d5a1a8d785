// hello.mjs: create a cell, run a process in it, talk to the mock agent in
// it, delete the cell.
//   CELL_URL=http://127.0.0.1:7070 CELL_TOKEN=... node sdk/examples/hello.mjs
import { SandboxAgent } from "sandbox-agent";
import { cell } from "../src/index.mjs";

const sdk = await SandboxAgent.start({
  sandbox: cell({ url: process.env.CELL_URL ?? "http://127.0.0.1:7070", token: process.env.CELL_TOKEN, ttl: 600 }),
  // SandboxAgent.start sets no deadline on its health wait: give it one.
  signal: AbortSignal.timeout(60000),
});
try {
  console.log("sandbox", sdk.sandboxId);
  const r = await sdk.runProcess({ command: "sh", args: ["-c", "echo hello from $(hostname)"] });
  console.log(r.exitCode, r.stdout.trim());

  // A session on cell's mock agent (it answers "mock:" and the prompt).
  await sdk.installAgent("mock");
  const session = await sdk.createSession({ agent: "mock" });
  let reply = "";
  session.onEvent((ev) => {
    const u = ev.payload?.params?.update;
    if (u?.sessionUpdate === "agent_message_chunk") reply += u.content.text;
  });
  const res = await session.prompt([{ type: "text", text: "hello agent" }]);
  // The last chunks may land just after the prompt's answer.
  for (let i = 0; i < 50 && reply !== "mock:hello agent"; i++) await new Promise((r) => setTimeout(r, 100));
  console.log(res.stopReason, reply);
} finally {
  await sdk.destroySandbox();
}
