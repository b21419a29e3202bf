// The exact knockout fast path of Mamba-2 (LanguageModel.knockouts).
//
// Blocking edges (t, s) with t >= t0 changes nothing at positions < t0, in any layer, and nothing
// below the window's first layer: position t only reads positions <= t, through the conv taps and
// the SSD. So per prompt one unblocked attention-mode base run keeps, per layer, what recomputed
// rows read from earlier positions (the in_proj output for the conv taps, x/B/C after the conv,
// dt) and the residual stream entering the layer; then every configuration recomputes only its
// rows t0..T-1 (t0 = its smallest blocked row) from its window's first layer up. The rows of all
// configurations of a group of prompts go through the GPU together, as the rows of one batch
// (configurations sorted by window start, so that the rows active in a layer are a prefix).
import { InputError, type KnockoutConfig, formatUnitSelector, type UnitSelector } from "./arch.ts";
import type { Mamba2Model } from "./model.ts";
import { NORM_EPS, statsFromRows } from "./model.ts";
import { readBuffer, Recorder, storageBuffer, uploadBuffer } from "./gpu.ts";
import type { TokenStats } from "./probs.ts";

/** How much memory the fast path may hold at once (tests make them small to force many groups and passes). */
export interface FastPathBudget {
  /** bytes of base-run capture of one group of prompts (default 768 MiB) */
  captureBytes: number;
  /** bytes of per-row activations of one recompute pass (default 512 MiB) */
  rowsBytes: number;
}
const DEFAULT_BUDGET: FastPathBudget = { captureBytes: 768 * 1024 * 1024, rowsBytes: 512 * 1024 * 1024 };

export async function knockoutFastPath(
  model: Mamba2Model,
  prompts: number[][],
  baseTargets: number[],
  configs: KnockoutConfig[],
  onProgress?: (configsDone: number) => void,
  budget: FastPathBudget = DEFAULT_BUDGET,
): Promise<{ base: TokenStats[]; results: TokenStats[] }> {
  const c = model.config;
  if (baseTargets.length !== prompts.length) throw new InputError(`${baseTargets.length} targets for ${prompts.length} prompts`);
  model.checkInput(prompts, { mode: "attention", targets: baseTargets });
  configs.forEach((k, i) => {
    const len = prompts[k.prompt]?.length;
    if (len === undefined) throw new InputError(`knockout configuration ${i} names prompt ${k.prompt}, which does not exist`);
    model.checkSpec(k, len, `knockout configuration ${i}`);
    if (!Number.isInteger(k.target) || k.target < 0 || k.target >= c.vocabSize) {
      throw new InputError(`knockout configuration ${i}: target id ${k.target} is out of range (0..${c.vocabSize - 1})`);
    }
  });

  const base: TokenStats[] = new Array(prompts.length);
  const results: TokenStats[] = new Array(configs.length);
  let done = 0;
  // group prompts so that one group's capture fits the budget and each per-layer buffer a binding
  const perPromptLayer = (len: number) => len * (c.dInProj + c.convDim + c.nheads + c.dModel) * 4;
  const order = prompts.map((_, i) => i).sort((x, y) => prompts[y].length - prompts[x].length);
  for (let g0 = 0; g0 < order.length;) {
    const T = prompts[order[g0]].length;
    const fit = Math.min(
      Math.floor(budget.captureBytes / (c.nLayer * perPromptLayer(T))),
      Math.floor(model.gpu.maxBinding / (T * c.dInProj * 4)),
      model.maxBatch(T, { mode: "attention" }),
    );
    const group = order.slice(g0, g0 + Math.max(1, fit));
    g0 += group.length;
    const groupConfigs = configs.map((k, i) => ({ k, i })).filter(({ k }) => group.includes(k.prompt));
    await runGroup(model, prompts, baseTargets, group, groupConfigs, base, results, budget.rowsBytes, (n) => {
      done += n;
      onProgress?.(done);
    });
  }
  return { base, results };
}

/** A configuration placed in a recompute pass: its rows are positions t0..len-1 of its prompt. */
interface Placed {
  k: KnockoutConfig;
  i: number; // index in the caller's configs
  bi: number; // index of its prompt in the group
  len: number;
  t0: number;
}

/** The base run's per-layer capture: (N, ·) buffers, N = batch × padded length. */
interface Capture {
  zx: GPUBuffer[]; // in_proj output
  xbc: GPUBuffer[]; // x | B | C after the conv
  dt: GPUBuffer[];
  resid: GPUBuffer[]; // the residual stream entering the layer
}

