// This project against the original study's PyTorch code (torch on the CPU, as the study ran it),
// per prompt, on the same checkpoint and the same token ids, measured in one run with the two
// sides interleaved (original, ours, original, ours, ...) and the best of the repeats kept, so that
// a machine shared with other work slows both alike:
//   01_construct   each prompt in scan and attention mode (the study: one forward each, batch 1)
//   03 sweep       the seed's three blocks into the last position (last, subject, relation) in every
//                  window of k layers (the study: one full attention-mode forward per knockout)
//   04 heatmap     the edge j -> last for every position j and window of k layers (likewise)
// Ours runs what the stages run: 01_construct's batches (runBatch), and 03's and 04's fast-path
// calls (model.knockouts) with their default prompt groups. Model loading is excluded on both sides.
//
// The original code is not part of this repository: --original DIR names the folder holding it
// (seedref/mamba2mini.py; default ../shared/bench/original beside the repository, where this
// project's machines have it). It runs under python3 with torch (Debian: python3-torch with
// libopenblas0-pthread). Without either, our side is measured alone and the rows say why.
//   deno run -A bench/original_bench.ts [--quick] [--original DIR] [--model DIR] [--prompts N]
//     [--heatmap-prompts N] [--k K] [--repeats N] [--sweep-repeats N] [--threads N]
// `benchOriginal()` gives the rows to `deno task bench` (section `original`).

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { KnockoutConfig, LanguageModel } from "../engine/arch.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { loadModel } from "../engine/families.ts";
import { createGpu, type Gpu } from "../engine/gpu.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { cacheDir } from "../engine/tune_cache.ts";
import { MODES, type PromptItem, runBatch } from "../workflows/lib/construct_run.ts";
import { fixedGroups } from "../workflows/lib/groups.ts";
import { DEFAULT_FLOWS, heatmapConfigs } from "../workflows/lib/knockout_configs.ts";
import type { BenchRow } from "./table.ts";
import { type BenchPrompt, counterfactPrompts } from "./prompts.ts";
import { sweepConfigs } from "./knockout_bench.ts";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
/** The seed's three blocks, in this project's flow names (03_info_flow's default flows). */
export const SEED_FLOWS = DEFAULT_FLOWS.split(",");
/** Prompts per fast-path call: the stages' defaults (03_info_flow group_prompts, 04_heatmap group_prompts). */
const GROUP_03 = 16, GROUP_04 = 4;

export interface OriginalBenchOptions {
  quick?: boolean;
  /** the folder with the original code (seedref/mamba2mini.py) */
  original?: string;
  /** a checkpoint folder (config.json + F32 model.safetensors); default: the synthetic one, written once to the cache */
  model?: string;
  /** CounterFact prompts for 01 and 03 (default 8) */
  prompts?: number;
  /** the first of them for 04 (default 2: the original takes minutes per prompt) */
  heatmapPrompts?: number;
  /** window size of 03 and 04 (default 9) */
  k?: number;
  /** rounds of 01_construct (original, ours); the best of each side counts (default 3) */
  repeats?: number;
  /** rounds of the 03 and 04 sweeps, ours twice in each (default 1: the original takes minutes per prompt) */
  sweepRepeats?: number;
  /** torch threads (default: the CPU threads Deno sees) */
  threads?: number;
  log?: (line: string) => void;
}

// ------------------------------------------------------------------ the original side

/** A running original_driver.py: one request, one answer. */
class Driver {
  private readonly lines: AsyncIterator<string>;
  private constructor(private readonly child: Deno.ChildProcess, private readonly writer: WritableStreamDefaultWriter<Uint8Array>, lines: AsyncIterator<string>, readonly ready: Record<string, unknown>) {
    this.lines = lines;
  }

  static async start(python: string, original: string, model: string, threads: number): Promise<Driver> {
    const child = new Deno.Command(python, {
      args: [join(REPO, "bench/original_driver.py"), original, model, String(threads)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      env: { OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads), PYTHONWARNINGS: "ignore" },
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) throw new Error("the original code's driver ended before it was ready (see its error above)");
    return new Driver(child, child.stdin.getWriter(), lines, JSON.parse(first.value));
  }

  async ask(req: Record<string, unknown>): Promise<Record<string, number & number[]>> {
    await this.writer.write(new TextEncoder().encode(JSON.stringify(req) + "\n"));
    const r = await this.lines.next();
    if (r.done) throw new Error(`the original code's driver ended during ${req.op} (see its error above)`);
    return JSON.parse(r.value);
  }

  async stop(): Promise<void> {
    await this.writer.close().catch(() => {});
    await this.child.status;
  }
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, ctl) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) if (p.trim()) ctl.enqueue(p);
    },
    flush(ctl) {
      if (rest.trim()) ctl.enqueue(rest);
    },
  });
}

