// 03_info_flow's figures and summary. Every figure has the paper's two panels (accuracy, and % change
// of p(target), against the window) with one line per series and its 95 % CI band:
// - per (k, split, heads, conv): one line per flow, labelled in the direction information flows
//   (`subject → last` for the flow `last<-subject`), as Geva et al. write it;
// - features, per (k, split, conv, flow), when several head selectors run: one line per selector
//   (the reference study's "feature" figure);
// - conv, per (k, split, heads), when conv runs both ways: each flow with the conv path open (solid)
//   and cut too (dashed), so that the share the convolution carries is seen.
// The x axis is the window's start or centre layer, or (`x_axis` = depth) that layer as % of the
// model's layers, so that models of different depths can be drawn together.

import type { TopLevelSpec } from "vega-lite";
import type { UnitSelector } from "../../engine/arch.ts";
import type { WindowConvention } from "./knockout_configs.ts";
import { type Aggregate, type Split, SPLITS } from "./info_flow_stats.ts";

export const X_AXES = ["layer", "depth"] as const;
export type XAxis = typeof X_AXES[number];

export const SPLIT_LABEL: Record<Split, string> = {
  all: "all prompts",
  first_in_subject: "prompts whose subject includes the first token",
  first_not_in_subject: "prompts whose subject does not include the first token",
};

/** `last<-subject` → `subject → last`: the direction information flows. */
export function flowLabel(flow: string): string {
  const [target, source] = flow.split("<-");
  return `${source} → ${target}`;
}

/** `last<-subject` → `subject-to-last` (file names). */
export function flowSlug(flow: string): string {
  const [target, source] = flow.split("<-");
  return `${source}-to-${target}`;
}

/** `not-fast:1/3` → `not-fast-1of3`, `only:0-3+7` → `only-0-3_7` (file names). */
export function selectorSlug(heads: string): string {
  return heads.replace(":", "-").replace("/", "of").replaceAll("+", "_");
}

const FRACTION_WORDS: Record<string, string> = {
  "1/2": "half",
  "1/3": "third",
  "2/3": "two thirds",
  "1/4": "quarter",
  "3/4": "three quarters",
};

/** What a selector knocks out, in words: `not-fast:1/3` → "all but the fastest third of heads". */
export function selectorWords(sel: UnitSelector, unit: string): string {
  const units = `${unit}s`;
  switch (sel.kind) {
    case "all":
      return `all ${units}`;
    case "only":
      return `${units} ${sel.units.join(", ")}`;
    default: {
      const frac = FRACTION_WORDS[`${sel.a}/${sel.b}`] ?? `${sel.a}/${sel.b}`;
      const speed = sel.kind.endsWith("fast") ? "fastest" : "slowest";
      return sel.kind.startsWith("not-") ? `all but the ${speed} ${frac} of ${units}` : `the ${speed} ${frac} of ${units}`;
    }
  }
}

// Colours per flow (the seed's three keep theirs), then a fallback palette; dashes per target set.
export const FLOW_COLOR: Record<string, string> = {
  "last<-last": "#e45756",
  "last<-subject": "#4c78a8",
  "last<-relation": "#54a24b",
  "last<-first": "#f58518",
  "last<-relation_minus_last": "#72b7b2",
  "subject<-context": "#b279a2",
  "subject<-subject": "#9d755d",
  "relation<-context": "#d6616b",
  "relation<-subject": "#8c8c00",
  "relation<-relation": "#17becf",
};
export const PALETTE = ["#393b79", "#e7969c", "#637939", "#843c39", "#7b4173", "#3182bd", "#bd9e39", "#636363"];
const TARGET_DASH: Record<string, number[]> = { last: [], subject: [7, 3], relation: [2, 2], first: [9, 2, 2, 2] };
const OTHER_DASH = [4, 4];
const SELECTOR_COLOR: Record<string, string> = { all: "#222222", fast: "#e45756", "not-fast": "#f58518", slow: "#4c78a8", "not-slow": "#72b7b2" };

export function flowColors(flows: string[]): Map<string, string> {
  let next = 0;
  return new Map(flows.map((f) => [f, FLOW_COLOR[f] ?? PALETTE[next++ % PALETTE.length]]));
}

