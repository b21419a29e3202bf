// Mamba-2 layers on the generic backbone (engine/backbone.ts), in two modes:
//   scan:      the recurrent SSD, as the model really runs (memory O(T));
//   attention: each layer's implicit attention matrix M materialised, so that chosen edges
//              (row, col) can be knocked out, in chosen heads, before it is applied;
// and in the knockout fast path's recompute of chosen rows. The layer's steps are written once
// (recordLayerSteps); the modes differ only in how steps 3 (conv) and 5 (SSD) read their inputs.
import type { Mode, ModelInfo } from "../arch.ts";
import type { BatchIO, LayerStack, RowsIO } from "../backbone.ts";
import { Backbone } from "../backbone.ts";
import type { Checkpoint } from "../checkpoint/mod.ts";
import type { LoadOptions } from "../families.ts";
import type { Gpu, Recorder } from "../gpu.ts";
import { WeightLoader } from "../loading.ts";
import { destroyWeight, type RowMap, type Weight } from "../matmul.ts";
import { Ops } from "../ops.ts";
import { type Mamba2Config, mamba2Units, parseMamba2Config } from "./config.ts";
import { Mamba2Ops, type SsdShape } from "./ops.ts";
import { mamba2Tensors } from "./tensors.ts";

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

/** A layer's activation buffers, each (rows, width) for the rows it runs on. */
interface LayerBufs {
  resid: GPUBuffer; // (rows, D) input, updated in place
  hidden: GPUBuffer; // (rows, D)
  zxbcdt: GPUBuffer; // (rows, d_in_proj): z | xBC | dt
  xbc: GPUBuffer; // (rows, conv_dim): x | B | C after conv + SiLU
  dt: GPUBuffer; // (rows, H) after softplus
  y: GPUBuffer; // (rows, d_inner)
  yNorm: GPUBuffer; // (rows, d_inner)
}

export class Mamba2Stack implements LayerStack {
  readonly info: ModelInfo;
  /** the fast path keeps, per layer of the base run: in_proj's output (conv taps), x|B|C and dt (SSD) */
  readonly capture: Record<string, number>;

  constructor(
    readonly config: Mamba2Config,
    readonly ops: Ops,
    readonly m2: Mamba2Ops,
    readonly layers: LayerWeights[],
    readonly normF: GPUBuffer,
    /** per layer, per head: exp(A) = exp(-exp(A_log)), in float64 from the checkpoint's A_log */
    private readonly decays: Float64Array[],
  ) {
    const c = config;
    this.info = {
      family: "mamba2",
      nLayer: c.nLayer,
      dModel: c.dModel,
      vocabSize: c.vocabSize,
      vocabPadded: c.vocabPadded,
      ...mamba2Units(c),
      config: Object.fromEntries(Object.entries(c).filter(([k]) => k !== "raw")),
    };
    this.capture = { zxbcdt: c.dInProj, xbc: c.convDim, dt: c.nheads };
  }

  decay(layer: number): Float64Array {
    return Float64Array.from(this.decays[layer]);
  }

  bindingBytesPerPrompt(seq: number, mode: Mode): number {
    const c = this.config;
    const rows = seq * 4 * Math.max(c.dInProj, c.convDim);
    return mode === "attention" ? Math.max(rows, c.nheads * seq * seq * 4) : rows;
  }

  private shape(batch: number, seq: number): SsdShape {
    const c = this.config;
    return { batch, seq, nheads: c.nheads, headdim: c.headdim, dState: c.dState, ngroups: c.ngroups, convDim: c.convDim, dInner: c.dInner };
  }

