// The GPU check: what issue 8 asks of a GPU, in one process and a few minutes (bench/gpu_check.sh
// runs it on a GPU machine, without the npm packages: the prompts come from
// bench/counterfact_prompts.json, the first 16 CounterFact rows whose subject is found, tokenized here).
//   1. the device's ceilings (multiply-add GFLOP/s, copy GB/s);
//   2. the small matrices (130m in_proj and out_proj, 1.3b out_proj and in_proj) at 1, 16 and 128 rows,
//      f32 and f16: the plan tuned for this adapter against matmulPlan's default, each as a share of
//      the ceilings;
//   3. at the mamba2-1.3b shape (synthetic weights), f32 and f16: 01_construct in prompts/s (batches of
//      16 and one prompt at a time), the 03 sweep per prompt (the seed's three flows, the stage's
//      default, and the reference study's nine; k = 9, 16 prompts in one fast-path call), each with
//      its GFLOP/s as a share of the arithmetic ceiling.
//   deno run -A bench/gpu_check.ts [--quick]      (--quick: the tiny shapes, to check the script itself)
import { parseArgs } from "node:util";
import { loadModel } from "../engine/families.ts";
import { createGpu } from "../engine/gpu.ts";
import { syntheticCheckpoint } from "../engine/synthetic.ts";
import { benchConstruct } from "./construct_bench.ts";
import { benchMatmul, measureCeilings } from "./engine_bench.ts";
import { benchConfig, benchShape, FLOWS, fullForwardFlops, MAMBA2 } from "./knockout_bench.ts";
import { SEED_FLOWS } from "./original_bench.ts";
import type { BenchPrompt } from "./prompts.ts";
import { type BenchRow, markdownTable } from "./table.ts";

const { values } = parseArgs({ args: Deno.args, options: { quick: { type: "boolean", default: false } } });
const quick = values.quick!;
const t0 = performance.now();
const log = (l: string) => console.error(`[gpu_check ${((performance.now() - t0) / 1000).toFixed(0)} s] ${l}`);
const prompts: BenchPrompt[] = JSON.parse(
  await Deno.readTextFile(new URL("./counterfact_prompts.json", import.meta.url)),
);
const gpu = await createGpu();
log(`adapter: ${gpu.adapterInfo}${gpu.cpu ? " (a CPU driver: numbers of a CPU, not a GPU)" : ""}`);
const rows: BenchRow[] = [];

const { ceilings, rows: ceilingRows } = await measureCeilings(gpu, { quick });
rows.push(...ceilingRows);
log(`ceilings: ${ceilings.gflops.toFixed(0)} GFLOP/s, copy ${ceilings.copyGBs.toFixed(0)} GB/s`);
rows.push(...await benchMatmul(gpu, ceilings, {
  quick,
  log,
  shapes: quick ? undefined : ["130m in_proj", "130m out_proj", "1.3b out_proj", "1.3b in_proj"],
}));

const shape = quick ? "tiny" : "mamba2-1.3b";
const cfg = benchConfig(shape);
const items = prompts.map((p) => ({ row: p.row, ids: p.ids, trueId: p.trueId }));
const share = (gflops: number) => ({ ratio: gflops / ceilings.gflops, of: "peak" });
for (const dtype of ["f32", "f16"] as const) {
  const tl = performance.now();
  const ckpt = syntheticCheckpoint(cfg, 0);
  const model = await loadModel(gpu, ckpt, { dtype });
  log(`${shape} ${dtype} loaded (synthetic weights, plans tuned or read from the cache) in ${((performance.now() - tl) / 1000).toFixed(0)} s`);
  try {
    const construct = await benchConstruct({ gpu, model, items, shape, dtype, singlePrompts: 2 });
    // FLOPs of a prompt in both modes (the attention form's count; scan mode's SSD is cheaper, the matmuls the same)
    const perPrompt = items.reduce((s, it) => s + 2 * fullForwardFlops(cfg, it.ids.length), 0) / items.length;
    for (const r of construct) {
      if (r.unit === "prompts/s") Object.assign(r, share((r.value * perPrompt) / 1e9), { note: `${((r.value * perPrompt) / 1e9).toFixed(0)} GFLOP/s; ${r.note ?? ""}` });
      r.name = `${shape} ${r.name}`;
      r.section = "construct";
    }
    rows.push(...construct);
    log(`01_construct ${dtype}: ${construct[0].value.toFixed(1)} prompts/s`);
    for (const [label, flows] of [["03 sweep, seed's 3 flows", SEED_FLOWS], ["03 sweep, 9 flows", FLOWS]] as const) {
      const r = await benchShape(gpu, MAMBA2, shape, { prompts, fullKnockouts: quick ? 4 : 64, repeats: 2, flows, model });
      const gf = r.flops.fast / r.fastS / 1e9;
      rows.push({
        section: "sweep",
        name: `${shape} ${label}, k=9, fast path, ${dtype}`,
        value: r.fastS,
        unit: "s/prompt",
        ...share(gf),
        note: `${gf.toFixed(0)} GFLOP/s; ${r.knockoutsPerPrompt.toFixed(0)} knockouts per prompt, ${r.prompts} prompts in one call, best of 2; ` +
          `full recomputes ${r.fullS.toFixed(3)} s/prompt (${r.fullTimed} timed), ${(r.fullS / r.fastS).toFixed(1)}x; max |Δp| ${r.maxAbsDiff.toExponential(1)}`,
      });
      log(`${label} ${dtype}: ${r.fastS.toFixed(3)} s/prompt`);
    }
  } finally {
    model.destroy();
    ckpt.close();
  }
}
console.log(`GPU check on ${gpu.adapterInfo}, ${((performance.now() - t0) / 1000).toFixed(0)} s, ${new Date().toISOString()}\n`);
console.log(markdownTable(rows));
gpu.device.destroy();
