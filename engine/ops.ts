// One method per WGSL kernel: argument shapes in, dispatch recorded. The model composes these.
import { type Gpu, kernel, Recorder, storageBuffer, writeBuffer } from "./gpu.ts";

/** A (rows, cols) f32 matrix split into row chunks that each fit one storage binding. */
export interface Weight {
  rows: number;
  cols: number;
  chunks: { buffer: GPUBuffer; rowStart: number; rows: number }[];
}

export function uploadWeight(gpu: Gpu, data: Float32Array, rows: number, cols: number, label: string): Weight {
  if (data.length !== rows * cols) throw new Error(`${label}: expected ${rows}x${cols} values, got ${data.length}`);
  const rowsPerChunk = Math.max(1, Math.floor(gpu.maxBinding / (cols * 4)));
  const chunks: Weight["chunks"] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r0);
    const buffer = storageBuffer(gpu, n * cols * 4, `${label}[${r0}:${r0 + n}]`);
    writeBuffer(gpu, buffer, data.subarray(r0 * cols, (r0 + n) * cols));
    chunks.push({ buffer, rowStart: r0, rows: n });
  }
  return { rows, cols, chunks };
}

export function destroyWeight(w: Weight): void {
  for (const c of w.chunks) c.buffer.destroy();
}

const KERNELS = [
  "embedding",
  "rmsnorm",
  "matmul",
  "conv1d_silu",
  "dt_softplus",
  "ssd_scan",
  "ssd_cb",
  "ssd_attention_matrix",
  "ssd_attention_apply",
  "gated_rmsnorm",
  "gather_rows",
  "row_stats",
  "lastrow_conv_silu",
  "lastrow_attention",
  "lastrow_attention_apply",
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

export class Ops {
  private constructor(readonly gpu: Gpu, private readonly pipes: Map<KernelName, GPUComputePipeline>) {}

  static async create(gpu: Gpu): Promise<Ops> {
    const pipes = new Map<KernelName, GPUComputePipeline>();
    await Promise.all(KERNELS.map(async (k) => pipes.set(k, await kernel(gpu, k))));
    return new Ops(gpu, pipes);
  }

  private p(name: KernelName) {
    return this.pipes.get(name)!;
  }

  /** out (n, d_model) = table[ids] */
  embed(rec: Recorder, ids: GPUBuffer, n: number, table: Weight, out: GPUBuffer) {
    for (const c of table.chunks) {
      rec.dispatch(this.p("embedding"), [{ u: n }, { u: table.cols }, { u: c.rowStart }, { u: c.rows }], [ids, c.buffer, out], groups(n * table.cols));
    }
  }

  /** out (rows, dim) = rmsnorm(x) * weight */
  rmsnorm(rec: Recorder, x: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, rows: number, dim: number, eps: number) {
    rec.dispatch(this.p("rmsnorm"), [{ u: rows }, { u: dim }, { f: eps }, { u: 0 }], [x, weight, out], rows);
  }

  /** y[:, yCol : yCol + w.rows] (+)= x (m, w.cols) @ w^T */
  matmul(rec: Recorder, x: GPUBuffer, w: Weight, y: GPUBuffer, m: number, opts: { accumulate?: boolean; yStride?: number; yCol?: number } = {}) {
    const yStride = opts.yStride ?? w.rows;
    for (const c of w.chunks) {
      rec.dispatch(
        this.p("matmul"),
        [{ u: m }, { u: c.rows }, { u: w.cols }, { u: yStride }, { u: (opts.yCol ?? 0) + c.rowStart }, { u: opts.accumulate ? 1 : 0 }, { u: 0 }, { u: 0 }],
        [x, c.buffer, y],
        [Math.ceil(c.rows / 64), Math.ceil(m / 64), 1],
      );
    }
  }

  /** out (rows, convDim) = silu(causal_conv1d(zxbcdt[:, inOffset : inOffset + convDim])) */
  conv1dSilu(rec: Recorder, zxbcdt: GPUBuffer, weight: GPUBuffer, bias: GPUBuffer, out: GPUBuffer, s: { rows: number; seq: number; convDim: number; dConv: number; inStride: number; inOffset: number }) {
    rec.dispatch(
      this.p("conv1d_silu"),
      [{ u: s.rows }, { u: s.seq }, { u: s.convDim }, { u: s.dConv }, { u: s.inStride }, { u: s.inOffset }, { u: 0 }, { u: 0 }],
      [zxbcdt, weight, bias, out],
      groups(s.rows * s.convDim),
    );
  }

  /** dt (rows, nheads) = softplus(zxbcdt[:, inOffset : inOffset + nheads] + dtBias) */
  dtSoftplus(rec: Recorder, zxbcdt: GPUBuffer, dtBias: GPUBuffer, dt: GPUBuffer, s: { rows: number; nheads: number; inStride: number; inOffset: number }) {
    rec.dispatch(this.p("dt_softplus"), [{ u: s.rows }, { u: s.nheads }, { u: s.inStride }, { u: s.inOffset }], [zxbcdt, dtBias, dt], groups(s.rows * s.nheads));
  }

  /** y (batch*seq, dInner): the recurrent SSD with the D skip */
  ssdScan(rec: Recorder, xbc: GPUBuffer, dt: GPUBuffer, a: GPUBuffer, d: GPUBuffer, lengths: GPUBuffer, y: GPUBuffer, s: SsdShape) {
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

  /** m (batch, nheads, seq, seq): the masked attention matrix of every head */
  ssdAttentionMatrix(rec: Recorder, gram: GPUBuffer, dt: GPUBuffer, a: GPUBuffer, mask: GPUBuffer | null, m: GPUBuffer, s: SsdShape) {
    rec.dispatch(
      this.p("ssd_attention_matrix"),
      [{ u: s.batch }, { u: s.seq }, { u: s.nheads }, { u: s.ngroups }, { u: mask ? 1 : 0 }, { u: 0 }, { u: 0 }, { u: 0 }],
      [gram, dt, a, mask ?? this.placeholder(), m],
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

  /** Knockout fast path: out (n, convDim), conv1d + SiLU at each configuration's last position */
  lastRowConv1dSilu(rec: Recorder, meta: GPUBuffer, zxbcdt: GPUBuffer, baseZxbcdt: GPUBuffer, weight: GPUBuffer, bias: GPUBuffer, out: GPUBuffer, s: { n: number; convDim: number; dConv: number; inStride: number; inOffset: number }) {
    rec.dispatch(
      this.p("lastrow_conv_silu"),
      [{ u: s.n }, { u: s.convDim }, { u: s.dConv }, { u: s.inStride }, { u: s.inOffset }, { u: 0 }, { u: 0 }, { u: 0 }],
      [meta, zxbcdt, baseZxbcdt, weight, bias, out],
      groups(s.n * s.convDim),
    );
  }

  /** Knockout fast path: mRow (n, nheads, maxLen), the last attention row of every head, masked */
  lastRowAttention(
    rec: Recorder,
    b: { meta: GPUBuffer; colmask: GPUBuffer; xbc: GPUBuffer; dt: GPUBuffer; baseXbc: GPUBuffer; baseDt: GPUBuffer; a: GPUBuffer; mRow: GPUBuffer },
    s: { n: number; nheads: number; ngroups: number; dState: number; convDim: number; dInner: number; maxLen: number; layer: number },
  ) {
    rec.dispatch(
      this.p("lastrow_attention"),
      [{ u: s.n }, { u: s.nheads }, { u: s.ngroups }, { u: s.dState }, { u: s.convDim }, { u: s.dInner }, { u: s.maxLen }, { u: s.layer }],
      [b.meta, b.colmask, b.xbc, b.dt, b.baseXbc, b.baseDt, b.a, b.mRow],
      groups(s.n * s.nheads),
    );
  }

  /** Knockout fast path: y (n, dInner) = last attention row applied + D x */
  lastRowAttentionApply(
    rec: Recorder,
    b: { meta: GPUBuffer; mRow: GPUBuffer; xbc: GPUBuffer; dt: GPUBuffer; baseXbc: GPUBuffer; baseDt: GPUBuffer; d: GPUBuffer; y: GPUBuffer },
    s: { n: number; nheads: number; headdim: number; convDim: number; dInner: number; maxLen: number },
  ) {
    rec.dispatch(
      this.p("lastrow_attention_apply"),
      [{ u: s.n }, { u: s.nheads }, { u: s.headdim }, { u: s.convDim }, { u: s.dInner }, { u: s.maxLen }, { u: 0 }, { u: 0 }],
      [b.meta, b.mRow, b.xbc, b.dt, b.baseXbc, b.baseDt, b.d, b.y],
      groups(s.n * s.dInner),
    );
  }

  private placeholderBuf?: GPUBuffer;
  private placeholder(): GPUBuffer {
    return this.placeholderBuf ??= storageBuffer(this.gpu, 16, "placeholder");
  }
}
