// agents.mjs: bench/agents.sh's driver.  The sandbox-agent 0.4.2 SDK,
// unmodified, against two servers that bench/agents.sh started: cell (one
// cell's base URL, /cells/ID, with a token) and the reference
// (sandbox-agent server).  Both run the same mock agent binary
// (cell-mock-agent): cell inside the cell, the reference on the host.
// What is timed, and how, is described in bench/agents.sh's header.
//
// Environment (bench/agents.sh sets it):
//   AGB_CELL_URL AGB_CELL_TOKEN AGB_CELL_PID   cell's base URL, token, daemon pid
//   AGB_REF_URL AGB_REF_PID                    the reference's base URL, server pid
//   AGB_N AGB_WARMUP AGB_ROUNDS AGB_PINGS AGB_WORDS AGB_INSTANCES AGB_ONLY
// Prints markdown to stdout, progress to stderr; exits 1 on the first
// failure of either contender (an error, a wrong answer, a step that hangs).
import { SandboxAgent } from "sandbox-agent";
import { readFileSync, readdirSync } from "node:fs";

const env = process.env;
const num = (k, d) => (env[k] === undefined || env[k] === "" ? d : Number(env[k]));
const N = num("AGB_N", 20), WARMUP = num("AGB_WARMUP", 2), ROUNDS = num("AGB_ROUNDS", 10);
const PINGS = num("AGB_PINGS", 20), WORDS = num("AGB_WORDS", 200), INSTANCES = num("AGB_INSTANCES", 10);
const ONLY = (env.AGB_ONLY || "session sse mem").split(/\s+/);
// Each timed step starts after this pause: the other server's teardown
// (the reference goes on ending its agent after the SDK gave up on its
// DELETE) must not land in it.
const SETTLE_MS = 200;
const STEP_MS = 30000;       // bound on one SDK step: a contender that hangs fails the run

const sides = [
  { key: "cell", label: "cell (/cells/ID, token, mock in the cell)", url: env.AGB_CELL_URL,
    token: env.AGB_CELL_TOKEN, pid: Number(env.AGB_CELL_PID) },
  { key: "ref", label: "sandbox-agent 0.4.2 (same mock, on the host)", url: env.AGB_REF_URL,
    token: undefined, pid: Number(env.AGB_REF_PID) },
];
for (const s of sides)
  if (!s.url || !s.pid) fail(`AGB_${s.key.toUpperCase()}_URL and _PID must be set`);

function fail(msg) {
  process.stderr.write(`bench/agents.mjs: ${msg}\n`);
  process.exit(1);
}
// The SDK's transport also reports a failed POST as an unhandled rejection.
process.on("unhandledRejection", (err) => fail(`unhandled rejection: ${err?.stack ?? err}`));
const note = (msg) => process.stderr.write(`bench/agents.sh: ${msg}\n`);
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `promise`, or a failure of the run naming `what` after STEP_MS.
function bounded(promise, what) {
  let timer;
  const t = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${STEP_MS} ms`)), STEP_MS); });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
    .catch((err) => fail(`${what}: ${err?.message ?? err}`));
}

// ---- statistics -------------------------------------------------------------------------------
const sorted = (xs) => [...xs].sort((a, b) => a - b);
function median(xs) {
  const s = sorted(xs), n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}
const p90 = (xs) => sorted(xs)[Math.min(xs.length - 1, Math.ceil(0.9 * xs.length) - 1)];
const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}x` : "n/a");
const f = (x, d = 2) => x.toFixed(d);

// ---- SDK helpers ------------------------------------------------------------------------------
const connect = (side) => bounded(SandboxAgent.connect({ baseUrl: side.url, token: side.token }), `${side.key}: connect`);

// Chunks of a session as they arrive: [arrival time, text].
function chunkLog(session) {
  const log = [];
  let wake = null;
  const off = session.onEvent((ev) => {
    const p = ev.payload;
    if (p?.method === "session/update" && p.params?.update?.sessionUpdate === "agent_message_chunk") {
      log.push([now(), p.params.update.content.text]);
      if (wake) wake();
    }
  });
  // until(n): resolves once n chunks are in (bounded by the caller).
  const until = (n) => new Promise((resolve) => {
    const check = () => { if (log.length >= n) { wake = null; resolve(); } else wake = check; };
    check();
  });
  return { log, off, until };
}

