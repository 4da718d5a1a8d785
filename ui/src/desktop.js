// desktop.js: the cell's desktop (docs/desktop.md): its status, start (with
// a resolution) and stop, and a live view that takes the mouse and keyboard.
//
// The view is the live WebSocket (/desktop/live: JPEG frames as binary
// messages, input as JSON text messages), authenticated like the terminal
// with the "cell.bearer.TOKEN" subprotocol so the token is in no URL.  A
// daemon without that route (or a socket that cannot open) gets the
// fallback: screenshots polled one after another and input through the
// REST routes.  Frames are drawn on a <canvas> with createImageBitmap: the
// UI's CSP allows no blob: images, and a canvas keeps one decoded frame.
// Under the view, while the desktop runs: launch, windows, clipboard and
// recordings (deskcontrols.js).
import { call, callJson, cellPath, token, ApiError } from "./api.js";
import { h, field, say, showProblem } from "./dom.js";
import { deskControls } from "./deskcontrols.js";

// KeyboardEvent.key -> X keysym names (xdotool's) for keys that are not
// one printable character.
const KEYSYMS = {
  Enter: "Return", Backspace: "BackSpace", Tab: "Tab", Delete: "Delete", Insert: "Insert",
  Home: "Home", End: "End", PageUp: "Page_Up", PageDown: "Page_Down",
  ArrowLeft: "Left", ArrowRight: "Right", ArrowUp: "Up", ArrowDown: "Down", " ": "space",
  ...Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`F${i + 1}`, `F${i + 1}`])),
};
const BUTTONS = ["left", "middle", "right"];

