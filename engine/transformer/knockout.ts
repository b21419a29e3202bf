// The exact knockout fast path of the Transformer families.
//
// A knockout blocks edges (t, s) with t >= t0 (t0 = its smallest blocked row) in layers
// [start, end). Rows below t0 never see a blocked edge nor (causally) any row that did, so they
// equal the unblocked run in every layer, and every row equals it below `start`. So per prompt one
// unblocked base run keeps, per layer, the input residual stream of every row and the keys and
// values of every position (the fused qkv after RoPE: a KV cache); then every configuration
// recomputes only its rows t0..T−1 from layer `start` up, reading the keys and values of positions
// below t0 from the cache (kernels/transformer/attention_probs.wgsl). All configurations of a group
// of prompts are the rows of one batch; sorted by `start`, the rows active in a layer are a prefix.
//
// Memory is bounded by the adapter's own limits: a group's cache holds n_layer × rows × (qkv + d_model)
// floats within maxBufferSize, each layer's part within one binding, and a batch of recomputed rows
// keeps all its buffers within one binding (TransformerModel.rowFloats).

import { Recorder, storageBuffer, uploadBuffer } from "../gpu.ts";
import { InputError, statsFromRows } from "../model.ts";
import type { TokenStats } from "../probs.ts";
import type { KnockoutConfig } from "./arch_types.ts";
import type { Pass, TransformerModel } from "./model.ts";
import { maskWords } from "./ops.ts";

/** A configuration placed in its group: which base prompt, which rows it recomputes. */
interface Item {
  k: KnockoutConfig;
  index: number; // in the caller's configs
  bi: number; // the prompt's index in its group
  len: number;
  t0: number; // first recomputed row
}

export async function transformerKnockouts(
  model: TransformerModel,
  prompts: number[][],
  baseTargets: number[],
  configs: KnockoutConfig[],
  onProgress?: (configsDone: number) => void,
): Promise<{ base: TokenStats[]; results: TokenStats[] }> {
  const c = model.config, gpu = model.gpu;
  if (baseTargets.length !== prompts.length) throw new InputError(`${baseTargets.length} base targets for ${prompts.length} prompts`);
  model.checkInput(prompts, { mode: "attention", targets: baseTargets });
  configs.forEach((k, i) => {
    const len = Number.isInteger(k.prompt) ? prompts[k.prompt]?.length : undefined;
    if (len === undefined) throw new InputError(`knockout configuration ${i} names prompt ${k.prompt}, which does not exist`);
    model.checkSpec(k, len, `knockout configuration ${i}`);
    model.checkTarget(k.target);
  });

  const base: TokenStats[] = new Array(prompts.length);
  const results: TokenStats[] = new Array(configs.length);
  let done = 0;
  const byPrompt = new Map<number, number[]>();
  configs.forEach((k, i) => byPrompt.set(k.prompt, [...(byPrompt.get(k.prompt) ?? []), i]));
  const capturePerRow = (c.nLayer * (model.stride + c.dModel)) * 4;
  const order = prompts.map((_, i) => i).sort((x, y) => prompts[y].length - prompts[x].length);
  for (let g0 = 0; g0 < order.length;) {
    const T = prompts[order[g0]].length;
    const fit = Math.min(
      Math.floor(gpu.maxBinding / (T * model.stride * 4)),
      Math.floor(gpu.limits.maxBufferSize / (T * capturePerRow)),
      model.maxBatch(T, {}),
    );
    if (fit < 1) throw new InputError(`a prompt of ${T} tokens is too long for the knockout cache on this adapter`);
    const group = order.slice(g0, g0 + fit);
    g0 += group.length;
    const items: Item[] = group.flatMap((p, bi) =>
      (byPrompt.get(p) ?? []).map((index) => {
        const k = configs[index], len = prompts[p].length;
        const t0 = k.edges.length ? Math.min(...k.edges.map((e) => e[0])) : len - 1;
        return { k, index, bi, len, t0 };
      })
    );
    await runGroup(model, group.map((p) => prompts[p]), group.map((p) => baseTargets[p]), items, (stats) => group.forEach((p, bi) => (base[p] = stats[bi])), (it, s) => {
      it.forEach((x, j) => (results[x.index] = s[j]));
      done += it.length;
      onProgress?.(done);
    });
  }
  return { base, results };
}

