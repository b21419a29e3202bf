// The Mamba-1 kernels (kernels/mamba1/*.wgsl), one method each: the selective scan, the hidden
// attention materialised and applied, the same on the knockout fast path's recomputed rows, and the
// output gate. Buffers are (rows, width) row-major f32.
import type { UnitMask } from "../backbone.ts";
import type { Recorder } from "../gpu.ts";
import { f32s, groups, type Kernel, loadKernels } from "../kernel.ts";
import type { Ops } from "../ops.ts";

const KERNELS = [
  "mamba1/selective_scan",
  "mamba1/hidden_attention",
  "mamba1/hidden_attention_apply",
  "mamba1/rows_hidden_attention",
  "mamba1/rows_hidden_attention_apply",
  "mamba1/gate_silu",
] as const;

/** Shapes of one layer call on a padded batch. */
export interface Mamba1Shape {
  batch: number;
  seq: number; // padded length
  dInner: number;
  dState: number;
}

export class Mamba1Ops {
  private constructor(readonly ops: Ops, private readonly k: Record<typeof KERNELS[number], Kernel>) {}

  static async create(ops: Ops): Promise<Mamba1Ops> {
    return new Mamba1Ops(ops, await loadKernels(ops.gpu, KERNELS));
  }

  /** y (batch*seq, dInner): the selective scan with the D skip, over each prompt's `lengths` rows */
  selectiveScan(rec: Recorder, b: { x: GPUBuffer; dt: GPUBuffer; a: GPUBuffer; bc: GPUBuffer; d: GPUBuffer; lengths: GPUBuffer; y: GPUBuffer }, s: Mamba1Shape) {
    const N = s.batch * s.seq;
    this.k["mamba1/selective_scan"].dispatch(rec, { batch: s.batch, seq: s.seq, d_inner: s.dInner, d_state: s.dState }, {
      x: [b.x, f32s(N * s.dInner)],
      dt: [b.dt, f32s(N * s.dInner)],
      a: [b.a, f32s(s.dInner * s.dState)],
      bc: [b.bc, f32s(N * 2 * s.dState)],
      d: [b.d, f32s(s.dInner)],
      lengths: [b.lengths, f32s(s.batch)],
      y: [b.y, f32s(N * s.dInner)],
    }, groups(s.batch * s.dInner));
  }

  /** alpha (batch, dInner, seq, seq): every channel's hidden attention, a knockout's entries zeroed in their unit sets' channels */
  hiddenAttention(rec: Recorder, b: { dt: GPUBuffer; a: GPUBuffer; bc: GPUBuffer; alpha: GPUBuffer }, knockout: UnitMask | null, s: Mamba1Shape) {
    const N = s.batch * s.seq, T = s.seq;
    this.k["mamba1/hidden_attention"].dispatch(
      rec,
      { batch: s.batch, seq: T, d_inner: s.dInner, d_state: s.dState, has_mask: knockout ? 1 : 0, n_sets: knockout?.nSets ?? 0 },
      {
        dt: [b.dt, f32s(N * s.dInner)],
        a: [b.a, f32s(s.dInner * s.dState)],
        bc: [b.bc, f32s(N * 2 * s.dState)],
        mask: knockout ? [knockout.mask, f32s(s.batch * T * T)] : this.ops.placeholder(),
        unit_sets: knockout ? [knockout.sets, f32s(knockout.nSets * s.dInner)] : this.ops.placeholder(),
        alpha: [b.alpha, f32s(s.batch * s.dInner * T * T)],
      },
      groups(s.batch * s.dInner * T),
    );
  }

  /** y (batch*seq, dInner) = alpha x + D x */
  hiddenAttentionApply(rec: Recorder, b: { alpha: GPUBuffer; x: GPUBuffer; d: GPUBuffer; y: GPUBuffer }, s: Mamba1Shape) {
    const N = s.batch * s.seq;
    this.k["mamba1/hidden_attention_apply"].dispatch(rec, { batch: s.batch, seq: s.seq, d_inner: s.dInner }, {
      alpha: [b.alpha, f32s(s.batch * s.dInner * s.seq * s.seq)],
      x: [b.x, f32s(N * s.dInner)],
      d: [b.d, f32s(s.dInner)],
      y: [b.y, f32s(N * s.dInner)],
    }, groups(N * s.dInner));
  }

