// The reference study's knockout sweep (Endy et al. 2025: nine flows target<-source, k = 9, every
// window of layers) per prompt, on a synthetic model of the mamba2-130m shape (random weights
// made here, nothing downloaded): the exact fast path (LanguageModel.knockouts: one base run, then
// per knockout only the rows t0..T-1 from the window's first layer up, all knockouts of the prompts
// as the rows of one batch) against full attention-mode recomputes of the same knockouts (batched
// the same way, each a whole forward), in the same run on the same device, with both FLOP counts
// and the largest |Δp| between the two. The full recomputes are timed on the whole sweep unless
// --full-knockouts N picks fewer (then extrapolated).
//   deno run -A bench/knockout_bench.ts [--quick] [--shape mamba2-130m]... [--prompts N | --prompts-json FILE] [--full-knockouts N] [--repeats N]
// (--prompts-json: [{"ids": [...], "subject": [...]}, ...] instead of CounterFact rows read through the tokenizer)
// `benchKnockout()` gives the rows to `deno task bench`.

import { parseArgs } from "node:util";
import type { KnockoutConfig, LanguageModel } from "../engine/arch.ts";
import { loadModel } from "../engine/families.ts";
import { flowEdges } from "../engine/flows.ts";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { Mamba2Config } from "../engine/mamba2/config.ts";
import type { TokenStats } from "../engine/probs.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { layerWindows } from "../workflows/lib/knockout_configs.ts";
import { counterfactPrompts } from "./prompts.ts";

/** One row of `deno task bench` (the same shape as bench/table.ts's BenchRow). */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  note?: string;
}

export const SHAPES = ["mamba2-130m"] as const;
const K = 9;
/** The reference study's nine flows. */
export const FLOWS = [
  "last<-subject",
  "last<-relation",
  "last<-last",
  "last<-first",
  "subject<-context",
  "subject<-subject",
  "relation<-context",
  "relation<-subject",
  "relation<-relation",
] as const;

// ------------------------------------------------------------------ arithmetic

/** FLOPs of the per-token work of one layer outside the SSD: norms, in_proj, conv, gate, out_proj. */
export function layerRowFlops(c: Mamba2Config): number {
  return 2 * c.dModel * c.dInProj + 2 * c.dInner * c.dModel + 2 * c.convDim * c.dConv + 4 * c.dModel + 8 * c.dInner + 4 * c.nheads;
}

/** FLOPs of one entry (t, s) of a layer's attention form: C_t·B_s per group, the decay per head, M·x. */
export function attentionEntryFlops(c: Mamba2Config): number {
  return 2 * c.dState * c.ngroups + 3 * c.nheads + 2 * c.dInner;
}

/** norm_f, lm_head and the softmax statistics of one position. */
export function headFlops(c: Mamba2Config): number {
  return 4 * c.dModel + 2 * c.dModel * c.vocabPadded + 3 * c.vocabSize;
}

/** One full attention-mode forward of a T-token prompt, statistics at the last position. */
export function fullForwardFlops(c: Mamba2Config, T: number): number {
  return c.nLayer * (T * layerRowFlops(c) + ((T * (T + 1)) / 2) * attentionEntryFlops(c)) + headFlops(c);
}

/** One knockout on the fast path: rows t0..T-1 from layer `start` up (row t reads t + 1 positions), then the head. */
export function fastKnockoutFlops(c: Mamba2Config, T: number, start: number, t0: number): number {
  let perLayer = 0;
  for (let t = t0; t < T; t++) perLayer += layerRowFlops(c) + (t + 1) * attentionEntryFlops(c);
  return (c.nLayer - start) * perLayer + headFlops(c);
}

/** A prompt's sweep: fast path (its base run + every knockout) and one full forward per knockout. */
export function sweepFlops(c: Mamba2Config, T: number, knockouts: { start: number; t0: number }[]): { fast: number; full: number } {
  const full = fullForwardFlops(c, T);
  return { fast: full + knockouts.reduce((s, k) => s + fastKnockoutFlops(c, T, k.start, k.t0), 0), full: knockouts.length * full };
}

// ------------------------------------------------------------------ the run

/** A prompt's token ids and its subject's positions. */
export interface BenchPrompt {
  ids: number[];
  subject: number[];
}

/** The first n CounterFact rows whose subject is found: the study's prompt lengths (bench/prompts.ts). */
export function benchPrompts(n: number): Promise<BenchPrompt[]> {
  return counterfactPrompts(n);
}


const gflop = (x: number) => `${(x / 1e9).toFixed(1)} GFLOP`;