// The mock answers a prompt of words w1..wk with the chunks "mock:", "w1", " w2", ..., " wk".
const words = (k, tag) => Array.from({ length: k }, (_, i) => `${tag}${i}`);
function checkChunks(side, what, log, ws) {
  const got = log.map((c) => c[1]).join("");
  const want = `mock:${ws.join(" ")}`;
  if (got !== want) fail(`${side.key}: ${what}: the chunks read ${JSON.stringify(got.slice(0, 200))}, not ${JSON.stringify(want.slice(0, 200))}`);
}
async function prompt(side, session, ws, what) {
  const c = chunkLog(session);
  const t0 = now();
  const res = await bounded(session.prompt([{ type: "text", text: ws.join(" ") }]), `${side.key}: ${what}: prompt`);
  const t1 = now();
  if (res?.stopReason !== "end_turn") fail(`${side.key}: ${what}: stopReason ${JSON.stringify(res?.stopReason)}`);
  // The chunks come over SSE, the answer over the POST: either may be first.
  await bounded(c.until(ws.length + 1), `${side.key}: ${what}: ${ws.length + 1} chunks`);
  c.off();
  checkChunks(side, what, c.log, ws);
  return { t0, t1, log: c.log };
}

// Until the server lists no ACP instance (the previous one's agent is gone
// before the next is timed; the reference's DELETE does not answer, the SDK
// gives up on it after 2 s, and the instance goes away later).
async function drained(side) {
  const url = `${side.url}/v1/acp`;
  const headers = side.token ? { Authorization: `Bearer ${side.token}` } : {};
  for (let i = 0; i < 200; i++) {
    const res = await fetch(url, { headers });
    if (!res.ok) fail(`${side.key}: GET /v1/acp: HTTP ${res.status}`);
    if ((await res.json()).servers.length === 0) return;
    await sleep(50);
  }
  fail(`${side.key}: ACP instances still listed 10 s after their DELETE`);
}
async function dispose(side, sdks) {
  await bounded(Promise.all(sdks.map((s) => s.dispose())), `${side.key}: dispose`);
  await drained(side);
}

// Alternate which side goes first, round by round.
const order = (r) => (r % 2 ? [sides[1], sides[0]] : sides);

// ---- 1. createSession -> end of the first prompt ----------------------------------------------
async function benchSession() {
  note(`session: ${WARMUP} untimed + ${N} timed iterations per server, alternating...`);
  const res = Object.fromEntries(sides.map((s) => [s.key, { total: [], create: [], prompt: [], chunks: [] }]));
  for (let i = 0; i < WARMUP + N; i++) {
    for (const side of order(i)) {
      const sdk = await connect(side);
      await sleep(SETTLE_MS);
      const t0 = now();
      const session = await bounded(sdk.createSession({ agent: "mock" }), `${side.key}: createSession`);
      const t1 = now();
      const p = await prompt(side, session, ["hello", "world"], "first prompt");
      if (i >= WARMUP) {
        const r = res[side.key];
        r.total.push(p.t1 - t0); r.create.push(t1 - t0); r.prompt.push(p.t1 - p.t0);
        r.chunks.push(Math.max(p.t1, p.log[p.log.length - 1][0]) - t0);
      }
      await dispose(side, [sdk]);
    }
  }
  const [c, r] = [res.cell, res.ref];
  for (const s of sides) note(`  ${s.key} total ms: ${res[s.key].total.map((x) => f(x, 1)).join(" ")}`);
  for (const s of sides) note(`  ${s.key} chunks ms: ${res[s.key].chunks.map((x) => f(x, 1)).join(" ")}`);
  console.log("### createSession → end of the first prompt (a new SDK client, a new agent process)\n");
  console.log(`${N} timed iterations per server after ${WARMUP} untimed, alternating which server goes first. Each iteration:`);
  console.log(`\`SandboxAgent.connect\` and a ${SETTLE_MS} ms pause (untimed), then timed: \`createSession({agent: "mock"})\` (the SDK's \`initialize\`, which`);
  console.log("spawns the agent, and `session/new`) and `session.prompt(\"hello world\")` until it resolves with `stopReason`;");
  console.log("the last row also waits for the prompt's three chunks, which come over the SSE stream that the SDK opened");
  console.log("with its first POST (what a user sees stream in). Then (untimed) the chunks are checked, `dispose()`, and the");
  console.log("next starts once `GET /v1/acp` lists no instance.\n");
  console.log("| step | cell median (ms) | cell p90 (ms) | reference median (ms) | reference p90 (ms) | median cell / ref | p90 cell / ref |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [k, name] of [["total", "createSession + first prompt (stopReason)"], ["create", "createSession"],
                           ["prompt", "first prompt (stopReason)"], ["chunks", "createSession + first prompt, its chunks included"]]) {
    console.log(`| ${name} | ${f(median(c[k]))} | ${f(p90(c[k]))} | ${f(median(r[k]))} | ${f(p90(r[k]))} | ` +
                `${ratio(median(c[k]), median(r[k]))} | ${ratio(p90(c[k]), p90(r[k]))} |`);
  }
  console.log();
  return { cell: median(c.total), ref: median(r.total), cell90: p90(c.total), ref90: p90(r.total),
           chunks: [median(c.chunks), median(r.chunks)] };
}

