// 04_heatmap: where the last position reads from, layer by layer (the seed's heatmap notebook).
// For chosen prompts, every position j and every window of k layers [l, l+k): the true token's
// probability with the edge j → last (the flow last<-{j}) blocked in those layers, in the heads
// `heads` selects, with the conv path cut too when `conv` is set. One heatmap per prompt (rows =
// tokens, the last marked *, columns = window start, colour = p(true)), values as parquet.
// All cells of a prompt go through the exact fast path (model.knockouts) as one batch; work is
// saved per group of prompts (.work/heatmap.jsonl) and resumed after an interruption.

import { join } from "node:path";
import type { TopLevelSpec } from "vega-lite";
import { writeFileAtomic } from "./lib/atomic.ts";
import { UserError } from "./lib/errors.ts";
import { formatUnitSelector, type LanguageModel } from "../engine/arch.ts";
import { relativeChange } from "./lib/info_flow_stats.ts";
import { heatmapConfigs, type HeatmapConfig, layerWindows, parseSelector } from "./lib/knockout_configs.ts";
import { checkKnockoutsApply, checkWindow, type KnockoutJob, runKnockoutJobs } from "./lib/knockout_run.ts";
import { type Field, writeTable } from "./lib/parquet.ts";
import { removeStaleFigures, writeFigure } from "./lib/plot.ts";
import {
  applyFilter,
  type ConstructRow,
  constructedRows,
  filterFacts,
  filterStudyInputs,
  PROMPT_FILTER_DOC,
  PROMPT_FILTERS,
  type PromptFilter,
  readConstruct,
} from "./lib/prompt_choice.ts";
import { parseRows } from "./lib/rows.ts";
import { defineStage, type StageContext } from "./lib/stage.ts";

/** The CounterFact rows of the study's four prompts (data/counterfact-tracing.parquet), ascending. */
export const STUDY_ROWS = [4342, 15396, 19230, 21326] as const;

/** The four prompts of the study's heatmap figure. */
export const STUDY_PROMPTS = [
  "Commerzbank, whose headquarters are in",
  "Edvard Grieg, playing the",
  "Statistical Package for the Social Sciences was created by",
  "The mother tongue of Pietro Mennea is",
] as const;

export interface HeatmapParams {
  prompts: string;
  k: number;
  heads: string;
  conv: boolean;
  filter: string;
  group_prompts: number;
  [key: string]: number | string | boolean;
}

/** What the `prompts` parameter asks for. */
export type PromptChoice = { kind: "all" } | { kind: "rows"; rows: number[] } | { kind: "texts"; texts: string[] };

/**
 * `study` (the four prompts of the study), `all` (every selected row), a list of dataset rows
 * (`4342,19230` or ranges `0-9`), or prompt texts separated by `|`.
 */
export function parsePromptChoice(spec: string, nRows?: number): PromptChoice {
  const s = spec.trim();
  if (s === "") throw new UserError(`04_heatmap.prompts is empty; give study, all, a list of rows (4342,19230) or prompt texts separated by |`);
  if (s === "study") return { kind: "texts", texts: [...STUDY_PROMPTS] };
  if (s === "all") return { kind: "all" };
  if (/^[\d\s,-]+$/.test(s)) return { kind: "rows", rows: parseRows(s, nRows, "04_heatmap.prompts") };
  const texts = s.split("|").map((t) => t.trim()).filter((t) => t !== "");
  return { kind: "texts", texts };
}

export interface HeatmapPrompt {
  row: number;
  prompt: string;
  ids: number[];
  tokens: string[];
  trueId: number;
  target: string;
  baseProb: number;
}

export interface HeatmapCell {
  row: number;
  k: number;
  position: number;
  token: string;
  window_start: number;
  window_end: number;
  true_prob: number;
  base_prob: number;
  relative_change: number;
  hit: boolean;
  /** the head selector, canonical text */
  heads: string;
  conv: boolean;
}

