// CPU reference of the Mamba-2 kernels (kernels/mamba2/*.wgsl) and of the whole Mamba-2 forward,
// in float64, on top of the shared reference (tests/reference/shared.ts). The spec the Mamba-2
// kernels are tested against (tests/mamba2_kernels_test.ts), itself checked against the float64
// golden logits of the fixture models.
//
// xbc (N, convDim) rows are [x (dInner) | B (ngroups*dState) | C (ngroups*dState)]; x channel
// c = h*headdim + p belongs to head h, and head h reads the B, C of group g = h / (nheads/ngroups).
// dt (N, nheads); a (nheads) = A = -exp(A_log); d (nheads) the skip D.

import type { Mamba2Config } from "../../engine/mamba2/config.ts";
import type { SsdShape } from "../../engine/mamba2/ops.ts";
import type { KnockoutSpec } from "../../engine/arch.ts";
import { conv1dSilu, dtSoftplus, embedding, layerKnockouts, matmul, metaOf, rmsnorm, rowOrBase, silu, tensorOf, type Vec, type Weights } from "./shared.ts";

const groupOf = (h: number, s: SsdShape) => Math.floor(h / (s.nheads / s.ngroups));
const bAt = (row: number, g: number, n: number, s: SsdShape) => row * s.convDim + s.dInner + g * s.dState + n;
const cAt = (row: number, g: number, n: number, s: SsdShape) => row * s.convDim + s.dInner + (s.ngroups + g) * s.dState + n;

/**
 * Scan form, y (N, dInner): per prompt b, head h, channel p, from a zero state h (dState):
 *   h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t * B_t
 *   y_t = C_t . h_t + D * x_t
 * for t < lengths[b]; padding rows stay 0 (the kernel leaves them unwritten).
 */
export function ssdScan(xbc: Vec, dt: Vec, a: Vec, d: Vec, lengths: Vec, s: SsdShape): Float64Array {
  const y = new Float64Array(s.batch * s.seq * s.dInner);
  const state = new Float64Array(s.dState);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.nheads; h++) {
      const g = groupOf(h, s);
      for (let p = 0; p < s.headdim; p++) {
        const c = h * s.headdim + p;
        state.fill(0);
        for (let t = 0; t < lengths[b]; t++) {
          const row = b * s.seq + t;
          const dtT = dt[row * s.nheads + h], x = xbc[row * s.convDim + c];
          const decay = Math.exp(dtT * a[h]);
          let acc = 0;
          for (let n = 0; n < s.dState; n++) {
            state[n] = decay * state[n] + dtT * x * xbc[bAt(row, g, n, s)];
            acc += xbc[cAt(row, g, n, s)] * state[n];
          }
          y[row * s.dInner + c] = acc + d[h] * x;
        }
      }
    }
  }
  return y;
}

/** Attention form, SSD step 1: gram (batch, ngroups, seq, seq), G[t, u] = C_t . B_u for u <= t, else 0. */
export function ssdGram(xbc: Vec, s: SsdShape): Float64Array {
  const T = s.seq;
  const gram = new Float64Array(s.batch * s.ngroups * T * T);
  for (let b = 0; b < s.batch; b++) {
    for (let g = 0; g < s.ngroups; g++) {
      for (let t = 0; t < T; t++) {
        for (let u = 0; u <= t; u++) {
          let acc = 0;
          for (let n = 0; n < s.dState; n++) acc += xbc[cAt(b * T + t, g, n, s)] * xbc[bAt(b * T + u, g, n, s)];
          gram[((b * s.ngroups + g) * T + t) * T + u] = acc;
        }
      }
    }
  }
  return gram;
}

/**
 * Attention form, SSD step 2: m (batch, nheads, seq, seq), the masked decay matrix
 *   M[t, u] = G[t, u] * exp(segsum(t, u)),  segsum(t, u) = sum_{r = u+1..t} dt_r * A,   u <= t,
 * 0 above the diagonal and where the knockout blocks (t, u) in head h: mask (batch, seq, seq)
 * holds k > 0 and row k - 1 of headSets (sets, nheads) is nonzero at h (without headSets, every
 * nonzero mask entry is blocked in every head).
 */
export function ssdAttentionMatrix(gram: Vec, dt: Vec, a: Vec, mask: Vec | null, s: SsdShape, headSets: Vec | null = null): Float64Array {
  const T = s.seq;
  const m = new Float64Array(s.batch * s.nheads * T * T);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.nheads; h++) {
      const g = groupOf(h, s);
      for (let t = 0; t < T; t++) {
        for (let u = 0; u <= t; u++) {
          const k = mask ? mask[(b * T + t) * T + u] : 0;
          if (k && (headSets === null || headSets[(k - 1) * s.nheads + h])) continue;
          let segsum = 0;
          for (let r = u + 1; r <= t; r++) segsum += dt[(b * T + r) * s.nheads + h] * a[h];
          m[((b * s.nheads + h) * T + t) * T + u] = gram[((b * s.ngroups + g) * T + t) * T + u] * Math.exp(segsum);
        }
      }
    }
  }
  return m;
}

