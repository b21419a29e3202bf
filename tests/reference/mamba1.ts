// CPU reference of the Mamba-1 kernels (kernels/mamba1/*.wgsl) and of the whole Mamba-1 /
// Falcon-Mamba forward, in float64, on top of the shared reference (tests/reference/shared.ts). The
// spec the Mamba-1 kernels are tested against (tests/mamba1_test.ts), itself checked against the
// float64 golden logits of the fixture models.
//
// x, dt (N, dInner) per channel c; bc (N, 2 dState) rows are [B | C]; a (dInner, dState) = A =
// -exp(A_log); d (dInner) the skip D.

import type { Mamba1Config } from "../../engine/mamba1/config.ts";
import type { Mamba1Shape } from "../../engine/mamba1/ops.ts";
import { mamba1Tensors } from "../../engine/mamba1/tensors.ts";
import type { KnockoutSpec } from "../../engine/arch.ts";
import { conv1dSilu, dtSoftplus, embedding, layerKnockouts, matmul, metaOf, rmsnorm, rowOrBase, silu, tensorOf, type Vec, type Weights } from "./shared.ts";

/**
 * Scan form, y (N, dInner): per prompt b and channel c, from a zero state h (dState):
 *   h_t[n] = exp(dt_t A[c, n]) h_{t-1}[n] + dt_t x_t B_t[n],   y_t = sum_n h_t[n] C_t[n] + D x_t
 * for t < lengths[b]; padding rows stay 0.
 */
export function selectiveScan(x: Vec, dt: Vec, a: Vec, bc: Vec, d: Vec, lengths: Vec, s: Mamba1Shape): Float64Array {
  const I = s.dInner, S = s.dState;
  const y = new Float64Array(s.batch * s.seq * I);
  const h = new Float64Array(S);
  for (let b = 0; b < s.batch; b++) {
    for (let c = 0; c < I; c++) {
      h.fill(0);
      for (let t = 0; t < lengths[b]; t++) {
        const row = b * s.seq + t, dtT = dt[row * I + c], xT = x[row * I + c];
        let acc = 0;
        for (let n = 0; n < S; n++) {
          h[n] = Math.exp(dtT * a[c * S + n]) * h[n] + dtT * xT * bc[row * 2 * S + n];
          acc += h[n] * bc[row * 2 * S + S + n];
        }
        y[row * I + c] = acc + d[c] * xT;
      }
    }
  }
  return y;
}

/**
 * Attention form, step 1: alpha (batch, dInner, seq, seq), the hidden attention
 *   alpha[t, c, s] = sum_n C_t[n] exp(sum_{r = s+1..t} dt_r[c] A[c, n]) dt_s[c] B_s[n],   s <= t,
 * 0 above the diagonal and where the knockout blocks (t, s) in channel c: mask (batch, seq, seq)
 * holds k > 0 and row k - 1 of unitSets (sets, dInner) is nonzero at c.
 */
export function hiddenAttention(dt: Vec, a: Vec, bc: Vec, mask: Vec | null, unitSets: Vec | null, s: Mamba1Shape): Float64Array {
  const T = s.seq, I = s.dInner, S = s.dState;
  const alpha = new Float64Array(s.batch * I * T * T);
  for (let b = 0; b < s.batch; b++) {
    for (let c = 0; c < I; c++) {
      for (let t = 0; t < T; t++) {
        for (let u = 0; u <= t; u++) {
          const k = mask ? mask[(b * T + t) * T + u] : 0;
          if (k && unitSets && unitSets[(k - 1) * I + c]) continue;
          let seg = 0;
          for (let r = u + 1; r <= t; r++) seg += dt[(b * T + r) * I + c];
          let acc = 0;
          for (let n = 0; n < S; n++) acc += bc[(b * T + t) * 2 * S + S + n] * Math.exp(seg * a[c * S + n]) * bc[(b * T + u) * 2 * S + n];
          alpha[((b * I + c) * T + t) * T + u] = acc * dt[(b * T + u) * I + c];
        }
      }
    }
  }
  return alpha;
}