export const CELL_FIELDS: readonly Field<HeatmapCell>[] = [
  { name: "row", type: "INT32" },
  { name: "k", type: "INT32" },
  { name: "position", type: "INT32" },
  { name: "token", type: "STRING" },
  { name: "window_start", type: "INT32" },
  { name: "window_end", type: "INT32" },
  { name: "true_prob", type: "DOUBLE" },
  { name: "base_prob", type: "DOUBLE" },
  { name: "relative_change", type: "DOUBLE" },
  { name: "hit", type: "BOOLEAN" },
  { name: "heads", type: "STRING" },
  { name: "conv", type: "BOOLEAN" },
];

export function figureBase(row: number): string {
  return `heatmap_row${row}`;
}

/** Token labels of the heatmap's rows: the decoded token, the last one marked with `*`. */
export function tokenLabels(tokens: string[]): string[] {
  return tokens.map((t, i) => {
    const shown = JSON.stringify(t).slice(1, -1); // newlines and tabs visible
    return i === tokens.length - 1 ? `${shown}*` : shown;
  });
}

export function fmtProb(p: number): string {
  if (p === 0) return "0";
  return p >= 1e-3 ? p.toFixed(4) : p.toExponential(3);
}

export function heatmapFigure(
  p: HeatmapPrompt,
  cells: HeatmapCell[],
  opts: { k: number; model: string; nLayer: number; heads: string; conv: boolean; unitName: string },
): TopLevelSpec {
  const labels = tokenLabels(p.tokens);
  const values = cells.map((c) => ({
    position: c.position,
    token: labels[c.position],
    window_start: c.window_start,
    layers: `${c.window_start}–${c.window_end - 1}`,
    true_prob: c.true_prob,
    relative_change: c.relative_change,
  }));
  const nWindows = opts.nLayer - opts.k + 1;
  // the plot ~440 px wide whatever the number of windows: as wide as the title block, no blank beside it
  const cell = Math.max(14, Math.min(110, Math.ceil(440 / nWindows)));
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: p.prompt,
      // short lines: Vega sizes the figure by an estimate of the text's width that runs long
      subtitle: [
        `p(${JSON.stringify(p.target)}) without knockout = ${fmtProb(p.baseProb)} · row ${p.row}`,
        opts.model,
        `cell: p(${JSON.stringify(p.target)}) with the edge token → last`,
        `blocked in layers [l, l + ${opts.k})` + (opts.heads === "all" ? "" : `, ${opts.unitName}s ${opts.heads}`) +
        (opts.conv ? ", conv path cut too" : ""),
      ],
      anchor: "start",
    },
    data: { values },
    width: { step: cell },
    height: { step: 22 },
    mark: { type: "rect" },
    encoding: {
      x: {
        field: "window_start",
        type: "ordinal",
        title: `window start layer l (k = ${opts.k} layers)`,
        axis: { labelAngle: 0, labelExpr: nWindows > 30 ? "datum.value % 5 === 0 ? datum.label : ''" : "datum.label" },
      },
      y: {
        field: "position",
        type: "ordinal",
        title: "token (* = last position)",
        axis: { labelExpr: `${JSON.stringify(labels)}[datum.value]`, labelFontSize: 12, labelLimit: 260 },
      },
      color: {
        field: "true_prob",
        type: "quantitative",
        title: `p(${JSON.stringify(p.target)})`,
        scale: { scheme: "viridis" },
        legend: { format: Math.max(...cells.map((c) => c.true_prob)) < 1e-3 ? ".3~e" : ".3~g", gradientLength: Math.max(60, Math.min(180, 22 * p.tokens.length)) },
      },
      tooltip: [
        { field: "token" },
        { field: "position" },
        { field: "layers" },
        { field: "true_prob", format: ".4~g" },
        { field: "relative_change", title: "% change", format: ".3~f" },
      ],
    },
  } as unknown as TopLevelSpec;
}