async function runGroup(
  model: Mamba2Model,
  prompts: number[][],
  baseTargets: number[],
  group: number[],
  configs: { k: KnockoutConfig; i: number }[],
  base: TokenStats[],
  results: TokenStats[],
  rowsBudget: number,
  onProgress: (n: number) => void,
) {
  const c = model.config, gpu = model.gpu, ops = model.ops, L = c.nLayer, D = c.dModel, H = c.nheads;
  const groupPrompts = group.map((p) => prompts[p]);
  const B = group.length;
  const T = Math.max(...groupPrompts.map((p) => p.length)); // padded length of the base batch
  const N = B * T;
  const owned: GPUBuffer[] = [];
  const buf = (bytes: number, label: string) => {
    const b = storageBuffer(gpu, bytes, label);
    owned.push(b);
    return b;
  };
  try {
    // 1. the base run, capturing per layer what recomputed rows read
    const cap: Capture = {
      zx: Array.from({ length: L }, (_, l) => buf(N * c.dInProj * 4, `base_zxbcdt${l}`)),
      xbc: Array.from({ length: L }, (_, l) => buf(N * c.convDim * 4, `base_xbc${l}`)),
      dt: Array.from({ length: L }, (_, l) => buf(N * H * 4, `base_dt${l}`)),
      resid: Array.from({ length: L }, (_, l) => buf(N * D * 4, `base_residual${l}`)), // entering layer l
    };
    const res = await model.forwardBatch(groupPrompts, [], { mode: "attention", targets: group.map((p) => baseTargets[p]) }, (rec, l, b) => {
      rec.copy(b.zxbcdt, 0, cap.zx[l], 0, N * c.dInProj * 4);
      rec.copy(b.xbc, 0, cap.xbc[l], 0, N * c.convDim * 4);
      rec.copy(b.dt, 0, cap.dt[l], 0, N * H * 4);
      rec.copy(b.resid, 0, cap.resid[l], 0, N * D * 4);
    });
    group.forEach((p, bi) => (base[p] = res.stats![bi]));

    // 2. the configurations, sorted by window start, in passes that fit the row budget
    const placed: Placed[] = configs.map(({ k, i }) => {
      const bi = group.indexOf(k.prompt), len = groupPrompts[bi].length;
      return { k, i, bi, len, t0: k.edges.reduce((m, [t]) => Math.min(m, t), len - 1) };
    }).sort((x, y) => x.k.start - y.k.start);
    const rowBytes = 4 * (2 * D + c.dInProj + c.convDim + H + H * T + 2 * c.dInner + T + 8);
    const maxRows = Math.max(T, Math.min(Math.floor(rowsBudget / rowBytes), Math.floor(gpu.maxBinding / (4 * Math.max(c.dInProj, H * T)))));
    const maxConfigs = Math.max(1, Math.floor(gpu.maxBinding / (c.vocabPadded * 4)));
    for (let p0 = 0; p0 < placed.length;) {
      let rows = 0, p1 = p0;
      while (p1 < placed.length && p1 - p0 < maxConfigs && (p1 === p0 || rows + placed[p1].len - placed[p1].t0 <= maxRows)) {
        rows += placed[p1].len - placed[p1].t0;
        p1++;
      }
      const pass = placed.slice(p0, p1);
      const stats = await recomputeRows(pass, cap);
      pass.forEach((x, j) => (results[x.i] = stats[j]));
      onProgress(pass.length);
      p0 = p1;
    }
  } finally {
    await gpu.device.queue.onSubmittedWorkDone();
    for (const b of owned) b.destroy();
  }

  /** The configurations' rows t0..len-1 from each window's first layer up; reads the base run's capture. */
  async function recomputeRows(pass: Placed[], cap: Capture): Promise<TokenStats[]> {
    const nc = pass.length;
    const offsets: number[] = []; // first row of each configuration
    let n = 0;
    for (const x of pass) {
      offsets.push(n);
      n += x.len - x.t0;
    }
    const mine: GPUBuffer[] = [];
    const tmp = (bytes: number, label: string) => {
      const b = storageBuffer(gpu, bytes, label);
      mine.push(b);
      return b;
    };
    const upload = (data: Uint32Array, label: string) => {
      const b = uploadBuffer(gpu, data, label);
      mine.push(b);
      return b;
    };
    try {
      // per row: (t, t0, base row of position 0, start, end, selector, tap mask, 0); colmask (n, T)
      const rowsMeta = new Uint32Array(n * 8);
      const colmask = new Uint32Array(n * T);
      const selIds = new Map<string, number>();
      const sels: UnitSelector[] = [];
      pass.forEach((x, j) => {
        const sel = x.k.units ?? { kind: "all" };
        const key = formatUnitSelector(sel);
        let id = selIds.get(key);
        if (id === undefined) {
          selIds.set(key, id = sels.length);
          sels.push(sel);
        }
        for (let t = x.t0; t < x.len; t++) rowsMeta.set([t, x.t0, x.bi * T, x.k.start, x.k.end, id, 0, 0], (offsets[j] + t - x.t0) * 8);
        for (const [t, s] of x.k.edges) {
          const row = offsets[j] + t - x.t0;
          colmask[row * T + s] = 1;
          if (x.k.conv && t - s > 0 && t - s < c.dConv) rowsMeta[row * 8 + 6] |= 1 << (t - s);
        }
      });
      // head_sel (L, nSel, H): the heads each selector picks, in the layers of some window
      const headSel = new Uint32Array(L * sels.length * H);
      const filled = new Set<string>();
      for (const x of pass) {
        const id = selIds.get(formatUnitSelector(x.k.units ?? { kind: "all" }))!;
        for (let l = x.k.start; l < x.k.end; l++) {
          if (filled.has(`${l}:${id}`)) continue;
          filled.add(`${l}:${id}`);
          for (const h of model.selectUnits(l, sels[id])) headSel[(l * sels.length + id) * H + h] = 1;
        }
      }
      const metaBuf = upload(rowsMeta, "rows_meta");
      const maskBuf = upload(colmask, "colmask");
      const selBuf = upload(headSel, "head_sel");
      const lastBuf = upload(Uint32Array.from(pass, (x, j) => offsets[j] + x.len - 1 - x.t0), "last_rows");
      const targetBuf = upload(Uint32Array.from(pass, (x) => x.k.target), "targets");
      const r = tmp(n * D * 4, "rows_residual"); // (n, D)
      const h = tmp(n * D * 4, "rows_hidden"); // (n, D)
      const zx = tmp(n * c.dInProj * 4, "rows_zxbcdt"); // (n, d_in_proj)
      const xbc = tmp(n * c.convDim * 4, "rows_xbc"); // (n, conv_dim)
      const dt = tmp(n * H * 4, "rows_dt"); // (n, H)
      const mRows = tmp(n * H * T * 4, "rows_attention"); // (n, H, T)
      const y = tmp(n * c.dInner * 4, "rows_y"); // (n, d_inner)
      const yNorm = tmp(n * c.dInner * 4, "rows_y_norm"); // (n, d_inner)
      const last = tmp(nc * D * 4, "last_residual"); // (nc, D)
      const lastNorm = tmp(nc * D * 4, "last_normed"); // (nc, D)
      const logits = tmp(nc * c.vocabPadded * 4, "last_logits"); // (nc, V)
      const stats = tmp(nc * 16, "stats"); // (nc, 4)

      const rec = new Recorder(gpu);
      // each configuration starts from the base run's residual stream entering its window
      pass.forEach((x, j) => rec.copy(cap.resid[x.k.start], (x.bi * T + x.t0) * D * 4, r, offsets[j] * D * 4, (x.len - x.t0) * D * 4));
      for (let l = pass[0].k.start, active = 0; l < L; l++) {
        while (active < nc && pass[active].k.start <= l) active++;
        const rows = active < nc ? offsets[active] : n; // the active configurations' rows: a prefix
        const w = model.layers[l];
        ops.rmsnorm(rec, r, w.norm, h, rows, D, NORM_EPS);
        ops.matmul(rec, h, w.inProj, zx, rows);
        ops.rowsConv1dSilu(rec, { rowsMeta: metaBuf, zxbcdt: zx, baseZxbcdt: cap.zx[l], weight: w.convWeight, bias: w.convBias, out: xbc }, {
          n: rows,
          convDim: c.convDim,
          dConv: c.dConv,
          inStride: c.dInProj,
          inOffset: c.dInner,
          layer: l,
        });
        ops.dtSoftplus(rec, zx, w.dtBias, dt, { rows, nheads: H, inStride: c.dInProj, inOffset: c.dInner + c.convDim });
        const baseXbc = cap.xbc[l], baseDt = cap.dt[l];
        ops.rowsSsdAttention(rec, { rowsMeta: metaBuf, colmask: maskBuf, headSel: selBuf, xbc, dt, baseXbc, baseDt, a: w.a, mRows }, {
          n: rows,
          nheads: H,
          ngroups: c.ngroups,
          dState: c.dState,
          convDim: c.convDim,
          dInner: c.dInner,
          maxLen: T,
          layer: l,
          nSel: sels.length,
        });
        ops.rowsSsdAttentionApply(rec, { rowsMeta: metaBuf, mRows, xbc, dt, baseXbc, baseDt, d: w.d, y }, {
          n: rows,
          nheads: H,
          headdim: c.headdim,
          convDim: c.convDim,
          dInner: c.dInner,
          maxLen: T,
        });
        ops.gatedRmsnorm(rec, y, zx, w.gatedNorm, yNorm, { rows, dInner: c.dInner, ngroups: c.ngroups, zStride: c.dInProj, eps: NORM_EPS });
        ops.matmul(rec, yNorm, w.outProj, r, rows, { accumulate: true });
      }
      ops.gatherRows(rec, lastBuf, r, last, nc, D);
      ops.rmsnorm(rec, last, model.normF, lastNorm, nc, D, NORM_EPS);
      ops.matmul(rec, lastNorm, model.lmHead, logits, nc);
      ops.rowStats(rec, logits, targetBuf, stats, { rows: nc, vocab: c.vocabSize, stride: c.vocabPadded });
      rec.submit();
      return statsFromRows(new Float32Array(await readBuffer(gpu, stats, nc * 16)), nc);
    } finally {
      await gpu.device.queue.onSubmittedWorkDone();
      for (const b of mine) b.destroy();
    }
  }
}
