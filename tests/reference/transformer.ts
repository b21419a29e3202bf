// Float64 CPU reference of the Transformer families (GPT-NeoX/Pythia, GPT-2, Llama, Qwen2, Mistral)
// and of every kernel in kernels/transformer/. Plain loops, no tricks: this file is the spec that
// the GPU kernels (tests/transformer_kernels_test.ts) and the GPU forwards
// (tests/transformer_engine_test.ts, tests/transformer_knockout_test.ts) are judged by, and it is
// itself checked against the float64 goldens of the fixtures.
//
// The family forwards read the Hugging Face tensors by their own names and in their own layouts
// (GPT-NeoX's fused query_key_value read per head as [q | k | v], GPT-2's Conv1D (in, out)
// matrices, Llama's separate q/k/v projections) and the raw config.json: nothing here uses the
// engine's parsing or its re-arranged weights, so a slip there cannot hide.
//
// Knockout (Geva et al. 2023): in layers [start, end), a blocked edge (t, s) gets −∞ in the
// attention logits of the selected heads before the softmax; a row whose every edge is blocked
// attends to nothing (that head's output is 0 there).
//
// Kernel layouts are those of the kernels: row-major (rows, cols); see each kernel's header.

import { rmsnorm, silu, type Vec } from "./shared.ts";

export { silu };

// ------------------------------------------------------------------ scalar functions

/** erf in float64: the Maclaurin series for |x| < 2.5, the continued fraction of erfc beyond. */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 2.5) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = a, sum = a;
    for (let n = 1; n < 200; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-18 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  if (a > 6) return Math.sign(x); // erfc(6) = 2e-17: below float64's resolution of 1
  // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...))))), evaluated backwards
  let f = a;
  for (let k = 120; k >= 1; k--) f = a + k / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** GELU with the exact normal CDF: x * Phi(x). */
export function geluExact(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** GELU with the tanh approximation (GPT-2's gelu_new). */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

export type Act = "none" | "gelu" | "gelu_tanh";
export function activation(act: Act, x: number): number {
  return act === "gelu" ? geluExact(x) : act === "gelu_tanh" ? geluTanh(x) : x;
}

// ------------------------------------------------------------------ kernels

/** layernorm.wgsl: out (rows, dim) = (x − mean) / sqrt(var + eps) * weight + bias, var the biased variance. */
export function layernorm(x: Vec, weight: Vec, bias: Vec, rows: number, dim: number, eps: number): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let c = 0; c < dim; c++) mean += x[r * dim + c];
    mean /= dim;
    let v = 0;
    for (let c = 0; c < dim; c++) v += (x[r * dim + c] - mean) ** 2;
    const scale = 1 / Math.sqrt(v / dim + eps);
    for (let c = 0; c < dim; c++) out[r * dim + c] = (x[r * dim + c] - mean) * scale * weight[c] + bias[c];
  }
  return out;
}

/** bias_act.wgsl: x (rows, dim) := act(x + bias) (bias null: act(x)). */
export function biasAct(x: Vec, bias: Vec | null, rows: number, dim: number, act: Act): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < dim; c++) out[r * dim + c] = activation(act, x[r * dim + c] + (bias ? bias[c] : 0));
  }
  return out;
}

/** swiglu.wgsl: out (rows, dff) = silu(gu[:, :dff]) * gu[:, dff:]; gu (rows, 2 dff) = gate | up. */
export function swiglu(gu: Vec, rows: number, dff: number): Float64Array {
  const out = new Float64Array(rows * dff);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < dff; j++) out[r * dff + j] = silu(gu[r * 2 * dff + j]) * gu[r * 2 * dff + dff + j];
  }
  return out;
}

/**
 * The fields of a row's attention meta that the kernels read (see attention_probs.wgsl): a
 * sequence's rows t0.. are consecutive in `qkv`, so position s >= t0 of row i's sequence is row
 * i − (t − s).
 */
export interface RowMeta {
  t: number; // position of the query row
  t0: number; // first position held in `qkv` for its sequence
  baseRow0: number; // row of `base` holding position 0
  koStart: number; // the row's mask applies in layers [koStart, koEnd)
  koEnd: number;
  sel: number; // the row's selector: which row of unit sets (with nSel per layer) its mask names
}

