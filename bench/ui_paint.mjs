// ui_paint.mjs N NAME=URL...: loads each URL N times in headless chromium,
// a fresh context (empty cache) each time, and prints a markdown table of
// first-contentful-paint, the load event (both from the page's own
// Performance timeline, from navigation start) and the bytes transferred.
// playwright-core comes from tests/ui (its lockfile); bench/ui.sh installs it.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/ui/package.json"));
const { chromium } = require("playwright-core");

const n = Number(process.argv[2]);
const targets = process.argv.slice(3).map((a) => [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)]);
const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  const k = (s.length - 1) * p, i = Math.floor(k);
  return i + 1 < s.length ? s[i] + (s[i + 1] - s[i]) * (k - i) : s[i];
};

const browser = await chromium.launch({ executablePath: process.env.CELL_CHROMIUM || "/usr/bin/chromium",
  headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
const rows = [];
try {
  for (const [name, url] of targets) {
    const fcp = [], load = [], bytes = [];
    for (let i = 0; i < n + 1; i++) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(url, { waitUntil: "load" });
      // FCP is recorded once the first frame with content is painted.
      const m = await page.evaluate(() => new Promise((resolve) => {
        const done = () => {
          const p = performance.getEntriesByName("first-contentful-paint")[0];
          if (!p) return false;
          const nav = performance.getEntriesByType("navigation")[0];
          const res = performance.getEntriesByType("resource");
          resolve({ fcp: p.startTime, load: nav.loadEventStart,
                    bytes: nav.transferSize + res.reduce((s, r) => s + r.transferSize, 0) });
          return true;
        };
        if (!done()) new PerformanceObserver(() => done()).observe({ type: "paint", buffered: true });
      }));
      await ctx.close();
      if (i === 0) continue;   // the first load warms the browser process, not the page
      fcp.push(m.fcp), load.push(m.load), bytes.push(m.bytes);
    }
    rows.push(`| ${name} | ${q(fcp, 0.5).toFixed(1)} | ${q(fcp, 0.9).toFixed(1)} | ${q(load, 0.5).toFixed(1)} | ` +
              `${q(load, 0.9).toFixed(1)} | ${Math.round(q(bytes, 0.5) / 1024)} |`);
  }
} finally {
  await browser.close();
}
console.log("| server | first paint p50 (ms) | p90 | load event p50 (ms) | p90 | transferred (KiB) |");
console.log("|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
