// lanes.js: the tenant's lanes (docs/api.md "Lanes"): their image, size,
// creation time and whether a running cell uses them, refreshed every 3 s;
// create one on an image, import one from a tar, start a cell on one,
// export one as a tar (fetched with the token, then saved), commit one to
// a new image, delete one (confirmed).  A refusal (a lane in use is 409,
// naming the cell) is shown in the page's alert line, or at the field it
// names in a form.
import { call, callJson } from "./api.js";
import { h, field, fmtBytes, fmtTime, poll, showProblem, keyedRows, sequencer, saveBlob, rowActions } from "./dom.js";

const lanePath = (name, rest = "") => `/v1/lanes/${encodeURIComponent(name)}${rest}`;

export function lanesPage(root, signal) {
  const alert = h("p", { class: "error", role: "alert", id: "lanes-alert" });
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "lanes-h" }, h("thead", {}, h("tr", {},
    ...["Lane", "Image", "Size", "Created", "State", "Actions"].map((c) => h("th", { scope: "col" }, c)))), tbody);
  const images = h("datalist", { id: "lane-images" });

  const { done, act } = rowActions(alert);

  const seq = sequencer();
  const refresh = () => seq(() => callJson("GET", "/v1/lanes", { signal }), ({ lanes = [] }) =>
    keyedRows(tbody, lanes, (l) => l.name, (l) => JSON.stringify([l.image, l.size, l.attached, l.createdAtMs]),
      (l) => h("tr", { "data-lane": l.name },
        h("td", {}, l.name), h("td", {}, l.image || ""), h("td", {}, fmtBytes(l.size)),
        h("td", {}, fmtTime(l.createdAtMs)),
        h("td", { class: l.attached ? "state-running" : "state-stopped" }, l.attached ? "in use" : "free"),
        h("td", { class: "actions" },
          act("Start a cell on", l.name, async () => {
            const c = await callJson("POST", "/v1/cells", { json: { lane: l.name } });
            done(`Cell ${c.id} started on lane ${l.name}`);
            await refresh();
          }, "Start a cell"),
          act("Export", l.name, async () => {
            const res = await call("GET", lanePath(l.name, "/export"), { signal });
            saveBlob(await res.blob(), `${l.name}.tar`);
            done(`Lane ${l.name} exported`);
          }),
          act("Delete", l.name, async () => {
            if (!confirm(`Delete lane ${l.name}? Its files are gone.`)) return;
            await call("DELETE", lanePath(l.name));
            done(`Lane ${l.name} deleted`);
            await refresh();
          }))),
      () => h("tr", {}, h("td", { colspan: 6 }, "No lanes yet: create one below."))));

  // Create: name, image, size.
  const name = field("Name", "input", { required: true, autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const image = field("Image", "input", { list: "lane-images", value: "host", autocomplete: "off" });
  const size = field("Size (optional)", "input", { placeholder: "1G", autocomplete: "off" });
  const createOut = field("Create", "output");
  createOut.wrap.querySelector("label").remove();
  const create = h("form", { class: "card", "aria-labelledby": "lane-new-h" }, h("h2", { id: "lane-new-h" }, "New lane"),
    h("div", { class: "grid" }, name.wrap, image.wrap, size.wrap), createOut.wrap,
    h("button", { type: "submit" }, "Create lane"));
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [name, image, size, createOut]) f.setError("");
    const body = { name: name.input.value.trim() };
    if (image.input.value.trim()) body.image = image.input.value.trim();
    if (size.input.value.trim()) body.size = size.input.value.trim();
    try {
      await callJson("POST", "/v1/lanes", { json: body });
      done(`Lane ${body.name} created`);
      name.input.value = "";
      await refresh();
    } catch (e) {
      showProblem(e, { size, image, name, lane: name, quota: size }, createOut);
    }
  });

  // Import: a tar (or .tar.gz) into a new lane.
  const impName = field("New lane's name", "input", { required: true, autocomplete: "off", spellcheck: "false" });
  const impImage = field("Its image", "input", { list: "lane-images", value: "host", autocomplete: "off" });
  const impSize = field("Its size (optional)", "input", { placeholder: "1G", autocomplete: "off" });
  const impFile = field("Tar file", "input", { type: "file", accept: ".tar,.tar.gz,.tgz,application/x-tar,application/gzip",
    required: true });
  const impOut = field("Import", "output");
  impOut.wrap.querySelector("label").remove();
  const imp = h("form", { class: "card", "aria-labelledby": "lane-imp-h" }, h("h2", { id: "lane-imp-h" }, "Import a lane"),
    h("div", { class: "grid" }, impName.wrap, impImage.wrap, impSize.wrap, impFile.wrap), impOut.wrap,
    h("button", { type: "submit" }, "Import lane"));
  imp.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [impName, impImage, impSize, impFile, impOut]) f.setError("");
    const file = impFile.input.files[0];
    if (!file) return impFile.setError("Choose a tar file.");
    const q = new URLSearchParams();
    if (impImage.input.value.trim()) q.set("image", impImage.input.value.trim());
    if (impSize.input.value.trim()) q.set("size", impSize.input.value.trim());
    const gz = /\.(tgz|gz)$/.test(file.name);
    try {
      await callJson("POST", `${lanePath(impName.input.value.trim(), "/import")}?${q}`,
        { body: file, headers: { "Content-Type": gz ? "application/gzip" : "application/x-tar" } });
      done(`Lane ${impName.input.value.trim()} imported`);
      await refresh();
    } catch (e) {
      showProblem(e, { size: impSize, image: impImage, lane: impName }, impOut);
    }
  });

  // Commit: a lane over its image into a new image.
  const comLane = field("Lane", "input", { required: true, autocomplete: "off", spellcheck: "false" });
  const comImage = field("New image's name", "input", { required: true, autocomplete: "off", spellcheck: "false" });
  const comOut = field("Commit", "output");
  comOut.wrap.querySelector("label").remove();
  const commit = h("form", { class: "card", "aria-labelledby": "lane-com-h" },
    h("h2", { id: "lane-com-h" }, "Commit a lane to an image"),
    h("div", { class: "grid" }, comLane.wrap, comImage.wrap), comOut.wrap, h("button", { type: "submit" }, "Commit"));
  commit.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [comLane, comImage, comOut]) f.setError("");
    try {
      const im = await callJson("POST", lanePath(comLane.input.value.trim(), "/commit"),
        { json: { image: comImage.input.value.trim() } });
      done(`Image ${im.name} committed from lane ${im.lane}`);
    } catch (e) {
      showProblem(e, { image: comImage, lane: comLane }, comOut);
    }
  });

  root.append(h("h1", { id: "lanes-h" }, "Lanes"), alert, table, images, create, imp, commit);
  callJson("GET", "/v1/images", { signal }).then(({ images: list = [] }) =>
    images.replaceChildren(...list.filter((i) => i.ready).map((i) => h("option", { value: i.name }))))
    .catch(() => { /* a convenience */ });
  poll(signal, 3000, refresh);
}
