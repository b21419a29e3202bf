// One method per Transformer kernel (kernels/transformer/*.wgsl): argument shapes in, dispatch
// recorded. The matrix products, RMSNorm, embedding, row gathers and softmax statistics are the
// shared kernels of engine/ops.ts.
import { type Gpu, kernel, type Recorder, storageBuffer } from "../gpu.ts";

const KERNELS = ["layernorm", "bias_act", "swiglu", "rope", "attention_probs", "attention_apply", "add_positions"] as const;
type KernelName = typeof KERNELS[number];

const WG = 64; // workgroup size of the element-wise kernels
const groups = (n: number) => Math.ceil(n / WG);

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
  maxLen: number; // row stride of probs and mask: more than every row's position
  layer: number;
  window: number; // sliding window, 0 = none
}

/** Words of the knockout mask per (row, key): one bit per head. */
export function maskWords(nHead: number): number {
  return Math.ceil(nHead / 32);
}

export class TransformerOps {
  private placeholderBuf?: GPUBuffer;
  private constructor(readonly gpu: Gpu, private readonly pipes: Map<KernelName, GPUComputePipeline>) {}

  static async create(gpu: Gpu): Promise<TransformerOps> {
    const pipes = new Map<KernelName, GPUComputePipeline>();
    await Promise.all(KERNELS.map(async (k) => pipes.set(k, await kernel(gpu, `transformer/${k}`))));
    return new TransformerOps(gpu, pipes);
  }

  private p(name: KernelName) {
    return this.pipes.get(name)!;
  }

  /** A 16-byte buffer for bindings a call does not read. */
  placeholder(): GPUBuffer {
    return this.placeholderBuf ??= storageBuffer(this.gpu, 16, "placeholder");
  }

  /** out (rows, dim) = LayerNorm(x) * weight + bias */
  layernorm(rec: Recorder, x: GPUBuffer, weight: GPUBuffer, bias: GPUBuffer, out: GPUBuffer, rows: number, dim: number, eps: number) {
    rec.dispatch(this.p("layernorm"), [{ u: rows }, { u: dim }, { f: eps }, { u: 0 }], [x, weight, bias, out], rows);
  }

  /** x (rows, dim) := act(x + bias), in place; bias null = none */
  biasAct(rec: Recorder, x: GPUBuffer, bias: GPUBuffer | null, rows: number, dim: number, act: Activation) {
    if (!bias && act === "none") return;
    rec.dispatch(
      this.p("bias_act"),
      [{ u: rows }, { u: dim }, { u: ACT[act] }, { u: bias ? 1 : 0 }],
      [x, bias ?? this.placeholder()],
      groups(rows * dim),
    );
  }

  /** out (rows, dff) = silu(gu[:, :dff]) * gu[:, dff:] */
  swiglu(rec: Recorder, gu: GPUBuffer, out: GPUBuffer, rows: number, dff: number) {
    rec.dispatch(this.p("swiglu"), [{ u: rows }, { u: dff }, { u: 0 }, { u: 0 }], [gu, out], groups(rows * dff));
  }

  /** Rotate-half RoPE of the q and k heads of qkv (rows, stride), in place; positions from meta. */
  rope(
    rec: Recorder,
    b: { meta: GPUBuffer; cos: GPUBuffer; sin: GPUBuffer; qkv: GPUBuffer },
    s: { rows: number; nHead: number; nKvHead: number; headDim: number; rotDims: number; stride: number },
  ) {
    if (s.rotDims === 0) return;
    rec.dispatch(
      this.p("rope"),
      [{ u: s.rows }, { u: s.nHead + s.nKvHead }, { u: s.headDim }, { u: s.rotDims }, { u: s.stride }, { u: 0 }, { u: 0 }, { u: 0 }],
      [b.meta, b.cos, b.sin, b.qkv],
      groups(s.rows * (s.nHead + s.nKvHead) * (s.rotDims / 2)),
    );
  }

  /** probs (rows, nHead, maxLen): causal softmax with sliding window and knockout mask */
  attentionProbs(
    rec: Recorder,
    b: { meta: GPUBuffer; qkv: GPUBuffer; base: GPUBuffer | null; mask: GPUBuffer | null; probs: GPUBuffer },
    s: AttentionShape,
  ) {
    rec.dispatch(
      this.p("attention_probs"),
      [
        { u: s.rows },
        { u: s.nHead },
        { u: s.nKvHead },
        { u: s.headDim },
        { u: s.stride },
        { u: s.maxLen },
        { u: s.layer },
        { u: s.window },
        { f: 1 / Math.sqrt(s.headDim) },
        { u: maskWords(s.nHead) },
        { u: b.mask ? 1 : 0 },
        { u: 0 },
      ],
      [b.meta, b.qkv, b.base ?? this.placeholder(), b.mask ?? this.placeholder(), b.probs],
      groups(s.rows * s.nHead),
    );
  }

  /** out (rows, nHead * headDim) = probs @ V */
  attentionApply(
    rec: Recorder,
    b: { meta: GPUBuffer; probs: GPUBuffer; qkv: GPUBuffer; base: GPUBuffer | null; out: GPUBuffer },
    s: AttentionShape,
  ) {
    rec.dispatch(
      this.p("attention_apply"),
      [{ u: s.rows }, { u: s.nHead }, { u: s.nKvHead }, { u: s.headDim }, { u: s.stride }, { u: s.maxLen }, { u: 0 }, { u: 0 }],
      [b.meta, b.probs, b.qkv, b.base ?? this.placeholder(), b.out],
      groups(s.rows * s.nHead * s.headDim),
    );
  }

  /** x (rows, dim) += wpe[position of the row] */
  addPositions(rec: Recorder, meta: GPUBuffer, wpe: GPUBuffer, x: GPUBuffer, rows: number, dim: number) {
    rec.dispatch(this.p("add_positions"), [{ u: rows }, { u: dim }, { u: 0 }, { u: 0 }], [meta, wpe, x], groups(rows * dim));
  }

  destroy(): void {
    this.placeholderBuf?.destroy();
    this.placeholderBuf = undefined;
  }
}
