// 05_compare_models: the study's models side by side. For every model of the study, 01_construct's
// accuracy per mode and 03_info_flow's curves (accuracy and mean relative change of p(target) per
// window, with their 95 % CIs); the curves drawn together against the window's relative depth (% of
// the model's layers), so that models of different depths line up: one figure per (k, heads, conv)
// with a row of panels per flow and a line per model. The lowest mean change per flow and model (and
// the depth where it is) goes into a table. With the filter all-models-correct every model's curves
// are over the same prompts. Runs once per study, after every model's stages.

import { basename, join } from "node:path";
import type { TopLevelSpec } from "vega-lite";
import { writeFileAtomic } from "./lib/atomic.ts";
import { ciBandLayers, convPart, curvePoint, flowLabel, headsPart, meanLineLayer, SPLIT_LABEL } from "./lib/info_flow_figure.ts";
import { AGGREGATE_FIELDS, type Aggregate } from "./lib/info_flow_stats.ts";
import { type Field, readParquet, writeTable } from "./lib/parquet.ts";
import { removeStaleFigures, writeFigure } from "./lib/plot.ts";
import { defineStage, type ModelOutputs, type StageContext } from "./lib/stage.ts";

/** One model of the study: what it is and how it did without knockouts. */
export interface ModelSummary {
  /** short name (the hub id's or folder's last part), the label of its lines */
  label: string;
  model: string;
  run: string;
  family: string;
  n_layer: number;
  unit_name: string;
  units_per_layer: number;
  rows: number;
  /** 01_construct's accuracy per mode (null for a mode the family does not run) */
  accuracy_scan: number | null;
  accuracy_attention: number | null;
  /** 03_info_flow's prompts, and the filter that chose them */
  prompts: number;
  filter: string;
}

export const MODEL_FIELDS: readonly Field<ModelSummary>[] = [
  { name: "label", type: "STRING" },
  { name: "model", type: "STRING" },
  { name: "run", type: "STRING" },
  { name: "family", type: "STRING" },
  { name: "n_layer", type: "INT32" },
  { name: "unit_name", type: "STRING" },
  { name: "units_per_layer", type: "INT32" },
  { name: "rows", type: "INT32" },
  { name: "accuracy_scan", type: "DOUBLE", nullable: true },
  { name: "accuracy_attention", type: "DOUBLE", nullable: true },
  { name: "prompts", type: "INT32" },
  { name: "filter", type: "STRING" },
];

/** A model's aggregate of 03_info_flow, labelled with the model. */
export type Curve = Aggregate & { label: string };
export const CURVE_FIELDS: readonly Field<Curve>[] = [{ name: "label", type: "STRING" }, ...AGGREGATE_FIELDS];

/** The lowest mean relative change of one curve (all prompts), where it is, and the unblocked accuracy. */
export type Lowest = Pick<
  Curve,
  "label" | "k" | "flow" | "heads" | "conv" | "n" | "base_accuracy" | "window" | "depth" | "window_start" | "window_end"
  | "relative_change" | "relative_change_lo" | "relative_change_hi" | "accuracy"
>;
export const LOWEST_FIELDS: readonly Field<Lowest>[] = [
  { name: "label", type: "STRING" },
  { name: "k", type: "INT32" },
  { name: "flow", type: "STRING" },
  { name: "heads", type: "STRING" },
  { name: "conv", type: "BOOLEAN" },
  { name: "n", type: "INT32" },
  { name: "base_accuracy", type: "DOUBLE" },
  { name: "window", type: "INT32" },
  { name: "depth", type: "DOUBLE" },
  { name: "window_start", type: "INT32" },
  { name: "window_end", type: "INT32" },
  { name: "relative_change", type: "DOUBLE" },
  { name: "relative_change_lo", type: "DOUBLE" },
  { name: "relative_change_hi", type: "DOUBLE" },
  { name: "accuracy", type: "DOUBLE" },
];

/** `state-spaces/mamba2-1.3b` → `mamba2-1.3b`, a folder → its name. */
export function modelLabel(model: string): string {
  return basename(model.replace(/[\\/]+$/, "")) || model;
}

/** Distinct labels even for two models whose ids end alike (`a/x`, `b/x` → `x`, `x (2)`). */
function uniqueLabels(models: string[]): string[] {
  const seen = new Map<string, number>();
  return models.map((m) => {
    const l = modelLabel(m);
    const n = (seen.get(l) ?? 0) + 1;
    seen.set(l, n);
    return n === 1 ? l : `${l} (${n})`;
  });
}

