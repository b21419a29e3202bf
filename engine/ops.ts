// One method per WGSL kernel: argument shapes in, dispatch recorded. The model composes these.
import { type Gpu, GpuError, kernel, Recorder, storageBuffer, writeBuffer } from "./gpu.ts";
import { float32ToHalf, halfToFloat32 } from "./checkpoint/dtype.ts";

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

/**
 * A matmul kernel configuration: the generic kernel (matmul.wgsl, any k), or the register-blocked
 * one (matmul_tiled.wgsl, k a multiple of 8) with R rows x 4*NC columns per invocation and WG
 * invocations per workgroup.
 */
export type MatmulPlan = { kind: "generic" } | { kind: "tiled"; R: number; NC: number; WG: number };

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

/** Every plan matmulPlan can pick for a (n x k) weight chunk, whatever the row count. */
export function matmulPlansFor(n: number, k: number): MatmulPlan[] {
  if (k % 8 !== 0) return [{ kind: "generic" }];
  const plans = new Map<string, MatmulPlan>();
  for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]) {
    const p = matmulPlan(m, n, k);
    plans.set(JSON.stringify(p), p);
  }
  return [...plans.values()];
}

/**
 * Unroll a kernel template: a line mentioning {v} for a loop variable v of `counts` is repeated
 * for v = 0..counts[v]-1 (a line with several: every combination, first variable outermost).
 */
export function expandLoops(src: string, counts: Record<string, number>): string {
  const out: string[] = [];
  for (const line of src.split("\n")) {
    let lines = [line];
    for (const [v, n] of Object.entries(counts)) {
      const tok = `{${v}}`;
      if (!line.includes(tok)) continue;
      lines = lines.flatMap((l) => Array.from({ length: n }, (_, i) => l.replaceAll(tok, String(i))));
    }
    out.push(...lines);
  }
  return out.join("\n");
}

/** Expand a matmul_tiled.wgsl-style template (see its header) for one register block. */
export function expandTemplate(src: string, c: { R: number; NC: number; WG: number }): string {
  return expandLoops(src, { r: c.R, j: c.NC }).replaceAll("{R}", String(c.R)).replaceAll("{NC}", String(c.NC))
    .replaceAll("{C}", String(4 * c.NC)).replaceAll("{WG}", String(c.WG));
}

const sourceCache = new Map<string, Promise<string>>();
function kernelSource(name: string): Promise<string> {
  let s = sourceCache.get(name);
  if (!s) sourceCache.set(name, s = Deno.readTextFile(new URL(`../kernels/${name}.wgsl`, import.meta.url)));
  return s;
}

type WeightFlavour = "f32" | "f16" | "f16packed";
const matmulCache = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

const KERNELS = [
  "embedding",
  "embedding_f16",
  "rmsnorm",
  "conv1d_silu",
  "dt_softplus",
  "ssd_scan",
  "ssd_cb",
  "ssd_attention_matrix",
  "ssd_attention_apply",
  "gated_rmsnorm",
  "gather_rows",
  "row_stats",
  "rows_conv_silu",
  "rows_ssd_attention",
  "rows_ssd_attention_apply",
] as const;
type KernelName = typeof KERNELS[number];

const WG = 64; // workgroup size of the element-wise kernels
const groups = (n: number) => Math.ceil(n / WG);

/** Shapes of one SSD layer call. */
export interface SsdShape {
  batch: number;
  seq: number; // padded length
  nheads: number;
  headdim: number;
  dState: number;
  ngroups: number;
  convDim: number;
  dInner: number;
}

export interface OpsOptions {
  /** how f16 weights are read (default: "packed" — see f16KernelDefault) */
  f16Kernel?: F16Kernel;
}

