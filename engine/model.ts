// The Mamba-2 language model on WebGPU, in two modes:
//   scan:      the recurrent SSD, as the model really runs (memory O(T));
//   attention: each layer's implicit attention matrix M materialised, so that chosen
//              edges (row, col) can be knocked out before it is applied.
// Shapes: B prompts, right-padded to T; N = B*T rows; D = d_model; H = nheads; P = headdim.
import type { ModelConfig } from "./config.ts";
import { type Checkpoint, expectModelTensors } from "./checkpoint/mod.ts";
import { type Gpu, readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "./gpu.ts";
import type { TokenStats } from "./probs.ts";
import { destroyWeight, type F16Kernel, Ops, type SsdShape, uploadWeight, type Weight, type WeightDtype } from "./ops.ts";

export type Mode = "scan" | "attention";
/** layer -> edges (row, col), col <= row, knocked out in every head of that layer */
export type Knockout = Map<number, [number, number][]>;

export interface ForwardOptions {
  mode: Mode;
  /** per prompt (same order as the prompts), attention mode only */
  knockouts?: (Knockout | undefined)[];
  /** logits at every position (T * vocabPadded per prompt) instead of the last one */
  allPositions?: boolean;
  /** also return the residual stream after every layer (tests, analysis) */
  captureResiduals?: boolean;
  /**
   * per prompt, a target token id: instead of logits, only next-token statistics of the last
   * position come back (computed on the GPU), in ForwardResult.stats
   */
  targets?: number[];
}

export interface ForwardResult {
  /** per prompt: (vocabPadded) or (T, vocabPadded) f32; empty when targets were given */
  logits: Float32Array[];
  /** per prompt, with targets: softmax statistics over the real vocabulary */
  stats?: TokenStats[];
  /** per prompt, per layer: (T, d_model) residual stream after that layer */
  residuals?: Float32Array[][];
}

/** Decode row_stats output: (rows, 4) = (max logit, logsumexp, argmax, target logit). */
export function statsFromRows(out: Float32Array, rows: number): TokenStats[] {
  return Array.from({ length: rows }, (_, i) => {
    const [max, lse, arg, target] = out.subarray(i * 4, i * 4 + 4);
    return { trueProb: Math.exp(target - lse), maxProb: Math.exp(max - lse), predId: arg };
  });
}

export class InputError extends Error {
  override name = "InputError";
}

export const NORM_EPS = 1e-5;

/** A layer's intermediate buffers, as seen by a LayerTap. */
export interface LayerBuffers {
  resid: GPUBuffer; // (N, D) the layer's input residual stream (before its out_proj is added)
  zxbcdt: GPUBuffer; // (N, d_in_proj) in_proj output
  xbc: GPUBuffer; // (N, conv_dim) after conv1d + SiLU
  dt: GPUBuffer; // (N, H) after softplus
}
/** Called while recording each layer, after its SSD and before its residual update. */
export type LayerTap = (rec: Recorder, layer: number, bufs: LayerBuffers) => void;

export interface LoadOptions {
  /**
   * How the matrices (in_proj, out_proj, embedding / lm_head) are stored: "f32" (default) or
   * "f16" (half the memory and the bytes each matmul reads; activations and accumulation stay
   * f32). Norms, conv, dt_bias, A and D stay f32 either way.
   */
  dtype?: WeightDtype;
  /** How kernels read f16 weights (engine/ops.ts F16Kernel); "packed" works on every adapter. */
  f16Kernel?: F16Kernel;
}

/** GPU buffers kept from one forward to the next (grown when a batch needs more). */
export class Workspace {
  private readonly bufs = new Map<string, GPUBuffer>();
  private readonly staging = new Map<string, GPUBuffer>();
  constructor(private readonly gpu: Gpu) {}

  /** A storage buffer of at least `bytes` under `name`; its contents are whatever was left there. */
  get(name: string, bytes: number): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 4) * 4);
    const hit = this.bufs.get(name);
    if (hit && hit.size >= size) return hit;
    hit?.destroy();
    const b = storageBuffer(this.gpu, size, name);
    this.bufs.set(name, b);
    return b;
  }

  /** A MAP_READ buffer of at least `bytes` for reading results back. */
  readback(name: string, bytes: number): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 4) * 4);
    const hit = this.staging.get(name);
    if (hit && hit.size >= size) return hit;
    hit?.destroy();
    const b = this.gpu.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: name });
    this.staging.set(name, b);
    return b;
  }

  destroy(): void {
    for (const b of [...this.bufs.values(), ...this.staging.values()]) b.destroy();
    this.bufs.clear();
    this.staging.clear();
  }
}

