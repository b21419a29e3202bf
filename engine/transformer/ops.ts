// The Transformer kernels (kernels/transformer/*.wgsl), one method each, called by name
// (engine/kernel.ts): argument shapes in, a checked dispatch recorded. The matrix products,
// RMSNorm, embedding, row gathers and softmax statistics are the shared kernels of engine/ops.ts.
//
// Every kernel that needs a row's position reads the row meta of the backbone's fast path,
// (rows, 8) u32 = (t, t0, base row of position 0, window start, window end, selector, 0, 0)
// (engine/backbone.ts RowsIO); a full forward passes the same with t0 = 0 and the window covering
// every layer (TransformerStack.batchMeta).
import type { Recorder } from "../gpu.ts";
import { f32s, groups, type Kernel, loadKernels } from "../kernel.ts";
import type { Ops } from "../ops.ts";

const KERNELS = [
  "transformer/layernorm",
  "transformer/bias_act",
  "transformer/swiglu",
  "transformer/rope",
  "transformer/attention_probs",
  "transformer/attention_apply",
  "transformer/add_positions",
] as const;

/** Activations of bias_act.wgsl. */
export const ACT = { none: 0, gelu: 1, gelu_tanh: 2 } as const;
export type Activation = keyof typeof ACT;

/** Shapes of an attention call (kernels/transformer/attention_probs.wgsl). */
export interface AttentionShape {
  rows: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  stride: number; // row stride of qkv (and of the base cache)
  maxLen: number; // row stride of probs and of the knockout mask: more than every row's position
  baseRows: number; // rows of the base cache (0 in a full forward)
  layer: number;
  window: number; // sliding window, 0 = none
}

/**
 * A layer's knockout as attention_probs.wgsl reads it: mask (rows, maxLen) u32, m > 0 = edge
 * blocked in the units of row (layer * nSel + selector of the row + m - 1) of sets (·, nHead) u32.
 * A full forward gives the backbone's per-layer mask and unit sets (nSel 0, selector 0); the fast
 * path its colmask (m = 1) and unit_sel (n_layer, nSel, nHead).
 */
export interface AttentionMask {
  mask: GPUBuffer;
  sets: GPUBuffer;
  setRows: number; // rows of sets
  nSel: number;
}

export class TransformerOps {
  private constructor(readonly ops: Ops, private readonly k: Record<typeof KERNELS[number], Kernel>) {}

  static async create(ops: Ops): Promise<TransformerOps> {
    return new TransformerOps(ops, await loadKernels(ops.gpu, KERNELS));
  }

  /** out (rows, dim) = LayerNorm(x) * weight + bias */
  layernorm(rec: Recorder, x: GPUBuffer, weight: GPUBuffer, bias: GPUBuffer, out: GPUBuffer, rows: number, dim: number, eps: number) {
    if (rows === 0) return;
    this.k["transformer/layernorm"].dispatch(
      rec,
      { rows, dim, eps },
      { x: [x, f32s(rows * dim)], weight: [weight, f32s(dim)], bias: [bias, f32s(dim)], out: [out, f32s(rows * dim)] },
      rows,
    );
  }

  /** x (rows, dim) := act(x + bias), in place; bias null = none */
  biasAct(rec: Recorder, x: GPUBuffer, bias: GPUBuffer | null, rows: number, dim: number, act: Activation) {
    if (rows === 0 || (!bias && act === "none")) return;
    this.k["transformer/bias_act"].dispatch(
      rec,
      { rows, dim, act: ACT[act], has_bias: bias ? 1 : 0 },
      { x: [x, f32s(rows * dim)], bias: bias ? [bias, f32s(dim)] : this.ops.placeholder() },
      groups(rows * dim),
    );
  }

  /** out (rows, dff) = silu(gu[:, :dff]) * gu[:, dff:] */
  swiglu(rec: Recorder, gu: GPUBuffer, out: GPUBuffer, rows: number, dff: number) {
    if (rows === 0) return;
    this.k["transformer/swiglu"].dispatch(rec, { rows, dff }, { gu: [gu, f32s(rows * 2 * dff)], out: [out, f32s(rows * dff)] }, groups(rows * dff));
  }