/**
 * The f16 weight reader used unless asked otherwise: "packed". Both readers see the same bytes;
 * on lavapipe a 32-bit load of two packed halves costs what a 16-bit load of one costs, so
 * "packed" measured about 2x faster there (bench/), and on GPUs the two are alike. "native"
 * stays available (`f16Kernel: "native"`) where the adapter has shader-f16.
 */
export function f16KernelDefault(_gpu: Gpu): F16Kernel {
  return "packed";
}

export class Ops {
  readonly f16Kernel: F16Kernel;
  private constructor(
    readonly gpu: Gpu,
    private readonly pipes: Map<KernelName, GPUComputePipeline>,
    private readonly sources: Map<string, string>,
    opts: OpsOptions,
  ) {
    this.f16Kernel = opts.f16Kernel ?? f16KernelDefault(gpu);
    if (this.f16Kernel === "native" && !gpu.hasF16) {
      throw new GpuError("f16Kernel native needs the adapter's shader-f16 feature, which it lacks: use packed");
    }
  }

  static async create(gpu: Gpu, opts: OpsOptions = {}): Promise<Ops> {
    const pipes = new Map<KernelName, GPUComputePipeline>();
    await Promise.all(KERNELS.map(async (k) => pipes.set(k, await kernel(gpu, k))));
    const sources = new Map<string, string>();
    const names = ["ssd_scan_quad", "matmul", "matmul_tiled", "matmul_weights_f32", "matmul_weights_f32_scalar", "matmul_weights_f16packed", "matmul_weights_f16"];
    await Promise.all(names.map(async (n) => sources.set(n, await kernelSource(n))));
    const ops = new Ops(gpu, pipes, sources, opts);
    // matmul pipelines are compiled on first use (per shape class); check the sources once here
    const flavours: WeightFlavour[] = gpu.hasF16 ? ["f32", "f16packed", "f16"] : ["f32", "f16packed"];
    for (const f of flavours) {
      for (const body of ["matmul", "matmul_tiled"]) {
        const code = ops.matmulSourceFor(body, f, { R: 1, NC: 1, WG: 64 });
        const info = await gpu.device.createShaderModule({ code }).getCompilationInfo();
        const errors = info.messages.filter((m) => m.type === "error");
        if (errors.length) throw new GpuError(`kernels/${body}.wgsl (${f}): ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")}`);
      }
    }
    return ops;
  }

  private p(name: KernelName) {
    return this.pipes.get(name)!;
  }

  private matmulSourceFor(body: string, flavour: WeightFlavour, c: { R: number; NC: number; WG: number }): string {
    // the generic kernel reads f32 weights one by one (their rows need not fill whole vec4)
    const weights = this.sources.get(`matmul_weights_${flavour}${flavour === "f32" && body === "matmul" ? "_scalar" : ""}`)!;
    let code = this.sources.get(body)!;
    if (body === "matmul_tiled") code = expandTemplate(code, c);
    return (flavour === "f16" ? "enable f16;\n" : "") + weights + "\n" + code;
  }

  private flavour(w: Weight): WeightFlavour {
    return w.dtype === "f32" ? "f32" : this.f16Kernel === "native" ? "f16" : "f16packed";
  }

  /** The compiled kernel of a plan for weights like `w` (compiled on first use, then cached per device). */
  matmulPipeline(w: Weight, plan: MatmulPlan): GPUComputePipeline {
    const flavour = this.flavour(w);
    const key = plan.kind === "generic" ? `generic:${flavour}` : `tiled:${flavour}:${plan.R}:${plan.NC}:${plan.WG}`;
    let cache = matmulCache.get(this.gpu.device);
    if (!cache) matmulCache.set(this.gpu.device, cache = new Map());
    let pipe = cache.get(key);
    if (!pipe) {
      const code = plan.kind === "generic" ? this.matmulSourceFor("matmul", flavour, { R: 1, NC: 1, WG: 64 }) : this.matmulSourceFor("matmul_tiled", flavour, plan);
      const module = this.gpu.device.createShaderModule({ code, label: key });
      pipe = this.gpu.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" }, label: key });
      cache.set(key, pipe);
    }
    return pipe;
  }

