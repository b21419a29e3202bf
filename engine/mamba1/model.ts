// Mamba-1 and Falcon-Mamba layers on the generic backbone (engine/backbone.ts), in two modes:
//   scan:      the selective scan, as the model really runs (memory O(T));
//   attention: each channel's hidden attention alpha[t, c, s] materialised, so that chosen edges
//              (t, s) can be knocked out, in chosen channels, before it is applied;
// and in the knockout fast path's recompute of chosen rows. The layer's steps are written once
// (recordLayerSteps); the modes differ only in how the conv (step 3) and the SSM (step 6) read
// their inputs.
import type { Mode, ModelInfo } from "../arch.ts";
import type { BatchIO, LayerStack, RowsIO } from "../backbone.ts";
import { Backbone } from "../backbone.ts";
import type { Checkpoint } from "../checkpoint/mod.ts";
import type { LoadOptions } from "../families.ts";
import type { Gpu, Recorder } from "../gpu.ts";
import { WeightLoader } from "../loading.ts";
import { destroyWeight, type RowMap, type Weight } from "../matmul.ts";
import { Ops } from "../ops.ts";
import { type Mamba1Config, mamba1Units, parseMamba1Config } from "./config.ts";
import { type Mamba1Shape, Mamba1Ops } from "./ops.ts";
import { mamba1Tensors } from "./tensors.ts";

export interface LayerWeights {
  norm: GPUBuffer; // (D)
  inProj: Weight; // (2 d_inner, D): x | z
  convWeight: GPUBuffer; // (d_inner, d_conv)
  convBias: GPUBuffer; // (d_inner)
  xProjDt: Weight; // (dt_rank, d_inner): rows [0, dt_rank) of x_proj
  xProjBc: Weight; // (2 d_state, d_inner): rows [dt_rank, dt_rank + 2 d_state) of x_proj, B | C
  dtProj: Weight; // (d_inner, dt_rank)
  dtBias: GPUBuffer; // (d_inner) dt_proj's bias
  a: GPUBuffer; // (d_inner, d_state) A = -exp(A_log)
  d: GPUBuffer; // (d_inner)
  outProj: Weight; // (D, d_inner)
}

/** A layer's activation buffers, each (rows, width) for the rows it runs on. */
interface LayerBufs {
  resid: GPUBuffer; // (rows, D) input, updated in place
  hidden: GPUBuffer; // (rows, D)
  xz: GPUBuffer; // (rows, 2 d_inner): x | z
  x: GPUBuffer; // (rows, d_inner) after conv + SiLU
  dtRank: GPUBuffer; // (rows, dt_rank) x_proj's dt part (Falcon: normalised)
  bc: GPUBuffer; // (rows, 2 d_state) x_proj's B | C (Falcon: each normalised)
  dtRaw: GPUBuffer; // (rows, d_inner) dt_proj(dt_rank part), before the bias and softplus
  dt: GPUBuffer; // (rows, d_inner)
  y: GPUBuffer; // (rows, d_inner)
  yGated: GPUBuffer; // (rows, d_inner)
  /** Falcon-Mamba: x_proj's outputs before the weightless RMSNorm */
  raw: { dtRank: GPUBuffer; bc: GPUBuffer } | null;
}

export class Mamba1Stack implements LayerStack {
  readonly info: ModelInfo;
  /** the fast path keeps, per layer of the base run: in_proj's output (conv taps), x, dt and B|C (hidden attention) */
  readonly capture: Record<string, number>;

