// Weight matrices on the GPU and the matmul kernels that read them: storage (f32 or f16, split in
// row chunks that fit a binding), the planner that picks a kernel per shape, the kernels compiled
// per plan on first use, and the warm-up that compiles them before the first forward.
import { type Gpu, GpuError, Recorder, storageBuffer, writeBuffer } from "./gpu.ts";
import { float32ToHalf, halfToFloat32 } from "./checkpoint/dtype.ts";
import { checkCompiles, expandLoops, f32s, groups, type Kernel, kernelSource, kernelVariant } from "./kernel.ts";
import { bucketsFor, cachedPlans, candidatePlans, lookup, ROW_BUCKETS, saveTuned, scratchFor, timeRecorded, type TunedPlans, tuningEnabled } from "./matmul_tune.ts";

/**
 * How a weight matrix is stored: f32, or IEEE half (converted to f32 as the kernels load it;
 * activations and accumulation stay f32).
 */
export type WeightDtype = "f32" | "f16";
/**
 * How the kernels read f16 weights: "native" as f16 values (needs the adapter's shader-f16),
 * "packed" as u32 pairs unpacked with unpack2x16float (any adapter). Same bytes either way.
 */
export type F16Kernel = "native" | "packed";

/**
 * A (rows, cols) matrix split into row chunks that each fit one storage binding. f32 rows are
 * stored as they are (stride = cols); f16 rows are padded with zeros to a multiple of 8 halves.
 */
export interface Weight {
  rows: number;
  cols: number;
  dtype: WeightDtype;
  /** stored row length, in weights */
  stride: number;
  chunks: { buffer: GPUBuffer; rowStart: number; rows: number }[];
}

/**
 * Upload a row-major (rows, cols) matrix given as f32 values or as IEEE half bits; `dtype` is
 * how it is stored on the GPU (default: as given), converting if needed.
 */
export function uploadWeight(
  gpu: Gpu,
  data: Float32Array | Uint16Array,
  rows: number,
  cols: number,
  label: string,
  dtype: WeightDtype = data instanceof Uint16Array ? "f16" : "f32",
): Weight {
  if (data.length !== rows * cols) throw new Error(`${label}: expected ${rows}x${cols} values, got ${data.length}`);
  let src: Float32Array | Uint16Array = data;
  if (dtype === "f32" && data instanceof Uint16Array) src = halfToFloat32(data);
  if (dtype === "f16" && data instanceof Float32Array) src = float32ToHalf(data);
  const stride = dtype === "f16" ? Math.ceil(cols / 8) * 8 : cols;
  const bytesPerRow = stride * (dtype === "f16" ? 2 : 4);
  const rowsPerChunk = Math.max(1, Math.floor(gpu.maxBinding / bytesPerRow));
  const chunks: Weight["chunks"] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r0);
    // f16 rows are whole 16-byte elements; f32 rows are when the tiled kernel reads them (cols % 8 == 0)
    const buffer = storageBuffer(gpu, n * bytesPerRow, `${label}[${r0}:${r0 + n}]`);
    if (stride === cols) {
      writeBuffer(gpu, buffer, src.subarray(r0 * cols, (r0 + n) * cols));
    } else {
      const padded = new Uint16Array(n * stride);
      for (let r = 0; r < n; r++) padded.set(src.subarray((r0 + r) * cols, (r0 + r + 1) * cols) as Uint16Array, r * stride);
      writeBuffer(gpu, buffer, padded);
    }
    chunks.push({ buffer, rowStart: r0, rows: n });
  }
  return { rows, cols, dtype, stride, chunks };
}

export function destroyWeight(w: Weight): void {
  for (const c of w.chunks) c.buffer.destroy();
}

/** Bytes a weight occupies on the GPU. */
export function weightBytes(w: Weight): number {
  return w.rows * w.stride * (w.dtype === "f16" ? 2 : 4);
}

/** Bytes of the rows of one chunk, as its kernels read them. */
const chunkBytes = (w: Weight, rows: number) => rows * w.stride * (w.dtype === "f16" ? 2 : 4);