  /**
   * One layer on `rows` rows: the step sequence of every mode. `conv` records step 3 (xbc from
   * zxbcdt) and `ssd` step 5 (y from xbc and dt), which are what the modes do differently.
   */
  private recordLayerSteps(rec: Recorder, l: number, rows: number, b: LayerBufs, conv: () => void, ssd: () => void, real: RowMap | null = null) {
    const c = this.config, w = this.layers[l], ops = this.ops;
    // the matmuls compute the real rows only (a padded batch's padding is never read by them)
    const mRows = real ? real.count : rows;
    // 1. hidden = RMSNorm(residual)
    ops.rmsnorm(rec, b.resid, w.norm, b.hidden, rows, c.dModel, c.normEps);
    // 2. (z, xBC, dt) = in_proj(hidden)
    ops.matmul(rec, b.hidden, w.inProj, b.zxbcdt, mRows, { rows: real ?? undefined });
    // 3. xBC = SiLU(conv1d(xBC)), causal within each prompt
    conv();
    // 4. dt = clamp(softplus(dt + dt_bias), dt_limit)
    ops.dtSoftplus(rec, b.zxbcdt, w.dtBias, b.dt, { rows, width: c.nheads, at: { stride: c.dInProj, offset: c.dInner + c.convDim }, limit: c.dtLimit });
    // 5. y = SSD(x, dt, A, B, C) + D x
    ssd();
    // 6. y = RMSNorm_group(y * SiLU(z))
    this.m2.gatedRmsnorm(rec, b.y, b.zxbcdt, w.gatedNorm, b.yNorm, { rows, dInner: c.dInner, ngroups: c.ngroups, zStride: c.dInProj, eps: c.gatedNormEps });
    // 7. residual += out_proj(y)
    ops.matmul(rec, b.yNorm, w.outProj, b.resid, mRows, { accumulate: true, rows: real ?? undefined });
  }

  recordLayer(rec: Recorder, l: number, io: BatchIO): Record<string, GPUBuffer> {
    const c = this.config, w = this.layers[l], N = io.N, work = io.work;
    const b: LayerBufs = {
      resid: io.resid,
      hidden: work.get("hidden", N * c.dModel * 4),
      zxbcdt: work.get("zxbcdt", N * c.dInProj * 4),
      xbc: work.get("xbc", N * c.convDim * 4),
      dt: work.get("dt", N * c.nheads * 4),
      y: work.get("y", N * c.dInner * 4),
      yNorm: work.get("y_norm", N * c.dInner * 4),
    };
    const s = this.shape(io.B, io.T);
    const ko = io.knockout;
    this.recordLayerSteps(rec, l, N, b, () =>
      this.ops.conv1dSilu(rec, b.zxbcdt, w.convWeight, w.convBias, b.xbc, {
        rows: N,
        seq: io.T,
        convDim: c.convDim,
        dConv: c.dConv,
        at: { stride: c.dInProj, offset: c.dInner },
      }, ko?.taps ?? null), () => {
      if (io.mode === "attention") {
        const gram = work.get("gram", io.B * c.ngroups * io.T * io.T * 4); // (B, G, T, T)
        const m = work.get("attention", io.B * c.nheads * io.T * io.T * 4); // (B, H, T, T)
        this.m2.ssdGram(rec, b.xbc, gram, s);
        this.m2.ssdAttentionMatrix(rec, gram, b.dt, w.a, ko?.units ?? null, m, s);
        this.m2.ssdAttentionApply(rec, m, b.xbc, b.dt, w.d, b.y, s);
      } else {
        this.m2.ssdScan(rec, b.xbc, b.dt, w.a, w.d, io.lengths, b.y, s);
      }
    }, io.real);
    return { zxbcdt: b.zxbcdt, xbc: b.xbc, dt: b.dt };
  }

  rowsScratchFloats(maxLen: number): { total: number; largest: number } {
    const c = this.config;
    const widths = [c.dModel, c.dInProj, c.convDim, c.nheads, c.nheads * maxLen, c.dInner, c.dInner];
    return { total: widths.reduce((x, y) => x + y, 0), largest: Math.max(...widths) };
  }

