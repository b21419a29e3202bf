// Attention output: out[i, h * head_dim + d] = sum_{s <= t} probs[i, h, s] * v_s[g(h), d], with
// g(h) = h / (n_head / n_kv_head), t row i's position, and v_s read like the keys of
// attention_probs.wgsl: row i − (t − s) of `qkv` for s >= t0, row base_row0 + s of `base` below
// (row_meta[i] = (t, t0, base_row0, ...), engine/backbone.ts RowsIO). A row of qkv is
// [q heads | k heads | v heads]. Entries of probs that attention_probs left 0 (masked, blocked,
// outside the window) add nothing. One invocation per (row, head, dim).

struct Params {
  rows: u32,
  n_head: u32,
  n_kv_head: u32,
  head_dim: u32,
  stride: u32, // row stride of qkv and base
  max_len: u32, // row stride of probs
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// row_meta: (rows, 8) u32
@group(0) @binding(1) var<storage, read> row_meta: array<u32>;
// probs: (rows, n_head, max_len) f32
@group(0) @binding(2) var<storage, read> probs: array<f32>;
// qkv: (rows being computed, stride) f32
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
// base: (base rows, stride) f32 (a placeholder in a full forward)
@group(0) @binding(4) var<storage, read> base: array<f32>;
// out: (rows, n_head * head_dim) f32
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let id = gid.x + gid.y * nwg.x * 64u;
  if (id >= p.rows * p.n_head * p.head_dim) { return; }
  let d = id % p.head_dim;
  let h = (id / p.head_dim) % p.n_head;
  let i = id / (p.head_dim * p.n_head);
  let t = row_meta[i * 8u];
  let t0 = row_meta[i * 8u + 1u];
  let vcol = (p.n_head + p.n_kv_head + h / (p.n_head / p.n_kv_head)) * p.head_dim + d;
  let pr = (i * p.n_head + h) * p.max_len;
  var acc = 0.0;
  for (var s = 0u; s < t0; s++) { // t0 <= t: a computed row is never below its sequence's t0
    acc = fma(probs[pr + s], base[(row_meta[i * 8u + 2u] + s) * p.stride + vcol], acc);
  }
  for (var s = t0; s <= t; s++) {
    acc = fma(probs[pr + s], qkv[(i + s - t) * p.stride + vcol], acc);
  }
  out[id] = acc;
}