/**
 * A matmul kernel configuration: the generic kernel (matmul.wgsl, any k), the register-blocked
 * one (matmul_tiled.wgsl, k a multiple of 8) with R rows x 4*NC columns per invocation and WG
 * invocations per workgroup, or the split-k one (matmul_splitk.wgsl, k a multiple of 8, for GPUs)
 * with R rows x 4*NC columns per workgroup of WG invocations (a power of two) sharing k.
 */
export type MatmulPlan =
  | { kind: "generic" }
  | { kind: "tiled"; R: number; NC: number; WG: number }
  | { kind: "splitk"; R: number; NC: number; WG: number };

/**
 * The kernel for an (m x k) @ (n x k)^T product. Tuned on lavapipe, where a lane's load costs
 * tens of multiply-adds: one or two rows are bound by the weight loads, so a lane takes 8 weight
 * rows (more only lengthens the serial part); from 4 rows up a lane takes 16 weight rows and up
 * to 16 x rows, each loaded value then feeding 16 multiply-adds (larger blocks measured no
 * better and compile slower). Workgroups of 64 lanes, or of 16 where 64 would leave fewer
 * than 8 workgroups to share among the cores.
 */
export function matmulPlan(m: number, n: number, k: number): MatmulPlan {
  if (k % 8 !== 0) return { kind: "generic" };
  const R = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16;
  const NC = R <= 2 ? 2 : 4;
  const WG = Math.ceil(n / (4 * NC * 64)) * Math.ceil(m / R) >= 8 ? 64 : 16;
  return { kind: "tiled", R, NC, WG };
}

/** The kernel cache key of a plan for a weight flavour. */
function planKey(plan: MatmulPlan, flavour: string): string {
  return plan.kind === "generic" ? `matmul:${flavour}` : `matmul_${plan.kind}:${flavour}:${plan.R}:${plan.NC}:${plan.WG}`;
}

/** Every plan matmulPlan can pick for a (n x k) weight chunk, whatever the row count. */
function matmulPlansFor(n: number, k: number): MatmulPlan[] {
  if (k % 8 !== 0) return [{ kind: "generic" }];
  const plans = new Map<string, MatmulPlan>();
  for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]) {
    const p = matmulPlan(m, n, k);
    plans.set(JSON.stringify(p), p);
  }
  return [...plans.values()];
}

/** Expand a matmul_tiled.wgsl-style template (see its header) for one register block. */
function expandTemplate(src: string, c: { R: number; NC: number; WG: number }): string {
  return expandLoops(src, { r: c.R, j: c.NC }).replaceAll("{R}", String(c.R)).replaceAll("{NC}", String(c.NC))
    .replaceAll("{C}", String(4 * c.NC)).replaceAll("{WG}", String(c.WG));
}

type WeightFlavour = "f32" | "f16" | "f16packed";
const SOURCES = ["matmul", "matmul_tiled", "matmul_splitk", "matmul_weights_f32", "matmul_weights_f32_scalar", "matmul_weights_f16packed", "matmul_weights_f16"] as const;

/**
 * The f16 weight reader used unless asked otherwise: "packed". Both readers see the same bytes;
 * on lavapipe a 32-bit load of two packed halves costs what a 16-bit load of one costs, so
 * "packed" measured about 2x faster there (bench/), and on GPUs the two are alike. "native"
 * stays available (`f16Kernel: "native"`) where the adapter has shader-f16.
 */
function f16KernelDefault(_gpu: Gpu): F16Kernel {
  return "packed";
}

/**
 * The rows a matmul computes when they are not 0..m-1: the real positions of a padded batch, so
 * that padding costs no arithmetic. `buffer` holds `count` u32 row indices into x and y, which have
 * `of` rows.
 */
export interface RowMap {
  buffer: GPUBuffer;
  count: number;
  of: number;
}