export interface LayerWeights {
  norm: GPUBuffer; // (D)
  inProj: Weight; // (d_in_proj, D)
  convWeight: GPUBuffer; // (conv_dim, d_conv)
  convBias: GPUBuffer; // (conv_dim)
  dtBias: GPUBuffer; // (H)
  a: GPUBuffer; // (H) A = -exp(A_log)
  d: GPUBuffer; // (H)
  gatedNorm: GPUBuffer; // (d_inner)
  outProj: Weight; // (D, d_inner)
}

export class Mamba2Model {
  private constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    // weights and kernels are readable by the knockout fast path (engine/knockout.ts)
    readonly ops: Ops,
    readonly embedding: Weight,
    readonly lmHead: Weight,
    readonly layers: LayerWeights[],
    readonly normF: GPUBuffer,
    /** how the matrices are stored */
    readonly dtype: WeightDtype = "f32",
  ) {
    this.work = new Workspace(gpu);
  }

  private readonly work: Workspace;
  /** forwards run one at a time: they share the workspace */
  private queue: Promise<unknown> = Promise.resolve();

  static async load(gpu: Gpu, ckpt: Checkpoint, opts: LoadOptions = {}): Promise<Mamba2Model> {
    const dtype = opts.dtype ?? "f32";
    if (dtype !== "f32" && dtype !== "f16") throw new InputError(`unknown dtype ${dtype}: use f32 or f16`);
    const cfg = ckpt.config;
    expectModelTensors(ckpt); // a missing or misshapen tensor is named before anything is uploaded
    const ops = await Ops.create(gpu, { f16Kernel: opts.f16Kernel });
    const read = (name: string) => ckpt.readF32(name);
    const vec = async (name: string) => uploadBuffer(gpu, await read(name), name);
    // matrices are read in their storage dtype (readF16 rounds f32 checkpoints to nearest even)
    const mat = async (name: string, rows: number, cols: number) =>
      uploadWeight(gpu, dtype === "f16" ? await ckpt.readF16(name) : await read(name), rows, cols, name, dtype);

    const embedding = await mat("backbone.embedding.weight", cfg.vocabPadded, cfg.dModel);
    await gpu.device.queue.onSubmittedWorkDone();
    const lmHead = cfg.tieEmbeddings || !ckpt.has("lm_head.weight")
      ? embedding
      : await mat("lm_head.weight", cfg.vocabPadded, cfg.dModel);
    const layers: LayerWeights[] = [];
    for (let i = 0; i < cfg.nLayer; i++) {
      const pre = `backbone.layers.${i}`;
      // A = -exp(A_log), formed in float64 on the host and rounded once
      const aLog = await read(`${pre}.mixer.A_log`);
      const a = Float32Array.from(aLog, (v) => -Math.exp(v));
      layers.push({
        norm: await vec(`${pre}.norm.weight`),
        inProj: await mat(`${pre}.mixer.in_proj.weight`, cfg.dInProj, cfg.dModel),
        convWeight: await vec(`${pre}.mixer.conv1d.weight`),
        convBias: await vec(`${pre}.mixer.conv1d.bias`),
        dtBias: await vec(`${pre}.mixer.dt_bias`),
        a: uploadBuffer(gpu, a, `${pre}.A`),
        d: await vec(`${pre}.mixer.D`),
        gatedNorm: await vec(`${pre}.mixer.norm.weight`),
        outProj: await mat(`${pre}.mixer.out_proj.weight`, cfg.dModel, cfg.dInner),
      });
      // let the queue apply this layer's uploads (each queued write holds a staging copy until then)
      await gpu.device.queue.onSubmittedWorkDone();
    }
    const normF = await vec("backbone.norm_f.weight");
    // every layer has the same shapes: the kernels of layer 0's and the head's suffice
    await ops.warmUp([lmHead, layers[0].inProj, layers[0].outProj], cfg);
    return new Mamba2Model(gpu, cfg, ops, embedding, lmHead, layers, normF, dtype);
  }

  destroy(): void {
    destroyWeight(this.embedding);
    if (this.lmHead !== this.embedding) destroyWeight(this.lmHead);
    for (const l of this.layers) {
      for (const b of [l.norm, l.convWeight, l.convBias, l.dtBias, l.a, l.d, l.gatedNorm]) b.destroy();
      destroyWeight(l.inProj);
      destroyWeight(l.outProj);
    }
    this.normF.destroy();
    this.work.destroy();
  }

  /** Free the activation buffers kept between forwards (they are made again when needed). */
  releaseWorkspace(): void {
    this.work.destroy();
  }

  async forward(prompts: number[][], opts: ForwardOptions): Promise<Float32Array[]> {
    return (await this.forwardDetailed(prompts, opts)).logits;
  }

  async forwardDetailed(prompts: number[][], opts: ForwardOptions): Promise<ForwardResult> {
    this.checkInput(prompts, opts);
    const logits: Float32Array[] = opts.targets ? [] : new Array(prompts.length);
    const stats: TokenStats[] | undefined = opts.targets ? new Array(prompts.length) : undefined;
    const residuals: Float32Array[][] | undefined = opts.captureResiduals ? new Array(prompts.length) : undefined;
    // Similar lengths together keep the padding small; results go back in the caller's order.
    const order = prompts.map((_, i) => i).sort((x, y) => prompts[y].length - prompts[x].length);
    for (let start = 0; start < order.length;) {
      const seq = prompts[order[start]].length;
      const count = Math.min(order.length - start, this.maxBatch(seq, opts));
      const idx = order.slice(start, start + count);
      const res = await this.forwardBatch(idx.map((i) => prompts[i]), idx.map((i) => opts.knockouts?.[i]), {
        ...opts,
        targets: opts.targets && idx.map((i) => opts.targets![i]),
      });
      idx.forEach((i, k) => {
        if (stats) stats[i] = res.stats![k];
        else logits[i] = res.logits[k];
        if (residuals) residuals[i] = res.residuals![k];
      });
      start += count;
    }
    return { logits, stats, residuals };
  }

  /** p(target), p(max) and the argmax at each prompt's last position; only these come back from the GPU. */
  async forwardStats(prompts: number[][], targets: number[], opts: ForwardOptions): Promise<TokenStats[]> {
    return (await this.forwardDetailed(prompts, { ...opts, targets })).stats!;
  }

  /** How many prompts of padded length `seq` fit one pass within the adapter's binding size. */
  maxBatch(seq: number, opts: ForwardOptions): number {
    const c = this.config;
    const limit = this.gpu.maxBinding;
    let perPrompt = seq * 4 * Math.max(c.dInProj, c.convDim);
    if (opts.mode === "attention") perPrompt = Math.max(perPrompt, c.nheads * seq * seq * 4);
    if (opts.captureResiduals) perPrompt = Math.max(perPrompt, c.nLayer * seq * c.dModel * 4);
    const byBinding = Math.floor(limit / perPrompt);
    if (byBinding < 1) {
      throw new InputError(
        `a prompt of ${seq} tokens is too long for ${opts.mode} mode on this adapter (largest binding ${limit} bytes)`,
      );
    }
    // Bound the rows of one pass so activations stay a modest share of memory.
    return Math.max(1, Math.min(byBinding, Math.floor(8192 / seq)));
  }

  /** Throws InputError (one line) for ids, knockouts or targets the model cannot take. */
  checkInput(prompts: number[][], opts: ForwardOptions) {
    const c = this.config;
    if (opts.mode !== "scan" && opts.mode !== "attention") throw new InputError(`unknown mode ${opts.mode}: use scan or attention`);
    if (opts.knockouts?.some((k) => k && k.size > 0) && opts.mode !== "attention") {
      throw new InputError("knockouts need attention mode (scan mode has no attention matrix to edit)");
    }
    if (opts.knockouts && opts.knockouts.length !== prompts.length) {
      throw new InputError(`${opts.knockouts.length} knockout sets for ${prompts.length} prompts`);
    }
    if (opts.targets) {
      if (opts.targets.length !== prompts.length) throw new InputError(`${opts.targets.length} targets for ${prompts.length} prompts`);
      if (opts.allPositions) throw new InputError("targets give last-position statistics; they cannot be combined with allPositions");
      for (const t of opts.targets) {
        if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new InputError(`target id ${t} is out of range (0..${c.vocabSize - 1})`);
      }
    }
    prompts.forEach((ids, p) => {
      if (ids.length === 0) throw new InputError(`prompt ${p} is empty: give at least one token`);
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
          throw new InputError(`prompt ${p}: token id ${id} is out of range (ids are integers in 0..${c.vocabSize - 1})`);
        }
      }
      for (const [layer, edges] of opts.knockouts?.[p] ?? []) {
        if (!Number.isInteger(layer) || layer < 0 || layer >= c.nLayer) {
          throw new InputError(`knockout layer ${layer} does not exist (the model has layers 0..${c.nLayer - 1})`);
        }
        for (const [row, col] of edges) {
          if (!Number.isInteger(row) || !Number.isInteger(col) || row < 0 || row >= ids.length || col < 0 || col > row) {
            throw new InputError(
              `knockout edge (${row}, ${col}) in layer ${layer} is invalid for a ${ids.length}-token prompt (need 0 <= col <= row < ${ids.length})`,
            );
          }
        }
      }
    });
  }

  /**
   * One padded batch in one pass (the caller keeps it within maxBatch); `tap` sees each layer's
   * buffers while they are recorded.
   */
  forwardBatch(prompts: number[][], knockouts: (Knockout | undefined)[], opts: ForwardOptions, tap?: LayerTap): Promise<ForwardResult> {
    const run = this.queue.then(() => this.forwardBatchNow(prompts, knockouts, opts, tap));
    this.queue = run.catch(() => {});
    return run;
  }

  private async forwardBatchNow(prompts: number[][], knockouts: (Knockout | undefined)[], opts: ForwardOptions, tap?: LayerTap): Promise<ForwardResult> {
    const c = this.config, gpu = this.gpu, ops = this.ops, work = this.work;
    const B = prompts.length;
    const T = Math.max(...prompts.map((p) => p.length));
    const N = B * T;
    const owned: GPUBuffer[] = []; // made for this call only
    const buf = (bytes: number, label: string) => work.get(label, bytes);
    const upload = (data: Uint32Array, label: string) => {
      const b = work.get(label, data.byteLength);
      writeBuffer(gpu, b, data);
      return b;
    };

    try {
      // right padding: a causal model's position t never sees t' > t, so padding changes nothing
      const ids = new Uint32Array(N);
      prompts.forEach((p, b) => ids.set(p, b * T));
      const idsBuf = upload(ids, "ids");
      const lengths = upload(Uint32Array.from(prompts, (p) => p.length), "lengths");

      const resid = buf(N * c.dModel * 4, "residual"); // (N, D)
      const hidden = buf(N * c.dModel * 4, "hidden"); // (N, D)
      const zxbcdt = buf(N * c.dInProj * 4, "zxbcdt"); // (N, d_in_proj): z | xBC | dt
      const xbc = buf(N * c.convDim * 4, "xbc"); // (N, conv_dim): x | B | C after conv + SiLU
      const dt = buf(N * c.nheads * 4, "dt"); // (N, H)
      const y = buf(N * c.dInner * 4, "y"); // (N, d_inner)
      const yNorm = buf(N * c.dInner * 4, "y_norm"); // (N, d_inner)
      const attention = opts.mode === "attention";
      const gram = attention ? buf(B * c.ngroups * T * T * 4, "gram") : null; // (B, G, T, T)
      const mAttn = attention ? buf(B * c.nheads * T * T * 4, "attention") : null; // (B, H, T, T)
      let captured: GPUBuffer | null = null;
      if (opts.captureResiduals) owned.push(captured = storageBuffer(gpu, c.nLayer * N * c.dModel * 4, "captured"));

      const shape: SsdShape = {
        batch: B,
        seq: T,
        nheads: c.nheads,
        headdim: c.headdim,
        dState: c.dState,
        ngroups: c.ngroups,
        convDim: c.convDim,
        dInner: c.dInner,
      };
      const rec = new Recorder(gpu);
      ops.embed(rec, idsBuf, N, this.embedding, resid);
      for (let l = 0; l < c.nLayer; l++) {
        const w = this.layers[l];
        // 1. hidden = RMSNorm(residual)
        ops.rmsnorm(rec, resid, w.norm, hidden, N, c.dModel, NORM_EPS);
        // 2. (z, xBC, dt) = in_proj(hidden)
        ops.matmul(rec, hidden, w.inProj, zxbcdt, N);
        // 3. xBC = SiLU(conv1d(xBC)), causal within each prompt
        ops.conv1dSilu(rec, zxbcdt, w.convWeight, w.convBias, xbc, {
          rows: N,
          seq: T,
          convDim: c.convDim,
          dConv: c.dConv,
          inStride: c.dInProj,
          inOffset: c.dInner,
        });
        // 4. dt = softplus(dt + dt_bias)
        ops.dtSoftplus(rec, zxbcdt, w.dtBias, dt, { rows: N, nheads: c.nheads, inStride: c.dInProj, inOffset: c.dInner + c.convDim });
        // 5. y = SSD(x, dt, A, B, C) + D x
        if (attention) {
          ops.ssdGram(rec, xbc, gram!, shape);
          ops.ssdAttentionMatrix(rec, gram!, dt, w.a, this.knockoutMask(l, knockouts, B, T, owned), mAttn!, shape);
          ops.ssdAttentionApply(rec, mAttn!, xbc, dt, w.d, y, shape);
        } else {
          ops.ssdScan(rec, xbc, dt, w.a, w.d, lengths, y, shape);
        }
        tap?.(rec, l, { resid, zxbcdt, xbc, dt });
        // 6. y = RMSNorm(y * SiLU(z))
        ops.gatedRmsnorm(rec, y, zxbcdt, w.gatedNorm, yNorm, { rows: N, dInner: c.dInner, ngroups: c.ngroups, zStride: c.dInProj, eps: NORM_EPS });
        // 7. residual += out_proj(y)
        ops.matmul(rec, yNorm, w.outProj, resid, N, { accumulate: true });
        if (captured) rec.copy(resid, 0, captured, l * N * c.dModel * 4, N * c.dModel * 4);
      }
      // the outputs' first block goes in the same submission
      const out = await this.readOutputs(rec, resid, prompts, T, opts);
      let residuals: Float32Array[][] | undefined;
      if (captured) {
        const all = new Float32Array(await readBuffer(gpu, captured, c.nLayer * N * c.dModel * 4));
        residuals = prompts.map((p, b) =>
          Array.from({ length: c.nLayer }, (_, l) => all.slice((l * N + b * T) * c.dModel, (l * N + b * T + p.length) * c.dModel))
        );
      }
      return { ...out, residuals };
    } finally {
      if (owned.length) {
        await gpu.device.queue.onSubmittedWorkDone();
        for (const b of owned) b.destroy();
      }
    }
  }

  /** (B, T, T) u32 mask of layer l's knocked-out edges, or null when the layer has none. */
  private knockoutMask(l: number, knockouts: (Knockout | undefined)[], B: number, T: number, owned: GPUBuffer[]): GPUBuffer | null {
    let mask: Uint32Array | null = null;
    knockouts.forEach((k, b) => {
      for (const [row, col] of k?.get(l) ?? []) {
        mask ??= new Uint32Array(B * T * T);
        mask[(b * T + row) * T + col] = 1;
      }
    });
    if (!mask) return null;
    const buf = uploadBuffer(this.gpu, mask, `mask${l}`);
    owned.push(buf);
    return buf;
  }

  /**
   * norm_f and lm_head on the rows that are read (each prompt's last, or all real positions), in
   * blocks that fit a binding; with targets, only (max, lse, argmax, target logit) per row come back.
   */
  private async readOutputs(first: Recorder, resid: GPUBuffer, prompts: number[][], T: number, opts: ForwardOptions): Promise<ForwardResult> {
    const c = this.config, gpu = this.gpu, V = c.vocabPadded, work = this.work;
    const allPositions = opts.allPositions ?? false;
    const rows: number[] = [];
    prompts.forEach((p, b) => {
      if (allPositions) for (let t = 0; t < p.length; t++) rows.push(b * T + t);
      else rows.push(b * T + p.length - 1);
    });
    const targets = opts.targets;
    const width = targets ? 4 : V; // floats read back per row
    const out = new Float32Array(rows.length * width);
    const blockRows = Math.max(1, Math.min(rows.length, Math.floor(gpu.maxBinding / (V * 4))));
    const rowIdx = work.get("row_index", blockRows * 4);
    const picked = work.get("picked", blockRows * c.dModel * 4);
    const normed = work.get("normed", blockRows * c.dModel * 4);
    const logits = work.get("logits", blockRows * V * 4);
    const targetBuf = work.get("targets", blockRows * 4);
    const stats = work.get("stats", blockRows * 16);
    const staging = work.readback("readback", blockRows * width * 4);
    for (let r0 = 0; r0 < rows.length; r0 += blockRows) {
      const n = Math.min(blockRows, rows.length - r0);
      // queued writes land before the submission that follows them, whichever recorder it is
      gpu.device.queue.writeBuffer(rowIdx, 0, Uint32Array.from(rows.slice(r0, r0 + n)));
      const rec = r0 === 0 ? first : new Recorder(gpu);
      this.ops.gatherRows(rec, rowIdx, resid, picked, n, c.dModel);
      this.ops.rmsnorm(rec, picked, this.normF, normed, n, c.dModel, NORM_EPS);
      this.ops.matmul(rec, normed, this.lmHead, logits, n);
      if (targets) {
        gpu.device.queue.writeBuffer(targetBuf, 0, Uint32Array.from(targets.slice(r0, r0 + n)));
        this.ops.rowStats(rec, logits, targetBuf, stats, { rows: n, vocab: c.vocabSize, stride: V });
      }
      const bytes = n * width * 4;
      rec.copy(targets ? stats : logits, 0, staging, 0, Math.ceil(bytes / 4) * 4);
      rec.submit();
      await staging.mapAsync(GPUMapMode.READ, 0, Math.ceil(bytes / 4) * 4);
      out.set(new Float32Array(staging.getMappedRange(0, Math.ceil(bytes / 4) * 4).slice(0, bytes)), r0 * width);
      staging.unmap();
    }
    if (targets) return { logits: [], stats: statsFromRows(out, prompts.length) };
    const result: Float32Array[] = [];
    let r = 0;
    for (const p of prompts) {
      const n = allPositions ? p.length : 1;
      result.push(out.slice(r * V, (r + n) * V));
      r += n;
    }
    return { logits: result };
  }
}
