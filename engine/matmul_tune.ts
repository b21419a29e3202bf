// Matmul plans tuned per adapter: a short measurement when a model is loaded, cached per adapter.
//
// matmulPlan's blocks were tuned on lavapipe, where every load is a per-lane loop and big register
// blocks win. A GPU wants the opposite: many invocations, small blocks, and for the small matrices
// at a few rows (out_proj, 130m's in_proj, the knockout recomputes) k split across a workgroup
// (matmul_splitk.wgsl), or most of the chip idles. Rather than guess per GPU, the engine times a
// few candidate plans per weight shape and row count on the adapter itself, keeps the fastest, and
// caches the choice in <cache>/matmul-plans.json (engine/tune_cache.ts) under the adapter's key
// (vendor, architecture, device, description with the driver's version where the adapter gives it,
// and the Deno/wgpu version), so that later runs load it instead of measuring.
//
// On a CPU adapter nothing is measured unless asked (MAMBA_EXPLAIN_TUNE=1): compiling a candidate
// costs lavapipe up to a second, and matmulPlan is its tuned choice. MAMBA_EXPLAIN_TUNE=0 turns
// tuning off everywhere (matmulPlan's plans, as before).
import { dirname, join } from "node:path";
import { type Gpu, Recorder, storageBuffer } from "./gpu.ts";
import type { MatmulPlan } from "./matmul.ts";
import { cacheDir } from "./tune_cache.ts";

/** Row counts a product is tuned at: m rows use the plan of the smallest bucket >= m (the last one beyond). */
export const ROW_BUCKETS = [1, 2, 4, 8, 16, 64, 256] as const;

export function bucketOf(m: number): number {
  return ROW_BUCKETS.find((b) => m <= b) ?? ROW_BUCKETS[ROW_BUCKETS.length - 1];
}

