// Decoder-only Transformer layers on the generic backbone (engine/backbone.ts): GPT-NeoX/Pythia,
// GPT-2, Llama, Qwen2, Mistral (the families differ in their config and weight layout,
// engine/<family>/family.ts, and share these layers). "Attention mode" is the ordinary forward; a
// knockout (Geva et al. 2023) gives the blocked edges (t, s) −∞ in the attention logits of the
// selected heads before the softmax, in the knockout's layers; a row whose every edge is blocked
// attends to nothing. The backbone does the rest: embedding, batching and padding, the knockout
// masks, the final norm and LM head, read-back, and the exact fast path (engine/fastpath.ts), for
// which a layer keeps its keys and values (the fused qkv after RoPE: a KV cache) and recomputes
// only rows t0.. reading earlier positions' keys and values from it.
//
// Each layer, on rows with positions from the row meta (kernels/transformer/attention_probs.wgsl):
//   h = norm1(x); qkv = h Wqkv^T (+ b); RoPE on q, k; o = softmax(q k^T / sqrt(hd), masked) v
//   sequential: x += o Wo^T (+ b); x += mlp(norm2(x))
//   parallel (GPT-NeoX): x += o Wo^T (+ b) + mlp(norm2(x_in))
// mlp = down(act(up h + b)) + b with GELU, or down(silu(gate h) * (up h)) (SwiGLU). GPT-2 adds its
// learned positions to the embedding (LayerStack.afterEmbedding).
import type { Mode, ModelInfo } from "../arch.ts";
import { Backbone, type BatchIO, type LayerStack, type RowsIO } from "../backbone.ts";
import type { Checkpoint } from "../checkpoint/mod.ts";
import type { LoadOptions } from "../families.ts";
import { type Gpu, type Recorder, uploadBuffer, writeBuffer } from "../gpu.ts";
import { WeightLoader } from "../loading.ts";
import { destroyWeight, type RowMap, type Weight } from "../matmul.ts";
import { Ops } from "../ops.ts";
import { configRecord, type TransformerConfig, transformerUnits } from "./config.ts";
import type { HostMatrix, HostNorm, TensorReader, TransformerFamilyDef } from "./family.ts";
import { type AttentionMask, TransformerOps } from "./ops.ts";

interface GpuNorm {
  weight: GPUBuffer;
  bias: GPUBuffer | null;
}

export interface GpuLayer {
  norm1: GpuNorm;
  norm2: GpuNorm;
  qkv: Weight;
  qkvBias: GPUBuffer | null;
  out: Weight;
  outBias: GPUBuffer | null;
  up: Weight;
  upBias: GPUBuffer | null;
  down: Weight;
  downBias: GPUBuffer | null;
  window: number;
}

/** The buffers a layer works in, each (rows, width) for the rows it runs on. */
interface LayerBufs {
  resid: GPUBuffer; // (rows, D) the residual stream, updated in place
  h: GPUBuffer; // (rows, D) norm1 output
  h2: GPUBuffer; // (rows, D) norm2 output
  qkv: GPUBuffer; // (rows, stride)
  probs: GPUBuffer; // (rows, nHead, maxLen)
  att: GPUBuffer; // (rows, nHead * headDim)
  mid: GPUBuffer; // (rows, 2 dFF) SwiGLU's gate | up (unused with GELU)
  act: GPUBuffer; // (rows, dFF)
}

/** Where a layer's rows are: their meta, the base run's keys and values, the knockout. */
interface LayerRows {
  rows: number;
  maxLen: number; // > every row's position
  meta: GPUBuffer; // (rows, 8) u32
  base: GPUBuffer | null; // (baseRows, stride) the base run's qkv of this layer (fast path)
  baseRows: number;
  mask: AttentionMask | null;
  /**
   * the real rows of a padded batch (null: every row): the matmuls compute only these, as padding
   * comes after a prompt's real rows and attention reads positions <= t only
   */
  real: RowMap | null;
}

export class TransformerStack implements LayerStack {
  readonly info: ModelInfo;
  /** the fast path keeps, per layer of the base run, every position's keys and values (qkv after RoPE) */
  readonly capture: Record<string, number>;
  readonly maxLength?: number;
  /** columns of a fused qkv row: (n_head + 2 n_kv_head) head_dim */
  readonly stride: number;
  private rope?: { positions: number; cos: GPUBuffer; sin: GPUBuffer };
  private readonly metas = new WeakMap<BatchIO, GPUBuffer>();

