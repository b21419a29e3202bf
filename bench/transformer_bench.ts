// The reference study's knockout sweep (bench/knockout_bench.ts: nine flows target<-source, k = 9,
// every window of layers) per prompt, on synthetic GPT-NeoX models of the pythia-160m and pythia-1.4b
// shapes (random weights made here, nothing downloaded): the exact fast path (the backbone's, with
// the Transformer's KV cache: one base run keeping every layer's keys and values, then per knockout
// only the rows t0..T-1 from the window's first layer up, every knockout of the prompts as the rows
// of one batch) against full attention-mode recomputes of the same knockouts (batched as
// 01_construct batches), in the same run on the same device, with both FLOP counts and the largest
// |Δp| between the two. The sweep, its FLOP bookkeeping, rows and flags are bench/knockout_bench.ts's
// (shared with the Mamba bench); this file holds the Transformer's FLOP formulas, shapes and dtype.
//   deno run -A bench/transformer_bench.ts [--quick] [--shape pythia-160m]... [--prompts N | --prompts-json FILE]
//     [--full-knockouts N] [--repeats N] [--dtype f32|f16] [--write-prompts FILE]
// --write-prompts saves the first N CounterFact prompts (ids and subject tokens) as the JSON that
// --prompts-json (of this bench and of bench/knockout_bench.ts) reads, for a machine without the npm
// packages that read the dataset and the tokenizer. `benchTransformerKnockout()` gives the rows to
// `deno task bench` (section `transformer`).

import { parseArgs } from "node:util";
import { loadModel } from "../engine/families.ts";
import type { Gpu } from "../engine/gpu.ts";
import type { WeightDtype } from "../engine/matmul.ts";
import type { TransformerConfig } from "../engine/transformer/config.ts";
import { PYTHIA_SHAPES, syntheticPythiaConfig } from "../engine/transformer/synthetic.ts";
import { type BenchFamily, benchFamily, type FlopCounts, type KnockoutBenchOptions, runSweepBench, SWEEP_FLAGS, sweepFlops as sweepFlopsOf } from "./knockout_bench.ts";
import { counterfactPrompts } from "./prompts.ts";
import type { BenchRow } from "./table.ts";

export const TRANSFORMER_SHAPES = ["pythia-160m", "pythia-1.4b"] as const;
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

const FLOPS: FlopCounts<TransformerConfig> = { fullForward: fullForwardFlops, fastKnockout: fastKnockoutFlops };

/** A prompt's sweep on a Transformer (bench/knockout_bench.ts sweepFlops). */
export function sweepFlops(c: TransformerConfig, T: number, ks: { start: number; t0: number }[]): { fast: number; full: number } {
  return sweepFlopsOf(FLOPS, c, T, ks);
}

// ------------------------------------------------------------------ the run

/** GPT-NeoX on synthetic Pythia weights, in the given dtype. */
export function pythiaFamily(dtype: WeightDtype): BenchFamily<TransformerConfig> {
  return {
    name: "transformer knockout sweep",
    shapes: TRANSFORMER_SHAPES,
    quickShape: "pythia-tiny",
    config: (shape) => {
      if (!PYTHIA_SHAPES[shape]) throw new Error(`unknown shape ${shape}: use one of ${Object.keys(PYTHIA_SHAPES).join(", ")}`);
      return syntheticPythiaConfig(shape) as TransformerConfig;
    },
    load: (gpu, ckpt) => loadModel(gpu, ckpt, { dtype, vocabSize: REAL_VOCAB }),
    flops: FLOPS,
    shapeNote: (shape) => {
      const s = PYTHIA_SHAPES[shape];
      return `${shape} shape (d_model ${s.hidden_size}, ${s.num_hidden_layers} layers, random weights, ${dtype})`;
    },
    fastNote: "base run + the rows t0..T-1 of each knockout, keys and values below t0 from the base run",
    fullNote: "a full forward per knockout, batched",
  };
}

export interface TransformerBenchOptions extends KnockoutBenchOptions {
  /** weights' dtype (default f32); shapes default to pythia-160m and pythia-1.4b (pythia-tiny when quick) */
  dtype?: WeightDtype;
}

export function benchTransformerKnockout(gpu: Gpu, opts: TransformerBenchOptions): Promise<BenchRow[]> {
  return benchFamily(gpu, pythiaFamily(opts.dtype ?? "f32"), opts);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { ...SWEEP_FLAGS, dtype: { type: "string" }, "write-prompts": { type: "string" } },
  });
  if (values["write-prompts"]) {
    const prompts = await counterfactPrompts(Number(values.prompts ?? 16));
    await Deno.writeTextFile(values["write-prompts"], JSON.stringify(prompts));
    console.log(`${prompts.length} prompts written to ${values["write-prompts"]}`);
    Deno.exit(0);
  }
  const dtype = values.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    console.error(`--dtype ${dtype}: use f32 or f16`);
    Deno.exit(2);
  }
  await runSweepBench(values, (gpu, opts) => benchTransformerKnockout(gpu, { ...opts, dtype }));
}
