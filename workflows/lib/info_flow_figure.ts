// 03_info_flow's figures and summary: per k and split, the paper's two panels (accuracy and % change
// of p(target) against the window, one line per block, 95 % CI bands), and summary.md.

import type { TopLevelSpec } from "vega-lite";
import { BLOCKS, type Block, type WindowConvention } from "./knockout_configs.ts";
import { type Aggregate, type Split, SPLITS } from "./info_flow_stats.ts";

export const SPLIT_LABEL: Record<Split, string> = {
  all: "all prompts",
  first_in_subject: "prompts whose subject includes the first token",
  first_not_in_subject: "prompts whose subject does not include the first token",
};

export const BLOCK_LABEL: Record<Block, string> = {
  last: "last → last",
  subject: "last → subject",
  relation: "last → relation",
};
export const BLOCK_COLOR: Record<Block, string> = { last: "#e45756", subject: "#4c78a8", relation: "#54a24b" };

export function figureBase(k: number, split: Split): string {
  return `info_flow_k${k}_${split}`;
}

/** Two panels (accuracy %, % change of p(target)) against the window, one line per block, with CI bands. */
export function infoFlowFigure(
  aggs: Aggregate[],
  opts: { k: number; split: Split; model: string; convention: WindowConvention; target: string; nLayer: number },
): TopLevelSpec {
  const rows = aggs.filter((a) => a.k === opts.k && a.split === opts.split);
  const n = rows[0]?.n ?? 0;
  const fin = (x: number) => (Number.isFinite(x) ? x : null);
  const values = rows.map((a) => ({
    block: BLOCK_LABEL[a.block],
    window: a.window,
    layers: `${a.window_start}–${a.window_end - 1}`,
    accuracy: fin(100 * a.accuracy),
    accuracy_lo: fin(100 * a.accuracy_lo),
    accuracy_hi: fin(100 * a.accuracy_hi),
    change: fin(a.relative_change),
    change_lo: fin(a.relative_change_lo),
    change_hi: fin(a.relative_change_hi),
  }));
  const baseAcc = rows[0] ? 100 * rows[0].base_accuracy : 100;
  const xTitle = opts.convention === "start" ? `window start layer (window of ${opts.k} layers)` : `window centre layer (window of ${opts.k} layers)`;
  const tLabel = opts.target === "true" ? "p(true token)" : "p(predicted token)";
  const color = {
    field: "block",
    type: "nominal",
    title: "edges blocked",
    scale: { domain: BLOCKS.map((b) => BLOCK_LABEL[b]), range: BLOCKS.map((b) => BLOCK_COLOR[b]) },
  };
  const x = {
    field: "window",
    type: "quantitative",
    title: xTitle,
    scale: { domain: [0, Math.max(0, opts.nLayer - (opts.convention === "start" ? opts.k : 1))], nice: false },
    axis: { tickMinStep: 1, format: "d" },
  };
  const panel = (field: "accuracy" | "change", title: string, rule: number, ruleLabel: string, labelAbove = false) => ({
    width: 360,
    height: 240,
    title: { text: title, anchor: "start", fontSize: 12 },
    layer: [
      {
        mark: { type: "area", opacity: 0.18 },
        encoding: {
          x,
          y: { field: `${field}_lo`, type: "quantitative" },
          y2: { field: `${field}_hi` },
          color,
        },
      },
      {
        mark: { type: "line", point: { size: 22 }, strokeWidth: 1.8 },
        encoding: {
          x,
          y: {
            field,
            type: "quantitative",
            title: field === "accuracy" ? "accuracy (%)" : `% change of ${tLabel}`,
            scale: field === "accuracy" ? { domain: [0, 100] } : { zero: false },
          },
          color,
          tooltip: [
            { field: "block" },
            { field: "window" },
            { field: "layers" },
            { field, format: ".3~f" },
            { field: `${field}_lo`, format: ".3~f" },
            { field: `${field}_hi`, format: ".3~f" },
          ],
        },
      },
      {
        mark: { type: "rule", color: "#888", strokeDash: [4, 3] },
        encoding: { y: { datum: rule, type: "quantitative" } },
      },
      {
        mark: { type: "text", align: "left", baseline: labelAbove ? "bottom" : "top", dx: 4, dy: labelAbove ? -4 : 4, fontSize: 10, color: "#666" },
        encoding: { x: { datum: 0, type: "quantitative" }, y: { datum: rule, type: "quantitative" }, text: { value: ruleLabel } },
      },
    ],
  });
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: `Knocking out attention edges into the last position, windows of k = ${opts.k} layers`,
      subtitle: `${opts.model} · ${SPLIT_LABEL[opts.split]} (n = ${n}) · mean, band = 95 % bootstrap CI` +
        (n === 0 ? " · no prompts in this split" : ""),
    },
    data: { values },
    hconcat: [
      panel("accuracy", "Accuracy (target still the top prediction)", baseAcc, `no knockout: ${baseAcc.toFixed(1)} %`, baseAcc < 50),
      panel("change", `Relative change of ${tLabel}`, 0, "no change"),
    ],
    config: { legend: { orient: "bottom", labelFontSize: 11, titleFontSize: 11, symbolOpacity: 1, symbolType: "stroke", symbolStrokeWidth: 3 } },
  } as unknown as TopLevelSpec;
}

/** summary.md: the sample, the lowest mean change per block and k, the figures. */
export function summaryMarkdown(
  aggs: Aggregate[],
  ks: number[],
  model: string,
  facts: { prompts: number; qualifying: number; requested: number; filter: string; skipped: number[]; convention: string; target: string },
): string {
  const lines = [
    `# Information flow into the last position (attention knockout)`,
    ``,
    `Model \`${model}\`; ${facts.prompts} prompts (filter \`${facts.filter}\`: ${facts.qualifying} qualified, ${facts.requested} requested)` +
    (facts.skipped.length ? `; ${facts.skipped.length} rows skipped because the subject is not in the prompt` : "") + `.`,
    `Windows by ${facts.convention === "start" ? "start layer" : "centre layer"}; target: ${facts.target === "true" ? "the dataset's true token" : "the model's own top prediction"}.`,
    ``,
  ];
  for (const k of ks) {
    lines.push(`## k = ${k}`, ``, `Lowest mean relative change of p(target) per block (all prompts):`, ``);
    lines.push(`| block | window | layers | accuracy | mean % change | 95 % CI |`, `| --- | ---: | --- | ---: | ---: | --- |`);
    for (const b of BLOCKS) {
      const rows = aggs.filter((a) => a.k === k && a.split === "all" && a.block === b);
      if (!rows.length) continue;
      const m = rows.reduce((x, y) => (y.relative_change < x.relative_change ? y : x));
      lines.push(
        `| ${b} | ${m.window} | ${m.window_start}–${m.window_end - 1} | ${(100 * m.accuracy).toFixed(1)} % | ${m.relative_change.toFixed(2)} | ` +
          `[${m.relative_change_lo.toFixed(2)}, ${m.relative_change_hi.toFixed(2)}] |`,
      );
    }
    lines.push(``);
    for (const s of SPLITS) lines.push(`![k=${k}, ${SPLIT_LABEL[s]}](${figureBase(k, s)}.png)`, ``);
  }
  return lines.join("\n");
}

