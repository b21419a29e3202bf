// The exact fast path for knockouts into the last position.
//
// Blocking edges (last, s) changes only the last position's outputs: every earlier position is
// identical to the unblocked run in every layer, and layers below the window are untouched.
// So per prompt: one unblocked attention-mode base run that keeps, per layer, what the last
// position reads from earlier positions (in_proj output for the conv taps, x/B after the conv,
// dt) and the last position's residual stream; then every knockout configuration recomputes
// only its last position from its window's first layer up. All configurations of a group of
// prompts go through the GPU together, as the rows of one batch.
import type { Mamba2Model } from "./model.ts";
import { InputError, NORM_EPS, statsFromRows } from "./model.ts";
import { readBuffer, Recorder, storageBuffer, uploadBuffer } from "./gpu.ts";
import type { TokenStats } from "./probs.ts";

export interface LastRowKnockout {
  prompt: number; // index into the prompts
  start: number; // first blocked layer
  end: number; // one past the last blocked layer
  cols: number[]; // columns s of the last row blocked in layers [start, end)
  target: number; // token whose probability is reported
}

export interface KnockoutRun {
  base: TokenStats[]; // per prompt, unblocked (attention mode)
  results: TokenStats[]; // per configuration, in the given order
}

/** Bytes of base-run capture a group of prompts may hold at once. */
const CAPTURE_BUDGET = 768 * 1024 * 1024;

export async function lastRowKnockouts(
  model: Mamba2Model,
  prompts: number[][],
  baseTargets: number[],
  configs: LastRowKnockout[],
  onProgress?: (configsDone: number) => void,
): Promise<KnockoutRun> {
  const c = model.config;
  if (baseTargets.length !== prompts.length) throw new InputError(`${baseTargets.length} targets for ${prompts.length} prompts`);
  model.checkInput(prompts, { mode: "attention", targets: baseTargets });
  for (const k of configs) {
    const len = prompts[k.prompt]?.length;
    if (len === undefined) throw new InputError(`knockout configuration names prompt ${k.prompt}, which does not exist`);
    if (!(Number.isInteger(k.start) && Number.isInteger(k.end) && 0 <= k.start && k.start < k.end && k.end <= c.nLayer)) {
      throw new InputError(`knockout window [${k.start}, ${k.end}) is not within the model's ${c.nLayer} layers`);
    }
    for (const s of k.cols) {
      if (!Number.isInteger(s) || s < 0 || s >= len) throw new InputError(`knockout column ${s} is outside a ${len}-token prompt`);
    }
    if (!Number.isInteger(k.target) || k.target < 0 || k.target >= c.vocabSize) throw new InputError(`target id ${k.target} is out of range`);
  }

  const base: TokenStats[] = new Array(prompts.length);
  const results: TokenStats[] = new Array(configs.length);
  let done = 0;
  // group prompts so that one group's capture fits the budget and each per-layer buffer a binding
  const perPromptLayer = (len: number) => len * (c.dInProj + c.convDim + c.nheads) * 4;
  const order = prompts.map((_, i) => i).sort((x, y) => prompts[y].length - prompts[x].length);
  for (let g0 = 0; g0 < order.length;) {
    const T = prompts[order[g0]].length;
    const fit = Math.min(
      Math.floor(CAPTURE_BUDGET / (c.nLayer * perPromptLayer(T))),
      Math.floor(model.gpu.maxBinding / (T * c.dInProj * 4)),
      model.maxBatch(T, { mode: "attention" }),
    );
    const group = order.slice(g0, g0 + Math.max(1, fit));
    g0 += group.length;
    const groupConfigs = configs.map((k, i) => ({ k, i })).filter(({ k }) => group.includes(k.prompt));
    await runGroup(model, prompts, baseTargets, group, groupConfigs, base, results, (n) => {
      done += n;
      onProgress?.(done);
    });
  }
  return { base, results };
}