/** The key of a weight shape among tuned plans: storage flavour, rows of the chunk, columns. */
export function shapeKey(flavour: string, n: number, k: number): string {
  return `${flavour}:${n}x${k}`;
}

/** A plan in a few words ("tiled 4x8, 64 lanes"). */
export function describePlan(p: MatmulPlan): string {
  return p.kind === "generic" ? "generic" : `${p.kind} ${p.R}x${4 * p.NC}, ${p.WG} lanes`;
}

/** The matmul kernels of one device and f16 reader. */
export class Matmul {
  private constructor(readonly gpu: Gpu, readonly f16Kernel: F16Kernel, private readonly sources: Map<string, string>) {}

  static async create(gpu: Gpu, opts: { f16Kernel?: F16Kernel } = {}): Promise<Matmul> {
    const f16Kernel = opts.f16Kernel ?? f16KernelDefault(gpu);
    if (f16Kernel === "native" && !gpu.hasF16) {
      throw new GpuError("f16Kernel native needs the adapter's shader-f16 feature, which it lacks: use packed");
    }
    const sources = new Map<string, string>();
    await Promise.all(SOURCES.map(async (n) => sources.set(n, await kernelSource(n))));
    const mm = new Matmul(gpu, f16Kernel, sources);
    // kernels are compiled on first use (per shape class); check the sources once here
    const flavours: WeightFlavour[] = gpu.hasF16 ? ["f32", "f16packed", "f16"] : ["f32", "f16packed"];
    for (const f of flavours) {
      for (const body of ["matmul", "matmul_tiled", "matmul_splitk"]) {
        await checkCompiles(gpu, mm.sourceFor(body, f, { R: 1, NC: 1, WG: 64 }), `kernels/${body}.wgsl (${f})`);
      }
    }
    return mm;
  }

  private sourceFor(body: string, flavour: WeightFlavour, c: { R: number; NC: number; WG: number }): string {
    // the generic kernel reads f32 weights one by one (their rows need not fill whole vec4)
    const weights = this.sources.get(`matmul_weights_${flavour}${flavour === "f32" && body === "matmul" ? "_scalar" : ""}`)!;
    let code = this.sources.get(body)!;
    if (body !== "matmul") code = expandTemplate(code, c);
    return (flavour === "f16" ? "enable f16;\n" : "") + weights + "\n" + code;
  }

  /** Plans measured on this adapter (engine/matmul_tune.ts), by shape key; empty = matmulPlan's everywhere. */
  private tuned: TunedPlans = {};

  /** The plan for m rows of x times a weight chunk of n rows: the tuned one where there is one, else matmulPlan's. */
  plan(m: number, n: number, w: Weight): MatmulPlan {
    return lookup(this.tuned[shapeKey(this.flavour(w), n, w.cols)], m) ?? matmulPlan(m, n, w.cols);
  }

  /** The tuned plans of a weight chunk of n rows by row bucket (empty when its plans are matmulPlan's). */
  tunedFor(w: Weight, n = w.chunks[0].rows): Record<string, MatmulPlan> {
    return { ...this.tuned[shapeKey(this.flavour(w), n, w.cols)] };
  }

