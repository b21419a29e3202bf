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
// `benchKnockout()` gives the rows to `deno task bench`. The sweep, its FLOP bookkeeping, its rows and
// its flags are written once here for any family (BenchFamily); bench/transformer_bench.ts adds the
// Transformer's.

import { parseArgs } from "node:util";
import type { KnockoutConfig, LanguageModel } from "../engine/arch.ts";
import type { Checkpoint } from "../engine/checkpoint/mod.ts";
import type { ModelConfig } from "../engine/config.ts";
import { loadModel } from "../engine/families.ts";
import { parseFlow } from "../engine/flows.ts";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { Mamba2Config } from "../engine/mamba2/config.ts";
import type { TokenStats } from "../engine/probs.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { infoFlowConfigs } from "../workflows/lib/knockout_configs.ts";
import { type BenchPrompt, counterfactPrompts } from "./prompts.ts";
import type { BenchRow } from "./table.ts";

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

/** What the sweep reads of a prompt. */
type SweepPrompt = Pick<BenchPrompt, "ids" | "subject">;

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

/** A family's FLOP counts: one full forward of a T-token prompt, one knockout on the fast path. */
export interface FlopCounts<C> {
  fullForward(c: C, T: number): number;
  fastKnockout(c: C, T: number, start: number, t0: number): number;
}

/** A prompt's sweep: fast path (its base run + every knockout) and one full forward per knockout. */
export function sweepFlops<C>(f: FlopCounts<C>, c: C, T: number, knockouts: { start: number; t0: number }[]): { fast: number; full: number } {
  const full = f.fullForward(c, T);
  return { fast: full + knockouts.reduce((s, k) => s + f.fastKnockout(c, T, k.start, k.t0), 0), full: knockouts.length * full };
}

// ------------------------------------------------------------------ the run

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

/** A family the sweep bench runs on: its synthetic models, their FLOP counts, the words of its rows. */
export interface BenchFamily<C extends ModelConfig> {
  /** the rows' names start with it */
  name: string;
  /** default shapes, and the one of --quick */
  shapes: readonly string[];
  quickShape: string;
  /** the synthetic config of a shape */
  config(shape: string): C;
  /** the model of a synthetic checkpoint */
  load(gpu: Gpu, ckpt: Checkpoint): Promise<LanguageModel>;
  flops: FlopCounts<C>;
  /** the notes: the shape's description, what the fast path and a full recompute compute */
  shapeNote(shape: string): string;
  fastNote: string;
  fullNote: string;
}

/** The synthetic model of a bench shape; `tiny` (the quick run) is a 12-layer, d_model 128 model. */
export function benchConfig(shape: string): Mamba2Config {
  return (shape === "tiny" ? syntheticConfig("mamba2-130m", { d_model: 128, n_layer: 12 }) : syntheticConfig(shape)) as Mamba2Config;
}

/** Mamba-2 on synthetic weights, f32. */
export const MAMBA2: BenchFamily<Mamba2Config> = {
  name: "knockout sweep",
  shapes: SHAPES,
  quickShape: "tiny",
  config: benchConfig,
  load: (gpu, ckpt) => loadModel(gpu, ckpt),
  flops: { fullForward: fullForwardFlops, fastKnockout: fastKnockoutFlops },
  shapeNote: (shape) => `${shape === "tiny" ? "tiny (d_model 128, 12 layers)" : shape} shape (random weights)`,
  fastNote: "base run + the rows t0..T-1 of each knockout",
  fullNote: "a full attention-mode forward per knockout, batched",
};

/**
 * Every knockout of the sweep for one prompt: 03_info_flow's configurations (infoFlowConfigs: each
 * flow that blocks something, in every window of k layers, all heads, no conv cut), target 0.
 */
export function sweepConfigs(nLayer: number, prompt: number, ids: number[], subject: number[], flows: readonly string[] = FLOWS, k = K): KnockoutConfig[] {
  const axes = { ks: [k], flows: flows.map(parseFlow), heads: [{ kind: "all" as const }], conv: [false], convention: "start" as const };
  return infoFlowConfigs(nLayer, ids.length, subject, axes).configs.map((c) => ({ prompt, start: c.start, end: c.end, edges: c.edges, target: 0 }));
}

/**
 * Time a sweep on a model of any family: the fast path on every configuration of the prompts in one
 * call (the best of `repeats`), then full attention-mode forwards of the same knockouts, batched as
 * 01_construct batches (all, or `fullKnockouts` spread over the sweep and extrapolated); seconds per
 * prompt, and the largest |Δp| between the two on the knockouts done both ways.
 */
