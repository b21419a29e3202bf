// The knockout sweep of 03_info_flow on Transformers (k = 9: the flows last<-subject, last<-relation
// and last<-last over every window [l, l+9)) per prompt, on synthetic GPT-NeoX models of the
// pythia-160m and pythia-1.4b shapes (random weights made here, nothing downloaded): the exact fast
// path (engine/transformer/knockout.ts: one base run keeping every layer's keys and values, then only
// the rows from the first blocked one recomputed from the window's first layer, every knockout of
// the prompts in one batch) against one full forward per knockout, in the same run on the same
// device. The baseline is timed on a few knockouts and extrapolated to the sweep; both FLOP counts
// and their ratio are printed next to the times.
//   deno run -A bench/transformer_bench.ts [--quick] [--shape pythia-160m]... [--prompts N] [--full-forwards N] [--repeats N]
//     [--dtype f32|f16] [--prompts-file F] [--write-prompts F]
// The prompts are the first CounterFact rows through the GPT-NeoX tokenizer; --write-prompts saves them
// (ids and subject tokens, JSON) and --prompts-file reads them back, for a machine without the npm
// packages that read the dataset and the tokenizer (run there with --no-config; nothing else needs npm).
// `benchTransformerKnockout()` gives the same rows to a caller (e.g. `deno task bench`).

import { parseArgs } from "node:util";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { WeightDtype } from "../engine/ops.ts";
import type { TokenStats } from "../engine/probs.ts";
import type { KnockoutConfig } from "../engine/transformer/arch_types.ts";
import type { TransformerConfig } from "../engine/transformer/config.ts";
import { loadTransformer } from "../engine/transformer/registry.ts";
import { syntheticPythiaCheckpoint } from "../engine/transformer/synthetic.ts";
import { infoFlowConfigs } from "../workflows/lib/knockout_configs.ts";
import type { BenchPrompt, BenchRow } from "./knockout_bench.ts";

export const TRANSFORMER_SHAPES = ["pythia-160m", "pythia-1.4b"] as const;
const K = 9;
const REAL_VOCAB = 50277; // the GPT-NeoX-20B tokenizer's ids (Pythia's head has 50304 rows)

// ------------------------------------------------------------------ arithmetic

/** FLOPs of one token in one layer outside the attention scores: norms, qkv, out, MLP, biases, activations. */
export function tokenRowFlops(c: TransformerConfig): number {
  const D = c.dModel, qkv = (c.nHead + 2 * c.nKvHead) * c.headDim, mlpRows = c.mlp === "swiglu" ? 2 * c.dFF : c.dFF;
  return 2 * D * qkv + 2 * c.nHead * c.headDim * D + 2 * D * mlpRows + 2 * c.dFF * D + 16 * D + 3 * c.rotaryDims * (c.nHead + c.nKvHead) +
    qkv + 2 * D + mlpRows + 10 * c.dFF;
}

/** FLOPs of one (query, key) entry of a layer's attention: q·k and p·v in every head, the softmax. */
export function attentionEntryFlops(c: TransformerConfig): number {
  return c.nHead * (4 * c.headDim + 5);
}

/** The final norm, the LM head and the softmax statistics of one position. */
export function headFlops(c: TransformerConfig): number {
  return 8 * c.dModel + 2 * c.dModel * c.vocabRows + 3 * c.vocabRows;
}

/** One full forward of a T-token prompt, statistics at the last position. */
export function fullForwardFlops(c: TransformerConfig, T: number): number {
  return c.nLayer * (T * tokenRowFlops(c) + ((T * (T + 1)) / 2) * attentionEntryFlops(c)) + headFlops(c);
}

/** One knockout on the fast path: rows t0..T−1 from layer `start` up, then the head on the last row. */
export function fastKnockoutFlops(c: TransformerConfig, T: number, start: number, t0: number): number {
  let entries = 0;
  for (let t = t0; t < T; t++) entries += t + 1;
  return (c.nLayer - start) * ((T - t0) * tokenRowFlops(c) + entries * attentionEntryFlops(c)) + headFlops(c);
}

/** A prompt's sweep: the fast path (its base run + every knockout) and one full forward per knockout. */
export function sweepFlops(c: TransformerConfig, T: number, ks: { start: number; t0: number }[]): { fast: number; full: number } {
  const full = fullForwardFlops(c, T);
  return { fast: full + ks.reduce((s, k) => s + fastKnockoutFlops(c, T, k.start, k.t0), 0), full: ks.length * full };
}

