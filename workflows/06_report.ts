// 06_report: the study as one self-contained folder of HTML pages with interactive Vega-Lite charts
// (`outputs/<study>/report/index.html`): overview, scan vs attention, information flow (03), heatmap
// browser (04), one page per prompt, and the models compared with their decay histograms. Vega,
// Vega-Lite and vega-embed are copied in from their npm packages; the data are JavaScript files
// beside the pages (a browser opens file:// pages without a server, and reads no JSON from disk), so
// nothing is fetched at view time and the folder can be zipped and sent. The data files the charts are
// made from are copied into `data/files/` and linked from the overview. `deno task serve` serves it.

import { dirname, join } from "node:path";
import { writeFileAtomic } from "./lib/atomic.ts";
import { sha256 } from "./lib/hash.ts";
import { FLOW_COLOR, PALETTE } from "./lib/info_flow_figure.ts";
import { LOWEST_FIELDS, MODEL_PALETTE } from "./05_compare_models.ts";
import { readParquet } from "./lib/parquet.ts";
import {
  compareData,
  constructModes,
  CURVE_COLUMNS,
  heatmapData,
  infoFlowPrompts,
  modeRows,
  promptCurves,
  type PromptCurves,
  type ReportModel,
  round6,
  stageFacts,
  toColumns,
} from "./lib/report/data.ts";
import { ASSET_FILES, assetText, PAGES, pageHtml, type PageName, vendorScripts } from "./lib/report/pages.ts";
import { defineStage, type StageContext } from "./lib/stage.ts";

export interface ReportParams {
  prompts: number;
  [key: string]: number | string | boolean;
}

const MODEL_STAGES = ["01_construct", "02_compare", "03_info_flow", "04_heatmap"];

/** The data script of one key: `MR_DATA[key] = value;` */
export function dataScript(key: string, value: unknown): string {
  return `(window.MR_DATA = window.MR_DATA || {})[${JSON.stringify(key)}] = ${JSON.stringify(value)};\n`;
}

/** The data files of one page: study.js and the per-model files it draws from. */
export function pageData(page: PageName, nModels: number): string[] {
  const per = (kind: string) => Array.from({ length: nModels }, (_, i) => `data/m${i}_${kind}.js`);
  const own: Record<PageName, string[]> = {
    index: [],
    modes: per("modes"),
    flows: per("flows"),
    heatmaps: per("heatmap"),
    prompt: ["data/prompts.js", ...per("configs")],
    models: [...per("flows"), ...per("decay")],
  };
  return ["data/study.js", ...own[page]];
}

// the report's look and behaviour are in its assets: their text is part of the stage's version (and key)
const ASSETS_HASH = sha256(ASSET_FILES.map((f) => assetText(f)).join("\n")).slice(0, 12);

