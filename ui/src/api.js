// api.js: the daemon's HTTP API as the page calls it.  The token lives in
// sessionStorage (this tab only, gone when it closes) and goes in the
// Authorization header, or for the terminal WebSocket (which cannot have
// one) in its Sec-WebSocket-Protocol offer; never in a URL (docs/ui.md).

const KEY = "cell.token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

// An answer that was not 2xx: the problem+json body when there is one.
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

// fetch with the token; `json` is sent as the JSON body, `body` as is.
// Returns the Response (ok) or throws ApiError.
export async function call(method, path, { json, body, headers = {}, signal } = {}) {
  const h = { Authorization: `Bearer ${token.get()}`, ...headers };
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const res = await fetch(path, { method, headers: h, body, signal, cache: "no-store" });
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch {
      problem = null;
    }
    throw new ApiError(res.status, problem);
  }
  return res;
}

// call() and the parsed JSON body (null for 204).
export async function callJson(method, path, opts) {
  const res = await call(method, path, opts);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// A cell's per-cell plane (sandbox-agent's API).
export const cellPath = (id, rest) => `/cells/${encodeURIComponent(id)}/v1${rest}`;

// Server-sent events over fetch (so the token stays in a header, unlike
// EventSource): calls onEvent(name, data) per event until the stream ends
// or `signal` aborts.  A stream a POST answers (an image build, an agent
// install) passes {method: "POST", json}; an answer that is not 2xx throws
// ApiError before any event, as call() does.
export async function followEvents(path, onEvent, signal, { method = "GET", json } = {}) {
  const res = await call(method, path, { headers: { Accept: "text/event-stream" }, signal, json });
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

// base64 (the logs' encoding) to text, UTF-8.
export function b64text(s) {
  const bin = atob(s);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}
