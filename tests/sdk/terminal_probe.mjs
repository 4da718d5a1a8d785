// terminal_probe.mjs: drives a process terminal WebSocket with the sandbox-agent 0.4.2 SDK
// (ProcessTerminalSession) and a raw `ws` client, and checks the protocol the reference speaks.
//
// Usage:
//   CELL_URL=http://127.0.0.1:7070/cells/<id> CELL_TOKEN=<token> node tests/sdk/terminal_probe.mjs
// CELL_URL is any sandbox-agent-compatible base URL: a cell's (".../cells/<id>") or the reference
// server's root, so the same checks run against both.  CELL_TOKEN may be empty (--no-token).
// Needs the packages `sandbox-agent@0.4.2` and `ws` (Node 20 has no global WebSocket): either in a
// node_modules this file's directory can see, or in the directory named by SDK_NODE_MODULES, e.g.
//   (cd /tmp/sdk && npm install sandbox-agent@0.4.2 ws) && SDK_NODE_MODULES=/tmp/sdk/node_modules ...
// Exits 0 when every check passed, 1 otherwise.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const BASE = (process.env.CELL_URL || '').replace(/\/+$/, '');
const TOKEN = process.env.CELL_TOKEN || undefined;
const STEP_MS = Number(process.env.STEP_MS || 10000);
if (!BASE) {
    console.error('terminal_probe: set CELL_URL to the per-cell base URL (e.g. http://127.0.0.1:7070/cells/<id>)');
    process.exit(2);
}

/* Load from the usual resolution first, then from SDK_NODE_MODULES: the
 * probe lives in the repository, its dependencies need not. */
async function load(name, entry) {
    try {
        return await import(name);
    } catch (e) {
        const dir = process.env.SDK_NODE_MODULES;
        if (!dir)
            throw new Error(`cannot import ${name} (${e.message}); install it or set SDK_NODE_MODULES`);
        if (entry)
            return await import(pathToFileURL(join(dir, name, entry)).href);
        return await import(pathToFileURL(createRequire(join(dir, 'x.js')).resolve(name)).href);
    }
}
const { SandboxAgent } = await load('sandbox-agent', 'dist/index.js');
const wsModule = await load('ws');
const WebSocket = wsModule.default ?? wsModule.WebSocket;

// The SDK waits for /v1/health forever by default; a bad URL or token should fail instead.
const sdk = await SandboxAgent.connect({ baseUrl: BASE, token: TOKEN, waitForHealth: { timeoutMs: STEP_MS } });
const results = [];
const cleanup = [];

function wsUrl(id) {
    const u = new URL(`${BASE}/v1/processes/${encodeURIComponent(id)}/terminal/ws`);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (TOKEN)
        u.searchParams.set('access_token', TOKEN);
    return u.href;
}

function withTimeout(promise, what, ms = STEP_MS) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms); }),
    ]).finally(() => clearTimeout(timer));
}

async function check(name, fn) {
    try {
        await fn();
        results.push([name, true]);
        console.log(`ok    ${name}`);
    } catch (e) {
        results.push([name, false]);
        console.log(`FAIL  ${name}: ${e.message}`);
    }
}

function assert(cond, msg) {
    if (!cond)
        throw new Error(msg);
}

async function newProcess(request) {
    const p = await sdk.createProcess(request);
    cleanup.push(p.id);
    return p;
}

/* A ProcessTerminalSession with everything it emits recorded. */
function openSession(id) {
    const s = sdk.connectProcessTerminal(id, { WebSocket });
    const rec = { s, text: '', chunks: 0, errors: [], exit: null, ready: null, closed: false };
    const waiters = new Set();
    const poke = () => { for (const w of waiters) w(); };
    s.onReady((f) => { rec.ready = f; poke(); });
    s.onData((bytes) => { rec.text += Buffer.from(bytes).toString('utf8'); rec.chunks++; poke(); });
    s.onError((e) => { rec.errors.push(e); poke(); });
    s.onExit((f) => { rec.exit = f; poke(); });
    s.onClose(() => { rec.closed = true; poke(); });
    rec.until = (pred, what) => withTimeout(new Promise((resolve) => {
        const w = () => { if (pred(rec)) { waiters.delete(w); resolve(); } };
        waiters.add(w);
        w();
    }), what);
    return rec;
}

