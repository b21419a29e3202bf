// The study's report (06_report) on two fixture models of different families and depths (Mamba-2, Mamba-1): one command writes it,
// the folder holds everything its pages load, and in headless Chromium every page loads without a
// console error or a request off the disk, every chart is drawn (SVG marks with content), the
// controls redraw (the heatmap browser switches prompts, the flow page k and conv, the prompt page
// its prompt); a screenshot of each page is kept (its folder is printed; REPORT_SCREENSHOTS=DIR puts
// them there). `deno task serve` serves the folder on localhost.
import { join, relative } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { chartStats, CHROMIUM, launchBrowser, openPage, waitDrawn } from "./browser.ts";
import { describe, FIXTURE, pipeline } from "./pipeline_helpers.ts";
import { fileFor } from "../workflows/serve.ts";
import type { Page } from "puppeteer-core";

const MAMBA1 = "tests/fixtures/mamba1-tiny";
const PAGES = ["index", "modes", "flows", "heatmaps", "prompt", "models"];
/** charts each page draws on this study: index 1, modes 1, flows 1, heatmaps 1, prompt one per model, models 1 + one decay per model */
const CHARTS: Record<string, number> = { index: 1, modes: 1, flows: 1, heatmaps: 1, prompt: 2, models: 3 };

Deno.test("serve: paths stay inside the report folder", () => {
  assertEquals(fileFor("/r", "/"), "/r");
  assertEquals(fileFor("/r", "/index.html"), "/r/index.html");
  assertEquals(fileFor("/r", "/data/prompt/r1.js"), "/r/data/prompt/r1.js");
  assertEquals(fileFor("/r", "/../etc/passwd"), null);
  assertEquals(fileFor("/r", "/%2e%2e/etc/passwd"), null);
  assertEquals(fileFor("/r", "/a/../../x"), null);
  assertEquals(fileFor("/r", "/%00"), null);
  assertEquals(fileFor("/r", "/%E0%A4%A"), null);
});

async function drawnStats(page: Page) {
  await waitDrawn(page);
  return await chartStats(page);
}

