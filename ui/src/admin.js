// admin.js: for admin tokens, the tokens: list, create (the bearer is shown
// once, as the API returns it once), revoke; the tenants' quotas and usage.
// The audit log is audit.js.
import { call, callJson } from "./api.js";
import { h, field, say, fmtBytes, fmtTime, showProblem } from "./dom.js";

export function tokensPage(root, signal) {
  const tenant = field("Tenant", "input", { required: true, autocomplete: "off" });
  const label = field("Label", "input", { autocomplete: "off" });
  const admin = field("Admin token", "input", { type: "checkbox" });
  const made = h("div", { "aria-live": "polite" });
  const form_ = field("Create", "output");
  form_.wrap.querySelector("label").remove();
  const form = h("form", { class: "card", "aria-labelledby": "tok-new-h" }, h("h2", { id: "tok-new-h" }, "New token"),
    h("div", { class: "grid" }, tenant.wrap, label.wrap, admin.wrap), form_.wrap,
    h("button", { type: "submit" }, "Create token"), made);
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "tok-h" }, h("thead", {}, h("tr", {},
    ...["Id", "Tenant", "Label", "Admin", "Created", "State", "Actions"].map((c) => h("th", { scope: "col" }, c)))), tbody);
  async function refresh() {
    const { tokens } = await callJson("GET", "/v1/tokens", { signal });
    tbody.replaceChildren(...tokens.map((t) => h("tr", { "data-token": t.id },
      h("td", {}, t.id), h("td", {}, t.tenant), h("td", {}, t.label || ""), h("td", {}, t.admin ? "yes" : "no"),
      h("td", {}, fmtTime(t.createdAtMs)), h("td", {}, t.revoked ? "revoked" : "active"),
      h("td", { class: "actions" }, !t.revoked && h("button", { type: "button", "aria-label": `Revoke ${t.id}`,
        onclick: async () => {
          if (!confirm(`Revoke token ${t.id}? Its open streams end now.`)) return;
          try {
            await call("DELETE", `/v1/tokens/${t.id}`);
            await refresh();
          } catch (e) {
            say(`Revoke ${t.id}: ${e.message}`, "error");
          }
        } }, "Revoke")))));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { tenant: tenant.input.value.trim(), admin: admin.input.checked };
    if (label.input.value.trim()) body.label = label.input.value.trim();
    try {
      const t = await callJson("POST", "/v1/tokens", { json: body });
      const out = h("input", { id: "new-token", readonly: true, value: t.token, class: "secret" });
      made.replaceChildren(h("label", { for: "new-token" }, `Token ${t.id} for ${t.tenant} (shown once: copy it now)`), out);
      out.select();
      await refresh();
    } catch (e) {
      showProblem(e, { tenant, label }, form_);
    }
  });
  root.append(h("h1", { id: "tok-h" }, "Tokens"), table, form);
  refresh().catch((e) => {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "error" },
      e.status === 403 ? "Only admin tokens manage tokens." : e.message)));
  });
}

// Tenants (admin tokens): each tenant's quotas against its usage, and a
// form that changes the quotas given (PUT changes only the fields sent).
export function tenantsPage(root, signal) {
  const QUOTAS = [["maxCells", "cells", "Cells"], ["maxMemory", "memory", "Memory"], ["maxPids", "pids", "Processes"],
    ["maxLanes", "lanes", "Lanes"], ["maxDisk", "disk", "Lane disk"]];
  const bytes = (k) => k === "maxMemory" || k === "maxDisk";
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "ten-h" }, h("thead", {}, h("tr", {},
    h("th", { scope: "col" }, "Tenant"), ...QUOTAS.map(([, , label]) => h("th", { scope: "col" }, `${label} (used / quota)`)))),
  tbody);
  const name = field("Tenant", "input", { required: true, autocomplete: "off" });
  const inputs = Object.fromEntries(QUOTAS.map(([k, , label]) => [k, field(label, "input",
    { autocomplete: "off", placeholder: bytes(k) ? "e.g. 8G" : "e.g. 16" })]));
  const form_ = field("Save", "output");
  form_.wrap.querySelector("label").remove();
  const form = h("form", { class: "card", "aria-labelledby": "ten-edit-h" }, h("h2", { id: "ten-edit-h" }, "Set quotas"),
    h("p", { class: "hint" }, "Only the fields filled in change; a new name creates the tenant."),
    h("div", { class: "grid" }, name.wrap, ...Object.values(inputs).map((f) => f.wrap)), form_.wrap,
    h("button", { type: "submit" }, "Save quotas"));
  const show = (k, v) => (bytes(k) ? fmtBytes(v) : String(v ?? ""));
  async function refresh() {
    const { tenants } = await callJson("GET", "/v1/tenants", { signal });
    tbody.replaceChildren(...tenants.map((t) => h("tr", { "data-tenant": t.name },
      h("td", {}, h("button", { type: "button", class: "link", "aria-label": `Edit ${t.name}`, onclick: () => {
        name.input.value = t.name;
        for (const [k] of QUOTAS) inputs[k].input.value = "";
        name.input.focus();
      } }, t.name)),
      ...QUOTAS.map(([k, u]) => h("td", {}, `${show(k, t.usage?.[u])} / ${show(k, t.quota?.[k])}`)))));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const [k] of QUOTAS) {
      const v = inputs[k].input.value.trim();
      if (v) body[k] = /^\d+$/.test(v) ? Number(v) : v;
    }
    try {
      await callJson("PUT", `/v1/tenants/${encodeURIComponent(name.input.value.trim())}`, { json: body });
      say(`Quotas of ${name.input.value.trim()} saved`);
      for (const f of [name, ...Object.values(inputs), form_]) f.setError("");
      await refresh();
    } catch (e) {
      showProblem(e, Object.fromEntries([...QUOTAS.map(([k]) => [k, inputs[k]]), ["tenant", name]]), form_);
    }
  });
  root.append(h("h1", { id: "ten-h" }, "Tenants"), table, form);
  refresh().catch((e) => {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "error" },
      e.status === 403 ? "Only admin tokens see every tenant." : e.message)));
  });
}
