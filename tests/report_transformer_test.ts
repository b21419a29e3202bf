// A study of a Mamba model and a Transformer (the mamba2-tiny and pythia-tiny fixtures): one command runs
// both and writes the report, and in headless Chromium every page draws both models. The Transformer has
// one mode and no decays: the overview leaves its scan accuracy empty, the modes page says there is
// nothing to compare, the prompt page lists its one mode, the models page draws its curves beside the
// Mamba model's and says it has no decay histogram.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { chartStats, CHROMIUM, launchBrowser, openPage, waitDrawn } from "./browser.ts";
import { describe, FIXTURE, pipeline } from "./pipeline_helpers.ts";
import type { Page } from "puppeteer-core";

const PYTHIA = "tests/fixtures/pythia-tiny";
const PAGES = ["index", "modes", "flows", "heatmaps", "prompt", "models"];
/** charts per page: the prompt page one per model, the models page the curves and one decay chart (the Mamba model's) */
const CHARTS: Record<string, number> = { index: 1, modes: 1, flows: 1, heatmaps: 1, prompt: 2, models: 2 };
const NO_PROBLEMS = { console: [], errors: [], network: [] };

const text = (page: Page, sel = "main") => page.$eval(sel, (e) => (e.textContent ?? "").replace(/\s+/g, " "));

async function drawn(page: Page) {
  await waitDrawn(page);
  const s = await chartStats(page);
  assertEquals(s.errors, [], "charts that failed");
  s.items.forEach((n, i) => assert(n > 0, `chart ${i}: its marks are empty`));
  return s;
}

Deno.test("the report of a Mamba + Transformer study (mamba2-tiny, pythia-tiny): both models on every page", async (t) => {
  if (!(await Deno.stat(CHROMIUM).then(() => true, () => false))) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium), or set CHROMIUM=/path/to/chrome`);
  }
  const tmp = await Deno.makeTempDir({ prefix: "report_transformer_" });
  const out = join(tmp, "study");
  const report = join(out, "report");
  try {
    await t.step("one command runs both models and writes the report", async () => {
      const r = await pipeline([
        "--models", `${FIXTURE},${PYTHIA}`, "--limit", "16", "--out", out,
        "--set", "03_info_flow.filter=all", "--set", "03_info_flow.k=1", "--set", "03_info_flow.bootstrap=50",
        "--set", "04_heatmap.filter=all", "--set", "04_heatmap.k=2", "--heatmap-prompts", "0-1", "--set", "06_report.prompts=4",
      ]);
      assertEquals(r.code, 0, describe(r));
      const m = JSON.parse(await Deno.readTextFile(join(report, "manifest.json")));
      assertEquals(m.counts.models, 2);
      assert(r.stdout.includes("02_compare: not applicable"), describe(r));
    });

    const b = await launchBrowser();
    try {
      await t.step("every page loads without an error and draws every chart", async () => {
        for (const p of PAGES) {
          const { page, problems } = await openPage(b);
          await page.goto(`file://${report}/${p}.html`, { waitUntil: "load" });
          const s = await drawn(page);
          assertEquals(problems, NO_PROBLEMS, `${p}.html`);
          assertEquals(s.charts, CHARTS[p], `${p}.html: charts`);
          await page.close();
        }
      });

      await t.step("overview: the Transformer's family, its attention accuracy, no scan accuracy", async () => {
        const { page, problems } = await openPage(b);
        await page.goto(`file://${report}/index.html`);
        await drawn(page);
        const rows = await page.$$eval("table tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => (td.textContent ?? "").trim())));
        const pythia = rows.find((r) => r[0] === "pythia-tiny");
        assert(pythia, `no row for pythia-tiny in ${JSON.stringify(rows)}`);
        assertEquals(pythia[1], "gpt_neox");
        assertEquals(pythia[6], "–", "scan accuracy of a one-mode model");
        assert(/%$/.test(pythia[7]), `attention accuracy: ${pythia[7]}`);
        assert(rows.some((r) => r[0] === "mamba2-tiny" && r[1] === "mamba2" && /%$/.test(r[6])), "the Mamba model's row");
        assertEquals(problems, NO_PROBLEMS);
        await page.close();
      });

      await t.step("scan vs attention: the Mamba model's differences; the Transformer has nothing to compare", async () => {
        const { page, problems } = await openPage(b);
        await page.goto(`file://${report}/modes.html`);
        await drawn(page);
        assert((await text(page)).includes("hit differs in"), "the Mamba model's summary");
        await page.select('select[aria-label="model"]', "1");
        await waitDrawn(page);
        const s = await chartStats(page);
        assertEquals(s.charts, 0, "no chart for a one-mode model");
        assert((await text(page)).includes("pythia-tiny (gpt_neox) runs in one mode only (attention): there is nothing to compare"), await text(page));
        assertEquals(problems, NO_PROBLEMS);
        await page.close();
      });

      await t.step("information flow and heatmaps: the Transformer's curves and heatmap are drawn", async () => {
        for (const p of ["flows", "heatmaps"]) {
          const { page, problems } = await openPage(b);
          await page.goto(`file://${report}/${p}.html`);
          await drawn(page);
          const svg = () => page.$eval(".chart svg", (e) => e.outerHTML);
          const before = await svg();
          await page.select('select[aria-label="model"]', "1");
          const s = await drawn(page);
          assertEquals(s.charts, 1, p);
          assert((await svg()) !== before, `${p}: the second model was not drawn`);
          assert((await text(page)).includes("pythia-tiny"), p);
          assertEquals(problems, NO_PROBLEMS, p);
          await page.close();
        }
      });

      await t.step("one prompt: each model's predictions in the modes it runs", async () => {
        const { page, problems } = await openPage(b);
        await page.goto(`file://${report}/prompt.html#r=0`);
        await drawn(page);
        const body = await text(page);
        assert(body.includes("mamba2-tiny") && body.includes("pythia-tiny"), body.slice(0, 500));
        const modes = await page.$$eval("table tr", (trs) => trs.map((tr) => (tr.querySelector("td")?.textContent ?? "").trim()).filter((x) => x));
        assertEquals(modes.filter((x) => x === "scan").length, 1, `modes listed: ${modes}`);
        assertEquals(modes.filter((x) => x === "attention").length, 2, `modes listed: ${modes}`);
        assertEquals(problems, NO_PROBLEMS);
        await page.close();
      });

      await t.step("models: both models' curves in one chart; a decay histogram for the Mamba model only", async () => {
        const { page, problems } = await openPage(b);
        await page.goto(`file://${report}/models.html`);
        await drawn(page);
        const legend = await page.$eval(".chart svg", (e) => e.textContent ?? "");
        assert(legend.includes("mamba2-tiny") && legend.includes("pythia-tiny"), "both models in the curves' legend");
        assert((await text(page)).includes("pythia-tiny (gpt_neox) has no decay."));
        assertEquals(problems, NO_PROBLEMS);
        await page.close();
      });
    } finally {
      await b.close();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
