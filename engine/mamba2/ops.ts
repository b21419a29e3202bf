// The Mamba-2 kernels (kernels/mamba2/*.wgsl), one method each: the SSD in its scan and attention
// forms, the gated RMSNorm, and the SSD of the knockout fast path's recomputed rows.
import type { UnitMask } from "../backbone.ts";
import type { Gpu, Recorder } from "../gpu.ts";
import { f32s, groups, type Kernel, kernelSource, kernelVariant, expandLoops, loadKernels } from "../kernel.ts";
import type { Ops } from "../ops.ts";

const KERNELS = [
  "mamba2/ssd_scan",
  "mamba2/ssd_cb",
  "mamba2/ssd_attention_matrix",
  "mamba2/ssd_attention_apply",
  "mamba2/gated_rmsnorm",
  "mamba2/rows_ssd_attention",
  "mamba2/rows_ssd_attention_apply",
] as const;

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

export class Mamba2Ops {
  private constructor(readonly ops: Ops, private readonly k: Record<typeof KERNELS[number], Kernel>, private readonly quadSource: string) {}

  static async create(ops: Ops): Promise<Mamba2Ops> {
    const [k, quad] = await Promise.all([loadKernels(ops.gpu, KERNELS), kernelSource("mamba2/ssd_scan_quad")]);
    return new Mamba2Ops(ops, k, quad);
  }

  get gpu(): Gpu {
    return this.ops.gpu;
  }

  /** Whether ssdScan runs the 4-channel kernel for this shape (else the one-channel ssd_scan.wgsl). */
  static scanQuad(s: { headdim: number; dState: number; dInner: number; convDim: number }): boolean {
    return s.headdim % 4 === 0 && s.dState % 4 === 0 && s.dInner % 4 === 0 && s.convDim % 4 === 0 && s.dState <= 256;
  }

  /** The 4-channel scan kernel for this d_state (kernels/mamba2/ssd_scan_quad.wgsl), compiled on first use. */
  private scanQuadKernel(dState: number): Kernel {
    return kernelVariant(this.gpu, `mamba2/ssd_scan_quad:${dState}`, () => expandLoops(this.quadSource, { q: dState / 4 }).replaceAll("{Q}", String(dState / 4)));
  }

  /** y (batch*seq, dInner): the recurrent SSD with the D skip, over each prompt's `lengths` rows */
  ssdScan(rec: Recorder, xbc: GPUBuffer, dt: GPUBuffer, a: GPUBuffer, d: GPUBuffer, lengths: GPUBuffer, y: GPUBuffer, s: SsdShape) {
    const N = s.batch * s.seq;
    const params = { batch: s.batch, seq: s.seq, nheads: s.nheads, headdim: s.headdim, d_state: s.dState, ngroups: s.ngroups, conv_dim: s.convDim, d_inner: s.dInner };
    const buffers = {
      xbc: [xbc, f32s(N * s.convDim)],
      dt: [dt, f32s(N * s.nheads)],
      a: [a, f32s(s.nheads)],
      d: [d, f32s(s.nheads)],
      lengths: [lengths, f32s(s.batch)],
      y: [y, f32s(N * s.dInner)],
    } as const;
    if (Mamba2Ops.scanQuad(s)) {
      this.scanQuadKernel(s.dState).dispatch(rec, params, { ...buffers }, groups((s.batch * s.dInner) / 4));
      return;
    }
    if (s.dState > 256) throw new Error(`d_state ${s.dState} exceeds the scan kernel's 256`);
    this.k["mamba2/ssd_scan"].dispatch(rec, params, { ...buffers }, groups(s.batch * s.dInner));
  }

  /** Compile the scan kernel of this shape by running it once on a prompt of length 0 (scratch: zeros). */
  warmUpScan(rec: Recorder, scratch: GPUBuffer, out: GPUBuffer, s: { headdim: number; dState: number; dInner: number; convDim: number }) {
    if (!Mamba2Ops.scanQuad(s)) return;
    // lengths read from the zeros of scratch: nothing runs, the kernel is built
    const one: SsdShape = { batch: 1, seq: 1, nheads: 1, headdim: s.headdim, dState: s.dState, ngroups: 1, convDim: 4, dInner: 4 };
    this.ssdScan(rec, scratch, scratch, scratch, scratch, scratch, out, one);
  }

  /** gram (batch, ngroups, seq, seq) = C_t . B_s, causal */
  ssdGram(rec: Recorder, xbc: GPUBuffer, gram: GPUBuffer, s: SsdShape) {
    this.k["mamba2/ssd_cb"].dispatch(
      rec,
      { batch: s.batch, seq: s.seq, ngroups: s.ngroups, d_state: s.dState, conv_dim: s.convDim, d_inner: s.dInner },
      { xbc: [xbc, f32s(s.batch * s.seq * s.convDim)], gram: [gram, f32s(s.batch * s.ngroups * s.seq * s.seq)] },
      groups(s.batch * s.ngroups * s.seq * s.seq),
    );
  }

  /** m (batch, nheads, seq, seq): the attention matrix of every head, with a knockout's entries zeroed in their head sets' heads */
  ssdAttentionMatrix(rec: Recorder, gram: GPUBuffer, dt: GPUBuffer, a: GPUBuffer, knockout: UnitMask | null, m: GPUBuffer, s: SsdShape) {
    const T = s.seq;
    this.k["mamba2/ssd_attention_matrix"].dispatch(
      rec,
      { batch: s.batch, seq: T, nheads: s.nheads, ngroups: s.ngroups, has_mask: knockout ? 1 : 0, n_sets: knockout?.nSets ?? 0 },
      {
        gram: [gram, f32s(s.batch * s.ngroups * T * T)],
        dt: [dt, f32s(s.batch * T * s.nheads)],
        a: [a, f32s(s.nheads)],
        mask: knockout ? [knockout.mask, f32s(s.batch * T * T)] : this.ops.placeholder(),
        head_sets: knockout ? [knockout.sets, f32s(knockout.nSets * s.nheads)] : this.ops.placeholder(),
        m: [m, f32s(s.batch * s.nheads * T * T)],
      },
      groups(s.batch * s.nheads * T),
    );
  }

