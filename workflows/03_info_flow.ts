// 03_info_flow: the attention-knockout experiment of Geva et al. (2023) on Mamba-2 (the seed's
// info_flow notebooks). For a sample of prompts, windows of k consecutive layers, and three
// blocks of edges into the last position (last → last, last → subject tokens, last → every
// non-subject position), the true token's probability after the knockout, whether it is still
// the top prediction, and its change relative to the unblocked run; then per (k, block, window,
// split) the accuracy and the mean relative change with 95 % bootstrap intervals, and the
// paper's figures. Every knockout goes through the exact fast path (engine/knockout.ts): one
// base run per prompt, then only the last position recomputed from the window's first layer.
// Work is saved per group of prompts (.work/knockouts.jsonl) and resumed after an interruption.

import { join } from "node:path";
import type { TopLevelSpec } from "vega-lite";
import { writeFileAtomic } from "./lib/atomic.ts";
import { MeanBootstrap, deterministicSample, mean } from "./lib/bootstrap.ts";
import { UserError } from "./lib/errors.ts";
import {
  BLOCKS,
  type Block,
  type InfoFlowConfig,
  infoFlowConfigs,
  layerWindows,
  parseWindowSizes,
  WINDOW_CONVENTIONS,
  type WindowConvention,
} from "./lib/knockout_configs.ts";
import { type ConstructRow, type KnockoutJob, type KnockoutRecord, readConstruct, runKnockoutJobs } from "./lib/knockout_run.ts";
import { type Column, writeParquet } from "./lib/parquet.ts";
import { writeFigure } from "./lib/plot.ts";
import { defineStage, type StageContext } from "./lib/stage.ts";
import { subjectTokens } from "./lib/subject.ts";

export const FILTERS = ["both-correct", "all"] as const;
export const TARGETS = ["true", "predicted"] as const;
export const SPLITS = ["all", "first_in_subject", "first_not_in_subject"] as const;
export type Split = typeof SPLITS[number];

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

export interface InfoFlowParams {
  filter: string;
  n_prompts: number;
  seed: number;
  k: string;
  window: string;
  relation_last: boolean;
  target: string;
  bootstrap: number;
  group_prompts: number;
  [key: string]: number | string | boolean;
}

/** A prompt of the experiment: its row, tokens, subject tokens, target and unblocked probability. */
export interface InfoFlowPrompt {
  row: number;
  prompt: string;
  subject: string;
  ids: number[];
  subjectTokens: number[];
  firstInSubject: boolean;
  target: number;
  /** p(target) of the unblocked attention-mode run, from 01_construct */
  baseProb: number;
  baseHit: boolean;
}

/** One knockout of one prompt, as it goes into info_flow.parquet. */
export interface InfoFlowResult {
  row: number;
  k: number;
  block: Block;
  window: number;
  window_start: number;
  window_end: number;
  target_id: number;
  base_prob: number;
  true_prob: number;
  pred_id: number;
  hit: boolean;
  relative_change: number;
  first_in_subject: boolean;
}

export interface Aggregate {
  k: number;
  block: Block;
  window: number;
  window_start: number;
  window_end: number;
  split: Split;
  n: number;
  base_accuracy: number;
  accuracy: number;
  accuracy_lo: number;
  accuracy_hi: number;
  relative_change: number;
  relative_change_lo: number;
  relative_change_hi: number;
}

export function relativeChange(p: number, pBase: number): number {
  return ((p - pBase) * 100) / pBase;
}

export function figureBase(k: number, split: Split): string {
  return `info_flow_k${k}_${split}`;
}

export function outputsFor(params: InfoFlowParams): string[] {
  const out = ["prompts.parquet", "info_flow.parquet", "info_flow_aggregates.parquet", "summary.md"];
  let ks: number[];
  try {
    ks = parseWindowSizes(params.k);
  } catch {
    ks = [];
  }
  for (const k of ks) {
    for (const s of SPLITS) out.push(...["vl.json", "svg", "png"].map((x) => `${figureBase(k, s)}.${x}`));
  }
  return out;
}

/** Per-prompt results of every configuration, in the order prompts × configurations. */
export function perPromptResults(
  prompts: InfoFlowPrompt[],
  configs: Map<number, InfoFlowConfig[]>,
  records: Map<number, KnockoutRecord>,
): InfoFlowResult[] {
  const out: InfoFlowResult[] = [];
  for (const pr of prompts) {
    const cfg = configs.get(pr.row)!, rec = records.get(pr.row);
    if (!rec) throw new Error(`no knockout results for row ${pr.row}`);
    cfg.forEach((c, i) => {
      out.push({
        row: pr.row,
        k: c.k,
        block: c.block,
        window: c.window.at,
        window_start: c.start,
        window_end: c.end,
        target_id: pr.target,
        base_prob: pr.baseProb,
        true_prob: rec.p[i],
        pred_id: rec.pred[i],
        hit: rec.pred[i] === pr.target,
        relative_change: relativeChange(rec.p[i], pr.baseProb),
        first_in_subject: pr.firstInSubject,
      });
    });
  }
  return out;
}

