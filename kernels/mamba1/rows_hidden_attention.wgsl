// Knockout fast path, Mamba-1 hidden attention on recomputed rows: for each recomputed row i
// (position t of its prompt) and channel c, row t of the channel's hidden attention
// (kernels/mamba1/hidden_attention.wgsl)
//   alpha[t, c, s] = sum_n C_t[n] * exp(A[c, n] * sum_{r = s+1..t} dt_r[c]) * dt_s[c] * B_s[n],   s <= t,
// with dt_s, B_s read from the recomputed row i - (t - s) when s >= t0 and from the unblocked base
// run when s < t0. Inside the configuration's window [start, end), an entry whose column is set in
// the row's colmask is 0 in the channels its selector picks in this layer (unit_sel).

struct Params {
  n: u32, // recomputed rows
  d_inner: u32,
  d_state: u32,
  max_len: u32, // row stride of colmask, and of each channel's row in alpha_rows
  layer: u32, // the layer being recomputed
  n_sel: u32, // selectors in unit_sel
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// rows_meta: (n, 8) u32 per row: (t, t0, base row of the prompt's position 0, window start, window end,
//   selector, tap mask, unused)
@group(0) @binding(1) var<storage, read> rows_meta: array<u32>;
// colmask: (n, max_len) u32, 1 = the edge (t, s) is blocked inside the window
@group(0) @binding(2) var<storage, read> colmask: array<u32>;
// unit_sel: (n_layer, n_sel, d_inner) u32, 1 = selector k picks channel c in that layer
@group(0) @binding(3) var<storage, read> unit_sel: array<u32>;
// dt: (n, d_inner) f32, recomputed rows
@group(0) @binding(4) var<storage, read> dt: array<f32>;
// bc: (n, 2 * d_state) f32, recomputed rows (B | C)
@group(0) @binding(5) var<storage, read> bc: array<f32>;
// base_dt: (base rows, d_inner) f32, this layer in the base run
@group(0) @binding(6) var<storage, read> base_dt: array<f32>;
// base_bc: (base rows, 2 * d_state) f32
@group(0) @binding(7) var<storage, read> base_bc: array<f32>;
// a: (d_inner, d_state) f32, A = -exp(A_log)
@group(0) @binding(8) var<storage, read> a: array<f32>;
// alpha_rows: (n, d_inner, max_len) f32
@group(0) @binding(9) var<storage, read_write> alpha_rows: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n * p.d_inner) { return; }
  let row = i / p.d_inner;
  let c = i % p.d_inner;
  let rm = row * 8u;
  let t = rows_meta[rm];
  let t0 = rows_meta[rm + 1u];
  let base0 = rows_meta[rm + 2u];
  let in_window = p.layer >= rows_meta[rm + 3u] && p.layer < rows_meta[rm + 4u];
  let blocks = in_window && unit_sel[(p.layer * p.n_sel + rows_meta[rm + 5u]) * p.d_inner + c] != 0u;
  let w = 2u * p.d_state;
  let c_own = row * w + p.d_state;
  let out = i * p.max_len;
  for (var s = t + 1u; s < p.max_len; s++) { alpha_rows[out + s] = 0.0; }
  var segsum = 0.0;
  for (var s = i32(t); s >= 0; s--) {
    let su = u32(s);
    var acc = 0.0;
    var dt_s: f32;
    if (su >= t0) {
      let src = row - (t - su);
      dt_s = dt[src * p.d_inner + c];
      for (var k = 0u; k < p.d_state; k++) { acc = fma(bc[c_own + k] * exp(a[c * p.d_state + k] * segsum), bc[src * w + k], acc); }
    } else {
      let src = base0 + su;
      dt_s = base_dt[src * p.d_inner + c];
      for (var k = 0u; k < p.d_state; k++) { acc = fma(bc[c_own + k] * exp(a[c * p.d_state + k] * segsum), base_bc[src * w + k], acc); }
    }
    var v = acc * dt_s;
    if (blocks && colmask[row * p.max_len + su] != 0u) { v = 0.0; }
    alpha_rows[out + su] = v;
    segsum += dt_s;
  }
}
