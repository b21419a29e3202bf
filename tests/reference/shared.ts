// CPU reference of every shared WGSL kernel (kernels/*.wgsl), in float64 (plain JS numbers). Plain
// loops and no tricks: this file is the spec the GPU kernels are tested against
// (tests/kernels_test.ts, tests/matmul_test.ts); each family's reference (tests/reference/<family>.ts)
// builds on it and is itself checked against its family's float64 golden logits.
//
// Layouts are those of the kernels: row-major (rows, cols). A batch of B prompts right-padded
// to length T is N = B*T rows; position t of prompt b is row b*T + t.
// Inputs may be Float32Array (what is uploaded to the GPU) or Float64Array; outputs are Float64Array.

import { type KnockoutSpec, selectByDecay } from "../../engine/arch.ts";

export type Vec = ArrayLike<number>;

export const NORM_EPS = 1e-5;

export function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/** PyTorch softplus (beta 1, threshold 20): v itself above 20, else log(1 + e^v). */
export function softplus(v: number): number {
  return v > 20 ? v : Math.log1p(Math.exp(v));
}

/** out (n, dModel) = table[ids]; table (vocab, dModel) */
export function embedding(table: Vec, dModel: number, ids: Vec): Float64Array {
  const out = new Float64Array(ids.length * dModel);
  for (let t = 0; t < ids.length; t++) {
    for (let c = 0; c < dModel; c++) out[t * dModel + c] = table[ids[t] * dModel + c];
  }
  return out;
}

/** out (rows, dim) = x / sqrt(mean(x^2) + eps) * weight; x (rows, dim), weight (dim) */
export function rmsnorm(x: Vec, weight: Vec, rows: number, dim: number, eps: number): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < dim; c++) ss += x[r * dim + c] ** 2;
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let c = 0; c < dim; c++) out[r * dim + c] = x[r * dim + c] * scale * weight[c];
  }
  return out;
}

/**
 * y[i, yCol + j] (+)= sum_k x[i, k] * w[j, k]: x (m, k) @ w^T, w (n, k) in PyTorch's (out, in)
 * layout; y (m, yStride), a new zero matrix unless given; accumulate adds into it.
 */
export function matmul(
  x: Vec,
  w: Vec,
  m: number,
  n: number,
  k: number,
  opts: { y?: Float64Array; yStride?: number; yCol?: number; accumulate?: boolean } = {},
): Float64Array {
  const yStride = opts.yStride ?? n, yCol = opts.yCol ?? 0;
  const y = opts.y ?? new Float64Array(m * yStride);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let kk = 0; kk < k; kk++) s += x[i * k + kk] * w[j * k + kk];
      const idx = i * yStride + yCol + j;
      y[idx] = opts.accumulate ? y[idx] + s : s;
    }
  }
  return y;
}

/**
 * out (rows, convDim) = silu(bias + causal depthwise conv1d over time) of the xBC slice
 * zxbcdt[:, inOffset : inOffset + convDim]; zxbcdt (rows, inStride), weight (convDim, dConv),
 * bias (convDim). Each prompt (seq rows) starts at t = 0: taps before it read zero.
 *   out[t, c] = silu(bias[c] + sum_j weight[c, j] * xBC[t + j - (dConv - 1), c])
 * Conv knockouts: tapMask (rows), bit `back` set removes the tap reading time t - back.
 */
export function conv1dSilu(
  zxbcdt: Vec,
  weight: Vec,
  bias: Vec,
  s: { rows: number; seq: number; convDim: number; dConv: number; inStride: number; inOffset: number },
  tapMask: Vec | null = null,
): Float64Array {
  const out = new Float64Array(s.rows * s.convDim);
  for (let row = 0; row < s.rows; row++) {
    const t = row % s.seq;
    for (let c = 0; c < s.convDim; c++) {
      let acc = bias[c];
      for (let j = 0; j < s.dConv; j++) {
        const src = t + j - (s.dConv - 1); // time read by tap j
        const removed = tapMask !== null && Math.floor(tapMask[row] / 2 ** (t - src)) % 2 === 1;
        if (src >= 0 && !removed) acc += weight[c * s.dConv + j] * zxbcdt[(row - t + src) * s.inStride + s.inOffset + c];
      }
      out[row * s.convDim + c] = silu(acc);
    }
  }
  return out;
}

/** dt (rows, width) = clamp(softplus(src[:, inOffset + h] + bias[h]), limit[0], limit[1]) (default: no clamp) */
export function dtSoftplus(
  src: Vec,
  bias: Vec,
  s: { rows: number; width: number; inStride: number; inOffset: number; limit?: [number, number] },
): Float64Array {
  const dt = new Float64Array(s.rows * s.width);
  const [lo, hi] = s.limit ?? [0, Infinity];
  for (let r = 0; r < s.rows; r++) {
    for (let h = 0; h < s.width; h++) dt[r * s.width + h] = Math.min(hi, Math.max(lo, softplus(src[r * s.inStride + s.inOffset + h] + bias[h])));
  }
  return dt;
}

/** out (rows.length, dim) = x[rows]; x (any, dim) */
export function gatherRows(rows: Vec, x: Vec, dim: number): Float64Array {
  const out = new Float64Array(rows.length * dim);
  for (let i = 0; i < rows.length; i++) {
    for (let c = 0; c < dim; c++) out[i * dim + c] = x[rows[i] * dim + c];
  }
  return out;
}

/**
 * stats (rows, 4) = (max, logsumexp, argmax, logits[target]) of each logits row (rows, stride) over
 * the ids < vocab; the argmax is the lowest id among equal maxima.
 */
