// audit.js: the tenant's audit log (GET /v1/audit, docs/api.md "Audit"),
// newest first, with the API's filters (kind, cell, decision) and its
// paging: the newest page is loaded, "Load older records" follows the
// reply's `cursor` page by page, and while "Follow new records" is on,
// records newer than the newest shown are added at the top every 3 s.
// The decision filter is the API's `decision` (allow / deny: a net record's
// verdict or a run's permission answer), so a page of denials is a full
// page of them and paging goes on through the denials only.
//
// Records are keyed by `seq` (one more per record written), so a poll that
// overlaps what is shown adds nothing twice.  The filters live in the hash
// (#/audit?kind=net&cell=ID&decision=deny&limit=50), so a view can be
// linked; changing
// them rewrites it without a navigation, so the focus stays where it was.
import { callJson } from "./api.js";
import { h, field, say, fmtBytes, fmtTime, poll } from "./dom.js";

const KINDS = [["", "All"], ["request", "Requests"], ["cell", "Cells"], ["process", "Processes"],
  ["net", "Network"], ["run", "Runs"]];
const SIZES = ["50", "100", "200", "500"];
const DECISIONS = [["", "Any"], ["deny", "Denied"], ["allow", "Allowed"]];
// A poll asks from this long before the newest record shown: a record
// standing for repeats is written once its second is over, with the first
// repeat's time (docs/api.md, "The audit log"), so it can be older than
// the newest shown and still new.  Duplicates are dropped by seq.
const LATE_MS = 5000;

const keyOf = (r) => (r.seq !== undefined ? String(r.seq) : JSON.stringify(r));
const bySeqDesc = (a, b) => (b.seq ?? 0) - (a.seq ?? 0) || (b.ts_ms ?? 0) - (a.ts_ms ?? 0);

function what(r) {
  if (r.kind === "request") return `${r.method} ${r.path}${r.decision ? ` (${r.decision})` : ""}`;
  return [r.event, r.command, r.transport, r.dst, r.host || r.qname, r.reason].filter(Boolean).join(" ");
}

function row(r) {
  const verdict = r.verdict === "deny" ? "denied" : r.verdict === "allow" ? "allowed" : r.verdict;
  return h("tr", { "data-kind": r.kind, "data-seq": r.seq, "data-verdict": r.verdict,
    "data-decision": r.verdict ?? r.decision,
    class: r.verdict ? `verdict-${r.verdict}` : null },
  h("td", {}, fmtTime(r.ts_ms)), h("td", {}, r.kind), h("td", {}, r.cell || ""), h("td", {}, what(r)),
  h("td", {}, String(r.status ?? verdict ?? r.exitCode ?? "")),
  h("td", {}, r.bytesOut || r.bytesIn ? `${fmtBytes(r.bytesOut || 0)} / ${fmtBytes(r.bytesIn || 0)}` : ""),
  h("td", {}, r.token || ""));
}

