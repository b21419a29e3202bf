// Knockout fast path: the last row of each head's attention matrix,
//   M[t, s] = (C_t . B_s) * exp(sum_{r = s+1..t} dt_r * A),  s <= t,  t = the prompt's last position,
// with the configuration's blocked columns set to 0 while the layer is inside its window.
// Position t comes from the recomputed row, positions s < t from the unblocked base run.

struct Params {
  n: u32, // configurations
  nheads: u32,
  ngroups: u32,
  d_state: u32,
  conv_dim: u32, // row stride of xbc rows
  d_inner: u32,
  max_len: u32, // row stride of colmask and m_row
  layer: u32, // the layer being recomputed
}

@group(0) @binding(0) var<uniform> p: Params;
// cfg_meta: (n, 4) u32: (base row of the prompt's last position, prompt length, first blocked layer, end layer)
@group(0) @binding(1) var<storage, read> cfg_meta: array<u32>;
// colmask: (n, max_len) u32, 1 = the edge (last, s) is blocked inside the window
@group(0) @binding(2) var<storage, read> colmask: array<u32>;
// xbc: (n, conv_dim) f32, recomputed last rows (x | B | C)
@group(0) @binding(3) var<storage, read> xbc: array<f32>;
// dt: (n, nheads) f32, recomputed last rows
@group(0) @binding(4) var<storage, read> dt: array<f32>;
// base_xbc: (base rows, conv_dim) f32, this layer in the base run
@group(0) @binding(5) var<storage, read> base_xbc: array<f32>;
// base_dt: (base rows, nheads) f32
@group(0) @binding(6) var<storage, read> base_dt: array<f32>;
// a: (nheads) f32, A = -exp(A_log)
@group(0) @binding(7) var<storage, read> a: array<f32>;
// m_row: (n, nheads, max_len) f32
@group(0) @binding(8) var<storage, read_write> m_row: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n * p.nheads) { return; }
  let cfg = i / p.nheads;
  let h = i % p.nheads;
  let g = h / (p.nheads / p.ngroups);
  let last_row = cfg_meta[cfg * 4u];
  let t = cfg_meta[cfg * 4u + 1u] - 1u;
  let in_window = p.layer >= cfg_meta[cfg * 4u + 2u] && p.layer < cfg_meta[cfg * 4u + 3u];
  let first_row = last_row - t; // base row of position 0
  let b_off = p.d_inner + g * p.d_state;
  let c_own = cfg * p.conv_dim + p.d_inner + p.ngroups * p.d_state + g * p.d_state;
  let a_h = a[h];
  let out = i * p.max_len;
  for (var s = t + 1u; s < p.max_len; s++) { m_row[out + s] = 0.0; }

  var segsum = 0.0;
  for (var s = i32(t); s >= 0; s--) {
    let su = u32(s);
    var gram = 0.0;
    var dt_s: f32;
    if (su == t) {
      for (var k = 0u; k < p.d_state; k++) { gram = fma(xbc[c_own + k], xbc[cfg * p.conv_dim + b_off + k], gram); }
      dt_s = dt[cfg * p.nheads + h];
    } else {
      let row = first_row + su;
      for (var k = 0u; k < p.d_state; k++) { gram = fma(xbc[c_own + k], base_xbc[row * p.conv_dim + b_off + k], gram); }
      dt_s = base_dt[row * p.nheads + h];
    }
    var v = gram * exp(segsum);
    if (in_window && colmask[cfg * p.max_len + su] != 0u) { v = 0.0; }
    m_row[out + su] = v;
    segsum += dt_s * a_h;
  }
}