/** Attention form, SSD step 3: y (N, dInner), y_t = sum_{u <= t} M[t, u] * dt_u * x_u + D * x_t. */
export function ssdAttentionApply(m: Vec, xbc: Vec, dt: Vec, d: Vec, s: SsdShape): Float64Array {
  const T = s.seq;
  const y = new Float64Array(s.batch * T * s.dInner);
  for (let b = 0; b < s.batch; b++) {
    for (let t = 0; t < T; t++) {
      const row = b * T + t;
      for (let c = 0; c < s.dInner; c++) {
        const h = Math.floor(c / s.headdim);
        let acc = 0;
        for (let u = 0; u <= t; u++) {
          const src = b * T + u;
          acc += m[((b * s.nheads + h) * T + t) * T + u] * dt[src * s.nheads + h] * xbc[src * s.convDim + c];
        }
        y[row * s.dInner + c] = acc + d[h] * xbc[row * s.convDim + c];
      }
    }
  }
  return y;
}

/**
 * Gated RMSNorm (gate before norm), per group of dInner/ngroups channels:
 *   g = y * silu(z),  out = g / sqrt(mean_group(g^2) + eps) * weight
 * y (rows, dInner); z = zxbcdt[:, 0 : dInner] with row stride zStride; weight (dInner).
 */
export function gatedRmsnorm(
  y: Vec,
  zxbcdt: Vec,
  weight: Vec,
  s: { rows: number; dInner: number; ngroups: number; zStride: number; eps: number },
): Float64Array {
  const out = new Float64Array(s.rows * s.dInner);
  const size = s.dInner / s.ngroups;
  const gated = new Float64Array(size);
  for (let r = 0; r < s.rows; r++) {
    for (let g = 0; g < s.ngroups; g++) {
      let ss = 0;
      for (let i = 0; i < size; i++) {
        const c = g * size + i;
        gated[i] = y[r * s.dInner + c] * silu(zxbcdt[r * s.zStride + c]);
        ss += gated[i] ** 2;
      }
      const scale = 1 / Math.sqrt(ss / size + s.eps);
      for (let i = 0; i < size; i++) out[r * s.dInner + g * size + i] = gated[i] * scale * weight[g * size + i];
    }
  }
  return out;
}

/** rows_ssd_attention: mRows (n, nheads, maxLen), row t of every head's masked attention matrix per recomputed row. */
export function rowsSsdAttention(
  rowsMeta: Vec,
  colmask: Vec,
  headSel: Vec,
  xbc: Vec,
  dt: Vec,
  baseXbc: Vec,
  baseDt: Vec,
  a: Vec,
  s: SsdShape & { n: number; maxLen: number; layer: number; nSel: number },
): Float64Array {
  const out = new Float64Array(s.n * s.nheads * s.maxLen);
  for (let i = 0; i < s.n; i++) {
    const m = metaOf(rowsMeta, i);
    for (let h = 0; h < s.nheads; h++) {
      const g = groupOf(h, s);
      const blocksHead = m.inWindow(s.layer) && headSel[(s.layer * s.nSel + m.sel) * s.nheads + h] !== 0;
      for (let u = 0; u <= m.t; u++) {
        if (blocksHead && colmask[i * s.maxLen + u]) continue;
        let gram = 0;
        for (let k = 0; k < s.dState; k++) {
          const bOff = s.dInner + g * s.dState + k;
          gram += xbc[i * s.convDim + s.dInner + (s.ngroups + g) * s.dState + k] * rowOrBase(i, m, u, xbc, baseXbc, s.convDim, bOff);
        }
        let segsum = 0;
        for (let r = u + 1; r <= m.t; r++) segsum += rowOrBase(i, m, r, dt, baseDt, s.nheads, h) * a[h];
        out[(i * s.nheads + h) * s.maxLen + u] = gram * Math.exp(segsum);
      }
    }
  }
  return out;
}

/** rows_ssd_attention_apply: y (n, dInner) = sum_{s <= t} mRows[i, h, s] dt_s x_s + D x_t. */
export function rowsSsdAttentionApply(
  rowsMeta: Vec,
  mRows: Vec,
  xbc: Vec,
  dt: Vec,
  baseXbc: Vec,
  baseDt: Vec,
  d: Vec,
  s: { n: number; nheads: number; headdim: number; convDim: number; dInner: number; maxLen: number },
): Float64Array {
  const y = new Float64Array(s.n * s.dInner);
  for (let i = 0; i < s.n; i++) {
    const m = metaOf(rowsMeta, i);
    for (let c = 0; c < s.dInner; c++) {
      const h = Math.floor(c / s.headdim);
      let acc = 0;
      for (let u = 0; u <= m.t; u++) {
        acc += mRows[(i * s.nheads + h) * s.maxLen + u] * rowOrBase(i, m, u, dt, baseDt, s.nheads, h) * rowOrBase(i, m, u, xbc, baseXbc, s.convDim, c);
      }
      y[i * s.dInner + c] = acc + d[h] * xbc[i * s.convDim + c];
    }
  }
  return y;
}