export function auditPage(root, signal, query = new URLSearchParams()) {
  const kind = field("Kind", "select", {}, KINDS);
  const cell = field("Cell id", "input", { autocomplete: "off", spellcheck: "false", placeholder: "any cell" });
  const size = field("Records per page", "select", {}, SIZES.map((n) => [n, n]));
  const decision = field("Decision", "select", {}, DECISIONS);
  const follow = field("Follow new records", "input", { type: "checkbox", checked: true });
  follow.input.checked = true;
  kind.input.value = KINDS.some(([k]) => k === query.get("kind")) ? query.get("kind") : "";
  cell.input.value = query.get("cell") || "";
  size.input.value = SIZES.includes(query.get("limit")) ? query.get("limit") : "100";
  decision.input.value = DECISIONS.some(([k]) => k && k === query.get("decision")) ? query.get("decision") : "";
  const form_ = field("Filter", "output");
  form_.wrap.querySelector("label").remove();
  const filters = h("form", { class: "card", role: "search", "aria-label": "Audit filters" },
    h("div", { class: "grid" }, kind.wrap, cell.wrap, size.wrap, decision.wrap, follow.wrap), form_.wrap,
    h("button", { type: "submit" }, "Apply filters"));

  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "audit-h", class: "audit" }, h("thead", {}, h("tr", {},
    ...["Time", "Kind", "Cell", "What", "Status or verdict", "Bytes out / in", "Token"]
      .map((c) => h("th", { scope: "col" }, c)))), tbody);
  // Focusable (not in the Tab order): where the focus goes when the button
  // it was on disappears at the oldest page.
  const summary = h("p", { class: "hint", "aria-live": "polite", id: "audit-summary", tabindex: -1 });
  const older = h("button", { type: "button", hidden: true }, "Load older records");
  root.append(h("h1", { id: "audit-h" }, "Audit"), filters, summary, table, h("div", { class: "row" }, older));

  let records = [];          // newest first, every record loaded
  let seen = new Set();      // their keys
  let cursor = null;         // the next older page's, null at the oldest
  let epoch = 0;             // bumped by a reset: answers of an older view are dropped
  let busy = false;

  const params = (extra = {}) => {
    const p = new URLSearchParams({ limit: size.input.value });
    if (kind.input.value) p.set("kind", kind.input.value);
    if (cell.input.value.trim()) p.set("cell", cell.input.value.trim());
    if (decision.input.value) p.set("decision", decision.input.value);
    for (const [k, v] of Object.entries(extra)) p.set(k, v);
    return p.toString();
  };

  function render() {
    tbody.replaceChildren(...records.map(row));
    if (!records.length) tbody.append(h("tr", {}, h("td", { colspan: 7 }, "No records match these filters.")));
    older.hidden = !cursor;
    summary.textContent = `${records.length} record${records.length === 1 ? "" : "s"} loaded, newest first` +
      (cursor ? "; older ones remain." : records.length ? "; that is all of them." : ".");
  }

  function add(batch) {
    let added = 0;
    for (const r of batch) {
      const k = keyOf(r);
      if (seen.has(k)) continue;
      seen.add(k);
      records.push(r);
      added++;
    }
    records.sort(bySeqDesc);
    return added;
  }

  // The newest page, from scratch (first load, filters changed, or a poll
  // found more new records than a page holds: a gap it cannot fill).
  async function reset() {
    const mine = ++epoch;
    form_.setError("");
    cell.setError("");
    let r;
    try {
      r = await callJson("GET", `/v1/audit?${params()}`, { signal });
    } catch (e) {
      if (mine !== epoch || e.name === "AbortError") return;
      if (e.status === 401) throw e;
      (/"cell"/.test(e.message) ? cell : form_).setError(e.message);
      records = [];
      seen = new Set();
      cursor = null;
      render();
      summary.textContent = "No records: the daemon refused these filters.";
      return;
    }
    if (mine !== epoch) return;
    records = [];
    seen = new Set();
    add(r.records || []);
    cursor = r.cursor || null;
    render();
  }

  older.addEventListener("click", async () => {
    if (busy || !cursor) return;
    busy = true;
    older.disabled = true;
    const mine = epoch;
    try {
      const r = await callJson("GET", `/v1/audit?${params({ cursor })}`, { signal });
      if (mine !== epoch) return;
      add(r.records || []);
      cursor = r.cursor || null;
      render();
      if (!cursor) summary.focus();
    } catch (e) {
      if (e.name !== "AbortError") say(`Older records: ${e.message}`, "error");
    } finally {
      busy = false;
      older.disabled = false;
    }
  });

  async function newer() {
    if (!follow.input.checked || busy) return;
    if (!records.length) return reset();
    const mine = epoch;
    const newest = Math.max(...records.slice(0, 64).map((x) => x.ts_ms || 0));
    const r = await callJson("GET", `/v1/audit?${params({ since: Math.max(0, newest - LATE_MS) })}`, { signal });
    if (mine !== epoch) return;
    const got = r.records || [];
    // A full page none of which is shown yet: more arrived than a page, and
    // what lies between is unknown: start again from the newest.
    if (r.cursor && !got.some((x) => seen.has(keyOf(x)))) return reset();
    if (add(got)) render();
  }

  const apply = () => {
    // The filters go in the hash for a link, without a navigation.
    history.replaceState(null, "", `#/audit?${params()}`);
    return reset();
  };
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    apply();
  });
  for (const f of [kind, size, decision]) f.input.addEventListener("change", apply);
  let first = true;
  poll(signal, 3000, async () => {
    if (first) {
      first = false;
      return reset();
    }
    return newer();
  });
}