/**
 * A layer's knockout as the kernel reads it: mask (rows, maxLen) u32, m > 0 = blocked in the heads
 * of row (layer · nSel + sel + m − 1) of sets (·, nHead) u32.
 */
export interface AttnMask {
  mask: Uint32Array;
  sets: Uint32Array;
  nSel: number;
}

/** Shapes of an attention call: a row of qkv is [q heads | k heads | v heads], each head headDim wide. */
export interface AttnShape {
  nHead: number;
  nKvHead: number;
  headDim: number;
  stride: number; // row stride of qkv and base (>= (nHead + 2 nKvHead) headDim)
  maxLen: number; // row stride of the mask and probs (>= every t + 1)
  layer: number;
  window: number; // sliding window (keys s with t − s < window); 0 = none
  scale: number;
}

/** rope.wgsl: rotate-half RoPE on the first rotDims of every q and k head of each row, position meta[i].t. */
export function rope(
  qkv: Vec,
  rows: number,
  s: { nHead: number; nKvHead: number; headDim: number; stride: number; rotDims: number },
  positions: number[],
  invFreq: number[],
): Float64Array {
  const out = Float64Array.from(qkv);
  const half = s.rotDims / 2;
  for (let i = 0; i < rows; i++) {
    for (let h = 0; h < s.nHead + s.nKvHead; h++) {
      const base = i * s.stride + h * s.headDim;
      for (let p = 0; p < half; p++) {
        const angle = positions[i] * invFreq[p];
        const c = Math.cos(angle), sn = Math.sin(angle);
        const x1 = qkv[base + p], x2 = qkv[base + p + half];
        out[base + p] = x1 * c - x2 * sn;
        out[base + p + half] = x2 * c + x1 * sn;
      }
    }
  }
  return out;
}

/** Where position s of row i's sequence lives: [buffer, row]. */
function keyRow(m: RowMeta, i: number, s: number): ["new" | "base", number] {
  return s >= m.t0 ? ["new", i - (m.t - s)] : ["base", m.baseRow0 + s];
}

/** Whether (t, s) of row i is blocked for head h in this layer. */
function blocked(mask: AttnMask | null, i: number, s: number, h: number, m: RowMeta, a: AttnShape): boolean {
  if (!mask || a.layer < m.koStart || a.layer >= m.koEnd) return false;
  const v = mask.mask[i * a.maxLen + s];
  return v > 0 && mask.sets[(a.layer * mask.nSel + m.sel + v - 1) * a.nHead + h] !== 0;
}

/**
 * attention_probs.wgsl: probs (rows, nHead, maxLen): softmax over the allowed keys s of row i
 * (s ≤ t, t − s < window, not blocked) of scale · q_i·k_s; 0 elsewhere; all 0 when none is allowed.
 */
export function attentionProbs(qkv: Vec, base: Vec, meta: RowMeta[], mask: AttnMask | null, a: AttnShape): Float64Array {
  const n = meta.length;
  const probs = new Float64Array(n * a.nHead * a.maxLen);
  const group = a.nHead / a.nKvHead;
  for (let i = 0; i < n; i++) {
    const m = meta[i];
    for (let h = 0; h < a.nHead; h++) {
      const kvh = Math.floor(h / group);
      const scores = new Map<number, number>();
      for (let s = 0; s <= m.t; s++) {
        if (a.window > 0 && m.t - s >= a.window) continue;
        if (blocked(mask, i, s, h, m, a)) continue;
        const [which, row] = keyRow(m, i, s);
        const src = which === "new" ? qkv : base;
        let dot = 0;
        for (let d = 0; d < a.headDim; d++) {
          dot += qkv[i * a.stride + h * a.headDim + d] * src[row * a.stride + (a.nHead + kvh) * a.headDim + d];
        }
        scores.set(s, dot * a.scale);
      }
      if (scores.size === 0) continue;
      const mx = Math.max(...scores.values());
      let sum = 0;
      for (const v of scores.values()) sum += Math.exp(v - mx);
      for (const [s, v] of scores) probs[(i * a.nHead + h) * a.maxLen + s] = Math.exp(v - mx) / sum;
    }
  }
  return probs;
}