  constructor(
    readonly config: TransformerConfig,
    readonly ops: Ops,
    readonly tops: TransformerOps,
    readonly layers: GpuLayer[],
    readonly normF: GpuNorm,
    readonly positions: GPUBuffer | null,
  ) {
    const c = config;
    this.stride = (c.nHead + 2 * c.nKvHead) * c.headDim;
    this.capture = { qkv: this.stride };
    if (c.learnedPositions > 0) this.maxLength = c.learnedPositions;
    this.info = {
      family: c.family,
      nLayer: c.nLayer,
      dModel: c.dModel,
      vocabSize: c.vocabSize, // every head row; the backbone takes the tokenizer's (LoadOptions.vocabSize)
      vocabPadded: c.vocabPadded,
      ...transformerUnits(c),
      config: configRecord(c),
    };
  }

  /** Transformers have no decay to rank heads by: selectors take `all` and `only:…`. */
  decay(_layer: number): null {
    return null;
  }

  /** floats per row of SwiGLU's gate | up (a 1-float stand-in with GELU, which does not use it) */
  private get midWidth(): number {
    return this.config.mlp === "swiglu" ? 2 * this.config.dFF : 1;
  }

  bindingBytesPerPrompt(seq: number, _mode: Mode): number {
    const c = this.config;
    return 4 * seq * Math.max(this.stride, this.midWidth, c.dFF, c.nHead * c.headDim, c.nHead * seq);
  }

  rowsScratchFloats(maxLen: number): { total: number; largest: number } {
    const c = this.config;
    const widths = [c.dModel, c.dModel, this.stride, c.nHead * maxLen, c.nHead * c.headDim, this.midWidth, c.dFF];
    return { total: widths.reduce((x, y) => x + y, 0), largest: Math.max(...widths) };
  }

  /** The row meta of a padded batch (kernels/transformer/attention_probs.wgsl): t0 = 0, every layer in the window. */
  private batchMeta(io: BatchIO): GPUBuffer {
    let buf = this.metas.get(io);
    if (!buf) {
      const meta = new Uint32Array(io.N * 8);
      for (let r = 0; r < io.N; r++) meta.set([r % io.T, 0, r - (r % io.T), 0, this.config.nLayer, 0, 0, 0], r * 8);
      buf = io.work.get("row_meta", meta.byteLength);
      writeBuffer(this.ops.gpu, buf, meta);
      this.metas.set(io, buf);
    }
    return buf;
  }

  afterEmbedding(rec: Recorder, io: BatchIO): void {
    if (!this.positions) return;
    this.tops.addPositions(rec, this.batchMeta(io), this.positions, io.resid, { rows: io.N, dim: this.config.dModel, positions: this.config.learnedPositions });
  }

  /** cos/sin tables (positions, rotaryDims / 2) covering positions below `len`, in float64 rounded once. */
  private ropeTables(len: number): { positions: number; cos: GPUBuffer; sin: GPUBuffer } {
    if (this.rope && this.rope.positions >= len) return this.rope;
    const half = this.config.rotaryDims / 2, inv = this.config.invFreq;
    const n = Math.max(len, 2 * (this.rope?.positions ?? 0), 64);
    const cos = new Float32Array(n * half), sin = new Float32Array(n * half);
    for (let t = 0; t < n; t++) {
      for (let j = 0; j < half; j++) {
        cos[t * half + j] = Math.cos(t * inv[j]);
        sin[t * half + j] = Math.sin(t * inv[j]);
      }
    }
    this.rope?.cos.destroy();
    this.rope?.sin.destroy();
    this.rope = { positions: n, cos: uploadBuffer(this.ops.gpu, cos, "rope_cos"), sin: uploadBuffer(this.ops.gpu, sin, "rope_sin") };
    return this.rope;
  }

  private norm(rec: Recorder, n: GpuNorm, x: GPUBuffer, out: GPUBuffer, rows: number) {
    const c = this.config;
    if (c.norm === "layernorm") this.tops.layernorm(rec, x, n.weight, n.bias!, out, rows, c.dModel, c.normEps);
    else this.ops.rmsnorm(rec, x, n.weight, out, rows, c.dModel, c.normEps);
  }

