// main.js: the Inspector (docs/ui.md).  Hash routes, one page at a time:
//   #/login, #/cells, #/cells/ID/{processes,terminal,files,egress,policy,agent,desktop},
//   #/lanes, #/images, #/audit?kind=&cell=&limit=, #/tokens, #/tenants
// Each page gets an AbortSignal that fires when the user leaves it, which
// ends its polling loops, event streams and WebSocket.
import "./style.css";
import { token, call, callJson, ApiError } from "./api.js";
import { h, field, say, fmtBytes, fmtTime, poll, showProblem, keyedRows, sequencer } from "./dom.js";
import { processesPage } from "./processes.js";
import { terminalPage } from "./terminal.js";
import { filesPage } from "./files.js";
import { egressPage, policyPage } from "./egress.js";
import { tokensPage, tenantsPage } from "./admin.js";
import { auditPage } from "./audit.js";
import { lanesPage } from "./lanes.js";
import { imagesPage } from "./images.js";
import { agentPage } from "./agent.js";
import { desktopPage } from "./desktop.js";

const main = () => document.getElementById("main");
let leave = null;   // the AbortController of the page shown

function logout(msg) {
  token.clear();
  location.hash = "#/login";
  if (msg) say(msg, "error");
}

function loginPage(root) {
  const t = field("API token", "input", { type: "password", autocomplete: "off", required: true,
    spellcheck: "false" });
  const form = h("form", { class: "card", "aria-labelledby": "login-h" },
    h("h1", { id: "login-h" }, "Log in"),
    h("p", {}, "Paste a token of this daemon (", h("code", {}, "STATE/admin.token"),
      " or one from ", h("code", {}, "cell token create"), "). It is kept in this tab only."),
    t.wrap, h("button", { type: "submit" }, "Log in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token.set(t.input.value.trim());
    try {
      await callJson("GET", "/v1/cells");
      t.input.value = "";
      location.hash = "#/cells";
    } catch (e) {
      token.clear();
      t.setError(e.status === 401 ? "This token is not valid here (401)." : e.message);
      t.input.focus();
    }
  });
  root.append(form);
  t.input.focus();
}

function cellActions(c, refresh) {
  const act = (label, fn) => h("button", { type: "button", onclick: async () => {
    try {
      await fn();
      say(`${label}: ${c.id} done`);
      await refresh();
    } catch (e) {
      say(`${label} ${c.id}: ${e.message}`, "error");
    }
  } }, label);
  return [
    c.state === "stopped" ? act("Start", () => call("POST", `/v1/cells/${c.id}/start`))
                          : act("Stop", () => call("POST", `/v1/cells/${c.id}/stop`)),
    act("Delete", async () => {
      if (!confirm(`Delete cell ${c.id}? Its processes are killed and its files are gone.`)) return;
      await call("DELETE", `/v1/cells/${c.id}`);
    }),
  ];
}

function cellsPage(root, signal) {
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "cells-h" },
    h("thead", {}, h("tr", {}, ...["Cell", "Image", "Lane", "State", "Memory", "Created", "Actions"]
      .map((c) => h("th", { scope: "col" }, c)))), tbody);
  // Rows are rebuilt only when their cell changed (keyedRows), and a slow
  // poll answer never undoes an action's newer one (sequencer).
  const seq = sequencer();
  const refresh = () => seq(() => callJson("GET", "/v1/cells", { signal }), ({ cells }) =>
    keyedRows(tbody, cells, (c) => c.id, (c) => JSON.stringify([c.state, c.image, c.lane, c.resources]),
      (c) => h("tr", { "data-cell": c.id },
        h("td", {}, h("a", { href: `#/cells/${c.id}/processes` }, c.id)),
        h("td", {}, c.image || ""), h("td", {}, c.lane || ""),
        h("td", { class: `state state-${c.state}` }, c.state),
        h("td", {}, fmtBytes(c.resources && c.resources.memory)),
        h("td", {}, fmtTime(c.createdAtMs)),
        h("td", { class: "actions" }, cellActions(c, refresh))),
      () => h("tr", {}, h("td", { colspan: 7 }, "No cells yet: create one below."))));
  root.append(h("section", { "aria-labelledby": "cells-h" }, h("h1", { id: "cells-h" }, "Cells"), table),
    createForm(refresh));
  poll(signal, 2000, refresh);
}

