// The generic backbone of every family: token embedding, the residual stream through the family's
// layers, the final norm and the LM head; batching and padding, the workspace kept between
// forwards, read-back of logits or of next-token statistics, residual capture; input checks and the
// knockout masks of the full attention-mode forward (engine/fastpath.ts runs the fast path). What
// a layer does is the family's (a LayerStack, engine/<family>/).
//
// Shapes: B prompts, right-padded to T; N = B*T rows; D = d_model; V = the padded vocabulary.
import {
  checkKnockoutSpec,
  type ForwardOptions,
  type ForwardResult,
  formatUnitSelector,
  InputError,
  type KnockoutConfig,
  type KnockoutSpec,
  type LanguageModel,
  type Mode,
  type ModelInfo,
  selectByDecay,
  type UnitSelector,
} from "./arch.ts";
import { type Gpu, readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "./gpu.ts";
import { destroyWeight, type RowMap, type Weight, type WeightDtype } from "./matmul.ts";
import type { Ops } from "./ops.ts";
import { statsFromRows, type TokenStats } from "./probs.ts";
import { type FastPathBudget, knockoutFastPath } from "./fastpath.ts";
import { profile } from "./profile.ts";

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

/**
 * A layer's unit knockouts in the attention form (the families' attention kernels take it): for each
 * blocked edge of a padded batch, the set of units (channels, heads) it is blocked in.
 */
export interface UnitMask {
  /** (B, T, T) u32: 0 = kept, k > 0 = blocked in the units of row k - 1 of sets */
  mask: GPUBuffer;
  /** (nSets, units) u32: 1 = the unit is in the set */
  sets: GPUBuffer;
  nSets: number;
}

/**
 * A layer's knockouts in a padded batch (attention mode): `units` names for each blocked edge the
 * units it is blocked in, `taps` the conv taps removed.
 */
export interface LayerKnockout {
  units: UnitMask | null;
  /** (B*T) u32: bit t - s of row t set = the conv tap from s into t removed */
  taps: GPUBuffer | null;
}

/** What a layer of a padded batch works on. */
export interface BatchIO {
  mode: Mode;
  B: number;
  T: number;
  N: number; // B * T rows
  /** (N, D) the residual stream: the layer's input, to which it adds its output */
  resid: GPUBuffer;
  /** (B) u32, each prompt's length */
  lengths: GPUBuffer;
  /** scratch kept between forwards (buffers by name) */
  work: Workspace;
  /** this layer's knockouts, attention mode only */
  knockout: LayerKnockout | null;
  /**
   * the real positions among the N rows (null when nothing is padded): row-wise work that costs
   * (the matmuls) computes only these; what padded rows hold is never read by real ones
   */
  real: RowMap | null;
}

/**
 * What a layer of the fast path's recompute works on: n rows (a prefix of the pass's rows), each a
 * position t >= t0 of a configuration (engine/fastpath.ts, kernels/rows_conv_silu.wgsl's header).
 */
export interface RowsIO {
  layer: number;
  n: number; // active rows
  rows: number; // rows of the pass (the size of its buffers)
  maxLen: number; // padded length of the base batch: the stride of colmask
  baseRows: number; // rows of the base batch
  /** (rows, D) the residual stream of the recomputed rows */
  resid: GPUBuffer;
  /** (rows, 8) u32: (t, t0, base row of position 0, window start, window end, selector, tap mask, 0) */
  rowsMeta: GPUBuffer;
  /** (rows, maxLen) u32: 1 = edge (t, s) blocked inside the window */
  colmask: GPUBuffer;
  /** (n_layer, nSel, units) u32: 1 = selector k picks the unit in that layer */
  unitSel: GPUBuffer;
  nSel: number;
  /** this layer's activations in the base run, by the names of LayerStack.capture: (baseRows, width) */
  base: Record<string, GPUBuffer>;
  /** a (rows, floats) f32 buffer of the pass, by name */
  scratch(name: string, floatsPerRow: number): GPUBuffer;
}

/** What a family implements for the backbone: its layers, in both modes and in the fast path. */
export interface LayerStack {
  readonly info: ModelInfo;
  /** per unit of a layer, the decay selectors rank by; null when the family has none */
  decay(layer: number): Float64Array | null;
  /** the longest prompt the family takes (learned positions: GPT-2); absent = no limit */
  readonly maxLength?: number;
  /** record what the family adds to the token embedding of a padded batch (learned positions: GPT-2) */
  afterEmbedding?(rec: Recorder, io: BatchIO): void;
  /** bytes of the largest single buffer a layer needs per prompt of padded length `seq` */
  bindingBytesPerPrompt(seq: number, mode: Mode): number;
  /** record layer l of a padded batch; returns its activations by name (those in `capture` are kept by the fast path) */
  recordLayer(rec: Recorder, l: number, io: BatchIO): Record<string, GPUBuffer>;
  /** floats per position of each activation the fast path's recompute reads from the base run */
  readonly capture: Record<string, number>;
  /** floats per recomputed row of the scratch a pass's layers use: in all, and in the largest buffer */
  rowsScratchFloats(maxLen: number): { total: number; largest: number };
  /** record layer l of the fast path's recompute on the active rows */
  recordRowsLayer(rec: Recorder, l: number, io: RowsIO): void;
  /** out (rows, D) = the final norm of x (rows, D) */
  finalNorm(rec: Recorder, x: GPUBuffer, out: GPUBuffer, rows: number): void;
  destroy(): void;
}

/** Called around each layer while a batch is recorded (the fast path's base run keeps what it needs). */
export interface LayerTap {
  /** the residual stream entering layer l */
  before(rec: Recorder, l: number, resid: GPUBuffer): void;
  /** layer l's activations */
  after(rec: Recorder, l: number, acts: Record<string, GPUBuffer>): void;
}

/** Rows of one forward pass: similar-length prompts together keep padding small. */
const MAX_PASS_ROWS = 8192;

export class Backbone implements LanguageModel {
  readonly info: ModelInfo;
  private readonly work: Workspace;
  /** forwards run one at a time: they share the workspace */
  private queue: Promise<unknown> = Promise.resolve();
  /** selectUnits' results by `${layer}:${formatUnitSelector(sel)}` */
  private readonly selected = new Map<string, number[]>();

  constructor(
    readonly gpu: Gpu,
    readonly ops: Ops,
    readonly stack: LayerStack,
    readonly embedding: Weight,
    /** the embedding itself when tied */
    readonly lmHead: Weight,
    /** how the matrices are stored */
    readonly dtype: WeightDtype,
    /** bytes of every weight on the GPU */
    readonly weightBytes: number,
    /** the real vocabulary (engine/families.ts realVocabSize, LoadOptions.vocabSize); default the stack's */
    vocabSize?: number,
  ) {
    if (vocabSize !== undefined && !(Number.isInteger(vocabSize) && vocabSize >= 1 && vocabSize <= stack.info.vocabPadded)) {
      throw new InputError(`vocabulary size ${vocabSize} is not within the LM head's ${stack.info.vocabPadded} rows`);
    }
    this.info = vocabSize === undefined ? stack.info : { ...stack.info, vocabSize };
    this.work = new Workspace(gpu);
  }

  destroy(): void {
    destroyWeight(this.embedding);
    if (this.lmHead !== this.embedding) destroyWeight(this.lmHead);
    this.stack.destroy();
    this.work.destroy();
  }

  /** Free the activation buffers kept between forwards (they are made again when needed). */
  releaseWorkspace(): void {
    this.work.destroy();
  }

  decay(layer: number): Float64Array | null {
    this.checkLayer(layer);
    return this.stack.decay(layer);
  }

  /**
   * The units `sel` picks in `layer`, cached per layer and selector (the decays are fixed once
   * loaded): the array returned is shared, callers must not modify it. Errors are not cached.
   */
  selectUnits(layer: number, sel: UnitSelector): number[] {
    this.checkLayer(layer);
    const key = `${layer}:${formatUnitSelector(sel)}`;
    let units = this.selected.get(key);
    if (!units) {
      units = selectByDecay(sel, this.stack.decay(layer), this.info.unitsPerLayer, `layer ${layer}`);
      this.selected.set(key, units);
    }
    return units;
  }

  private checkLayer(layer: number) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.info.nLayer) {
      throw new InputError(`layer ${layer} does not exist (the model has layers 0..${this.info.nLayer - 1})`);
    }
  }

  knockouts(
    prompts: number[][],
    baseTargets: number[],
    configs: KnockoutConfig[],
    onProgress?: (configsDone: number) => void,
    budget?: FastPathBudget,
  ): Promise<{ base: TokenStats[]; results: TokenStats[] }> {
    return profile.time("forward", () => knockoutFastPath(this, prompts, baseTargets, configs, onProgress, budget));
  }

  async forward(prompts: number[][], opts: ForwardOptions): Promise<Float32Array[]> {
    return (await this.forwardDetailed(prompts, opts)).logits;
  }

  /** p(target), p(max) and the argmax at each prompt's last position; only these come back from the GPU. */
  async forwardStats(prompts: number[][], targets: number[], opts: ForwardOptions): Promise<TokenStats[]> {
    return (await this.forwardDetailed(prompts, { ...opts, targets })).stats!;
  }

  forwardDetailed(prompts: number[][], opts: ForwardOptions): Promise<ForwardResult> {
    return profile.time("forward", () => this.forwardBatches(prompts, opts));
  }

  private async forwardBatches(prompts: number[][], opts: ForwardOptions): Promise<ForwardResult> {
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

  /** How many prompts of padded length `seq` fit one pass within the adapter's binding size. */
  maxBatch(seq: number, opts: Pick<ForwardOptions, "mode" | "captureResiduals">): number {
    const D = this.info.dModel;
    const limit = this.gpu.maxBinding;
    let perPrompt = Math.max(seq * D * 4, this.stack.bindingBytesPerPrompt(seq, opts.mode));
    if (opts.captureResiduals) perPrompt = Math.max(perPrompt, this.info.nLayer * seq * D * 4);
    const byBinding = Math.floor(limit / perPrompt);
    if (byBinding < 1) {
      throw new InputError(`a prompt of ${seq} tokens is too long for ${opts.mode} mode on this adapter (largest binding ${limit} bytes)`);
    }
    // Bound the rows of one pass so activations stay a modest share of memory.
    return Math.max(1, Math.min(byBinding, Math.floor(MAX_PASS_ROWS / seq)));
  }

  /** Throws InputError (one line) for ids, knockouts or targets the model cannot take. */
  checkInput(prompts: number[][], opts: ForwardOptions): void {
    const info = this.info;
    if (!info.modes.includes(opts.mode)) throw new InputError(`unknown mode ${opts.mode}: ${info.family} models run in ${info.modes.join(" or ")} mode`);
    if (opts.knockouts?.some((k) => k && k.length > 0) && opts.mode !== "attention") {
      throw new InputError("knockouts need attention mode (scan mode has no attention matrix to edit)");
    }
    if (opts.knockouts && opts.knockouts.length !== prompts.length) {
      throw new InputError(`${opts.knockouts.length} knockout lists for ${prompts.length} prompts`);
    }
    if (opts.targets) {
      if (opts.targets.length !== prompts.length) throw new InputError(`${opts.targets.length} targets for ${prompts.length} prompts`);
      if (opts.allPositions) throw new InputError("targets give last-position statistics; they cannot be combined with allPositions");
      opts.targets.forEach((t) => this.checkTarget(t, "target"));
    }
    prompts.forEach((ids, p) => {
      if (ids.length === 0) throw new InputError(`prompt ${p} is empty: give at least one token`);
      const max = this.stack.maxLength;
      if (max !== undefined && ids.length > max) throw new InputError(`prompt ${p} has ${ids.length} tokens; ${info.family} models have positions for ${max} only`);
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= info.vocabSize) {
          throw new InputError(`prompt ${p}: token id ${id} is out of range (ids are integers in 0..${info.vocabSize - 1})`);
        }
      }
      (opts.knockouts?.[p] ?? []).forEach((k, i) => this.checkSpec(k, ids.length, `prompt ${p}, knockout ${i}`));
    });
  }

  /** InputError (one line) when a target id is not a token. */
  checkTarget(t: number, what: string): void {
    if (!Number.isInteger(t) || t < 0 || t >= this.info.vocabSize) throw new InputError(`${what} id ${t} is out of range (0..${this.info.vocabSize - 1})`);
  }

  /** InputError (one line) when a knockout cannot apply to a prompt of `length` tokens. */
  checkSpec(k: KnockoutSpec, length: number, what: string): void {
    checkKnockoutSpec(k, length, this.info, what);
    for (let l = k.start; l < k.end; l++) this.selectUnits(l, k.units ?? { kind: "all" });
  }

  /**
   * One padded batch in one pass (the caller keeps it within maxBatch); `tap` sees the residual
   * stream entering each layer and the layer's activations while they are recorded.
   */
  forwardBatch(prompts: number[][], knockouts: (KnockoutSpec[] | undefined)[], opts: ForwardOptions, tap?: LayerTap): Promise<ForwardResult> {
    return this.exclusive(() => this.runBatch(prompts, knockouts, opts, tap));
  }

  /** Run `fn` when no other forward runs (they share the workspace); `fn` may call runBatch and head. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** forwardBatch, for a caller inside exclusive(). */
  async runBatch(prompts: number[][], knockouts: (KnockoutSpec[] | undefined)[], opts: ForwardOptions, tap?: LayerTap): Promise<ForwardResult> {
    const info = this.info, gpu = this.gpu, work = this.work, D = info.dModel;
    const B = prompts.length;
    const T = Math.max(...prompts.map((p) => p.length));
    const N = B * T;
    const owned: GPUBuffer[] = []; // made for this call only
    const upload = (data: Uint32Array, label: string) => {
      const b = work.get(label, data.byteLength);
      writeBuffer(gpu, b, data);
      return b;
    };
    try {
      // right padding: a causal model's position t never sees t' > t, so padding changes nothing
      const ids = new Uint32Array(N);
      prompts.forEach((p, b) => ids.set(p, b * T));
      const resid = work.get("residual", N * D * 4); // (N, D)
      let captured: GPUBuffer | null = null;
      if (opts.captureResiduals) owned.push(captured = storageBuffer(gpu, info.nLayer * N * D * 4, "captured"));
      // the real rows, when some are padding: the matmuls skip the padding
      const nReal = prompts.reduce((s, p) => s + p.length, 0);
      let real: RowMap | null = null;
      if (nReal < N) {
        const map = new Uint32Array(nReal);
        let r = 0;
        prompts.forEach((p, b) => {
          for (let t = 0; t < p.length; t++) map[r++] = b * T + t;
        });
        real = { buffer: upload(map, "real_rows"), count: nReal, of: N };
      }
      const io: BatchIO = {
        mode: opts.mode,
        B,
        T,
        N,
        resid,
        lengths: upload(Uint32Array.from(prompts, (p) => p.length), "lengths"),
        work,
        knockout: null,
        real,
      };
      const rec = new Recorder(gpu);
      this.ops.embed(rec, upload(ids, "ids"), N, this.embedding, resid);
      this.stack.afterEmbedding?.(rec, io);
      for (let l = 0; l < info.nLayer; l++) {
        io.knockout = opts.mode === "attention" ? this.knockoutMasks(l, knockouts, B, T, owned) : null;
        tap?.before(rec, l, resid);
        const acts = this.stack.recordLayer(rec, l, io);
        tap?.after(rec, l, acts);
        if (captured) rec.copy(resid, 0, captured, l * N * D * 4, N * D * 4);
      }
      // the outputs' first block goes in the same submission
      const out = await this.readOutputs(rec, resid, prompts, T, opts);
      let residuals: Float32Array[][] | undefined;
      if (captured) {
        const all = new Float32Array(await profile.time("readback", () => readBuffer(gpu, captured!, info.nLayer * N * D * 4)));
        residuals = prompts.map((p, b) => Array.from({ length: info.nLayer }, (_, l) => all.slice((l * N + b * T) * D, (l * N + b * T + p.length) * D)));
      }
      return { ...out, residuals };
    } finally {
      if (owned.length) {
        await profile.time("gpu", () => gpu.device.queue.onSubmittedWorkDone());
        for (const b of owned) b.destroy();
      }
    }
  }

  /**
   * Layer l's knockouts of a padded batch, or null when it has none: the (B, T, T) mask naming
   * for each blocked edge its set of units (the union over every spec that blocks the edge here),
   * and the conv tap masks (bit t - s of row t for each blocked edge of a conv spec with
   * 0 < t - s < convWidth).
   */
  private knockoutMasks(l: number, knockouts: (KnockoutSpec[] | undefined)[], B: number, T: number, owned: GPUBuffer[]): LayerKnockout | null {
    const U = this.info.unitsPerLayer, width = this.info.convWidth;
    const blocked = new Map<number, Set<number>>(); // (b, t, s) index -> units
    let taps: Uint32Array | null = null;
    knockouts.forEach((specs, b) => {
      for (const k of specs ?? []) {
        if (l < k.start || l >= k.end) continue;
        const units = this.selectUnits(l, k.units ?? { kind: "all" });
        for (const [t, s] of k.edges) {
          const at = (b * T + t) * T + s;
          let set = blocked.get(at);
          if (!set) blocked.set(at, set = new Set());
          for (const u of units) set.add(u);
          if (k.conv && t - s > 0 && t - s < width) (taps ??= new Uint32Array(B * T))[b * T + t] |= 1 << (t - s);
        }
      }
    });
    if (blocked.size === 0 && !taps) return null;
    const upload = (data: Uint32Array, label: string) => {
      const buf = uploadBuffer(this.gpu, data, label);
      owned.push(buf);
      return buf;
    };
    let units: UnitMask | null = null;
    if (blocked.size) {
      const mask = new Uint32Array(B * T * T);
      const ids = new Map<string, number>();
      const sets: number[][] = [];
      for (const [at, set] of blocked) {
        const key = [...set].sort((x, y) => x - y).join(",");
        let id = ids.get(key);
        if (id === undefined) {
          ids.set(key, id = sets.length);
          sets.push([...set]);
        }
        mask[at] = id + 1;
      }
      const table = new Uint32Array(sets.length * U);
      sets.forEach((us, id) => us.forEach((u) => (table[id * U + u] = 1)));
      units = { mask: upload(mask, `mask${l}`), sets: upload(table, `unit_sets${l}`), nSets: sets.length };
    }
    return { units, taps: taps ? upload(taps, `tap_mask${l}`) : null };
  }

  /**
   * Final norm and LM head of `rows` (n rows of x, an (xRows, D) buffer), then the logits or, with
   * targets, their statistics, read back; in blocks of rows that fit a binding. `first` records the
   * first block (so that it goes in the caller's submission). Callers hold exclusive().
   */
  async head(first: Recorder, x: GPUBuffer, xRows: number, rows: number[], targets: number[] | undefined): Promise<Float32Array> {
    const info = this.info, gpu = this.gpu, V = info.vocabPadded, D = info.dModel, work = this.work;
    const width = targets ? 4 : V; // floats read back per row
    const out = new Float32Array(rows.length * width);
    const blockRows = Math.max(1, Math.min(rows.length, Math.floor(gpu.maxBinding / (V * 4))));
    const rowIdx = work.get("row_index", blockRows * 4);
    const picked = work.get("picked", blockRows * D * 4);
    const normed = work.get("normed", blockRows * D * 4);
    const logits = work.get("logits", blockRows * V * 4);
    const targetBuf = work.get("targets", blockRows * 4);
    const stats = work.get("stats", blockRows * 16);
    const staging = work.readback("readback", blockRows * width * 4);
    for (let r0 = 0; r0 < rows.length; r0 += blockRows) {
      const n = Math.min(blockRows, rows.length - r0);
      // queued writes land before the submission that follows them, whichever recorder it is
      gpu.device.queue.writeBuffer(rowIdx, 0, Uint32Array.from(rows.slice(r0, r0 + n)));
      const rec = r0 === 0 ? first : new Recorder(gpu);
      this.ops.gatherRows(rec, rowIdx, x, picked, n, D, xRows);
      this.stack.finalNorm(rec, picked, normed, n);
      this.ops.matmul(rec, normed, this.lmHead, logits, n);
      if (targets) {
        gpu.device.queue.writeBuffer(targetBuf, 0, Uint32Array.from(targets.slice(r0, r0 + n)));
        this.ops.rowStats(rec, logits, targetBuf, stats, { rows: n, vocab: info.vocabSize, stride: V });
      }
      const bytes = n * width * 4;
      rec.copy(targets ? stats : logits, 0, staging, 0, bytes);
      rec.submit();
      await profile.time("gpu", () => gpu.device.queue.onSubmittedWorkDone());
      await profile.time("readback", async () => {
        await staging.mapAsync(GPUMapMode.READ, 0, bytes);
        out.set(new Float32Array(staging.getMappedRange(0, bytes).slice(0)), r0 * width);
        staging.unmap();
      });
    }
    return out;
  }

  /** Logits of each prompt's last position (or of all its positions), or their statistics with targets. */
  private async readOutputs(first: Recorder, resid: GPUBuffer, prompts: number[][], T: number, opts: ForwardOptions): Promise<ForwardResult> {
    const V = this.info.vocabPadded;
    const allPositions = opts.allPositions ?? false;
    const rows: number[] = [];
    prompts.forEach((p, b) => {
      if (allPositions) for (let t = 0; t < p.length; t++) rows.push(b * T + t);
      else rows.push(b * T + p.length - 1);
    });
    const out = await this.head(first, resid, prompts.length * T, rows, opts.targets);
    if (opts.targets) return { logits: [], stats: statsFromRows(out, prompts.length) };
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