  /** y (batch*seq, dInner) = M (dt x) + D x */
  ssdAttentionApply(rec: Recorder, m: GPUBuffer, xbc: GPUBuffer, dt: GPUBuffer, d: GPUBuffer, y: GPUBuffer, s: SsdShape) {
    const N = s.batch * s.seq;
    this.k["mamba2/ssd_attention_apply"].dispatch(
      rec,
      { batch: s.batch, seq: s.seq, nheads: s.nheads, headdim: s.headdim, conv_dim: s.convDim, d_inner: s.dInner },
      {
        m: [m, f32s(s.batch * s.nheads * s.seq * s.seq)],
        xbc: [xbc, f32s(N * s.convDim)],
        dt: [dt, f32s(N * s.nheads)],
        d: [d, f32s(s.nheads)],
        y: [y, f32s(N * s.dInner)],
      },
      groups(N * s.dInner),
    );
  }

  /** out (rows, dInner) = rmsnorm_group(y * silu(z)) * weight, z = zxbcdt[:, 0 : dInner] */
  gatedRmsnorm(rec: Recorder, y: GPUBuffer, zxbcdt: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, s: { rows: number; dInner: number; ngroups: number; zStride: number; eps: number }) {
    if (s.rows === 0) return;
    this.k["mamba2/gated_rmsnorm"].dispatch(
      rec,
      { rows: s.rows, d_inner: s.dInner, ngroups: s.ngroups, z_stride: s.zStride, eps: s.eps },
      { y: [y, f32s(s.rows * s.dInner)], zxbcdt: [zxbcdt, f32s(s.rows * s.zStride)], weight: [weight, f32s(s.dInner)], out: [out, f32s(s.rows * s.dInner)] },
      s.rows * s.ngroups,
    );
  }

  /**
   * Knockout fast path: mRows (n, nheads, maxLen), each recomputed row of every head's attention
   * matrix, its blocked columns zeroed in the heads its selector picks (kernels/mamba2/rows_ssd_attention.wgsl)
   */
  rowsSsdAttention(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; colmask: GPUBuffer; headSel: GPUBuffer; xbc: GPUBuffer; dt: GPUBuffer; baseXbc: GPUBuffer; baseDt: GPUBuffer; a: GPUBuffer; mRows: GPUBuffer },
    s: { n: number; baseRows: number; nheads: number; ngroups: number; dState: number; convDim: number; dInner: number; maxLen: number; layer: number; nSel: number },
  ) {
    if (s.n === 0) return;
    this.k["mamba2/rows_ssd_attention"].dispatch(
      rec,
      { n: s.n, nheads: s.nheads, ngroups: s.ngroups, d_state: s.dState, conv_dim: s.convDim, d_inner: s.dInner, max_len: s.maxLen, layer: s.layer, n_sel: s.nSel },
      {
        rows_meta: [b.rowsMeta, f32s(8 * s.n)],
        colmask: [b.colmask, f32s(s.n * s.maxLen)],
        head_sel: [b.headSel, f32s((s.layer + 1) * s.nSel * s.nheads)],
        xbc: [b.xbc, f32s(s.n * s.convDim)],
        dt: [b.dt, f32s(s.n * s.nheads)],
        base_xbc: [b.baseXbc, f32s(s.baseRows * s.convDim)],
        base_dt: [b.baseDt, f32s(s.baseRows * s.nheads)],
        a: [b.a, f32s(s.nheads)],
        m_rows: [b.mRows, f32s(s.n * s.nheads * s.maxLen)],
      },
      groups(s.n * s.nheads),
    );
  }

  /** Knockout fast path: y (n, dInner) = the recomputed attention rows applied + D x (kernels/mamba2/rows_ssd_attention_apply.wgsl) */
  rowsSsdAttentionApply(
    rec: Recorder,
    b: { rowsMeta: GPUBuffer; mRows: GPUBuffer; xbc: GPUBuffer; dt: GPUBuffer; baseXbc: GPUBuffer; baseDt: GPUBuffer; d: GPUBuffer; y: GPUBuffer },
    s: { n: number; baseRows: number; nheads: number; headdim: number; convDim: number; dInner: number; maxLen: number },
  ) {
    if (s.n === 0) return;
    this.k["mamba2/rows_ssd_attention_apply"].dispatch(
      rec,
      { n: s.n, nheads: s.nheads, headdim: s.headdim, conv_dim: s.convDim, d_inner: s.dInner, max_len: s.maxLen },
      {
        rows_meta: [b.rowsMeta, f32s(8 * s.n)],
        m_rows: [b.mRows, f32s(s.n * s.nheads * s.maxLen)],
        xbc: [b.xbc, f32s(s.n * s.convDim)],
        dt: [b.dt, f32s(s.n * s.nheads)],
        base_xbc: [b.baseXbc, f32s(s.baseRows * s.convDim)],
        base_dt: [b.baseDt, f32s(s.baseRows * s.nheads)],
        d: [b.d, f32s(s.nheads)],
        y: [b.y, f32s(s.n * s.dInner)],
      },
      groups(s.n * s.dInner),
    );
  }
}
