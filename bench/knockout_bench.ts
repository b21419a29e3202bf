// The knockout sweep of 03_info_flow (k = 9: 3 blocks × every window, edges into the last
// position) per prompt, on synthetic models of the mamba2-130m and mamba2-1.3b shapes (random
// weights made here, nothing downloaded): the exact fast path (engine/knockout.ts: one base run,
// then only the last position recomputed from the window's first layer, all knockouts of the
// prompts in one batch) against one full attention-mode forward per knockout, in the same run on
// the same device. The baseline is timed on a few knockouts and extrapolated to the sweep. FLOP
// counts of both are printed next to the times, so that the measured ratio can be checked
// against the arithmetic.
//   deno run -A bench/knockout_bench.ts [--quick] [--shape mamba2-130m]... [--prompts N] [--full-forwards N] [--repeats N]
// `benchKnockout()` gives the rows to `deno task bench`.

import { parseArgs } from "node:util";
import type { ModelConfig } from "../engine/config.ts";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import { lastRowKnockouts, type LastRowKnockout } from "../engine/knockout.ts";
import { type Knockout, Mamba2Model } from "../engine/model.ts";
import type { TokenStats } from "../engine/probs.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { infoFlowConfigs } from "../workflows/lib/knockout_configs.ts";
import { readParquet } from "../workflows/lib/parquet.ts";
import { subjectTokens } from "../workflows/lib/subject.ts";

/** One row of `deno task bench` (the same shape as bench/table.ts's BenchRow). */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  note?: string;
}

export const SHAPES = ["mamba2-130m", "mamba2-1.3b"] as const;
const K = 9;

// ------------------------------------------------------------------ arithmetic

/** FLOPs of the per-token work of one layer outside the SSD: norms, in_proj, conv, gate, out_proj. */
export function layerRowFlops(c: ModelConfig): number {
  return 2 * c.dModel * c.dInProj + 2 * c.dInner * c.dModel + 2 * c.convDim * c.dConv + 4 * c.dModel + 8 * c.dInner + 4 * c.nheads;
}

/** FLOPs of one entry (t, s) of a layer's attention form: C_t·B_s per group, the decay per head, M·x. */
export function attentionEntryFlops(c: ModelConfig): number {
  return 2 * c.dState * c.ngroups + 3 * c.nheads + 2 * c.dInner;
}

/** norm_f, lm_head and the softmax statistics of one position. */
export function headFlops(c: ModelConfig): number {
  return 4 * c.dModel + 2 * c.dModel * c.vocabPadded + 3 * c.vocabSize;
}

/** One full attention-mode forward of a T-token prompt, statistics at the last position. */
export function fullForwardFlops(c: ModelConfig, T: number): number {
  return c.nLayer * (T * layerRowFlops(c) + ((T * (T + 1)) / 2) * attentionEntryFlops(c)) + headFlops(c);
}

/** One knockout on the fast path: the last position only, from layer `start` up, then the head. */
export function fastKnockoutFlops(c: ModelConfig, T: number, start: number): number {
  return (c.nLayer - start) * (layerRowFlops(c) + T * attentionEntryFlops(c)) + headFlops(c);
}

/** A prompt's sweep: fast path (its base run + every knockout) and one full forward per knockout. */
export function sweepFlops(c: ModelConfig, T: number, starts: number[]): { fast: number; full: number } {
  const full = fullForwardFlops(c, T);
  return { fast: full + starts.reduce((s, l) => s + fastKnockoutFlops(c, T, l), 0), full: starts.length * full };
}

// ------------------------------------------------------------------ the run

export interface BenchPrompt {
  ids: number[];
  subject: number[];
}

