// cell(): a sandbox-agent 0.4.2 SandboxProvider backed by a `cell serve`
// daemon.  create() is POST /v1/cells, the SDK talks to the cell's per-cell
// plane (the answer's baseUrl, /cells/ID) with the daemon token (getToken,
// which SandboxAgent.start reads besides getUrl).

// An answer that is a problem: an Error carrying status, type, detail.
export class CellProblemError extends Error {
  constructor(status, problem, what) {
    const p = problem && typeof problem === "object" ? problem : {};
    super(`${what}: ${status} ${p.title ?? ""}${p.detail ? `: ${p.detail}` : ""}`);
    this.status = status;
    this.type = p.type;
    this.detail = p.detail;
    this.problem = p;
  }
}

async function call(base, token, method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { detail: text.slice(0, 200) };
  }
  return { status: res.status, body: json };
}

// What the SDK does with each answer (sandbox-agent 0.4.2): every call
// first waits for the client's health wait, which polls GET /v1/health and
// retries every error and status until its deadline; SandboxAgent.start sets
// none, so the wait only ends on health "ok" or on an error named
// AbortError.  A health answer that waiting cannot change (401: the token is
// wrong or revoked; 403; 404: the cell is unknown or was deleted) is raised
// as such an error, a CellProblemError whose name is "AbortError": every
// call of that client then rejects with it at once instead of waiting for
// ever.  Other answers (409 while the cell is stopped, 5xx, a refused
// connection) are left to the SDK's retries.
const FINAL_HEALTH = new Set([401, 403, 404]);

async function healthFetch(input, init) {
  const res = await fetch(input, init);
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
  if (res.ok || !FINAL_HEALTH.has(res.status) || !url.pathname.endsWith("/v1/health")) return res;
  let problem = null;
  try {
    problem = await res.json();
  } catch {
    problem = null;
  }
  const err = new CellProblemError(res.status, problem, `health of ${url.pathname.slice(0, -"/v1/health".length)}`);
  err.name = "AbortError";
  throw err;
}

export function cell(options = {}) {
  const { url, token } = options;
  if (typeof url !== "string" || !url) throw new TypeError("cell(): url is required");
  if (typeof token !== "string" || !token) throw new TypeError("cell(): token is required");
  const base = url.replace(/\/+$/, "");
  const request = {};
  for (const k of ["image", "resources", "policy", "env", "lane", "ttl", "cwd", "hostname", "mounts", "agents"]) {
    if (options[k] !== undefined) request[k] = options[k];
  }
  const cellPath = (id) => `/v1/cells/${encodeURIComponent(id)}`;
  return {
    name: "cell",
    defaultCwd: options.cwd ?? "/",
    async create() {
      const r = await call(base, token, "POST", "/v1/cells", request);
      if (r.status !== 201) throw new CellProblemError(r.status, r.body, "create cell");
      return r.body.id;
    },
    async destroy(id) {
      const r = await call(base, token, "DELETE", cellPath(id));
      // Already gone is what destroy wants.
      if (r.status >= 300 && r.status !== 404) throw new CellProblemError(r.status, r.body, `delete cell ${id}`);
    },
    async kill(id) {
      return this.destroy(id);
    },
    async pause(id) {
      const r = await call(base, token, "POST", `${cellPath(id)}/stop`);
      if (r.status !== 200) throw new CellProblemError(r.status, r.body, `stop cell ${id}`);
    },
    async reconnect(id) {
      const r = await call(base, token, "GET", cellPath(id));
      if (r.status !== 200) throw new CellProblemError(r.status, r.body, `cell ${id}`);
      if (r.body.state === "stopped") {
        const s = await call(base, token, "POST", `${cellPath(id)}/start`);
        if (s.status !== 200) throw new CellProblemError(s.status, s.body, `start cell ${id}`);
      }
    },
    async getUrl(id) {
      // Checked here so a wrong token or unknown id rejects at once instead
      // of inside the SDK's health-wait loop, which retries every error.
      const r = await call(base, token, "GET", cellPath(id));
      if (r.status !== 200) throw new CellProblemError(r.status, r.body, `cell ${id}`);
      return `${base}${r.body.baseUrl}`;
    },
    async getToken() {
      return token;
    },
    async getFetch() {
      return healthFetch;
    },
  };
}
export default cell;
