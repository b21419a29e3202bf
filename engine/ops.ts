// The shared kernels (kernels/*.wgsl), one method each: argument shapes in, a checked dispatch
// recorded (engine/kernel.ts). Every family composes these with its own (engine/<family>/ops.ts).
// Buffers are (rows, width) row-major f32 unless said otherwise.
import type { Gpu, Recorder } from "./gpu.ts";
import { storageBuffer } from "./gpu.ts";
import { type Bound, f32s, groups, type Kernel, loadKernels } from "./kernel.ts";
import { type F16Kernel, Matmul, type MatmulPlan, type RowMap, type Weight } from "./matmul.ts";

const KERNELS = ["embedding", "embedding_f16", "rmsnorm", "conv1d_silu", "rows_conv_silu", "dt_softplus", "gather_rows", "row_stats"] as const;

/** Where a conv or dt step reads its channels: columns [offset, offset + width) of rows of `stride` floats. */
export interface Slice {
  stride: number;
  offset: number;
}

/** The largest finite f32: an upper clamp of Infinity is this one. */
const F32_MAX = 3.4028234663852886e38;

export class Ops {
  private placeholderBuf?: GPUBuffer;
  private constructor(readonly gpu: Gpu, private readonly k: Record<typeof KERNELS[number], Kernel>, readonly mm: Matmul) {}

  static async create(gpu: Gpu, opts: { f16Kernel?: F16Kernel } = {}): Promise<Ops> {
    const [k, mm] = await Promise.all([loadKernels(gpu, KERNELS), Matmul.create(gpu, opts)]);
    return new Ops(gpu, k, mm);
  }

  get f16Kernel(): F16Kernel {
    return this.mm.f16Kernel;
  }

  /** A 16-byte buffer bound where a kernel's optional input is absent (its flag says so). */
  placeholder(): Bound {
    return [this.placeholderBuf ??= storageBuffer(this.gpu, 16, "placeholder"), 0];
  }

  /** out (n, d_model) = table[ids], one dispatch per row chunk of the table */
  embed(rec: Recorder, ids: GPUBuffer, n: number, table: Weight, out: GPUBuffer) {
    for (const c of table.chunks) {
      const buffers = { ids: [ids, f32s(n)], out: [out, f32s(n * table.cols)] } as const;
      if (table.dtype === "f16") {
        this.k.embedding_f16.dispatch(rec, { n_tokens: n, d_model: table.cols, row_start: c.rowStart, row_count: c.rows, stride: table.stride }, {
          ...buffers,
          table: [c.buffer, c.rows * table.stride * 2],
        }, groups(n * table.cols));
      } else {
        this.k.embedding.dispatch(rec, { n_tokens: n, d_model: table.cols, row_start: c.rowStart, row_count: c.rows }, {
          ...buffers,
          table: [c.buffer, f32s(c.rows * table.cols)],
        }, groups(n * table.cols));
      }
    }
  }

  /** out (rows, dim) = rmsnorm(x) * weight */
  rmsnorm(rec: Recorder, x: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, rows: number, dim: number, eps: number) {
    if (rows === 0) return;
    this.k.rmsnorm.dispatch(rec, { rows, dim, eps }, { x: [x, f32s(rows * dim)], weight: [weight, f32s(dim)], out: [out, f32s(rows * dim)] }, rows);
  }

  /** y[:, yCol : yCol + w.rows] (+)= x (m, w.cols) @ w^T (engine/matmul.ts) */
  matmul(rec: Recorder, x: GPUBuffer, w: Weight, y: GPUBuffer, m: number, opts: { accumulate?: boolean; yStride?: number; yCol?: number; plan?: MatmulPlan; rows?: RowMap } = {}) {
    this.mm.record(rec, x, w, y, m, opts);
  }