/** attention_apply.wgsl: out (rows, nHead·headDim): out[i, h, d] = sum_s probs[i, h, s] v_s[kv head of h, d]. */
export function attentionApply(probs: Vec, qkv: Vec, base: Vec, meta: RowMeta[], a: AttnShape): Float64Array {
  const n = meta.length;
  const out = new Float64Array(n * a.nHead * a.headDim);
  const group = a.nHead / a.nKvHead;
  for (let i = 0; i < n; i++) {
    const m = meta[i];
    for (let h = 0; h < a.nHead; h++) {
      const kvh = Math.floor(h / group);
      for (let d = 0; d < a.headDim; d++) {
        let acc = 0;
        for (let s = 0; s <= m.t; s++) {
          const [which, row] = keyRow(m, i, s);
          const src = which === "new" ? qkv : base;
          acc += probs[(i * a.nHead + h) * a.maxLen + s] * src[row * a.stride + (a.nHead + a.nKvHead + kvh) * a.headDim + d];
        }
        out[(i * a.nHead + h) * a.headDim + d] = acc;
      }
    }
  }
  return out;
}

/** add_positions.wgsl: x (rows, dim) += wpe[meta[i].t] (learned absolute positions). */
export function addPositions(x: Vec, wpe: Vec, positions: number[], dim: number): Float64Array {
  const out = Float64Array.from(x);
  positions.forEach((t, i) => {
    for (let c = 0; c < dim; c++) out[i * dim + c] += wpe[t * dim + c];
  });
  return out;
}

// ------------------------------------------------------------------ the families, from the published architectures

/** Tensors by their checkpoint name, as float32 (what the fixtures store, exactly). */
export type TensorSource = (name: string) => Promise<Float32Array>;

/** A knockout of one forward: edges blocked in layers [start, end), in `heads` (all when absent). */
export interface RefKnockout {
  start: number;
  end: number;
  edges: [number, number][];
  heads?: number[];
}

export interface RefResult {
  /** (T, vocab rows) logits at every position */
  logits: Float64Array;
  vocabRows: number;
  /** per layer, (T, d_model): the residual stream after that layer */
  residuals: Float64Array[];
}

type Raw = Record<string, unknown>;
const numOf = (c: Raw, ...keys: string[]): number | undefined => {
  for (const k of keys) if (typeof c[k] === "number") return c[k] as number;
  return undefined;
};

/** y (rows, out) = x (rows, in) @ W^T + b, W in nn.Linear's (out, in) layout. */
function linear(x: Vec, rows: number, inDim: number, w: Vec, outDim: number, b?: Vec | null): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      for (let k = 0; k < inDim; k++) s += x[r * inDim + k] * w[o * inDim + k];
      y[r * outDim + o] = s;
    }
  }
  return y;
}

/** y (rows, out) = x @ W + b, W in GPT-2 Conv1D's (in, out) layout. */
function conv1d(x: Vec, rows: number, inDim: number, w: Vec, outDim: number, b: Vec): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b[o];
      for (let k = 0; k < inDim; k++) s += x[r * inDim + k] * w[k * outDim + o];
      y[r * outDim + o] = s;
    }
  }
  return y;
}


/** Per-head tensors of T positions: [t][h][d]. */
type Heads = Float64Array[][];

/** Rotate-half rotary embedding on the first `rot` dims of each head, in place. */
function applyRotary(x: Heads, rot: number, invFreq: number[]) {
  const half = rot / 2;
  x.forEach((heads, t) => {
    for (const v of heads) {
      const r = Float64Array.from(v);
      for (let p = 0; p < half; p++) {
        const c = Math.cos(t * invFreq[p]), s = Math.sin(t * invFreq[p]);
        v[p] = r[p] * c - r[p + half] * s;
        v[p + half] = r[p + half] * c + r[p] * s;
      }
    }
  });
}

/**
 * Causal multi-head attention of T positions with GQA (query head h reads kv head h // (H / H_kv)),
 * an optional sliding window (t − s < window), and the layer's knockouts: returns (T, H·hd).
 */