  /** out (rows, dInner) = y * silu(z), z = xz[:, zOffset : zOffset + dInner] */
  gateSilu(rec: Recorder, b: { y: GPUBuffer; xz: GPUBuffer; out: GPUBuffer }, s: { rows: number; dInner: number; zStride: number; zOffset: number }) {
    if (s.rows === 0) return;
    this.k["mamba1/gate_silu"].dispatch(rec, { rows: s.rows, d_inner: s.dInner, z_stride: s.zStride, z_offset: s.zOffset }, {
      y: [b.y, f32s(s.rows * s.dInner)],
      xz: [b.xz, f32s(s.rows * s.zStride)],
      out: [b.out, f32s(s.rows * s.dInner)],
    }, groups(s.rows * s.dInner));
  }

  /**
   * Knockout fast path: alphaRows (n, dInner, maxLen), each recomputed row of every channel's hidden
   * attention, its blocked columns zeroed in the channels its selector picks (kernels/mamba1/rows_hidden_attention.wgsl)
   */
  rowsHiddenAttention(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; colmask: GPUBuffer; unitSel: GPUBuffer; dt: GPUBuffer; bc: GPUBuffer; baseDt: GPUBuffer; baseBc: GPUBuffer; a: GPUBuffer; alphaRows: GPUBuffer },
    s: { n: number; baseRows: number; dInner: number; dState: number; maxLen: number; layer: number; nSel: number },
  ) {
    if (s.n === 0) return;
    this.k["mamba1/rows_hidden_attention"].dispatch(
      rec,
      { n: s.n, d_inner: s.dInner, d_state: s.dState, max_len: s.maxLen, layer: s.layer, n_sel: s.nSel },
      {
        rows_meta: [b.rowsMeta, f32s(8 * s.n)],
        colmask: [b.colmask, f32s(s.n * s.maxLen)],
        unit_sel: [b.unitSel, f32s((s.layer + 1) * s.nSel * s.dInner)],
        dt: [b.dt, f32s(s.n * s.dInner)],
        bc: [b.bc, f32s(s.n * 2 * s.dState)],
        base_dt: [b.baseDt, f32s(s.baseRows * s.dInner)],
        base_bc: [b.baseBc, f32s(s.baseRows * 2 * s.dState)],
        a: [b.a, f32s(s.dInner * s.dState)],
        alpha_rows: [b.alphaRows, f32s(s.n * s.dInner * s.maxLen)],
      },
      groups(s.n * s.dInner),
    );
  }

  /** Knockout fast path: y (n, dInner) = the recomputed hidden-attention rows applied + D x (kernels/mamba1/rows_hidden_attention_apply.wgsl) */
  rowsHiddenAttentionApply(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; alphaRows: GPUBuffer; x: GPUBuffer; baseX: GPUBuffer; d: GPUBuffer; y: GPUBuffer },
    s: { n: number; baseRows: number; dInner: number; maxLen: number },
  ) {
    if (s.n === 0) return;
    this.k["mamba1/rows_hidden_attention_apply"].dispatch(rec, { n: s.n, d_inner: s.dInner, max_len: s.maxLen }, {
      rows_meta: [b.rowsMeta, f32s(8 * s.n)],
      alpha_rows: [b.alphaRows, f32s(s.n * s.dInner * s.maxLen)],
      x: [b.x, f32s(s.n * s.dInner)],
      base_x: [b.baseX, f32s(s.baseRows * s.dInner)],
      d: [b.d, f32s(s.dInner)],
      y: [b.y, f32s(s.n * s.dInner)],
    }, groups(s.n * s.dInner));
  }
}
