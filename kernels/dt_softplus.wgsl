// dt = softplus(dt_raw + dt_bias), per position and head.

struct Params {
  rows: u32,
  nheads: u32,
  in_stride: u32, // row stride of zxbcdt (d_in_proj)
  in_offset: u32, // first dt channel in a zxbcdt row (2 * d_inner + 2 * ngroups * d_state)
}

@group(0) @binding(0) var<uniform> p: Params;
// zxbcdt: (rows, in_stride) f32, dt_raw at [in_offset, in_offset + nheads)
@group(0) @binding(1) var<storage, read> zxbcdt: array<f32>;
// dt_bias: (nheads) f32
@group(0) @binding(2) var<storage, read> dt_bias: array<f32>;
// dt: (rows, nheads) f32
@group(0) @binding(3) var<storage, read_write> dt: array<f32>;

// log(1 + u) accurate for small u (WGSL has no log1p): the rounding of 1 + u is undone by
// scaling with u / ((1 + u) - 1).
fn log1p(u: f32) -> f32 {
  let w = 1.0 + u;
  if (w == 1.0) { return u; }
  return log(w) * u / (w - 1.0);
}

// softplus(v) = max(v, 0) + log1p(exp(-|v|)); PyTorch returns v itself above 20.
fn softplus(v: f32) -> f32 {
  if (v > 20.0) { return v; }
  return max(v, 0.0) + log1p(exp(-abs(v)));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.nheads) { return; }
  let row = i / p.nheads;
  let h = i % p.nheads;
  dt[i] = softplus(zxbcdt[row * p.in_stride + p.in_offset + h] + dt_bias[h]);
}