  /**
   * Choose the plans of these weights' shapes on this adapter (engine/matmul_tune.ts): from the
   * cache, or by timing the candidates of each row bucket once and caching the fastest. Nothing is
   * done where tuning is off (CPU adapters unless `force`). Returns how many shapes were measured
   * and how many came from the cache.
   */
  async tune(weights: Weight[], opts: { force?: boolean; log?: (line: string) => void; cachePath?: string } = {}): Promise<{ measured: number; cached: number }> {
    const gpu = this.gpu;
    if (!opts.force && !tuningEnabled(gpu)) return { measured: 0, cached: 0 };
    const cache = await cachedPlans(gpu, opts.cachePath);
    const fresh: TunedPlans = {};
    let measured = 0, cached = 0;
    const maxWg = gpu.limits.maxComputeInvocationsPerWorkgroup;
    for (const w of weights) {
      if (w.cols % 8 !== 0) continue;
      for (const c of w.chunks) {
        const key = shapeKey(this.flavour(w), c.rows, w.cols);
        if (this.tuned[key] || fresh[key]) continue;
        if (cache[key]) {
          this.tuned[key] = cache[key];
          cached++;
          continue;
        }
        const one: Weight = { ...w, rows: c.rows, chunks: [{ ...c, rowStart: 0 }] };
        const buckets = bucketsFor(gpu, c.rows, w.cols);
        const scratch = scratchFor(gpu, buckets[buckets.length - 1], w.cols, c.rows);
        const chosen: Record<string, MatmulPlan> = {};
        try {
          for (const m of buckets) {
            let best: { plan: MatmulPlan; s: number } | undefined;
            for (const plan of candidatePlans(m, matmulPlan(m, c.rows, w.cols))) {
              if (plan.kind !== "generic" && plan.WG > maxWg) continue;
              try {
                const s = await timeRecorded(gpu, (rec) => this.record(rec, scratch.x, one, scratch.y, m, { plan }));
                if (!best || s < best.s) best = { plan, s };
              } catch (e) {
                // a candidate this adapter refuses is left out (the default is always there)
                opts.log?.(`matmul plan ${describePlan(plan)} for ${key}: ${(e as Error).message.split("\n")[0]}`);
              }
            }
            chosen[String(m)] = best!.plan;
          }
        } finally {
          scratch.destroy();
        }
        this.tuned[key] = fresh[key] = chosen;
        measured++;
        opts.log?.(`matmul plans for ${key}: ${Object.entries(chosen).map(([m, p]) => `${m} rows ${describePlan(p)}`).join(", ")}`);
      }
    }
    if (measured) await saveTuned(gpu, fresh, opts.cachePath);
    return { measured, cached };
  }

  /** Every plan this device may pick for a weight chunk of n rows, whatever the row count. */
  plansFor(n: number, w: Weight): MatmulPlan[] {
    if (w.cols % 8 !== 0) return [{ kind: "generic" }];
    const plans = new Map<string, MatmulPlan>();
    for (const m of [...ROW_BUCKETS, 512, 1024]) {
      const p = this.plan(m, n, w);
      plans.set(JSON.stringify(p), p);
    }
    // untuned shapes may also get any plan matmulPlan picks (tuned ones only their measured plans)
    if (!this.tuned[shapeKey(this.flavour(w), n, w.cols)]) for (const p of matmulPlansFor(n, w.cols)) plans.set(JSON.stringify(p), p);
    return [...plans.values()];
  }

  private flavour(w: Weight): WeightFlavour {
    return w.dtype === "f32" ? "f32" : this.f16Kernel === "native" ? "f16" : "f16packed";
  }

  /** The compiled kernel of a plan for weights like `w` (compiled on first use, then cached per device). */
  kernel(w: Weight, plan: MatmulPlan): Kernel {
    const flavour = this.flavour(w);
    return kernelVariant(this.gpu, planKey(plan, flavour), () => plan.kind === "generic" ? this.sourceFor("matmul", flavour, { R: 1, NC: 1, WG: 64 }) : this.sourceFor(`matmul_${plan.kind}`, flavour, plan));
  }

