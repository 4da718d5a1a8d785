// agent.js: an agent session in the cell over the ACP proxy (docs/api.md,
// "Agents and ACP sessions"): start an installed agent, chat, see its tool
// calls and answer its permission requests, load an earlier session (its
// history replayed), choose the session's mode and model, cancel a turn;
// install an agent with npm's
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
import { h, field, say, fmtBytes } from "./dom.js";

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
  const cancelBtn = h("button", { type: "button", disabled: true }, "Cancel turn");
  const chat = h("form", { class: "card", "aria-label": "Chat" }, prompt.wrap, h("div", { class: "row" }, sendBtn, cancelBtn));
  // An earlier session: its id (the ones this tab started or loaded in this
  // cell are offered), loaded with session/load on this page's agent.
  const loadF = field("Session to load", "input", { autocomplete: "off", spellcheck: "false", list: `agent-sessions-${id}` });
  const known = h("datalist", { id: `agent-sessions-${id}` });
  const loadBtn = h("button", { type: "submit" }, "Load session");
  const loadForm = h("form", { class: "card row", "aria-label": "Load an earlier session" }, loadF.wrap, known, loadBtn);
  // The session's mode and model, as the agent offers them (hidden when it
  // offers none); a change is sent at once, a refusal shown at the field.
  const modeF = field("Mode", "select");
  const modelF = field("Model", "select");
  const settings = h("div", { class: "card grid", role: "group", "aria-label": "Session settings", hidden: true },
    modeF.wrap, modelF.wrap);
  root.append(h("h2", {}, "Agent session"), startForm, loadForm, installState, installLog, settings, log, chat);

  // The sessions remembered for this cell (ids only, this tab only).
  const MEM = `cell.agent-sessions.${id}`;
  const remembered = () => {
    try {
      const v = JSON.parse(sessionStorage.getItem(MEM) || "[]");
      return Array.isArray(v) ? v.filter((x) => typeof x?.id === "string") : [];
    } catch {
      return [];
    }
  };
  const showKnown = () => known.replaceChildren(...remembered().map((x) => h("option", { value: x.id }, `${x.agent} ${x.id}`)));
  const remember = (sid, agent) => {
    sessionStorage.setItem(MEM, JSON.stringify([{ id: sid, agent }, ...remembered().filter((x) => x.id !== sid)].slice(0, 20)));
    showKnown();
  };
  showKnown();

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
      const status = e.status || e.problem?.status;
      // A 409 budget_exceeded: what the host budget has left beside what
      // the install cell asks, so the user sees what to free or raise.
      const d = e.problem?.details;
      const budget = status === 409 && /budget_exceeded$/.test(e.problem?.type || "") && d && d.budget === "memory"
        ? ` The install needs ${fmtBytes(d.asked)} of memory; the host budget has ${fmtBytes(Math.max(0, d.total - d.reserved))} free `
          + `of ${fmtBytes(d.total)}: stop or delete cells, or raise the daemon's host.memory limit.` : "";
      agentF.setError(status ? `${e.message} (${status}).${budget}` : e.message);
    } finally {
      installBtn.disabled = false;
    }
  });

  const server = `ui-${Math.random().toString(36).slice(2, 10)}`;
  const acp = cellPath(id, `/acp/${server}`);
  let started = false, sessionId = null, rpcId = 0, agentText = null, userText = null, agentName = "";
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
      if (u.sessionUpdate === "user_message_chunk" && u.content?.type === "text") {
        // A loaded session's history, replayed.
        agentText = null;
        if (!userText) userText = add("user", h("span", { class: "who" }, "you: "), h("span", { class: "text" }));
        userText.querySelector(".text").append(u.content.text);
        return;
      }
      userText = null;
      if (u.sessionUpdate === "current_mode_update") {
        if ([...modeF.input.options].some((o) => o.value === u.currentModeId)) modeF.input.value = u.currentModeId;
      } else if (u.sessionUpdate === "agent_message_chunk" && u.content?.type === "text") {
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

  // The page's one agent instance, started on the first session (new or
  // loaded) with the agent chosen then.
  async function ensureAgent() {
    if (started) return;
    agentName = agentF.input.value;
    await rpc("initialize", { protocolVersion: 1, clientCapabilities: {} }, `?agent=${encodeURIComponent(agentName)}`);
    started = true;
    // The instance runs this agent: another one needs another page.
    agentF.input.disabled = true;
    followEvents(acp, (name, data) => name === "message" && onMessage(data), signal)
      .catch((e) => { if (e.name !== "AbortError") say(`Agent stream: ${e.message}`, "error"); });
  }

  // Options of a select from the agent's list; hidden when it has none.
  const choices = (f, list, idKey, current) => {
    f.setError("");
    f.input.replaceChildren(...(list || []).map((o) => h("option", { value: o[idKey] }, o.name || o[idKey])));
    f.wrap.hidden = !(list && list.length);
    if (current) f.input.value = current;
    return !f.wrap.hidden;
  };
  const useSession = (sid, result) => {
    sessionId = sid;
    startBtn.disabled = true;
    remember(sid, agentName);
    const m = choices(modeF, result?.modes?.availableModes, "id", result?.modes?.currentModeId);
    const n = choices(modelF, result?.models?.availableModels, "modelId", result?.models?.currentModelId);
    settings.hidden = !(m || n);
    sendBtn.disabled = false;
  };

  startForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    // A session can still start after a load that failed.
    if (sessionId) return;
    startBtn.disabled = true;
    agentF.setError("");
    try {
      await ensureAgent();
      const r = await rpc("session/new", { cwd: cell.cwd || "/", mcpServers: [] });
      if (r.error) throw new Error(r.error.message);
      useSession(r.result.sessionId, r.result);
      add("info", `Session ${sessionId} with ${agentName}`);
      prompt.input.focus();
    } catch (e) {
      agentF.setError(e.message);
      startBtn.disabled = Boolean(sessionId);
    }
  });

  // session/load: the agent replays the history as session/update
  // notifications (on the stream, shown as they come), then answers.
  loadForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const sid = loadF.input.value.trim();
    loadF.setError("");
    if (!sid) return void loadF.setError("Session to load: the id of an earlier session of this agent");
    loadBtn.disabled = true;
    try {
      await ensureAgent();
      add("info", `Loading session ${sid}\u2026`);
      agentText = userText = null;
      const r = await rpc("session/load", { sessionId: sid, cwd: cell.cwd || "/", mcpServers: [] });
      if (r.error) {
        loadF.setError(`${r.error.message} (${r.error.code})`);
        loadF.input.focus();
        return;
      }
      agentText = userText = null;
      useSession(sid, r.result);
      add("info", `Session ${sid} loaded with ${agentName}`);
      prompt.input.focus();
    } catch (e) {
      if (e.name !== "AbortError") loadF.setError(e.message);
    } finally {
      loadBtn.disabled = false;
    }
  });

  const setting = (f, method, key) => f.input.addEventListener("change", async () => {
    f.setError("");
    if (!sessionId) return;
    try {
      const r = await rpc(method, { sessionId, [key]: f.input.value });
      if (r.error) f.setError(`${r.error.message} (${r.error.code})`);
      else say(`${f === modeF ? "Mode" : "Model"}: ${f.input.selectedOptions[0]?.textContent}`);
    } catch (e) {
      if (e.name !== "AbortError") f.setError(e.message);
    }
  });
  setting(modeF, "session/set_mode", "modeId");
  setting(modelF, "session/set_model", "modelId");

  // session/cancel is a notification (202); the turn's own answer then
  // ends it ("Turn ended: cancelled").
  cancelBtn.addEventListener("click", async () => {
    if (!sessionId) return;
    cancelBtn.disabled = true;
    try {
      await call("POST", acp, { json: { jsonrpc: "2.0", method: "session/cancel", params: { sessionId } } });
      say("Cancelling the turn");
    } catch (e) {
      if (e.name !== "AbortError") say(`Cancel: ${e.message}`, "error");
    }
  });

  chat.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = prompt.input.value;
    if (!text.trim() || !sessionId) return;
    prompt.input.value = "";
    agentText = null;
    userText = null;
    add("user", h("span", { class: "who" }, "you: "), text);
    sendBtn.disabled = true;
    cancelBtn.disabled = false;
    try {
      const r = await rpc("session/prompt", { sessionId, prompt: [{ type: "text", text }] });
      if (r.error) add("error", `Error: ${r.error.message}`);
      else add("info", `Turn ended: ${r.result?.stopReason || "done"}`);
    } catch (e) {
      add("error", `Error: ${e.message}`);
    } finally {
      agentText = null;
      sendBtn.disabled = false;
      cancelBtn.disabled = true;
    }
  });
}
