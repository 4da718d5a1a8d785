// processes.js: a cell's processes: run a command to completion and see its
// output, start one in the background, follow its log live (server-sent
// events over fetch), stop, kill and delete it.
import { call, callJson, cellPath, followEvents, b64text } from "./api.js";
import { h, field, say, fmtTime, poll, showProblem, keyedRows, sequencer } from "./dom.js";

export function processesPage(root, signal, cell) {
  const id = cell.id;
  const cmd = field("Command (run with sh -c)", "input", { autocomplete: "off", spellcheck: "false",
    placeholder: "uname -a" });
  const out = h("pre", { class: "output", "aria-live": "polite", "aria-label": "Command output",
    tabindex: "0" });
  const exit = h("p", { class: "exit" });
  const run = async (background) => {
    cmd.setError("");
    const c = cmd.input.value;
    if (!c.trim()) return cmd.setError("Type a command first.");
    try {
      if (background) {
        const p = await callJson("POST", cellPath(id, "/processes"),
          { json: { command: "sh", args: ["-c", c] } });
        say(`Started ${p.id}`);
        await refresh();
        showLogs(p.id);
        return;
      }
      exit.textContent = "Running\u2026";
      const r = await callJson("POST", cellPath(id, "/processes/run"), { json: { command: "sh", args: ["-c", c] } });
      out.textContent = r.stdout + (r.stderr ? `${r.stdout && !r.stdout.endsWith("\n") ? "\n" : ""}${r.stderr}` : "");
      exit.textContent = r.timedOut ? "Timed out" : `Exit code ${r.exitCode ?? `signal ${r.signal}`}`;
    } catch (e) {
      exit.textContent = "";
      showProblem(e, {}, cmd);
    }
  };
  const form = h("form", { class: "card", "aria-labelledby": "run-h" },
    h("h2", { id: "run-h" }, "Run a command"), cmd.wrap,
    h("div", { class: "row" }, h("button", { type: "submit" }, "Run"),
      h("button", { type: "button", onclick: () => run(true) }, "Start in background")),
    exit, out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(false);
  });

  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "procs-h" }, h("thead", {}, h("tr", {},
    ...["Process", "Command", "Status", "Started", "Actions"].map((c) => h("th", { scope: "col" }, c)))), tbody);
  const logBox = h("section", { "aria-labelledby": "log-h", class: "card", hidden: true });
  let following = null;

  function showLogs(pid) {
    if (following) following.abort();
    following = new AbortController();
    const stop = following;
    signal.addEventListener("abort", () => stop.abort(), { once: true });
    const pre = h("pre", { class: "output log", tabindex: "0", "aria-label": `Log of ${pid}` });
    logBox.hidden = false;
    logBox.replaceChildren(h("h2", { id: "log-h" }, `Log of ${pid} (following)`), pre);
    followEvents(cellPath(id, `/processes/${pid}/logs?follow=true`), (name, data) => {
      if (name !== "log") return;
      const e = JSON.parse(data);
      const text = e.encoding === "base64" ? b64text(e.data) : e.data;
      pre.append(e.stream === "stderr" ? h("span", { class: "stderr" }, text) : text);
      pre.scrollTop = pre.scrollHeight;
    }, stop.signal).then(() => {
      logBox.querySelector("h2").textContent = `Log of ${pid} (ended)`;
    }).catch((e) => {
      if (e.name !== "AbortError") say(`Log of ${pid}: ${e.message}`, "error");
    });
  }

  const act = (label, pid, fn) => h("button", { type: "button", "aria-label": `${label} ${pid}`, onclick: async () => {
    try {
      await fn();
      await refresh();
    } catch (e) {
      say(`${label} ${pid}: ${e.message}`, "error");
    }
  } }, label);

  // Rows rebuilt only when their process changed; stale poll answers dropped.
  const seq = sequencer();
  const refresh = () => seq(() => callJson("GET", cellPath(id, "/processes"), { signal }), ({ processes }) =>
    keyedRows(tbody, processes, (p) => p.id, (p) => JSON.stringify([p.status, p.exitCode, p.signal]),
      (p) => h("tr", { "data-process": p.id },
        h("td", {}, p.id), h("td", {}, h("code", {}, [p.command, ...(p.args || [])].join(" "))),
        h("td", {}, p.status === "exited" ? `exited (${p.exitCode ?? `signal ${p.signal}`})` : p.status),
        h("td", {}, fmtTime(p.createdAtMs)),
        h("td", { class: "actions" },
          h("button", { type: "button", "aria-label": `Logs of ${p.id}`, onclick: () => showLogs(p.id) }, "Logs"),
          p.status === "running"
            ? [act("Stop", p.id, () => call("POST", cellPath(id, `/processes/${p.id}/stop?waitMs=2000`))),
               act("Kill", p.id, () => call("POST", cellPath(id, `/processes/${p.id}/kill?waitMs=2000`)))]
            : act("Delete", p.id, () => call("DELETE", cellPath(id, `/processes/${p.id}`))))),
      () => h("tr", {}, h("td", { colspan: 5 }, "No processes."))));
  root.append(form, h("section", { "aria-labelledby": "procs-h" }, h("h2", { id: "procs-h" }, "Processes"), table),
    logBox);
  cmd.input.focus();
  poll(signal, 2000, refresh);
}