export interface ShapeResult {
  shape: string;
  prompts: number;
  meanTokens: number;
  knockoutsPerPrompt: number;
  fastS: number; // per prompt
  fullS: number; // per prompt (extrapolated when fewer were timed)
  fullTimed: number; // knockouts recomputed in full and timed
  repeats: number;
  maxAbsDiff: number; // |p fast − p full| over the knockouts recomputed in full
  flops: { fast: number; full: number }; // per prompt
}

/** The synthetic model of a bench shape; `tiny` (the quick run) is a 12-layer, d_model 128 model. */
export function benchConfig(shape: string): Mamba2Config {
  return (shape === "tiny" ? syntheticConfig("mamba2-130m", { d_model: 128, n_layer: 12 }) : syntheticConfig(shape)) as Mamba2Config;
}

/** Every knockout of the sweep for one prompt: each flow that blocks something, in every window of k layers. */
export function sweepConfigs(nLayer: number, prompt: number, ids: number[], subject: number[], flows: readonly string[] = FLOWS, k = K): KnockoutConfig[] {
  const out: KnockoutConfig[] = [];
  for (const flow of flows) {
    const edges = flowEdges(flow, ids.length, subject);
    if (edges.length === 0) continue;
    for (const w of layerWindows(nLayer, k)) out.push({ prompt, start: w.start, end: w.end, edges, target: 0 });
  }
  return out;
}

/**
 * Time a sweep on a model of any family: the fast path on every configuration of the prompts in one
 * call (the best of `repeats`), then full attention-mode forwards of the same knockouts, batched as
 * 01_construct batches (all, or `fullKnockouts` spread over the sweep and extrapolated); seconds per
 * prompt, and the largest |Δp| between the two on the knockouts done both ways.
 */
export async function timeSweep(
  model: LanguageModel,
  prompts: BenchPrompt[],
  configs: KnockoutConfig[],
  opts: { fullKnockouts?: number; repeats: number },
): Promise<{ fastS: number; fullS: number; fullTimed: number; maxAbsDiff: number }> {
  const ids = prompts.map((p) => p.ids);
  const targets = prompts.map(() => 0);
  const asForward = (ks: KnockoutConfig[]) =>
    model.forwardStats(ks.map((k) => ids[k.prompt]), ks.map((k) => k.target), {
      mode: "attention",
      knockouts: ks.map(({ prompt: _p, target: _t, ...spec }) => [spec]),
    });

  // warm-up: every pipeline of both paths compiled once
  await model.knockouts(ids.slice(0, 1), targets.slice(0, 1), configs.filter((k) => k.prompt === 0).slice(0, 2));
  await asForward(configs.slice(0, 2));

  // the fast path: the whole sweep of every prompt, as 03_info_flow runs a group
  // (the best of `repeats`: kernels chosen by shape compile on their first use)
  let fastS = Infinity;
  let fast: TokenStats[] = [];
  for (let rep = 0; rep < opts.repeats; rep++) {
    const t = performance.now();
    fast = (await model.knockouts(ids, targets, configs)).results;
    fastS = Math.min(fastS, (performance.now() - t) / 1000 / prompts.length);
  }

  // the baseline: a full attention-mode forward of each knockout, batched as the forwards of
  // 01_construct are (all of them, or `fullKnockouts` spread over the sweep)
  const n = Math.min(configs.length, opts.fullKnockouts ?? configs.length);
  const picks = Array.from({ length: n }, (_, i) => Math.floor(((i + 0.5) * configs.length) / n));
  const t0 = performance.now();
  const full = await asForward(picks.map((i) => configs[i]));
  const fullS = (performance.now() - t0) / 1000 / n * configs.length / prompts.length;
  // the same knockouts both ways: the fast path is exact
  const maxAbsDiff = Math.max(...picks.map((i, j) => Math.abs(fast[i].trueProb - full[j].trueProb)));
  return { fastS, fullS, fullTimed: n, maxAbsDiff };
}