/* The HTTP status of a refused WebSocket handshake (101 if it was accepted). */
function handshakeStatus(id) {
    return withTimeout(new Promise((resolve, reject) => {
        const ws = new WebSocket(wsUrl(id));
        ws.on('unexpected-response', (_req, res) => {
            let body = '';
            res.on('data', (d) => { body += d; });
            res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
        });
        ws.on('open', () => { ws.terminate(); resolve({ status: 101 }); });
        ws.on('error', (e) => { if (!/Unexpected server response/.test(e.message)) reject(e); });
    }), 'the handshake answer');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the checks -------------------------------------------------------------------------------
await check('shell session: ready, echo, resize, binary input, error frame, exit', async () => {
    const p = await newProcess({ command: 'sh', tty: true, interactive: true });
    const t = openSession(p.id);
    await t.until((r) => r.ready, 'the ready frame');
    assert(t.ready.type === 'ready' && t.ready.processId === p.id, `ready frame ${JSON.stringify(t.ready)}`);

    t.s.sendInput('echo hi-$((40+2))\n');
    await t.until((r) => r.text.includes('hi-42'), 'the echo output');

    t.s.resize({ cols: 100, rows: 30 });
    t.s.sendInput('stty size\n');
    await t.until((r) => r.text.includes('30 100'), '"30 100" from stty size');

    // Uint8Array input goes out as base64.
    t.s.sendInput(new TextEncoder().encode("printf 'bin-%s\\n' ok\n"));
    await t.until((r) => r.text.includes('bin-ok'), 'output of base64 input');

    // A bad frame is answered with an error frame and the session goes on.
    t.s.socket.send('not json');
    await t.until((r) => r.errors.length > 0, 'an error frame');
    assert(/^invalid terminal frame/.test(t.errors[0].message ?? ''), `error ${JSON.stringify(t.errors[0])}`);
    t.s.sendInput('echo still-$((1+1))\n');
    await t.until((r) => r.text.includes('still-2'), 'output after the error frame');

    t.s.sendInput('exit 3\n');
    await t.until((r) => r.exit && r.closed, 'the exit frame and the close');
    assert(t.exit.exitCode === 3, `exit frame ${JSON.stringify(t.exit)}`);
});

await check('no replay: output from before the connection is not sent; exited process gets ready + exit', async () => {
    const p = await newProcess({ command: 'sh', args: ['-c', 'echo early-bird; exit 4'], tty: true });
    // Wait until it has exited and its output is in the log, so that none
    // of it can still be on its way when the terminal connects.
    const logged = async () => (await sdk.getProcessLogs(p.id, { stream: 'pty' })).entries
        .map((e) => Buffer.from(e.data, e.encoding === 'base64' ? 'base64' : 'utf8').toString()).join('');
    for (let i = 0; i < 50 && ((await sdk.getProcess(p.id)).status !== 'exited' || !(await logged()).includes('early-bird')); i++)
        await sleep(100);
    await sleep(200);
    const t = openSession(p.id);
    await t.until((r) => r.exit && r.closed, 'ready, exit and close');
    assert(t.ready && t.ready.processId === p.id, 'no ready frame before the exit frame');
    assert(t.exit.exitCode === 4, `exit frame ${JSON.stringify(t.exit)}`);
    assert(!t.text.includes('early-bird'), `old output was replayed: ${JSON.stringify(t.text)}`);
});

await check('a process killed by a signal exits with exitCode null', async () => {
    const p = await newProcess({ command: 'sh', tty: true, interactive: true });
    const t = openSession(p.id);
    await t.until((r) => r.ready, 'the ready frame');
    await sdk.killProcess(p.id);
    await t.until((r) => r.exit && r.closed, 'the exit frame and the close');
    assert(t.exit.exitCode === null || t.exit.exitCode === undefined, `exit frame ${JSON.stringify(t.exit)}`);
});

await check('close(): the socket closes, the process keeps running', async () => {
    const p = await newProcess({ command: 'sh', tty: true, interactive: true });
    const t = openSession(p.id);
    await t.until((r) => r.ready, 'the ready frame');
    t.s.close();
    await withTimeout(t.s.closed, 'the close');
    const now = await sdk.getProcess(p.id);
    assert(now.status === 'running', `process is ${now.status} after close()`);
});

await check('raw frames: ping/pong, binary frame refused, {"type":"close"} closes', async () => {
    const p = await newProcess({ command: 'sh', tty: true, interactive: true });
    const frames = [];
    let closeCode = null, pong = null;
    const ws = new WebSocket(wsUrl(p.id));
    ws.on('message', (d, binary) => frames.push(binary ? { binary: d } : JSON.parse(d.toString())));
    ws.on('pong', (d) => { pong = d.toString(); });
    const closed = new Promise((resolve) => ws.on('close', (code) => { closeCode = code; resolve(); }));
    await withTimeout(new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); }), 'open');
    ws.ping('probe');
    ws.send(Buffer.from('raw bytes'), { binary: true });
    ws.send(JSON.stringify({ type: 'resize', cols: 70000, rows: 1 }));
    await withTimeout((async () => { while (pong === null || frames.filter((f) => f.type === 'error').length < 2) await sleep(20); })(),
                      'the pong and two error frames');
    assert(frames[0]?.type === 'ready', `first frame ${JSON.stringify(frames[0])}`);
    assert(pong === 'probe', `pong payload ${pong}`);
    const errs = frames.filter((f) => f.type === 'error').map((f) => f.message);
    assert(/binary input is not supported/.test(errs[0]), `binary frame error ${errs[0]}`);
    assert(/expected u16/.test(errs[1]), `resize error ${errs[1]}`);
    ws.send(JSON.stringify({ type: 'close' }));
    await withTimeout(closed, 'the close');
    assert(closeCode === 1005 || closeCode === 1000, `close code ${closeCode}`);
});

await check('handshake refusals: unknown process 404, non-tty process 409', async () => {
    const missing = await handshakeStatus('proc_does_not_exist');
    assert(missing.status === 404 && /problem\+json/.test(missing.type), `unknown id: ${JSON.stringify(missing)}`);
    const p = await newProcess({ command: 'sleep', args: ['30'] });
    const plain = await handshakeStatus(p.id);
    assert(plain.status === 409 && /tty mode/.test(plain.body), `non-tty: ${JSON.stringify(plain)}`);
});

await check('a GET that is not an upgrade is a 400', async () => {
    const res = await fetch(wsUrl('proc_1').replace(/^ws/, 'http'));
    const body = await res.text();
    assert(res.status === 400 && /upgrade/i.test(body), `${res.status} ${body}`);
});

// ---- cleanup: kill and delete what we started ----------------------------------------------------
for (const id of cleanup) {
    try {
        await sdk.killProcess(id, { waitMs: 2000 });
        await sdk.deleteProcess(id);
    } catch {
        /* already gone */
    }
}
await sdk.dispose();
const failed = results.filter(([, ok]) => !ok).length;
console.log(`${results.length - failed}/${results.length} checks passed`);
process.exit(failed ? 1 : 0);