function attend(q: Heads, k: Heads, v: Heads, layer: number, knockouts: RefKnockout[], window: number): Float64Array {
  const T = q.length, H = q[0].length, Hkv = k[0].length, hd = q[0][0].length;
  const out = new Float64Array(T * H * hd);
  for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / (H / Hkv));
    const isBlocked = (t: number, s: number) =>
      knockouts.some((ko) =>
        layer >= ko.start && layer < ko.end && (ko.heads === undefined || ko.heads.includes(h)) &&
        ko.edges.some(([a, b]) => a === t && b === s)
      );
    for (let t = 0; t < T; t++) {
      const logits: [number, number][] = [];
      for (let s = 0; s <= t; s++) {
        if (window > 0 && t - s >= window) continue;
        if (isBlocked(t, s)) continue; // −∞ before the softmax
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[t][h][d] * k[s][kvh][d];
        logits.push([s, dot / Math.sqrt(hd)]);
      }
      if (logits.length === 0) continue; // attends to nothing
      const mx = Math.max(...logits.map((l) => l[1]));
      const z = logits.reduce((acc, l) => acc + Math.exp(l[1] - mx), 0);
      for (const [s, l] of logits) {
        const p = Math.exp(l - mx) / z;
        for (let d = 0; d < hd; d++) out[(t * H + h) * hd + d] += p * v[s][kvh][d];
      }
    }
  }
  return out;
}

/** Split (T, nHeads·hd) rows starting at column `col` of a (T, stride) matrix into [t][h] vectors. */
function heads(x: Float64Array, T: number, stride: number, col: number, nHeads: number, hd: number): Heads {
  return Array.from({ length: T }, (_, t) => Array.from({ length: nHeads }, (_, h) => x.slice(t * stride + col + h * hd, t * stride + col + (h + 1) * hd)));
}

/** Default RoPE inverse frequencies: 1 / base^(2i / dim), i < dim/2. */
export function ropeInvFreq(dim: number, base: number): number[] {
  return Array.from({ length: dim / 2 }, (_, i) => 1 / base ** ((2 * i) / dim));
}