  recordRowsLayer(rec: Recorder, l: number, io: RowsIO): void {
    const c = this.config, w = this.layers[l], n = io.n;
    const b: LayerBufs = {
      resid: io.resid,
      hidden: io.scratch("hidden", c.dModel),
      zxbcdt: io.scratch("zxbcdt", c.dInProj),
      xbc: io.scratch("xbc", c.convDim),
      dt: io.scratch("dt", c.nheads),
      y: io.scratch("y", c.dInner),
      yNorm: io.scratch("y_norm", c.dInner),
    };
    const mRows = io.scratch("attention", c.nheads * io.maxLen); // (rows, H, maxLen)
    const baseXbc = io.base.xbc, baseDt = io.base.dt;
    this.recordLayerSteps(rec, l, n, b, () =>
      this.ops.rowsConv1dSilu(rec, { rowsMeta: io.rowsMeta, src: b.zxbcdt, baseSrc: io.base.zxbcdt, weight: w.convWeight, bias: w.convBias, out: b.xbc }, {
        n,
        baseRows: io.baseRows,
        convDim: c.convDim,
        dConv: c.dConv,
        at: { stride: c.dInProj, offset: c.dInner },
        layer: l,
      }), () => {
      this.m2.rowsSsdAttention(rec, { rowsMeta: io.rowsMeta, colmask: io.colmask, headSel: io.unitSel, xbc: b.xbc, dt: b.dt, baseXbc, baseDt, a: w.a, mRows }, {
        n,
        baseRows: io.baseRows,
        nheads: c.nheads,
        ngroups: c.ngroups,
        dState: c.dState,
        convDim: c.convDim,
        dInner: c.dInner,
        maxLen: io.maxLen,
        layer: l,
        nSel: io.nSel,
      });
      this.m2.rowsSsdAttentionApply(rec, { rowsMeta: io.rowsMeta, mRows, xbc: b.xbc, dt: b.dt, baseXbc, baseDt, d: w.d, y: b.y }, {
        n,
        baseRows: io.baseRows,
        nheads: c.nheads,
        headdim: c.headdim,
        convDim: c.convDim,
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
      for (const b of [l.norm, l.convWeight, l.convBias, l.dtBias, l.a, l.d, l.gatedNorm]) b.destroy();
      destroyWeight(l.inProj);
      destroyWeight(l.outProj);
    }
    this.normF.destroy();
  }
}

/** Load a Mamba-2 checkpoint (its tensors checked by engine/families.ts loadModel) as a model on the backbone. */
export async function loadMamba2(gpu: Gpu, ckpt: Checkpoint, opts: LoadOptions): Promise<Backbone> {
  const dtype = opts.dtype ?? "f32";
  const cfg = parseMamba2Config(ckpt.config.raw);
  const names = mamba2Tensors(cfg);
  const ops = await Ops.create(gpu, { f16Kernel: opts.f16Kernel });
  const m2 = await Mamba2Ops.create(ops);
  // matrices are stored in `dtype` (f16 from an f32 checkpoint rounds to nearest even), streamed in pieces
  const load = new WeightLoader(gpu, ckpt, dtype);

  const { embedding, lmHead } = await load.head(names.embedding.name, names.lmHead.name, cfg);
  const layers: LayerWeights[] = [];
  const decays: Float64Array[] = [];
  for (const t of names.layers) {
    // A = -exp(A_log), formed in float64 on the host and rounded once; the decay exp(A) likewise
    const aLog = await load.f32(t.aLog.name);
    decays.push(Float64Array.from(aLog, (v) => Math.exp(-Math.exp(v))));
    layers.push({
      norm: await load.vector(t.norm.name),
      inProj: await load.matrix(t.inProj.name, cfg.dInProj, cfg.dModel),
      convWeight: await load.vector(t.convWeight.name),
      convBias: await load.vector(t.convBias.name),
      dtBias: await load.vector(t.dtBias.name),
      a: await load.vector(`${t.aLog.name}:A`, Float32Array.from(aLog, (v) => -Math.exp(v))),
      d: await load.vector(t.d.name),
      gatedNorm: await load.vector(t.gatedNorm.name),
      outProj: await load.matrix(t.outProj.name, cfg.dModel, cfg.dInner),
    });
  }
  const normF = await load.vector(names.normF.name);
  await load.finish();
  // every layer has the same shapes: the kernels of layer 0's and the head's suffice
  await ops.mm.warmUp([lmHead, layers[0].inProj, layers[0].outProj], (rec, scratch, out) => m2.warmUpScan(rec, scratch, out, cfg));
  const stack = new Mamba2Stack(cfg, ops, m2, layers, normF, decays);
  return new Backbone(gpu, ops, stack, embedding, lmHead, dtype, load.bytes, opts.vocabSize);
}