export async function timeSweep(
  model: LanguageModel,
  prompts: SweepPrompt[],
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

/**
 * The sweep of one shape of a family: its configurations and FLOPs per prompt, timed by timeSweep.
 * A model given is the caller's (its dtype, kept loaded); else the family's synthetic one.
 */
export async function benchShape<C extends ModelConfig>(
  gpu: Gpu,
  family: BenchFamily<C>,
  shape: string,
  opts: { prompts: number | SweepPrompt[]; fullKnockouts?: number; repeats: number; flows?: readonly string[]; model?: LanguageModel },
): Promise<ShapeResult> {
  const c = family.config(shape);
  const ckpt = syntheticCheckpoint(c, 0);
  const model = opts.model ?? await family.load(gpu, ckpt);
  try {
    const prompts = typeof opts.prompts === "number" ? await counterfactPrompts(opts.prompts) : opts.prompts;
    const configs: KnockoutConfig[] = [];
    const flops = { fast: 0, full: 0 };
    prompts.forEach((p, pi) => {
      const mine = sweepConfigs(c.nLayer, pi, p.ids, p.subject, opts.flows);
      configs.push(...mine);
      // a knockout's first recomputed row t0: its earliest blocked target
      const f = sweepFlops(family.flops, c, p.ids.length, mine.map((k) => ({ start: k.start, t0: Math.min(...k.edges.map(([t]) => t)) })));
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

/** The three rows of a shape: fast path, full recomputes, speed-up. */
export function rowsOf<C extends ModelConfig>(family: BenchFamily<C>, r: ShapeResult, adapter: string): BenchRow[] {
  const n = r.knockoutsPerPrompt;
  const what = `${family.shapeNote(r.shape)}, k=${K}: ${FLOWS.length} flows × every window, ` +
    `${n.toFixed(0)} knockouts per prompt, ${r.meanTokens.toFixed(1)} tokens on average`;
  const timed = r.fullTimed < r.prompts * n ? `timed on ${r.fullTimed} and extrapolated` : `all ${r.fullTimed} timed`;
  const name = `${family.name}, ${FLOWS.length} flows, k=${K}`;
  return [
    {
      name: `${name}, fast path, ${r.shape}`,
      value: r.fastS,
      unit: "s/prompt",
      note: `${gflop(r.flops.fast)}/prompt (${family.fastNote}); ${r.prompts} prompt${r.prompts > 1 ? "s" : ""} in one call${
        r.repeats > 1 ? `, best of ${r.repeats}` : ""
      }; ${what}; ${adapter}`,
    },
    {
      name: `${name}, full recomputes, ${r.shape}`,
      value: r.fullS,
      unit: "s/prompt",
      note: `${gflop(r.flops.full)}/prompt (${family.fullNote}); ${timed}; max |Δp| fast vs full ${r.maxAbsDiff.toExponential(1)}`,
    },
    {
      name: `${name}, speed-up, ${r.shape}`,
      value: r.fullS / r.fastS,
      unit: "x",
      note: `FLOP ratio ${(r.flops.full / r.flops.fast).toFixed(1)}x`,
    },
  ];
}

export interface KnockoutBenchOptions {
  /** a tiny synthetic model only (smoke test: the code runs, the numbers mean little) */
  quick: boolean;
  /** default: the family's shapes (mamba2-130m; `tiny` when quick) */
  shapes?: readonly string[];
  /** prompts whose sweeps go through the fast path together (default 4 CounterFact rows; 1 when quick), or the prompts themselves */
  prompts?: number | SweepPrompt[];
  /** knockouts recomputed in full for the baseline (default: all; 4 when quick) */
  fullKnockouts?: number;
  /** fast-path runs, the best one counts (default 1) */
  repeats?: number;
}

/** Every shape of a family (the defaults of KnockoutBenchOptions), three rows each. */
export async function benchFamily<C extends ModelConfig>(gpu: Gpu, family: BenchFamily<C>, opts: KnockoutBenchOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes ?? (opts.quick ? [family.quickShape] : family.shapes)) {
    const r = await benchShape(gpu, family, shape, {
      prompts: opts.prompts ?? (opts.quick ? 1 : 4),
      fullKnockouts: opts.fullKnockouts ?? (opts.quick ? 4 : undefined),
      repeats: opts.repeats ?? 1,
    });
    rows.push(...rowsOf(family, r, gpu.adapterInfo));
  }
  return rows;
}

export function benchKnockout(gpu: Gpu, opts: KnockoutBenchOptions): Promise<BenchRow[]> {
  return benchFamily(gpu, MAMBA2, opts);
}

// ------------------------------------------------------------------ the command line

/** The flags of the sweep benches (parseArgs options); a bench adds its own. */
export const SWEEP_FLAGS = {
  quick: { type: "boolean" },
  shape: { type: "string", multiple: true },
  prompts: { type: "string" },
  "prompts-json": { type: "string" },
  "full-knockouts": { type: "string" },
  repeats: { type: "string" },
} as const;

/** Run a sweep bench on the flags of SWEEP_FLAGS and print its rows, one a line. */
export async function runSweepBench(
  values: { quick?: boolean; shape?: string[]; prompts?: string; "prompts-json"?: string; "full-knockouts"?: string; repeats?: string },
  bench: (gpu: Gpu, opts: KnockoutBenchOptions) => Promise<BenchRow[]>,
): Promise<void> {
  const gpu = await createGpu();
  try {
    const rows = await bench(gpu, {
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

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: SWEEP_FLAGS });
  await runSweepBench(values, benchKnockout);
}