/**
 * The 95 % CI band of `field` (its `_lo` and `_hi` fields) per series: a light fill, and its edges drawn
 * thin so that overlapping bands stay apart (also 05_compare_models's figures).
 */
export function ciBandLayers(x: unknown, field: string, color: unknown, series: string): unknown[] {
  return [
    { mark: { type: "area", opacity: 0.1 }, encoding: { x, y: { field: `${field}_lo`, type: "quantitative" }, y2: { field: `${field}_hi` }, color } },
    ...["lo", "hi"].map((end) => ({
      mark: { type: "line", strokeWidth: 0.9, opacity: 0.55 },
      encoding: { x, y: { field: `${field}_${end}`, type: "quantitative" }, color, detail: { field: series } },
    })),
  ];
}

/**
 * The mean of `field` (accuracy in % on 0–100, or % change) per series, with points; hovering shows the
 * `labels` fields, the mean and its CI. `extra` adds encodings (a dash per series).
 */
export function meanLineLayer(x: unknown, field: "accuracy" | "change", color: unknown, labels: object[], extra: object = {}): unknown {
  return {
    mark: { type: "line", point: { size: 22 }, strokeWidth: 2 },
    encoding: {
      x,
      y: {
        field,
        type: "quantitative",
        title: field === "accuracy" ? "accuracy (%)" : "% change",
        scale: field === "accuracy" ? { domain: [0, 100] } : { zero: false },
      },
      color,
      ...extra,
      tooltip: [...labels, { field, format: ".3~f" }, { field: `${field}_lo`, format: ".3~f" }, { field: `${field}_hi`, format: ".3~f" }],
    },
  };
}

/** One line of a figure: what it is called in the legend and how it is drawn. */
interface Series {
  label: string;
  color: string;
  dash: number[];
}

export interface FigureContext {
  model: string;
  convention: WindowConvention;
  xAxis: XAxis;
  /** `true` or `predicted` */
  target: string;
  nLayer: number;
  /** head or channel */
  unitName: string;
  /** the parameters' lists, in their order */
  flows: string[];
  heads: UnitSelector[];
  headsText: string[];
  conv: boolean[];
}

/** One figure of the stage: its file name (without extension) and what it shows. */
export type FigureSpec =
  | { kind: "flows"; base: string; k: number; split: Split; heads: string; conv: boolean }
  | { kind: "features"; base: string; k: number; split: Split; flow: string; conv: boolean }
  | { kind: "conv"; base: string; k: number; split: Split; heads: string };

/** A figure name's part for a head selector other than `all`: `_heads-not-fast-1of3`. */
export const headsPart = (h: string) => (h === "all" ? "" : `_heads-${selectorSlug(h)}`);
/** A figure name's part for the conv path cut too: `_conv`. */
export const convPart = (c: boolean) => (c ? "_conv" : "");

/**
 * Every figure for these parameters. The default run (heads `all`, conv off) keeps the names
 * `info_flow_k{k}_{split}`; other selectors and conv add `_heads-…` and `_conv`.
 */
export function figureSpecs(p: { ks: number[]; flows: string[]; heads: string[]; conv: boolean[] }): FigureSpec[] {
  const out: FigureSpec[] = [];
  for (const k of p.ks) {
    for (const split of SPLITS) {
      for (const heads of p.heads) {
        for (const conv of p.conv) out.push({ kind: "flows", base: `info_flow_k${k}_${split}${headsPart(heads)}${convPart(conv)}`, k, split, heads, conv });
      }
      if (p.heads.length > 1) {
        for (const conv of p.conv) {
          for (const flow of p.flows) out.push({ kind: "features", base: `info_flow_features_k${k}_${split}_${flowSlug(flow)}${convPart(conv)}`, k, split, flow, conv });
        }
      }
      if (p.conv.length > 1) {
        for (const heads of p.heads) out.push({ kind: "conv", base: `info_flow_conv_k${k}_${split}${headsPart(heads)}`, k, split, heads });
      }
    }
  }
  return out;
}

const TARGET_WORDS: Record<string, string> = {
  last: "the last position",
  first: "the first position",
  subject: "the subject",
  relation: "the relation",
  relation_minus_last: "the relation but the last position",
  context: "the context before the subject",
  all: "every position",
};