/**
 * Accuracy and mean relative change per (k, block, window, split), with percentile-bootstrap 95 %
 * intervals (`resamples` resamples of the split's prompts, the same resamples for every
 * configuration of a split). `results` holds every prompt's configurations in one common order.
 */
export function aggregate(prompts: InfoFlowPrompt[], results: InfoFlowResult[], resamples: number, seed: number): Aggregate[] {
  const nConf = prompts.length ? results.length / prompts.length : 0;
  const out: Aggregate[] = [];
  const members: Record<Split, number[]> = { all: [], first_in_subject: [], first_not_in_subject: [] };
  prompts.forEach((p, i) => {
    members.all.push(i);
    members[p.firstInSubject ? "first_in_subject" : "first_not_in_subject"].push(i);
  });
  const perSplit = SPLITS.map((split, si) => {
    const idx = members[split];
    return {
      split,
      idx,
      boot: resamples > 0 ? new MeanBootstrap(idx.length, resamples, (seed * 7919 + si * 104729 + 1) >>> 0) : undefined,
      baseAcc: mean(idx.map((i) => (prompts[i].baseHit ? 1 : 0))),
    };
  });
  for (let c = 0; c < nConf; c++) {
    const ref = results[c];
    for (const s of perSplit) {
      const acc = Float64Array.from(s.idx, (i) => (results[i * nConf + c].hit ? 1 : 0));
      const rel = Float64Array.from(s.idx, (i) => results[i * nConf + c].relative_change);
      const [alo, ahi] = s.boot ? s.boot.ci(acc) : [NaN, NaN];
      const [rlo, rhi] = s.boot ? s.boot.ci(rel) : [NaN, NaN];
      out.push({
        k: ref.k,
        block: ref.block,
        window: ref.window,
        window_start: ref.window_start,
        window_end: ref.window_end,
        split: s.split,
        n: s.idx.length,
        base_accuracy: s.baseAcc,
        accuracy: mean(acc),
        accuracy_lo: alo,
        accuracy_hi: ahi,
        relative_change: mean(rel),
        relative_change_lo: rlo,
        relative_change_hi: rhi,
      });
    }
  }
  // sorted by k, split, block, window: the order of the figures
  const bi = (b: Block) => BLOCKS.indexOf(b);
  out.sort((a, b) => a.k - b.k || SPLITS.indexOf(a.split) - SPLITS.indexOf(b.split) || bi(a.block) - bi(b.block) || a.window - b.window);
  return out;
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

function summaryMarkdown(
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

export default defineStage<InfoFlowParams>({
  name: "03_info_flow",
  title: "Attention knockout into the last position: last / subject / relation blocks over windows of layers",
  version: "1",
  module: import.meta.url,
  inputs: { dataset: true, tokenizer: true, model: true, stages: ["01_construct"] },
  params: {
    filter: { type: "string", default: "both-correct", choices: FILTERS, doc: "prompts: those both modes got right in 01_construct, or all" },
    n_prompts: { type: "int", default: 1000, min: 1, doc: "a deterministic sample of this many prompts (fewer if fewer qualify)" },
    seed: { type: "int", default: 0, min: 0, doc: "seed of the prompt sample and of the bootstrap" },
    k: { type: "string", default: "9,15", doc: "window sizes (layers), comma-separated" },
    window: { type: "string", default: "start", choices: WINDOW_CONVENTIONS, doc: "windows [l, l+k) by start (seed) or centred on layer l (Geva et al.)" },
    relation_last: { type: "boolean", default: true, doc: "the relation block includes the last position (seed) or not (Geva et al.)" },
    target: { type: "string", default: "true", choices: TARGETS, doc: "token whose probability is tracked: the dataset's true token or the model's own top prediction" },
    bootstrap: { type: "int", default: 1000, min: 0, max: 100000, doc: "bootstrap resamples for the 95 % intervals (0: none)" },
    group_prompts: { type: "int", default: 16, min: 1, max: 4096, doc: "prompts per fast-path call (and per saved step of progress)" },
  },
  outputs: outputsFor,

  async run(ctx: StageContext<InfoFlowParams>) {
    const P = ctx.params;
    const ks = parseWindowSizes(P.k, "03_info_flow.k");
    const convention = P.window as WindowConvention;
    const up = ctx.upstream("01_construct");
    const { scan, attention } = await readConstruct(up);
    const ds = await ctx.dataset();
    const tok = await ctx.tokenizer();

    // 1. the prompts that qualify, their subject tokens, the sample
    const candidates = ctx.rows.filter((r) => attention.has(r) && scan.has(r));
    const qualifying = P.filter === "all" ? candidates : candidates.filter((r) => scan.get(r)!.hit && attention.get(r)!.hit);
    if (qualifying.length === 0) {
      throw new UserError(
        `03_info_flow: no prompt to run: none of the ${candidates.length} selected rows was predicted correctly in both modes; ` +
          `select more rows or pass --set 03_info_flow.filter=all`,
      );
    }
    const rowIndex = new Map(ctx.rows.map((r, i) => [r, i]));
    const pieceCache = new Map<number, string>();
    const piece = (id: number) => {
      let s = pieceCache.get(id);
      if (s === undefined) pieceCache.set(id, s = tok.decodeEach([id])[0]);
      return s;
    };
    const skipped: number[] = [];
    const zeroBase: number[] = [];
    const valid = new Map<number, InfoFlowPrompt>();
    for (const row of qualifying) {
      const data = ds.rows[rowIndex.get(row)!];
      const a: ConstructRow = attention.get(row)!;
      const subject = typeof data.subject === "string" ? data.subject : "";
      const st = subjectTokens(a.ids.map(piece), subject);
      if (!st) {
        skipped.push(row);
        continue;
      }
      const baseProb = P.target === "true" ? a.true_prob : a.max_prob;
      if (!(baseProb > 0)) {
        zeroBase.push(row); // p_base underflowed to 0 (filter all): the relative change is undefined
        continue;
      }
      valid.set(row, {
        row,
        prompt: String(data.prompt ?? ""),
        subject,
        ids: a.ids,
        subjectTokens: st,
        firstInSubject: st.includes(0),
        target: P.target === "true" ? a.true_id : a.pred_id,
        baseProb,
        baseHit: P.target === "true" ? a.hit : true,
      });
    }
    if (skipped.length) {
      ctx.log(
        `skipped ${skipped.length} row(s) whose subject is not in the prompt: ${skipped.slice(0, 10).join(", ")}${skipped.length > 10 ? ", …" : ""}`,
      );
    }
    if (zeroBase.length) ctx.log(`skipped ${zeroBase.length} row(s) whose p_base is 0 (no relative change): ${zeroBase.slice(0, 10).join(", ")}${zeroBase.length > 10 ? ", …" : ""}`);
    if (valid.size === 0) {
      throw new UserError(
        `03_info_flow: no prompt to run: every one of the ${qualifying.length} qualifying rows was skipped ` +
          `(${skipped.length} subject not in the prompt, ${zeroBase.length} p_base = 0); check the dataset's subject column or select other rows`,
      );
    }
    const sample = deterministicSample([...valid.keys()], P.n_prompts, P.seed);
    const prompts = sample.map((r) => valid.get(r)!);
    if (sample.length < P.n_prompts) ctx.log(`${sample.length} prompts qualify, fewer than n_prompts = ${P.n_prompts}: running all of them`);

    // 2. the configurations (k is checked against the model's layers before anything runs)
    const loaded = await ctx.model();
    const nLayer = loaded.model.info.nLayer;
    for (const k of ks) layerWindows(nLayer, k, convention);
    const configs = new Map(prompts.map((p) => [
      p.row,
      infoFlowConfigs(nLayer, p.ids.length, p.subjectTokens, { ks, convention, relationLast: P.relation_last }),
    ]));
    const jobs: KnockoutJob[] = prompts.map((p) => ({ row: p.row, ids: p.ids, target: p.target, configs: configs.get(p.row)! }));

    // 3. the knockouts
    const records = await runKnockoutJobs(ctx as unknown as StageContext, jobs, {
      logName: "knockouts",
      groupPrompts: P.group_prompts,
      label: "03_info_flow",
    });

    // 4. tables
    const results = perPromptResults(prompts, configs, records);
    const aggs = aggregate(prompts, results, P.bootstrap, P.seed);
    let baseDiff = 0;
    for (const p of prompts) baseDiff = Math.max(baseDiff, Math.abs(records.get(p.row)!.base_prob - p.baseProb));
    const meta = { "mamba_explain.stage": "03_info_flow", "mamba_explain.cache_key": ctx.cacheKey };
    await writeParquet(join(ctx.dir, "prompts.parquet"), [
      { name: "row", type: "INT32", data: Int32Array.from(prompts, (p) => p.row) },
      { name: "prompt", type: "STRING", data: prompts.map((p) => p.prompt) },
      { name: "subject", type: "STRING", data: prompts.map((p) => p.subject) },
      { name: "ids", type: "INT32_LIST", data: prompts.map((p) => p.ids) },
      { name: "subject_tokens", type: "INT32_LIST", data: prompts.map((p) => p.subjectTokens) },
      { name: "first_in_subject", type: "BOOLEAN", data: prompts.map((p) => p.firstInSubject) },
      { name: "target_id", type: "INT32", data: Int32Array.from(prompts, (p) => p.target) },
      { name: "base_prob", type: "DOUBLE", data: Float64Array.from(prompts, (p) => p.baseProb) },
      { name: "base_prob_fast_path", type: "DOUBLE", data: Float64Array.from(prompts, (p) => records.get(p.row)!.base_prob) },
      { name: "base_hit", type: "BOOLEAN", data: prompts.map((p) => p.baseHit) },
    ], meta);
    const col = <K extends keyof InfoFlowResult>(name: K, type: Column["type"]): Column => ({
      name,
      type,
      data: results.map((r) => r[name]),
      nullable: false,
    });
    await writeParquet(join(ctx.dir, "info_flow.parquet"), [
      col("row", "INT32"),
      col("k", "INT32"),
      col("block", "STRING"),
      col("window", "INT32"),
      col("window_start", "INT32"),
      col("window_end", "INT32"),
      col("target_id", "INT32"),
      col("base_prob", "DOUBLE"),
      col("true_prob", "DOUBLE"),
      col("pred_id", "INT32"),
      col("hit", "BOOLEAN"),
      col("relative_change", "DOUBLE"),
      col("first_in_subject", "BOOLEAN"),
    ], meta);
    const acol = <K extends keyof Aggregate>(name: K, type: Column["type"]): Column => ({
      name,
      type,
      data: aggs.map((r) => r[name]),
      nullable: false,
    });
    await writeParquet(join(ctx.dir, "info_flow_aggregates.parquet"), [
      acol("k", "INT32"),
      acol("block", "STRING"),
      acol("window", "INT32"),
      acol("window_start", "INT32"),
      acol("window_end", "INT32"),
      acol("split", "STRING"),
      acol("n", "INT32"),
      acol("base_accuracy", "DOUBLE"),
      acol("accuracy", "DOUBLE"),
      acol("accuracy_lo", "DOUBLE"),
      acol("accuracy_hi", "DOUBLE"),
      acol("relative_change", "DOUBLE"),
      acol("relative_change_lo", "DOUBLE"),
      acol("relative_change_hi", "DOUBLE"),
    ], { ...meta, "mamba_explain.bootstrap": String(P.bootstrap) });

    // 5. figures
    const model = up.manifest.inputs.model?.id ?? "?";
    for (const k of ks) {
      for (const split of SPLITS) {
        await writeFigure(ctx.dir, figureBase(k, split), infoFlowFigure(aggs, { k, split, model, convention, target: P.target, nLayer }));
      }
    }
    await writeFileAtomic(
      join(ctx.dir, "summary.md"),
      summaryMarkdown(aggs, ks, model, {
        prompts: prompts.length,
        qualifying: qualifying.length,
        requested: P.n_prompts,
        filter: P.filter,
        skipped,
        convention,
        target: P.target,
      }),
    );

    ctx.counts.prompts = prompts.length;
    ctx.counts.qualifying = qualifying.length;
    ctx.counts.skipped_subject_not_found = skipped.length;
    ctx.counts.knockouts = results.length;
    ctx.counts.first_in_subject = prompts.filter((p) => p.firstInSubject).length;
    ctx.info.prompts = {
      filter: P.filter,
      selectedRows: candidates.length,
      qualifying: qualifying.length,
      requested: P.n_prompts,
      sampled: prompts.length,
      note: prompts.length < P.n_prompts ? `only ${prompts.length} prompts qualify; all of them were run` : `a sample of ${P.n_prompts} (seed ${P.seed})`,
    };
    ctx.info.skippedSubjectNotFound = skipped;
    if (zeroBase.length) {
      ctx.counts.skipped_zero_base_prob = zeroBase.length;
      ctx.info.skippedZeroBaseProb = zeroBase;
    }
    ctx.info.nLayer = nLayer;
    ctx.info.windows = Object.fromEntries(ks.map((k) => [k, layerWindows(nLayer, k, convention).length]));
    ctx.info.maxAbsBaseProbDiffFastPathVs01 = baseDiff;
  },
});
