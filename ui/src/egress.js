// egress.js: a cell's network decisions from the audit (kind=net), polled
// live, and its policy (view, replace with errors shown at the field).
import { callJson } from "./api.js";
import { h, field, say, fmtBytes, fmtTime, poll, showProblem } from "./dom.js";

export function egressPage(root, signal, cell) {
  const filter = field("Show", "select", {}, [["all", "All decisions"], ["deny", "Denied only"],
    ["allow", "Allowed only"]]);
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "egress-h", class: "egress" }, h("thead", {}, h("tr", {},
    ...["Time", "Verdict", "Event", "Destination", "Host", "Bytes out", "Bytes in", "Rule", "Reason"]
      .map((c) => h("th", { scope: "col" }, c)))), tbody);
  let records = [];
  const render = () => {
    const shown = [...records].reverse();
    tbody.replaceChildren(...shown.map((r) => h("tr", { class: `verdict-${r.verdict}`, "data-verdict": r.verdict },
      h("td", {}, fmtTime(r.ts_ms)), h("td", {}, r.verdict === "deny" ? "denied" : r.verdict === "allow" ? "allowed" : r.verdict || ""),
      h("td", {}, [r.event, r.transport].filter(Boolean).join(" ")),
      h("td", {}, r.dst || (r.qname ? `dns ${r.qname}` : "")), h("td", {}, r.host || r.qname || ""),
      h("td", {}, fmtBytes(r.bytesOut)), h("td", {}, fmtBytes(r.bytesIn)),
      h("td", {}, r.rule ?? ""), h("td", {}, r.reason || (r.count > 1 ? `x${r.count}` : "")))));
    if (!shown.length)
      tbody.append(h("tr", {}, h("td", { colspan: 9 }, cell.policy ? "No decisions yet."
        : "This cell has no policy, so no network: nothing to decide.")));
  };
  // The filter is the API's ?decision=, so 200 denials are 200 rows even
  // when allowed connections outnumber them.
  let seen = null;   // re-rendered only when the records changed
  const fetchRecords = async () => {
    const want = filter.input.value;
    const decision = want === "all" ? "" : `&decision=${want}`;
    const r = await callJson("GET", `/v1/audit?kind=net&limit=200${decision}&cell=${encodeURIComponent(cell.id)}`,
      { signal });
    if (filter.input.value !== want) return;   // a newer choice is on its way
    const key = JSON.stringify(r.records || []);
    if (key === seen) return;
    seen = key;
    records = r.records || [];
    render();
  };
  filter.input.addEventListener("change", () => fetchRecords().catch((e) => {
    if (!signal.aborted) say(`Egress decisions: ${e.message}`, "error");
  }));
  root.append(h("h2", { id: "egress-h" }, "Egress decisions"), filter.wrap, table);
  poll(signal, 2000, fetchRecords);
}

export function policyPage(root, signal, cell) {
  const text = field("Policy (JSON; see docs/egress.md)", "textarea", { rows: 14, spellcheck: "false",
    value: cell.policy ? JSON.stringify(cell.policy, null, 2) : "" });
  const live = h("p", {}, cell.policy ? "" : "This cell has no policy: it has no network.");
  const form = h("form", { class: "card", "aria-labelledby": "policy-h" }, h("h2", { id: "policy-h" }, "Network policy"),
    live, text.wrap, h("button", { type: "submit" }, "Save policy"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    text.setError("");
    let doc;
    try {
      doc = JSON.parse(text.input.value);
    } catch (e) {
      text.setError(`Not JSON: ${e.message}`);
      return text.input.focus();
    }
    try {
      await callJson("PUT", `/v1/cells/${encodeURIComponent(cell.id)}/policy`, { json: doc });
      say("Policy saved: it applies to new connections");
    } catch (e) {
      showProblem(e, {}, text);
      text.input.focus();
    }
  });
  root.append(form);
}