  constructor(
    readonly config: Mamba1Config,
    readonly ops: Ops,
    readonly m1: Mamba1Ops,
    readonly layers: LayerWeights[],
    readonly normF: GPUBuffer,
    /** Falcon-Mamba: ones, the weight of the weightless RMSNorm (max(dt_rank, d_state)) */
    readonly ones: GPUBuffer | null,
    /** per layer, per channel: sum_n exp(A[c, n]), in float64 from the checkpoint's A_log */
    private readonly decays: Float64Array[],
  ) {
    const c = config;
    this.info = {
      family: c.family,
      nLayer: c.nLayer,
      dModel: c.dModel,
      vocabSize: c.vocabSize,
      vocabPadded: c.vocabPadded,
      ...mamba1Units(c),
      config: Object.fromEntries(Object.entries(c).filter(([k]) => k !== "raw")),
    };
    this.capture = { xz: 2 * c.dInner, x: c.dInner, dt: c.dInner, bc: 2 * c.dState };
  }

  decay(layer: number): Float64Array {
    return Float64Array.from(this.decays[layer]);
  }

  bindingBytesPerPrompt(seq: number, mode: Mode): number {
    const c = this.config;
    const rows = seq * 4 * 2 * c.dInner;
    return mode === "attention" ? Math.max(rows, c.dInner * seq * seq * 4) : rows;
  }

  private shape(batch: number, seq: number): Mamba1Shape {
    return { batch, seq, dInner: this.config.dInner, dState: this.config.dState };
  }

  /**
   * One layer on `rows` rows: the step sequence of every mode. `conv` records step 3 (x from xz)
   * and `ssm` step 6 (y from x, dt, B, C), which are what the modes do differently.
   */
  private recordLayerSteps(rec: Recorder, l: number, rows: number, b: LayerBufs, conv: () => void, ssm: () => void, real: RowMap | null = null) {
    const c = this.config, w = this.layers[l], ops = this.ops;
    // the matmuls compute the real rows only: a padded batch's padding comes after a prompt's real
    // rows, and the conv and the SSM read positions <= t only (the scan stops at each prompt's length)
    const mRows = real ? real.count : rows, map = real ?? undefined;
    // 1. hidden = RMSNorm(residual)
    ops.rmsnorm(rec, b.resid, w.norm, b.hidden, rows, c.dModel, c.normEps);
    // 2. (x, z) = in_proj(hidden)
    ops.matmul(rec, b.hidden, w.inProj, b.xz, mRows, { rows: map });
    // 3. x = SiLU(conv1d(x)), causal within each prompt
    conv();
    // 4. (dt_rank part, B, C) = x_proj(x); Falcon-Mamba: each RMS-normalised without weight
    if (b.raw) {
      ops.matmul(rec, b.x, w.xProjDt, b.raw.dtRank, mRows, { rows: map });
      ops.matmul(rec, b.x, w.xProjBc, b.raw.bc, mRows, { rows: map });
      ops.rmsnorm(rec, b.raw.dtRank, this.ones!, b.dtRank, rows, c.dtRank, c.mixerRmsEps!);
      ops.rmsnorm(rec, b.raw.bc, this.ones!, b.bc, 2 * rows, c.dState, c.mixerRmsEps!); // B and C of each row apart
    } else {
      ops.matmul(rec, b.x, w.xProjDt, b.dtRank, mRows, { rows: map });
      ops.matmul(rec, b.x, w.xProjBc, b.bc, mRows, { rows: map });
    }
    // 5. dt = softplus(dt_proj(dt_rank part) + bias)
    ops.matmul(rec, b.dtRank, w.dtProj, b.dtRaw, mRows, { rows: map });
    ops.dtSoftplus(rec, b.dtRaw, w.dtBias, b.dt, { rows, width: c.dInner, at: { stride: c.dInner, offset: 0 } });
    // 6. y = SSM(x, dt, A, B, C) + D x
    ssm();
    // 7. y = y * SiLU(z)
    this.m1.gateSilu(rec, { y: b.y, xz: b.xz, out: b.yGated }, { rows, dInner: c.dInner, zStride: 2 * c.dInner, zOffset: c.dInner });
    // 8. residual += out_proj(y)
    ops.matmul(rec, b.yGated, w.outProj, b.resid, mRows, { accumulate: true, rows: map });
  }