// ------------------------------------------------------------------ the run

export interface ShapeResult {
  shape: string;
  prompts: number;
  meanTokens: number;
  knockoutsPerPrompt: number;
  fastS: number; // per prompt
  fullPerForwardS: number;
  fullForwardsTimed: number;
  repeats: number;
  maxRelDiff: number; // |p fast − p full| / p full over the timed knockouts
  flops: { fast: number; full: number }; // per prompt
  dtype: WeightDtype;
}

/** The first `n` CounterFact prompts (ids, subject tokens), from a --write-prompts file when given. */
export async function loadPrompts(n: number, file?: string): Promise<BenchPrompt[]> {
  if (!file) return (await import("./knockout_bench.ts")).benchPrompts(n);
  const all = JSON.parse(await Deno.readTextFile(file)) as BenchPrompt[];
  if (all.length < n) throw new Error(`${file} holds ${all.length} prompts, ${n} asked for`);
  return all.slice(0, n);
}

export async function benchShape(
  gpu: Gpu,
  shape: string,
  opts: { prompts: number; fullForwards: number; repeats: number; dtype: WeightDtype; promptsFile?: string },
): Promise<ShapeResult> {
  const ckpt = syntheticPythiaCheckpoint(shape, 0);
  const model = await loadTransformer(gpu, ckpt, { dtype: opts.dtype, vocabSize: REAL_VOCAB });
  try {
    const c = model.config;
    const prompts = await loadPrompts(opts.prompts, opts.promptsFile);
    const configs: KnockoutConfig[] = [];
    const flops = { fast: 0, full: 0 };
    prompts.forEach((p, pi) => {
      const T = p.ids.length;
      // the three blocks of 03_info_flow: last<-last, last<-subject, last<-relation (the last included)
      const cfg = infoFlowConfigs(c.nLayer, T, p.subject, { ks: [K], convention: "start", relationLast: true });
      for (const k of cfg) configs.push({ prompt: pi, target: 0, start: k.start, end: k.end, edges: k.cols.map((s) => [T - 1, s]) });
      const f = sweepFlops(c, T, cfg.map((k) => ({ start: k.start, t0: T - 1 })));
      flops.fast += f.fast / prompts.length;
      flops.full += f.full / prompts.length;
    });
    const ids = prompts.map((p) => p.ids);
    const targets = prompts.map(() => 0);

    // warm-up: every pipeline of both paths compiled once
    await model.knockouts(ids.slice(0, 1), targets.slice(0, 1), configs.filter((k) => k.prompt === 0).slice(0, 2));
    await model.forwardStats([ids[0]], [0], { mode: "attention", knockouts: [[configs[0]]] });

    // the fast path: the whole sweep of every prompt in one call, as 03_info_flow runs a group
    let fastS = Infinity;
    let fast: TokenStats[] = [];
    for (let rep = 0; rep < opts.repeats; rep++) {
      const t = performance.now();
      fast = (await model.knockouts(ids, targets, configs)).results;
      fastS = Math.min(fastS, (performance.now() - t) / 1000 / prompts.length);
    }

    // the baseline: one full forward per knockout (a few, spread over the sweep)
    const picks = Array.from({ length: opts.fullForwards }, (_, i) => Math.floor(((i + 0.5) * configs.length) / opts.fullForwards));
    const full: TokenStats[] = [];
    const t0 = performance.now();
    for (const i of picks) {
      const k = configs[i];
      full.push(...await model.forwardStats([ids[k.prompt]], [0], { mode: "attention", knockouts: [[k]] }));
    }
    const fullPerForwardS = (performance.now() - t0) / 1000 / picks.length;
    const maxRelDiff = Math.max(...picks.map((i, j) => Math.abs(fast[i].trueProb - full[j].trueProb) / full[j].trueProb));
    return {
      shape,
      prompts: prompts.length,
      meanTokens: ids.reduce((s, p) => s + p.length, 0) / ids.length,
      knockoutsPerPrompt: configs.length / prompts.length,
      fastS,
      fullPerForwardS,
      fullForwardsTimed: picks.length,
      repeats: opts.repeats,
      maxRelDiff,
      flops,
      dtype: opts.dtype,
    };
  } finally {
    model.destroy();
    ckpt.close();
  }
}