  /** Layer l on `at.rows` rows (see the header for the maths): the steps of the full forward and of the fast path. */
  private recordLayerSteps(rec: Recorder, l: number, b: LayerBufs, at: LayerRows) {
    const rows = at.rows;
    if (rows === 0) return;
    const c = this.config, w = this.layers[l], ops = this.ops, t = this.tops, D = c.dModel;
    const mRows = at.real ? at.real.count : rows, map = at.real ?? undefined;
    this.norm(rec, w.norm1, b.resid, b.h, rows);
    if (c.parallelResidual) this.norm(rec, w.norm2, b.resid, b.h2, rows);
    ops.matmul(rec, b.h, w.qkv, b.qkv, mRows, { rows: map });
    t.biasAct(rec, b.qkv, w.qkvBias, rows, this.stride, "none");
    if (c.rotaryDims > 0) {
      const rope = this.ropeTables(at.maxLen);
      t.rope(rec, { meta: at.meta, cos: rope.cos, sin: rope.sin, qkv: b.qkv }, {
        rows,
        nHead: c.nHead,
        nKvHead: c.nKvHead,
        headDim: c.headDim,
        rotDims: c.rotaryDims,
        stride: this.stride,
        positions: rope.positions,
      });
    }
    const shape = { rows, nHead: c.nHead, nKvHead: c.nKvHead, headDim: c.headDim, stride: this.stride, maxLen: at.maxLen, baseRows: at.baseRows, layer: l, window: w.window };
    t.attentionProbs(rec, { meta: at.meta, qkv: b.qkv, base: at.base, mask: at.mask, probs: b.probs }, shape);
    t.attentionApply(rec, { meta: at.meta, probs: b.probs, qkv: b.qkv, base: at.base, out: b.att }, shape);
    ops.matmul(rec, b.att, w.out, b.resid, mRows, { accumulate: true, rows: map });
    t.biasAct(rec, b.resid, w.outBias, rows, D, "none");
    if (!c.parallelResidual) this.norm(rec, w.norm2, b.resid, b.h2, rows);
    if (c.mlp === "swiglu") {
      ops.matmul(rec, b.h2, w.up, b.mid, mRows, { rows: map });
      t.biasAct(rec, b.mid, w.upBias, rows, 2 * c.dFF, "none");
      t.swiglu(rec, b.mid, b.act, rows, c.dFF);
    } else {
      ops.matmul(rec, b.h2, w.up, b.act, mRows, { rows: map });
      t.biasAct(rec, b.act, w.upBias, rows, c.dFF, c.mlp);
    }
    ops.matmul(rec, b.act, w.down, b.resid, mRows, { accumulate: true, rows: map });
    t.biasAct(rec, b.resid, w.downBias, rows, D, "none");
  }

  recordLayer(rec: Recorder, l: number, io: BatchIO): Record<string, GPUBuffer> {
    const c = this.config, N = io.N, get = (name: string, floats: number) => io.work.get(name, N * floats * 4);
    const b: LayerBufs = {
      resid: io.resid,
      h: get("h", c.dModel),
      h2: get("h2", c.dModel),
      qkv: get("qkv", this.stride),
      probs: get("probs", c.nHead * io.T),
      att: get("att", c.nHead * c.headDim),
      mid: get("mid", this.midWidth),
      act: get("act", c.dFF),
    };
    const units = io.knockout?.units;
    this.recordLayerSteps(rec, l, b, {
      rows: N,
      maxLen: io.T,
      meta: this.batchMeta(io),
      base: null,
      baseRows: 0,
      mask: units ? { mask: units.mask, sets: units.sets, setRows: units.nSets, nSel: 0 } : null,
      real: io.real,
    });
    return { qkv: b.qkv };
  }

  recordRowsLayer(rec: Recorder, l: number, io: RowsIO): void {
    const c = this.config;
    const b: LayerBufs = {
      resid: io.resid,
      h: io.scratch("h", c.dModel),
      h2: io.scratch("h2", c.dModel),
      qkv: io.scratch("qkv", this.stride),
      probs: io.scratch("probs", c.nHead * io.maxLen),
      att: io.scratch("att", c.nHead * c.headDim),
      mid: io.scratch("mid", this.midWidth),
      act: io.scratch("act", c.dFF),
    };
    this.recordLayerSteps(rec, l, b, {
      rows: io.n,
      maxLen: io.maxLen,
      meta: io.rowsMeta,
      base: io.base.qkv,
      baseRows: io.baseRows,
      mask: { mask: io.colmask, sets: io.unitSel, setRows: c.nLayer * io.nSel, nSel: io.nSel },
      real: null,
    });
  }

  finalNorm(rec: Recorder, x: GPUBuffer, out: GPUBuffer, rows: number): void {
    this.norm(rec, this.normF, x, out, rows);
  }