  /**
   * out (rows, convDim) = silu(causal depthwise conv1d over each prompt (seq rows) of the channels
   * `at` of src, width dConv, with bias); with `tapMask` (rows) u32, bit `back` of a row removes its
   * tap from position t - back.
   */
  conv1dSilu(
    rec: Recorder,
    src: GPUBuffer,
    weight: GPUBuffer,
    bias: GPUBuffer,
    out: GPUBuffer,
    s: { rows: number; seq: number; convDim: number; dConv: number; at: Slice },
    tapMask: GPUBuffer | null = null,
  ) {
    this.k.conv1d_silu.dispatch(
      rec,
      { rows: s.rows, seq: s.seq, conv_dim: s.convDim, d_conv: s.dConv, in_stride: s.at.stride, in_offset: s.at.offset, has_tap_mask: tapMask ? 1 : 0 },
      {
        src: [src, f32s(s.rows * s.at.stride)],
        weight: [weight, f32s(s.convDim * s.dConv)],
        bias: [bias, f32s(s.convDim)],
        tap_mask: tapMask ? [tapMask, f32s(s.rows)] : this.placeholder(),
        out: [out, f32s(s.rows * s.convDim)],
      },
      groups(s.rows * s.convDim),
    );
  }

  /**
   * The knockout fast path's conv1dSilu over recomputed rows (kernels/rows_conv_silu.wgsl): taps
   * read earlier recomputed rows of the same configuration or the base run (`baseSrc`, baseRows
   * rows); rowsMeta (n, 8) u32 as the kernel's header says.
   */
  rowsConv1dSilu(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; src: GPUBuffer; baseSrc: GPUBuffer; weight: GPUBuffer; bias: GPUBuffer; out: GPUBuffer },
    s: { n: number; baseRows: number; convDim: number; dConv: number; at: Slice; layer: number },
  ) {
    if (s.n === 0) return;
    this.k.rows_conv_silu.dispatch(
      rec,
      { n: s.n, conv_dim: s.convDim, d_conv: s.dConv, in_stride: s.at.stride, in_offset: s.at.offset, layer: s.layer },
      {
        rows_meta: [b.rowsMeta, f32s(8 * s.n)],
        src: [b.src, f32s(s.n * s.at.stride)],
        base_src: [b.baseSrc, f32s(s.baseRows * s.at.stride)],
        weight: [b.weight, f32s(s.convDim * s.dConv)],
        bias: [b.bias, f32s(s.convDim)],
        out: [b.out, f32s(s.n * s.convDim)],
      },
      groups(s.n * s.convDim),
    );
  }

  /** dt (rows, width) = clamp(softplus(src[:, at.offset + h] + bias[h]), limit) (default [0, Infinity]: no clamp) */
  dtSoftplus(rec: Recorder, src: GPUBuffer, bias: GPUBuffer, dt: GPUBuffer, s: { rows: number; width: number; at: Slice; limit?: [number, number] }) {
    if (s.rows === 0) return;
    const [lo, hi] = s.limit ?? [0, Infinity];
    this.k.dt_softplus.dispatch(
      rec,
      { rows: s.rows, width: s.width, in_stride: s.at.stride, in_offset: s.at.offset, lo, hi: Math.min(hi, F32_MAX) },
      { src: [src, f32s(s.rows * s.at.stride)], bias: [bias, f32s(s.width)], dt: [dt, f32s(s.rows * s.width)] },
      groups(s.rows * s.width),
    );
  }

  /** out (nOut, dim) = x[rows] (xRows rows) */
  gatherRows(rec: Recorder, rows: GPUBuffer, x: GPUBuffer, out: GPUBuffer, nOut: number, dim: number, xRows: number) {
    this.k.gather_rows.dispatch(rec, { n_out: nOut, dim }, { rows: [rows, f32s(nOut)], x: [x, f32s(xRows * dim)], out: [out, f32s(nOut * dim)] }, groups(nOut * dim));
  }

  /** stats (rows, 4) = (max, logsumexp, argmax, logits[target]) over ids < vocab */
  rowStats(rec: Recorder, logits: GPUBuffer, targets: GPUBuffer, stats: GPUBuffer, s: { rows: number; vocab: number; stride: number }) {
    this.k.row_stats.dispatch(
      rec,
      { rows: s.rows, vocab: s.vocab, stride: s.stride },
      { logits: [logits, f32s(s.rows * s.stride)], targets: [targets, f32s(s.rows)], stats: [stats, f32s(4 * s.rows)] },
      s.rows,
    );
  }
}