const gflop = (x: number) => `${(x / 1e9).toFixed(1)} GFLOP`;

export function rowsOf(r: ShapeResult, adapter: string): BenchRow[] {
  const n = r.knockoutsPerPrompt;
  const fullS = r.fullPerForwardS * n;
  const what = `${r.shape === "pythia-tiny" ? "pythia-tiny (d_model 128, 12 layers)" : r.shape} shape (random weights, ${r.dtype}), k=${K}: ` +
    `3 flows × ${n / 3} windows = ${n} knockouts per prompt, ${r.meanTokens.toFixed(1)} tokens on average`;
  return [
    {
      name: `transformer knockout sweep k=${K}, fast path, ${r.shape}`,
      value: r.fastS,
      unit: "s/prompt",
      note: `${gflop(r.flops.fast)}/prompt (base run + ${n} recomputes of the last row); ${r.prompts} prompts in one call${r.repeats > 1 ? `, best of ${r.repeats}` : ""}; ${what}; ${adapter}`,
    },
    {
      name: `transformer knockout sweep k=${K}, one full forward per knockout, ${r.shape}`,
      value: fullS,
      unit: "s/prompt",
      note: `${gflop(r.flops.full)}/prompt (${n} full forwards); ${r.fullPerForwardS.toFixed(3)} s per forward, timed on ${r.fullForwardsTimed} and extrapolated to ${n}; ` +
        `max relative |Δp| fast vs full on those ${r.maxRelDiff.toExponential(1)}`,
    },
    {
      name: `transformer knockout sweep k=${K}, speed-up, ${r.shape}`,
      value: fullS / r.fastS,
      unit: "x",
      note: `FLOP ratio ${(r.flops.full / r.flops.fast).toFixed(1)}x`,
    },
  ];
}

export interface TransformerBenchOptions {
  /** the tiny synthetic model only (a smoke test: the code runs, the numbers mean little) */
  quick: boolean;
  /** default: pythia-160m and pythia-1.4b (pythia-tiny when quick) */
  shapes?: readonly string[];
  /** prompts whose sweeps go through the fast path together (default 4, 1 for pythia-1.4b and when quick) */
  prompts?: number;
  /** full forwards timed for the baseline (default 3; 2 when quick) */
  fullForwards?: number;
  /** fast-path runs, the best one counts (default 1) */
  repeats?: number;
  dtype?: WeightDtype;
  /** prompts saved by --write-prompts instead of the dataset and the tokenizer */
  promptsFile?: string;
}

export async function benchTransformerKnockout(gpu: Gpu, opts: TransformerBenchOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes ?? (opts.quick ? ["pythia-tiny"] : TRANSFORMER_SHAPES)) {
    const r = await benchShape(gpu, shape, {
      prompts: opts.prompts ?? (opts.quick || shape === "pythia-1.4b" ? 1 : 4),
      fullForwards: opts.fullForwards ?? (opts.quick ? 2 : 3),
      repeats: opts.repeats ?? 1,
      dtype: opts.dtype ?? "f32",
      promptsFile: opts.promptsFile,
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
      dtype: { type: "string" },
      "prompts-file": { type: "string" },
      "write-prompts": { type: "string" },
    },
  });
  if (values["write-prompts"]) {
    const prompts = await loadPrompts(Number(values.prompts ?? 16));
    await Deno.writeTextFile(values["write-prompts"], JSON.stringify(prompts));
    console.log(`${prompts.length} prompts written to ${values["write-prompts"]}`);
    Deno.exit(0);
  }
  const dtype = values.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    console.error(`--dtype ${dtype}: use f32 or f16`);
    Deno.exit(2);
  }
  const gpu = await createGpu();
  try {
    const rows = await benchTransformerKnockout(gpu, {
      quick: values.quick ?? false,
      shapes: values.shape,
      prompts: values.prompts ? Number(values.prompts) : undefined,
      fullForwards: values["full-forwards"] ? Number(values["full-forwards"]) : undefined,
      repeats: values.repeats ? Number(values.repeats) : undefined,
      dtype,
      promptsFile: values["prompts-file"],
    });
    for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(r.unit === "x" ? 1 : 3)} ${r.unit}${r.note ? `  (${r.note})` : ""}`);
  } finally {
    gpu.device.destroy();
  }
}
