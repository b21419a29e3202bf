// Knockout fast path: y_t = sum_{s <= t} M[t, s] * dt_s * x_s + D * x_t at the last position,
// with position t from the recomputed row and s < t from the base run.

struct Params {
  n: u32,
  nheads: u32,
  headdim: u32,
  conv_dim: u32,
  d_inner: u32,
  max_len: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// cfg_meta: (n, 4) u32: (base row of the prompt's last position, prompt length, first blocked layer, end layer)
@group(0) @binding(1) var<storage, read> cfg_meta: array<u32>;
// m_row: (n, nheads, max_len) f32
@group(0) @binding(2) var<storage, read> m_row: array<f32>;
// xbc: (n, conv_dim) f32, recomputed last rows
@group(0) @binding(3) var<storage, read> xbc: array<f32>;
// dt: (n, nheads) f32
@group(0) @binding(4) var<storage, read> dt: array<f32>;
// base_xbc: (base rows, conv_dim) f32
@group(0) @binding(5) var<storage, read> base_xbc: array<f32>;
// base_dt: (base rows, nheads) f32
@group(0) @binding(6) var<storage, read> base_dt: array<f32>;
// d: (nheads) f32
@group(0) @binding(7) var<storage, read> d: array<f32>;
// y: (n, d_inner) f32
@group(0) @binding(8) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n * p.d_inner) { return; }
  let cfg = i / p.d_inner;
  let c = i % p.d_inner;
  let h = c / p.headdim;
  let last_row = cfg_meta[cfg * 4u];
  let t = cfg_meta[cfg * 4u + 1u] - 1u;
  let first_row = last_row - t;
  let m = (cfg * p.nheads + h) * p.max_len;
  var acc = 0.0;
  for (var s = 0u; s < t; s++) {
    let row = first_row + s;
    acc = fma(m_row[m + s] * base_dt[row * p.nheads + h], base_xbc[row * p.conv_dim + c], acc);
  }
  let x_t = xbc[cfg * p.conv_dim + c];
  acc = fma(m_row[m + t] * dt[cfg * p.nheads + h], x_t, acc);
  y[i] = fma(d[h], x_t, acc);
}