async function runGroup(
  model: Mamba2Model,
  prompts: number[][],
  baseTargets: number[],
  group: number[],
  configs: { k: LastRowKnockout; i: number }[],
  base: TokenStats[],
  results: TokenStats[],
  onProgress: (n: number) => void,
) {
  const c = model.config, gpu = model.gpu, ops = model.ops, L = c.nLayer, D = c.dModel;
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
    // 1. the base run, capturing per layer what the last row reads
    const capZx = Array.from({ length: L }, (_, l) => buf(N * c.dInProj * 4, `base_zxbcdt${l}`));
    const capXbc = Array.from({ length: L }, (_, l) => buf(N * c.convDim * 4, `base_xbc${l}`));
    const capDt = Array.from({ length: L }, (_, l) => buf(N * c.nheads * 4, `base_dt${l}`));
    const capResid = buf(L * B * D * 4, "base_last_residual"); // (L, B, D) input of each layer at the last position
    const res = await model.forwardBatch(groupPrompts, [], { mode: "attention", targets: group.map((p) => baseTargets[p]) }, (rec, l, b) => {
      rec.copy(b.zxbcdt, 0, capZx[l], 0, N * c.dInProj * 4);
      rec.copy(b.xbc, 0, capXbc[l], 0, N * c.convDim * 4);
      rec.copy(b.dt, 0, capDt[l], 0, N * c.nheads * 4);
      groupPrompts.forEach((p, bi) => rec.copy(b.resid, (bi * T + p.length - 1) * D * 4, capResid, (l * B + bi) * D * 4, D * 4));
    });
    group.forEach((p, bi) => (base[p] = res.stats![bi]));

    // 2. the configurations, sorted by window start so that the rows active in a layer are a prefix
    const sorted = [...configs].sort((x, y) => x.k.start - y.k.start);
    const maxRows = Math.max(1, Math.floor(gpu.maxBinding / (c.vocabPadded * 4)));
    for (let r0 = 0; r0 < sorted.length; r0 += maxRows) {
      const chunk = sorted.slice(r0, r0 + maxRows);
      const stats = await recomputeLastRows(chunk.map((x) => x.k), { capZx, capXbc, capDt, capResid });
      chunk.forEach((x, j) => (results[x.i] = stats[j]));
      onProgress(chunk.length);
    }
  } finally {
    await gpu.device.queue.onSubmittedWorkDone();
    for (const b of owned) b.destroy();
  }

  /** The configurations' last rows, from each window's first layer up; reads the base run's capture. */
  async function recomputeLastRows(
    ks: LastRowKnockout[],
    cap: { capZx: GPUBuffer[]; capXbc: GPUBuffer[]; capDt: GPUBuffer[]; capResid: GPUBuffer },
  ): Promise<TokenStats[]> {
    const n = ks.length;
    const mine: GPUBuffer[] = [];
    const tmp = (bytes: number, label: string) => {
      const b = storageBuffer(gpu, bytes, label);
      mine.push(b);
      return b;
    };
    try {
      const meta = new Uint32Array(n * 4);
      const colmask = new Uint32Array(n * T);
      const targets = new Uint32Array(n);
      ks.forEach((k, j) => {
        const bi = group.indexOf(k.prompt);
        const len = groupPrompts[bi].length;
        meta.set([bi * T + len - 1, len, k.start, k.end], j * 4);
        for (const s of k.cols) colmask[j * T + s] = 1;
        targets[j] = k.target;
      });
      const metaBuf = uploadBuffer(gpu, meta, "meta");
      const maskBuf = uploadBuffer(gpu, colmask, "colmask");
      const targetBuf = uploadBuffer(gpu, targets, "targets");
      mine.push(metaBuf, maskBuf, targetBuf);
      const r = tmp(n * D * 4, "last_residual"); // (n, D)
      const h = tmp(n * D * 4, "last_hidden"); // (n, D)
      const zx = tmp(n * c.dInProj * 4, "last_zxbcdt"); // (n, d_in_proj)
      const xbc = tmp(n * c.convDim * 4, "last_xbc"); // (n, conv_dim)
      const dt = tmp(n * c.nheads * 4, "last_dt"); // (n, H)
      const mRow = tmp(n * c.nheads * T * 4, "last_attention_row"); // (n, H, T)
      const y = tmp(n * c.dInner * 4, "last_y"); // (n, d_inner)
      const yNorm = tmp(n * c.dInner * 4, "last_y_norm"); // (n, d_inner)
      const logits = tmp(n * c.vocabPadded * 4, "last_logits"); // (n, V)
      const stats = tmp(n * 16, "stats"); // (n, 4)

      const rec = new Recorder(gpu);
      // each configuration starts from the base run's residual stream entering its window
      ks.forEach((k, j) => rec.copy(cap.capResid, (k.start * group.length + group.indexOf(k.prompt)) * D * 4, r, j * D * 4, D * 4));
      for (let l = ks[0].start; l < c.nLayer; l++) {
        const rows = ks.findLastIndex((k) => k.start <= l) + 1; // active configurations: a prefix
        const w = model.layers[l];
        ops.rmsnorm(rec, r, w.norm, h, rows, D, NORM_EPS);
        ops.matmul(rec, h, w.inProj, zx, rows);
        ops.lastRowConv1dSilu(rec, metaBuf, zx, cap.capZx[l], w.convWeight, w.convBias, xbc, {
          n: rows,
          convDim: c.convDim,
          dConv: c.dConv,
          inStride: c.dInProj,
          inOffset: c.dInner,
        });
        ops.dtSoftplus(rec, zx, w.dtBias, dt, { rows, nheads: c.nheads, inStride: c.dInProj, inOffset: c.dInner + c.convDim });
        ops.lastRowAttention(rec, { meta: metaBuf, colmask: maskBuf, xbc, dt, baseXbc: cap.capXbc[l], baseDt: cap.capDt[l], a: w.a, mRow }, {
          n: rows,
          nheads: c.nheads,
          ngroups: c.ngroups,
          dState: c.dState,
          convDim: c.convDim,
          dInner: c.dInner,
          maxLen: T,
          layer: l,
        });
        ops.lastRowAttentionApply(rec, { meta: metaBuf, mRow, xbc, dt, baseXbc: cap.capXbc[l], baseDt: cap.capDt[l], d: w.d, y }, {
          n: rows,
          nheads: c.nheads,
          headdim: c.headdim,
          convDim: c.convDim,
          dInner: c.dInner,
          maxLen: T,
        });
        ops.gatedRmsnorm(rec, y, zx, w.gatedNorm, yNorm, { rows, dInner: c.dInner, ngroups: c.ngroups, zStride: c.dInProj, eps: NORM_EPS });
        ops.matmul(rec, yNorm, w.outProj, r, rows, { accumulate: true });
      }
      ops.rmsnorm(rec, r, model.normF, h, n, D, NORM_EPS);
      ops.matmul(rec, h, model.lmHead, logits, n);
      ops.rowStats(rec, logits, targetBuf, stats, { rows: n, vocab: c.vocabSize, stride: c.vocabPadded });
      rec.submit();
      return statsFromRows(new Float32Array(await readBuffer(gpu, stats, n * 16)), n);
    } finally {
      await gpu.device.queue.onSubmittedWorkDone();
      for (const b of mine) b.destroy();
    }
  }
}