Deno.test("the report of a two-model study: written by one command, every page drawn in headless Chromium, served", async (t) => {
  if (!(await Deno.stat(CHROMIUM).then(() => true, () => false))) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium), or set CHROMIUM=/path/to/chrome`);
  }
  const tmp = await Deno.makeTempDir({ prefix: "report_" });
  const shots = Deno.env.get("REPORT_SCREENSHOTS") ?? await Deno.makeTempDir({ prefix: "report_screenshots_" });
  await Deno.mkdir(shots, { recursive: true });
  const out = join(tmp, "study");
  const report = join(out, "report");
  const args = [
    "--models", `${FIXTURE},${MAMBA1}`, "--limit", "24", "--out", out,
    "--set", "03_info_flow.filter=all", "--set", "03_info_flow.k=1,3", "--set", "03_info_flow.heads=all,not-fast:1/3",
    "--set", "03_info_flow.conv=false,true", "--set", "03_info_flow.bootstrap=100",
    "--set", "04_heatmap.filter=all", "--set", "04_heatmap.k=2", "--heatmap-prompts", "0-3", "--set", "06_report.prompts=10",
  ];
  try {
    await t.step("one command runs the study and writes the report", async () => {
      const r = await pipeline(args);
      assertEquals(r.code, 0, describe(r));
      assert(r.stdout.includes(`report: ${report}/index.html`) || r.stdout.includes(`report: ${relative(Deno.cwd(), report)}/index.html`), describe(r));
      const m = JSON.parse(await Deno.readTextFile(join(report, "manifest.json")));
      assertEquals(m.counts.models, 2);
      assertEquals(m.counts.prompt_pages, 10);
      for (const f of Object.keys(m.outputs)) assert(await Deno.stat(join(report, f)).then((s) => s.isFile, () => false), `${f} is recorded but missing`);
    });

    await t.step("self-contained: every file a page names is in the folder, nothing from the network", async () => {
      for (const p of PAGES) {
        const html = await Deno.readTextFile(join(report, `${p}.html`));
        const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((x) => x[1]);
        assert(refs.some((r) => r === "assets/vega-embed.min.js"), `${p} loads vega-embed`);
        for (const ref of refs) {
          assert(!/^[a-z]+:/i.test(ref) && !ref.startsWith("//"), `${p}.html refers to ${ref}`);
          assert(await Deno.stat(join(report, ref)).then((s) => s.isFile, () => false), `${p}.html refers to ${ref}, which is not in the folder`);
        }
      }
      for (const f of ["vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "report.js"]) {
        const text = await Deno.readTextFile(join(report, "assets", f));
        assert(!/sourceMappingURL/.test(text), `${f} names a source map that is not shipped`);
      }
      // the report's own script names no address but the schema's (the browser steps refuse any request off the disk)
      const own = (await Deno.readTextFile(join(report, "assets", "report.js"))).replaceAll("https://vega.github.io/schema/vega-lite/v6.json", "");
      assert(!/https?:\/\//.test(own), "report.js names a network address");
      // the data files the overview links to
      const study = await Deno.readTextFile(join(report, "data", "study.js"));
      const files = JSON.parse(study.slice(study.indexOf("] = ") + 4).replace(/;\s*$/, "")).files as { path: string }[];
      assert(files.length >= 2 * 10, `linked files: ${files.length}`);
      for (const f of files) assert(await Deno.stat(join(report, f.path)).then((s) => s.isFile, () => false), `${f.path} is linked but missing`);
    });

    await t.step("deno task report: the report is up to date", async () => {
      const r = await pipeline([...args, "--only", "05_compare_models", "--only", "06_report"]);
      assertEquals(r.code, 0, describe(r));
      assert(r.stdout.includes("nothing to do") && r.stdout.includes("index.html"), describe(r));
    });

    const b = await launchBrowser();
    try {
      await t.step("every page loads without an error and draws every chart; a screenshot of each", async () => {
        for (const p of PAGES) {
          const { page, problems } = await openPage(b);
          await page.goto(`file://${report}/${p}.html`, { waitUntil: "load" });
          const s = await drawnStats(page);
          await page.screenshot({ path: join(shots, `${p}.png`) });
          await page.screenshot({ path: join(shots, `${p}_full.png`), fullPage: true });
          assertEquals(problems, { console: [], errors: [], network: [] }, `${p}.html`);
          assertEquals(s.errors, [], `${p}.html: charts that failed`);
          assertEquals(s.charts, CHARTS[p], `${p}.html: charts`);
          s.marks.forEach((n, i) => assert(n > 0, `${p}.html chart ${i}: no SVG marks`));
          s.items.forEach((n, i) => assert(n > 0, `${p}.html chart ${i}: its marks are empty`));
          const nav = await page.$$eval("header nav a", (as) => as.map((a) => a.getAttribute("href")));
          assertEquals(nav, PAGES.map((x) => `${x}.html`));
          await page.close();
        }
        console.log(`screenshots: ${shots}`);
      });

      await t.step("the heatmap browser switches prompts, metric and model", async () => {
        const { page, problems } = await openPage(b);
        await page.goto(`file://${report}/heatmaps.html`);
        await waitDrawn(page);
        const state = () => page.$eval("#heatmap", (e) => ({ row: e.getAttribute("data-row"), metric: e.getAttribute("data-metric"), svg: e.querySelector("svg")?.outerHTML ?? "" }));
        const first = await state();
        assertEquals(first.row, "0");
        await page.select('select[aria-label="prompt"]', "2");
        await waitDrawn(page);
        const second = await state();
        assertEquals(second.row, "2");
        assert(second.svg !== first.svg && second.svg.length > 1000, "the heatmap was not redrawn");
        assert((await page.$eval(".prompt-info", (e) => e.textContent ?? "")).includes("p_base = "), "p_base stated");
        await page.select('select[aria-label="colour"]', "change");
        await waitDrawn(page);
        const third = await state();
        assertEquals(third.metric, "change");
        assert(third.svg.includes("% change"), "the diverging legend");
        await page.select('select[aria-label="model"]', "1");
        await waitDrawn(page);
        const s = await chartStats(page);
        assert(s.items[0] > 0, "the second model's heatmap");
        // subject tokens and the last one are marked
        const text = await page.$eval("#heatmap svg", (e) => e.textContent ?? "");
        assert(text.includes("[S] ") && text.includes("\u25c0 last"), "subject and last marked");
        assertEquals(problems, { console: [], errors: [], network: [] });
        await page.screenshot({ path: join(shots, "heatmaps_switched.png") });
        await page.close();
      });

      await t.step("the flow page redraws for k and conv; the prompt page for its prompt", async () => {
        const { page, problems } = await openPage(b);
        await page.goto(`file://${report}/flows.html`);
        await waitDrawn(page);
        await page.select('select[aria-label="k (layers per window)"]', "3");
        await page.select('select[aria-label="conv path"]', "true");
        await waitDrawn(page);
        const title = await page.$eval(".chart svg", (e) => e.textContent ?? "");
        assert(title.includes("k = 3 layers") && title.includes("conv path: cut too"), title.slice(0, 300));
        assert((await chartStats(page)).items[0] > 0);
        await page.goto(`file://${report}/prompt.html#r=3`);
        await waitDrawn(page);
        assert((await page.$eval("main", (e) => e.textContent ?? "")).includes("row 3"), "the prompt of the hash");
        await page.select('select[aria-label="prompt"]', "5");
        await waitDrawn(page);
        assert((await page.$eval("main", (e) => e.textContent ?? "")).includes("row 5"), "switched to row 5");
        const s = await chartStats(page);
        assertEquals(s.charts, 2);
        s.items.forEach((n) => assert(n > 0));
        assertEquals(problems, { console: [], errors: [], network: [] });
        await page.close();
      });
    } finally {
      await b.close();
    }

    await t.step("deno task serve serves the folder on localhost", async () => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "workflows/serve.ts", "--dir", report, "--port", "0"],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      try {
        const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        const deadline = Date.now() + 60000;
        while (!/http:\/\/[\d.]+:\d+\//.test(text) && Date.now() < deadline) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        const url = /http:\/\/[\d.]+:\d+\//.exec(text)?.[0];
        assert(url, `no URL in ${text}`);
        assert(url.startsWith("http://127.0.0.1:"), url);
        const get = async (path: string) => {
          const r = await fetch(url + path);
          return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
        };
        const index = await get("");
        assertEquals([index.status, index.type], [200, "text/html; charset=utf-8"]);
        assert(index.body.includes("assets/report.js"));
        assertEquals((await get("assets/vega-embed.min.js")).status, 200);
        assertEquals((await get("data/study.js")).type, "text/javascript; charset=utf-8");
        assertEquals((await get("nope.html")).status, 404);
        // a client that sends `..` as it is (fetch would resolve it away): nothing outside the folder
        // (the server's URL parsing resolves a plain `/../x` to `/x`; encoded ones are refused)
        const raw = async (path: string) => {
          const port = Number(/:(\d+)\/$/.exec(url)![1]);
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
          const chunks: Uint8Array[] = [];
          const buf = new Uint8Array(4096);
          for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
          conn.close();
          return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c]))).split("\r\n")[0];
        };
        for (const p of ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/data/..%2f..%2f..%2fmanifest.json", "/data/%2e%2e/%2e%2e/%2e%2e/config.json"]) {
          assert(/^HTTP\/1\.1 (400|404)/.test(await raw(p)), `${p}: ${await raw(p)}`);
        }
        reader.releaseLock();
      } finally {
        child.kill("SIGTERM");
        await child.status;
        await child.stdout.cancel().catch(() => {});
        await child.stderr.cancel().catch(() => {});
      }
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
