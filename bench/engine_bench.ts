// The engine's speed against the device's own ceilings, all measured in one run on one adapter:
//   ceilings  a peak-arithmetic microkernel (GFLOP/s) and a large buffer copy (GB/s);
//   matmul    the main matmul shapes of mamba2-130m and mamba2-1.3b (in_proj, out_proj, the tied
//             lm_head) at 1, 16 and 128 rows, f32 and f16 weights: GFLOP/s, GB/s, fractions;
//   prefill   tokens/s of a batch of 64 ten-token prompts on synthetic models of both shapes.
// GPU time is taken around repeated dispatches in one submission, awaiting
// queue.onSubmittedWorkDone(), after a warm-up; the submission round trip measured on an empty
// submit is taken off. `deno task bench` prints these rows in one table (bench/bench.ts).

import { type Gpu, type Recorder, storageBuffer, writeBuffer } from "../engine/gpu.ts";
import { describePlan, destroyWeight, type F16Kernel, matmulPlan, type MatmulPlan, uploadWeight, type Weight, weightBytes, type WeightDtype } from "../engine/matmul.ts";
import { timeRecorded } from "../engine/matmul_tune.ts";
import { Ops } from "../engine/ops.ts";
import { loadModel } from "../engine/families.ts";
import { parseConfig } from "../engine/config.ts";
import type { Mamba2Config } from "../engine/mamba2/config.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import type { BenchRow } from "./table.ts";

export interface EngineBenchOptions {
  /** tiny shapes and few repeats: the smoke test's setting */
  quick?: boolean;
  /** progress lines (stderr by default) */
  log?: (line: string) => void;
  /** tune the matmul plans even on a CPU adapter (engine/matmul_tune.ts; GPUs always tune) */
  tune?: boolean;
  /** matmul shapes to run, as "<model> <name>" ("130m out_proj"); default all */
  shapes?: string[];
  /** matmul row counts (default 1, 16, 128) */
  rows?: number[];
}

export interface Ceilings {
  /** GFLOP/s of the best arithmetic microkernel */
  gflops: number;
  /** GB/s of bytes copied by copyBufferToBuffer */
  copyGBs: number;
}

// ---------- timing ----------

/**
 * Seconds per run of the work `record` encodes: a warm-up run, then enough runs in one
 * submission to last `minMs` (300 ms: 30x the round trip), best of `trials`, less the empty-submit
 * round trip (engine/matmul_tune.ts timeRecorded; work the device refuses is an error).
 */
export function timeGpu(gpu: Gpu, record: (rec: Recorder) => void, opts: { minMs?: number; trials?: number } = {}): Promise<number> {
  return timeRecorded(gpu, record, { minMs: opts.minMs ?? 300, trials: opts.trials ?? 2, maxRepeats: 4096 });
}

// ---------- ceilings ----------

/** c_i = c_i * a + b on ACC independent vec4 per invocation (LLVM fuses the multiply-add). */
function peakKernel(acc: number, iters: number, wg: number) {
  const decl = Array.from({ length: acc }, (_, i) => `var c${i} = vec4<f32>(f32(${i}) + s);`).join("\n  ");
  const step = Array.from({ length: acc }, (_, i) => `c${i} = c${i} * a + b;`).join(" ");
  const sum = Array.from({ length: acc }, (_, i) => `c${i}`).join(" + ");
  return `struct Params { salt: f32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let s = f32(gid.x) * p.salt;
  let a = vec4<f32>(0.999 + s);
  let b = vec4<f32>(0.001 - s);
  ${decl}
  for (var i = 0u; i < ${iters}u; i++) {
    ${step}
  }
  out[gid.x] = ${sum};
}`;
}