/** Attention form, step 2: y (N, dInner), y_t[c] = sum_{s <= t} alpha[t, c, s] x_s[c] + D[c] x_t[c]. */
export function hiddenAttentionApply(alpha: Vec, x: Vec, d: Vec, s: Mamba1Shape): Float64Array {
  const T = s.seq, I = s.dInner;
  const y = new Float64Array(s.batch * T * I);
  for (let b = 0; b < s.batch; b++) {
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < I; c++) {
        let acc = 0;
        for (let u = 0; u <= t; u++) acc += alpha[((b * I + c) * T + t) * T + u] * x[(b * T + u) * I + c];
        y[(b * T + t) * I + c] = acc + d[c] * x[(b * T + t) * I + c];
      }
    }
  }
  return y;
}

/** The output gate: out (rows, dInner) = y * silu(z), z = xz[:, zOffset + c] with row stride zStride. */
export function gateSilu(y: Vec, xz: Vec, s: { rows: number; dInner: number; zStride: number; zOffset: number }): Float64Array {
  const out = new Float64Array(s.rows * s.dInner);
  for (let r = 0; r < s.rows; r++) {
    for (let c = 0; c < s.dInner; c++) out[r * s.dInner + c] = y[r * s.dInner + c] * silu(xz[r * s.zStride + s.zOffset + c]);
  }
  return out;
}

/** rows_hidden_attention: alphaRows (n, dInner, maxLen), row t of every channel's masked hidden attention per recomputed row. */
export function rowsHiddenAttention(
  rowsMeta: Vec,
  colmask: Vec,
  unitSel: Vec,
  dt: Vec,
  bc: Vec,
  baseDt: Vec,
  baseBc: Vec,
  a: Vec,
  s: { n: number; dInner: number; dState: number; maxLen: number; layer: number; nSel: number },
): Float64Array {
  const I = s.dInner, S = s.dState;
  const out = new Float64Array(s.n * I * s.maxLen);
  for (let i = 0; i < s.n; i++) {
    const m = metaOf(rowsMeta, i);
    for (let c = 0; c < I; c++) {
      const blocks = m.inWindow(s.layer) && unitSel[(s.layer * s.nSel + m.sel) * I + c] !== 0;
      for (let u = 0; u <= m.t; u++) {
        if (blocks && colmask[i * s.maxLen + u]) continue;
        let seg = 0;
        for (let r = u + 1; r <= m.t; r++) seg += rowOrBase(i, m, r, dt, baseDt, I, c);
        let acc = 0;
        for (let n = 0; n < S; n++) acc += bc[i * 2 * S + S + n] * Math.exp(seg * a[c * S + n]) * rowOrBase(i, m, u, bc, baseBc, 2 * S, n);
        out[(i * I + c) * s.maxLen + u] = acc * rowOrBase(i, m, u, dt, baseDt, I, c);
      }
    }
  }
  return out;
}

/** rows_hidden_attention_apply: y (n, dInner) = sum_{s <= t} alphaRows[i, c, s] x_s[c] + D[c] x_t[c]. */
export function rowsHiddenAttentionApply(rowsMeta: Vec, alphaRows: Vec, x: Vec, baseX: Vec, d: Vec, s: { n: number; dInner: number; maxLen: number }): Float64Array {
  const I = s.dInner;
  const y = new Float64Array(s.n * I);
  for (let i = 0; i < s.n; i++) {
    const m = metaOf(rowsMeta, i);
    for (let c = 0; c < I; c++) {
      let acc = 0;
      for (let u = 0; u <= m.t; u++) acc += alphaRows[(i * I + c) * s.maxLen + u] * rowOrBase(i, m, u, x, baseX, I, c);
      y[i * I + c] = acc + d[c] * x[i * I + c];
    }
  }
  return y;
}

// ---- the model ----

export type { Weights };

/**
 * Logits (T, vocabPadded) at every position of one prompt. Scan mode runs the recurrence;
 * attention mode materialises alpha, with each knockout's edges zeroed in the layers of its
 * window, in the channels its selector picks (ranked by sum_n exp(A[c, n])), and with `conv` the
 * conv taps of its edges removed (the D skip is not an edge).
 */