/** A python3 that imports torch, or why there is none. */
export async function findTorchPython(): Promise<{ python: string } | { missing: string }> {
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const out = await new Deno.Command(python, { args: ["-c", "import torch"], stdout: "null", stderr: "null" }).output();
      if (out.success) return { python };
    } catch {
      // not installed under that name
    }
  }
  return { missing: "no python3 with torch found (Debian/Ubuntu: apt-get install python3-torch libopenblas0-pthread)" };
}

/** The folder of the original code, or why there is none. */
export function findOriginal(dir?: string): { dir: string } | { missing: string } {
  const d = dir ?? Deno.env.get("MAMBA_EXPLAIN_ORIGINAL") ?? join(REPO, "../shared/bench/original");
  try {
    Deno.statSync(join(d, "seedref/mamba2mini.py"));
    return { dir: d };
  } catch {
    return { missing: `the original code is not at ${d} (seedref/mamba2mini.py); give its folder with --original DIR` };
  }
}

// ------------------------------------------------------------------ the checkpoint both sides load

/** A synthetic checkpoint as a folder (config.json + F32 model.safetensors, state-spaces names), written once. */
export async function syntheticFolder(shape: string, overrides: Record<string, unknown>, dir: string): Promise<string> {
  try {
    Deno.statSync(join(dir, "model.safetensors"));
    return dir;
  } catch {
    // not written yet
  }
  const cfg = syntheticConfig(shape, overrides);
  const ckpt = syntheticCheckpoint(cfg, 0);
  try {
    const header: Record<string, unknown> = {};
    let offset = 0;
    const datas: Float32Array[] = [];
    for (const info of ckpt.list().sort((x, y) => x.name < y.name ? -1 : 1)) {
      const data = await ckpt.readF32(info.name);
      header[info.name] = { dtype: "F32", shape: info.shape, data_offsets: [offset, offset + data.byteLength] };
      offset += data.byteLength;
      datas.push(data);
    }
    let json = JSON.stringify(header);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    await Deno.mkdir(dir, { recursive: true });
    const tmp = join(dir, `model.safetensors.tmp-${Deno.pid}`);
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      const head = new Uint8Array(8 + json.length);
      new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
      head.set(new TextEncoder().encode(json), 8);
      await f.write(head);
      for (const d of datas) {
        const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
        for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
      }
    } finally {
      f.close();
    }
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(cfg.raw));
    await Deno.rename(tmp, join(dir, "model.safetensors"));
    return dir;
  } finally {
    ckpt.close();
  }
}

// ------------------------------------------------------------------ our side

/** 03's configurations of the seed's three flows in every window of k layers (those that block something). */
function seedSweepConfigs(nLayer: number, prompts: BenchPrompt[], k: number): KnockoutConfig[] {
  return prompts.flatMap((p, prompt) => sweepConfigs(nLayer, prompt, p.ids, p.subject, SEED_FLOWS, k).map((c) => ({ ...c, target: p.trueId })));
}

async function oursConstruct(model: LanguageModel, prompts: BenchPrompt[]): Promise<{ s: number; p: Record<string, number[]> }> {
  const items: PromptItem[] = prompts.map((p) => ({ row: p.row, ids: p.ids, trueId: p.trueId }));
  const p: Record<string, number[]> = {};
  const t0 = performance.now();
  for (const mode of MODES) {
    const got = new Map<number, number>();
    for (const batch of fixedGroups(items, 16)) for (const r of await runBatch(model, batch, mode)) got.set(r.row, r.true_prob);
    p[mode] = items.map((it) => got.get(it.row)!);
  }
  return { s: (performance.now() - t0) / 1000, p };
}