export default defineStage<ReportParams>({
  name: "06_report",
  title: "The study's report: self-contained HTML pages with interactive charts",
  version: `1+${ASSETS_HASH}`,
  module: import.meta.url,
  scope: "study",
  folder: "report",
  entry: "index.html",
  inputs: { stages: [...MODEL_STAGES, "05_compare_models"] },
  params: {
    prompts: { type: "int", default: 100, min: 1, max: 100000, doc: "prompts that get a per-prompt page (the first by row of the 03 samples)" },
  },
  outputs: [...PAGES.map((p) => `${p}.html`), ...ASSET_FILES.map((f) => `assets/${f}`), "data/study.js", "data/prompts.js"],

  async run(ctx: StageContext<ReportParams>) {
    for (const sub of ["data", "assets"]) await Deno.remove(join(ctx.dir, sub), { recursive: true }).catch(() => {});
    const written: string[] = [];
    const write = async (rel: string, data: string | Uint8Array) => {
      await Deno.mkdir(dirname(join(ctx.dir, rel)), { recursive: true });
      await writeFileAtomic(join(ctx.dir, rel), data);
      written.push(rel);
    };
    const files: { model: number | null; stage: string; path: string; bytes: number }[] = [];
    const copy = async (model: number | null, run: string, stage: string, src: string, name: string) => {
      const rel = `data/files/${run}/${stage}/${name}`;
      await write(rel, await Deno.readFile(src));
      files.push({ model, stage, path: rel, bytes: (await Deno.stat(src)).size });
    };

    const u05 = ctx.upstream("05_compare_models");
    const cmp = await compareData(u05);
    const models: ReportModel[] = [];
    const promptInfo = new Map<number, { prompt: string; subject: string; target: string }>();
    const perModel03: Map<number, Record<string, unknown>>[] = [];
    const constructs: Map<number, Map<string, Record<string, unknown>>>[] = [];
    for (const [i, m] of ctx.models.entries()) {
      const summary = cmp.models[i];
      const u01 = m.upstream("01_construct"), u02 = m.upstream("02_compare"), u03 = m.upstream("03_info_flow"), u04 = m.upstream("04_heatmap");
      const modes = constructModes(u01);
      // 01: every row in every mode
      const construct = new Map<number, Map<string, Record<string, unknown>>>();
      const tables: [string, Record<string, unknown>[]][] = [];
      for (const mode of modes) {
        const rows = (await readParquet(u01.file(`construct_${mode}.parquet`))).rows;
        tables.push([mode, rows]);
        for (const r of rows) {
          const row = r.row as number;
          if (!construct.has(row)) construct.set(row, new Map());
          construct.get(row)!.set(mode, r);
          if (!promptInfo.has(row)) promptInfo.set(row, { prompt: String(r.prompt ?? ""), subject: String(r.subject ?? ""), target: String(r.target_true ?? "") });
        }
      }
      constructs.push(construct);
      const firstMode = new Map([...construct].map(([row, byMode]) => [row, byMode.get(modes[0])!]));
      await write(`data/m${i}_modes.js`, dataScript(`m${i}_modes`, {
        rows: modeRows(tables),
        summary: await Deno.readTextFile(u02.file("summary.json")).then(JSON.parse, () => null),
      }));
      await write(`data/m${i}_flows.js`, dataScript(`m${i}_flows`, toColumns(cmp.curves.filter((c) => c.label === summary.label) as unknown as Record<string, unknown>[], CURVE_COLUMNS)));
      const heat = await heatmapData(u04, firstMode);
      await write(`data/m${i}_heatmap.js`, dataScript(`m${i}_heatmap`, heat));
      const decay = (await readParquet(u03.file("decay.parquet"))).rows;
      await write(`data/m${i}_decay.js`, dataScript(`m${i}_decay`, toColumns(decay, ["layer", "unit", "decay"])));
      perModel03.push(await infoFlowPrompts(u03));

      for (const mode of modes) await copy(i, m.name, "01_construct", u01.file(`construct_${mode}.parquet`), `construct_${mode}.parquet`);
      // what 02 writes for a family with one mode is its own business: copy what its manifest lists
      for (const f of ["summary.json", "summary.md"]) if (f in u02.manifest.outputs) await copy(i, m.name, "02_compare", u02.file(f), f);
      for (const f of ["prompts.parquet", "info_flow.parquet", "info_flow_aggregates.parquet", "decay.parquet", "summary.md"]) {
        await copy(i, m.name, "03_info_flow", u03.file(f), f);
      }
      await copy(i, m.name, "04_heatmap", u04.file("heatmap.parquet"), "heatmap.parquet");
      for (const name of MODEL_STAGES) await copy(i, m.name, name, m.upstream(name).file("manifest.json"), "manifest.json");

      const man01 = u01.manifest;
      models.push({
        ...summary,
        index: i,
        modes,
        stages: stageFacts(m, MODEL_STAGES),
        engine: u03.manifest.engine ?? man01.engine ?? {},
        dtype: man01.inputs.model?.dtype ?? "?",
        heatmapPrompts: heat.prompts.length,
        hasDecay: decay.length > 0,
      });
    }
    for (const f of ["models.parquet", "curves.parquet", "lowest.parquet", "summary.md"]) await copy(null, "study", "05_compare_models", u05.file(f), f);

    // the per-prompt pages: the first prompts by row of the models' 03 samples
    const allRows = [...new Set(perModel03.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
    const pageRows = allRows.slice(0, ctx.params.prompts);
    const wanted = new Set(pageRows);
    const curves: PromptCurves[] = [];
    for (const [i, m] of ctx.models.entries()) {
      const pc = await promptCurves(m.upstream("03_info_flow"), wanted);
      await write(`data/m${i}_configs.js`, dataScript(`m${i}_configs`, pc.configs));
      curves.push(pc);
    }
    for (const row of pageRows) {
      const info = promptInfo.get(row)!;
      await write(`data/prompt/r${row}.js`, dataScript(`prompt_r${row}`, {
        row,
        ...info,
        models: models.map((md, i) => {
          const p = perModel03[i].get(row);
          const byMode = constructs[i].get(row);
          const base = Object.fromEntries(md.modes.map((mode) => {
            const r = byMode?.get(mode);
            return [mode, r ? { pred: r.pred ?? null, max_prob: round6(r.max_prob), true_prob: round6(r.true_prob), hit: r.hit } : null];
          }));
          if (!p) return { base, tokens: null };
          const c = curves[i].byRow.get(row);
          return {
            base,
            tokens: JSON.parse(String(p.tokens ?? "[]")),
            subjectTokens: Array.from(p.subject_tokens as ArrayLike<number>, Number),
            baseProb: round6(p.base_prob),
            curves: c ?? { c: [], p: [], h: [] },
          };
        }),
      }));
    }
    await write("data/prompts.js", dataScript("prompts", {
      total: allRows.length,
      limit: ctx.params.prompts,
      rows: pageRows.map((row) => ({ row, prompt: promptInfo.get(row)?.prompt ?? "", subject: promptInfo.get(row)?.subject ?? "", models: perModel03.map((m, i) => (m.has(row) ? i : -1)).filter((i) => i >= 0) })),
    }));

    const figures = compareFiguresOf(u05.manifest.outputs);
    for (const f of figures) await copy(null, "study", "05_compare_models", u05.file(f), f);
    const m0 = ctx.models[0];
    const cfg01 = m0.upstream("01_construct").manifest.inputs.dataset;
    await write("data/study.js", dataScript("study", {
      name: ctx.dir.split("/").slice(-2, -1)[0],
      models,
      lowest: toColumns(cmp.lowest as unknown as Record<string, unknown>[], LOWEST_FIELDS.map((f) => f.name)),
      dataset: cfg01 ? { path: cfg01.path, rows: cfg01.rows, rowCount: cfg01.rowCount } : null,
      compareFigures: figures.map((f) => `data/files/study/05_compare_models/${f}`),
      files,
      finishedAt: u05.manifest.finishedAt,
      // the static figures' colours, so that both draw a flow and a model alike
      colors: { flows: FLOW_COLOR, fallback: PALETTE, models: MODEL_PALETTE },
    }));

    for (const [name, text] of vendorScripts()) await write(`assets/${name}`, text);
    for (const f of ASSET_FILES) await write(`assets/${f}`, assetText(f));
    for (const page of PAGES) await write(`${page}.html`, pageHtml(page, pageData(page, models.length)));

    ctx.extraOutputs?.push(...written);
    ctx.counts.models = models.length;
    ctx.counts.pages = PAGES.length;
    ctx.counts.prompt_pages = pageRows.length;
    ctx.counts.files = written.length;
    ctx.info.promptsWithoutPage = allRows.length - pageRows.length;
  },
});

/** 05's figure PNGs (named in its manifest). */
function compareFiguresOf(outputs: Record<string, unknown>): string[] {
  return Object.keys(outputs).filter((f) => /^compare_.*\.png$/.test(f)).sort();
}
