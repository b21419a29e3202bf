// deno task bench [--quick] [--tune] [--only SECTION]   (--tune: time the matmul plans tuned per adapter on a CPU adapter too)
// One run, one table: every section measured now, on this machine's adapter.
//   ceilings   the adapter's peak arithmetic and copy bandwidth (the matmul rows' yardsticks)
//   matmul     main matmul shapes of mamba2-130m / mamba2-1.3b at 1, 16, 128 rows, f32 and f16
//   prefill    tokens/s, 64 ten-token prompts, synthetic models of both shapes, f32 and f16
//   construct  01_construct throughput (bench/construct_bench.ts)
//   knockout   the nine-flow sweep at k=9 per prompt, fast path vs full recomputes (bench/knockout_bench.ts)
//   load       peak resident memory while a synthetic mamba2-1.3b loads, against its weights (bench/load_bench.ts)
//   transformer  the same sweep on synthetic Pythia (GPT-NeoX) models (bench/transformer_bench.ts)
//   original   this project against the original study's PyTorch code, per prompt: 01_construct, the 03
//              sweep and the 04 heatmap, interleaved in one run (bench/original_bench.ts; our side alone,
//              with a note, where python3-torch or the original code is missing)
// --quick runs tiny shapes and few repeats (tests/bench_smoke_test.ts), so the code cannot rot.
import { parseArgs } from "node:util";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import { runMain, UsageError } from "../engine/cli.ts";
import { benchMatmul, benchPrefill, type Ceilings, measureCeilings } from "./engine_bench.ts";
import { benchConstruct } from "./construct_bench.ts";
import { benchKnockout } from "./knockout_bench.ts";
import { benchLoad } from "./load_bench.ts";
import { benchTransformerKnockout } from "./transformer_bench.ts";
import { benchOriginal } from "./original_bench.ts";
import { type BenchRow, markdownTable } from "./table.ts";

interface Section {
  name: string;
  run: (ctx: Context) => Promise<BenchRow[]>;
}
interface Context {
  gpu: Gpu;
  quick: boolean;
  tune: boolean;
  ceilings: () => Promise<Ceilings>;
}

const SECTIONS: Section[] = [
  {
    name: "ceilings",
    run: async (ctx) => (await measureCeilingsOnce(ctx)).rows,
  },
  { name: "matmul", run: async (ctx) => benchMatmul(ctx.gpu, await ctx.ceilings(), { quick: ctx.quick, tune: ctx.tune }) },
  { name: "prefill", run: (ctx) => benchPrefill(ctx.gpu, { quick: ctx.quick }) },
  {
    name: "construct",
    run: (ctx) => benchConstruct({ gpu: ctx.gpu, ...(ctx.quick ? { prompts: 2, singlePrompts: 1, batchSize: 2 } : {}) }),
  },
  { name: "knockout", run: (ctx) => benchKnockout(ctx.gpu, { quick: ctx.quick }) },
  { name: "load", run: (ctx) => benchLoad({ quick: ctx.quick }) },
  { name: "transformer", run: (ctx) => benchTransformerKnockout(ctx.gpu, { quick: ctx.quick }) },
  { name: "original", run: (ctx) => benchOriginal(ctx.gpu, { quick: ctx.quick }) },
];

let ceilingRun: Promise<{ ceilings: Ceilings; rows: BenchRow[] }> | undefined;
function measureCeilingsOnce(ctx: Context) {
  return ceilingRun ??= measureCeilings(ctx.gpu, { quick: ctx.quick });
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      tune: { type: "boolean", default: false },
      only: { type: "string", multiple: true, default: [] },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  const names = SECTIONS.map((s) => s.name);
  if (values.help) {
    console.log(`usage: deno task bench [--quick] [--tune] [--only SECTION]...\n  sections: ${names.join(", ")}`);
    return;
  }
  const only = values.only!.flatMap((o) => o.split(","));
  for (const o of only) if (!names.includes(o)) throw new UsageError(`--only ${o}: no such section (${names.join(", ")})`);
  const gpu = await createGpu();
  const ctx: Context = { gpu, quick: values.quick!, tune: values.tune!, ceilings: async () => (await measureCeilingsOnce(ctx)).ceilings };
  const rows: BenchRow[] = [];
  const t0 = performance.now();
  for (const s of SECTIONS) {
    if (only.length && !only.includes(s.name)) continue;
    const ts = performance.now();
    console.error(`[bench] ${s.name} ...`);
    const got = await s.run(ctx);
    for (const r of got) rows.push({ ...r, section: r.section ?? s.name });
    console.error(`[bench] ${s.name}: ${got.length} rows in ${((performance.now() - ts) / 1000).toFixed(0)} s`);
  }
  console.log(`Bench on ${gpu.adapterInfo} (${navigator.hardwareConcurrency} CPU threads), ` +
    `${values.quick ? "quick sizes" : "full sizes"}, ${((performance.now() - t0) / 1000).toFixed(0)} s, ${new Date().toISOString()}\n`);
  console.log(markdownTable(rows));
}

if (import.meta.main) await runMain(main);