const layersWord = (k: number) => (k === 1 ? "1 layer" : `${k} layers`);
/** The layers of a window, [start, end): `3–5`, or `4` for one layer. */
const layerRange = (a: { window_start: number; window_end: number }) =>
  a.window_end - a.window_start === 1 ? `${a.window_start}` : `${a.window_start}–${a.window_end - 1}`;

const fin = (x: number) => (Number.isFinite(x) ? x : null);

/** A point of a curve as the figures draw it: its window, layers, n, and accuracy and change in % with their CIs (null where not finite). */
export function curvePoint(a: Aggregate) {
  return {
    window: a.window,
    depth: a.depth,
    layers: layerRange(a),
    n: a.n,
    accuracy: fin(100 * a.accuracy),
    accuracy_lo: fin(100 * a.accuracy_lo),
    accuracy_hi: fin(100 * a.accuracy_hi),
    change: fin(a.relative_change),
    change_lo: fin(a.relative_change_lo),
    change_hi: fin(a.relative_change_hi),
  };
}

/** The rows a figure draws and the series each belongs to, in legend order. */
function seriesOf(spec: FigureSpec, aggs: Aggregate[], fc: FigureContext): { rows: [Aggregate, Series][]; series: Series[] } {
  const colors = flowColors(fc.flows);
  const flowSeries = (flow: string, conv = false): Series => ({
    label: flowLabel(flow) + (conv ? ", conv cut too" : ""),
    color: colors.get(flow)!,
    dash: spec.kind === "conv" ? (conv ? [6, 3] : []) : TARGET_DASH[flow.split("<-")[0]] ?? OTHER_DASH,
  });
  const mine = aggs.filter((a) => a.k === spec.k && a.split === spec.split);
  if (spec.kind === "flows") {
    const series = fc.flows.map((f) => flowSeries(f));
    const rows = mine.filter((a) => a.heads === spec.heads && a.conv === spec.conv).map((a): [Aggregate, Series] => [a, series[fc.flows.indexOf(a.flow)]]);
    return { rows, series };
  }
  if (spec.kind === "conv") {
    const series = fc.flows.flatMap((f) => fc.conv.map((c) => flowSeries(f, c)));
    const rows = mine.filter((a) => a.heads === spec.heads).map((a): [Aggregate, Series] => [a, series[fc.flows.indexOf(a.flow) * fc.conv.length + fc.conv.indexOf(a.conv)]]);
    return { rows, series };
  }
  let fallback = 0;
  const series = fc.heads.map((sel, i): Series => ({
    label: `${fc.headsText[i]}: ${selectorWords(sel, fc.unitName)}`,
    color: SELECTOR_COLOR[sel.kind] ?? PALETTE[fallback++ % PALETTE.length],
    dash: sel.kind.startsWith("not-") ? [6, 3] : [],
  }));
  const rows = mine.filter((a) => a.flow === spec.flow && a.conv === spec.conv).map((a): [Aggregate, Series] => [a, series[fc.headsText.indexOf(a.heads)]]);
  return { rows, series };
}

function titleOf(spec: FigureSpec, fc: FigureContext): string {
  const k = `windows of k = ${layersWord(spec.k)}`;
  if (spec.kind === "flows") return `Information flow between token sets: edges knocked out in ${k}`;
  if (spec.kind === "features") return `Information flow ${flowLabel(spec.flow)} by ${fc.unitName}s knocked out, ${k}`;
  return `Information flow with and without the conv path, ${k}`;
}

/**
 * Two panels (accuracy %, % change of p(target)) against the window, one line per series, with CI
 * bands; one row of them per target set of the flows drawn.
 */
