// Attention probabilities with Geva et al.'s knockout: for query row i (position t) and head h,
//   probs[i, h, s] = softmax over the allowed keys s of  scale * q_i[h] . k_s[g(h)]
// where g(h) = h / (n_head / n_kv_head) (grouped-query attention) and a key s is allowed when
// s <= t (causal), t − s < window (sliding window; window 0 = none), and the edge (t, s) is not
// blocked for head h in this layer. Blocked edges get −∞ before the softmax, so the row
// renormalises over the edges left; disallowed entries are 0, and a row with no allowed key is
// all 0 (it attends to nothing).
// A row of qkv is [q heads (n_head) | k heads (n_kv_head) | v heads (n_kv_head)], head_dim each.
// Keys come from two places so that the knockout fast path can recompute only positions >= t0 of
// a sequence, whose rows are consecutive: position s >= t0 is row i − (t − s) of `qkv` (the rows
// being computed), s < t0 is row base_row0 + s of `base` (the unblocked base run's cache of this
// layer). A full forward has t0 = 0 and never reads `base`.
// row_meta[i] = (t, t0, base_row0, ko_start, ko_end, sel, 0, 0) (engine/backbone.ts RowsIO).
// Knockout: with m = mask[i * max_len + s], the edge (t, s) is blocked for head h when m > 0,
// ko_start <= layer < ko_end and unit_sets[(layer * n_sel + sel + m − 1) * n_head + h] != 0. The
// full forward passes the backbone's per-layer mask (m = 1 + the id of a set of heads) with
// n_sel = 0, sel = 0 and the window covering every layer; the fast path its colmask (m = 1) and
// its per-layer, per-selector head table (n_sel selectors). One invocation per (row, head).

struct Params {
  rows: u32,
  n_head: u32,
  n_kv_head: u32,
  head_dim: u32,
  stride: u32, // row stride of qkv and base
  max_len: u32, // row stride of probs and of the mask, > every t
  layer: u32,
  window: u32,
  scale: f32, // 1 / sqrt(head_dim)
  has_mask: u32,
  n_sel: u32, // selectors per layer in unit_sets (0: a full forward's per-layer head sets)
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// row_meta: (rows, 8) u32
@group(0) @binding(1) var<storage, read> row_meta: array<u32>;
// qkv: (rows being computed, stride) f32, RoPE applied
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
// base: (base rows, stride) f32, the base run's qkv of this layer (a placeholder in a full forward)
@group(0) @binding(3) var<storage, read> base: array<f32>;
// mask: (rows, max_len) u32 (a placeholder when has_mask = 0)
@group(0) @binding(4) var<storage, read> mask: array<u32>;
// unit_sets: (set rows, n_head) u32, 1 = the head is blocked (a placeholder when has_mask = 0)
@group(0) @binding(5) var<storage, read> unit_sets: array<u32>;
// probs: (rows, n_head, max_len) f32
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;

fn blocked(i: u32, h: u32, s: u32) -> bool {
  let m = mask[i * p.max_len + s];
  if (m == 0u) { return false; }
  return unit_sets[(p.layer * p.n_sel + row_meta[i * 8u + 5u] + m - 1u) * p.n_head + h] != 0u;
}

fn score(i: u32, h: u32, s: u32) -> f32 {
  let t0 = row_meta[i * 8u + 1u];
  let kcol = (p.n_head + h / (p.n_head / p.n_kv_head)) * p.head_dim;
  let q = i * p.stride + h * p.head_dim;
  var acc = 0.0;
  if (s >= t0) {
    let k = (i + s - row_meta[i * 8u]) * p.stride + kcol;
    for (var d = 0u; d < p.head_dim; d++) { acc = fma(qkv[q + d], qkv[k + d], acc); }
  } else {
    let k = (row_meta[i * 8u + 2u] + s) * p.stride + kcol;
    for (var d = 0u; d < p.head_dim; d++) { acc = fma(qkv[q + d], base[k + d], acc); }
  }
  return acc * p.scale;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let id = gid.x + gid.y * nwg.x * 64u;
  if (id >= p.rows * p.n_head) { return; }
  let i = id / p.n_head;
  let h = id % p.n_head;
  let t = row_meta[i * 8u];
  let masked = p.has_mask != 0u && p.layer >= row_meta[i * 8u + 3u] && p.layer < row_meta[i * 8u + 4u];
  var lo = 0u;
  if (p.window > 0u && t + 1u > p.window) { lo = t + 1u - p.window; }
  let out = id * p.max_len;
  for (var s = 0u; s < p.max_len; s++) { probs[out + s] = 0.0; }

  // scores of the allowed keys, and their maximum
  var mx = -3.4028235e38;
  var any = false;
  for (var s = lo; s <= t; s++) {
    if (masked && blocked(i, h, s)) { continue; }
    let v = score(i, h, s);
    probs[out + s] = v;
    mx = max(mx, v);
    any = true;
  }
  if (!any) { return; }
  var sum = 0.0;
  for (var s = lo; s <= t; s++) {
    if (masked && blocked(i, h, s)) { continue; }
    let e = exp(probs[out + s] - mx);
    probs[out + s] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var s = lo; s <= t; s++) { probs[out + s] = probs[out + s] * inv; }
}
