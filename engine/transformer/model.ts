// A decoder-only Transformer language model on WebGPU (GPT-NeoX/Pythia, GPT-2, Llama, Qwen2,
// Mistral: the families differ in their config and weight layout, engine/<family>/mod.ts, and
// share this forward). "Attention mode" is the ordinary forward; a knockout (Geva et al. 2023)
// gives the blocked edges (t, s) −∞ in the attention logits of the selected heads before the
// softmax, in the knockout's layers; a row whose every edge is blocked attends to nothing.
//
// Rows: B prompts right-padded to T, N = B*T rows (position t of prompt b is row b*T + t; a causal
// model's row never sees a later one, so padding changes nothing). Each layer:
//   h = norm1(x); qkv = h Wqkv^T (+ b); RoPE on q, k; o = softmax(q k^T / sqrt(hd), masked) v
//   sequential: x += o Wo^T (+ b); x += mlp(norm2(x))
//   parallel (GPT-NeoX): x += o Wo^T (+ b) + mlp(norm2(x_in))
// mlp = down(act(up h + b)) + b with GELU, or down(silu(gate h) * (up h)) (SwiGLU).
// The knockout fast path (engine/transformer/knockout.ts) records the same layers on a subset of
// rows whose earlier keys come from a base run's cache.

import type { Gpu } from "../gpu.ts";
import { readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "../gpu.ts";
import { CheckpointError } from "../checkpoint/mod.ts";
import { ConfigError } from "../config.ts";
import { InputError, statsFromRows, Workspace } from "../model.ts";
import { destroyWeight, type F16Kernel, Ops, uploadWeight, type Weight, type WeightDtype } from "../ops.ts";
import type { TokenStats } from "../probs.ts";
import type { ForwardOptions, ForwardResult, KnockoutConfig, KnockoutSpec, LanguageModel, ModelInfo, UnitSelector } from "./arch_types.ts";
import { checkTensors, type TensorCheckpoint, tokenizerBeside, tokenizerVocabSize } from "./checkpoint.ts";
import { configRecord, type TransformerConfig } from "./config.ts";
import type { HostNorm, TensorReader, TransformerFamily } from "./family.ts";
import { transformerKnockouts } from "./knockout.ts";
import { maskWords, TransformerOps } from "./ops.ts";

export interface TransformerLoadOptions {
  /** how the matrices are stored on the GPU (activations and sums stay f32) */
  dtype?: WeightDtype;
  f16Kernel?: F16Kernel;
  /**
   * Real tokens: ids and the softmax are over 0..vocabSize−1. Default: the ids of the
   * tokenizer.json beside the checkpoint, else every row of the LM head. (Hub checkpoints pad
   * their heads: Pythia has 50304 rows for the 50277 ids of its tokenizer.)
   */
  vocabSize?: number;
}

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

/** The buffers one pass of rows works in. */
export interface PassBuffers {
  resid: GPUBuffer; // (rows, D) the residual stream
  h: GPUBuffer; // (rows, D) norm1 output
  h2: GPUBuffer; // (rows, D) norm2 output
  qkv: GPUBuffer; // (rows, stride)
  probs: GPUBuffer; // (rows, nHead, maxLen)
  att: GPUBuffer; // (rows, nHead * headDim)
  mid: GPUBuffer; // (rows, 2 dFF) SwiGLU's gate | up (unused with GELU)
  act: GPUBuffer; // (rows, dFF)
}

/** Rows computed together: their meta (attention_probs.wgsl), keys of earlier rows, masks. */
export interface Pass {
  rows: number;
  maxLen: number; // > every row's position
  meta: GPUBuffer; // (rows, 8) u32
  bufs: PassBuffers;
  /** per layer, the base run's qkv (the fast path); null in a full forward */
  base: GPUBuffer[] | null;
  /** the knockout mask of layer l, or null */
  mask(l: number): GPUBuffer | null;
  /** rows computed in layer l: a prefix of the pass's rows */
  active(l: number): number;
}

/** Called per layer after RoPE (the layer's input residual stream is still untouched then). */
export type LayerTap = (rec: Recorder, layer: number, resid: GPUBuffer, qkv: GPUBuffer) => void;

export class TransformerModel implements LanguageModel {
  readonly info: ModelInfo;
  private readonly work: Workspace;
  private queue: Promise<unknown> = Promise.resolve();
  private rope?: { len: number; cos: GPUBuffer; sin: GPUBuffer };

  private constructor(
    readonly gpu: Gpu,
    readonly config: TransformerConfig,
    readonly ops: Ops,
    readonly tops: TransformerOps,
    readonly embedding: Weight,
    readonly lmHead: Weight,
    readonly positions: GPUBuffer | null,
    readonly finalNorm: GpuNorm,
    readonly layers: GpuLayer[],
    vocabSize: number,
    readonly dtype: WeightDtype,
  ) {
    this.work = new Workspace(gpu);
    this.info = {
      family: config.family,
      nLayer: config.nLayer,
      dModel: config.dModel,
      vocabSize,
      vocabPadded: config.vocabRows,
      modes: ["attention"],
      unitName: "head",
      unitsPerLayer: config.nHead,
      convWidth: 0,
      config: configRecord(config),
    };
  }

  /** Columns of a fused qkv row: (n_head + 2 n_kv_head) head_dim. */
  get stride(): number {
    const c = this.config;
    return (c.nHead + 2 * c.nKvHead) * c.headDim;
  }

  static async load(gpu: Gpu, ckpt: TensorCheckpoint, family: TransformerFamily, opts: TransformerLoadOptions = {}): Promise<TransformerModel> {
    const dtype = opts.dtype ?? "f32";
    if (dtype !== "f32" && dtype !== "f16") throw new InputError(`unknown dtype ${dtype}: use f32 or f16`);
    let cfg: TransformerConfig;
    try {
      cfg = family.parse(ckpt.rawConfig);
    } catch (e) {
      if (e instanceof ConfigError) throw new CheckpointError(`${ckpt.dir}/${e.message}`);
      throw e;
    }
    checkTensors(ckpt, family.tensors(cfg, (n) => ckpt.has(n)));
    const vocabSize = await realVocabulary(ckpt.dir, cfg, opts.vocabSize);

    const ops = await Ops.create(gpu, { f16Kernel: opts.f16Kernel });
    const tops = await TransformerOps.create(gpu);
    const r: TensorReader = {
      matrix: (n) => dtype === "f16" ? ckpt.readF16(n) : ckpt.readF32(n),
      vector: (n) => ckpt.readF32(n),
      has: (n) => ckpt.has(n),
    };
    const D = cfg.dModel;
    const vec = (data: Float32Array, label: string) => uploadBuffer(gpu, data, label);
    const norm = (n: HostNorm, label: string): GpuNorm => ({ weight: vec(n.weight, `${label}.weight`), bias: n.bias && vec(n.bias, `${label}.bias`) });
    const opt = (data: Float32Array | null, label: string) => data && vec(data, label);

    const embedding = uploadWeight(gpu, await family.embedding(r, cfg), cfg.vocabRows, D, "embedding", dtype);
    await gpu.device.queue.onSubmittedWorkDone();
    const headData = await family.head(r, cfg);
    const lmHead = headData ? uploadWeight(gpu, headData, cfg.vocabRows, D, "lm_head", dtype) : embedding;
    const positions = family.positions ? vec(await family.positions(r, cfg), "positions") : null;
    const finalNorm = norm(await family.finalNorm(r, cfg), "final_norm");
    const stride = (cfg.nHead + 2 * cfg.nKvHead) * cfg.headDim;
    const mlpRows = cfg.mlp === "swiglu" ? 2 * cfg.dFF : cfg.dFF;
    const layers: GpuLayer[] = [];
    for (let l = 0; l < cfg.nLayer; l++) {
      const h = await family.layer(r, cfg, l);
      const p = `layers.${l}`;
      layers.push({
        norm1: norm(h.norm1, `${p}.norm1`),
        norm2: norm(h.norm2, `${p}.norm2`),
        qkv: uploadWeight(gpu, h.qkv, stride, D, `${p}.qkv`, dtype),
        qkvBias: opt(h.qkvBias, `${p}.qkv.bias`),
        out: uploadWeight(gpu, h.out, D, cfg.nHead * cfg.headDim, `${p}.out`, dtype),
        outBias: opt(h.outBias, `${p}.out.bias`),
        up: uploadWeight(gpu, h.up, mlpRows, D, `${p}.up`, dtype),
        upBias: opt(h.upBias, `${p}.up.bias`),
        down: uploadWeight(gpu, h.down, D, cfg.dFF, `${p}.down`, dtype),
        downBias: opt(h.downBias, `${p}.down.bias`),
        window: cfg.slidingWindow[l],
      });
      // let the queue apply this layer's uploads (each queued write holds a staging copy until then)
      await gpu.device.queue.onSubmittedWorkDone();
    }
    // every layer has the same shapes: the kernels of layer 0's and the head's suffice
    const l0 = layers[0];
    await ops.warmUp([lmHead, l0.qkv, l0.out, l0.up, l0.down]);
    return new TransformerModel(gpu, cfg, ops, tops, embedding, lmHead, positions, finalNorm, layers, vocabSize, dtype);
  }

  destroy(): void {
    destroyWeight(this.embedding);
    if (this.lmHead !== this.embedding) destroyWeight(this.lmHead);
    const bufs = (n: GpuNorm) => [n.weight, n.bias];
    for (const l of this.layers) {
      for (const w of [l.qkv, l.out, l.up, l.down]) destroyWeight(w);
      for (const b of [...bufs(l.norm1), ...bufs(l.norm2), l.qkvBias, l.outBias, l.upBias, l.downBias]) b?.destroy();
    }
    for (const b of [...bufs(this.finalNorm), this.positions, this.rope?.cos, this.rope?.sin]) b?.destroy();
    this.rope = undefined;
    this.tops.destroy();
    this.work.destroy();
  }

  /** Free the activation buffers kept between forwards (they are made again when needed). */
  releaseWorkspace(): void {
    this.work.destroy();
  }

  /** Transformers have no decay to rank heads by. */
  decay(_layer: number): Float64Array | null {
    return null;
  }

  selectUnits(layer: number, sel: UnitSelector): number[] {
    const n = this.config.nHead;
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.config.nLayer) {
      throw new InputError(`layer ${layer} does not exist (the model has layers 0..${this.config.nLayer - 1})`);
    }
    if (sel.kind === "all") return Array.from({ length: n }, (_, h) => h);
    if (sel.kind === "only") {
      for (const h of sel.units) {
        if (!Number.isInteger(h) || h < 0 || h >= n) throw new InputError(`head ${h} does not exist (${this.config.family} has heads 0..${n - 1} per layer)`);
      }
      return [...new Set(sel.units)].sort((a, b) => a - b);
    }
    throw new InputError(
      `head selector ${sel.kind}:${sel.a}/${sel.b} ranks heads by their decay, which ${this.config.family} has none of: use all or only:<heads>`,
    );
  }

  async forward(prompts: number[][], opts: ForwardOptions): Promise<Float32Array[]> {
    return (await this.forwardDetailed(prompts, opts)).logits;
  }

  async forwardStats(prompts: number[][], targets: number[], opts: ForwardOptions): Promise<TokenStats[]> {
    return (await this.forwardDetailed(prompts, { ...opts, targets })).stats!;
  }

  async forwardDetailed(prompts: number[][], opts: ForwardOptions): Promise<ForwardResult> {
    this.checkInput(prompts, opts);
    const logits: Float32Array[] = opts.targets ? [] : new Array(prompts.length);
    const stats: TokenStats[] | undefined = opts.targets ? new Array(prompts.length) : undefined;
    const residuals: Float32Array[][] | undefined = opts.captureResiduals ? new Array(prompts.length) : undefined;
    // similar lengths together keep the padding small; results go back in the caller's order
    const order = prompts.map((_, i) => i).sort((x, y) => prompts[y].length - prompts[x].length);
    for (let start = 0; start < order.length;) {
      const seq = prompts[order[start]].length;
      const idx = order.slice(start, start + this.maxBatch(seq, opts));
      const res = await this.exclusive(() =>
        this.forwardBatch(idx.map((i) => prompts[i]), idx.map((i) => opts.knockouts?.[i]), {
          ...opts,
          targets: opts.targets && idx.map((i) => opts.targets![i]),
        })
      );
      idx.forEach((i, k) => {
        if (stats) stats[i] = res.stats![k];
        else logits[i] = res.logits[k];
        if (residuals) residuals[i] = res.residuals![k];
      });
      start += idx.length;
    }
    return { logits, stats, residuals };
  }

  knockouts(
    prompts: number[][],
    baseTargets: number[],
    configs: KnockoutConfig[],
    onProgress?: (configsDone: number) => void,
  ): Promise<{ base: TokenStats[]; results: TokenStats[] }> {
    return this.exclusive(() => transformerKnockouts(this, prompts, baseTargets, configs, onProgress));
  }

  /** Run `fn` after every earlier forward: forwards share the workspace. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** f32 values per row that a pass of rows of at most `maxLen` positions keeps in its buffers. */
  rowFloats(maxLen: number): number {
    const c = this.config;
    return 3 * c.dModel + this.stride + c.nHead * maxLen + c.nHead * c.headDim + (c.mlp === "swiglu" ? 3 : 1) * c.dFF +
      maxLen * maskWords(c.nHead) + 8;
  }

  /** Prompts of padded length `seq` in one pass: every buffer of the pass together within one binding. */
  maxBatch(seq: number, opts: Pick<ForwardOptions, "captureResiduals">): number {
    const c = this.config, limit = this.gpu.maxBinding;
    let fit = Math.floor(limit / (4 * seq * this.rowFloats(seq)));
    if (opts.captureResiduals) fit = Math.min(fit, Math.floor(limit / (4 * c.nLayer * seq * c.dModel)));
    if (fit < 1) throw new InputError(`a prompt of ${seq} tokens is too long for this adapter (largest binding ${limit} bytes)`);
    return fit;
  }

  /** Throws InputError (one line) for ids, knockouts or targets the model cannot take. */
  checkInput(prompts: number[][], opts: ForwardOptions): void {
    const c = this.config, V = this.info.vocabSize;
    if (opts.mode !== "attention") {
      throw new InputError(`${c.family} has no ${opts.mode} mode: a Transformer runs in attention mode only`);
    }
    if (opts.knockouts && opts.knockouts.length !== prompts.length) {
      throw new InputError(`${opts.knockouts.length} knockout lists for ${prompts.length} prompts`);
    }
    if (opts.targets) {
      if (opts.targets.length !== prompts.length) throw new InputError(`${opts.targets.length} targets for ${prompts.length} prompts`);
      if (opts.allPositions) throw new InputError("targets give last-position statistics; they cannot be combined with allPositions");
      for (const t of opts.targets) this.checkTarget(t);
    }
    prompts.forEach((ids, p) => {
      if (!Array.isArray(ids) || ids.length === 0) throw new InputError(`prompt ${p} is empty: give at least one token`);
      if (c.learnedPositions > 0 && ids.length > c.learnedPositions) {
        throw new InputError(`prompt ${p} has ${ids.length} tokens; ${c.family} has learned positions for ${c.learnedPositions} only`);
      }
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new InputError(`prompt ${p}: token id ${id} is out of range (ids are integers in 0..${V - 1})`);
        }
      }
      for (const spec of opts.knockouts?.[p] ?? []) this.checkSpec(spec, ids.length, `prompt ${p}`);
    });
  }

  checkTarget(t: number): void {
    const V = this.info.vocabSize;
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new InputError(`target id ${t} is out of range (0..${V - 1})`);
  }

  /** One knockout of a `len`-token prompt: layers, edges, heads; conv cuts do not exist here. */
  checkSpec(spec: KnockoutSpec, len: number, where: string): void {
    const L = this.config.nLayer;
    if (!(Number.isInteger(spec.start) && Number.isInteger(spec.end) && 0 <= spec.start && spec.start < spec.end && spec.end <= L)) {
      throw new InputError(`${where}: knockout layers [${spec.start}, ${spec.end}) are not within the model's ${L} layers`);
    }
    if (spec.conv) throw new InputError(`${where}: ${this.config.family} has no conv path to cut (conv knockouts are for Mamba-2)`);
    if (!Array.isArray(spec.edges)) throw new InputError(`${where}: knockout edges must be a list of [row, col]`);
    for (const e of spec.edges) {
      const [row, col] = Array.isArray(e) ? e : [NaN, NaN];
      if (!Number.isInteger(row) || !Number.isInteger(col) || row < 0 || row >= len || col < 0 || col > row) {
        throw new InputError(`${where}: knockout edge (${row}, ${col}) is invalid for a ${len}-token prompt (need 0 <= col <= row < ${len})`);
      }
    }
    this.selectUnits(spec.start, spec.units ?? { kind: "all" });
  }

  /** cos/sin tables (positions, rotaryDims / 2) for positions below `len`, in float64 rounded once. */
  ropeTables(len: number): { cos: GPUBuffer; sin: GPUBuffer } {
    if (this.rope && this.rope.len >= len) return this.rope;
    const half = this.config.rotaryDims / 2, inv = this.config.invFreq;
    const n = Math.max(len, 2 * (this.rope?.len ?? 0), 64);
    const cos = new Float32Array(n * Math.max(half, 1)), sin = new Float32Array(n * Math.max(half, 1));
    for (let t = 0; t < n; t++) {
      for (let j = 0; j < half; j++) {
        cos[t * half + j] = Math.cos(t * inv[j]);
        sin[t * half + j] = Math.sin(t * inv[j]);
      }
    }
    this.rope?.cos.destroy();
    this.rope?.sin.destroy();
    this.rope = { len: n, cos: uploadBuffer(this.gpu, cos, "rope_cos"), sin: uploadBuffer(this.gpu, sin, "rope_sin") };
    return this.rope;
  }

  /** Buffers of a pass of `rows` rows, from the workspace under `prefix`. */
  passBuffers(prefix: string, rows: number, maxLen: number): PassBuffers {
    const c = this.config, get = (name: string, floats: number) => this.work.get(`${prefix}${name}`, rows * floats * 4);
    return {
      resid: get("resid", c.dModel),
      h: get("h", c.dModel),
      h2: get("h2", c.dModel),
      qkv: get("qkv", this.stride),
      probs: get("probs", c.nHead * maxLen),
      att: get("att", c.nHead * c.headDim),
      mid: get("mid", c.mlp === "swiglu" ? 2 * c.dFF : 1),
      act: get("act", c.dFF),
    };
  }

  workspace(name: string, bytes: number): GPUBuffer {
    return this.work.get(name, bytes);
  }

  private norm(rec: Recorder, n: GpuNorm, x: GPUBuffer, out: GPUBuffer, rows: number) {
    const c = this.config;
    if (c.norm === "layernorm") this.tops.layernorm(rec, x, n.weight, n.bias!, out, rows, c.dModel, c.normEps);
    else this.ops.rmsnorm(rec, x, n.weight, out, rows, c.dModel, c.normEps);
  }

  /** Layer l on the pass's active rows (see the header for the maths). */
  recordLayer(rec: Recorder, pass: Pass, l: number, tap?: LayerTap): void {
    const rows = pass.active(l);
    if (rows === 0) return;
    const c = this.config, w = this.layers[l], ops = this.ops, t = this.tops, b = pass.bufs, D = c.dModel;
    this.norm(rec, w.norm1, b.resid, b.h, rows);
    if (c.parallelResidual) this.norm(rec, w.norm2, b.resid, b.h2, rows);
    ops.matmul(rec, b.h, w.qkv, b.qkv, rows);
    t.biasAct(rec, b.qkv, w.qkvBias, rows, this.stride, "none");
    const { cos, sin } = this.ropeTables(pass.maxLen);
    t.rope(rec, { meta: pass.meta, cos, sin, qkv: b.qkv }, { rows, nHead: c.nHead, nKvHead: c.nKvHead, headDim: c.headDim, rotDims: c.rotaryDims, stride: this.stride });
    tap?.(rec, l, b.resid, b.qkv);
    const shape = { rows, nHead: c.nHead, nKvHead: c.nKvHead, headDim: c.headDim, stride: this.stride, maxLen: pass.maxLen, layer: l, window: w.window };
    const base = pass.base?.[l] ?? null;
    t.attentionProbs(rec, { meta: pass.meta, qkv: b.qkv, base, mask: pass.mask(l), probs: b.probs }, shape);
    t.attentionApply(rec, { meta: pass.meta, probs: b.probs, qkv: b.qkv, base, out: b.att }, shape);
    ops.matmul(rec, b.att, w.out, b.resid, rows, { accumulate: true });
    t.biasAct(rec, b.resid, w.outBias, rows, D, "none");
    if (!c.parallelResidual) this.norm(rec, w.norm2, b.resid, b.h2, rows);
    if (c.mlp === "swiglu") {
      ops.matmul(rec, b.h2, w.up, b.mid, rows);
      t.biasAct(rec, b.mid, w.upBias, rows, 2 * c.dFF, "none");
      t.swiglu(rec, b.mid, b.act, rows, c.dFF);
    } else {
      ops.matmul(rec, b.h2, w.up, b.act, rows);
      t.biasAct(rec, b.act, w.upBias, rows, c.dFF, c.mlp);
    }
    ops.matmul(rec, b.act, w.down, b.resid, rows, { accumulate: true });
    t.biasAct(rec, b.resid, w.downBias, rows, D, "none");
  }

  /**
   * One padded batch (the caller keeps it within maxBatch and runs it exclusively): a full forward
   * with the prompts' knockouts; `tap` sees each layer (the fast path's base run captures there).
   */
  async forwardBatch(prompts: number[][], knockouts: (KnockoutSpec[] | undefined)[], opts: ForwardOptions, tap?: LayerTap): Promise<ForwardResult> {
    const c = this.config, gpu = this.gpu, L = c.nLayer, D = c.dModel;
    const B = prompts.length, T = Math.max(...prompts.map((p) => p.length)), N = B * T;
    const owned: GPUBuffer[] = [];
    try {
      const ids = new Uint32Array(N);
      prompts.forEach((p, b) => ids.set(p, b * T));
      const idsBuf = this.work.get("ids", N * 4);
      writeBuffer(gpu, idsBuf, ids);
      const meta = new Uint32Array(N * 8);
      for (let r = 0; r < N; r++) meta.set([r % T, 0, r - (r % T), 0, 0, L, 0, 0], r * 8);
      const metaBuf = this.work.get("meta", N * 32);
      writeBuffer(gpu, metaBuf, meta);
      const masks = this.fullMasks(prompts, knockouts, T, owned);
      const pass: Pass = {
        rows: N,
        maxLen: T,
        meta: metaBuf,
        bufs: this.passBuffers("", N, T),
        base: null,
        mask: (l) => masks[l],
        active: () => N,
      };
      let captured: GPUBuffer | null = null;
      if (opts.captureResiduals) owned.push(captured = storageBuffer(gpu, L * N * D * 4, "captured"));

      const rec = new Recorder(gpu);
      this.ops.embed(rec, idsBuf, N, this.embedding, pass.bufs.resid);
      if (this.positions) this.tops.addPositions(rec, metaBuf, this.positions, pass.bufs.resid, N, D);
      for (let l = 0; l < L; l++) {
        this.recordLayer(rec, pass, l, tap);
        if (captured) rec.copy(pass.bufs.resid, 0, captured, l * N * D * 4, N * D * 4);
      }
      const rows: number[] = [];
      prompts.forEach((p, b) => {
        if (opts.allPositions) for (let t = 0; t < p.length; t++) rows.push(b * T + t);
        else rows.push(b * T + p.length - 1);
      });
      const out = await this.readHead(rec, pass.bufs.resid, rows, opts.targets);
      let residuals: Float32Array[][] | undefined;
      if (captured) {
        const all = new Float32Array(await readBuffer(gpu, captured, L * N * D * 4));
        residuals = prompts.map((p, b) => Array.from({ length: L }, (_, l) => all.slice((l * N + b * T) * D, (l * N + b * T + p.length) * D)));
      }
      if (opts.targets) return { logits: [], stats: statsFromRows(out, prompts.length), residuals };
      const V = c.vocabRows, logits: Float32Array[] = [];
      let r = 0;
      for (const p of prompts) {
        const n = opts.allPositions ? p.length : 1;
        logits.push(out.slice(r * V, (r + n) * V));
        r += n;
      }
      return { logits, residuals };
    } finally {
      if (owned.length) {
        await gpu.device.queue.onSubmittedWorkDone();
        for (const b of owned) b.destroy();
      }
    }
  }

  /** Per layer, the (N, T, words) head-bit mask of the prompts' knockouts in that layer, or null. */
  private fullMasks(prompts: number[][], knockouts: (KnockoutSpec[] | undefined)[], T: number, owned: GPUBuffer[]): (GPUBuffer | null)[] {
    const c = this.config, words = maskWords(c.nHead);
    return Array.from({ length: c.nLayer }, (_, l) => {
      let mask: Uint32Array | null = null;
      knockouts.forEach((specs, b) => {
        for (const spec of specs ?? []) {
          if (l < spec.start || l >= spec.end) continue;
          const heads = this.selectUnits(l, spec.units ?? { kind: "all" });
          mask ??= new Uint32Array(prompts.length * T * T * words);
          for (const [t, s] of spec.edges) {
            for (const h of heads) mask[((b * T + t) * T + s) * words + (h >> 5)] |= 1 << (h & 31);
          }
        }
      });
      if (!mask) return null;
      const buf = uploadBuffer(this.gpu, mask, `mask${l}`);
      owned.push(buf);
      return buf;
    });
  }

  /**
   * The final norm and the LM head on the given rows of `resid`, in blocks that fit a binding (the
   * first block recorded into `first`); with targets, only (max, lse, argmax, target logit) per row
   * come back, else every logit of the head's rows.
   */
  async readHead(first: Recorder, resid: GPUBuffer, rows: number[], targets?: number[]): Promise<Float32Array> {
    const c = this.config, gpu = this.gpu, V = c.vocabRows, D = c.dModel, work = this.work;
    const width = targets ? 4 : V;
    const out = new Float32Array(rows.length * width);
    const blockRows = Math.max(1, Math.min(rows.length, Math.floor(gpu.maxBinding / (V * 4))));
    const rowIdx = work.get("head_rows", blockRows * 4);
    const picked = work.get("head_picked", blockRows * D * 4);
    const normed = work.get("head_normed", blockRows * D * 4);
    const logits = work.get("head_logits", blockRows * V * 4);
    const targetBuf = work.get("head_targets", blockRows * 4);
    const stats = work.get("head_stats", blockRows * 16);
    const staging = work.readback("head_readback", blockRows * width * 4);
    for (let r0 = 0; r0 < rows.length; r0 += blockRows) {
      const n = Math.min(blockRows, rows.length - r0);
      // queued writes land before the submission that follows them, whichever recorder it is
      gpu.device.queue.writeBuffer(rowIdx, 0, Uint32Array.from(rows.slice(r0, r0 + n)));
      const rec = r0 === 0 ? first : new Recorder(gpu);
      this.ops.gatherRows(rec, rowIdx, resid, picked, n, D);
      this.norm(rec, this.finalNorm, picked, normed, n);
      this.ops.matmul(rec, normed, this.lmHead, logits, n);
      if (targets) {
        gpu.device.queue.writeBuffer(targetBuf, 0, Uint32Array.from(targets.slice(r0, r0 + n)));
        this.ops.rowStats(rec, logits, targetBuf, stats, { rows: n, vocab: this.info.vocabSize, stride: V });
      }
      const bytes = n * width * 4;
      rec.copy(targets ? stats : logits, 0, staging, 0, bytes);
      rec.submit();
      await staging.mapAsync(GPUMapMode.READ, 0, bytes);
      out.set(new Float32Array(staging.getMappedRange(0, bytes).slice(0)), r0 * width);
      staging.unmap();
    }
    return out;
  }
}

/** The real vocabulary: the option, else the tokenizer beside the checkpoint, else the head's rows. */
async function realVocabulary(dir: string, cfg: TransformerConfig, given?: number): Promise<number> {
  let v = given;
  let from = "vocabSize";
  if (v === undefined) {
    const tok = await tokenizerBeside(dir);
    if (tok) {
      v = await tokenizerVocabSize(tok);
      from = tok;
    }
  }
  v ??= cfg.vocabRows;
  if (!Number.isInteger(v) || v < 1 || v > cfg.vocabRows) {
    throw new InputError(`${from} gives ${v} token ids but the model's head has ${cfg.vocabRows} rows`);
  }
  return v;
}
