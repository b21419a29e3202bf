// 02_compare: scan mode against attention mode, from 01_construct's two tables. Accuracy and hit
// count per mode, rows whose hit or prediction differs, and for true_prob and max_prob the
// difference attention − scan (mean, min, max, count |Δ| > threshold). Writes summary.json, a
// readable summary.md, and the distribution of both differences as a Vega-Lite figure
// (box plot over a jittered strip of every row) in SVG and PNG. For a model with one mode (a
// Transformer: 01_construct ran attention mode only) there is nothing to compare: summary.json and
// summary.md say "not applicable" and why, the manifest too (info.applicable), and no figure is made.

import { join } from "node:path";
import type { TopLevelSpec } from "vega-lite";
import { writeFileAtomic, writeJsonAtomic } from "./lib/atomic.ts";
import { readParquet } from "./lib/parquet.ts";
import { writeFigure } from "./lib/plot.ts";
import { constructModes } from "./lib/prompt_choice.ts";
import { defineStage, type StageContext } from "./lib/stage.ts";

export interface ModeRow {
  row: number;
  true_prob: number;
  max_prob: number;
  pred_id: number;
  hit: boolean;
}

export interface DeltaStats {
  mean: number;
  min: number;
  max: number;
  mean_abs: number;
  count_abs_gt_threshold: number;
}

export interface CompareSummary {
  rows: number;
  threshold: number;
  modes: Record<"scan" | "attention", { hit_count: number; accuracy: number }>;
  hit_differs: number;
  pred_differs: number;
  delta: Record<"true_prob" | "max_prob", DeltaStats>;
}

export const METRICS = ["true_prob", "max_prob"] as const;

export function compareModes(scan: ModeRow[], attention: ModeRow[], threshold: number): CompareSummary {
  if (scan.length !== attention.length) throw new Error(`scan has ${scan.length} rows, attention ${attention.length}`);
  const byRow = new Map(attention.map((r) => [r.row, r]));
  const n = scan.length;
  let hitS = 0, hitA = 0, hitDiff = 0, predDiff = 0;
  const deltas: Record<string, number[]> = { true_prob: [], max_prob: [] };
  for (const s of scan) {
    const a = byRow.get(s.row);
    if (!a) throw new Error(`row ${s.row} is in the scan table but not in the attention table`);
    if (s.hit) hitS++;
    if (a.hit) hitA++;
    if (s.hit !== a.hit) hitDiff++;
    if (s.pred_id !== a.pred_id) predDiff++;
    for (const m of METRICS) deltas[m].push(a[m] - s[m]);
  }
  const stats = (d: number[]): DeltaStats => {
    let sum = 0, sumAbs = 0, min = Infinity, max = -Infinity, count = 0;
    for (const x of d) {
      sum += x;
      sumAbs += Math.abs(x);
      if (x < min) min = x;
      if (x > max) max = x;
      if (Math.abs(x) > threshold) count++;
    }
    return { mean: n ? sum / n : 0, min: n ? min : 0, max: n ? max : 0, mean_abs: n ? sumAbs / n : 0, count_abs_gt_threshold: count };
  };
  return {
    rows: n,
    threshold,
    modes: {
      scan: { hit_count: hitS, accuracy: n ? hitS / n : 0 },
      attention: { hit_count: hitA, accuracy: n ? hitA / n : 0 },
    },
    hit_differs: hitDiff,
    pred_differs: predDiff,
    delta: { true_prob: stats(deltas.true_prob), max_prob: stats(deltas.max_prob) },
  };
}

export function fmtNum(x: number): string {
  if (x === 0) return "0";
  const a = Math.abs(x);
  return a < 1e-3 || a >= 1e4 ? x.toExponential(3) : x.toFixed(6).replace(/0+$/, "").replace(/\.$/, "");
}

export function summaryMarkdown(s: CompareSummary, model: string): string {
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  const lines = [
    `# Scan mode vs attention mode`,
    ``,
    `Model \`${model}\`, ${s.rows} CounterFact rows. Δ = attention − scan, per row.`,
    ``,
    `| mode | hits | accuracy |`,
    `| --- | ---: | ---: |`,
    `| scan | ${s.modes.scan.hit_count} | ${pct(s.modes.scan.accuracy)} |`,
    `| attention | ${s.modes.attention.hit_count} | ${pct(s.modes.attention.accuracy)} |`,
    ``,
    `- rows whose hit differs between the modes: **${s.hit_differs}**`,
    `- rows whose prediction (argmax token) differs: **${s.pred_differs}**`,
    ``,
    `| Δ | mean | min | max | mean \\|Δ\\| | count \\|Δ\\| > ${s.threshold} |`,
    `| --- | ---: | ---: | ---: | ---: | ---: |`,
    ...METRICS.map((m) => {
      const d = s.delta[m];
      return `| ${m} | ${fmtNum(d.mean)} | ${fmtNum(d.min)} | ${fmtNum(d.max)} | ${fmtNum(d.mean_abs)} | ${d.count_abs_gt_threshold} |`;
    }),
    ``,
    `![distribution of the differences](delta_distributions.png)`,
    ``,
  ];
  return lines.join("\n");
}