/** The first CounterFact rows whose subject is found: the study's prompt lengths. */
export async function benchPrompts(n: number): Promise<BenchPrompt[]> {
  const t = await readParquet(new URL("../data/counterfact-tracing.parquet", import.meta.url).pathname, {
    rowEnd: 4 * n + 8,
    columns: ["prompt", "subject"],
  });
  const tok = await loadTokenizer();
  const out: BenchPrompt[] = [];
  for (const r of t.rows) {
    const ids = tok.encode(String(r.prompt));
    const subject = subjectTokens(tok.decodeEach(ids), String(r.subject));
    if (subject) out.push({ ids, subject });
    if (out.length === n) break;
  }
  return out;
}


function knockoutOf(k: LastRowKnockout, T: number): Knockout {
  const m: Knockout = new Map();
  for (let l = k.start; l < k.end; l++) m.set(l, k.cols.map((s) => [T - 1, s] as [number, number]));
  return m;
}

const gflop = (x: number) => `${(x / 1e9).toFixed(1)} GFLOP`;

export interface ShapeResult {
  shape: string;
  prompts: number;
  meanTokens: number;
  knockoutsPerPrompt: number;
  fastS: number; // per prompt
  fullPerForwardS: number;
  fullForwardsTimed: number;
  repeats: number;
  maxAbsDiff: number; // |p fast − p full| over the timed knockouts
  flops: { fast: number; full: number }; // per prompt
}

/** The synthetic model of a bench shape; `tiny` (the quick run) is a 12-layer, d_model 128 model. */
export function benchConfig(shape: string): ModelConfig {
  return shape === "tiny" ? syntheticConfig("mamba2-130m", { d_model: 128, n_layer: 12 }) : syntheticConfig(shape);
}

export async function benchShape(
  gpu: Gpu,
  shape: string,
  opts: { prompts: number; fullForwards: number; repeats: number },
): Promise<ShapeResult> {
  const ckpt = syntheticCheckpoint(benchConfig(shape), 0);
  const model = await Mamba2Model.load(gpu, ckpt);
  try {
    const c = model.config;
    const prompts = await benchPrompts(opts.prompts);
    const configs: LastRowKnockout[] = [];
    const flops = { fast: 0, full: 0 };
    prompts.forEach((p, pi) => {
      const cfg = infoFlowConfigs(c.nLayer, p.ids.length, p.subject, { ks: [K], convention: "start", relationLast: true });
      for (const k of cfg) configs.push({ prompt: pi, start: k.start, end: k.end, cols: k.cols, target: 0 });
      const f = sweepFlops(c, p.ids.length, cfg.map((k) => k.start));
      flops.fast += f.fast / prompts.length;
      flops.full += f.full / prompts.length;
    });
    const ids = prompts.map((p) => p.ids);
    const targets = prompts.map(() => 0);

    // warm-up: every pipeline of both paths compiled once
    await lastRowKnockouts(model, ids.slice(0, 1), targets.slice(0, 1), configs.filter((k) => k.prompt === 0).slice(0, 2));
    await model.forwardStats([ids[0]], [0], { mode: "attention", knockouts: [knockoutOf(configs[0], ids[0].length)] });

    // the fast path: the whole sweep of every prompt, as 03_info_flow runs a group
    // (the best of `repeats`: kernels chosen by shape compile on their first use)
    let fastS = Infinity;
    let fast: Awaited<ReturnType<typeof lastRowKnockouts>> | undefined;
    for (let rep = 0; rep < opts.repeats; rep++) {
      const t = performance.now();
      fast = await lastRowKnockouts(model, ids, targets, configs);
      fastS = Math.min(fastS, (performance.now() - t) / 1000 / prompts.length);
    }

    // the baseline: one full attention-mode forward per knockout (a few, spread over the sweep)
    const picks = Array.from({ length: opts.fullForwards }, (_, i) => Math.floor(((i + 0.5) * configs.length) / opts.fullForwards));
    const full: TokenStats[] = [];
    const t0 = performance.now();
    for (const i of picks) {
      const k = configs[i];
      full.push(...await model.forwardStats([ids[k.prompt]], [0], { mode: "attention", knockouts: [knockoutOf(k, ids[k.prompt].length)] }));
    }
    const fullPerForwardS = (performance.now() - t0) / 1000 / picks.length;
    // the same knockouts both ways: the fast path is exact
    const maxAbsDiff = Math.max(...picks.map((i, j) => Math.abs(fast!.results[i].trueProb - full[j].trueProb)));
    return {
      shape,
      prompts: prompts.length,
      meanTokens: ids.reduce((s, p) => s + p.length, 0) / ids.length,
      knockoutsPerPrompt: configs.length / prompts.length,
      fastS,
      fullPerForwardS,
      fullForwardsTimed: picks.length,
      repeats: opts.repeats,
      maxAbsDiff,
      flops,
    };
  } finally {
    model.destroy();
    ckpt.close();
  }
}