export function referenceForward(
  weights: Weights,
  cfg: Mamba1Config,
  ids: number[],
  opts: { mode: "scan" | "attention"; knockouts?: KnockoutSpec[] },
): Float64Array {
  if (opts.knockouts?.length && opts.mode !== "attention") throw new Error("knockouts need attention mode");
  const w = tensorOf(weights);
  const names = mamba1Tensors(cfg);
  const T = ids.length, D = cfg.dModel, I = cfg.dInner, S = cfg.dState, R = cfg.dtRank;
  const s: Mamba1Shape = { batch: 1, seq: T, dInner: I, dState: S };

  const resid = embedding(w(names.embedding.name), D, ids); // (T, D)
  names.layers.forEach((t, l) => {
    // 1. hidden (T, D) = RMSNorm(residual)
    const hidden = rmsnorm(resid, w(t.norm.name), T, D, cfg.normEps);
    // 2. xz (T, 2 I) = in_proj(hidden): x | z
    const xz = matmul(hidden, w(t.inProj.name), T, 2 * I, D);
    // this layer's knockouts: per blocked (t, u) one channel set, the conv taps of conv knockouts
    const aLog = w(t.aLog.name);
    const decay = Array.from({ length: I }, (_, c) => {
      let sum = 0;
      for (let n = 0; n < S; n++) sum += Math.exp(-Math.exp(aLog[c * S + n]));
      return sum;
    });
    const { mask, unitSets, taps } = layerKnockouts(opts.knockouts, l, T, decay, I, cfg.dConv);
    // 3. x (T, I) = SiLU(causal conv1d(x))
    const x = conv1dSilu(xz, w(t.convWeight.name), w(t.convBias.name), { rows: T, seq: T, convDim: I, dConv: cfg.dConv, inStride: 2 * I, inOffset: 0 }, taps);
    // 4. (dt_r, B, C) = x_proj(x); Falcon-Mamba: each RMS-normalised without weight
    const xProj = w(t.xProj.name);
    let dtR = matmul(x, Array.prototype.slice.call(xProj, 0, R * I), T, R, I);
    let bc = matmul(x, Array.prototype.slice.call(xProj, R * I), T, 2 * S, I);
    if (cfg.mixerRmsEps !== null) {
      dtR = rmsnorm(dtR, new Array(R).fill(1), T, R, cfg.mixerRmsEps);
      bc = rmsnorm(bc, new Array(S).fill(1), 2 * T, S, cfg.mixerRmsEps);
    }
    // 5. dt (T, I) = softplus(dt_proj(dt_r) + bias)
    const dtRaw = matmul(dtR, w(t.dtProjWeight.name), T, I, R);
    const dt = dtSoftplus(dtRaw, w(t.dtProjBias.name), { rows: T, width: I, inStride: I, inOffset: 0 });
    // 6. y (T, I) = SSM(x, dt, A, B, C) + D x, A = -exp(A_log)
    const a = Array.from(aLog, (v) => -Math.exp(v));
    const y = opts.mode === "scan"
      ? selectiveScan(x, dt, a, bc, w(t.d.name), [T], s)
      : hiddenAttentionApply(hiddenAttention(dt, a, bc, mask, unitSets, s), x, w(t.d.name), s);
    // 7. y * SiLU(z); 8. residual += out_proj(·)
    const gated = gateSilu(y, xz, { rows: T, dInner: I, zStride: 2 * I, zOffset: I });
    matmul(gated, w(t.outProj.name), T, D, I, { y: resid, accumulate: true });
  });
  // logits (T, vocabPadded) = lm_head(RMSNorm_f(residual)); lm_head is the embedding when tied
  const normed = rmsnorm(resid, w(names.normF.name), T, D, cfg.normEps);
  const head = cfg.tieEmbeddings || !weights.has(names.lmHead.name) ? w(names.embedding.name) : w(names.lmHead.name);
  return matmul(normed, head, T, cfg.vocabPadded, D);
}