  private buffers(resid: GPUBuffer, get: (name: string, floatsPerRow: number) => GPUBuffer): LayerBufs {
    const c = this.config;
    return {
      resid,
      hidden: get("hidden", c.dModel),
      xz: get("xz", 2 * c.dInner),
      x: get("x", c.dInner),
      dtRank: get("dt_rank", c.dtRank),
      bc: get("bc", 2 * c.dState),
      dtRaw: get("dt_raw", c.dInner),
      dt: get("dt", c.dInner),
      y: get("y", c.dInner),
      yGated: get("y_gated", c.dInner),
      raw: c.mixerRmsEps === null ? null : { dtRank: get("dt_rank_raw", c.dtRank), bc: get("bc_raw", 2 * c.dState) },
    };
  }

  recordLayer(rec: Recorder, l: number, io: BatchIO): Record<string, GPUBuffer> {
    const c = this.config, w = this.layers[l], N = io.N, work = io.work;
    const b = this.buffers(io.resid, (name, floats) => work.get(name, N * floats * 4));
    const s = this.shape(io.B, io.T);
    const ko = io.knockout;
    this.recordLayerSteps(rec, l, N, b, () =>
      this.ops.conv1dSilu(rec, b.xz, w.convWeight, w.convBias, b.x, {
        rows: N,
        seq: io.T,
        convDim: c.dInner,
        dConv: c.dConv,
        at: { stride: 2 * c.dInner, offset: 0 },
      }, ko?.taps ?? null), () => {
      if (io.mode === "attention") {
        const alpha = work.get("alpha", io.B * c.dInner * io.T * io.T * 4); // (B, d_inner, T, T)
        this.m1.hiddenAttention(rec, { dt: b.dt, a: w.a, bc: b.bc, alpha }, ko?.units ?? null, s);
        this.m1.hiddenAttentionApply(rec, { alpha, x: b.x, d: w.d, y: b.y }, s);
      } else {
        this.m1.selectiveScan(rec, { x: b.x, dt: b.dt, a: w.a, bc: b.bc, d: w.d, lengths: io.lengths, y: b.y }, s);
      }
    }, io.real);
    return { xz: b.xz, x: b.x, dt: b.dt, bc: b.bc };
  }

  rowsScratchFloats(maxLen: number): { total: number; largest: number } {
    const c = this.config;
    const widths = [c.dModel, 2 * c.dInner, c.dInner, c.dtRank, 2 * c.dState, c.dInner, c.dInner, c.dInner, c.dInner, c.dInner * maxLen];
    if (c.mixerRmsEps !== null) widths.push(c.dtRank, 2 * c.dState);
    return { total: widths.reduce((x, y) => x + y, 0), largest: Math.max(...widths) };
  }

  recordRowsLayer(rec: Recorder, l: number, io: RowsIO): void {
    const c = this.config, w = this.layers[l], n = io.n;
    const b = this.buffers(io.resid, io.scratch);
    const alphaRows = io.scratch("alpha", c.dInner * io.maxLen); // (rows, d_inner, maxLen)
    this.recordLayerSteps(rec, l, n, b, () =>
      this.ops.rowsConv1dSilu(rec, { rowsMeta: io.rowsMeta, src: b.xz, baseSrc: io.base.xz, weight: w.convWeight, bias: w.convBias, out: b.x }, {
        n,
        baseRows: io.baseRows,
        convDim: c.dInner,
        dConv: c.dConv,
        at: { stride: 2 * c.dInner, offset: 0 },
        layer: l,
      }), () => {
      this.m1.rowsHiddenAttention(rec, {
        rowsMeta: io.rowsMeta,
        colmask: io.colmask,
        unitSel: io.unitSel,
        dt: b.dt,
        bc: b.bc,
        baseDt: io.base.dt,
        baseBc: io.base.bc,
        a: w.a,
        alphaRows,
      }, { n, baseRows: io.baseRows, dInner: c.dInner, dState: c.dState, maxLen: io.maxLen, layer: l, nSel: io.nSel });
      this.m1.rowsHiddenAttentionApply(rec, { rowsMeta: io.rowsMeta, alphaRows, x: b.x, baseX: io.base.x, d: w.d, y: b.y }, {
        n,
        baseRows: io.baseRows,
        dInner: c.dInner,
        maxLen: io.maxLen,
      });
    });
  }