export function infoFlowFigure(spec: FigureSpec, aggs: Aggregate[], fc: FigureContext): TopLevelSpec {
  const { rows, series } = seriesOf(spec, aggs, fc);
  const xField = fc.xAxis === "depth" ? "depth" : "window";
  const values = rows.map(([a, s]) => ({
    series: s.label,
    into: a.target,
    flow: flowLabel(a.flow),
    heads: a.heads,
    conv: a.conv ? "cut too" : "open",
    ...curvePoint(a),
  }));
  const ns = [...new Set(rows.map(([a]) => a.n))].sort((x, y) => x - y);
  const nText = ns.length === 0
    ? "n = 0 prompts"
    : ns.length === 1
    ? `n = ${ns[0]} prompts`
    : `n = ${ns[0]}–${ns[ns.length - 1]} prompts (a flow with no edge in a prompt leaves it out)`;
  const bands = values.some((v) => v.accuracy_lo !== null && v.n > 1);
  // the unblocked accuracy: the same for every series over the same prompts; the widest sample's
  const widest = rows.reduce<Aggregate | undefined>((m, [a]) => (!m || a.n > m.n ? a : m), undefined);
  const baseAcc = widest && widest.n > 0 ? 100 * widest.base_accuracy : 100;
  const where = fc.convention === "start" ? "start" : "centre";
  const xTitle = fc.xAxis === "depth" ? `window ${where} as % of the ${fc.nLayer} layers (k = ${spec.k})` : `window ${where} layer (window of ${layersWord(spec.k)})`;
  const xMax = fc.xAxis === "depth"
    ? Math.max(0, ...values.map((v) => v.depth))
    : Math.max(0, fc.nLayer - (fc.convention === "start" ? spec.k : 1));
  const tLabel = fc.target === "true" ? "p(true token)" : "p(predicted token)";
  const legendTitle = spec.kind === "features" ? `${fc.unitName}s knocked out` : "flow blocked (source → target)";
  const color = {
    field: "series",
    type: "nominal",
    title: legendTitle,
    scale: { domain: series.map((s) => s.label), range: series.map((s) => s.color) },
    // Vega estimates label widths headless (too wide): long labels get fewer columns
    legend: { columns: Math.min(spec.kind === "features" ? 1 : spec.kind === "conv" ? 2 : 3, series.length) },
  };
  // one row of panels per target set: at most a few lines per panel
  const targets = spec.kind === "features" ? [spec.flow.split("<-")[0]] : [...new Set(fc.flows.map((f) => f.split("<-")[0]))];
  const height = targets.length > 1 ? 200 : 250;
  const strokeDash = { field: "series", type: "nominal", scale: { domain: series.map((s) => s.label), range: series.map((s) => s.dash) } };
  const x = {
    field: xField,
    type: "quantitative",
    title: xTitle,
    scale: { domain: [0, xMax], nice: false },
    axis: fc.xAxis === "depth" ? { format: ".0f" } : { tickMinStep: 1, format: "d" },
  };
  const panel = (field: "accuracy" | "change", title: string, rule: number, ruleLabel: string, labelAbove = false) => ({
    width: 380,
    height,
    title: { text: title, anchor: "start", fontSize: 12 },
    layer: [
      ...(bands ? ciBandLayers(x, field, color, "series") : []),
      meanLineLayer(x, field, color, [{ field: "series" }, { field: "window" }, { field: "depth", format: ".1f" }, { field: "layers" }, { field: "n" }], { strokeDash }),
      // the reference line and its label, drawn once (their own one-row data)
      {
        data: { values: [{}] },
        mark: { type: "rule", color: "#888", strokeDash: [4, 3] },
        encoding: { y: { datum: rule, type: "quantitative" } },
      },
      {
        data: { values: [{}] },
        mark: { type: "text", align: "left", baseline: labelAbove ? "bottom" : "top", dx: 4, dy: labelAbove ? -4 : 4, fontSize: 10, color: "#555" },
        encoding: { x: { datum: 0, type: "quantitative" }, y: { datum: rule, type: "quantitative" }, text: { value: ruleLabel } },
      },
    ],
  });
  const about = [
    spec.kind !== "features"
      ? `${fc.unitName}s: ${spec.heads}` +
        (spec.heads === "all" ? "" : ` (knocked out: ${selectorWords(fc.heads[fc.headsText.indexOf(spec.heads)], fc.unitName)})`)
      : "",
    spec.kind !== "conv" ? `conv path: ${spec.conv ? "cut too" : "open"}` : "",
  ].filter((s) => s).join(" · ");
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: titleOf(spec, fc),
      // short lines: Vega sizes the figure by an estimate of the text's width that runs long
      subtitle: [
        `${fc.model} · ${SPLIT_LABEL[spec.split]}`,
        nText,
        about,
        `line: mean${bands ? ", band: 95 % bootstrap CI" : ""}` + (values.length === 0 ? " · no prompts here" : ""),
      ].filter((l) => l !== ""),
      anchor: "start",
    },
    data: { values },
    vconcat: targets.map((into) => ({
      ...(targets.length > 1 ? { title: { text: `Flows into ${TARGET_WORDS[into] ?? into}`, anchor: "start", fontSize: 13, offset: 6 } } : {}),
      transform: [{ filter: { field: "into", equal: into } }],
      hconcat: [
        panel("accuracy", "Accuracy (target still the top prediction)", baseAcc, `no knockout: ${baseAcc.toFixed(1)} %`, baseAcc < 50),
        panel("change", `Relative change of ${tLabel}`, 0, "no change"),
      ],
    })),
    spacing: 28,
    config: {
      legend: {
        orient: "bottom",
        labelFontSize: 11,
        titleFontSize: 11,
        // Vega measures text headless by an estimate wider than the real glyphs: no limit that would cut a label
        labelLimit: 0,
        titleLimit: 0,
        symbolOpacity: 1,
        symbolType: "stroke",
        symbolStrokeWidth: 3,
        symbolSize: 400,
      },
    },
  } as unknown as TopLevelSpec;
}