export async function measureCeilings(gpu: Gpu, opts: EngineBenchOptions = {}): Promise<{ ceilings: Ceilings; rows: BenchRow[] }> {
  const dev = gpu.device;
  const rows: BenchRow[] = [];
  // arithmetic: a few shapes of the same microkernel, the best counts
  let gflops = 0, bestName = "";
  const groupsN = opts.quick ? 256 : 2048;
  for (const [acc, wg] of [[8, 64], [16, 64], [8, 32]]) {
    const iters = 256;
    const module = dev.createShaderModule({ code: peakKernel(acc, iters, wg) });
    const pipe = await dev.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
    const out = storageBuffer(gpu, groupsN * wg * 16, "peak_out");
    const s = await timeGpu(gpu, (rec) => rec.dispatch(pipe, [{ f: 1e-9 }], [out], groupsN), { minMs: opts.quick ? 50 : 400 });
    out.destroy();
    const g = (groupsN * wg * iters * acc * 4 * 2) / s / 1e9;
    if (g > gflops) [gflops, bestName] = [g, `${acc} vec4 chains x ${wg} lanes`];
  }
  rows.push({ name: "peak arithmetic (multiply-add microkernel)", value: gflops, unit: "GFLOP/s", note: `best of 3 shapes: ${bestName}, f32` });

  // bandwidth: copyBufferToBuffer of a large buffer (bytes copied per second)
  const bytes = Math.min(opts.quick ? 16 << 20 : 256 << 20, Math.floor(gpu.limits.maxBufferSize / 16) * 16);
  const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE;
  const a = dev.createBuffer({ size: bytes, usage }), b = dev.createBuffer({ size: bytes, usage });
  const sCopy = await timeGpu(gpu, (rec) => rec.copy(a, 0, b, 0, bytes), { minMs: opts.quick ? 50 : 400 });
  const copyGBs = bytes / sCopy / 1e9;
  rows.push({ name: `buffer copy (copyBufferToBuffer, ${bytes >> 20} MiB)`, value: copyGBs, unit: "GB/s", note: "bytes copied per second (each read once and written once)" });

  // for reference: what a shader reads per second when each lane streams its own rows as vec4,
  // the access of the matmul kernels (no arithmetic to speak of)
  const readBytes = Math.min(bytes, Math.floor(gpu.maxBinding / 16) * 16);
  const lanes = 64 * 64;
  const readCode = `struct Params { per_lane: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  var s = vec4<f32>(0.0);
  let base = gid.x * p.per_lane;
  for (var i = 0u; i < p.per_lane; i++) { s += src[base + i]; }
  out[gid.x] = s;
}`;
  const rmod = dev.createShaderModule({ code: readCode });
  const rpipe = await dev.createComputePipelineAsync({ layout: "auto", compute: { module: rmod, entryPoint: "main" } });
  const rout = storageBuffer(gpu, lanes * 16, "read_out");
  const srcView = storageBuffer(gpu, readBytes, "read_src");
  const perLane = Math.floor(readBytes / 16 / lanes);
  const sRead = await timeGpu(gpu, (rec) => rec.dispatch(rpipe, [{ u: perLane }], [srcView, rout], lanes / 64), { minMs: opts.quick ? 50 : 400 });
  const readGBs = (perLane * lanes * 16) / sRead / 1e9;
  rows.push({ name: `shader read, each lane streams vec4 (${readBytes >> 20} MiB)`, value: readGBs, unit: "GB/s", ratio: readGBs / copyGBs, of: "copy", note: "for reference: the load path of the matmul kernels, without their arithmetic" });
  for (const buf of [a, b, rout, srcView]) buf.destroy();
  for (const r of rows) r.section = "ceilings";
  return { ceilings: { gflops, copyGBs }, rows };
}

// ---------- matmul shapes ----------