export default defineStage<HeatmapParams>({
  name: "04_heatmap",
  title: "Heatmaps: p(true) with the edge position → last blocked, per position and window of layers",
  version: "2",
  module: import.meta.url,
  inputs: { dataset: true, tokenizer: true, model: true, stages: ["01_construct"] },
  shardable: true,
  params: {
    prompts: {
      type: "string",
      default: "study",
      doc: "study (the four prompts of the study), all (every selected row), rows like 4342,19230, or prompt texts separated by |",
    },
    k: { type: "int", default: 5, min: 1, doc: "window size (layers)" },
    heads: { type: "string", default: "all", doc: "the heads knocked out: all, fast:a/b, slow:a/b, not-fast:a/b, not-slow:a/b, only:i+j-k" },
    conv: { type: "boolean", default: false, doc: "cut the conv1d path from the token into the last position too" },
    filter: { type: "string", default: "both-correct", choices: PROMPT_FILTERS, doc: PROMPT_FILTER_DOC },
    group_prompts: { type: "int", default: 4, min: 1, max: 4096, throughput: true, doc: "prompts per fast-path call (and per saved step of progress); throughput only, not in the cache key" },
  },
  outputs: ["heatmap.parquet", "heatmaps.md"],
  check(P) {
    parseSelector(P.heads, "04_heatmap.heads");
    parsePromptChoice(P.prompts);
  },
  checkModel(P, model) {
    checkWindow(() => layerWindows(model.nLayer, P.k, "start"), "04_heatmap.k");
    checkKnockoutsApply(model, { heads: [parseSelector(P.heads, "04_heatmap.heads")], conv: [P.conv] }, "04_heatmap");
  },
  studyInputs: (P) => filterStudyInputs(P.filter),

  async run(ctx: StageContext<HeatmapParams>) {
    const P = ctx.params;
    const ds = await ctx.dataset();
    const choice = parsePromptChoice(P.prompts, ds.totalRows);
    const up = ctx.upstream("01_construct");
    const construct = await readConstruct(up);
    const attention = construct.attention;
    const tok = await ctx.tokenizer();
    const selected = constructedRows(ctx.rows, construct);
    const rowIndex = new Map(ctx.rows.map((r, i) => [r, i]));
    const text = (row: number) => String(ds.rows[rowIndex.get(row)!]?.prompt ?? "");

    // 1. the prompts asked for, and those that are skipped (with the reason, said once each)
    let wanted: number[] = [];
    const notes: string[] = [];
    if (choice.kind === "all") wanted = selected;
    else if (choice.kind === "rows") {
      const have = new Set(selected);
      for (const r of choice.rows) {
        if (have.has(r)) wanted.push(r);
        else notes.push(`row ${r} is not among the selected rows`);
      }
    } else {
      const byText = new Map<string, number>();
      for (const r of selected) if (!byText.has(text(r).trim())) byText.set(text(r).trim(), r);
      for (const t of choice.texts) {
        const r = byText.get(t);
        if (r === undefined) notes.push(`"${t}" is not the prompt of any selected row`);
        else if (!wanted.includes(r)) wanted.push(r);
      }
    }
    const { kept: chosen, failed } = applyFilter(P.filter as PromptFilter, wanted, await filterFacts(P.filter, construct, ctx.models));
    for (const f of failed) notes.push(`row ${f.row} ("${text(f.row)}") ${f.why}`);
    for (const n of notes) ctx.log(`skipped: ${n}`);
    if (chosen.length === 0) {
      // the hint follows the cause: rows outside the selection, or rows the filter refused
      const notSelected = notes.length - failed.length;
      const hints = [
        ...(notSelected > 0 ? [`include the prompts' rows in --rows${choice.kind === "texts" && P.prompts.trim() === "study" ? ` (the study's four: --rows ${STUDY_ROWS.join(",")})` : ""}`, "choose others with --heatmap-prompts"] : []),
        ...(failed.length > 0 ? ["pass --set 04_heatmap.filter=all to run prompts the model gets wrong"] : []),
      ];
      throw new UserError(
        `04_heatmap: no prompt to run (${notes.length ? notes[0] + (notes.length > 1 ? `, and ${notes.length - 1} more` : "") : "the selection is empty"}); ` +
          (hints.length ? hints.join(", or ") : "select more rows"),
      );
    }

    const loaded = await ctx.model();
    const model: LanguageModel = loaded.model;
    const nLayer = model.info.nLayer;
    layerWindows(nLayer, P.k, "start"); // k larger than the model's layers: one clear error
    const units = parseSelector(P.heads, "04_heatmap.heads");
    const heads = formatUnitSelector(units);
    checkKnockoutsApply(model.info, { heads: [units], conv: [P.conv] }, "04_heatmap");
    const prompts: HeatmapPrompt[] = chosen.map((row) => {
      const a: ConstructRow = attention.get(row)!;
      return {
        row,
        prompt: text(row),
        ids: a.ids,
        tokens: tok.decodeEach(a.ids),
        trueId: a.true_id,
        target: tok.decode([a.true_id]),
        baseProb: a.true_prob,
      };
    });
    const configs = new Map<number, HeatmapConfig[]>(prompts.map((p) => [p.row, heatmapConfigs(nLayer, p.ids.length, P.k, { units, conv: P.conv })]));
    const jobs: KnockoutJob[] = prompts.map((p) => ({ row: p.row, ids: p.ids, target: p.trueId, configs: configs.get(p.row)! }));

    // 2. the knockouts
    const records = await runKnockoutJobs(ctx as unknown as StageContext, jobs, {
      logName: "heatmap",
      groupPrompts: P.group_prompts,
      label: "04_heatmap",
    });

    if (ctx.shard) return; // a shard's records are saved in its folder; the merge writes the outputs

    // 3. table, figures, index
    const cells: HeatmapCell[] = [];
    const byPrompt = new Map<number, HeatmapCell[]>();
    for (const p of prompts) {
      const rec = records.get(p.row)!;
      const mine = configs.get(p.row)!.map((c, i): HeatmapCell => ({
        row: p.row,
        k: P.k,
        position: c.position,
        token: p.tokens[c.position],
        window_start: c.start,
        window_end: c.end,
        true_prob: rec.p[i],
        base_prob: p.baseProb,
        relative_change: relativeChange(rec.p[i], p.baseProb),
        hit: rec.pred[i] === p.trueId,
        heads,
        conv: P.conv,
      }));
      byPrompt.set(p.row, mine);
      cells.push(...mine);
    }
    await writeTable(join(ctx.dir, "heatmap.parquet"), CELL_FIELDS, cells, { "mamba_explain.stage": "04_heatmap", "mamba_explain.cache_key": ctx.cacheKey });

    // figures of an earlier run in this folder (other prompts) would be mistaken for this run's
    await removeStaleFigures(ctx.dir, /^heatmap_row\d+\.(png|svg|vl\.json)$/, []);
    const modelId = up.manifest.inputs.model?.id ?? "?";
    const figures: string[] = [];
    const md = [
      `# Heatmaps: blocking one position → last over windows of ${P.k} layers`,
      ``,
      `Model \`${modelId}\`; ${model.info.unitName}s knocked out: ${heads}; conv path ${P.conv ? "cut too" : "open"}.`,
      ``,
    ];
    for (const p of prompts) {
      const files = await writeFigure(ctx.dir, figureBase(p.row), heatmapFigure(p, byPrompt.get(p.row)!, { k: P.k, model: modelId, nLayer, heads, conv: P.conv, unitName: model.info.unitName }));
      figures.push(...files);
      md.push(`## ${p.prompt}`, ``, `Row ${p.row}; p(${JSON.stringify(p.target)}) without knockout = ${fmtProb(p.baseProb)}.`, ``);
      md.push(`![${p.prompt}](${figureBase(p.row)}.png)`, ``);
    }
    if (notes.length) md.push(`Skipped:`, ``, ...notes.map((n) => `- ${n}`), ``);
    await writeFileAtomic(join(ctx.dir, "heatmaps.md"), md.join("\n"));
    // one figure per prompt: which files they are is known only now
    ctx.extraOutputs?.push(...figures);

    ctx.counts.prompts = prompts.length;
    ctx.counts.skipped = notes.length;
    ctx.counts.cells = cells.length;
    ctx.info.skipped = notes;
    ctx.info.nLayer = nLayer;
    ctx.info.figures = figures.filter((f) => f.endsWith(".png"));
  },
});