export async function benchShape(
  gpu: Gpu,
  shape: string,
  opts: { prompts: number | BenchPrompt[]; fullKnockouts?: number; repeats: number; flows?: readonly string[]; model?: LanguageModel },
): Promise<ShapeResult> {
  const c = benchConfig(shape);
  const ckpt = syntheticCheckpoint(c, 0);
  // a model given is the caller's (its dtype, kept loaded); else the synthetic one, f32
  const model = opts.model ?? await loadModel(gpu, ckpt);
  try {
    const prompts = typeof opts.prompts === "number" ? await benchPrompts(opts.prompts) : opts.prompts;
    const configs: KnockoutConfig[] = [];
    const flops = { fast: 0, full: 0 };
    prompts.forEach((p, pi) => {
      const mine = sweepConfigs(c.nLayer, pi, p.ids, p.subject, opts.flows);
      configs.push(...mine);
      const f = sweepFlops(c, p.ids.length, mine.map((k) => ({ start: k.start, t0: Math.min(...k.edges.map(([t]) => t)) })));
      flops.fast += f.fast / prompts.length;
      flops.full += f.full / prompts.length;
    });
    const t = await timeSweep(model, prompts, configs, opts);
    return {
      shape,
      prompts: prompts.length,
      meanTokens: prompts.reduce((s, p) => s + p.ids.length, 0) / prompts.length,
      knockoutsPerPrompt: configs.length / prompts.length,
      ...t,
      repeats: opts.repeats,
      flops,
    };
  } finally {
    if (!opts.model) model.destroy();
    ckpt.close();
  }
}

export function rowsOf(r: ShapeResult, adapter: string): BenchRow[] {
  const n = r.knockoutsPerPrompt;
  const what = `${r.shape === "tiny" ? "tiny (d_model 128, 12 layers)" : r.shape} shape (random weights), k=${K}: ${FLOWS.length} flows × every window, ` +
    `${n.toFixed(0)} knockouts per prompt, ${r.meanTokens.toFixed(1)} tokens on average`;
  const timed = r.fullTimed < r.prompts * n ? `timed on ${r.fullTimed} and extrapolated` : `all ${r.fullTimed} timed`;
  return [
    {
      name: `knockout sweep, ${FLOWS.length} flows, k=${K}, fast path, ${r.shape}`,
      value: r.fastS,
      unit: "s/prompt",
      note: `${gflop(r.flops.fast)}/prompt (base run + the rows t0..T-1 of each knockout); ${r.prompts} prompt${r.prompts > 1 ? "s" : ""} in one call${
        r.repeats > 1 ? `, best of ${r.repeats}` : ""
      }; ${what}; ${adapter}`,
    },
    {
      name: `knockout sweep, ${FLOWS.length} flows, k=${K}, full recomputes, ${r.shape}`,
      value: r.fullS,
      unit: "s/prompt",
      note: `${gflop(r.flops.full)}/prompt (a full attention-mode forward per knockout, batched); ${timed}; max |Δp| fast vs full ${r.maxAbsDiff.toExponential(1)}`,
    },
    {
      name: `knockout sweep, ${FLOWS.length} flows, k=${K}, speed-up, ${r.shape}`,
      value: r.fullS / r.fastS,
      unit: "x",
      note: `FLOP ratio ${(r.flops.full / r.flops.fast).toFixed(1)}x`,
    },
  ];
}

export interface KnockoutBenchOptions {
  /** a tiny synthetic model only (smoke test: the code runs, the numbers mean little) */
  quick: boolean;
  /** default: mamba2-130m (`tiny` when quick) */
  shapes?: readonly string[];
  /** prompts whose sweeps go through the fast path together (default 4 CounterFact rows; 1 when quick), or the prompts themselves */
  prompts?: number | BenchPrompt[];
  /** knockouts recomputed in full for the baseline (default: all; 4 when quick) */
  fullKnockouts?: number;
  /** fast-path runs, the best one counts (default 1) */
  repeats?: number;
}

export async function benchKnockout(gpu: Gpu, opts: KnockoutBenchOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes ?? (opts.quick ? ["tiny"] : SHAPES)) {
    const r = await benchShape(gpu, shape, {
      prompts: opts.prompts ?? (opts.quick ? 1 : 4),
      fullKnockouts: opts.fullKnockouts ?? (opts.quick ? 4 : undefined),
      repeats: opts.repeats ?? 1,
    });
    rows.push(...rowsOf(r, gpu.adapterInfo));
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      shape: { type: "string", multiple: true },
      prompts: { type: "string" },
      "prompts-json": { type: "string" },
      "full-knockouts": { type: "string" },
      repeats: { type: "string" },
    },
  });
  const gpu = await createGpu();
  try {
    const rows = await benchKnockout(gpu, {
      quick: values.quick ?? false,
      shapes: values.shape,
      prompts: values["prompts-json"] ? JSON.parse(await Deno.readTextFile(values["prompts-json"])) : values.prompts ? Number(values.prompts) : undefined,
      fullKnockouts: values["full-knockouts"] ? Number(values["full-knockouts"]) : undefined,
      repeats: values.repeats ? Number(values.repeats) : undefined,
    });
    for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(r.unit === "x" ? 1 : 3)} ${r.unit}${r.note ? `  (${r.note})` : ""}`);
  } finally {
    gpu.device.destroy();
  }
}