async function runGroup(
  model: TransformerModel,
  prompts: number[][],
  targets: number[],
  items: Item[],
  onBase: (stats: TokenStats[]) => void,
  onResults: (items: Item[], stats: TokenStats[]) => void,
): Promise<void> {
  const c = model.config, gpu = model.gpu, L = c.nLayer, D = c.dModel, stride = model.stride;
  const B = prompts.length, T = Math.max(...prompts.map((p) => p.length)), N = B * T;
  const owned: GPUBuffer[] = [];
  const buf = (bytes: number, label: string) => {
    const b = storageBuffer(gpu, bytes, label);
    owned.push(b);
    return b;
  };
  try {
    // 1. the base run, keeping every layer's input residual stream and its keys and values
    const capQkv = Array.from({ length: L }, (_, l) => buf(N * stride * 4, `cache_qkv${l}`));
    const capResid = Array.from({ length: L }, (_, l) => buf(N * D * 4, `cache_resid${l}`));
    const res = await model.forwardBatch(prompts, [], { mode: "attention", targets }, (rec, l, resid, qkv) => {
      rec.copy(qkv, 0, capQkv[l], 0, N * stride * 4);
      rec.copy(resid, 0, capResid[l], 0, N * D * 4);
    });
    onBase(res.stats!);

    // 2. the configurations, by window start, in batches whose buffers fit one binding
    const sorted = [...items].sort((x, y) => x.k.start - y.k.start);
    const maxRows = Math.floor(gpu.maxBinding / (4 * model.rowFloats(T)));
    for (let i = 0; i < sorted.length;) {
      const batch: Item[] = [];
      let rows = 0;
      while (i < sorted.length && rows + (sorted[i].len - sorted[i].t0) <= maxRows) {
        rows += sorted[i].len - sorted[i].t0;
        batch.push(sorted[i++]);
      }
      onResults(batch, await recompute(model, batch, T, capQkv, capResid));
    }
  } finally {
    await gpu.device.queue.onSubmittedWorkDone();
    for (const b of owned) b.destroy();
  }
}

/** The batch's rows t0..len−1 from each window's first layer up; the last row's statistics. */
async function recompute(model: TransformerModel, items: Item[], T: number, capQkv: GPUBuffer[], capResid: GPUBuffer[]): Promise<TokenStats[]> {
  const c = model.config, gpu = model.gpu, D = c.dModel, words = maskWords(c.nHead);
  const rowT0: number[] = [];
  let R = 0;
  for (const it of items) {
    rowT0.push(R);
    R += it.len - it.t0;
  }
  const meta = new Uint32Array(R * 8);
  const mask = new Uint32Array(R * T * words);
  let anyEdge = false;
  items.forEach((it, j) => {
    for (let t = it.t0; t < it.len; t++) meta.set([t, it.t0, rowT0[j], it.bi * T, it.k.start, it.k.end, 0, 0], (rowT0[j] + t - it.t0) * 8);
    const heads = model.selectUnits(it.k.start, it.k.units ?? { kind: "all" });
    for (const [t, s] of it.k.edges) {
      for (const h of heads) mask[((rowT0[j] + t - it.t0) * T + s) * words + (h >> 5)] |= 1 << (h & 31);
      anyEdge ||= heads.length > 0;
    }
  });
  // rows active in layer l: those of the configurations with start <= l (a prefix, items sorted by start)
  const activeFrom = items.map((it, j) => ({ start: it.k.start, end: rowT0[j] + it.len - it.t0 }));
  const active = (l: number) => activeFrom.findLast((a) => a.start <= l)?.end ?? 0;
  const owned: GPUBuffer[] = [];
  try {
    const metaBuf = uploadBuffer(gpu, meta, "ko_meta");
    owned.push(metaBuf);
    const maskBuf = anyEdge ? uploadBuffer(gpu, mask, "ko_mask") : null;
    if (maskBuf) owned.push(maskBuf);
    const pass: Pass = { rows: R, maxLen: T, meta: metaBuf, bufs: model.passBuffers("ko_", R, T), base: capQkv, mask: () => maskBuf, active };
    const rec = new Recorder(gpu);
    // each configuration starts from the base run's rows t0.. entering its window
    items.forEach((it, j) => rec.copy(capResid[it.k.start], (it.bi * T + it.t0) * D * 4, pass.bufs.resid, rowT0[j] * D * 4, (it.len - it.t0) * D * 4));
    for (let l = items[0].k.start; l < c.nLayer; l++) model.recordLayer(rec, pass, l);
    const last = items.map((it, j) => rowT0[j] + it.len - 1 - it.t0);
    const out = await model.readHead(rec, pass.bufs.resid, last, items.map((it) => it.k.target));
    return statsFromRows(out, items.length);
  } finally {
    await gpu.device.queue.onSubmittedWorkDone();
    for (const b of owned) b.destroy();
  }
}