// ---- 2. SSE delivery --------------------------------------------------------------------------
async function benchSse() {
  note(`sse: ${ROUNDS} rounds x 2 servers x (${PINGS} pings + a burst of ${WORDS + 1} chunks)...`);
  const live = {};
  for (const side of sides) {
    const sdk = await connect(side);
    const session = await bounded(sdk.createSession({ agent: "mock" }), `${side.key}: createSession`);
    await prompt(side, session, ["warm"], "warm-up");
    live[side.key] = { sdk, session, first: [], rtt: [], per: [], burst: [] };
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const side of order(r)) {
      const L = live[side.key];
      await sleep(SETTLE_MS);
      for (let i = 0; i < PINGS; i++) {
        const p = await prompt(side, L.session, [`ping${i}`], "ping");
        L.first.push(p.log[0][0] - p.t0);
        L.rtt.push(p.t1 - p.t0);
      }
      const ws = words(WORDS, "w");
      const p = await prompt(side, L.session, ws, "burst");
      const last = p.log[p.log.length - 1][0];
      L.per.push(((last - p.log[0][0]) / WORDS) * 1000);
      L.burst.push(last - p.t0);
    }
  }
  for (const side of sides) await dispose(side, [live[side.key].sdk]);
  const [c, r] = [live.cell, live.ref];
  console.log("### SSE delivery: one session per server, prompts on it\n");
  console.log(`${ROUNDS} rounds, alternating which server goes first; each round is ${PINGS} pings then one burst, on one`);
  console.log("session per server opened beforehand. A ping is `session.prompt(\"pingI\")`: the SDK POSTs `session/prompt`,");
  console.log("the proxy writes it to the agent's stdin, the mock prints two `session/update` chunks and the result;");
  console.log("the chunks reach the client over the SSE stream (GET /v1/acp/ID), the result as the POST's answer.");
  console.log("*first chunk*: from the prompt call to the arrival of its first chunk event at the client (POST in, SSE out);");
  console.log("*prompt round trip*: until the prompt resolves. A burst is one prompt of");
  console.log(`${WORDS} words, which the mock answers with ${WORDS + 1} chunks written back to back: *per message* is`);
  console.log(`(arrival of the last chunk − arrival of the first) / ${WORDS}, the SSE delivery cost of one message in a stream.`);
  console.log("Every chunk's text and order is checked. Times are the SDK's client-side view (its event listeners), in one");
  console.log("node process, so the client's own work is in both figures.\n");
  console.log("| measure | cell median | cell p90 | reference median | reference p90 | median cell / ref | p90 cell / ref |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [k, name] of [["first", "ping: first chunk (ms)"], ["rtt", "ping: prompt round trip (ms)"],
                           ["per", "burst: per message (µs)"], ["burst", `burst: prompt → last of ${WORDS + 1} chunks (ms)`]]) {
    console.log(`| ${name} | ${f(median(c[k]))} | ${f(p90(c[k]))} | ${f(median(r[k]))} | ${f(p90(r[k]))} | ` +
                `${ratio(median(c[k]), median(r[k]))} | ${ratio(p90(c[k]), p90(r[k]))} |`);
  }
  console.log();
  return { first: [median(c.first), median(r.first)], per: [median(c.per), median(r.per)] };
}

