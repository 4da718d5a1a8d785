// hello.mjs: create a cell, run a process in it, delete the cell.
//   CELL_URL=http://127.0.0.1:7070 CELL_TOKEN=... node sdk/examples/hello.mjs
import { SandboxAgent } from "sandbox-agent";
import { cell } from "../src/index.mjs";

const sdk = await SandboxAgent.start({
  sandbox: cell({ url: process.env.CELL_URL ?? "http://127.0.0.1:7070", token: process.env.CELL_TOKEN, ttl: 600 }),
});
try {
  console.log("sandbox", sdk.sandboxId);
  const r = await sdk.runProcess({ command: "sh", args: ["-c", "echo hello from $(hostname)"] });
  console.log(r.exitCode, r.stdout.trim());
} finally {
  await sdk.destroySandbox();
}
