// images.js: the images this token sees (docs/api.md "Images"): source,
// whether ready, size, digest, the lanes on each; build a builtin image
// with its progress shown line by line as the daemon streams it (server-
// sent events of POST /v1/images/{name}/build: `progress`, then `done` or
// `error`), import an OCI or docker-archive tar, export one, delete one
// (confirmed; one in use is 409 naming its lanes and cells).  Builds and
// imports are an admin's; a tenant's token sees the daemon's 403.
import { call, callJson, followEvents } from "./api.js";
import { h, field, fmtBytes, fmtTime, poll, showProblem, keyedRows, sequencer, saveBlob, rowActions } from "./dom.js";

const imagePath = (name, rest = "") => `/v1/images/${encodeURIComponent(name)}${rest}`;

export function imagesPage(root, signal) {
  const alert = h("p", { class: "error", role: "alert", id: "images-alert" });
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "images-h" }, h("thead", {}, h("tr", {},
    ...["Image", "Source", "State", "Size", "Created", "Digest", "Lanes", "Actions"]
      .map((c) => h("th", { scope: "col" }, c)))), tbody);
  const { done, act } = rowActions(alert);

  // The build: one at a time from this page; its lines go to a log that a
  // screen reader does not read out line by line (the outcome is announced).
  const bName = field("Image to build", "input", { list: "build-images", autocomplete: "off", spellcheck: "false",
    required: true });
  const builtins = h("datalist", { id: "build-images" });
  const bState = h("p", { class: "buildstate", role: "status", "data-state": "idle" }, "");
  const bLog = h("pre", { class: "output buildlog", "aria-label": "Build progress", tabindex: 0 });
  const bBtn = h("button", { type: "submit" }, "Build");
  const build = h("form", { class: "card", "aria-labelledby": "img-build-h" }, h("h2", { id: "img-build-h" }, "Build"),
    h("p", { class: "hint" }, "Builds (or rebuilds) a builtin image; debian-bookworm and desktop download packages."),
    builtins, h("div", { class: "row" }, bName.wrap, bBtn), bState, bLog);
  let building = false;
  async function runBuild(name) {
    if (building) return;
    building = true;
    bBtn.disabled = true;
    bName.setError("");
    bLog.textContent = "";
    bState.dataset.state = "running";
    bState.textContent = `Building ${name}\u2026`;
    let outcome = null;
    try {
      await followEvents(imagePath(name, "/build"), (ev, data) => {
        const d = JSON.parse(data);
        if (ev === "progress") {
          bLog.append(`${d.line}\n`);
          bLog.scrollTop = bLog.scrollHeight;
        } else if (ev === "done" || ev === "error") {
          outcome = { ev, d };
        }
      }, signal, { method: "POST" });
      if (!outcome) throw new Error("the build's stream ended without an outcome (the daemon stopped?)");
      if (outcome.ev === "error") throw new Error(outcome.d.detail || outcome.d.title);
      bState.dataset.state = "done";
      bState.textContent = `Built ${name}: ${outcome.d.ready ? "ready" : "not ready"}.`;
      done(`Image ${name} built`);
      await refresh();
    } catch (e) {
      if (e.name === "AbortError") return;
      bState.dataset.state = "failed";
      bState.textContent = `Build of ${name} failed.`;
      bName.setError(e.message);
    } finally {
      building = false;
      bBtn.disabled = false;
    }
  }
  build.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = bName.input.value.trim();
    if (!name) return bName.setError("Name an image to build.");
    runBuild(name);
  });

  const seq = sequencer();
  const refresh = () => seq(() => callJson("GET", "/v1/images", { signal }), ({ images = [] }) => {
    builtins.replaceChildren(...images.filter((i) => i.source === "builtin").map((i) => h("option", { value: i.name })));
    keyedRows(tbody, images, (i) => i.name, (i) => JSON.stringify([i.source, i.ready, i.size, i.digest, i.lanes]),
      (i) => h("tr", { "data-image": i.name },
        h("td", {}, i.name), h("td", {}, i.source || ""),
        h("td", { class: i.ready ? "state-running" : "state-stopped" }, i.ready ? "ready" : "not built"),
        h("td", {}, i.size ? fmtBytes(i.size) : ""), h("td", {}, fmtTime(i.created)),
        h("td", { title: i.digest || "" }, i.digest ? `${i.digest.slice(0, 19)}\u2026` : ""),
        h("td", {}, (i.lanes || []).join(", ")),
        h("td", { class: "actions" },
          i.source === "builtin" && act("Build", i.name, async () => {
            bName.input.value = i.name;
            bName.input.focus();
            await runBuild(i.name);
          }),
          i.source !== "builtin" && act("Export", i.name, async () => {
            const res = await call("GET", imagePath(i.name, "/export"), { signal });
            saveBlob(await res.blob(), `${i.name}.oci.tar`);
            done(`Image ${i.name} exported`);
          }),
          i.source !== "builtin" && act("Delete", i.name, async () => {
            if (!confirm(`Delete image ${i.name}?`)) return;
            await call("DELETE", imagePath(i.name));
            done(`Image ${i.name} deleted`);
            await refresh();
          }))),
      () => h("tr", {}, h("td", { colspan: 8 }, "No images.")));
  });

  // Import: an OCI image layout tar or a docker-archive tar.
  const impName = field("Name", "input", { required: true, autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const impFile = field("Image tar (OCI layout or docker save)", "input", { type: "file",
    accept: ".tar,.tar.gz,.tgz,application/x-tar,application/gzip", required: true });
  const impOut = field("Import", "output");
  impOut.wrap.querySelector("label").remove();
  const imp = h("form", { class: "card", "aria-labelledby": "img-imp-h" }, h("h2", { id: "img-imp-h" }, "Import an image"),
    h("div", { class: "grid" }, impName.wrap, impFile.wrap), impOut.wrap, h("button", { type: "submit" }, "Import image"));
  imp.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [impName, impFile, impOut]) f.setError("");
    const file = impFile.input.files[0];
    if (!file) return impFile.setError("Choose a tar file.");
    const gz = /\.(tgz|gz)$/.test(file.name);
    impOut.input.value = `Uploading ${fmtBytes(file.size)}\u2026`;
    try {
      const im = await callJson("POST", imagePath(impName.input.value.trim(), "/import"),
        { body: file, headers: { "Content-Type": gz ? "application/gzip" : "application/x-tar" } });
      impOut.input.value = "";
      done(`Image ${im.name} imported (${im.digest})`);
      impName.input.value = "";
      await refresh();
    } catch (e) {
      impOut.input.value = "";
      showProblem(e, { name: impName, blob: impFile, entry: impFile, tar: impFile }, impOut);
    }
  });

  root.append(h("h1", { id: "images-h" }, "Images"), alert, table, build, imp);
  poll(signal, 3000, refresh);
}