export function rowsOf(r: ShapeResult, adapter: string): BenchRow[] {
  const n = r.knockoutsPerPrompt;
  const fullS = r.fullPerForwardS * n;
  const what = `${r.shape === "tiny" ? "tiny (d_model 128, 12 layers)" : r.shape} shape (random weights), k=${K}: 3 blocks × ${n / 3} windows = ${n} knockouts per prompt, ` +
    `${r.meanTokens.toFixed(1)} tokens on average`;
  return [
    {
      name: `knockout sweep k=${K}, fast path, ${r.shape}`,
      value: r.fastS,
      unit: "s/prompt",
      note: `${gflop(r.flops.fast)}/prompt (base run + ${n} last-row recomputes); ${r.prompts} prompts in one batch${r.repeats > 1 ? `, best of ${r.repeats}` : ""}; ${what}; ${adapter}`,
    },
    {
      name: `knockout sweep k=${K}, one full forward per knockout, ${r.shape}`,
      value: fullS,
      unit: "s/prompt",
      note: `${gflop(r.flops.full)}/prompt (${n} full attention-mode forwards); ${r.fullPerForwardS.toFixed(3)} s per forward, ` +
        `timed on ${r.fullForwardsTimed} and extrapolated to ${n}; max |Δp| fast vs full on those ${r.maxAbsDiff.toExponential(1)}`,
    },
    {
      name: `knockout sweep k=${K}, speed-up, ${r.shape}`,
      value: fullS / r.fastS,
      unit: "x",
      note: `FLOP ratio ${(r.flops.full / r.flops.fast).toFixed(1)}x; target >= 20x`,
    },
  ];
}

export interface KnockoutBenchOptions {
  /** a tiny synthetic model only (smoke test: the code runs, the numbers mean little) */
  quick: boolean;
  /** default: mamba2-130m and mamba2-1.3b (`tiny` when quick) */
  shapes?: readonly string[];
  /** prompts whose sweeps go through the fast path together (default: 1 for the 1.3b shape, 4 otherwise; 1 when quick) */
  prompts?: number;
  /** full forwards timed for the baseline (default 3; 2 when quick) */
  fullForwards?: number;
  /** fast-path runs, the best one counts (default 1) */
  repeats?: number;
}

export async function benchKnockout(gpu: Gpu, opts: KnockoutBenchOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes ?? (opts.quick ? ["tiny"] : SHAPES)) {
    const big = shape === "mamba2-1.3b";
    const r = await benchShape(gpu, shape, {
      prompts: opts.prompts ?? (opts.quick || big ? 1 : 4),
      fullForwards: opts.fullForwards ?? (opts.quick ? 2 : 3),
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
      "full-forwards": { type: "string" },
      repeats: { type: "string" },
    },
  });
  const gpu = await createGpu();
  try {
    const rows = await benchKnockout(gpu, {
      quick: values.quick ?? false,
      shapes: values.shape,
      prompts: values.prompts ? Number(values.prompts) : undefined,
      fullForwards: values["full-forwards"] ? Number(values["full-forwards"]) : undefined,
      repeats: values.repeats ? Number(values.repeats) : undefined,
    });
    for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(r.unit === "x" ? 1 : 3)} ${r.unit}${r.note ? `  (${r.note})` : ""}`);
  } finally {
    gpu.device.destroy();
  }
}