const pct = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "–");

/** summary.md: the sample, per k the lowest mean change of every (flow, heads, conv), the figures. */
export function summaryMarkdown(
  aggs: Aggregate[],
  figures: FigureSpec[],
  fc: FigureContext,
  ks: number[],
  facts: { prompts: number; qualifying: number; requested: number; filter: string; skipped: number[]; noEdges: Record<string, number> },
): string {
  const noEdge = Object.entries(facts.noEdges).filter(([, n]) => n > 0);
  const lines = [
    `# Information flow between token sets (attention knockout)`,
    ``,
    `Model \`${fc.model}\`; ${facts.prompts} prompts (filter \`${facts.filter}\`: ${facts.qualifying} qualified, ${facts.requested} requested)` +
    (facts.skipped.length ? `; ${facts.skipped.length} rows skipped because the subject is not in the prompt` : "") + `.`,
    `Windows by ${fc.convention === "start" ? "start layer" : "centre layer"}; target: ${fc.target === "true" ? "the dataset's true token" : "the model's own top prediction"}.`,
    `Flows are written in the direction information flows: \`subject → last\` is the flow \`last<-subject\` (edges from subject tokens into the last position).`,
    ...(noEdge.length ? [``, `Prompts in which a flow blocks no edge (no row for them): ${noEdge.map(([f, n]) => `${flowLabel(f)}: ${n}`).join(", ")}.`] : []),
    ``,
  ];
  for (const k of ks) {
    lines.push(`## k = ${k}`, ``, `Lowest mean relative change of p(target) over the windows (all prompts):`, ``);
    lines.push(`| flow | ${fc.unitName}s | conv | window | layers | n | accuracy | mean % change | 95 % CI |`, `| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- |`);
    for (const heads of fc.headsText) {
      for (const conv of fc.conv) {
        for (const flow of fc.flows) {
          const rows = aggs.filter((a) => a.k === k && a.split === "all" && a.flow === flow && a.heads === heads && a.conv === conv);
          if (!rows.length) continue;
          const m = rows.reduce((x, y) => (y.relative_change < x.relative_change ? y : x));
          lines.push(
            `| ${flowLabel(flow)} | ${heads} | ${conv ? "cut" : "open"} | ${m.window} | ${layerRange(m)} | ${m.n} | ` +
              `${(100 * m.accuracy).toFixed(1)} % | ${pct(m.relative_change)} | [${pct(m.relative_change_lo)}, ${pct(m.relative_change_hi)}] |`,
          );
        }
      }
    }
    lines.push(``);
    for (const f of figures.filter((f) => f.k === k)) {
      const what = f.kind === "flows"
        ? `${SPLIT_LABEL[f.split]}, ${fc.unitName}s ${f.heads}, conv ${f.conv ? "cut" : "open"}`
        : f.kind === "features"
        ? `${flowLabel(f.flow)} by ${fc.unitName} selector, ${SPLIT_LABEL[f.split]}, conv ${f.conv ? "cut" : "open"}`
        : `with and without the conv path, ${SPLIT_LABEL[f.split]}, ${fc.unitName}s ${f.heads}`;
      lines.push(`![k=${k}, ${what}](${f.base}.png)`, ``);
    }
  }
  return lines.join("\n");
}
