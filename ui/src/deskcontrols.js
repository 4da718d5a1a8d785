// deskcontrols.js: what drives a running desktop besides its view
// (docs/desktop.md, docs/api.md "Desktop"): launch an app, the window list
// with focus, move and resize, opening a URL or file, a screenshot (format,
// region) saved as a download, the clipboard, and recordings (start, stop,
// list, download, delete).  desktop.js builds the view; this module builds the controls
// under it and is told the desktop's state, so they show only while it is
// active (every route here answers 409 otherwise).
//
// A recording or a screenshot is downloaded with fetch and the token in its header, then
// handed to the browser as a blob: a plain link would need the token in
// its URL (docs/ui.md, docs/security.md).
import { call, callJson, cellPath, ApiError } from "./api.js";
import { h, field, say, fmtBytes, keyedRows, rowActions, saveBlob, showProblem, poll } from "./dom.js";

const SELECTIONS = [["clipboard", "Clipboard"], ["primary", "Primary selection"], ["secondary", "Secondary selection"]];

// One labelled section with its heading.
function section(id, title, ...children) {
  return h("section", { class: "card", "aria-labelledby": id }, h("h3", { id }, title), ...children);
}

// Arguments one a line: a line is one argument, spaces kept.
const argsOf = (text) => text.split("\n").map((s) => s.replace(/\r$/, "")).filter((s) => s !== "");

