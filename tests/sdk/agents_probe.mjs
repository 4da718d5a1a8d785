// agents_probe.mjs: one SDK createSession (and, if it works, a prompt) in a
// process of its own, for agents.test.mjs's failure cases.  The SDK's HTTP
// transport also reports a failed POST as an unhandled rejection, which the
// test runner would pin on whatever test runs; here those are collected.
//
//   node agents_probe.mjs BASE_URL TOKEN AGENT
// prints one JSON line: {created, error, status, transportErrors:[{status, type}]}.
import { SandboxAgent } from "sandbox-agent";

const [baseUrl, token, agent] = process.argv.slice(2);
const transportErrors = [];
process.on("unhandledRejection", (err) => {
  transportErrors.push({ status: err?.status ?? null, type: err?.problem?.type ?? String(err) });
});
const out = { created: false, error: null, status: null, transportErrors };
const timer = setTimeout(() => { out.error = "timed out"; finish(); }, 8000);
function finish() {
  clearTimeout(timer);
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
}
try {
  const sdk = await SandboxAgent.connect({ baseUrl, token, skipHealthCheck: true });
  try {
    await sdk.createSession({ agent });
    out.created = true;
  } catch (err) {
    out.error = String(err?.message ?? err);
    out.status = err?.status ?? null;
  }
  await sdk.dispose().catch(() => {});
} catch (err) {
  out.error = String(err?.message ?? err);
}
setTimeout(finish, 200);
