// files.js: browse a cell's files, upload, download, edit small text files,
// make directories and delete.
import { call, callJson, cellPath } from "./api.js";
import { h, field, say, fmtBytes, showProblem, saveBlob } from "./dom.js";

const EDIT_MAX = 256 * 1024;    // larger files are downloaded, not edited
const join = (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`;
const q = (p) => `?path=${encodeURIComponent(p)}`;

export function filesPage(root, signal, cell, query) {
  const id = cell.id;
  const dir = query.get("path") || "/root";
  const go = (p) => (location.hash = `#/cells/${id}/files${q(p)}`);
  const pathF = field("Directory", "input", { value: dir, spellcheck: "false", autocomplete: "off" });
  const nav = h("form", { class: "row", "aria-label": "Go to a directory" }, pathF.wrap,
    h("button", { type: "submit" }, "Open"));
  nav.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(pathF.input.value.trim() || "/");
  });

  const upload = field("Upload files here", "input", { type: "file", multiple: true });
  upload.input.addEventListener("change", async () => {
    upload.setError("");
    for (const f of upload.input.files) {
      try {
        await call("PUT", cellPath(id, `/fs/file${q(join(dir, f.name))}`),
          { body: f, headers: { "Content-Type": "application/octet-stream" } });
        say(`Uploaded ${f.name}`);
      } catch (e) {
        upload.setError(`${f.name}: ${e.message}`);
      }
    }
    upload.input.value = "";
    list();
  });
  const mk = field("New directory name", "input", { autocomplete: "off" });
  const mkForm = h("form", { class: "row", "aria-label": "Make a directory" }, mk.wrap,
    h("button", { type: "submit" }, "Make directory"));
  mkForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await call("POST", cellPath(id, `/fs/mkdir${q(join(dir, mk.input.value.trim()))}`));
      mk.input.value = "";
      list();
    } catch (e) {
      showProblem(e, {}, mk);
    }
  });

  const tbody = h("tbody");
  const table = h("table", { "aria-label": `Entries of ${dir}` }, h("thead", {}, h("tr", {},
    ...["Name", "Type", "Size", "Modified", "Actions"].map((c) => h("th", { scope: "col" }, c)))), tbody);
  const editor = h("section", { class: "card", hidden: true, "aria-labelledby": "edit-h" });

  async function download(e) {
    try {
      const res = await call("GET", cellPath(id, `/fs/file${q(e.path)}`));
      saveBlob(await res.blob(), e.name);
    } catch (err) {
      say(`Download ${e.name}: ${err.message}`, "error");
    }
  }

  async function edit(e) {
    const text = field(`Contents of ${e.path}`, "textarea", { rows: 16, spellcheck: "false" });
    const form = h("form", {}, h("h2", { id: "edit-h" }, `Edit ${e.name}`), text.wrap,
      h("div", { class: "row" }, h("button", { type: "submit" }, "Save"),
        h("button", { type: "button", onclick: () => (editor.hidden = true) }, "Close")));
    try {
      const res = await call("GET", cellPath(id, `/fs/file${q(e.path)}`));
      text.input.value = await res.text();
    } catch (err) {
      return say(`Open ${e.name}: ${err.message}`, "error");
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await call("PUT", cellPath(id, `/fs/file${q(e.path)}`),
          { body: text.input.value, headers: { "Content-Type": "application/octet-stream" } });
        say(`Saved ${e.path}`);
        list();
      } catch (err) {
        showProblem(err, {}, text);
      }
    });
    editor.replaceChildren(form);
    editor.hidden = false;
    text.input.focus();
  }

  async function list() {
    let entries;
    try {
      entries = await callJson("GET", cellPath(id, `/fs/entries${q(dir)}`), { signal });
    } catch (e) {
      if (e.name === "AbortError") return;
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "error" }, e.message)));
      return;
    }
    entries.sort((a, b) => (a.entryType === "directory") === (b.entryType === "directory")
      ? a.name.localeCompare(b.name) : a.entryType === "directory" ? -1 : 1);
    const up = dir.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || "/";
    const rows = dir !== "/" ? [h("tr", {}, h("td", {}, h("a", { href: `#/cells/${id}/files${q(up)}` }, "..")),
      h("td", {}, "directory"), h("td"), h("td"), h("td"))] : [];
    for (const e of entries) {
      const isDir = e.entryType === "directory";
      rows.push(h("tr", { "data-entry": e.name },
        h("td", {}, isDir ? h("a", { href: `#/cells/${id}/files${q(e.path)}` }, e.name) : e.name),
        h("td", {}, e.entryType), h("td", {}, isDir ? "" : fmtBytes(e.size)), h("td", {}, e.modified || ""),
        h("td", { class: "actions" },
          !isDir && h("button", { type: "button", "aria-label": `Download ${e.name}`, onclick: () => download(e) },
            "Download"),
          !isDir && e.size <= EDIT_MAX &&
            h("button", { type: "button", "aria-label": `Edit ${e.name}`, onclick: () => edit(e) }, "Edit"),
          h("button", { type: "button", "aria-label": `Delete ${e.name}`, onclick: async () => {
            if (!confirm(`Delete ${e.path}${isDir ? " and everything in it" : ""}?`)) return;
            try {
              await call("DELETE", cellPath(id, `/fs/entry${q(e.path)}${isDir ? "&recursive=true" : ""}`));
              list();
            } catch (err) {
              say(`Delete ${e.name}: ${err.message}`, "error");
            }
          } }, "Delete"))));
    }
    if (!entries.length) rows.push(h("tr", {}, h("td", { colspan: 5 }, "Empty directory.")));
    tbody.replaceChildren(...rows);
  }
  root.append(nav, h("div", { class: "card" }, upload.wrap, mkForm), table, editor);
  list();
}