/** Read one model's summary and curves from its 01_construct and 03_info_flow. */
export async function readModel(m: ModelOutputs, label: string): Promise<{ summary: ModelSummary; curves: Curve[] }> {
  const c01 = m.upstream("01_construct").manifest;
  const u03 = m.upstream("03_info_flow");
  const info = u03.manifest.info as Record<string, unknown>;
  const rows = c01.counts.rows ?? 0;
  const acc = (mode: string) => (c01.counts[`hits_${mode}`] === undefined || rows === 0 ? null : c01.counts[`hits_${mode}`] / rows);
  const summary: ModelSummary = {
    label,
    model: m.model,
    run: m.name,
    family: String(info.family ?? "?"),
    n_layer: Number(info.nLayer ?? 0),
    unit_name: String(info.unitName ?? "head"),
    units_per_layer: Number(info.unitsPerLayer ?? 0),
    rows,
    accuracy_scan: acc("scan"),
    accuracy_attention: acc("attention"),
    prompts: u03.manifest.counts.prompts ?? 0,
    filter: String(u03.manifest.params.filter ?? "?"),
  };
  const t = await readParquet(u03.file("info_flow_aggregates.parquet"));
  const curves = t.rows.map((r) => ({ label, ...(r as unknown as Aggregate) }));
  return { summary, curves };
}

/** The lowest mean change per (model, k, flow, heads, conv) over all prompts. */
export function lowestPoints(curves: Curve[]): Lowest[] {
  const best = new Map<string, Curve>();
  for (const c of curves) {
    if (c.split !== "all" || !Number.isFinite(c.relative_change)) continue;
    const key = `${c.label}|${c.k}|${c.flow}|${c.heads}|${c.conv}`;
    const b = best.get(key);
    if (!b || c.relative_change < b.relative_change) best.set(key, c);
  }
  return [...best.values()]; // lowest.parquet takes LOWEST_FIELDS' columns of each
}

/** One figure of the stage: a (k, heads, conv) that some model ran. */
export interface CompareFigure {
  base: string;
  k: number;
  heads: string;
  conv: boolean;
}

/** The figures: one per (k, heads, conv) present in the curves, in the order first seen. */
export function compareFigures(curves: Curve[]): CompareFigure[] {
  const out = new Map<string, CompareFigure>();
  for (const c of curves) {
    const base = `compare_k${c.k}${headsPart(c.heads)}${convPart(c.conv)}`;
    if (!out.has(base)) out.set(base, { base, k: c.k, heads: c.heads, conv: c.conv });
  }
  return [...out.values()].sort((a, b) => a.k - b.k || Number(a.conv) - Number(b.conv) || (a.heads === "all" ? -1 : b.heads === "all" ? 1 : 0));
}

export const MODEL_PALETTE = ["#4c78a8", "#e45756", "#54a24b", "#f58518", "#b279a2", "#72b7b2", "#9d755d", "#eeca3b"];

/** What the head selectors pick in these models: `heads` (Mamba-2), `channels` (Mamba-1), or `heads / channels`. */
export function unitsWord(models: ModelSummary[]): string {
  return [...new Set(models.map((m) => `${m.unit_name}s`))].join(" / ") || "heads";
}

/** Per flow a row of two panels (accuracy, % change) against the depth, one line per model, 95 % CI bands. */
export function compareFigure(f: CompareFigure, curves: Curve[], models: ModelSummary[]): TopLevelSpec {
  const mine = curves.filter((c) => c.k === f.k && c.heads === f.heads && c.conv === f.conv && c.split === "all");
  const flows = [...new Set(mine.map((c) => c.flow))];
  const nLayer = new Map(models.map((m) => [m.label, m.n_layer]));
  const values = mine.map((c) => ({
    model: c.label,
    flow: flowLabel(c.flow),
    n_layer: nLayer.get(c.label),
    ...curvePoint(c),
  }));
  const labels = models.map((m) => m.label);
  const color = {
    field: "model",
    type: "nominal",
    title: "model",
    scale: { domain: labels, range: labels.map((_, i) => MODEL_PALETTE[i % MODEL_PALETTE.length]) },
  };
  const bands = values.some((v) => v.n > 1 && v.change_lo !== null);
  // the unblocked accuracy as a rule when every model has the same (100 % with all-models-correct)
  const bases = [...new Set(mine.map((c) => (100 * c.base_accuracy).toFixed(6)))];
  const baseRule = bases.length === 1 ? Number(bases[0]) : null;
  const x = { field: "depth", type: "quantitative", title: "window position, % of the model's layers", scale: { domain: [0, 100], nice: false } };
  const panel = (field: "accuracy" | "change", title: string) => ({
    width: 300,
    height: 170,
    title: { text: title, anchor: "start", fontSize: 11, fontWeight: "normal" },
    layer: [
      ...(bands ? ciBandLayers(x, field, color, "model") : []),
      meanLineLayer(x, field, color, [{ field: "model" }, { field: "flow" }, { field: "depth", format: ".1f", title: "depth (%)" }, { field: "layers" }, { field: "n" }]),
      ...(field === "change" || baseRule !== null
        ? [{
          data: { values: [{}] },
          mark: { type: "rule", color: "#888", strokeDash: [4, 3] },
          encoding: { y: { datum: field === "accuracy" ? baseRule : 0, type: "quantitative" } },
        }]
        : []),
    ],
  });
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: `Information flow across models: windows of k = ${f.k} layer${f.k === 1 ? "" : "s"}`,
      subtitle: [
        `${SPLIT_LABEL.all} · ${unitsWord(models)}: ${f.heads} · conv path: ${f.conv ? "cut too" : "open"}`,
        `x: the window's position as % of each model's layers`,
        `line: mean${bands ? ", band: 95 % bootstrap CI" : ""} · dashed rule: ` +
        (baseRule !== null ? `accuracy without knockout (${baseRule.toFixed(1)} %), no change` : "no change"),
      ],
      anchor: "start",
    },
    data: { values },
    vconcat: flows.map((flow) => ({
      title: { text: flowLabel(flow), anchor: "start", fontSize: 13, offset: 4 },
      transform: [{ filter: { field: "flow", equal: flowLabel(flow) } }],
      hconcat: [panel("accuracy", "accuracy (target still the top prediction)"), panel("change", "relative change of p(target), %")],
    })),
    spacing: 22,
    config: {
      legend: { orient: "bottom", labelLimit: 0, titleLimit: 0, symbolType: "stroke", symbolStrokeWidth: 3, symbolSize: 300, symbolOpacity: 1 },
    },
  } as unknown as TopLevelSpec;
}