// ---- 3. memory per idle ACP instance ----------------------------------------------------------
// The server and every process under it (cell: the daemon, cell-init and
// the agents in the cell; the reference: its server and its agents).
function tree(pid) {
  const out = [pid];
  let tasks = [];
  try { tasks = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const t of tasks) {
    let kids = "";
    try { kids = readFileSync(`/proc/${pid}/task/${t}/children`, "utf8"); } catch { continue; }
    for (const k of kids.split(/\s+/).filter(Boolean)) out.push(...tree(Number(k)));
  }
  return out;
}
function usage(side) {  // {pss, rss (KiB), server (PSS of the server alone), procs}
  const u = { pss: 0, rss: 0, server: 0, procs: 0 };
  for (const pid of tree(side.pid)) {
    let text;
    try { text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"); } catch { continue; }  // gone meanwhile
    const kb = (k) => Number((text.match(new RegExp(`^${k}:\\s+(\\d+)`, "m")) || [0, 0])[1]);
    u.pss += kb("Pss"); u.rss += kb("Rss"); u.procs++;
    if (pid === side.pid) u.server = kb("Pss");
  }
  return u;
}
async function benchMem() {
  note(`mem: ${INSTANCES} idle ACP instances per server...`);
  const rows = [];
  for (const side of sides) {
    await drained(side);
    await sleep(500);
    const u0 = usage(side);
    const sdks = [];
    for (let i = 0; i < INSTANCES; i++) {
      const sdk = await connect(side);
      const session = await bounded(sdk.createSession({ agent: "mock" }), `${side.key}: createSession ${i}`);
      await prompt(side, session, ["idle"], "one prompt before idling");
      sdks.push(sdk);
    }
    await sleep(1000);
    const u1 = usage(side);
    if (u1.procs - u0.procs < INSTANCES) fail(`${side.key}: ${INSTANCES} instances but ${u1.procs - u0.procs} more processes`);
    note(`  ${side.key}: ${u0.procs} -> ${u1.procs} processes, PSS ${u0.pss} -> ${u1.pss} KiB`);
    await dispose(side, sdks);
    rows.push({ side, u0, u1 });
  }
  console.log("### Memory per idle ACP instance\n");
  console.log(`${INSTANCES} instances per server, one after the other: a new SDK client each, \`createSession\` on the mock and`);
  console.log("one prompt, then idle (SSE stream open) for 1 s. Summed over the server's process tree (cell: the daemon,");
  console.log("cell-init and the agents in the cell; the reference: its server and its agents), from /proc/PID/smaps_rollup;");
  console.log("the delta over the same tree before, divided by the instance count. KiB.\n");
  console.log("| server | processes before → with instances | PSS per instance | of which the server process | RSS per instance | PSS total before → with instances |");
  console.log("| --- | --- | ---: | ---: | ---: | --- |");
  for (const { side, u0, u1 } of rows) {
    console.log(`| ${side.label} | ${u0.procs} → ${u1.procs} | ${f((u1.pss - u0.pss) / INSTANCES, 0)} | ` +
                `${f((u1.server - u0.server) / INSTANCES, 0)} | ${f((u1.rss - u0.rss) / INSTANCES, 0)} | ${u0.pss} → ${u1.pss} |`);
  }
  console.log();
  const per = rows.map(({ u0, u1 }) => (u1.pss - u0.pss) / INSTANCES);
  return { cell: per[0], ref: per[1] };
}

// ---- run --------------------------------------------------------------------------------------
const summary = [];
if (ONLY.includes("session")) {
  const s = await benchSession();
  summary.push(["createSession + first prompt, median (ms)", s.cell, s.ref]);
  summary.push(["createSession + first prompt, p90 (ms)", s.cell90, s.ref90]);
  summary.push(["createSession + first prompt with its chunks, median (ms)", ...s.chunks]);
}
if (ONLY.includes("sse")) {
  const s = await benchSse();
  summary.push(["SSE ping: first chunk, median (ms)", ...s.first]);
  summary.push(["SSE burst: per message, median (µs)", ...s.per]);
}
if (ONLY.includes("mem")) {
  const s = await benchMem();
  summary.push(["PSS per idle ACP instance (KiB)", s.cell, s.ref]);
}
console.log("### Summary\n");
console.log("| measure | cell | sandbox-agent 0.4.2 | cell / reference |");
console.log("| --- | ---: | ---: | ---: |");
for (const [name, c, r] of summary) console.log(`| ${name} | ${f(c)} | ${f(r)} | ${ratio(c, r)} |`);
console.log();
process.exit(0);