/** Fill with a cheap deterministic sequence in [-0.5, 0.5) (the values do not matter for speed). */
function filler(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

interface Shape {
  model: string;
  name: string;
  n: number;
  k: number;
}

/** The main matrices of a Mamba-2 model (the bench's shapes are Mamba-2's). */
function shapesOf(model: string, c: Mamba2Config): Shape[] {
  return [
    { model, name: "in_proj", n: c.dInProj, k: c.dModel },
    { model, name: "out_proj", n: c.dModel, k: c.dInner },
    { model, name: "lm_head", n: c.vocabPadded, k: c.dModel },
  ];
}

/** Bytes of weights the matmul repeats cycle through: well past this machine's 32 MiB L3. */
const ROTATE_BYTES = 96 << 20;

const TINY = () => parseConfig({ d_model: 64, n_layer: 2, vocab_size: 1000, pad_vocab_size_multiple: 16, ssm_cfg: { layer: "Mamba2", d_state: 16, headdim: 16 } }) as Mamba2Config;
const shape = (name: string) => syntheticConfig(name) as Mamba2Config;

export async function benchMatmul(gpu: Gpu, ceilings: Ceilings, opts: EngineBenchOptions = {}): Promise<BenchRow[]> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const rows: BenchRow[] = [];
  const shapes = opts.quick ? shapesOf("tiny", TINY()) : [
    ...shapesOf("130m", shape("mamba2-130m")),
    ...shapesOf("1.3b", shape("mamba2-1.3b")),
  ];
  const ms = opts.rows ?? (opts.quick ? [1, 16] : [1, 16, 128]);
  const kinds: { dtype: WeightDtype; f16Kernel?: F16Kernel; label: string; onlyOneRow?: boolean }[] = [
    { dtype: "f32", label: "f32" },
    { dtype: "f16", f16Kernel: "packed", label: "f16" },
  ];
  if (gpu.hasF16) kinds.push({ dtype: "f16", f16Kernel: "native", label: "f16 (native shader-f16 loads)", onlyOneRow: true });
  const opsByKernel = new Map<string, Ops>();
  const opsFor = async (k?: F16Kernel) => {
    const key = k ?? "packed";
    let o = opsByKernel.get(key);
    if (!o) opsByKernel.set(key, o = await Ops.create(gpu, { f16Kernel: key }));
    return o;
  };
  const oneRow = new Map<string, number>(); // "shape:f32" -> seconds, for the f16 speed-up
  for (const sh of shapes) {
    if (opts.shapes && !opts.shapes.includes(`${sh.model} ${sh.name}`)) continue;
    const wData = filler(sh.n * sh.k, sh.n + sh.k);
    const maxM = Math.max(...ms);
    const x = storageBuffer(gpu, maxM * sh.k * 4, "x");
    writeBuffer(gpu, x, filler(maxM * sh.k, 7));
    const y = storageBuffer(gpu, maxM * sh.n * 4, "y");
    for (const kind of kinds) {
      const ops = await opsFor(kind.f16Kernel);
      // Copies of the weight, used in turn, so that the repeats stream it from memory as a forward
      // does (each layer has its own weights) instead of finding a small one in the CPU's cache.
      const first: Weight = uploadWeight(gpu, wData, sh.n, sh.k, `${sh.model}.${sh.name}`, kind.dtype);
      const copies = opts.quick ? 1 : Math.max(1, Math.min(8, Math.ceil(ROTATE_BYTES / weightBytes(first))));
      const ws = [first, ...Array.from({ length: copies - 1 }, () => uploadWeight(gpu, wData, sh.n, sh.k, `${sh.model}.${sh.name}`, kind.dtype))];
      const w = first;
      // the plans this adapter uses (measured or cached on a GPU; matmulPlan's on a CPU unless --tune)
      await ops.mm.tune([w], { force: opts.tune, log });
      for (const m of ms) {
        if (kind.onlyOneRow && m !== 1) continue;
        const time = async (plan: MatmulPlan) => {
          let turn = 0;
          return await timeGpu(gpu, (rec) => ops.matmul(rec, x, ws[turn++ % copies], y, m, { plan }), { minMs: opts.quick ? 20 : 300, trials: opts.quick ? 1 : 2 });
        };
        const plan = ops.mm.plan(m, w.chunks[0].rows, w);
        const fallback = matmulPlan(m, w.chunks[0].rows, sh.k);
        const s = await time(plan);
        const tuned = JSON.stringify(plan) !== JSON.stringify(fallback);
        const sDefault = tuned ? await time(fallback) : s;
        const flops = 2 * m * sh.n * sh.k;
        const bytes = weightBytes(w) + 4 * m * (sh.k + sh.n);
        const gf = flops / s / 1e9, gbs = bytes / s / 1e9;
        const planText = `${tuned ? "tuned " : ""}${describePlan(plan)}${
          tuned ? ` (default ${describePlan(fallback)}: ${(m === 1 ? bytes / sDefault / 1e9 : flops / sDefault / 1e9).toFixed(m === 1 ? 2 : 1)} ${m === 1 ? "GB/s" : "GFLOP/s"}, tuned ${(sDefault / s).toFixed(2)}x)` : ""
        }`;
        const name = `${sh.model} ${sh.name} ${sh.n}x${sh.k}, ${m} row${m > 1 ? "s" : ""}, ${kind.label}`;
        const chunks = (w.chunks.length > 1 ? `, ${w.chunks.length} bindings` : "") + (copies > 1 ? `, ${copies} copies in turn` : "");
        if (m === 1) {
          let speedup = "";
          if (kind.dtype === "f32") oneRow.set(sh.model + sh.name, s);
          else speedup = `, ${(oneRow.get(sh.model + sh.name)! / s).toFixed(2)}x f32`;
          rows.push({ name, value: gbs, unit: "GB/s", ratio: gbs / ceilings.copyGBs, of: "copy", note: `${gf.toFixed(2)} GFLOP/s, ${(s * 1e3).toFixed(2)} ms${speedup}; ${planText}${chunks}` });
        } else {
          rows.push({ name, value: gf, unit: "GFLOP/s", ratio: gf / ceilings.gflops, of: "peak", note: `${gbs.toFixed(2)} GB/s (${((gbs / ceilings.copyGBs) * 100).toFixed(0)} % of copy), ${(s * 1e3).toFixed(1)} ms; ${planText}${chunks}` });
        }
        log(`  matmul ${name}: ${rows.at(-1)!.value.toFixed(2)} ${rows.at(-1)!.unit}`);
      }
      ws.forEach(destroyWeight);
    }
    x.destroy();
    y.destroy();
  }
  for (const r of rows) r.section = "matmul";
  return rows;
}