function createForm(refresh) {
  const image = field("Image", "input", { list: "images", value: "host", autocomplete: "off" });
  const lane = field("Lane (optional)", "input", { list: "lanes", autocomplete: "off" });
  const memory = field("Memory", "input", { placeholder: "512M" });
  const cpus = field("CPUs", "input", { placeholder: "1", inputmode: "decimal" });
  const pids = field("Process limit", "input", { placeholder: "1024", inputmode: "numeric" });
  const ttl = field("Idle TTL (seconds, 0 = never)", "input", { placeholder: "0", inputmode: "numeric" });
  const policy = field("Network policy (JSON; empty = no network)", "textarea",
    { rows: 5, spellcheck: "false", placeholder: '{"rules": [{"tcp": {"to": "198.18.0.0/15", "ports": [80]}}]}' });
  const form_ = field("Create", "output");
  form_.wrap.querySelector("label").remove();
  const images = h("datalist", { id: "images" }), lanes = h("datalist", { id: "lanes" });
  const fill = async () => {
    try {
      const im = await callJson("GET", "/v1/images");
      images.replaceChildren(...(im.images || []).map((i) => h("option", { value: i.name })));
      const ln = await callJson("GET", "/v1/lanes");
      lanes.replaceChildren(...(ln.lanes || []).map((l) => h("option", { value: l.name })));
    } catch {
      /* the lists are a convenience */
    }
  };
  fill();
  const form = h("form", { class: "card", "aria-labelledby": "create-h" },
    h("h2", { id: "create-h" }, "Create a cell"), images, lanes,
    h("div", { class: "grid" }, image.wrap, lane.wrap, memory.wrap, cpus.wrap, pids.wrap, ttl.wrap),
    policy.wrap, form_.wrap, h("button", { type: "submit" }, "Create"));
  const fields = { policy, "rules[": policy, "resources.memory": memory, "resources.cpus": cpus,
    "resources.pids": pids, ttl, lane, image, memory, cpus, pids };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [image, lane, memory, cpus, pids, ttl, policy, form_]) f.setError("");
    const body = {};
    if (image.input.value.trim()) body.image = image.input.value.trim();
    if (lane.input.value.trim()) body.lane = lane.input.value.trim();
    const res = {};
    if (memory.input.value.trim()) res.memory = memory.input.value.trim();
    if (cpus.input.value.trim()) res.cpus = Number(cpus.input.value);
    if (pids.input.value.trim()) res.pids = Number(pids.input.value);
    if (Object.keys(res).length) body.resources = res;
    if (ttl.input.value.trim()) body.ttl = Number(ttl.input.value);
    if (policy.input.value.trim()) {
      try {
        body.policy = JSON.parse(policy.input.value);
      } catch (e) {
        policy.setError(`Not JSON: ${e.message}`);
        policy.input.focus();
        return;
      }
    }
    try {
      const c = await callJson("POST", "/v1/cells", { json: body });
      say(`Cell ${c.id} created`);
      policy.input.value = "";
      await refresh();
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      showProblem(e, fields, form_);
    }
  });
  return form;
}

const TABS = [["processes", "Processes"], ["terminal", "Terminal"], ["files", "Files"],
  ["egress", "Egress"], ["policy", "Policy"], ["agent", "Agent"], ["desktop", "Desktop"]];
const PAGES = { processes: processesPage, terminal: terminalPage, files: filesPage,
  egress: egressPage, policy: policyPage, agent: agentPage, desktop: desktopPage };

async function cellPage(root, signal, id, tab, query) {
  const head = h("div", { class: "cellhead" }, h("h1", {}, `Cell ${id}`), h("span", { class: "state" }, ""));
  const tabs = h("nav", { "aria-label": "Cell", class: "tabs" }, ...TABS.map(([k, label]) =>
    h("a", { href: `#/cells/${id}/${k}`, "aria-current": k === tab ? "page" : false }, label)));
  const body = h("section", { "aria-label": TABS.find((t) => t[0] === tab)?.[1] || tab });
  root.append(h("p", {}, h("a", { href: "#/cells" }, "\u2190 All cells")), head, tabs, body);
  let cell;
  try {
    cell = await callJson("GET", `/v1/cells/${encodeURIComponent(id)}`, { signal });
  } catch (e) {
    body.append(h("p", { class: "error" }, `Cell ${id}: ${e.message}`));
    return;
  }
  head.querySelector(".state").textContent = cell.state;
  const page = PAGES[tab];
  if (!page) {
    body.append(h("p", {}, `No such page: ${tab}`));
    return;
  }
  page(body, signal, cell, query);
}

function route() {
  if (leave) leave.abort();
  leave = new AbortController();
  const root = main();
  root.replaceChildren();
  const [path, qs] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean);
  const logged = !!token.get();
  document.getElementById("logout").hidden = !logged;
  const top = [["cells", "Cells"], ["lanes", "Lanes"], ["images", "Images"], ["audit", "Audit"], ["tokens", "Tokens"], ["tenants", "Tenants"]];
  document.getElementById("nav").replaceChildren(...(logged ? top.map(([k, label]) =>
    h("a", { href: `#/${k}`, "aria-current": (parts[0] || "cells") === k ? "page" : false }, label)) : []));
  if (!logged || parts[0] === "login") {
    if (logged) return (location.hash = "#/cells");
    return loginPage(root);
  }
  if (parts[0] === "cells" && parts[1]) return cellPage(root, leave.signal, parts[1], parts[2] || "processes", query);
  if (parts[0] === "lanes") return lanesPage(root, leave.signal);
  if (parts[0] === "images") return imagesPage(root, leave.signal);
  if (parts[0] === "audit") return auditPage(root, leave.signal, query);
  if (parts[0] === "tokens") return tokensPage(root, leave.signal);
  if (parts[0] === "tenants") return tenantsPage(root, leave.signal);
  return cellsPage(root, leave.signal);
}

// Unexpected failures of a page still reach the user.
window.addEventListener("unhandledrejection", (ev) => {
  const e = ev.reason;
  if (e instanceof ApiError && e.status === 401) return logout("The token was refused (401): log in again.");
  if (e && e.name === "AbortError") return;
  say(`Error: ${e && e.message ? e.message : e}`, "error");
});

// poll() saw a 401: the token was revoked or the daemon's state replaced.
window.addEventListener("cell-unauthorized", () => logout("The token was refused (401): log in again."));

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => logout("Logged out."));
  window.addEventListener("hashchange", () => {
    route();
    main().focus();
  });
  route();
});

