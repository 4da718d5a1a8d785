// terminal.js: an interactive shell in the cell: xterm.js over the daemon's
// terminal WebSocket (docs/api.md, "The terminal WebSocket").
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { call, callJson, cellPath, token } from "./api.js";
import { h, say } from "./dom.js";

// xterm.js writes its per-terminal rules (cell sizes, colours, cursor) into
// <style> elements, which the UI's Content-Security-Policy (style-src
// 'self', no 'unsafe-inline') does not apply.  Their text is copied into a
// constructed stylesheet instead (CSSOM, which CSP allows), kept in step
// with every change xterm makes.
function mirrorStyles(container, signal) {
  const sheets = new Map();
  const sync = () => {
    for (const el of container.querySelectorAll("style")) {
      let sheet = sheets.get(el);
      if (!sheet) {
        sheet = new CSSStyleSheet();
        sheets.set(el, sheet);
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
      }
      if (sheet._text !== el.textContent) {
        sheet.replaceSync(el.textContent);
        sheet._text = el.textContent;
      }
    }
  };
  const obs = new MutationObserver(sync);
  obs.observe(container, { subtree: true, childList: true, characterData: true });
  signal.addEventListener("abort", () => {
    obs.disconnect();
    const gone = new Set(sheets.values());
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => !gone.has(s));
  }, { once: true });
  sync();
}

export async function terminalPage(root, signal, cell) {
  const box = h("div", { class: "terminal", role: "region", "aria-label": "Terminal" });
  const info = h("p", { class: "hint" }, "A shell in the cell. Tab stays in the terminal; press ",
    h("kbd", {}, "Escape"), " then ", h("kbd", {}, "Tab"), " to move on.");
  const stateLine = h("p", { class: "termstate", "aria-live": "polite" }, "Starting a shell\u2026");
  root.append(info, stateLine, box);
  let proc;
  try {
    proc = await callJson("POST", cellPath(cell.id, "/processes"), { json: {
      command: "sh", args: ["-i"], tty: true, interactive: true, env: { TERM: "xterm-256color" } } });
  } catch (e) {
    stateLine.textContent = `Could not start a shell: ${e.message}`;
    return;
  }
  if (signal.aborted) return;
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, screenReaderMode: true,
    fontFamily: "ui-monospace, monospace" });
  const fit = new FitAddon();
  term.loadAddon(fit);
  mirrorStyles(box, signal);
  term.open(box);
  fit.fit();

  // Browsers cannot set Authorization on a WebSocket: the token is offered
  // as a subprotocol, which the daemon reads and never echoes (it answers
  // "cell.terminal"), so it is in no URL (docs/ui.md, docs/security.md).
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${cellPath(cell.id, `/processes/${proc.id}/terminal/ws`)}`;
  const ws = new WebSocket(url, ["cell.terminal", `cell.bearer.${token.get()}`]);
  ws.binaryType = "arraybuffer";
  const send = (o) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(o));
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return term.write(new Uint8Array(ev.data));
    const m = JSON.parse(ev.data);
    if (m.type === "ready") {
      stateLine.textContent = `Connected to ${proc.id}`;
      send({ type: "resize", cols: term.cols, rows: term.rows });
      term.focus();
    } else if (m.type === "exit") {
      stateLine.textContent = `The shell exited (${m.exitCode ?? "signal"})`;
    } else if (m.type === "error") {
      say(`Terminal: ${m.message}`, "error");
    }
  };
  ws.onclose = () => {
    if (!signal.aborted) stateLine.textContent = `${stateLine.textContent} (disconnected)`;
  };
  term.onData((d) => send({ type: "input", data: d, encoding: "utf8" }));
  term.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
  // Escape gives the keyboard back to the page: xterm keeps Tab otherwise.
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type === "keydown" && ev.key === "Escape") {
      term.blur();
      box.setAttribute("tabindex", "-1");
      box.focus();
      return false;
    }
    return true;
  });
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);
  signal.addEventListener("abort", () => {
    window.removeEventListener("resize", onResize);
    send({ type: "close" });
    ws.close();
    term.dispose();
    // The shell belongs to this page: leaving ends it.
    call("POST", cellPath(cell.id, `/processes/${proc.id}/kill`)).catch(() => {});
  }, { once: true });
}