async function oursKnockouts(model: LanguageModel, prompts: BenchPrompt[], group: number, configsOf: (g: BenchPrompt[]) => KnockoutConfig[]): Promise<{ s: number; knockouts: number }> {
  let n = 0;
  const t0 = performance.now();
  for (const g of fixedGroups(prompts, group)) {
    const configs = configsOf(g);
    n += configs.length;
    await model.knockouts(g.map((p) => p.ids), g.map((p) => p.trueId), configs);
  }
  return { s: (performance.now() - t0) / 1000, knockouts: n };
}

// ------------------------------------------------------------------ the comparison

export async function benchOriginal(gpu: Gpu, opts: OriginalBenchOptions = {}): Promise<BenchRow[]> {
  const log = opts.log ?? ((l: string) => console.error(`[bench] ${l}`));
  const quick = opts.quick ?? false;
  const k = opts.k ?? (quick ? 1 : 9);
  const repeats = opts.repeats ?? (quick ? 1 : 3);
  const sweepRepeats = opts.sweepRepeats ?? 1;
  const threads = opts.threads ?? navigator.hardwareConcurrency;
  const shape = quick ? { name: "tiny", base: "mamba2-130m", overrides: { d_model: 128, n_layer: 2 } } : { name: "mamba2-130m", base: "mamba2-130m", overrides: {} };
  const prompts = await counterfactPrompts(opts.prompts ?? (quick ? 1 : 8));
  const heat = prompts.slice(0, opts.heatmapPrompts ?? (quick ? 1 : 2));
  // the quick run's tiny checkpoint is written to a temporary folder; the full one is kept in the cache
  const temp = !opts.model && quick ? await Deno.makeTempDir({ prefix: "mamba-explain-bench-" }) : undefined;
  const modelDir = opts.model ?? await syntheticFolder(shape.base, shape.overrides, temp ?? join(cacheDir(), "bench", `${shape.name}-synthetic`));

  const py = await findTorchPython();
  const orig = findOriginal(opts.original);
  const missing = "missing" in py ? py.missing : "missing" in orig ? orig.missing : undefined;
  if (missing) log(`original code: not measured: ${missing}`);
  const driver = missing ? undefined : await Driver.start((py as { python: string }).python, (orig as { dir: string }).dir, modelDir, threads);

  const ckpt = await openCheckpoint(modelDir);
  const model = await loadModel(gpu, ckpt);
  try {
    const nLayer = model.info.nLayer;
    const sweep = (g: BenchPrompt[]) => seedSweepConfigs(nLayer, g, k);
    const heatmap = (g: BenchPrompt[]) =>
      g.flatMap((p, prompt) => heatmapConfigs(nLayer, p.ids.length, k, { units: { kind: "all" }, conv: false }).map((c) => ({ prompt, start: c.start, end: c.end, edges: c.edges, target: p.trueId })));
    // warm-up: every kernel of both paths compiled
    await oursConstruct(model, prompts.slice(0, 1));
    await oursKnockouts(model, prompts.slice(0, 1), 1, (g) => sweep(g).slice(0, 2));

    const best = { o01: Infinity, u01: Infinity, o03: Infinity, u03: Infinity, o04: Infinity, u04: Infinity };
    let n03 = 0, n04 = 0, maxDp = 0;
    const load = () => `load average ${Deno.loadavg()[0].toFixed(1)}`;
    const perPrompt = (s: number, n: number) => `${(s / n).toFixed(3)} s/prompt`;
    // 01_construct: cheap on both sides, `repeats` rounds
    for (let rep = 0; rep < repeats; rep++) {
      if (driver) {
        const r = await driver.ask({ op: "construct", prompts: prompts.map((p) => p.ids), targets: prompts.map((p) => p.trueId) });
        best.o01 = Math.min(best.o01, r.s);
        const u = await oursConstruct(model, prompts);
        best.u01 = Math.min(best.u01, u.s);
        // the same weights and ids: the two implementations agree (f32 on both sides)
        prompts.forEach((_, i) => (maxDp = Math.max(maxDp, Math.abs(r.p_scan[i] - u.p.scan[i]), Math.abs(r.p_attention[i] - u.p.attention[i]))));
        log(`01_construct round ${rep + 1}: original ${perPrompt(r.s, prompts.length)}, ours ${perPrompt(u.s, prompts.length)} (${load()})`);
      } else best.u01 = Math.min(best.u01, (await oursConstruct(model, prompts)).s);
    }
    // the sweeps: minutes per prompt for the original, `sweepRepeats` rounds; ours twice next to each
    for (let rep = 0; rep < sweepRepeats; rep++) {
      const o03 = driver ? (await driver.ask({ op: "sweep", prompts: prompts.map((p) => ({ ids: p.ids, subject: p.subject })), k })).s : Infinity;
      best.o03 = Math.min(best.o03, o03);
      for (let i = 0; i < 2; i++) {
        const u03 = await oursKnockouts(model, prompts, GROUP_03, sweep);
        best.u03 = Math.min(best.u03, u03.s);
        n03 = u03.knockouts;
      }
      log(`03 sweep round ${rep + 1}: original ${perPrompt(o03, prompts.length)}, ours ${perPrompt(best.u03, prompts.length)} (${load()})`);
      const o04 = driver ? (await driver.ask({ op: "heatmap", prompts: heat.map((p) => p.ids), k })).s : Infinity;
      best.o04 = Math.min(best.o04, o04);
      for (let i = 0; i < 2; i++) {
        const u04 = await oursKnockouts(model, heat, GROUP_04, heatmap);
        best.u04 = Math.min(best.u04, u04.s);
        n04 = u04.knockouts;
      }
      log(`04 heatmap round ${rep + 1}: original ${perPrompt(o04, heat.length)}, ours ${perPrompt(best.u04, heat.length)} (${load()})`);
    }

    const tokens = prompts.reduce((s, p) => s + p.ids.length, 0) / prompts.length;
    const what = `${shape.name === "tiny" ? "tiny (d_model 128, 2 layers)" : shape.name} shape, ${modelDir}; ${prompts.length} CounterFact prompts, ${tokens.toFixed(1)} tokens on average`;
    const origNote = driver
      ? `torch ${driver.ready.torch}, ${driver.ready.threads} threads, sgemm ${Number(driver.ready.sgemm_gflops).toFixed(0)} GFLOP/s`
      : `original not measured: ${missing}`;
    const runs = `best of ${repeats} (01) and ${sweepRepeats} x 2 (03, 04), interleaved with the original; load average ${Deno.loadavg()[0].toFixed(1)} at the end; ${gpu.adapterInfo}`;
    const rows: BenchRow[] = [];
    const stage = (name: string, o: number, u: number, n: number, extra: string) => {
      if (driver) rows.push({ name: `${name}, original code`, value: o / n, unit: "s/prompt", note: `${origNote}; ${extra}` });
      rows.push({ name: `${name}, this project`, value: u / n, unit: "s/prompt", note: `${runs}; ${driver ? "" : `${origNote}; `}${extra}` });
      if (driver) rows.push({ name: `${name}, speed-up over the original`, value: o / u, unit: "x" });
    };
    stage("01_construct (scan + attention)", best.o01, best.u01, prompts.length, `${what}; model load excluded${driver ? `; max |Δp| between the two ${maxDp.toExponential(1)}` : ""}`);
    stage(`03 sweep, seed's 3 flows, k=${k}`, best.o03, best.u03, prompts.length, `${(n03 / prompts.length).toFixed(0)} knockouts per prompt, each a full forward in the original, the fast path here (groups of ${GROUP_03})`);
    stage(`04 heatmap, k=${k}`, best.o04, best.u04, heat.length, `${(n04 / heat.length).toFixed(0)} knockouts per prompt over the first ${heat.length} prompts (groups of ${GROUP_04})`);
    return rows;
  } finally {
    model.destroy();
    ckpt.close();
    await driver?.stop();
    if (temp) await Deno.remove(temp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      original: { type: "string" },
      model: { type: "string" },
      prompts: { type: "string" },
      "heatmap-prompts": { type: "string" },
      k: { type: "string" },
      repeats: { type: "string" },
      "sweep-repeats": { type: "string" },
      threads: { type: "string" },
    },
  });
  const num = (s?: string) => s === undefined ? undefined : Number(s);
  const gpu = await createGpu();
  try {
    const rows = await benchOriginal(gpu, {
      quick: values.quick,
      original: values.original,
      model: values.model,
      prompts: num(values.prompts),
      heatmapPrompts: num(values["heatmap-prompts"]),
      k: num(values.k),
      repeats: num(values.repeats),
      sweepRepeats: num(values["sweep-repeats"]),
      threads: num(values.threads),
    });
    const { markdownTable } = await import("./table.ts");
    console.log(markdownTable(rows));
  } finally {
    gpu.device.destroy();
  }
}