export function deskControls(root, signal, cell) {
  const base = (rest) => cellPath(cell.id, `/desktop${rest}`);
  const box = h("div", { class: "deskcontrols", hidden: true });
  root.append(box);
  let active = false;

  // ---- launch ----------------------------------------------------------------------
  const app = field("App", "input", { autocomplete: "off", spellcheck: "false", placeholder: "xterm" });
  const args = field("Arguments (one a line)", "textarea", { rows: 3, spellcheck: "false" });
  const wait = field("Wait for its window", "input", { type: "checkbox" });
  wait.input.checked = true;
  const launchErr = field("Launch", "output");
  launchErr.wrap.querySelector("label").remove();
  const launched = h("p", { class: "hint", "aria-live": "polite", id: `desk-launched-${cell.id}` });
  const launchForm = h("form", { "aria-label": "Launch an app" },
    h("div", { class: "grid" }, app.wrap, args.wrap, wait.wrap), launchErr.wrap,
    h("button", { type: "submit" }, "Launch"), launched);
  launchForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [app, args, launchErr]) f.setError("");
    // The last launch's line goes: it must not read as this one's outcome.
    launched.textContent = "";
    delete launched.dataset.process;
    if (!app.input.value.trim()) return void app.setError("App: the program to run on the desktop, e.g. xterm");
    const btn = launchForm.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const r = await callJson("POST", base("/launch"), { signal, json: {
        app: app.input.value.trim(), args: argsOf(args.input.value), wait: wait.input.checked } });
      launched.textContent = `Launched ${app.input.value.trim()}: process ${r.processId}` +
        (r.windowId ? `, window ${r.windowId}` : "") + ".";
      launched.dataset.process = r.processId;
      say(`Launched ${app.input.value.trim()}`);
      await loadWindows();
    } catch (e) {
      if (signal.aborted || e.name === "AbortError") return;
      if (!(e instanceof ApiError)) throw e;
      showProblem(e, { app, args }, launchErr);
    } finally {
      btn.disabled = false;
    }
  });

  // ---- windows ---------------------------------------------------------------------
  const winAlert = h("p", { class: "field-error", role: "alert" });
  const winActs = rowActions(winAlert);
  const winBody = h("tbody");
  const winTable = h("table", { "aria-labelledby": `desk-win-h-${cell.id}`, class: "deskwindows" },
    h("thead", {}, h("tr", {}, ...["Title", "Position", "Size", "Focused", ""].map((c) => h("th", { scope: "col" }, c)))),
    winBody);
  const winRefresh = h("button", { type: "button" }, "Refresh windows");
  const winName = (w) => `window ${w.title || "(untitled)"} (${w.id})`;
  const showWindows = (list) => keyedRows(winBody, list, (w) => w.id, (w) => JSON.stringify(w), (w) =>
    h("tr", { "data-window": w.id, "data-active": String(w.isActive) },
      h("td", {}, w.title || "(untitled)"), h("td", {}, `${w.x}, ${w.y}`), h("td", {}, `${w.width}x${w.height}`),
      h("td", {}, w.isActive ? "yes" : ""),
      h("td", {}, winActs.act("Focus", winName(w), async () => {
        await callJson("POST", base(`/windows/${encodeURIComponent(w.id)}/focus`), { signal });
        winActs.done(`Focused ${winName(w)}`);
        await loadWindows();
      }))),
  () => h("tr", {}, h("td", { colspan: 5 }, "No windows.")));
  // Move or resize: the window chosen from the list, the daemon's answer
  // (the window's new record) shown, a refusal at the field it names.
  const winSel = field("Window", "select");
  const mvX = field("X", "input", { type: "number", inputmode: "numeric" });
  const mvY = field("Y", "input", { type: "number", inputmode: "numeric" });
  const rsW = field("Window width", "input", { type: "number", inputmode: "numeric", min: 1 });
  const rsH = field("Window height", "input", { type: "number", inputmode: "numeric", min: 1 });
  const geoErr = field("Move or resize", "output");
  geoErr.wrap.querySelector("label").remove();
  const geoDone = h("p", { class: "hint", "aria-live": "polite", id: `desk-geo-${cell.id}` });
  const geoMove = h("button", { type: "button" }, "Move window");
  const geoResize = h("button", { type: "button" }, "Resize window");
  const num = (f) => (f.input.value.trim() === "" ? undefined : Number(f.input.value));
  const geometry = async (what, json, fields, need) => {
    for (const f of [winSel, mvX, mvY, rsW, rsH, geoErr]) f.setError("");
    geoDone.textContent = "";
    if (!winSel.input.value) return void winSel.setError("Window: none to choose; launch an app first");
    for (const [f, name] of need)
      if (f.input.value.trim() === "") return void f.setError(`${name}: a number is required`);
    const label = winSel.input.selectedOptions[0]?.textContent || winSel.input.value;
    try {
      const w = await callJson("POST", base(`/windows/${encodeURIComponent(winSel.input.value)}/${what}`), { signal, json });
      geoDone.textContent = `${what === "move" ? "Moved" : "Resized"} ${label}: now at ${w.x}, ${w.y}, ${w.width}x${w.height}.`;
      say(geoDone.textContent);
      await loadWindows();
    } catch (e) {
      if (signal.aborted || e.name === "AbortError") return;
      if (!(e instanceof ApiError)) throw e;
      showProblem(e, fields, geoErr);
    }
  };
  geoMove.addEventListener("click", () => geometry("move", { x: num(mvX), y: num(mvY) },
    { '"x"': mvX, '"y"': mvY, "x and y": mvX, "window": winSel }, [[mvX, "X"], [mvY, "Y"]]));
  geoResize.addEventListener("click", () => geometry("resize", { width: num(rsW), height: num(rsH) },
    { '"width"': rsW, '"height"': rsH, "window": winSel }, [[rsW, "Width"], [rsH, "Height"]]));
  const geoForm = h("div", { role: "group", "aria-label": "Move or resize a window" },
    h("div", { class: "grid" }, winSel.wrap, mvX.wrap, mvY.wrap, rsW.wrap, rsH.wrap), geoErr.wrap,
    h("div", { class: "row" }, geoMove, geoResize), geoDone);
  // The chooser follows the list; the chosen window stays chosen.
  const chooser = (list) => {
    const keep = winSel.input.value;
    const sig = JSON.stringify(list.map((w) => [w.id, w.title]));
    if (winSel.input.dataset.sig === sig) return;
    winSel.input.dataset.sig = sig;
    winSel.input.replaceChildren(...list.map((w) => h("option", { value: w.id }, winName(w))));
    if (list.some((w) => w.id === keep)) winSel.input.value = keep;
  };
  const loadWindows = async () => {
    if (!active) return;
    const list = (await callJson("GET", base("/windows"), { signal })).windows || [];
    showWindows(list);
    chooser(list);
  };

  // ---- open ------------------------------------------------------------------------
  // xdg-open in the cell: the daemon answers once it started, so what opens
  // is seen in the view and the window list, not here.
  const target = field("URL or file", "input", { autocomplete: "off", spellcheck: "false",
    placeholder: "https://example.com or /root/page.html" });
  const openErr = field("Open", "output");
  openErr.wrap.querySelector("label").remove();
  const opened = h("p", { class: "hint", "aria-live": "polite", id: `desk-opened-${cell.id}` });
  const openForm = h("form", { "aria-label": "Open a URL or file" }, target.wrap, openErr.wrap,
    h("button", { type: "submit" }, "Open"), opened);
  openForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [target, openErr]) f.setError("");
    opened.textContent = "";
    const btn = openForm.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const r = await callJson("POST", base("/open"), { signal, json: { target: target.input.value } });
      opened.textContent = `Opened ${target.input.value}: process ${r.processId}.`;
      opened.dataset.process = r.processId;
      say(opened.textContent);
    } catch (e) {
      if (signal.aborted || e.name === "AbortError") return;
      if (!(e instanceof ApiError)) throw e;
      // Every refusal of /open is about the target (empty, a leading '-',
      // control characters, a file the cell does not have).
      showProblem(e, { target }, target);
    } finally {
      btn.disabled = false;
    }
  });

  // ---- screenshot ------------------------------------------------------------------
  // The whole screen, or a region when any of its fields is filled; fetched
  // with the token in the header and saved as a download.
  const shotFmt = field("Format", "select", {}, [["png", "PNG"], ["jpeg", "JPEG"], ["webp", "WebP"]]);
  const shotX = field("Region x", "input", { type: "number", inputmode: "numeric", min: 0 });
  const shotY = field("Region y", "input", { type: "number", inputmode: "numeric", min: 0 });
  const shotW = field("Region width", "input", { type: "number", inputmode: "numeric", min: 1 });
  const shotH = field("Region height", "input", { type: "number", inputmode: "numeric", min: 1 });
  const shotErr = field("Screenshot", "output");
  shotErr.wrap.querySelector("label").remove();
  const shotBtn = h("button", { type: "button" }, "Download screenshot");
  const shotDone = h("p", { class: "hint", "aria-live": "polite", id: `desk-shot-${cell.id}` });
  const regionFields = { x: shotX, y: shotY, width: shotW, height: shotH };
  shotBtn.addEventListener("click", async () => {
    for (const f of [shotFmt, shotX, shotY, shotW, shotH, shotErr]) f.setError("");
    shotDone.textContent = "";
    const q = new URLSearchParams({ format: shotFmt.input.value });
    const filled = Object.entries(regionFields).filter(([, f]) => f.input.value.trim() !== "");
    if (filled.length && filled.length < 4) {
      const missing = Object.entries(regionFields).find(([, f]) => f.input.value.trim() === "");
      return void missing[1].setError(`Region ${missing[0]}: a region needs x, y, width and height (or none for the whole screen)`);
    }
    for (const [k, f] of filled) q.set(k, f.input.value.trim());
    shotBtn.disabled = true;
    try {
      const res = await call("GET", base(`/screenshot${filled.length ? "/region" : ""}?${q}`), { signal });
      const blob = await res.blob();
      const ext = shotFmt.input.value === "jpeg" ? "jpg" : shotFmt.input.value;
      saveBlob(blob, `desktop-${cell.id}${filled.length ? "-region" : ""}.${ext}`);
      shotDone.textContent = `Saved a ${shotFmt.input.value} screenshot${filled.length ? " of the region" : ""} (${fmtBytes(blob.size)}).`;
      say(shotDone.textContent);
    } catch (e) {
      if (signal.aborted || e.name === "AbortError") return;
      if (!(e instanceof ApiError)) throw e;
      showProblem(e, { "parameter format": shotFmt, "parameter x ": shotX, "parameter y ": shotY,
        "parameter width": shotW, "parameter height": shotH, "region": shotX }, shotErr);
    } finally {
      shotBtn.disabled = false;
    }
  });
  winRefresh.addEventListener("click", () => loadWindows().catch((e) => winActs.fail("Windows", e)));

  // ---- clipboard -------------------------------------------------------------------
  const clipText = field("Clipboard text", "textarea", { rows: 3, spellcheck: "false" });
  const clipSel = field("Selection", "select", {}, SELECTIONS);
  const clipRead = h("button", { type: "button" }, "Read clipboard");
  const clipWrite = h("button", { type: "button" }, "Write clipboard");
  const clipErr = field("Clipboard", "output");
  clipErr.wrap.querySelector("label").remove();
  clipRead.addEventListener("click", async () => {
    clipErr.setError("");
    try {
      const r = await callJson("GET", base(`/clipboard?selection=${encodeURIComponent(clipSel.input.value)}`), { signal });
      clipText.input.value = r.text;
      say(`Read the desktop's ${r.selection}`);
    } catch (e) {
      if (e.name !== "AbortError") showProblem(e, { selection: clipSel }, clipErr);
    }
  });
  clipWrite.addEventListener("click", async () => {
    clipErr.setError("");
    try {
      await callJson("POST", base("/clipboard"), { signal, json: { text: clipText.input.value, selection: clipSel.input.value } });
      say(`Wrote the desktop's ${clipSel.input.value}`);
    } catch (e) {
      if (e.name !== "AbortError") showProblem(e, { text: clipText, selection: clipSel }, clipErr);
    }
  });

  // ---- recordings ------------------------------------------------------------------
  const fps = field("Frames per second", "input", { type: "number", value: "30", inputmode: "numeric" });
  const recStart = h("button", { type: "button" }, "Start recording");
  const recStop = h("button", { type: "button", disabled: true }, "Stop recording");
  const recErr = field("Recording", "output");
  recErr.wrap.querySelector("label").remove();
  const recAlert = h("p", { class: "field-error", role: "alert" });
  const recActs = rowActions(recAlert);
  const recBody = h("tbody");
  const recTable = h("table", { "aria-labelledby": `desk-rec-h-${cell.id}`, class: "deskrecordings" },
    h("thead", {}, h("tr", {}, ...["Recording", "Status", "Started", "Size", ""].map((c) => h("th", { scope: "col" }, c)))),
    recBody);
  const recName = (r) => `recording ${r.fileName || r.id}`;
  const showRecordings = (list) => {
    const recording = list.some((r) => r.status === "recording");
    recStart.disabled = recording;
    recStop.disabled = !recording;
    keyedRows(recBody, list, (r) => r.id, (r) => JSON.stringify(r), (r) =>
      h("tr", { "data-recording": r.id, "data-status": r.status },
        h("td", {}, r.fileName || r.id), h("td", {}, r.status), h("td", {}, r.startedAt || ""),
        h("td", {}, fmtBytes(r.bytes)),
        h("td", { class: "row" }, r.status === "completed" ? recActs.act("Download", recName(r), async () => {
          const res = await call("GET", base(`/recordings/${encodeURIComponent(r.id)}/download`), { signal });
          saveBlob(await res.blob(), r.fileName || `${r.id}.mp4`);
          recActs.done(`Downloaded ${recName(r)}`);
        }) : null, r.status !== "recording" ? recActs.act("Delete", recName(r), async () => {
          if (!confirm(`Delete ${recName(r)}?`)) return;
          await callJson("DELETE", base(`/recordings/${encodeURIComponent(r.id)}`), { signal });
          recActs.done(`Deleted ${recName(r)}`);
          await loadRecordings();
        }) : null)),
    () => h("tr", {}, h("td", { colspan: 5 }, "No recordings.")));
  };
  const loadRecordings = async () => {
    if (!active) return;
    showRecordings((await callJson("GET", base("/recordings"), { signal })).recordings || []);
  };
  recStart.addEventListener("click", async () => {
    for (const f of [fps, recErr]) f.setError("");
    recStart.disabled = true;
    try {
      await callJson("POST", base("/recording/start"), { signal, json: { fps: Number(fps.input.value) } });
      say("Recording started");
    } catch (e) {
      if (e.name !== "AbortError") showProblem(e, { fps }, recErr);
    }
    await loadRecordings().catch((e) => recActs.fail("Recordings", e));
  });
  recStop.addEventListener("click", async () => {
    recErr.setError("");
    recStop.disabled = true;
    try {
      await callJson("POST", base("/recording/stop"), { signal });
      say("Recording stopped");
    } catch (e) {
      if (e.name !== "AbortError") showProblem(e, {}, recErr);
    }
    await loadRecordings().catch((e) => recActs.fail("Recordings", e));
  });

  box.append(
    section(`desk-launch-h-${cell.id}`, "Launch an app", launchForm),
    section(`desk-win-h-${cell.id}`, "Windows", winAlert, winTable, h("div", { class: "row" }, winRefresh), geoForm),
    section(`desk-open-h-${cell.id}`, "Open a URL or file", openForm),
    section(`desk-shot-h-${cell.id}`, "Screenshot", h("div", { class: "grid" }, shotFmt.wrap, shotX.wrap, shotY.wrap,
      shotW.wrap, shotH.wrap), shotErr.wrap, h("div", { class: "row" }, shotBtn), shotDone),
    section(`desk-clip-h-${cell.id}`, "Clipboard", h("div", { class: "grid" }, clipText.wrap, clipSel.wrap),
      clipErr.wrap, h("div", { class: "row" }, clipRead, clipWrite)),
    section(`desk-rec-h-${cell.id}`, "Recordings", h("div", { class: "grid" }, fps.wrap), recErr.wrap,
      h("div", { class: "row" }, recStart, recStop), recAlert, recTable));

  // The lists follow the desktop while it runs (a window the agent opened,
  // a recording that ended on its own): polled, rows kept when unchanged.
  poll(signal, 3000, async () => {
    if (!active) return;
    await Promise.all([loadWindows(), loadRecordings()]);
  });

  return {
    // The desktop's state from desktop.js's status reads.
    update(state) {
      const was = active;
      active = state === "active";
      box.hidden = !active;
      if (active && !was) Promise.all([loadWindows(), loadRecordings()]).catch((e) => {
        if (!signal.aborted) say(`Desktop lists: ${e.message}`, "error");
      });
    },
  };
}
