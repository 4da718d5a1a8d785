// dom.js: building the page without a framework: h() makes elements, field()
// makes a labelled input whose error is shown at it (aria-describedby).
import { ApiError } from "./api.js";

// h("button", {type: "button", onclick: f}, "Stop"): attributes whose name
// starts with "on" are listeners; children are nodes or strings (text, never
// parsed as HTML, so data from cells cannot inject markup).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let uid = 0;

// A labelled control: {wrap, input, error}.  `kind` is "input", "textarea"
// or "select"; `attrs` go on the control.
export function field(label, kind = "input", attrs = {}, options = []) {
  const id = `f${++uid}`;
  const errId = `${id}-err`;
  const input = h(kind, { id, "aria-describedby": errId, ...attrs },
    ...options.map((o) => h("option", { value: o[0] }, o[1])));
  const error = h("div", { id: errId, class: "field-error", role: "alert" });
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), input, error);
  return {
    wrap, input, error,
    setError(msg) {
      error.textContent = msg || "";
      if (msg) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    },
  };
}

// The live region: short messages a screen reader announces.
export function say(msg, kind = "info") {
  const s = document.getElementById("status");
  s.textContent = msg;
  s.className = kind;
}

export const fmtBytes = (n) => {
  if (n === undefined || n === null) return "";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) n /= 1024, i++;
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
};

export const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "");

// Poll `fn` every `ms` until `signal` aborts; errors are shown, not fatal.
export async function poll(signal, ms, fn) {
  while (!signal.aborted) {
    try {
      await fn();
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) return void window.dispatchEvent(new Event("cell-unauthorized"));
      say(`Refresh failed: ${e.message}`, "error");
    }
    await new Promise((r) => {
      const t = setTimeout(r, ms);
      signal.addEventListener("abort", () => { clearTimeout(t); r(); }, { once: true });
    });
  }
}

// Show a problem+json at the field it names: `fields` maps words that the
// daemon's detail uses ("resources.memory", "rules[", "policy") to fields.
// Falls back to `fallback` (a form-level field) with the whole message.
export function showProblem(e, fields, fallback) {
  for (const f of Object.values(fields)) f.setError("");
  const detail = (e.problem && (e.problem.detail || e.problem.title)) || e.message;
  for (const [word, f] of Object.entries(fields)) {
    if (detail.includes(word)) {
      f.setError(detail);
      f.input.focus();
      return;
    }
  }
  fallback.setError(detail);
}

// Rows of a polled table, by key: a row is rebuilt only when its own data
// (sig) changed, so the others, and a button the user is about to click or
// has focused, stay the same elements between polls.  `empty` is the row
// shown when there are no items.
export function keyedRows(tbody, items, keyOf, sigOf, renderRow, empty) {
  const old = new Map([...tbody.children].filter((tr) => tr.dataset.key).map((tr) => [tr.dataset.key, tr]));
  const rows = items.map((it) => {
    const key = keyOf(it), sig = sigOf(it);
    const prev = old.get(key);
    if (prev && prev.dataset.sig === sig) return prev;
    const tr = renderRow(it);
    tr.dataset.key = key;
    tr.dataset.sig = sig;
    return tr;
  });
  if (!rows.length) rows.push(empty());
  // replaceChildren keeps an element that stays (it is moved, not rebuilt).
  if (rows.length !== tbody.children.length || rows.some((r, i) => tbody.children[i] !== r)) tbody.replaceChildren(...rows);
}

// Answers of overlapping refreshes: only one newer than the last shown is
// shown (a slow poll answer must not undo what an action's refresh showed).
export function sequencer() {
  let started = 0, shown = 0;
  return async (fetchFn, showFn) => {
    const mine = ++started;
    const data = await fetchFn();
    if (mine < shown) return;
    shown = mine;
    showFn(data);
  };
}

// Hand a fetched body to the browser as a download named `name`: the token
// goes in the fetch's header, so a plain link (no header) cannot do it.
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// The buttons of a table's rows and where their outcome goes: a button is
// named with its row ("Delete work") for a screen reader's list of buttons,
// its visible text the verb; a failure is written to the page's alert line
// `alert` (and the live region), a success clears it.
export function rowActions(alert) {
  const done = (msg) => {
    alert.textContent = "";
    say(msg);
  };
  const fail = (what, e) => {
    alert.textContent = `${what}: ${e.message}`;
    say(`${what} failed`, "error");
  };
  const act = (label, name, fn, text = label) => h("button", { type: "button", "aria-label": `${label} ${name}`,
    onclick: async () => {
      try {
        await fn();
      } catch (e) {
        if (e.name !== "AbortError") fail(`${label} ${name}`, e);
      }
    } }, text);
  return { done, fail, act };
}