export function deltaFigure(scan: ModeRow[], attention: ModeRow[], s: CompareSummary, model: string): TopLevelSpec {
  const byRow = new Map(attention.map((r) => [r.row, r]));
  const panel = (m: typeof METRICS[number]) => {
    const values = scan.map((r) => {
      const a = byRow.get(r.row)!;
      return { row: r.row, delta: a[m] - r[m], differs: r.hit !== a.hit };
    });
    // rows whose hit differs are drawn last, on top of the rest
    values.sort((x, y) => Number(x.differs) - Number(y.differs) || x.row - y.row);
    const d = s.delta[m];
    return {
      title: {
        text: `${m}: attention − scan`,
        subtitle: `mean ${fmtNum(d.mean)} · min ${fmtNum(d.min)} · max ${fmtNum(d.max)} · |Δ| > ${s.threshold}: ${d.count_abs_gt_threshold} of ${s.rows}`,
        anchor: "start",
      },
      data: { values },
      transform: [
        // deterministic jitter from the row index (golden-ratio sequence): the same figure on every run
        { calculate: "(datum.row * 0.6180339887498949 % 1) * 2 - 1", as: "jitter" },
        { calculate: "datum.differs ? 'differs' : 'same in both modes'", as: "hit" },
      ],
      width: 620,
      height: 130,
      layer: [
        {
          mark: { type: "point", filled: true, aria: false },
          encoding: {
            x: { field: "delta", type: "quantitative", title: `Δ ${m}`, axis: { format: "~g" } },
            y: { field: "jitter", type: "quantitative", axis: null, scale: { domain: [-1.3, 1.3] } },
            color: {
              field: "hit",
              type: "nominal",
              title: "hit",
              scale: { domain: ["same in both modes", "differs"], range: ["#4c78a8", "#e45756"] },
            },
            size: { condition: { test: "datum.differs", value: 36 }, value: 14 },
            opacity: { condition: { test: "datum.differs", value: 0.9 }, value: 0.45 },
          },
        },
        {
          mark: {
            type: "boxplot",
            extent: "min-max",
            size: 46,
            opacity: 0.35,
            color: "#333",
            median: { color: "black", strokeWidth: 2 },
          },
          encoding: { x: { field: "delta", type: "quantitative", title: `Δ ${m}` } },
        },
        {
          mark: { type: "rule", color: "#888", strokeDash: [4, 3] },
          encoding: { x: { datum: 0, type: "quantitative" } },
        },
      ],
    };
  };
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Attention mode − scan mode, per CounterFact row", subtitle: `${model}, ${s.rows} rows; box: quartiles and min–max` },
    vconcat: METRICS.map(panel),
    resolve: { scale: { x: "independent" } },
    config: { legend: { orient: "bottom" } },
  } as unknown as TopLevelSpec;
}

export async function readModeTable(path: string): Promise<ModeRow[]> {
  const t = await readParquet(path, { columns: ["row", "true_prob", "max_prob", "pred_id", "hit"] });
  return t.rows as unknown as ModeRow[];
}

export default defineStage({
  name: "02_compare",
  title: "Scan vs attention mode: accuracy, differing rows, distribution of the probability differences",
  version: "1",
  module: import.meta.url,
  inputs: { stages: ["01_construct"] },
  params: {
    threshold: { type: "number", default: 0.1, min: 0, doc: "count rows whose |Δ| exceeds this" },
  },
  // and delta_distributions.{vl.json,svg,png} when the model has both modes
  outputs: ["summary.json", "summary.md"],

  async run(ctx: StageContext<{ threshold: number }>) {
    const up = ctx.upstream("01_construct");
    const model = up.manifest.inputs.model?.id ?? "?";
    const modes = constructModes(up);
    if (!modes.includes("scan")) {
      const reason = `the model has no scan mode: 01_construct ran ${modes.join(" and ")} mode only, so there is no scan/attention difference to compare`;
      await writeJsonAtomic(join(ctx.dir, "summary.json"), { model, applicable: false, reason, modes });
      await writeFileAtomic(join(ctx.dir, "summary.md"), `# Scan mode vs attention mode\n\nModel \`${model}\`: not applicable; ${reason}.\n`);
      ctx.info.applicable = false;
      ctx.info.reason = reason;
      ctx.log(`not applicable: ${reason}`);
      return;
    }
    const scan = await readModeTable(up.file("construct_scan.parquet"));
    const attention = await readModeTable(up.file("construct_attention.parquet"));
    const s = compareModes(scan, attention, ctx.params.threshold);
    await writeJsonAtomic(join(ctx.dir, "summary.json"), { model, applicable: true, ...s });
    await writeFileAtomic(join(ctx.dir, "summary.md"), summaryMarkdown(s, model));
    ctx.extraOutputs?.push(...await writeFigure(ctx.dir, "delta_distributions", deltaFigure(scan, attention, s, model)));
    ctx.info.applicable = true;
    ctx.counts.rows = s.rows;
    ctx.counts.hit_differs = s.hit_differs;
    ctx.counts.pred_differs = s.pred_differs;
  },
});
