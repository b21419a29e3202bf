// Knockout fast path, SSD attention form on recomputed rows (kernels/ssd_attention_apply.wgsl):
//   y[i, c] = sum_{s <= t} M[t, s] * dt_s * x_s[c] + D * x_t[c],   head h = c / headdim,
// with x_s, dt_s read from the recomputed row i - (t - s) when s >= t0, else from the base run.

struct Params {
  n: u32, // recomputed rows
  nheads: u32,
  headdim: u32,
  conv_dim: u32, // row stride of xbc rows
  d_inner: u32,
  max_len: u32, // row stride of each head's row in m_rows
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// rows_meta: (n, 8) u32 per row: (t, t0, base row of the prompt's position 0, window start, window end,
//   selector, tap mask, unused)
@group(0) @binding(1) var<storage, read> rows_meta: array<u32>;
// m_rows: (n, nheads, max_len) f32
@group(0) @binding(2) var<storage, read> m_rows: array<f32>;
// xbc: (n, conv_dim) f32, recomputed rows, x at [0, d_inner)
@group(0) @binding(3) var<storage, read> xbc: array<f32>;
// dt: (n, nheads) f32, recomputed rows
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
  let row = i / p.d_inner;
  let c = i % p.d_inner;
  let h = c / p.headdim;
  let rm = row * 8u;
  let t = rows_meta[rm];
  let t0 = rows_meta[rm + 1u];
  let base0 = rows_meta[rm + 2u];
  let m = (row * p.nheads + h) * p.max_len;
  var acc = 0.0;
  for (var s = 0u; s < t0 && s <= t; s++) {
    let src = base0 + s;
    acc = fma(m_rows[m + s] * base_dt[src * p.nheads + h], base_xbc[src * p.conv_dim + c], acc);
  }
  for (var s = t0; s <= t; s++) {
    let src = row - (t - s);
    acc = fma(m_rows[m + s] * dt[src * p.nheads + h], xbc[src * p.conv_dim + c], acc);
  }
  y[i] = fma(d[h], xbc[row * p.conv_dim + c], acc);
}
