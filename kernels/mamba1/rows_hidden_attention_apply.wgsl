// Knockout fast path, Mamba-1 hidden attention applied on recomputed rows
// (kernels/mamba1/hidden_attention_apply.wgsl):
//   y[i, c] = sum_{s <= t} alpha_rows[i, c, s] * x_s[c] + D[c] * x_t[c],
// with x_s read from the recomputed row i - (t - s) when s >= t0, else from the base run.

struct Params {
  n: u32, // recomputed rows
  d_inner: u32,
  max_len: u32, // row stride of each channel's row in alpha_rows
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// rows_meta: (n, 8) u32 per row: (t, t0, base row of the prompt's position 0, window start, window end,
//   selector, tap mask, unused)
@group(0) @binding(1) var<storage, read> rows_meta: array<u32>;
// alpha_rows: (n, d_inner, max_len) f32
@group(0) @binding(2) var<storage, read> alpha_rows: array<f32>;
// x: (n, d_inner) f32, recomputed rows (after conv1d + SiLU)
@group(0) @binding(3) var<storage, read> x: array<f32>;
// base_x: (base rows, d_inner) f32
@group(0) @binding(4) var<storage, read> base_x: array<f32>;
// d: (d_inner) f32
@group(0) @binding(5) var<storage, read> d: array<f32>;
// y: (n, d_inner) f32
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

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
  let m = i * p.max_len;
  var acc = 0.0;
  for (var s = 0u; s < t0 && s <= t; s++) {
    acc = fma(alpha_rows[m + s], base_x[(base0 + s) * p.d_inner + c], acc);
  }
  for (var s = t0; s <= t; s++) {
    acc = fma(alpha_rows[m + s], x[(row - (t - s)) * p.d_inner + c], acc);
  }
  y[i] = fma(d[c], x[i], acc);
}
