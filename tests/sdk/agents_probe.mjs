// agents_probe.mjs: one SDK createSession (and, given PROMPT, a prompt) in a
// process of its own, for agents.test.mjs's and sessions.test.mjs's failure
// cases.  The SDK's HTTP transport also reports a failed POST as an
// unhandled rejection, which the test runner would pin on whatever test
// runs; here those are collected.
//
//   node agents_probe.mjs BASE_URL TOKEN AGENT [PROMPT]
// prints one JSON line: {created, error, status, prompted, promptError,
// transportErrors:[{status, type, exitCode}]}.  It ends 200 ms after the
// first transport error (the SDK's promise for that POST never settles);
// error "timed out" (after 8 s) means no error came and the SDK never settled.
import { SandboxAgent } from "sandbox-agent";

const [baseUrl, token, agent, promptText] = process.argv.slice(2);
const transportErrors = [];
process.on("unhandledRejection", (err) => {
  transportErrors.push({ status: err?.status ?? null, type: err?.problem?.type ?? String(err),
                         exitCode: err?.problem?.details?.exitCode ?? null });
  // A failed POST: the SDK's promise for it never settles; the error is here.
  setTimeout(finish, 200);
});
const out = { created: false, error: null, status: null, prompted: false, promptError: null, transportErrors };
const timer = setTimeout(() => { out.error = "timed out"; finish(); }, 8000);
function finish() {
  clearTimeout(timer);
  if (!out.created && !out.error && transportErrors.length)
    out.error = "createSession did not settle after its POST failed";
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
}
try {
  const sdk = await SandboxAgent.connect({ baseUrl, token, skipHealthCheck: true });
  try {
    const session = await sdk.createSession({ agent });
    out.created = true;
    if (promptText !== undefined) {
      try {
        await session.prompt([{ type: "text", text: promptText }]);
        out.prompted = true;
      } catch (err) {
        out.promptError = String(err?.message ?? err);
      }
    }
  } catch (err) {
    out.error = String(err?.message ?? err);
    out.status = err?.status ?? null;
  }
  await sdk.dispose().catch(() => {});
} catch (err) {
  out.error = String(err?.message ?? err);
}
setTimeout(finish, 200);
