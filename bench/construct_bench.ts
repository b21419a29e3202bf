// Throughput of 01_construct (prompts/s, each prompt in scan and attention mode) on a synthetic
// model of mamba2-130m's shape (random weights made here, nothing downloaded), batched against
// one prompt at a time, in the same run on the same device. The prompts are the first CounterFact
// rows, so their lengths are the study's.
//   deno run -A bench/construct_bench.ts [--prompts N] [--single N] [--batch B] [--shape mamba2-130m]
// `benchConstruct()` gives the rows to `deno task bench`.

import { parseArgs } from "node:util";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { LanguageModel } from "../engine/arch.ts";
import { loadModel } from "../engine/families.ts";
import type { WeightDtype } from "../engine/matmul.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { MODES, type PromptItem, runBatch } from "../workflows/lib/construct_run.ts";
import { fixedGroups } from "../workflows/lib/groups.ts";

import type { BenchRow } from "./table.ts";

export interface ConstructBenchOptions {
  prompts?: number; // CounterFact rows for the batched run (default 16)
  singlePrompts?: number; // the first of them, run one at a time (default 4: on a CPU driver each takes long)
  batchSize?: number; // 01_construct's batchSize for the batched run (default: the study's 16)
  shape?: string; // synthetic model shape (default mamba2-130m)
  gpu?: Gpu; // a device to use (default: a new one, destroyed at the end)
  dtype?: WeightDtype; // how the matrices are stored (default f32)
  items?: PromptItem[]; // the prompts themselves (default: the first CounterFact rows, read through the tokenizer)
  model?: LanguageModel; // a loaded model to use (the caller's: kept; default a synthetic one of `shape`)
}

/** The first n CounterFact rows as 01_construct tokenizes them (the tokenizer and parquet reader are imported here only). */
export async function counterfactItems(n: number): Promise<PromptItem[]> {
  const { readParquet } = await import("../workflows/lib/parquet.ts");
  const { loadTokenizer } = await import("../engine/tokenizer.ts");
  const { tokenizeRows } = await import("../workflows/01_construct.ts");
  const dataset = await readParquet(new URL("../data/counterfact-tracing.parquet", import.meta.url).pathname, { rowEnd: n, columns: ["prompt", "target_true"] });
  return tokenizeRows(await loadTokenizer(), dataset.rows.map((_, i) => i), dataset.rows);
}

async function timeConstruct(model: LanguageModel, items: PromptItem[], batchSize: number): Promise<number> {
  const t0 = performance.now();
  for (const mode of MODES) {
    for (const batch of fixedGroups(items, batchSize)) await runBatch(model, batch, mode);
  }
  return (performance.now() - t0) / 1000;
}


export async function benchConstruct(opts: ConstructBenchOptions = {}): Promise<BenchRow[]> {
  const items = opts.items?.slice(0, opts.prompts) ?? await counterfactItems(opts.prompts ?? 16);
  const n = items.length;
  const nSingle = Math.min(n, opts.singlePrompts ?? 4);
  const batchSize = opts.batchSize ?? 16;
  const shape = opts.shape ?? "mamba2-130m";
  const dtype = opts.dtype ?? "f32";
  const gpu = opts.gpu ?? await createGpu();
  const model = opts.model ?? await loadModel(gpu, syntheticCheckpoint(syntheticConfig(shape), 0), { dtype });
  try {
    // warm-up: every pipeline compiled once
    for (const mode of MODES) await runBatch(model, items.slice(0, 1), mode);
    const batched = n / await timeConstruct(model, items, batchSize);
    const single = nSingle / await timeConstruct(model, items.slice(0, nSingle), 1);
    const tokens = items.reduce((s, it) => s + it.ids.length, 0);
    const note = `${shape} shape, random weights, ${dtype}; ${n} CounterFact prompts (${(tokens / n).toFixed(1)} tokens on average), ` +
      `each in scan and attention mode; ${gpu.adapterInfo}`;
    return [
      { name: `01_construct, batches of ${batchSize}${dtype === "f32" ? "" : `, ${dtype}`}`, value: batched, unit: "prompts/s", note },
      { name: `01_construct, one prompt at a time${dtype === "f32" ? "" : `, ${dtype}`}`, value: single, unit: "prompts/s", note: `the first ${nSingle} of the same prompts` },
      { name: `01_construct, batching speed-up${dtype === "f32" ? "" : `, ${dtype}`}`, value: batched / single, unit: "x" },
    ];
  } finally {
    if (!opts.model) model.destroy();
    if (!opts.gpu) gpu.device.destroy();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { prompts: { type: "string" }, single: { type: "string" }, batch: { type: "string" }, shape: { type: "string" } },
  });
  const rows = await benchConstruct({
    prompts: values.prompts ? Number(values.prompts) : undefined,
    singlePrompts: values.single ? Number(values.single) : undefined,
    batchSize: values.batch ? Number(values.batch) : undefined,
    shape: values.shape,
  });
  for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(2)} ${r.unit}${r.note ? `  (${r.note})` : ""}`);
}