export async function desktopPage(root, signal, cell) {
  const base = (rest) => cellPath(cell.id, `/desktop${rest}`);
  const stateLine = h("p", { class: "deskstate", "aria-live": "polite" }, "Reading the desktop's status\u2026");
  // No min/max: the daemon's bounds (and its refusal, shown at the field) are the rule.
  const width = field("Width", "input", { type: "number", value: "1024", inputmode: "numeric" });
  const height = field("Height", "input", { type: "number", value: "768", inputmode: "numeric" });
  const formErr = field("Start", "output");
  formErr.wrap.querySelector("label").remove();
  const startBtn = h("button", { type: "submit" }, "Start desktop");
  const stopBtn = h("button", { type: "button", disabled: true }, "Stop desktop");
  const reconnect = h("button", { type: "button", hidden: true }, "Reconnect view");
  const form = h("form", { class: "card", "aria-labelledby": "desk-h" },
    h("h2", { id: "desk-h" }, "Desktop"), stateLine,
    h("div", { class: "row" }, width.wrap, height.wrap), formErr.wrap,
    h("div", { class: "row" }, startBtn, stopBtn, reconnect));
  const helpId = `desk-help-${cell.id}`;
  // Escape moves the focus here, after the view: Tab then moves on, Shift+Tab back in.
  const help = h("p", { id: helpId, class: "hint", tabindex: "-1" }, "The cell's screen. Click or Tab into it: the pointer and the keys ",
    "then go to the desktop (Tab too); press ", h("kbd", {}, "Escape"), " to give the keyboard back to the page.");
  const canvas = h("canvas", { class: "deskview", tabindex: "0", role: "application", width: 1, height: 1,
    "aria-label": `Desktop of cell ${cell.id}`, "aria-describedby": helpId, "data-frames": "0" });
  const rate = h("span", { class: "deskrate", "aria-hidden": "true" }, "");
  const mode = h("span", { class: "deskmode" }, "");
  const viewBox = h("div", { class: "deskbox", hidden: true },
    h("p", { class: "hint" }, mode, " ", rate), canvas, help);
  root.append(form, viewBox);
  const controls = deskControls(root, signal, cell);

  let status = null;        // the last GET /status
  let view = null;          // the running view: {close(), send(msg)}
  const fields = { width, height, resolution: width };

  const showStatus = (s) => {
    status = s;
    const active = s.state === "active";
    const res = s.resolution ? ` ${s.resolution.width}x${s.resolution.height}` : "";
    let text = `State: ${s.state}${active ? `${res}, display ${s.display}` : ""}`;
    if (s.state === "install_required")
      text += `. Missing: ${(s.missingDependencies || []).join(", ")}; install with: ${s.installCommand || "?"}`;
    if (s.lastError) text += `. Last error: ${s.lastError.message || JSON.stringify(s.lastError)}`;
    stateLine.textContent = text;
    stateLine.dataset.state = s.state;
    stopBtn.disabled = !active;
    startBtn.disabled = active;
    controls.update(s.state);
  };
  const refresh = async () => showStatus(await callJson("GET", base("/status"), { signal }));

  // ---- drawing -------------------------------------------------------------------
  let dims = { width: 1, height: 1 };     // the desktop's, for input coordinates
  let frames = 0, shownFrames = 0, decoding = false, waiting = null;
  const draw = async (blob) => {
    // Latest wins: one frame decodes, the newest one waits, older ones go.
    if (decoding) return void (waiting = blob);
    decoding = true;
    try {
      for (let b = blob; b && !signal.aborted; b = waiting, waiting = null) {
        const bmp = await createImageBitmap(b);
        if (canvas.width !== bmp.width || canvas.height !== bmp.height) {
          canvas.width = bmp.width;
          canvas.height = bmp.height;
        }
        canvas.getContext("2d").drawImage(bmp, 0, 0);
        bmp.close();
        frames++;
        canvas.dataset.frames = String(++shownFrames);
      }
    } catch (e) {
      if (!signal.aborted) say(`Desktop view: a frame could not be decoded (${e.message})`, "error");
    } finally {
      decoding = false;
    }
  };
  const fpsTimer = setInterval(() => {
    rate.textContent = view ? `${frames} fps` : "";
    frames = 0;
  }, 1000);
  signal.addEventListener("abort", () => clearInterval(fpsTimer), { once: true });

  // ---- the two views ---------------------------------------------------------------
  // The live socket; resolves to the view once it is ready, or null when it
  // never opened (then the caller polls screenshots).
  const liveView = () => new Promise((resolve) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${base("/live")}`, ["cell.desktop", `cell.bearer.${token.get()}`]);
    ws.binaryType = "blob";
    let ready = false;
    const v = {
      kind: "live",
      send: (m) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m)),
      close: () => ws.close(1000),
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return void draw(ev.data);
      const m = JSON.parse(ev.data);
      if (m.type === "ready" || m.type === "settings") {
        dims = { width: m.width, height: m.height };
        if (!ready) resolve(v);
        ready = true;
      } else if (m.type === "error") {
        // A refused input or setting: the session goes on (docs/desktop.md).
        say(`Desktop input refused: ${m.message}`, "error");
      }
    };
    ws.onclose = (ev) => {
      if (!ready) return resolve(null);
      if (view === v) ended(ev.reason ? `the live view closed: ${ev.reason}` : "the live view closed");
    };
  });

  // Screenshots, one after the other, and input through the REST routes
  // (one at a time, in order, as the socket would apply them).
  const pollView = () => {
    const stop = new AbortController();
    const stopped = AbortSignal.any ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    let chain = Promise.resolve();
    const v = {
      kind: "poll",
      close: () => stop.abort(),
      send: (m) => {
        const route = { move: "/mouse/move", down: "/mouse/down", up: "/mouse/up", scroll: "/mouse/scroll",
          type: "/keyboard/type", key: "/keyboard/press" }[m.type];
        const { type: _t, ...body } = m;
        chain = chain.then(() => call("POST", base(route), { json: body, signal: stopped })).catch((e) => {
          if (!stopped.aborted) say(`Desktop input: ${e.message}`, "error");
        });
      },
    };
    dims = status && status.resolution ? status.resolution : dims;
    (async () => {
      while (!stopped.aborted) {
        try {
          const res = await call("GET", base("/screenshot?format=jpeg&quality=70"), { signal: stopped });
          await draw(await res.blob());
        } catch (e) {
          if (stopped.aborted) return;
          if (view === v) ended(`screenshots stopped: ${e.message}`);
          return;
        }
      }
    })();
    return v;
  };

  const ended = (why) => {
    view = null;
    canvas.dataset.mode = "";
    mode.textContent = `Not connected (${why}).`;
    refresh().then(() => { reconnect.hidden = !status || status.state !== "active"; }).catch(() => {});
  };

  const connect = async () => {
    if (view) view.close();
    view = null;
    reconnect.hidden = true;
    mode.textContent = "Connecting\u2026";
    viewBox.hidden = false;
    let v = await liveView();
    if (signal.aborted) return v && v.close();
    if (!v) {
      v = pollView();
      mode.textContent = "Screenshots, polled (the live view did not open).";
    } else {
      mode.textContent = "Live view.";
    }
    canvas.dataset.mode = v.kind;
    pointer = null;
    view = v;
  };
  signal.addEventListener("abort", () => view && view.close(), { once: true });

  // ---- input -------------------------------------------------------------------------
  // Page coordinates to the desktop's: the canvas may be drawn scaled.
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    const clamp = (v, n) => Math.max(0, Math.min(n - 1, Math.floor(v)));
    return { x: clamp(((ev.clientX - r.left) * dims.width) / r.width, dims.width),
             y: clamp(((ev.clientY - r.top) * dims.height) / r.height, dims.height) };
  };
  let pointer = null;       // where the desktop's pointer was last sent
  const send = (m) => {
    if (!view) return;
    if ("x" in m) pointer = { x: m.x, y: m.y };
    view.send(m);
  };
  // A button's down or up: with the position only when the pointer is not
  // there already.  (xdotool's "mousemove --sync" to where the pointer is
  // waits for a motion that never comes while a window holds the button's
  // grab: an up at the down's place timed out.)
  const button = (type, ev) => {
    flushMove();
    const p = at(ev), m = { type, button: BUTTONS[ev.button] };
    if (!pointer || pointer.x !== p.x || pointer.y !== p.y) Object.assign(m, p);
    send(m);
  };
  let moveQueued = null;
  const flushMove = () => {
    if (moveQueued && (!pointer || pointer.x !== moveQueued.x || pointer.y !== moveQueued.y))
      send({ type: "move", ...moveQueued });
    moveQueued = null;
  };
  canvas.addEventListener("mousemove", (ev) => {
    // At most one move per animation frame: a pointer makes many events.
    if (!view || view.kind !== "live") return;
    const first = !moveQueued;
    moveQueued = at(ev);
    if (first) requestAnimationFrame(flushMove);
  });
  canvas.addEventListener("mousedown", (ev) => {
    canvas.focus({ preventScroll: true });   // the view must not move under the pointer
    ev.preventDefault();
    if (BUTTONS[ev.button]) button("down", ev);
  });
  canvas.addEventListener("mouseup", (ev) => {
    if (BUTTONS[ev.button]) button("up", ev);
  });
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    if (ev.deltaY) send({ type: "scroll", ...at(ev), deltaY: Math.sign(ev.deltaY) });
  }, { passive: false });
  // Keys reach the desktop only while the view has the focus (the listener
  // is on the canvas); Escape gives the keyboard back to the page.
  canvas.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      ev.preventDefault();
      help.focus();
      say("The keyboard is back on the page.");
      return;
    }
    if (!view || ev.isComposing) return;
    ev.preventDefault();
    const mods = { ctrl: ev.ctrlKey, alt: ev.altKey, shift: ev.shiftKey, cmd: ev.metaKey };
    if (ev.key.length === 1 && ev.key !== " " && !ev.ctrlKey && !ev.altKey && !ev.metaKey) {
      send({ type: "type", text: ev.key });
    } else if (KEYSYMS[ev.key] || ev.key.length === 1) {
      const key = KEYSYMS[ev.key] || ev.key.toLowerCase();
      send({ type: "key", key, modifiers: mods });
    }
  });

  // ---- actions -------------------------------------------------------------------------
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [width, height, formErr]) f.setError("");
    startBtn.disabled = true;
    stateLine.textContent = "Starting the desktop\u2026";
    try {
      const s = await callJson("POST", base("/start"), { signal, json: {
        width: Number(width.input.value), height: Number(height.input.value) } });
      showStatus(s);
      say("Desktop started");
      await connect();
    } catch (e) {
      if (signal.aborted) return;
      startBtn.disabled = false;
      if (!(e instanceof ApiError)) throw e;
      showProblem(e, fields, formErr);
      await refresh().catch(() => {});
    }
  });
  stopBtn.addEventListener("click", async () => {
    stopBtn.disabled = true;
    if (view) view.close();
    view = null;
    try {
      showStatus(await callJson("POST", base("/stop"), { signal }));
      say("Desktop stopped");
      viewBox.hidden = true;
    } catch (e) {
      if (signal.aborted) return;
      say(`Stop: ${e.message}`, "error");
      await refresh().catch(() => {});
    }
  });
  reconnect.addEventListener("click", () => connect());

  try {
    await refresh();
  } catch (e) {
    if (signal.aborted) return;
    stateLine.textContent = `Desktop status: ${e.message}`;
    return;
  }
  if (status.resolution) {
    width.input.value = String(status.resolution.width);
    height.input.value = String(status.resolution.height);
  }
  if (status.state === "active") await connect();
}