const pct = (x: number | null) => (x === null ? "–" : `${(100 * x).toFixed(1)} %`);
const num = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "–");

export function summaryMarkdown(models: ModelSummary[], lowest: Lowest[], figures: CompareFigure[]): string {
  const lines = [
    `# The study's models compared`,
    ``,
    `| model | family | layers | rows | accuracy scan | accuracy attention | prompts (filter) |`,
    `| --- | --- | ---: | ---: | ---: | ---: | --- |`,
    ...models.map((m) =>
      `| ${m.label} | ${m.family} | ${m.n_layer} | ${m.rows} | ${pct(m.accuracy_scan)} | ${pct(m.accuracy_attention)} | ${m.prompts} (\`${m.filter}\`) |`
    ),
    ``,
    `Lowest mean relative change of p(target) per flow (all prompts), and where it is (depth: % of the model's layers):`,
    ``,
    `| model | k | flow | ${unitsWord(models)} | conv | n | base accuracy | lowest % change | 95 % CI | window | depth |`,
    `| --- | ---: | --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |`,
    ...lowest.map((l) =>
      `| ${l.label} | ${l.k} | ${flowLabel(l.flow)} | ${l.heads} | ${l.conv ? "cut" : "open"} | ${l.n} | ${pct(l.base_accuracy)} | ${num(l.relative_change)} | ` +
      `[${num(l.relative_change_lo)}, ${num(l.relative_change_hi)}] | ${l.window} | ${l.depth.toFixed(1)} % |`
    ),
    ``,
    ...figures.flatMap((f) => [`![k=${f.k}, ${unitsWord(models)} ${f.heads}, conv ${f.conv ? "cut" : "open"}](${f.base}.png)`, ``]),
  ];
  return lines.join("\n");
}

export default defineStage({
  name: "05_compare_models",
  title: "The study's models compared: accuracy, and the information-flow curves against relative depth",
  version: "1",
  module: import.meta.url,
  scope: "study",
  inputs: { stages: ["01_construct", "03_info_flow"] },
  params: {},
  outputs: ["models.parquet", "curves.parquet", "lowest.parquet", "summary.md"],

  async run(ctx: StageContext) {
    const labels = uniqueLabels(ctx.models.map((m) => m.model));
    const models: ModelSummary[] = [];
    const curves: Curve[] = [];
    for (const [i, m] of ctx.models.entries()) {
      const r = await readModel(m, labels[i]);
      models.push(r.summary);
      curves.push(...r.curves);
    }
    const lowest = lowestPoints(curves);
    const meta = { "mamba_explain.stage": "05_compare_models", "mamba_explain.cache_key": ctx.cacheKey };
    await writeTable(join(ctx.dir, "models.parquet"), MODEL_FIELDS, models, meta);
    await writeTable(join(ctx.dir, "curves.parquet"), CURVE_FIELDS, curves, meta);
    await writeTable(join(ctx.dir, "lowest.parquet"), LOWEST_FIELDS, lowest, meta);
    const figures = compareFigures(curves);
    await removeStaleFigures(ctx.dir, /^compare_.*\.(png|svg|vl\.json)$/, []);
    for (const f of figures) ctx.extraOutputs?.push(...await writeFigure(ctx.dir, f.base, compareFigure(f, curves, models)));
    await writeFileAtomic(join(ctx.dir, "summary.md"), summaryMarkdown(models, lowest, figures));
    ctx.counts.models = models.length;
    ctx.counts.curves = curves.length;
    ctx.counts.figures = figures.length;
    ctx.info.models = models.map((m) => m.label);
  },
});
