// The reference study's knockout sweep (bench/knockout_bench.ts: nine flows target<-source, k = 9,
// every window of layers) per prompt, on synthetic GPT-NeoX models of the pythia-160m and pythia-1.4b
// shapes (random weights made here, nothing downloaded): the exact fast path (the backbone's, with
// the Transformer's KV cache: one base run keeping every layer's keys and values, then per knockout
// only the rows t0..T-1 from the window's first layer up, every knockout of the prompts as the rows
// of one batch) against full attention-mode recomputes of the same knockouts (batched as
// 01_construct batches), in the same run on the same device, with both FLOP counts and the largest
// |Δp| between the two (bench/knockout_bench.ts timeSweep, shared with the Mamba bench).
//   deno run -A bench/transformer_bench.ts [--quick] [--shape pythia-160m]... [--prompts N | --prompts-json FILE]
//     [--full-knockouts N] [--repeats N] [--dtype f32|f16] [--write-prompts FILE]
// --write-prompts saves the first N CounterFact prompts (ids and subject tokens) as the JSON that
// --prompts-json (of this bench and of bench/knockout_bench.ts) reads, for a machine without the npm
// packages that read the dataset and the tokenizer. `benchTransformerKnockout()` gives the rows to
// `deno task bench` (section `transformer`).

import { parseArgs } from "node:util";
import type { KnockoutConfig } from "../engine/arch.ts";
import { loadModel } from "../engine/families.ts";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { WeightDtype } from "../engine/matmul.ts";
import { syntheticCheckpoint } from "../engine/synthetic.ts";
import type { TransformerConfig } from "../engine/transformer/config.ts";
import { PYTHIA_SHAPES, syntheticPythiaConfig } from "../engine/transformer/synthetic.ts";
import { type BenchPrompt, benchPrompts, FLOWS, sweepConfigs, timeSweep } from "./knockout_bench.ts";
import type { BenchRow } from "./table.ts";

export const TRANSFORMER_SHAPES = ["pythia-160m", "pythia-1.4b"] as const;
const K = 9;
/** The GPT-NeoX-20B tokenizer's ids: the real vocabulary (Pythia's LM head has 50304 rows). */
const REAL_VOCAB = 50277;

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
  return 8 * c.dModel + 2 * c.dModel * c.vocabPadded + 3 * c.vocabPadded;
}

/** One full forward of a T-token prompt, statistics at the last position. */
export function fullForwardFlops(c: TransformerConfig, T: number): number {
  return c.nLayer * (T * tokenRowFlops(c) + ((T * (T + 1)) / 2) * attentionEntryFlops(c)) + headFlops(c);
}

/** One knockout on the fast path: rows t0..T−1 from layer `start` up (row t reads t + 1 keys), then the head on the last row. */
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
  fullS: number; // per prompt (extrapolated when fewer were timed)
  fullTimed: number;
  repeats: number;
  maxAbsDiff: number; // |p fast − p full| over the knockouts recomputed in full
  flops: { fast: number; full: number }; // per prompt
  dtype: WeightDtype;
}

export async function benchShape(
  gpu: Gpu,
  shape: string,
  opts: { prompts: number | BenchPrompt[]; fullKnockouts?: number; repeats: number; dtype: WeightDtype },
): Promise<ShapeResult> {
  const c = syntheticPythiaConfig(shape) as TransformerConfig;
  const ckpt = syntheticCheckpoint(c, 0);
  const model = await loadModel(gpu, ckpt, { dtype: opts.dtype, vocabSize: REAL_VOCAB });
  try {
    const prompts = typeof opts.prompts === "number" ? await benchPrompts(opts.prompts) : opts.prompts;
    const configs: KnockoutConfig[] = [];
    const flops = { fast: 0, full: 0 };
    prompts.forEach((p, pi) => {
      const mine = sweepConfigs(c.nLayer, pi, p.ids, p.subject);
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
  const s = PYTHIA_SHAPES[r.shape];
  const what = `${r.shape} shape (d_model ${s.hidden_size}, ${s.num_hidden_layers} layers, random weights, ${r.dtype}), k=${K}: ${FLOWS.length} flows × every window, ` +
    `${n.toFixed(0)} knockouts per prompt, ${r.meanTokens.toFixed(1)} tokens on average`;
  const timed = r.fullTimed < r.prompts * n ? `timed on ${r.fullTimed} and extrapolated` : `all ${r.fullTimed} timed`;
  const name = `transformer knockout sweep, ${FLOWS.length} flows, k=${K}`;
  return [
    {
      name: `${name}, fast path, ${r.shape}`,
      value: r.fastS,
      unit: "s/prompt",
      note: `${gflop(r.flops.fast)}/prompt (base run + the rows t0..T-1 of each knockout, keys and values below t0 from the base run); ${r.prompts} prompt${
        r.prompts > 1 ? "s" : ""
      } in one call${r.repeats > 1 ? `, best of ${r.repeats}` : ""}; ${what}; ${adapter}`,
    },
    {
      name: `${name}, full recomputes, ${r.shape}`,
      value: r.fullS,
      unit: "s/prompt",
      note: `${gflop(r.flops.full)}/prompt (a full forward per knockout, batched); ${timed}; max |Δp| fast vs full ${r.maxAbsDiff.toExponential(1)}`,
    },
    {
      name: `${name}, speed-up, ${r.shape}`,
      value: r.fullS / r.fastS,
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
  /** prompts whose sweeps go through the fast path together (default 4 CounterFact rows; 1 when quick), or the prompts themselves */
  prompts?: number | BenchPrompt[];
  /** knockouts recomputed in full for the baseline (default: all; 4 when quick) */
  fullKnockouts?: number;
  /** fast-path runs, the best one counts (default 1) */
  repeats?: number;
  dtype?: WeightDtype;
}

export async function benchTransformerKnockout(gpu: Gpu, opts: TransformerBenchOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes ?? (opts.quick ? ["pythia-tiny"] : TRANSFORMER_SHAPES)) {
    if (!PYTHIA_SHAPES[shape]) throw new Error(`unknown shape ${shape}: use one of ${Object.keys(PYTHIA_SHAPES).join(", ")}`);
    const r = await benchShape(gpu, shape, {
      prompts: opts.prompts ?? (opts.quick ? 1 : 4),
      fullKnockouts: opts.fullKnockouts ?? (opts.quick ? 4 : undefined),
      repeats: opts.repeats ?? 1,
      dtype: opts.dtype ?? "f32",
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
      dtype: { type: "string" },
      "write-prompts": { type: "string" },
    },
  });
  if (values["write-prompts"]) {
    const prompts = await benchPrompts(Number(values.prompts ?? 16));
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
      prompts: values["prompts-json"] ? JSON.parse(await Deno.readTextFile(values["prompts-json"])) : values.prompts ? Number(values.prompts) : undefined,
      fullKnockouts: values["full-knockouts"] ? Number(values["full-knockouts"]) : undefined,
      repeats: values.repeats ? Number(values.repeats) : undefined,
      dtype,
    });
    for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(r.unit === "x" ? 1 : 3)} ${r.unit}${r.note ? `  (${r.note})` : ""}`);
  } finally {
    gpu.device.destroy();
  }
}