  /**
   * y[:, yCol : yCol + w.rows] (+)= x (m, w.cols) @ w^T, one dispatch per weight chunk; the
   * kernel is chosen by shape (matmulPlan) unless `plan` is given.
   */
  record(
    rec: Recorder,
    x: GPUBuffer,
    w: Weight,
    y: GPUBuffer,
    m: number,
    opts: { accumulate?: boolean; yStride?: number; yCol?: number; plan?: MatmulPlan; rows?: RowMap } = {},
  ): void {
    if (m === 0) return;
    const yStride = opts.yStride ?? w.rows;
    // with a row map, m rows of x and y are computed, scattered among its `of` rows
    const rows = opts.rows;
    if (rows && rows.count !== m) throw new Error(`matmul: ${m} rows computed but the row map lists ${rows.count}`);
    const span = rows ? rows.of : m;
    const x4 = f32s(span * w.cols), y4 = f32s(span * yStride);
    const map = rows ? [rows.buffer, f32s(m)] as const : this.placeholder();
    const has_rows = rows ? 1 : 0;
    for (const c of w.chunks) {
      const plan = opts.plan ?? this.plan(m, c.rows, w);
      const yCol = (opts.yCol ?? 0) + c.rowStart;
      const accumulate = opts.accumulate ? 1 : 0;
      const buffers = { x: [x, x4], w: [c.buffer, chunkBytes(w, c.rows)], y: [y, y4], rows: map } as const;
      if (plan.kind === "generic") {
        this.kernel(w, plan).dispatch(rec, { m, n: c.rows, k: w.cols, w_stride: w.stride, y_stride: yStride, y_col: yCol, accumulate, has_rows }, { ...buffers }, groups(m * c.rows));
      } else {
        this.kernel(w, plan).dispatch(
          rec,
          { m, n: c.rows, kb: w.cols / 8, w_stride: w.stride / 8, y_stride: yStride, y_col: yCol, accumulate, has_rows },
          { ...buffers },
          plan.kind === "tiled" ? [Math.ceil(c.rows / (4 * plan.NC * plan.WG)), Math.ceil(m / plan.R), 1] : [Math.ceil(c.rows / (4 * plan.NC)), Math.ceil(m / plan.R), 1],
        );
      }
    }
  }

  private placeholderBuf?: GPUBuffer;
  /** A 16-byte buffer bound as the row map when there is none (has_rows = 0: never read). */
  private placeholder(): readonly [GPUBuffer, number] {
    return [this.placeholderBuf ??= storageBuffer(this.gpu, 16, "matmul_no_rows"), 0];
  }

  /**
   * Compile every kernel the planner may pick for these weights, by running each once on a few
   * rows, with `more` recording any other template kernels (scratch: a zeroed buffer of at least
   * 16 x the widest weight's columns floats): a driver may compile on first use (lavapipe: up to a
   * second per kernel), which would otherwise land in the middle of the first forwards of each batch
   * size. A kernel the device rejects is an error here, not a silently dropped submission later.
   */
  async warmUp(weights: Weight[], more?: (rec: Recorder, scratch: GPUBuffer, out: GPUBuffer) => void): Promise<void> {
    const gpu = this.gpu;
    // the plans of this adapter first (a GPU's measured or cached; a CPU keeps matmulPlan's)
    await this.tune(weights);
    const seen = new Set<string>();
    const jobs: { w: Weight; plan: MatmulPlan }[] = [];
    for (const w of weights) {
      for (const c of w.chunks) {
        for (const plan of this.plansFor(c.rows, w)) {
          const key = `${this.flavour(w)}:${JSON.stringify(plan)}`;
          if (!seen.has(key)) {
            seen.add(key);
            jobs.push({ w: { ...w, rows: Math.min(w.rows, 64), chunks: [{ ...c, rows: Math.min(c.rows, 64) }] }, plan });
          }
        }
      }
    }
    gpu.device.pushErrorScope("validation");
    gpu.device.pushErrorScope("internal");
    const kMax = Math.max(8, ...weights.map((w) => w.cols));
    const x = storageBuffer(gpu, 16 * kMax * 4, "warm_x");
    const y = storageBuffer(gpu, 16 * 64 * 4, "warm_y");
    const rec = new Recorder(gpu);
    for (const { w, plan } of jobs) this.record(rec, x, w, y, plan.kind === "generic" ? 1 : plan.R, { plan });
    more?.(rec, x, y);
    rec.submit();
    await gpu.device.queue.onSubmittedWorkDone();
    x.destroy();
    y.destroy();
    const errors = [await gpu.device.popErrorScope(), await gpu.device.popErrorScope()].filter((e) => e);
    if (errors.length) throw new GpuError(`a kernel failed to build: ${errors[0]!.message.split("\n").slice(0, 8).join(" ")}`);
  }
}