// ---------- prefill ----------


export async function benchPrefill(gpu: Gpu, opts: EngineBenchOptions = {}): Promise<BenchRow[]> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const rows: BenchRow[] = [];
  const B = opts.quick ? 8 : 64, T = 10;
  const models: [string, Mamba2Config][] = opts.quick
    ? [["tiny", TINY()]]
    : [["mamba2-130m", shape("mamba2-130m")], ["mamba2-1.3b", shape("mamba2-1.3b")]];
  let s32 = 0;
  for (const [name, cfg] of models) {
    for (const dtype of ["f32", "f16"] as const) {
      const t0 = performance.now();
      const model = await loadModel(gpu, syntheticCheckpoint(cfg, 0), { dtype });
      const loadS = (performance.now() - t0) / 1000;
      let seed = 1;
      const rnd = () => (seed = (Math.imul(seed, 48271) >>> 0) % 2147483647);
      const prompts = Array.from({ length: B }, () => Array.from({ length: T }, () => rnd() % cfg.vocabSize));
      const targets = prompts.map(() => rnd() % cfg.vocabSize);
      try {
        // warm-up on 2 prompts: the same kernels (the plan depends on the row count's class only)
        await model.forwardStats(prompts.slice(0, 2), targets.slice(0, 2), { mode: "scan" });
        const big = cfg.dModel >= 2048;
        const iters = opts.quick ? 2 : big ? 1 : 2;
        let best = Infinity;
        for (let i = 0; i < iters; i++) {
          const t = performance.now();
          await model.forwardStats(prompts, targets, { mode: "scan" });
          best = Math.min(best, (performance.now() - t) / 1000);
        }
        const tps = (B * T) / best;
        let speed = "";
        if (dtype === "f32") s32 = best;
        else speed = `, ${(s32 / best).toFixed(2)}x f32`;
        rows.push({
          section: "prefill",
          name: `${name} (synthetic), ${B} prompts x ${T} tokens, ${dtype}`,
          value: tps,
          unit: "tokens/s",
          note: `${best.toFixed(2)} s per batch (best of ${iters}${iters === 1 ? ", after a warm-up" : ""})${speed}; scan mode, p(target) only read back; weights ${dtype}, load ${loadS.toFixed(0)} s`,
        });
        log(`  prefill ${rows.at(-1)!.name}: ${tps.toFixed(1)} tokens/s`);
      } finally {
        model.destroy();
      }
    }
  }
  return rows;
}
