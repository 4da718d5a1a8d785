// agent.js: an agent session in the cell over the ACP proxy (docs/api.md,
// "Agents and ACP sessions"): start an installed agent, chat, see its tool
// calls and answer its permission requests; install an agent with npm's
// progress shown as it streams (the SSE form of POST .../install) and its
// refusal (501 amp/cursor, 409 budget, 502 npm) at the field.  The page
// owns one agent instance (server id "ui-..."); leaving the page ends it
// (DELETE).
//
// Wire: every request is one JSON-RPC envelope POSTed to /acp/{server};
// everything the agent prints (answers, session/update notifications, its
// own requests such as session/request_permission) arrives on the SSE
// stream GET /acp/{server}, read with fetch so the token stays in a header.
import { call, callJson, cellPath, followEvents } from "./api.js";
import { h, field, say } from "./dom.js";

export async function agentPage(root, signal, cell) {
  const id = cell.id;
  const agentF = field("Agent to run", "select");
  const startBtn = h("button", { type: "submit" }, "Start session");
  const installBtn = h("button", { type: "button" }, "Install agent");
  const startForm = h("form", { class: "card row", "aria-label": "Start an agent session" }, agentF.wrap, startBtn,
    installBtn);
  // The install's progress: npm's lines as the daemon streams them, then
  // its outcome (announced; the lines are not read out one by one).
  const installState = h("p", { class: "installstate", role: "status", "data-state": "idle" });
  const installLog = h("pre", { class: "output installlog", "aria-label": "Install progress", tabindex: 0, hidden: true });
  const log = h("ol", { class: "transcript", "aria-label": "Session transcript", "aria-live": "polite" });
  const prompt = field("Message", "textarea", { rows: 3, spellcheck: "true" });
  const sendBtn = h("button", { type: "submit", disabled: true }, "Send");
  const chat = h("form", { class: "card", "aria-label": "Chat" }, prompt.wrap, sendBtn);
  root.append(h("h2", {}, "Agent session"), startForm, installState, installLog, log, chat);

  async function listAgents() {
    const keep = agentF.input.value;
    try {
      const { agents } = await callJson("GET", cellPath(id, "/agents"), { signal });
      agentF.input.replaceChildren(...agents.map((a) => h("option", { value: a.id },
        `${a.id}${a.installed ? "" : " (installs on start)"}`)));
      agentF.input.value = keep && agents.some((a) => a.id === keep) ? keep
        : agents.some((a) => a.id === "mock") ? "mock" : agents[0]?.id;
    } catch (e) {
      if (e.name !== "AbortError") agentF.setError(e.message);
    }
  }
  await listAgents();

  // POST .../agents/{agent}/install with Accept: text/event-stream: one
  // `progress` event per line npm prints, then `result`: the plain POST's
  // answer, or its problem (with `status`: 409 budget_exceeded, 502 when
  // npm failed).  A refusal before any work (501 for amp and cursor, 400)
  // is an ordinary error answer.
  installBtn.addEventListener("click", async () => {
    const agent = agentF.input.value;
    installBtn.disabled = true;
    agentF.setError("");
    installLog.textContent = "";
    installLog.hidden = false;
    installState.dataset.state = "running";
    installState.textContent = `Installing ${agent}\u2026`;
    let result = null;
    try {
      await followEvents(cellPath(id, `/agents/${encodeURIComponent(agent)}/install`), (ev, data) => {
        const d = JSON.parse(data);
        if (ev === "progress") {
          installLog.append(`${d.line}\n`);
          installLog.scrollTop = installLog.scrollHeight;
        } else if (ev === "result") {
          result = d;
        }
      }, signal, { method: "POST", json: {} });
      if (!result) throw new Error("the install's stream ended without a result (the daemon stopped?)");
      if (result.status && result.status >= 400) {
        const err = new Error(result.detail || result.title || `HTTP ${result.status}`);
        err.problem = result;
        throw err;
      }
      installState.dataset.state = "done";
      installState.textContent = result.already_installed ? `${agent} was already installed.`
        : `${agent} installed${(result.artifacts || []).map((a) => ` (${a.source || ""} ${a.version || ""})`).join("")}.`;
      await listAgents();
    } catch (e) {
      if (e.name === "AbortError") return;
      installState.dataset.state = "failed";
      installState.textContent = `Installing ${agent} failed.`;
      const stderr = e.problem?.details?.stderr;
      if (Array.isArray(stderr) && stderr.length) installLog.append(`${stderr.join("\n")}\n`);
      else if (typeof stderr === "string" && stderr) installLog.append(`${stderr}\n`);
      agentF.setError(e.status ? `${e.message} (${e.status})` : e.problem?.status
        ? `${e.message} (${e.problem.status})` : e.message);
    } finally {
      installBtn.disabled = false;
    }
  });

  const server = `ui-${Math.random().toString(36).slice(2, 10)}`;
  const acp = cellPath(id, `/acp/${server}`);
  let started = false, sessionId = null, rpcId = 0, agentText = null;
  const tools = new Map();     // toolCallId -> its <li>
  const add = (cls, ...children) => {
    const li = h("li", { class: cls }, ...children);
    log.append(li);
    li.scrollIntoView({ block: "nearest" });
    return li;
  };
  const rpc = (method, params, query = "") =>
    callJson("POST", `${acp}${query}`, { json: { jsonrpc: "2.0", id: ++rpcId, method, params } });

  signal.addEventListener("abort", () => {
    if (started) call("DELETE", acp).catch(() => {});
  }, { once: true });

  function onMessage(data) {
    const m = JSON.parse(data);
    if (m.method === "session/update") {
      const u = m.params.update;
      if (u.sessionUpdate === "agent_message_chunk" && u.content?.type === "text") {
        if (!agentText) agentText = add("agent", h("span", { class: "who" }, "agent: "), h("span", { class: "text" }));
        agentText.querySelector(".text").append(u.content.text);
      } else if (u.sessionUpdate === "tool_call") {
        agentText = null;
        const li = add("tool", h("span", { class: "who" }, `tool ${u.kind || ""}: `), u.title || u.toolCallId, " ",
          h("span", { class: "status" }, u.status || "pending"));
        li.dataset.tool = u.toolCallId;
        tools.set(u.toolCallId, li);
      } else if (u.sessionUpdate === "tool_call_update") {
        const li = tools.get(u.toolCallId);
        if (li && u.status) li.querySelector(".status").textContent = u.status;
        const out = u.rawOutput?.output;
        if (li && typeof out === "string" && out) li.append(h("pre", { class: "output" }, out));
      }
    } else if (m.method === "session/request_permission") {
      agentText = null;
      const p = m.params;
      const li = add("permission", h("span", { class: "who" }, "permission: "),
        p.toolCall?.title || "the agent asks", " ");
      const answer = async (optionId, label) => {
        li.querySelectorAll("button").forEach((b) => (b.disabled = true));
        try {
          await call("POST", acp, { json: { jsonrpc: "2.0", id: m.id,
            result: { outcome: optionId ? { outcome: "selected", optionId } : { outcome: "cancelled" } } } });
          li.append(h("span", { class: "answered" }, ` answered: ${label}`));
        } catch (e) {
          say(`Permission answer: ${e.message}`, "error");
        }
      };
      li.append(h("span", { role: "group", "aria-label": "Answer the permission request" },
        ...(p.options || []).map((o) => h("button", { type: "button", onclick: () => answer(o.optionId, o.name) }, o.name))));
      li.querySelector("button")?.focus();
    } else if (m.method === "_adapter/agent_exited") {
      add("error", "The agent exited.");
      sendBtn.disabled = true;
    }
  }

  startForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (started) return;
    startBtn.disabled = true;
    agentF.setError("");
    try {
      await rpc("initialize", { protocolVersion: 1, clientCapabilities: {} },
        `?agent=${encodeURIComponent(agentF.input.value)}`);
      started = true;
      followEvents(acp, (name, data) => name === "message" && onMessage(data), signal)
        .catch((e) => { if (e.name !== "AbortError") say(`Agent stream: ${e.message}`, "error"); });
      const r = await rpc("session/new", { cwd: cell.cwd || "/", mcpServers: [] });
      if (r.error) throw new Error(r.error.message);
      sessionId = r.result.sessionId;
      add("info", `Session ${sessionId} with ${agentF.input.value}`);
      sendBtn.disabled = false;
      prompt.input.focus();
    } catch (e) {
      agentF.setError(e.message);
      startBtn.disabled = started;
    }
  });

  chat.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = prompt.input.value;
    if (!text.trim() || !sessionId) return;
    prompt.input.value = "";
    agentText = null;
    add("user", h("span", { class: "who" }, "you: "), text);
    sendBtn.disabled = true;
    try {
      const r = await rpc("session/prompt", { sessionId, prompt: [{ type: "text", text }] });
      if (r.error) add("error", `Error: ${r.error.message}`);
      else add("info", `Turn ended: ${r.result?.stopReason || "done"}`);
    } catch (e) {
      add("error", `Error: ${e.message}`);
    } finally {
      agentText = null;
      sendBtn.disabled = false;
    }
  });
}