  /** Rotate-half RoPE of the q and k heads of qkv (rows, stride), in place; positions from meta; cos/sin (positions, rotDims / 2). */
  rope(
    rec: Recorder,
    b: { meta: GPUBuffer; cos: GPUBuffer; sin: GPUBuffer; qkv: GPUBuffer },
    s: { rows: number; nHead: number; nKvHead: number; headDim: number; rotDims: number; stride: number; positions: number },
  ) {
    if (s.rotDims === 0 || s.rows === 0) return;
    const half = s.rotDims / 2;
    this.k["transformer/rope"].dispatch(
      rec,
      { rows: s.rows, n_rot_heads: s.nHead + s.nKvHead, head_dim: s.headDim, rot_dims: s.rotDims, stride: s.stride },
      {
        row_meta: [b.meta, f32s(8 * s.rows)],
        cos_t: [b.cos, f32s(s.positions * half)],
        sin_t: [b.sin, f32s(s.positions * half)],
        qkv: [b.qkv, f32s(s.rows * s.stride)],
      },
      groups(s.rows * (s.nHead + s.nKvHead) * half),
    );
  }

  /** probs (rows, nHead, maxLen): causal softmax with sliding window and knockout mask */
  attentionProbs(
    rec: Recorder,
    b: { meta: GPUBuffer; qkv: GPUBuffer; base: GPUBuffer | null; mask: AttentionMask | null; probs: GPUBuffer },
    s: AttentionShape,
  ) {
    if (s.rows === 0) return;
    const m = b.mask;
    this.k["transformer/attention_probs"].dispatch(
      rec,
      {
        rows: s.rows,
        n_head: s.nHead,
        n_kv_head: s.nKvHead,
        head_dim: s.headDim,
        stride: s.stride,
        max_len: s.maxLen,
        layer: s.layer,
        window: s.window,
        scale: 1 / Math.sqrt(s.headDim),
        has_mask: m ? 1 : 0,
        n_sel: m?.nSel ?? 0,
      },
      {
        row_meta: [b.meta, f32s(8 * s.rows)],
        qkv: [b.qkv, f32s(s.rows * s.stride)],
        base: b.base ? [b.base, f32s(s.baseRows * s.stride)] : this.ops.placeholder(),
        mask: m ? [m.mask, f32s(s.rows * s.maxLen)] : this.ops.placeholder(),
        unit_sets: m ? [m.sets, f32s(m.setRows * s.nHead)] : this.ops.placeholder(),
        probs: [b.probs, f32s(s.rows * s.nHead * s.maxLen)],
      },
      groups(s.rows * s.nHead),
    );
  }

  /** out (rows, nHead * headDim) = probs @ V */
  attentionApply(
    rec: Recorder,
    b: { meta: GPUBuffer; probs: GPUBuffer; qkv: GPUBuffer; base: GPUBuffer | null; out: GPUBuffer },
    s: AttentionShape,
  ) {
    if (s.rows === 0) return;
    this.k["transformer/attention_apply"].dispatch(
      rec,
      { rows: s.rows, n_head: s.nHead, n_kv_head: s.nKvHead, head_dim: s.headDim, stride: s.stride, max_len: s.maxLen },
      {
        row_meta: [b.meta, f32s(8 * s.rows)],
        probs: [b.probs, f32s(s.rows * s.nHead * s.maxLen)],
        qkv: [b.qkv, f32s(s.rows * s.stride)],
        base: b.base ? [b.base, f32s(s.baseRows * s.stride)] : this.ops.placeholder(),
        out: [b.out, f32s(s.rows * s.nHead * s.headDim)],
      },
      groups(s.rows * s.nHead * s.headDim),
    );
  }

  /** x (rows, dim) += wpe[position of the row]; wpe (positions, dim) */
  addPositions(rec: Recorder, meta: GPUBuffer, wpe: GPUBuffer, x: GPUBuffer, s: { rows: number; dim: number; positions: number }) {
    if (s.rows === 0) return;
    this.k["transformer/add_positions"].dispatch(
      rec,
      { rows: s.rows, dim: s.dim },
      { row_meta: [meta, f32s(8 * s.rows)], wpe: [wpe, f32s(s.positions * s.dim)], x: [x, f32s(s.rows * s.dim)] },
      groups(s.rows * s.dim),
    );
  }
}