/** The plans tried for m rows (k a multiple of 8); `fallback` (matmulPlan's) is always among them. */
export function candidatePlans(m: number, fallback: MatmulPlan): MatmulPlan[] {
  const r = (cap: number) => Math.min(m, cap);
  const list: MatmulPlan[] = [
    fallback,
    { kind: "tiled", R: r(4), NC: 1, WG: 64 },
    { kind: "tiled", R: r(4), NC: 2, WG: 64 },
    { kind: "tiled", R: r(8), NC: 2, WG: 128 },
    { kind: "splitk", R: r(4), NC: 1, WG: 64 },
    { kind: "splitk", R: r(4), NC: 1, WG: 256 },
    { kind: "splitk", R: r(2), NC: 2, WG: 128 },
  ];
  const seen = new Set<string>();
  return list.filter((p) => {
    const key = JSON.stringify(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Plans chosen for one adapter: shape key (`flavour:n x k`) -> row bucket -> plan. */
export type TunedPlans = Record<string, Record<string, MatmulPlan>>;

interface CacheFile {
  version: 1;
  adapters: Record<string, { tunedAt: string; plans: TunedPlans }>;
}

export function tuneCachePath(): string {
  return join(cacheDir(), "matmul-plans.json");
}

/** Whether plans are measured on this adapter: MAMBA_EXPLAIN_TUNE=1 / 0 forces it on / off; by default on GPUs only. */
export function tuningEnabled(gpu: Gpu): boolean {
  const env = Deno.env.get("MAMBA_EXPLAIN_TUNE");
  if (env === "0") return false;
  if (env === "1") return true;
  return !gpu.cpu;
}

async function readCache(path: string): Promise<CacheFile> {
  try {
    const c = JSON.parse(await Deno.readTextFile(path)) as CacheFile;
    if (c?.version === 1 && typeof c.adapters === "object" && c.adapters) return c;
  } catch {
    // none yet, or unreadable: measured again
  }
  return { version: 1, adapters: {} };
}

/** The cached plans of this adapter (empty when none). */
export async function cachedPlans(gpu: Gpu, path = tuneCachePath()): Promise<TunedPlans> {
  return (await readCache(path)).adapters[gpu.adapterKey]?.plans ?? {};
}

/** Add this adapter's plans to the cache (read again first: another process may have written meanwhile); best effort. */
export async function saveTuned(gpu: Gpu, plans: TunedPlans, path = tuneCachePath()): Promise<void> {
  try {
    const c = await readCache(path);
    const mine = c.adapters[gpu.adapterKey]?.plans ?? {};
    c.adapters[gpu.adapterKey] = { tunedAt: new Date().toISOString(), plans: { ...mine, ...plans } };
    await Deno.mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(tmp, JSON.stringify(c, null, 1) + "\n");
    await Deno.rename(tmp, path);
  } catch {
    // a read-only cache only means measuring again next time
  }
}

const roundTrips = new WeakMap<GPUDevice, number>();

/** ms of an empty submit + onSubmittedWorkDone: the fixed cost every timed submission includes. */
async function roundTripMs(gpu: Gpu): Promise<number> {
  const hit = roundTrips.get(gpu.device);
  if (hit !== undefined) return hit;
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    gpu.device.queue.submit([gpu.device.createCommandEncoder().finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    best = Math.min(best, performance.now() - t0);
  }
  roundTrips.set(gpu.device, best);
  return best;
}

/**
 * Seconds per run of the work `record` encodes, on this adapter: a warm-up run (compiles, touches
 * memory; work the device refuses is an error, not a time of nothing), then enough runs in one
 * submission to last `minMs`, best of `trials`, less the round trip of an empty submission. The
 * tuner's short measurements (4 ms) and the bench's (300 ms) alike.
 */
export async function timeRecorded(gpu: Gpu, record: (rec: Recorder) => void, opts: { minMs?: number; trials?: number; maxRepeats?: number } = {}): Promise<number> {
  const minMs = opts.minMs ?? 4, trials = opts.trials ?? 2, maxRepeats = opts.maxRepeats ?? 256;
  const overhead = await roundTripMs(gpu);
  const run = async (n: number) => {
    const rec = new Recorder(gpu);
    for (let i = 0; i < n; i++) record(rec);
    const t0 = performance.now();
    rec.submit();
    await gpu.device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  gpu.device.pushErrorScope("validation");
  gpu.device.pushErrorScope("internal");
  gpu.device.pushErrorScope("out-of-memory");
  await run(1);
  const errors = [await gpu.device.popErrorScope(), await gpu.device.popErrorScope(), await gpu.device.popErrorScope()].filter((e) => e);
  if (errors.length) throw new Error(`the timed work failed on the device: ${errors[0]!.message}`);
  // grow the repeat count until one submission lasts minMs
  let n = 1, t = await run(1);
  while (t < minMs && n < maxRepeats) {
    n = Math.min(maxRepeats, n * Math.max(2, Math.min(16, Math.ceil(minMs / Math.max(0.05, t - overhead)))));
    t = await run(n);
  }
  for (let i = 1; i < trials; i++) t = Math.min(t, await run(n));
  return Math.max(1e-6, t - overhead) / 1000 / n;
}

/** Scratch for timing products of up to `rows` x `cols` floats (x) and `rows` x `n` (y). */
export function scratchFor(gpu: Gpu, rows: number, k: number, n: number): { x: GPUBuffer; y: GPUBuffer; destroy(): void } {
  const x = storageBuffer(gpu, rows * k * 4, "tune_x"), y = storageBuffer(gpu, rows * n * 4, "tune_y");
  return { x, y, destroy: () => (x.destroy(), y.destroy()) };
}

/** The largest row bucket timed for a product of this shape: y and x stay within `bytes` (64 MiB) and a binding. */
export function largestBucket(gpu: Gpu, n: number, k: number, bytes = 64 << 20): number {
  const cap = Math.min(bytes, gpu.maxBinding) / (4 * Math.max(n, k));
  return [...ROW_BUCKETS].reverse().find((b) => b <= cap) ?? 1;
}

/** Row buckets the shape is tuned at (those above largestBucket use its plan). */
export function bucketsFor(gpu: Gpu, n: number, k: number): number[] {
  const top = largestBucket(gpu, n, k);
  return ROW_BUCKETS.filter((b) => b <= top);
}

/** The plan of a tuned shape for m rows: its bucket's, or that of the largest bucket measured below it. */
export function lookup(plans: Record<string, MatmulPlan> | undefined, m: number): MatmulPlan | undefined {
  if (!plans) return undefined;
  const want = bucketOf(m);
  let best: MatmulPlan | undefined;
  for (const b of ROW_BUCKETS) {
    if (b > want) break;
    best = plans[String(b)] ?? best;
  }
  return best;
}