export function rowStats(logits: Vec, targets: Vec, s: { rows: number; vocab: number; stride: number }): Float64Array {
  const out = new Float64Array(s.rows * 4);
  for (let r = 0; r < s.rows; r++) {
    let max = -Infinity, arg = 0;
    for (let v = 0; v < s.vocab; v++) {
      if (logits[r * s.stride + v] > max) [max, arg] = [logits[r * s.stride + v], v];
    }
    let sum = 0;
    for (let v = 0; v < s.vocab; v++) sum += Math.exp(logits[r * s.stride + v] - max);
    out.set([max, max + Math.log(sum), arg, logits[r * s.stride + targets[r]]], r * 4);
  }
  return out;
}

// ---- a family's forward ----

/** Tensors by their checkpoint names (backbone.layers.{i}.mixer.in_proj.weight, ...). */
export type Weights = Map<string, Vec>;

/** A tensor of `weights` by name; an Error naming a missing one. */
export function tensorOf(weights: Weights): (name: string) => Vec {
  return (name) => {
    const v = weights.get(name);
    if (!v) throw new Error(`reference: missing tensor ${name}`);
    return v;
  };
}

// ---- knockouts of one prompt in one layer ----

/**
 * The knockouts of a one-prompt forward in layer l, as the attention-form kernels take them: mask
 * (T, T), per blocked (t, s) the index + 1 of its unit set; unitSets (sets, nUnits), 1 = the unit is
 * blocked (the union over every spec blocking that edge, each spec's units picked by its selector
 * ranked by `decay`); taps (T), bit t - s set for every blocked edge of a conv spec with
 * 0 < t - s < dConv. All null when nothing is blocked.
 */
export function layerKnockouts(
  specs: KnockoutSpec[] | undefined,
  l: number,
  T: number,
  decay: ArrayLike<number>,
  nUnits: number,
  dConv: number,
): { mask: Float64Array | null; unitSets: number[] | null; taps: Float64Array | null } {
  let mask: Float64Array | null = null, taps: Float64Array | null = null;
  const unitSets: number[] = [];
  for (const k of (specs ?? []).filter((k) => k.start <= l && l < k.end)) {
    const units = new Set(selectByDecay(k.units ?? { kind: "all" }, decay, nUnits, `layer ${l}`));
    for (const [t, u] of k.edges) {
      mask ??= new Float64Array(T * T);
      if (!mask[t * T + u]) {
        mask[t * T + u] = unitSets.length / nUnits + 1;
        unitSets.push(...new Array(nUnits).fill(0));
      }
      const set = mask[t * T + u] - 1;
      for (let c = 0; c < nUnits; c++) if (units.has(c)) unitSets[set * nUnits + c] = 1;
      if (k.conv && t - u > 0 && t - u < dConv) {
        taps ??= new Float64Array(T);
        if (Math.floor(taps[t] / 2 ** (t - u)) % 2 === 0) taps[t] += 2 ** (t - u);
      }
    }
  }
  return { mask, unitSets: mask ? unitSets : null, taps };
}

// ---- the knockout fast path: recomputed rows ----
// A pass recomputes n rows; row i is position t of its prompt, one of the positions t0..len-1 of a
// configuration, stored consecutively (so position s >= t0 of the same configuration is row
// i - (t - s)). Positions s < t0 are read from the base run, whose position s of the row's prompt
// is base row base0 + s. rowsMeta (n, 8): (t, t0, base0, window start, window end, selector, tap
// mask, 0). In the window's layers, colmask (n, maxLen) marks the blocked columns of each row and
// the tap mask's bit `back` removes the conv tap from t - back; headSel (nLayer, nSel, nheads)
// says which heads a row's selector blocks in each layer.

export const metaOf = (rowsMeta: Vec, i: number) => ({
  t: rowsMeta[i * 8],
  t0: rowsMeta[i * 8 + 1],
  base0: rowsMeta[i * 8 + 2],
  inWindow: (l: number) => l >= rowsMeta[i * 8 + 3] && l < rowsMeta[i * 8 + 4],
  sel: rowsMeta[i * 8 + 5],
  taps: rowsMeta[i * 8 + 6],
});

/** Value of channel `ch` at position s (of row i's configuration) from the recomputed rows or the base run. */
export function rowOrBase(i: number, m: ReturnType<typeof metaOf>, src: number, rows: Vec, base: Vec, stride: number, ch: number): number {
  return src >= m.t0 ? rows[(i - (m.t - src)) * stride + ch] : base[(m.base0 + src) * stride + ch];
}

/** rows_conv_silu: out (n, convDim), conv1dSilu of each recomputed row (tap knockouts inside the window). */
export function rowsConv1dSilu(
  rowsMeta: Vec,
  zxbcdt: Vec,
  baseZxbcdt: Vec,
  weight: Vec,
  bias: Vec,
  s: { n: number; convDim: number; dConv: number; inStride: number; inOffset: number; layer: number },
): Float64Array {
  const out = new Float64Array(s.n * s.convDim);
  for (let i = 0; i < s.n; i++) {
    const m = metaOf(rowsMeta, i);
    for (let c = 0; c < s.convDim; c++) {
      let acc = bias[c];
      for (let back = 0; back < s.dConv && back <= m.t; back++) {
        if (m.inWindow(s.layer) && Math.floor(m.taps / 2 ** back) % 2 === 1) continue;
        acc += weight[c * s.dConv + s.dConv - 1 - back] * rowOrBase(i, m, m.t - back, zxbcdt, baseZxbcdt, s.inStride, s.inOffset + c);
      }
      out[i * s.convDim + c] = silu(acc);
    }
  }
  return out;
}