  destroy(): void {
    const bufs = (n: GpuNorm) => [n.weight, n.bias];
    for (const l of this.layers) {
      for (const w of [l.qkv, l.out, l.up, l.down]) destroyWeight(w);
      for (const b of [...bufs(l.norm1), ...bufs(l.norm2), l.qkvBias, l.outBias, l.upBias, l.downBias]) b?.destroy();
    }
    for (const b of [...bufs(this.normF), this.positions, this.rope?.cos, this.rope?.sin]) b?.destroy();
    this.rope = undefined;
  }
}

/**
 * Load a Transformer checkpoint (its tensors checked by engine/families.ts loadModel) as a model on
 * the backbone; the real vocabulary (ids and the softmax) is `opts.vocabSize`, which loadModel made
 * of the tokenizer's by the one rule of every family (engine/families.ts realVocabSize).
 */
export async function loadTransformer(gpu: Gpu, ckpt: Checkpoint, family: TransformerFamilyDef, opts: LoadOptions): Promise<Backbone> {
  const dtype = opts.dtype ?? "f32";
  const cfg = family.parse(ckpt.config.raw);
  const ops = await Ops.create(gpu, { f16Kernel: opts.f16Kernel });
  const tops = await TransformerOps.create(ops);
  // matrices are stored in `dtype`; those used as stored stream from the checkpoint in pieces, those
  // the family re-arranges on the host go through the same staging buffer (engine/loading.ts)
  const load = new WeightLoader(gpu, ckpt, dtype);
  const r: TensorReader = {
    matrix: (n) => dtype === "f16" ? ckpt.readF16(n) : ckpt.readF32(n),
    stored: (n) => ({ tensor: n }),
    vector: (n) => load.f32(n),
    has: (n) => ckpt.has(n),
  };
  const D = cfg.dModel;
  const matrix = (m: HostMatrix, rows: number, cols: number, label: string) =>
    ArrayBuffer.isView(m) ? load.matrixFrom(label, m, rows, cols) : load.matrix(m.tensor, rows, cols);
  const vector = (data: Float32Array, label: string) => load.vector(label, data);
  const opt = (data: Float32Array | null, label: string) => data ? vector(data, label) : null;
  const norm = async (n: HostNorm, label: string): Promise<GpuNorm> => ({ weight: await vector(n.weight, `${label}.weight`), bias: await opt(n.bias, `${label}.bias`) });

  const embedding = await matrix(await family.embedding(r, cfg), cfg.vocabPadded, D, "embedding");
  const head = await family.head(r, cfg);
  const lmHead = head ? await matrix(head, cfg.vocabPadded, D, "lm_head") : embedding;
  const positions = family.positions ? await vector(await family.positions(r, cfg), "positions") : null;
  const normF = await norm(await family.finalNorm(r, cfg), "final_norm");
  const stride = (cfg.nHead + 2 * cfg.nKvHead) * cfg.headDim;
  const mlpRows = cfg.mlp === "swiglu" ? 2 * cfg.dFF : cfg.dFF;
  const layers: GpuLayer[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    const h = await family.layer(r, cfg, l);
    const p = `layers.${l}`;
    layers.push({
      norm1: await norm(h.norm1, `${p}.norm1`),
      norm2: await norm(h.norm2, `${p}.norm2`),
      qkv: await matrix(h.qkv, stride, D, `${p}.qkv`),
      qkvBias: await opt(h.qkvBias, `${p}.qkv.bias`),
      out: await matrix(h.out, D, cfg.nHead * cfg.headDim, `${p}.out`),
      outBias: await opt(h.outBias, `${p}.out.bias`),
      up: await matrix(h.up, mlpRows, D, `${p}.up`),
      upBias: await opt(h.upBias, `${p}.up.bias`),
      down: await matrix(h.down, D, cfg.dFF, `${p}.down`),
      downBias: await opt(h.downBias, `${p}.down.bias`),
      window: cfg.slidingWindow[l],
    });
  }
  await load.finish();
  // every layer has the same shapes: the kernels of layer 0's and the head's suffice
  const l0 = layers[0];
  await ops.mm.warmUp([lmHead, l0.qkv, l0.out, l0.up, l0.down]);
  const stack = new TransformerStack(cfg, ops, tops, layers, normF, positions);
  return new Backbone(gpu, ops, stack, embedding, lmHead, dtype, load.bytes, opts.vocabSize);
}