/** Llama 3's rope_scaling ("llama3"): low frequencies divided by `factor`, a smooth blend in between. */
export function llama3InvFreq(inv: number[], s: Raw): number[] {
  const factor = s.factor as number, low = s.low_freq_factor as number, high = s.high_freq_factor as number;
  const old = s.original_max_position_embeddings as number;
  const lowWavelen = old / low, highWavelen = old / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / factor;
    const smooth = (old / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

function addInto(x: Float64Array, y: Float64Array) {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
}

function lmHead(x: Float64Array, T: number, D: number, w: Vec): { logits: Float64Array; vocabRows: number } {
  const V = w.length / D;
  return { logits: linear(x, T, D, w, V), vocabRows: V };
}

/** GPT-NeoX (Pythia): GPTNeoXForCausalLM. */
async function gptNeox(c: Raw, get: TensorSource, ids: number[], ko: RefKnockout[]): Promise<RefResult> {
  const D = c.hidden_size as number, H = c.num_attention_heads as number, L = c.num_hidden_layers as number;
  const hd = D / H, T = ids.length, eps = (c.layer_norm_eps as number) ?? 1e-5;
  const rot = Math.floor(hd * ((c.rotary_pct as number) ?? 1));
  const inv = ropeInvFreq(rot, (numOf(c, "rotary_emb_base", "rope_theta") ?? 10000));
  const parallel = c.use_parallel_residual !== false;
  const act: Act = c.hidden_act === "gelu" ? "gelu" : "gelu_tanh";
  const emb = await get("gpt_neox.embed_in.weight");
  const x = new Float64Array(T * D);
  ids.forEach((id, t) => x.set(emb.subarray(id * D, (id + 1) * D), t * D));
  const residuals: Float64Array[] = [];
  const ffn = c.intermediate_size as number;
  for (let l = 0; l < L; l++) {
    const p = `gpt_neox.layers.${l}`;
    const w = async (n: string) => await get(`${p}.${n}`);
    const h1 = layernorm(x, await w("input_layernorm.weight"), await w("input_layernorm.bias"), T, D, eps);
    const qkv = linear(h1, T, D, await w("attention.query_key_value.weight"), 3 * D, await w("attention.query_key_value.bias"));
    // the fused projection is (T, H, 3·hd): head h holds [q | k | v]
    const q = heads(qkv, T, 3 * D, 0, H, 3 * hd).map((r) => r.map((v) => v.slice(0, hd)));
    const k = heads(qkv, T, 3 * D, 0, H, 3 * hd).map((r) => r.map((v) => v.slice(hd, 2 * hd)));
    const v = heads(qkv, T, 3 * D, 0, H, 3 * hd).map((r) => r.map((v) => v.slice(2 * hd)));
    applyRotary(q, rot, inv);
    applyRotary(k, rot, inv);
    const att = linear(attend(q, k, v, l, ko, 0), T, D, await w("attention.dense.weight"), D, await w("attention.dense.bias"));
    const mlp = (h: Float64Array) => {
      return (async () => {
        const up = linear(h, T, D, await w("mlp.dense_h_to_4h.weight"), ffn, await w("mlp.dense_h_to_4h.bias"));
        return linear(biasAct(up, null, T, ffn, act), T, ffn, await w("mlp.dense_4h_to_h.weight"), D, await w("mlp.dense_4h_to_h.bias"));
      })();
    };
    if (parallel) {
      const h2 = layernorm(x, await w("post_attention_layernorm.weight"), await w("post_attention_layernorm.bias"), T, D, eps);
      const m = await mlp(h2);
      addInto(x, att);
      addInto(x, m);
    } else {
      addInto(x, att);
      const h2 = layernorm(x, await w("post_attention_layernorm.weight"), await w("post_attention_layernorm.bias"), T, D, eps);
      addInto(x, await mlp(h2));
    }
    residuals.push(Float64Array.from(x));
  }
  const f = layernorm(x, await get("gpt_neox.final_layer_norm.weight"), await get("gpt_neox.final_layer_norm.bias"), T, D, eps);
  return { ...lmHead(f, T, D, await get("embed_out.weight")), residuals };
}

/** GPT-2: GPT2LMHeadModel (Conv1D weights stored (in, out), learned positions, tied head). */
async function gpt2(c: Raw, get: TensorSource, ids: number[], ko: RefKnockout[]): Promise<RefResult> {
  const D = c.n_embd as number, H = c.n_head as number, L = c.n_layer as number;
  const hd = D / H, T = ids.length, eps = (c.layer_norm_epsilon as number) ?? 1e-5;
  const F = (c.n_inner as number) ?? 4 * D;
  const act: Act = c.activation_function === "gelu" ? "gelu" : "gelu_tanh";
  const wte = await get("transformer.wte.weight"), wpe = await get("transformer.wpe.weight");
  const x = new Float64Array(T * D);
  ids.forEach((id, t) => {
    for (let d = 0; d < D; d++) x[t * D + d] = wte[id * D + d] + wpe[t * D + d];
  });
  const residuals: Float64Array[] = [];
  for (let l = 0; l < L; l++) {
    const w = async (n: string) => await get(`transformer.h.${l}.${n}`);
    const h1 = layernorm(x, await w("ln_1.weight"), await w("ln_1.bias"), T, D, eps);
    const qkv = conv1d(h1, T, D, await w("attn.c_attn.weight"), 3 * D, await w("attn.c_attn.bias"));
    const q = heads(qkv, T, 3 * D, 0, H, hd), k = heads(qkv, T, 3 * D, D, H, hd), v = heads(qkv, T, 3 * D, 2 * D, H, hd);
    addInto(x, conv1d(attend(q, k, v, l, ko, 0), T, D, await w("attn.c_proj.weight"), D, await w("attn.c_proj.bias")));
    const h2 = layernorm(x, await w("ln_2.weight"), await w("ln_2.bias"), T, D, eps);
    const up = biasAct(conv1d(h2, T, D, await w("mlp.c_fc.weight"), F, await w("mlp.c_fc.bias")), null, T, F, act);
    addInto(x, conv1d(up, T, F, await w("mlp.c_proj.weight"), D, await w("mlp.c_proj.bias")));
    residuals.push(Float64Array.from(x));
  }
  const f = layernorm(x, await get("transformer.ln_f.weight"), await get("transformer.ln_f.bias"), T, D, eps);
  return { ...lmHead(f, T, D, wte), residuals };
}

/** Llama, Qwen2 and Mistral: RMSNorm, RoPE over the whole head, GQA, SwiGLU. */
async function llamaLike(c: Raw, get: TensorSource, ids: number[], ko: RefKnockout[], has: (n: string) => boolean): Promise<RefResult> {
  const D = c.hidden_size as number, H = c.num_attention_heads as number, L = c.num_hidden_layers as number;
  const Hkv = (c.num_key_value_heads as number) ?? H;
  const hd = (c.head_dim as number) ?? D / H, T = ids.length, eps = c.rms_norm_eps as number;
  const F = c.intermediate_size as number;
  let inv = ropeInvFreq(hd, (c.rope_theta as number) ?? 10000);
  const scaling = c.rope_scaling as Raw | null | undefined;
  if (scaling && (scaling.rope_type ?? scaling.type) === "llama3") inv = llama3InvFreq(inv, scaling);
  if (scaling && (scaling.rope_type ?? scaling.type) === "linear") inv = inv.map((f) => f / (scaling.factor as number));
  // sliding windows: Mistral everywhere when set; Qwen2 only with use_sliding_window, from max_window_layers up
  const windowOf = (l: number): number => {
    const sw = typeof c.sliding_window === "number" ? c.sliding_window : 0;
    if (c.model_type === "qwen2") return c.use_sliding_window && l >= ((c.max_window_layers as number) ?? 0) ? sw : 0;
    if (c.model_type === "mistral") return sw;
    return 0;
  };
  const emb = await get("model.embed_tokens.weight");
  const x = new Float64Array(T * D);
  ids.forEach((id, t) => x.set(emb.subarray(id * D, (id + 1) * D), t * D));
  const opt = async (n: string) => (has(n) ? await get(n) : null);
  const residuals: Float64Array[] = [];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const h1 = rmsnorm(x, await get(`${p}.input_layernorm.weight`), T, D, eps);
    const proj = async (n: string, out: number) => linear(h1, T, D, await get(`${p}.self_attn.${n}.weight`), out, await opt(`${p}.self_attn.${n}.bias`));
    const q = heads(await proj("q_proj", H * hd), T, H * hd, 0, H, hd);
    const k = heads(await proj("k_proj", Hkv * hd), T, Hkv * hd, 0, Hkv, hd);
    const v = heads(await proj("v_proj", Hkv * hd), T, Hkv * hd, 0, Hkv, hd);
    applyRotary(q, hd, inv);
    applyRotary(k, hd, inv);
    const o = attend(q, k, v, l, ko, windowOf(l));
    addInto(x, linear(o, T, H * hd, await get(`${p}.self_attn.o_proj.weight`), D, await opt(`${p}.self_attn.o_proj.bias`)));
    const h2 = rmsnorm(x, await get(`${p}.post_attention_layernorm.weight`), T, D, eps);
    const gate = linear(h2, T, D, await get(`${p}.mlp.gate_proj.weight`), F, await opt(`${p}.mlp.gate_proj.bias`));
    const up = linear(h2, T, D, await get(`${p}.mlp.up_proj.weight`), F, await opt(`${p}.mlp.up_proj.bias`));
    const a = new Float64Array(T * F);
    for (let i = 0; i < a.length; i++) a[i] = silu(gate[i]) * up[i];
    addInto(x, linear(a, T, F, await get(`${p}.mlp.down_proj.weight`), D, await opt(`${p}.mlp.down_proj.bias`)));
    residuals.push(Float64Array.from(x));
  }
  const f = rmsnorm(x, await get("model.norm.weight"), T, D, eps);
  const head = has("lm_head.weight") && c.tie_word_embeddings !== true ? await get("lm_head.weight") : emb;
  return { ...lmHead(f, T, D, head), residuals };
}

/**
 * The float64 forward of one prompt through the family named by config.json's model_type, with
 * knockouts; logits at every position over all rows of the head.
 */
export async function referenceForward(
  config: Raw,
  get: TensorSource,
  has: (name: string) => boolean,
  ids: number[],
  knockouts: RefKnockout[] = [],
): Promise<RefResult> {
  switch (config.model_type) {
    case "gpt_neox":
      return await gptNeox(config, get, ids, knockouts);
    case "gpt2":
      return await gpt2(config, get, ids, knockouts);
    case "llama":
    case "qwen2":
    case "mistral":
      return await llamaLike(config, get, ids, knockouts, has);
  }
  throw new Error(`reference: no family ${config.model_type}`);
}