  /**
   * Compile every matmul kernel the planner may pick for these weights (and the scan kernel of
   * this d_state), by running each once on a few rows: a driver may compile on first use
   * (lavapipe: up to a second per kernel), which would otherwise land in the middle of the first
   * forwards of each batch size. A kernel the device rejects is an error here, not a silently
   * dropped submission later.
   */
  async warmUp(weights: Weight[], ssd?: { headdim: number; dState: number; dInner: number; convDim: number }): Promise<void> {
    const gpu = this.gpu;
    const seen = new Set<string>();
    const jobs: { w: Weight; plan: MatmulPlan }[] = [];
    for (const w of weights) {
      for (const c of w.chunks) {
        for (const plan of matmulPlansFor(c.rows, w.cols)) {
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
    for (const { w, plan } of jobs) this.matmul(rec, x, w, y, plan.kind === "tiled" ? plan.R : 1, { plan });
    if (ssd && Ops.scanQuad(ssd)) {
      // one prompt of length 0 (lengths read from the zeros of x): nothing runs, the kernel is built
      const s: SsdShape = { batch: 1, seq: 1, nheads: 1, headdim: ssd.headdim, dState: ssd.dState, ngroups: 1, convDim: ssd.convDim, dInner: ssd.dInner };
      this.ssdScan(rec, x, x, x, x, x, y, s);
    }
    rec.submit();
    await gpu.device.queue.onSubmittedWorkDone();
    x.destroy();
    y.destroy();
    const errors = [await gpu.device.popErrorScope(), await gpu.device.popErrorScope()].filter((e) => e);
    if (errors.length) throw new GpuError(`a kernel failed to build: ${errors[0]!.message.split("\n").slice(0, 8).join(" ")}`);
  }

  /** out (n, d_model) = table[ids] */
  embed(rec: Recorder, ids: GPUBuffer, n: number, table: Weight, out: GPUBuffer) {
    for (const c of table.chunks) {
      if (table.dtype === "f16") {
        rec.dispatch(
          this.p("embedding_f16"),
          [{ u: n }, { u: table.cols }, { u: c.rowStart }, { u: c.rows }, { u: table.stride }, { u: 0 }, { u: 0 }, { u: 0 }],
          [ids, c.buffer, out],
          groups(n * table.cols),
        );
      } else {
        rec.dispatch(this.p("embedding"), [{ u: n }, { u: table.cols }, { u: c.rowStart }, { u: c.rows }], [ids, c.buffer, out], groups(n * table.cols));
      }
    }
  }

  /** out (rows, dim) = rmsnorm(x) * weight */
  rmsnorm(rec: Recorder, x: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, rows: number, dim: number, eps: number) {
    rec.dispatch(this.p("rmsnorm"), [{ u: rows }, { u: dim }, { f: eps }, { u: 0 }], [x, weight, out], rows);
  }

  /**
   * y[:, yCol : yCol + w.rows] (+)= x (m, w.cols) @ w^T, one dispatch per weight chunk; the
   * kernel is chosen by shape (matmulPlan) unless `plan` is given.
   */
  matmul(
    rec: Recorder,
    x: GPUBuffer,
    w: Weight,
    y: GPUBuffer,
    m: number,
    opts: { accumulate?: boolean; yStride?: number; yCol?: number; plan?: MatmulPlan } = {},
  ) {
    if (m === 0) return;
    const yStride = opts.yStride ?? w.rows;
    for (const c of w.chunks) {
      const plan = opts.plan ?? matmulPlan(m, c.rows, w.cols);
      const pipe = this.matmulPipeline(w, plan);
      const yCol = (opts.yCol ?? 0) + c.rowStart;
      const acc = opts.accumulate ? 1 : 0;
      if (plan.kind === "generic") {
        rec.dispatch(
          pipe,
          [{ u: m }, { u: c.rows }, { u: w.cols }, { u: w.stride }, { u: yStride }, { u: yCol }, { u: acc }, { u: 0 }],
          [x, c.buffer, y],
          groups(m * c.rows),
        );
      } else {
        rec.dispatch(
          pipe,
          [{ u: m }, { u: c.rows }, { u: w.cols / 8 }, { u: w.stride / 8 }, { u: yStride }, { u: yCol }, { u: acc }, { u: 0 }],
          [x, c.buffer, y],
          [Math.ceil(c.rows / (4 * plan.NC * plan.WG)), Math.ceil(m / plan.R), 1],
        );
      }
    }
  }

  /**
   * out (rows, convDim) = silu(causal_conv1d(zxbcdt[:, inOffset : inOffset + convDim])); with
   * `tapMask` (rows) u32, bit `back` of a row removes its tap from position t - back.
   */
  conv1dSilu(
    rec: Recorder,
    zxbcdt: GPUBuffer,
    weight: GPUBuffer,
    bias: GPUBuffer,
    out: GPUBuffer,
    s: { rows: number; seq: number; convDim: number; dConv: number; inStride: number; inOffset: number },
    tapMask: GPUBuffer | null = null,
  ) {
    rec.dispatch(
      this.p("conv1d_silu"),
      [{ u: s.rows }, { u: s.seq }, { u: s.convDim }, { u: s.dConv }, { u: s.inStride }, { u: s.inOffset }, { u: tapMask ? 1 : 0 }, { u: 0 }],
      [zxbcdt, weight, bias, tapMask ?? this.placeholder(), out],
      groups(s.rows * s.convDim),
    );
  }

  /** dt (rows, nheads) = softplus(zxbcdt[:, inOffset : inOffset + nheads] + dtBias) */
  dtSoftplus(rec: Recorder, zxbcdt: GPUBuffer, dtBias: GPUBuffer, dt: GPUBuffer, s: { rows: number; nheads: number; inStride: number; inOffset: number }) {
    rec.dispatch(this.p("dt_softplus"), [{ u: s.rows }, { u: s.nheads }, { u: s.inStride }, { u: s.inOffset }], [zxbcdt, dtBias, dt], groups(s.rows * s.nheads));
  }

  /** The 4-channel scan kernel for this d_state (ssd_scan_quad.wgsl), compiled on first use. */
  private scanQuadPipeline(dState: number): GPUComputePipeline {
    const key = `ssd_scan_quad:${dState}`;
    let cache = matmulCache.get(this.gpu.device);
    if (!cache) matmulCache.set(this.gpu.device, cache = new Map());
    let pipe = cache.get(key);
    if (!pipe) {
      const code = expandLoops(this.sources.get("ssd_scan_quad")!, { q: dState / 4 }).replaceAll("{Q}", String(dState / 4));
      const module = this.gpu.device.createShaderModule({ code, label: key });
      pipe = this.gpu.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" }, label: key });
      cache.set(key, pipe);
    }
    return pipe;
  }

  /** Whether ssdScan runs the 4-channel kernel for this shape (else the one-channel ssd_scan.wgsl). */
  static scanQuad(s: { headdim: number; dState: number; dInner: number; convDim: number }): boolean {
    return s.headdim % 4 === 0 && s.dState % 4 === 0 && s.dInner % 4 === 0 && s.convDim % 4 === 0 && s.dState <= 256;
  }

  /** y (batch*seq, dInner): the recurrent SSD with the D skip */
  ssdScan(rec: Recorder, xbc: GPUBuffer, dt: GPUBuffer, a: GPUBuffer, d: GPUBuffer, lengths: GPUBuffer, y: GPUBuffer, s: SsdShape) {
    const params = [{ u: s.batch }, { u: s.seq }, { u: s.nheads }, { u: s.headdim }, { u: s.dState }, { u: s.ngroups }, { u: s.convDim }, { u: s.dInner }];
    if (Ops.scanQuad(s)) {
      rec.dispatch(this.scanQuadPipeline(s.dState), params, [xbc, dt, a, d, lengths, y], groups((s.batch * s.dInner) / 4));
      return;
    }
    if (s.dState > 256) throw new Error(`d_state ${s.dState} exceeds the scan kernel's 256`);
    rec.dispatch(
      this.p("ssd_scan"),
      [{ u: s.batch }, { u: s.seq }, { u: s.nheads }, { u: s.headdim }, { u: s.dState }, { u: s.ngroups }, { u: s.convDim }, { u: s.dInner }],
      [xbc, dt, a, d, lengths, y],
      groups(s.batch * s.dInner),
    );
  }

  /** gram (batch, ngroups, seq, seq) = C_t . B_s, causal */
  ssdGram(rec: Recorder, xbc: GPUBuffer, gram: GPUBuffer, s: SsdShape) {
    rec.dispatch(
      this.p("ssd_cb"),
      [{ u: s.batch }, { u: s.seq }, { u: s.ngroups }, { u: s.dState }, { u: s.convDim }, { u: s.dInner }, { u: 0 }, { u: 0 }],
      [xbc, gram],
      groups(s.batch * s.ngroups * s.seq * s.seq),
    );
  }

  /**
   * m (batch, nheads, seq, seq): the attention matrix of every head; with a knockout, mask
   * (batch, seq, seq) u32 names for each blocked edge a row (k - 1) of headSets (nSets, nheads) u32,
   * the heads in which it is blocked.
   */
  ssdAttentionMatrix(
    rec: Recorder,
    gram: GPUBuffer,
    dt: GPUBuffer,
    a: GPUBuffer,
    knockout: { mask: GPUBuffer; headSets: GPUBuffer; nSets: number } | null,
    m: GPUBuffer,
    s: SsdShape,
  ) {
    rec.dispatch(
      this.p("ssd_attention_matrix"),
      [{ u: s.batch }, { u: s.seq }, { u: s.nheads }, { u: s.ngroups }, { u: knockout ? 1 : 0 }, { u: knockout?.nSets ?? 0 }, { u: 0 }, { u: 0 }],
      [gram, dt, a, knockout?.mask ?? this.placeholder(), knockout?.headSets ?? this.placeholder(), m],
      groups(s.batch * s.nheads * s.seq),
    );
  }

  /** y (batch*seq, dInner) = M (dt x) + D x */
  ssdAttentionApply(rec: Recorder, m: GPUBuffer, xbc: GPUBuffer, dt: GPUBuffer, d: GPUBuffer, y: GPUBuffer, s: SsdShape) {
    rec.dispatch(
      this.p("ssd_attention_apply"),
      [{ u: s.batch }, { u: s.seq }, { u: s.nheads }, { u: s.headdim }, { u: s.convDim }, { u: s.dInner }, { u: 0 }, { u: 0 }],
      [m, xbc, dt, d, y],
      groups(s.batch * s.seq * s.dInner),
    );
  }

  /** out (rows, dInner) = rmsnorm_group(y * silu(z)) * weight */
  gatedRmsnorm(rec: Recorder, y: GPUBuffer, zxbcdt: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, s: { rows: number; dInner: number; ngroups: number; zStride: number; eps: number }) {
    rec.dispatch(
      this.p("gated_rmsnorm"),
      [{ u: s.rows }, { u: s.dInner }, { u: s.ngroups }, { u: s.zStride }, { f: s.eps }, { u: 0 }, { u: 0 }, { u: 0 }],
      [y, zxbcdt, weight, out],
      s.rows * s.ngroups,
    );
  }

  /** out (nOut, dim) = x[rows] */
  gatherRows(rec: Recorder, rows: GPUBuffer, x: GPUBuffer, out: GPUBuffer, nOut: number, dim: number) {
    rec.dispatch(this.p("gather_rows"), [{ u: nOut }, { u: dim }, { u: 0 }, { u: 0 }], [rows, x, out], groups(nOut * dim));
  }

  /** stats (rows, 4) = (max, logsumexp, argmax, logits[target]) over ids < vocab */
  rowStats(rec: Recorder, logits: GPUBuffer, targets: GPUBuffer, stats: GPUBuffer, s: { rows: number; vocab: number; stride: number }) {
    rec.dispatch(this.p("row_stats"), [{ u: s.rows }, { u: s.vocab }, { u: s.stride }, { u: 0 }], [logits, targets, stats], s.rows);
  }

  /** Knockout fast path: out (n, convDim), conv1d + SiLU of the recomputed rows (kernels/rows_conv_silu.wgsl) */
  rowsConv1dSilu(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; zxbcdt: GPUBuffer; baseZxbcdt: GPUBuffer; weight: GPUBuffer; bias: GPUBuffer; out: GPUBuffer },
    s: { n: number; convDim: number; dConv: number; inStride: number; inOffset: number; layer: number },
  ) {
    rec.dispatch(
      this.p("rows_conv_silu"),
      [{ u: s.n }, { u: s.convDim }, { u: s.dConv }, { u: s.inStride }, { u: s.inOffset }, { u: s.layer }, { u: 0 }, { u: 0 }],
      [b.rowsMeta, b.zxbcdt, b.baseZxbcdt, b.weight, b.bias, b.out],
      groups(s.n * s.convDim),
    );
  }

  /** Knockout fast path: mRows (n, nheads, maxLen), each recomputed row of every head's attention matrix, masked */
  rowsSsdAttention(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; colmask: GPUBuffer; headSel: GPUBuffer; xbc: GPUBuffer; dt: GPUBuffer; baseXbc: GPUBuffer; baseDt: GPUBuffer; a: GPUBuffer; mRows: GPUBuffer },
    s: { n: number; nheads: number; ngroups: number; dState: number; convDim: number; dInner: number; maxLen: number; layer: number; nSel: number },
  ) {
    rec.dispatch(
      this.p("rows_ssd_attention"),
      [
        { u: s.n },
        { u: s.nheads },
        { u: s.ngroups },
        { u: s.dState },
        { u: s.convDim },
        { u: s.dInner },
        { u: s.maxLen },
        { u: s.layer },
        { u: s.nSel },
        { u: 0 },
        { u: 0 },
        { u: 0 },
      ],
      [b.rowsMeta, b.colmask, b.headSel, b.xbc, b.dt, b.baseXbc, b.baseDt, b.a, b.mRows],
      groups(s.n * s.nheads),
    );
  }

  /** Knockout fast path: y (n, dInner) = the recomputed attention rows applied + D x */
  rowsSsdAttentionApply(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; mRows: GPUBuffer; xbc: GPUBuffer; dt: GPUBuffer; baseXbc: GPUBuffer; baseDt: GPUBuffer; d: GPUBuffer; y: GPUBuffer },
    s: { n: number; nheads: number; headdim: number; convDim: number; dInner: number; maxLen: number },
  ) {
    rec.dispatch(
      this.p("rows_ssd_attention_apply"),
      [{ u: s.n }, { u: s.nheads }, { u: s.headdim }, { u: s.convDim }, { u: s.dInner }, { u: s.maxLen }, { u: 0 }, { u: 0 }],
      [b.rowsMeta, b.mRows, b.xbc, b.dt, b.baseXbc, b.baseDt, b.d, b.y],
      groups(s.n * s.dInner),
    );
  }

  private placeholderBuf?: GPUBuffer;
  private placeholder(): GPUBuffer {
    return this.placeholderBuf ??= storageBuffer(this.gpu, 16, "placeholder");
  }
}