// ---- the model ----

export type { Weights };

/**
 * Logits (T, vocabPadded) at every position of one prompt. Scan mode runs the recurrence;
 * attention mode materialises M, with each knockout's edges zeroed in the layers of its window, in
 * the heads its selector picks (ranked by exp(-exp(A_log))), and with `conv` the conv taps of its
 * edges removed (the D skip is not an edge).
 */
export function referenceForward(
  weights: Weights,
  cfg: Mamba2Config,
  ids: number[],
  opts: { mode: "scan" | "attention"; knockouts?: KnockoutSpec[] },
): Float64Array {
  if (opts.knockouts?.length && opts.mode !== "attention") throw new Error("knockouts need attention mode");
  const w = tensorOf(weights);
  const T = ids.length, D = cfg.dModel, H = cfg.nheads;
  const s: SsdShape = {
    batch: 1,
    seq: T,
    nheads: H,
    headdim: cfg.headdim,
    dState: cfg.dState,
    ngroups: cfg.ngroups,
    convDim: cfg.convDim,
    dInner: cfg.dInner,
  };

  const embName = cfg.layout === "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  const resid = embedding(w(embName), D, ids); // (T, D)
  for (let l = 0; l < cfg.nLayer; l++) {
    const pre = `backbone.layers.${l}`;
    // 1. hidden (T, D) = RMSNorm(residual)
    const hidden = rmsnorm(resid, w(`${pre}.norm.weight`), T, D, cfg.normEps);
    // 2. zxbcdt (T, dInProj) = in_proj(hidden): z (dInner) | xBC (convDim) | dt (H)
    const zxbcdt = matmul(hidden, w(`${pre}.mixer.in_proj.weight`), T, cfg.dInProj, D);
    // 3. xbc (T, convDim) = SiLU(causal conv1d(xBC)): x (dInner) | B (G*N) | C (G*N)
    // this layer's knockouts: per blocked (t, u) one head set, the conv taps of conv knockouts
    const aLog = w(`${pre}.mixer.A_log`);
    const decay = Array.from(aLog, (v) => Math.exp(-Math.exp(v)));
    const { mask, unitSets: headSets, taps } = layerKnockouts(opts.knockouts, l, T, decay, H, cfg.dConv);
    const xbc = conv1dSilu(zxbcdt, w(`${pre}.mixer.conv1d.weight`), w(`${pre}.mixer.conv1d.bias`), {
      rows: T,
      seq: T,
      convDim: cfg.convDim,
      dConv: cfg.dConv,
      inStride: cfg.dInProj,
      inOffset: cfg.dInner,
    }, taps);
    // 4. dt (T, H) = clamp(softplus(dt + dt_bias), dt_limit)
    const dt = dtSoftplus(zxbcdt, w(`${pre}.mixer.dt_bias`), { rows: T, width: H, inStride: cfg.dInProj, inOffset: cfg.dInner + cfg.convDim, limit: cfg.dtLimit });
    // 5. A (H) = -exp(A_log)
    const a = Array.from(aLog, (v) => -Math.exp(v));
    const dSkip = w(`${pre}.mixer.D`);
    // 6. y (T, dInner) = SSD(x, dt, A, B, C) + D x
    let y: Float64Array;
    if (opts.mode === "scan") {
      y = ssdScan(xbc, dt, a, dSkip, [T], s);
    } else {
      const gram = ssdGram(xbc, s); // SSD 1: (1, G, T, T)
      const m = ssdAttentionMatrix(gram, dt, a, mask, s, headSets); // SSD 2: (1, H, T, T)
      y = ssdAttentionApply(m, xbc, dt, dSkip, s); // SSD 3
    }
    // 7. yNorm (T, dInner) = RMSNorm_group(y * SiLU(z)) * weight
    const yNorm = gatedRmsnorm(y, zxbcdt, w(`${pre}.mixer.norm.weight`), { rows: T, dInner: cfg.dInner, ngroups: cfg.ngroups, zStride: cfg.dInProj, eps: cfg.gatedNormEps });
    // 8. residual += out_proj(yNorm)
    matmul(yNorm, w(`${pre}.mixer.out_proj.weight`), T, D, cfg.dInner, { y: resid, accumulate: true });
  }
  // logits (T, vocabPadded) = lm_head(RMSNorm_f(residual)); lm_head is the embedding when tied
  const normed = rmsnorm(resid, w("backbone.norm_f.weight"), T, D, cfg.normEps);
  const head = cfg.tieEmbeddings || !weights.has("lm_head.weight") ? w(embName) : w("lm_head.weight");
  return matmul(normed, head, T, cfg.vocabPadded, D);
}
