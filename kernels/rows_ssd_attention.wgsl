// Knockout fast path, SSD attention form on recomputed rows: for each recomputed row i (position t
// of its prompt) and head h, row t of the head's attention matrix (kernels/ssd_attention_matrix.wgsl)
//   M[t, s] = (C_t . B_s) * exp(sum_{r = s+1..t} dt_r * A),   s <= t,   0 for s > t,
// with B_s, dt_s read from the recomputed row i - (t - s) when s >= t0 and from the unblocked base
// run when s < t0. Inside the configuration's window [start, end), an entry whose column is set in
// the row's colmask is 0 in the heads its selector picks in this layer (head_sel).

struct Params {
  n: u32, // recomputed rows
  nheads: u32,
  ngroups: u32,
  d_state: u32,
  conv_dim: u32, // row stride of xbc rows
  d_inner: u32,
  max_len: u32, // row stride of colmask, and of each head's row in m_rows
  layer: u32, // the layer being recomputed
  n_sel: u32, // selectors in head_sel
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// rows_meta: (n, 8) u32 per row: (t, t0, base row of the prompt's position 0, window start, window end,
//   selector, tap mask, unused)
@group(0) @binding(1) var<storage, read> rows_meta: array<u32>;
// colmask: (n, max_len) u32, 1 = the edge (t, s) is blocked inside the window
@group(0) @binding(2) var<storage, read> colmask: array<u32>;
// head_sel: (n_layer, n_sel, nheads) u32, 1 = selector k picks head h in that layer
@group(0) @binding(3) var<storage, read> head_sel: array<u32>;
// xbc: (n, conv_dim) f32, recomputed rows (x | B | C)
@group(0) @binding(4) var<storage, read> xbc: array<f32>;
// dt: (n, nheads) f32, recomputed rows
@group(0) @binding(5) var<storage, read> dt: array<f32>;
// base_xbc: (base rows, conv_dim) f32, this layer in the base run
@group(0) @binding(6) var<storage, read> base_xbc: array<f32>;
// base_dt: (base rows, nheads) f32
@group(0) @binding(7) var<storage, read> base_dt: array<f32>;
// a: (nheads) f32, A = -exp(A_log)
@group(0) @binding(8) var<storage, read> a: array<f32>;
// m_rows: (n, nheads, max_len) f32
@group(0) @binding(9) var<storage, read_write> m_rows: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n * p.nheads) { return; }
  let row = i / p.nheads;
  let h = i % p.nheads;
  let g = h / (p.nheads / p.ngroups);
  let rm = row * 8u;
  let t = rows_meta[rm];
  let t0 = rows_meta[rm + 1u];
  let base0 = rows_meta[rm + 2u];
  let in_window = p.layer >= rows_meta[rm + 3u] && p.layer < rows_meta[rm + 4u];
  let blocks_head = in_window && head_sel[(p.layer * p.n_sel + rows_meta[rm + 5u]) * p.nheads + h] != 0u;
  let b_off = p.d_inner + g * p.d_state;
  let c_own = row * p.conv_dim + p.d_inner + p.ngroups * p.d_state + g * p.d_state;
  let a_h = a[h];
  let out = i * p.max_len;
  for (var s = t + 1u; s < p.max_len; s++) { m_rows[out + s] = 0.0; }

  var segsum = 0.0;
  for (var s = i32(t); s >= 0; s--) {
    let su = u32(s);
    var gram = 0.0;
    var dt_s: f32;
    if (su >= t0) {
      let src = row - (t - su);
      for (var k = 0u; k < p.d_state; k++) { gram = fma(xbc[c_own + k], xbc[src * p.conv_dim + b_off + k], gram); }
      dt_s = dt[src * p.nheads + h];
    } else {
      let src = base0 + su;
      for (var k = 0u; k < p.d_state; k++) { gram = fma(xbc[c_own + k], base_xbc[src * p.conv_dim + b_off + k], gram); }
      dt_s = base_dt[src * p.nheads + h];
    }
    var v = gram * exp(segsum);
    if (blocks_head && colmask[row * p.max_len + su] != 0u) { v = 0.0; }
    m_rows[out + su] = v;
    segsum += dt_s * a_h;
  }
}