  finalNorm(rec: Recorder, x: GPUBuffer, out: GPUBuffer, rows: number): void {
    this.ops.rmsnorm(rec, x, this.normF, out, rows, this.config.dModel, this.config.normEps);
  }

  destroy(): void {
    for (const l of this.layers) {
      for (const b of [l.norm, l.convWeight, l.convBias, l.dtBias, l.a, l.d]) b.destroy();
      for (const m of [l.inProj, l.xProjDt, l.xProjBc, l.dtProj, l.outProj]) destroyWeight(m);
    }
    this.normF.destroy();
    this.ones?.destroy();
  }
}

/** Load a Mamba-1 / Falcon-Mamba checkpoint (its tensors checked by engine/families.ts loadModel) as a model on the backbone. */
export async function loadMamba1(gpu: Gpu, ckpt: Checkpoint, opts: LoadOptions): Promise<Backbone> {
  const dtype = opts.dtype ?? "f32";
  const cfg = parseMamba1Config(ckpt.config.raw);
  const names = mamba1Tensors(cfg);
  const ops = await Ops.create(gpu, { f16Kernel: opts.f16Kernel });
  const m1 = await Mamba1Ops.create(ops);
  const load = new WeightLoader(gpu, ckpt, dtype);
  const I = cfg.dInner, N = cfg.dState, R = cfg.dtRank;

  const { embedding, lmHead } = await load.head(names.embedding.name, names.lmHead.name, cfg);
  const layers: LayerWeights[] = [];
  const decays: Float64Array[] = [];
  for (const t of names.layers) {
    // A = -exp(A_log), formed in float64 on the host and rounded once; the decay sum_n exp(A) likewise
    const aLog = await load.f32(t.aLog.name);
    const decay = new Float64Array(I);
    for (let c = 0; c < I; c++) for (let n = 0; n < N; n++) decay[c] += Math.exp(-Math.exp(aLog[c * N + n]));
    decays.push(decay);
    layers.push({
      norm: await load.vector(t.norm.name),
      inProj: await load.matrix(t.inProj.name, 2 * I, cfg.dModel),
      convWeight: await load.vector(t.convWeight.name),
      convBias: await load.vector(t.convBias.name),
      xProjDt: await load.matrix(t.xProj.name, R, I, 0),
      xProjBc: await load.matrix(t.xProj.name, 2 * N, I, R),
      dtProj: await load.matrix(t.dtProjWeight.name, I, R),
      dtBias: await load.vector(t.dtProjBias.name),
      a: await load.vector(`${t.aLog.name}:A`, Float32Array.from(aLog, (v) => -Math.exp(v))),
      d: await load.vector(t.d.name),
      outProj: await load.matrix(t.outProj.name, cfg.dModel, I),
    });
  }
  const normF = await load.vector(names.normF.name);
  const ones = cfg.mixerRmsEps === null ? null : await load.vector("ones", new Float32Array(Math.max(R, N)).fill(1));
  await load.finish();
  // every layer has the same shapes: the kernels of layer 0's and the head's suffice
  const l0 = layers[0];
  await ops.mm.warmUp([lmHead, l0.inProj, l0.xProjDt, l0.xProjBc, l0.dtProj, l0.outProj]);
  const stack = new Mamba1Stack(cfg, ops, m1, layers, normF, ones, decays);
  return new Backbone(gpu, ops, stack, embedding, lmHead, dtype, load.bytes, opts.vocabSize);
}
